//! Seccomp profiles: berth's built-in default (`RuntimeDefault`), profile files on the node
//! (`Localhost`, in the OCI or the Docker JSON form), and their resolution against the
//! container's capabilities into the OCI spec's `linux.seccomp`, which `berth init` loads.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{Capability, LinuxSeccomp};

mod default;
mod profile;

pub use default::default_profile;
pub use profile::{ArchMapEntry, ProfileFile, RuleFilter, SyscallRule};

use crate::container::config::{ProfileType, SecurityProfile};
use crate::error::{Error, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile: localhost_ref is required with profile type Localhost")]
    MissingRef,
    #[error("seccomp profile {0:?}: not an absolute path")]
    RelativeRef(String),
    #[error("seccomp profile {path}: cannot read it")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp profile {path}: not a valid profile")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("seccomp profile {path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl From<SeccompError> for Error {
    fn from(err: SeccompError) -> Self {
        Error::with_source(ErrorKind::InvalidArgument, "security_context.seccomp", err)
    }
}

/// The profile file a Localhost profile names, read (blocking: call it off the executor).
/// Ok(None) when the container asks for no Localhost profile.
pub fn read_localhost(profile: Option<&SecurityProfile>) -> Result<Option<String>, SeccompError> {
    let Some(profile) = profile.filter(|p| p.profile_type == ProfileType::Localhost) else {
        return Ok(None);
    };
    let path = localhost_path(profile)?;
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|source| SeccompError::Read {
            path: profile.localhost_ref.clone(),
            source,
        })
}

fn localhost_path(profile: &SecurityProfile) -> Result<&Path, SeccompError> {
    if profile.localhost_ref.is_empty() {
        return Err(SeccompError::MissingRef);
    }
    let path = Path::new(&profile.localhost_ref);
    if !path.is_absolute() {
        return Err(SeccompError::RelativeRef(profile.localhost_ref.clone()));
    }
    Ok(path)
}

/// Parses a profile file's contents; `path` names it in errors.
pub fn parse_profile(path: &str, contents: &str) -> Result<ProfileFile, SeccompError> {
    let profile: ProfileFile =
        serde_json::from_str(contents).map_err(|source| SeccompError::Parse {
            path: path.to_owned(),
            source,
        })?;
    for rule in &profile.syscalls {
        if rule.names.is_empty() && rule.name.is_empty() {
            return Err(SeccompError::Invalid {
                path: path.to_owned(),
                reason: "a syscall rule names no syscall".into(),
            });
        }
        if let Some(arg) = rule.args.iter().find(|a| a.index() > 5) {
            return Err(SeccompError::Invalid {
                path: path.to_owned(),
                reason: format!("argument index {} is past the sixth", arg.index()),
            });
        }
    }
    Ok(profile)
}

/// The container's `linux.seccomp`: None for unconfined (no profile asked, `Unconfined`, or
/// privileged, as the kubelet and other runtimes do); `localhost_contents` is what
/// `read_localhost` read for a Localhost profile.
pub fn container_seccomp(
    profile: Option<&SecurityProfile>,
    privileged: bool,
    caps: &HashSet<Capability>,
    localhost_contents: Option<&str>,
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    let Some(profile) = profile else {
        return Ok(None);
    };
    if privileged {
        return Ok(None);
    }
    match profile.profile_type {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => Ok(Some(default::default_profile().resolve(caps))),
        ProfileType::Localhost => {
            let path = localhost_path(profile)?;
            let display = path.display().to_string();
            let contents = localhost_contents.ok_or_else(|| SeccompError::Invalid {
                path: display.clone(),
                reason: "the profile was not read".into(),
            })?;
            Ok(Some(parse_profile(&display, contents)?.resolve(caps)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompOperator};

    fn caps(list: &[Capability]) -> HashSet<Capability> {
        list.iter().copied().collect()
    }

    #[test]
    fn docker_and_oci_files_parse() {
        let docker = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]}
            ],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "x"},
                {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["kill"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": 9, "valueTwo": 0, "op": "SCMP_CMP_NE"}]},
                {"names": ["uname"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}}
            ]
        }"#;
        let profile = parse_profile("/p.json", docker).unwrap();
        let seccomp = profile.resolve(&caps(&[]));
        let names: Vec<_> = seccomp
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["read", "write", "kill"]);
        let kill = &seccomp.syscalls().as_ref().unwrap()[1];
        assert_eq!(
            kill.args().as_ref().unwrap()[0].op(),
            LinuxSeccompOperator::ScmpCmpNe
        );
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                seccomp.architectures().as_deref(),
                Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86][..])
            );
        }
        let with_admin = profile.resolve(&caps(&[Capability::SysAdmin]));
        assert_eq!(with_admin.syscalls().as_ref().unwrap().len(), 3);

        let oci = r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                      "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}"#;
        let seccomp = parse_profile("/q.json", oci).unwrap().resolve(&caps(&[]));
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(seccomp.syscalls().as_ref().unwrap()[0].errno_ret(), None);
    }

    #[test]
    fn bad_files_name_the_file() {
        for bad in [
            "not json",
            r#"{"syscalls": []}"#,
            r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}"#,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
        ] {
            let err = parse_profile("/etc/p.json", bad).unwrap_err();
            assert!(err.to_string().contains("/etc/p.json"), "{err}");
            assert_eq!(Error::from(err).kind(), ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn profile_choice() {
        let none = caps(&[]);
        let profile = |t, r: &str| SecurityProfile {
            profile_type: t,
            localhost_ref: r.into(),
        };
        assert!(
            container_seccomp(None, false, &none, None)
                .unwrap()
                .is_none()
        );
        let unconfined = profile(ProfileType::Unconfined, "");
        assert!(
            container_seccomp(Some(&unconfined), false, &none, None)
                .unwrap()
                .is_none()
        );
        let default = profile(ProfileType::RuntimeDefault, "");
        assert!(
            container_seccomp(Some(&default), false, &none, None)
                .unwrap()
                .is_some()
        );
        // Privileged containers run unconfined whatever they ask.
        assert!(
            container_seccomp(Some(&default), true, &none, None)
                .unwrap()
                .is_none()
        );
        let local = profile(ProfileType::Localhost, "/x.json");
        let got = container_seccomp(
            Some(&local),
            false,
            &none,
            Some(r#"{"defaultAction":"SCMP_ACT_LOG"}"#),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.default_action(), LinuxSeccompAction::ScmpActLog);
        let relative = profile(ProfileType::Localhost, "x.json");
        assert!(matches!(
            read_localhost(Some(&relative)),
            Err(SeccompError::RelativeRef(_))
        ));
        let missing = profile(ProfileType::Localhost, "/nonexistent/berth-profile.json");
        let err = read_localhost(Some(&missing)).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/berth-profile.json"),
            "{err}"
        );
        let empty = profile(ProfileType::Localhost, "");
        assert!(matches!(
            read_localhost(Some(&empty)),
            Err(SeccompError::MissingRef)
        ));
    }
}
