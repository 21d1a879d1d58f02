//! Why a container spec could not be built, and the gRPC code each reason maps to.

use crate::container::users::UserError;
use crate::error::{Error, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified")]
    NoCommand,
    #[error("user: {0}")]
    User(#[source] UserError),
    #[error("image USER {user:?}: {source}")]
    ImageUser {
        user: String,
        #[source]
        source: UserError,
    },
    #[error("run_as_user/run_as_group: {0} is not a valid id")]
    InvalidId(i64),
    #[error("supplemental_groups: {0} is not a valid gid")]
    InvalidGid(i64),
    #[error("mount {container_path}: {reason}")]
    BadMount {
        container_path: String,
        reason: String,
    },
    #[error("device {host_path}: {reason}")]
    BadDevice { host_path: String, reason: String },
    #[error("apparmor profile {0:?}: AppArmor is not enabled on this host")]
    NoAppArmor(String),
    #[error("apparmor: localhost_ref is required with profile type Localhost")]
    AppArmorMissingRef,
    #[error("apparmor profile {0:?}: not a profile name (letters, digits and ._-+@, no path)")]
    AppArmorBadName(String),
    #[error("apparmor: the runtime default profile is unavailable on this host: {0}")]
    AppArmorNoDefault(String),
    #[error("privileged: not possible in a pod with its own user namespace")]
    PrivilegedInUserNamespace,
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("pid namespace of target container {0:?}: the container is not running")]
    NoTargetPid(String),
    #[error(transparent)]
    Seccomp(#[from] crate::container::seccomp::SeccompError),
    #[error("building the OCI spec")]
    Oci(#[from] oci_spec::OciSpecError),
}

impl From<SpecError> for Error {
    fn from(err: SpecError) -> Self {
        let kind = match &err {
            SpecError::ImageUser { .. }
            | SpecError::NoTargetPid(_)
            | SpecError::AppArmorNoDefault(_) => ErrorKind::FailedPrecondition,
            SpecError::Oci(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidArgument,
        };
        Error::with_source(kind, "building the container spec", err)
    }
}
