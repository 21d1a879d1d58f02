//! Pod sysctls: only namespaced ones are allowed, and only in a namespace the pod owns
//! (the rules the kubelet applies).

use std::collections::BTreeMap;

use crate::Error;

/// The namespace a sysctl belongs to, if it is namespaced at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SysctlNamespace {
    Ipc,
    Network,
}

/// Dotted form of a sysctl name. A name whose first separator is `/` is in the path form, where
/// dots may be part of a component (`net/ipv4/conf/eth0.100/rp_filter`): swap the two separators,
/// as sysctl(8) does.
fn normalize_name(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                other => other,
            })
            .collect(),
        _ => name.to_owned(),
    }
}

fn namespace_of(name: &str) -> Option<SysctlNamespace> {
    if name == "kernel.sem"
        || name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name.starts_with("fs.mqueue.")
    {
        Some(SysctlNamespace::Ipc)
    } else if name.starts_with("net.") {
        Some(SysctlNamespace::Network)
    } else {
        None
    }
}

/// Checks a pod's sysctls and returns them with dotted names.
pub fn validate_sysctls(
    sysctls: &BTreeMap<String, String>,
    host_network: bool,
    host_ipc: bool,
) -> Result<BTreeMap<String, String>, Error> {
    let mut normalized = BTreeMap::new();
    for (name, value) in sysctls {
        let dotted = normalize_name(name);
        if dotted.is_empty() || dotted.contains(['\0', '\n', ' ']) || dotted.contains("..") {
            return Err(Error::invalid_argument(format!(
                "sysctl {name:?} is not a valid name"
            )));
        }
        if value.contains(['\0', '\n']) {
            return Err(Error::invalid_argument(format!(
                "sysctl {name} has an invalid value {value:?}"
            )));
        }
        match namespace_of(&dotted) {
            None => {
                return Err(Error::invalid_argument(format!(
                    "sysctl {name} is not namespaced"
                )));
            }
            Some(SysctlNamespace::Network) if host_network => {
                return Err(Error::invalid_argument(format!(
                    "sysctl {name} not allowed with host network enabled"
                )));
            }
            Some(SysctlNamespace::Ipc) if host_ipc => {
                return Err(Error::invalid_argument(format!(
                    "sysctl {name} not allowed with host IPC enabled"
                )));
            }
            Some(_) => {}
        }
        normalized.insert(dotted, value.clone());
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn namespaced_sysctls_pass_normalized() {
        let out = validate_sysctls(
            &map(&[
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv4/conf/eth0.100/rp_filter", "0"),
                ("kernel.shm_rmid_forced", "1"),
                ("kernel.msgmax", "8192"),
                ("kernel.sem", "250 32000 32 128"),
                ("fs.mqueue.msg_max", "10"),
                ("net.core.somaxconn", "1024"),
            ]),
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            map(&[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.eth0/100.rp_filter", "0"),
                ("kernel.shm_rmid_forced", "1"),
                ("kernel.msgmax", "8192"),
                ("kernel.sem", "250 32000 32 128"),
                ("fs.mqueue.msg_max", "10"),
                ("net.core.somaxconn", "1024"),
            ])
        );
    }

    #[test]
    fn node_wide_sysctls_are_refused() {
        for name in [
            "kernel.panic",
            "vm.swappiness",
            "kernel.semaphore",
            "fs.file-max",
            "kernel/hostname",
        ] {
            let err = validate_sysctls(&map(&[(name, "1")]), false, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert_eq!(err.to_string(), format!("sysctl {name} is not namespaced"));
        }
    }

    #[test]
    fn host_namespaces_refuse_their_sysctls() {
        let net = map(&[("net.ipv4.ip_forward", "1")]);
        let ipc = map(&[("kernel.shmmax", "1")]);
        let err = validate_sysctls(&net, true, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("host network"), "{err}");
        let err = validate_sysctls(&ipc, false, true).unwrap_err();
        assert!(err.to_string().contains("host IPC"), "{err}");
        // The other namespace is still the pod's own.
        assert!(validate_sysctls(&net, false, true).is_ok());
        assert!(validate_sysctls(&ipc, true, false).is_ok());
    }

    #[test]
    fn malformed_names_and_values_are_refused() {
        for (name, value) in [("", "1"), ("net.a b", "1"), ("net.ipv4.x", "1\n2")] {
            let err = validate_sysctls(&map(&[(name, value)]), false, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        }
    }
}
