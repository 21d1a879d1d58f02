//! Device nodes a container gets and the device cgroup rules that allow them, from the
//! host devices the caller looked up.

use std::collections::HashSet;

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::error::SpecError;
use super::input::SpecInput;

/// Device nodes every container gets anyway (bound from the host by init) or that belong
/// to its own terminal.
pub const CONTAINER_OWN_DEVICES: [&str; 8] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/console",
    "/dev/ptmx",
];

pub(super) fn device_rule(
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut builder = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .access(access);
    if let Some(major) = major {
        builder = builder.major(major);
    }
    if let Some(minor) = minor {
        builder = builder.minor(minor);
    }
    Ok(builder.build()?)
}

/// The device cgroup: deny everything, allow mknod, the standard nodes and the CRI devices
/// (everything when privileged); and the CRI devices as nodes to create.
pub(super) fn devices(
    input: &SpecInput,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    use LinuxDeviceType::{B, C};
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .typ(LinuxDeviceType::A)
            .access("rwm")
            .build()?,
    ];
    if input.config.security.privileged {
        rules.push(device_rule(LinuxDeviceType::A, None, None, "rwm")?);
    } else {
        rules.push(device_rule(C, None, None, "m")?);
        rules.push(device_rule(B, None, None, "m")?);
        for (major, minor) in [
            (1, Some(3)), // null
            (1, Some(5)), // zero
            (1, Some(7)), // full
            (1, Some(8)), // random
            (1, Some(9)), // urandom
            (5, Some(0)), // tty
            (5, Some(2)), // ptmx
            (136, None),  // pts
        ] {
            rules.push(device_rule(C, Some(major), minor, "rwm")?);
        }
    }
    let mut nodes = Vec::new();
    for d in &input.config.devices {
        let host = input
            .host_devices
            .get(&d.host_path)
            .ok_or_else(|| SpecError::BadDevice {
                host_path: d.host_path.clone(),
                reason: "not a device on this host".into(),
            })?;
        let typ = if host.block { B } else { C };
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            &d.permissions
        };
        nodes.push(
            LinuxDeviceBuilder::default()
                .path(&d.container_path)
                .typ(typ)
                .major(host.major)
                .minor(host.minor)
                .file_mode(host.file_mode)
                .uid(host.uid)
                .gid(host.gid)
                .build()?,
        );
        rules.push(device_rule(
            typ,
            Some(host.major),
            Some(host.minor),
            access,
        )?);
    }
    if input.config.security.privileged {
        // Every host device at its own path (the caller put them in host_devices), unless
        // a CRI device already takes the path.
        let taken: HashSet<String> = nodes
            .iter()
            .map(|n| n.path().to_string_lossy().to_string())
            .collect();
        for (path, host) in input.host_devices {
            if !path.starts_with("/dev/")
                || taken.contains(path)
                || CONTAINER_OWN_DEVICES.contains(&path.as_str())
            {
                continue;
            }
            nodes.push(
                LinuxDeviceBuilder::default()
                    .path(path)
                    .typ(if host.block { B } else { C })
                    .major(host.major)
                    .minor(host.minor)
                    .file_mode(host.file_mode)
                    .uid(host.uid)
                    .gid(host.gid)
                    .build()?,
            );
        }
    }
    Ok((nodes, rules))
}
