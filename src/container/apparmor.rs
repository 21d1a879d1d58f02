//! AppArmor on the host: whether the kernel enforces it, which profiles are loaded, and
//! berth's runtime-default profile (`data/apparmor/berth-default`), loaded with
//! `apparmor_parser` when the daemon starts. The policy is host-wide, so the version
//! berth loaded is stamped under /run (gone at reboot, like the kernel's policy) for the
//! next daemon to see; a newer berth replaces an older profile, never the other way.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::container::spec::AppArmorHost;

/// The name of berth's runtime-default profile.
pub const DEFAULT_PROFILE: &str = "berth-default";

/// The profile's source; its `berth-profile-version:` line is the version loaded.
pub const DEFAULT_PROFILE_TEXT: &str = include_str!("../../data/apparmor/berth-default");

const ENABLED: &str = "/sys/module/apparmor/parameters/enabled";
const PROFILES: &str = "/sys/kernel/security/apparmor/profiles";
const STAMP_DIR: &str = "/run/berth-apparmor";

#[derive(Debug, thiserror::Error)]
pub enum AppArmorError {
    #[error("apparmor_parser is not installed (not found in PATH)")]
    NoParser,
    #[error("running {parser}")]
    Spawn {
        parser: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("apparmor_parser failed ({status}): {stderr}")]
    Parser { status: String, stderr: String },
    #[error("reading {PROFILES}")]
    Profiles(#[source] io::Error),
    #[error("apparmor profile {0:?} is not loaded on this host")]
    NotLoaded(String),
}

impl From<AppArmorError> for crate::error::Error {
    fn from(err: AppArmorError) -> Self {
        use crate::error::ErrorKind;
        let kind = match &err {
            AppArmorError::NotLoaded(_) => ErrorKind::InvalidArgument,
            AppArmorError::NoParser => ErrorKind::FailedPrecondition,
            _ => ErrorKind::Internal,
        };
        crate::error::Error::with_source(kind, "apparmor", err)
    }
}

/// Whether the kernel has AppArmor enabled (what critest and the kubelet check too).
pub fn host_has_apparmor() -> bool {
    std::fs::read_to_string(ENABLED).is_ok_and(|v| v.starts_with('Y'))
}

/// The version a profile source declares (`# berth-profile-version: N`), 0 if none.
pub fn profile_version(text: &str) -> u32 {
    text.lines()
        .find_map(|l| {
            l.trim_start_matches('#')
                .trim()
                .strip_prefix("berth-profile-version:")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The names in the kernel's list of loaded profiles (`name (mode)` per line).
pub fn parse_loaded(list: &str) -> BTreeSet<String> {
    list.lines()
        .filter_map(|l| l.rsplit_once(" (").map(|(name, _)| name.to_owned()))
        .collect()
}

/// The profiles the kernel has loaded. Blocking: call it off the async executor.
pub fn loaded_profiles() -> Result<BTreeSet<String>, AppArmorError> {
    std::fs::read_to_string(PROFILES)
        .map(|l| parse_loaded(&l))
        .map_err(AppArmorError::Profiles)
}

/// Refuses a profile the kernel has not loaded. Blocking: call it off the async executor.
pub fn require_loaded(name: &str) -> Result<(), AppArmorError> {
    if loaded_profiles()?.contains(name) {
        Ok(())
    } else {
        Err(AppArmorError::NotLoaded(name.to_owned()))
    }
}

/// What to do about the default profile at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPlan {
    /// Loaded, and at least as new as berth's.
    Keep,
    /// Missing, or loaded by an older berth (or by someone who left no stamp).
    Load,
}

/// Keep a loaded profile whose stamped version is at least `ours`; load otherwise.
pub fn load_plan(loaded: bool, stamped: Option<u32>, ours: u32) -> LoadPlan {
    match stamped {
        Some(v) if loaded && v >= ours => LoadPlan::Keep,
        _ => LoadPlan::Load,
    }
}

/// `apparmor_parser` in the daemon's PATH.
fn find_parser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("apparmor_parser"))
        .find(|p| p.is_file())
}

fn stamp_path(stamp_dir: &Path) -> PathBuf {
    stamp_dir.join(format!("{DEFAULT_PROFILE}.version"))
}

fn read_stamp(stamp_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(stamp_path(stamp_dir))
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// Loads (or replaces) the default profile with apparmor_parser, text on its stdin.
async fn load_default(parser: &Path) -> Result<(), AppArmorError> {
    let spawn_err = |source| AppArmorError::Spawn {
        parser: parser.to_owned(),
        source,
    };
    // -r: replace a loaded one; -K: no cache (the text is small and berth's own).
    let mut child = tokio::process::Command::new(parser)
        .args(["-r", "-K"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(DEFAULT_PROFILE_TEXT.as_bytes())
            .await
            .map_err(spawn_err)?;
    }
    let out = child.wait_with_output().await.map_err(spawn_err)?;
    if !out.status.success() {
        return Err(AppArmorError::Parser {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Looks at the host's AppArmor and makes sure berth's default profile is loaded. A
/// failure to load it is kept as the reason RuntimeDefault containers are refused
/// (berth itself starts), and logged here, once.
pub async fn prepare() -> AppArmorHost {
    let enabled = tokio::task::spawn_blocking(host_has_apparmor)
        .await
        .unwrap_or(false);
    if !enabled {
        return AppArmorHost::Disabled;
    }
    let default_profile = ensure_default(Path::new(STAMP_DIR)).await;
    match &default_profile {
        Ok(name) => tracing::info!(profile = %name, "apparmor: runtime default profile ready"),
        Err(reason) => tracing::warn!(
            %reason,
            "apparmor: the runtime default profile is unavailable; RuntimeDefault containers will be refused"
        ),
    }
    AppArmorHost::Enabled { default_profile }
}

async fn ensure_default(stamp_dir: &Path) -> Result<String, String> {
    let ours = profile_version(DEFAULT_PROFILE_TEXT);
    let dir = stamp_dir.to_owned();
    let (loaded, stamped) = tokio::task::spawn_blocking(move || {
        loaded_profiles().map(|l| (l.contains(DEFAULT_PROFILE), read_stamp(&dir)))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| describe(&e))?;
    if load_plan(loaded, stamped, ours) == LoadPlan::Keep {
        return Ok(DEFAULT_PROFILE.to_owned());
    }
    let parser = tokio::task::spawn_blocking(find_parser)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| describe(&AppArmorError::NoParser))?;
    load_default(&parser).await.map_err(|e| describe(&e))?;
    let dir = stamp_dir.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        crate::persist::write_atomic(&stamp_path(&dir), ours.to_string().as_bytes())
    })
    .await;
    // Without the stamp the next daemon only loads the profile again.
    if let Ok(Err(e)) = written {
        tracing::warn!(error = %e, "apparmor: could not stamp the loaded profile's version");
    }
    Ok(DEFAULT_PROFILE.to_owned())
}

/// The error and its sources on one line (the reason a refusal quotes).
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profile_has_a_version_and_its_name() {
        assert!(profile_version(DEFAULT_PROFILE_TEXT) >= 1);
        assert!(DEFAULT_PROFILE_TEXT.contains(&format!("profile {DEFAULT_PROFILE} ")));
        assert_eq!(profile_version("profile x {}"), 0);
    }

    #[test]
    fn loaded_profiles_are_parsed_by_name() {
        let list =
            "berth-default (enforce)\n/usr/bin/man (complain)\nnvidia_modprobe//kmod (enforce)\n";
        let names = parse_loaded(list);
        assert!(names.contains("berth-default"));
        assert!(names.contains("/usr/bin/man"));
        assert!(names.contains("nvidia_modprobe//kmod"));
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn an_older_or_unstamped_profile_is_replaced() {
        assert_eq!(load_plan(true, Some(2), 2), LoadPlan::Keep);
        assert_eq!(load_plan(true, Some(3), 2), LoadPlan::Keep);
        assert_eq!(load_plan(true, Some(1), 2), LoadPlan::Load);
        assert_eq!(load_plan(true, None, 2), LoadPlan::Load);
        assert_eq!(load_plan(false, Some(2), 2), LoadPlan::Load);
    }

    #[test]
    fn a_missing_parser_is_said_plainly() {
        let text = describe(&AppArmorError::NoParser);
        assert!(text.contains("apparmor_parser is not installed"), "{text}");
    }
}
