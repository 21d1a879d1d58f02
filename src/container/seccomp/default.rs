//! berth's built-in seccomp profile (CRI `RuntimeDefault`), as data.
//!
//! What it allows follows the default profile that Docker, containerd and CRI-O ship:
//! everything a normal program needs; the calls that reach past the container (mounts,
//! namespaces, kernel modules, keyrings, clocks, reboot, tracing other processes, BPF...)
//! only with the capability that guards them; every other call fails with EPERM.

use oci_spec::runtime::{
    Arch, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator,
};

use super::profile::{ArchMapEntry, ProfileFile, RuleFilter, SyscallRule};

/// Allowed for every container.
const ALLOWED: &str = "\
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod \
    chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 \
    clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close \
    close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 \
    epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd \
    eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 \
    fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat \
    fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat \
    fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue \
    futex_time64 futex_wait futex_waitv futex_wake futimesat get_robust_list \
    get_thread_area getcpu getcwd getdents getdents64 getegid getegid32 geteuid \
    geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid \
    getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid \
    getresuid32 getrlimit getrusage getsid getsockname getsockopt gettid gettimeofday \
    getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 \
    inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents \
    io_pgetevents_time64 io_setup io_submit ioctl ioprio_get ioprio_set ipc kill \
    landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 \
    lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek \
    lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create \
    memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 \
    mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 \
    mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync \
    munlock munlockall munmap nanosleep newfstatat _newselect open openat openat2 pause \
    pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll \
    ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 \
    pselect6_time64 ptrace pwrite64 pwritev pwritev2 read readahead readlink readlinkat \
    readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr \
    rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending \
    rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait \
    rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max \
    sched_get_priority_min sched_getaffinity sched_getattr sched_getparam \
    sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 \
    sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield \
    seccomp select semctl semget semop semtimedop semtimedop_time64 send sendfile \
    sendfile64 sendmmsg sendmsg sendto set_robust_list set_thread_area set_tid_address \
    setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 \
    setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid \
    setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid setuid32 setxattr \
    shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask \
    sigreturn socket socketcall socketpair splice stat stat64 statfs statfs64 statx \
    symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create \
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime \
    timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime \
    timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink \
    unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid \
    write writev";

/// x86 only: thread-local storage and LDT setup.
const ALLOWED_X86: &[&str] = &["arch_prctl", "modify_ldt"];

/// Calls allowed only to holders of a capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// The `clone` flags that create namespaces: without CAP_SYS_ADMIN, clone is allowed only
/// when none of them is set.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `personality` values that only pick an ABI flavour: Linux, Linux32, UNAME26 and their
/// combination, and the query (0xffffffff).
pub(crate) const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn rule(names: &[&str], action: LinuxSeccompAction) -> SyscallRule {
    SyscallRule {
        names: names.iter().map(|s| s.to_string()).collect(),
        action,
        ..Default::default()
    }
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    let builder = match value_two {
        Some(v) => builder.value_two(v),
        None => builder,
    };
    // Every field has a default: building cannot fail.
    builder.build().unwrap_or_default()
}

/// berth's built-in default profile (before resolving it against capabilities).
pub fn default_profile() -> ProfileFile {
    use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};
    let allowed: Vec<&str> = ALLOWED.split_whitespace().collect();
    let mut syscalls = vec![rule(&allowed, Allow)];
    syscalls.push(SyscallRule {
        includes: RuleFilter {
            arches: vec!["amd64".into()],
            ..Default::default()
        },
        ..rule(ALLOWED_X86, Allow)
    });
    // One rule per value: conditions within a rule are AND'ed.
    for value in PERSONALITIES {
        syscalls.push(SyscallRule {
            args: vec![arg(0, value, None, LinuxSeccompOperator::ScmpCmpEq)],
            ..rule(&["personality"], Allow)
        });
    }
    let without_sys_admin = RuleFilter {
        caps: vec!["CAP_SYS_ADMIN".into()],
        ..Default::default()
    };
    syscalls.push(SyscallRule {
        // (flags & CLONE_NAMESPACE_FLAGS) == 0
        args: vec![arg(
            0,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )],
        excludes: without_sys_admin.clone(),
        ..rule(&["clone"], Allow)
    });
    // clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall back
    // to clone, which the rule above checks.
    syscalls.push(SyscallRule {
        errno_ret: Some(libc::ENOSYS as u32),
        excludes: without_sys_admin,
        ..rule(&["clone3"], Errno)
    });
    for (cap, names) in BY_CAPABILITY {
        syscalls.push(SyscallRule {
            includes: RuleFilter {
                caps: vec![(*cap).to_owned()],
                ..Default::default()
            },
            ..rule(names, Allow)
        });
    }
    ProfileFile {
        default_action: Errno,
        default_errno_ret: Some(libc::EPERM as u32),
        arch_map: vec![
            ArchMapEntry {
                architecture: Arch::ScmpArchX86_64,
                sub_architectures: vec![Arch::ScmpArchX86, Arch::ScmpArchX32],
            },
            ArchMapEntry {
                architecture: Arch::ScmpArchAarch64,
                sub_architectures: vec![Arch::ScmpArchArm],
            },
        ],
        syscalls,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use oci_spec::runtime::{Capability, LinuxSeccomp};

    use super::*;

    fn allowed(seccomp: &LinuxSeccomp) -> HashSet<String> {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn caps(list: &[Capability]) -> HashSet<Capability> {
        list.iter().copied().collect()
    }

    #[test]
    fn default_profile_denies_with_eperm_on_every_x86_abi() {
        let seccomp = default_profile().resolve(&caps(&[]));
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(seccomp.default_errno_ret(), Some(libc::EPERM as u32));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                seccomp.architectures().as_deref(),
                Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
            );
        }
    }

    #[test]
    fn default_profile_guards_calls_by_capability() {
        let plain = default_profile().resolve(&caps(&[Capability::Chown]));
        let names = allowed(&plain);
        for call in [
            "read",
            "execve",
            "close_range",
            "setresuid",
            "socket",
            "ptrace",
        ] {
            assert!(names.contains(call), "{call} should be allowed");
        }
        for call in [
            "mount",
            "sethostname",
            "unshare",
            "setns",
            "reboot",
            "keyctl",
            "add_key",
            "kexec_load",
            "init_module",
            "bpf",
            "chroot",
            "userfaultfd",
            "io_uring_setup",
        ] {
            assert!(!names.contains(call), "{call} should be denied");
        }
        let admin =
            default_profile().resolve(&caps(&[Capability::SysAdmin, Capability::SysChroot]));
        let names = allowed(&admin);
        for call in [
            "mount",
            "sethostname",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "chroot",
        ] {
            assert!(
                names.contains(call),
                "{call} should be allowed with the capability"
            );
        }
    }

    #[test]
    fn clone_is_filtered_by_namespace_flags_unless_sys_admin() {
        let plain = default_profile().resolve(&caps(&[]));
        let clone: Vec<_> = plain
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == "clone"))
            .collect();
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().clone().unwrap();
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(args[0].value(), 0x7E02_0000);
        assert_eq!(args[0].value_two(), Some(0));
        let clone3 = plain
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names().iter().any(|n| n == "clone3"))
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(libc::ENOSYS as u32));

        let admin = default_profile().resolve(&caps(&[Capability::SysAdmin]));
        assert!(
            !admin
                .syscalls()
                .iter()
                .flatten()
                .any(|s| s.args().is_some() && s.names().iter().any(|n| n == "clone"))
        );
    }

    #[test]
    fn personality_is_allowed_for_abi_values_only() {
        let plain = default_profile().resolve(&caps(&[]));
        let values: Vec<u64> = plain
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names() == &["personality".to_string()])
            .map(|s| s.args().clone().unwrap()[0].value())
            .collect();
        assert_eq!(values, PERSONALITIES);
    }
}
