//! An OCI `linux.seccomp` compiled into a libseccomp filter, to load in `berth init`.
//!
//! Compiling happens before the container reports "created" (a bad profile fails the
//! create); loading is a separate, last step.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("action {0:?} is not supported")]
    UnsupportedAction(LinuxSeccompAction),
    #[error("architecture {0:?} is not supported")]
    UnsupportedArch(Arch),
    #[error("errno {0} is out of range")]
    BadErrno(u32),
    #[error("argument index {0} is past the sixth")]
    BadArgIndex(usize),
    #[error("{what}")]
    Libseccomp {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
}

fn lib(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |source| SeccompError::Libseccomp { what, source }
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    use LinuxSeccompAction::*;
    let errno_value = |default: u32| {
        let value = errno.unwrap_or(default);
        u16::try_from(value)
            .map(i32::from)
            .map_err(|_| SeccompError::BadErrno(value))
    };
    Ok(match action {
        ScmpActKill | ScmpActKillThread => ScmpAction::KillThread,
        ScmpActKillProcess => ScmpAction::KillProcess,
        ScmpActTrap => ScmpAction::Trap,
        ScmpActErrno => ScmpAction::Errno(errno_value(libc::EPERM as u32)?),
        ScmpActTrace => ScmpAction::Trace(errno_value(libc::EPERM as u32)? as u16),
        ScmpActLog => ScmpAction::Log,
        ScmpActAllow => ScmpAction::Allow,
        // Notify needs a listener (a seccomp agent) that berth does not run.
        ScmpActNotify => return Err(SeccompError::UnsupportedAction(action)),
    })
}

fn arch(arch: Arch) -> Result<ScmpArch, SeccompError> {
    Ok(match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    })
}

fn compare(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare, SeccompError> {
    let index = u32::try_from(arg.index())
        .ok()
        .filter(|i| *i < 6)
        .ok_or(SeccompError::BadArgIndex(arg.index()))?;
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // The OCI form: value is the mask, valueTwo the value the masked argument must equal.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return Ok(ScmpArgCompare::new(
                index,
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            ));
        }
    };
    Ok(ScmpArgCompare::new(index, op, arg.value()))
}

/// Builds the filter. Syscall names this libseccomp does not know are skipped (a profile
/// written for a newer kernel still loads), and so are rules whose action is the default
/// one (libseccomp refuses them; they change nothing). The filter does not set
/// no_new_privs itself: the spec's `noNewPrivileges` decides that.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut filter = ScmpFilterContext::new(default).map_err(lib("create the filter"))?;
    filter
        .set_ctl_nnp(false)
        .map_err(lib("leave no_new_privs to the spec"))?;
    for a in seccomp.architectures().iter().flatten() {
        let a = arch(*a)?;
        let present = filter
            .is_arch_present(a)
            .map_err(lib(format!("check architecture {a:?}")))?;
        if !present {
            filter
                .add_arch(a)
                .map_err(lib(format!("add architecture {a:?}")))?;
        }
    }
    for flag in seccomp.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                filter.set_ctl_log(true).map_err(lib("set the log flag"))?;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                filter
                    .set_ctl_ssb(true)
                    .map_err(lib("set the spec_allow flag"))?;
            }
            // berth's init is single-threaded: there is nothing to synchronize.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync
            | LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {}
        }
    }
    for rule in seccomp.syscalls().iter().flatten() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        if rule_action == default {
            continue;
        }
        let compares = rule
            .args()
            .iter()
            .flatten()
            .map(compare)
            .collect::<Result<Vec<_>, _>>()?;
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            filter
                .add_rule_conditional(rule_action, syscall, &compares)
                .map_err(lib(format!("add a rule for {name}")))?;
        }
    }
    Ok(filter)
}

/// Loads the filter into this process (and what it execs). Needs no_new_privs or
/// CAP_SYS_ADMIN.
pub fn load(filter: &ScmpFilterContext) -> Result<(), SeccompError> {
    filter.load().map_err(lib("load the filter"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::seccomp::parse_profile;
    use crate::container::seccomp_default::default_profile;

    #[test]
    fn default_profile_compiles_for_every_capability_set() {
        let none = std::collections::HashSet::new();
        compile(&default_profile().resolve(&none)).expect("compiles");
        let all = crate::container::spec::ALL_CAPABILITIES
            .into_iter()
            .collect();
        compile(&default_profile().resolve(&all)).expect("compiles");
    }

    #[test]
    fn unknown_names_are_skipped_and_notify_is_refused() {
        let profile = parse_profile(
            "/p",
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","no_such_call_berth"],"action":"SCMP_ACT_ALLOW"},
                {"names":["write"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        compile(&profile.resolve(&Default::default())).expect("compiles");
        let notify = parse_profile(
            "/p",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            compile(&notify.resolve(&Default::default())),
            Err(SeccompError::UnsupportedAction(_))
        ));
    }

    #[test]
    fn masked_eq_puts_the_mask_first() {
        let arg = oci_spec::runtime::LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(0x7E02_0000u64)
            .value_two(0u64)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .unwrap();
        assert_eq!(
            compare(&arg).unwrap(),
            ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(0x7E02_0000), 0)
        );
    }
}
