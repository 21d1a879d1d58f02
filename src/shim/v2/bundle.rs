//! containerd's OCI bundle: what berth's init cannot do is refused before anything is
//! made (naming the config.json field), and the rootfs mounts containerd passes in
//! Create are mounted at `<bundle>/rootfs` (in the shim's mount namespace, the host's)
//! and unmounted on Delete.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde_json::Value;

/// The namespace types berth's init knows (the OCI runtime spec's list).
const NAMESPACE_TYPES: &[&str] = &[
    "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
];

/// Seccomp actions berth's filter compiler knows.
const SECCOMP_ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
];

/// Refuses a config.json asking for what berth's init does not do, naming the field.
pub fn check_spec(config: &Value) -> Result<(), String> {
    if let Some(hooks) = config.get("hooks").and_then(Value::as_object) {
        for (kind, list) in hooks {
            if list.as_array().is_some_and(|l| !l.is_empty()) {
                return Err(format!(
                    "config.json: hooks.{kind} is not supported by berth (no OCI hooks are run)"
                ));
            }
        }
    }
    let linux = config.get("linux");
    let namespaces = linux
        .and_then(|l| l.get("namespaces"))
        .and_then(Value::as_array);
    for (index, namespace) in namespaces.into_iter().flatten().enumerate() {
        let kind = namespace.get("type").and_then(Value::as_str).unwrap_or("");
        if !NAMESPACE_TYPES.contains(&kind) {
            return Err(format!(
                "config.json: linux.namespaces[{index}].type {kind:?} is not a namespace type berth knows"
            ));
        }
    }
    if let Some(seccomp) = linux.and_then(|l| l.get("seccomp")) {
        let known = |action: &Value| {
            action
                .as_str()
                .is_some_and(|a| SECCOMP_ACTIONS.contains(&a))
        };
        if let Some(action) = seccomp.get("defaultAction")
            && !known(action)
        {
            return Err(format!(
                "config.json: linux.seccomp.defaultAction {action} is not a seccomp action berth knows"
            ));
        }
        let syscalls = seccomp.get("syscalls").and_then(Value::as_array);
        for (index, rule) in syscalls.into_iter().flatten().enumerate() {
            if let Some(action) = rule.get("action")
                && !known(action)
            {
                return Err(format!(
                    "config.json: linux.seccomp.syscalls[{index}].action {action} is not a seccomp action berth knows"
                ));
            }
        }
    }
    Ok(())
}

/// The devices every container may use whatever its spec lists (what runc allows on its
/// own and containerd's specs rely on): mknod of any, and null, random, full, tty, zero,
/// urandom, the pty slaves, ptmx and tun. (type, major, minor; -1 is any.)
const DEFAULT_DEVICES: &[(&str, i64, i64, &str)] = &[
    ("c", -1, -1, "m"),
    ("b", -1, -1, "m"),
    ("c", 1, 3, "rwm"),
    ("c", 1, 8, "rwm"),
    ("c", 1, 7, "rwm"),
    ("c", 5, 0, "rwm"),
    ("c", 1, 5, "rwm"),
    ("c", 1, 9, "rwm"),
    ("c", 136, -1, "rwm"),
    ("c", 5, 2, "rwm"),
    ("c", 10, 200, "rwm"),
];

/// Appends the default device rules to the spec's device cgroup rules (after them, so
/// they win over a leading deny-all); false when the spec has no resources section to
/// hold them and none is needed.
pub fn add_default_devices(config: &mut Value) -> bool {
    let Some(linux) = config.get_mut("linux").and_then(Value::as_object_mut) else {
        return false;
    };
    let resources = linux
        .entry("resources")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(resources) = resources.as_object_mut() else {
        return false;
    };
    let devices = resources
        .entry("devices")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(devices) = devices.as_array_mut() else {
        return false;
    };
    for (kind, major, minor, access) in DEFAULT_DEVICES {
        let mut rule = serde_json::json!({"allow": true, "type": kind, "access": access});
        if *major >= 0 {
            rule["major"] = Value::from(*major);
        }
        if *minor >= 0 {
            rule["minor"] = Value::from(*minor);
        }
        devices.push(rule);
    }
    true
}

/// One mount(2) call: flags from the options mount(8) knows, the rest as data.
#[derive(Debug, PartialEq, Eq)]
pub struct MountCall {
    pub fstype: String,
    pub source: String,
    pub flags: MsFlags,
    pub data: String,
}

/// Translates a containerd mount (type, source, options) into a mount(2) call.
pub fn mount_call(fstype: &str, source: &str, options: &[String]) -> MountCall {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "suid" | "dev" | "exec" | "defaults" => {}
            other => data.push(other),
        }
    }
    let fstype = if fstype == "bind" { "none" } else { fstype };
    MountCall {
        fstype: fstype.to_string(),
        source: source.to_string(),
        flags,
        data: data.join(","),
    }
}

/// The rootfs mount point of a bundle.
pub fn rootfs_dir(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

/// Mounts containerd's rootfs mounts at `<bundle>/rootfs`, in order; on failure the ones
/// made are undone.
pub fn mount_rootfs(
    bundle: &Path,
    mounts: &[containerd_shim_protos::api::Mount],
) -> Result<(), String> {
    let target = rootfs_dir(bundle);
    std::fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
    for (index, m) in mounts.iter().enumerate() {
        let call = mount_call(&m.type_, &m.source, &m.options);
        let result = mount(
            Some(call.source.as_str()),
            &target,
            Some(call.fstype.as_str()),
            call.flags,
            Some(call.data.as_str()).filter(|d| !d.is_empty()),
        );
        if let Err(e) = result {
            for _ in 0..index {
                let _ = umount2(&target, MntFlags::MNT_DETACH);
            }
            return Err(format!(
                "mount rootfs[{index}] ({} {}) on {}: {e}",
                m.type_,
                m.source,
                target.display()
            ));
        }
    }
    Ok(())
}

/// Unmounts whatever is mounted at `<bundle>/rootfs` (nothing is fine).
pub fn unmount_rootfs(bundle: &Path) -> Result<(), String> {
    let target = rootfs_dir(bundle);
    loop {
        match umount2(&target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(format!("unmount {}: {e}", target.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hook_is_refused_naming_its_kind() {
        let config = json!({"hooks": {"prestart": [{"path": "/bin/true"}]}});
        let err = check_spec(&config).unwrap_err();
        assert!(err.contains("hooks.prestart"), "{err}");
        assert!(check_spec(&json!({"hooks": {"prestart": []}})).is_ok());
    }

    #[test]
    fn an_unknown_namespace_type_is_refused_naming_the_field() {
        let config = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "blue"}]}});
        let err = check_spec(&config).unwrap_err();
        assert!(err.contains("linux.namespaces[1].type \"blue\""), "{err}");
        let fine = json!({"linux": {"namespaces": [{"type": "network", "path": "/x"}, {"type": "mount"}]}});
        assert!(check_spec(&fine).is_ok());
    }

    #[test]
    fn an_unknown_seccomp_action_is_refused_naming_the_field() {
        let config = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}}});
        let err = check_spec(&config).unwrap_err();
        assert!(err.contains("linux.seccomp.syscalls[0].action"), "{err}");
        let bad_default = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_DANCE"}}});
        assert!(
            check_spec(&bad_default)
                .unwrap_err()
                .contains("defaultAction")
        );
    }

    #[test]
    fn default_devices_follow_the_specs_deny_all() {
        let mut config =
            json!({"linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}});
        assert!(add_default_devices(&mut config));
        let devices = config["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(devices[0]["allow"], false, "the spec's rule stays first");
        assert!(
            devices
                .iter()
                .any(|d| d["major"] == 5 && d["minor"] == 2 && d["allow"] == true)
        );
        assert!(
            devices
                .iter()
                .any(|d| d["major"] == 136 && d.get("minor").is_none())
        );
        // The result is still an OCI spec.
        let spec: oci_spec::runtime::Spec = serde_json::from_value(json!({
            "ociVersion": "1.2.0", "linux": config["linux"].clone()}))
        .unwrap();
        assert!(spec.linux().as_ref().unwrap().resources().is_some());
        let mut no_linux = json!({"process": {}});
        assert!(!add_default_devices(&mut no_linux));
    }

    #[test]
    fn overlay_options_become_data_and_bind_options_flags() {
        let options: Vec<String> = ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/a:/b"]
            .map(String::from)
            .to_vec();
        let call = mount_call("overlay", "overlay", &options);
        assert_eq!(call.flags, MsFlags::empty());
        assert_eq!(call.data, "index=off,workdir=/w,upperdir=/u,lowerdir=/a:/b");
        let bind = mount_call("bind", "/snap/1", &["rbind".into(), "ro".into()]);
        assert_eq!(bind.fstype, "none");
        assert_eq!(
            bind.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert!(bind.data.is_empty());
    }
}
