//! An OCI `linux.seccomp` compiled into a seccomp BPF program, to load in `berth init`.
//!
//! The daemon compiles each profile once (`compiled`, cached: generating the BPF of the
//! default profile costs libseccomp about 15 ms) and writes the program into the bundle
//! as `seccomp.bpf`; init loads it (`load_bpf`) as its last step. Without that file init
//! compiles the spec's profile itself, before it reports "created".

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};

/// The bundle file holding the compiled program of the spec's `linux.seccomp`.
pub const BPF_FILE: &str = "seccomp.bpf";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the compiled program is {0} bytes, not whole instructions")]
    BadProgram(usize),
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

/// A filter ready to load.
pub enum Filter {
    /// Compiled by the daemon (`BPF_FILE`), with the spec's `seccomp(2)` flags.
    Program { bpf: Vec<u8>, flags: u32 },
    /// Compiled here.
    Compiled(ScmpFilterContext),
}

impl Filter {
    /// The daemon's program when there is one, else the spec's profile compiled here.
    pub fn prepare(
        seccomp: &LinuxSeccomp,
        program: Option<Vec<u8>>,
    ) -> Result<Filter, SeccompError> {
        Ok(match program {
            Some(bpf) => Filter::Program {
                bpf,
                flags: load_flags(seccomp),
            },
            None => Filter::Compiled(compile(seccomp)?),
        })
    }

    /// Loads it into this process. Needs no_new_privs or CAP_SYS_ADMIN.
    pub fn load(&self) -> Result<(), SeccompError> {
        match self {
            Filter::Program { bpf, flags } => load_bpf(bpf, *flags),
            Filter::Compiled(filter) => load(filter),
        }
    }
}

/// The BPF program of a compiled filter.
pub fn to_bpf(filter: &ScmpFilterContext) -> Result<Vec<u8>, SeccompError> {
    use std::io::{Read, Seek};
    let io = |what| move |source| SeccompError::Io { what, source };
    let fd = rustix::fs::memfd_create("berth-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| io("create a memfd")(e.into()))?;
    filter.export_bpf(&fd).map_err(lib("export the program"))?;
    let mut file = std::fs::File::from(fd);
    file.rewind().map_err(io("read the program"))?;
    let mut program = Vec::new();
    file.read_to_end(&mut program)
        .map_err(io("read the program"))?;
    Ok(program)
}

/// The `seccomp(2)` flags a spec asks for (libseccomp applies them at load time; a
/// program loaded directly needs them given).
pub fn load_flags(seccomp: &LinuxSeccomp) -> u32 {
    seccomp
        .flags()
        .iter()
        .flatten()
        .map(|f| match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG as u32,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32
            }
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// Compiles `seccomp` to its BPF program, once per distinct profile.
pub fn compiled(seccomp: &LinuxSeccomp) -> Result<std::sync::Arc<[u8]>, SeccompError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    // Few distinct profiles exist (the default one per capability set, a few files):
    // the cache is dropped whole past this many.
    const MAX_CACHED: usize = 64;
    /// Profile JSON → program.
    type Programs = HashMap<Vec<u8>, Arc<[u8]>>;
    static CACHE: OnceLock<Mutex<Programs>> = OnceLock::new();
    let key = serde_json::to_vec(seccomp).unwrap_or_default();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    let program: Arc<[u8]> = to_bpf(&compile(seccomp)?)?.into();
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= MAX_CACHED {
        cache.clear();
    }
    cache.insert(key, program.clone());
    Ok(program)
}

/// Loads a BPF program (from `to_bpf`) into this process with `seccomp(2)`. Needs
/// no_new_privs or CAP_SYS_ADMIN.
pub fn load_bpf(program: &[u8], flags: u32) -> Result<(), SeccompError> {
    const INSTRUCTION: usize = std::mem::size_of::<libc::sock_filter>();
    if program.is_empty() || !program.len().is_multiple_of(INSTRUCTION) {
        return Err(SeccompError::BadProgram(program.len()));
    }
    let len = u16::try_from(program.len() / INSTRUCTION)
        .map_err(|_| SeccompError::BadProgram(program.len()))?;
    // Copied into properly aligned instructions.
    let filters: Vec<libc::sock_filter> = program
        .chunks_exact(INSTRUCTION)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SeccompError::Io {
            what: "load the program",
            source: std::io::Error::last_os_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::seccomp::default_profile;
    use crate::container::seccomp::parse_profile;

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
    fn compiled_programs_are_cached_and_whole() {
        let caps = crate::container::spec::DEFAULT_CAPABILITIES
            .into_iter()
            .collect();
        let seccomp = default_profile().resolve(&caps);
        let first = compiled(&seccomp).expect("compiles");
        assert_eq!(first.len() % 8, 0);
        assert!(
            first.len() > 8 * 100,
            "a real program: {} bytes",
            first.len()
        );
        let again = compiled(&seccomp).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        assert!(matches!(
            load_bpf(&first[..7], 0),
            Err(SeccompError::BadProgram(7))
        ));
    }

    #[test]
    fn a_loaded_program_filters_this_process() {
        // In a throwaway child: a filter cannot be removed once loaded.
        let profile = parse_profile(
            "/p",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":99}]}"#,
        )
        .unwrap()
        .resolve(&Default::default());
        let program = to_bpf(&compile(&profile).unwrap()).unwrap();
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    rustix::thread::set_no_new_privs(true).ok()?;
                    load_bpf(&program, 0).ok()?;
                    // SAFETY: a raw syscall without arguments.
                    let rc = unsafe { libc::syscall(libc::SYS_getppid) };
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    (rc == -1 && errno == Some(99)).then_some(0)
                })()
                .unwrap_or(1);
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
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
