//! A seccomp profile as data (the OCI or Docker JSON form, or the built-in default) and its
//! resolution against a container's capabilities into the OCI `linux.seccomp`.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSyscall,
};
use serde::Deserialize;

/// A profile file as Docker and the OCI spec write it. Docker's extras are understood:
/// `name` beside `names`, `archMap`, and per-rule `includes`/`excludes` by capability or
/// architecture; `minKernel` conditions are taken as met (berth needs a kernel newer than
/// any that Docker's profile tests for).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProfileFile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<Arch>,
    #[serde(default)]
    pub arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    pub flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    pub syscalls: Vec<SyscallRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMapEntry {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Vec<Arch>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub name: String,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    pub includes: RuleFilter,
    #[serde(default)]
    pub excludes: RuleFilter,
}

/// When a rule applies: `includes` needs every listed capability and one of the listed
/// architectures; `excludes` drops the rule when any listed one is there.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuleFilter {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// The seccomp architecture name of this machine, as profiles write it.
fn native_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        std::env::consts::ARCH
    }
}

/// Docker names architectures in `includes.arches` by Go's names, containerd by both.
fn arch_matches(name: &str) -> bool {
    let native = native_arch();
    name == native
        || match native {
            "amd64" => matches!(name, "x86_64" | "SCMP_ARCH_X86_64"),
            "arm64" => matches!(name, "aarch64" | "SCMP_ARCH_AARCH64"),
            _ => false,
        }
}

/// The capability name as profiles write it (`CAP_SYS_ADMIN`), from oci-spec's serde form.
fn cap_name(cap: &Capability) -> String {
    serde_json::to_value(cap)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl ProfileFile {
    /// The OCI `linux.seccomp` for a container holding `caps` (its bounding set).
    pub fn resolve(&self, caps: &HashSet<Capability>) -> LinuxSeccomp {
        let held: HashSet<String> = caps.iter().map(cap_name).collect();
        let has_cap = |c: &String| {
            let c = c.to_ascii_uppercase();
            if c.starts_with("CAP_") {
                held.contains(&c)
            } else {
                held.contains(&format!("CAP_{c}"))
            }
        };
        let mut architectures = self.architectures.clone();
        for entry in &self.arch_map {
            // Only this machine's ABIs matter; the others' rules would never run.
            let native = serde_json::to_value(entry.architecture)
                .ok()
                .and_then(|v| v.as_str().map(arch_matches))
                .unwrap_or(false);
            if native {
                architectures.push(entry.architecture);
                architectures.extend(entry.sub_architectures.iter().copied());
            }
        }
        let mut seen = HashSet::new();
        architectures.retain(|a| seen.insert(*a as u32));
        let syscalls = self
            .syscalls
            .iter()
            .filter(|rule| {
                let inc = &rule.includes;
                let exc = &rule.excludes;
                inc.caps.iter().all(has_cap)
                    && (inc.arches.is_empty() || inc.arches.iter().any(|a| arch_matches(a)))
                    && !exc.caps.iter().any(has_cap)
                    && !exc.arches.iter().any(|a| arch_matches(a))
            })
            .map(|rule| {
                let mut names = rule.names.clone();
                if !rule.name.is_empty() {
                    names.push(rule.name.clone());
                }
                let mut syscall = LinuxSyscall::default();
                syscall.set_names(names);
                syscall.set_action(rule.action);
                syscall.set_errno_ret(rule.errno_ret);
                syscall.set_args((!rule.args.is_empty()).then(|| rule.args.clone()));
                syscall
            })
            .filter(|s| !s.names().is_empty())
            .collect();
        let mut seccomp = LinuxSeccomp::default();
        seccomp.set_default_action(self.default_action);
        seccomp.set_default_errno_ret(self.default_errno_ret);
        seccomp.set_architectures((!architectures.is_empty()).then_some(architectures));
        seccomp.set_flags((!self.flags.is_empty()).then(|| self.flags.clone()));
        seccomp.set_syscalls(Some(syscalls));
        seccomp
    }
}
