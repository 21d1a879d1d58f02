//! The process of a container: argv, environment, working directory, user and groups,
//! oom_score_adj, and the stop signal.

use nix::sys::signal::Signal;
use oci_spec::image::ImageConfiguration;

use super::error::SpecError;
use super::input::SpecInput;
use crate::container::users::{self, IdOrName, UserSpec};

/// PATH when neither the image nor the CRI config sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The kubelet's rules: `command` replaces the image's Entrypoint and drops its Cmd; `args`
/// alone replace Cmd and keep Entrypoint; neither runs Entrypoint + Cmd. `ENTRYPOINT [""]`
/// means no entrypoint.
pub fn process_args(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    image_cmd: &[String],
) -> Result<Vec<String>, SpecError> {
    let result: Vec<String> = if !command.is_empty() {
        command.iter().chain(args).cloned().collect()
    } else {
        let entrypoint: &[String] = if entrypoint.len() == 1 && entrypoint[0].is_empty() {
            &[]
        } else {
            entrypoint
        };
        let rest = if args.is_empty() { image_cmd } else { args };
        entrypoint.iter().chain(rest).cloned().collect()
    };
    if result.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(result)
}

pub(super) fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// PATH (default) and HOSTNAME first, then the image's env, then the CRI envs; a later entry
/// with the same name replaces the earlier one in place. HOME comes from passwd (else `/`)
/// when nobody set it, as runc does at exec.
pub fn process_env(
    hostname: &str,
    image_env: &[String],
    cri_envs: &[(String, String)],
    home: Option<&str>,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: String| {
        let key = env_key(&entry).to_owned();
        match env.iter_mut().find(|e| env_key(e) == key) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    };
    set(format!("PATH={DEFAULT_PATH}"));
    set(format!("HOSTNAME={hostname}"));
    for entry in image_env {
        set(entry.clone());
    }
    for (key, value) in cri_envs {
        set(format!("{key}={value}"));
    }
    if !env.iter().any(|e| env_key(e) == "HOME") {
        let home = home.filter(|h| !h.is_empty()).unwrap_or("/");
        env.push(format!("HOME={home}"));
    }
    env
}

/// CRI working_dir, else the image's (made absolute), else `/`.
pub fn working_dir(cri: &str, image: Option<&str>) -> String {
    if !cri.is_empty() {
        return cri.to_owned();
    }
    match image {
        Some(dir) if !dir.is_empty() && dir.starts_with('/') => dir.to_owned(),
        Some(dir) if !dir.is_empty() => format!("/{dir}"),
        _ => "/".to_owned(),
    }
}

pub(super) fn id_u32(value: i64) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| SpecError::InvalidId(value))
}

/// CRI run_as_username (or run_as_user), with run_as_group, else the image's USER.
pub(super) fn resolve_user(
    input: &SpecInput,
    image_user: &str,
) -> Result<users::ResolvedUser, SpecError> {
    let security = &input.config.security;
    let extra: Vec<u32> = security
        .supplemental_groups
        .iter()
        .map(|g| u32::try_from(*g).map_err(|_| SpecError::InvalidGid(*g)))
        .collect::<Result<_, _>>()?;
    let group = security.run_as_group.map(id_u32).transpose()?;
    let cri_user = if !security.run_as_username.is_empty() {
        Some(IdOrName::Name(security.run_as_username.clone()))
    } else {
        security
            .run_as_user
            .map(id_u32)
            .transpose()?
            .map(IdOrName::Id)
    };
    let (spec, from_image) = match cri_user {
        Some(user) => (
            UserSpec {
                user,
                group: group.map(IdOrName::Id),
            },
            false,
        ),
        None => {
            let mut spec =
                users::parse_user(image_user).map_err(|source| SpecError::ImageUser {
                    user: image_user.to_owned(),
                    source,
                })?;
            // run_as_group alone regroups the image's user.
            if let Some(gid) = group {
                spec.group = Some(IdOrName::Id(gid));
            }
            (spec, true)
        }
    };
    let strict = security.supplemental_groups_policy
        == crate::container::config::SupplementalGroupsPolicy::Strict;
    users::resolve_user(&spec, input.passwd, input.group, &extra, strict).map_err(|source| {
        if from_image {
            SpecError::ImageUser {
                user: image_user.to_owned(),
                source,
            }
        } else {
            SpecError::User(source)
        }
    })
}

/// The requested score, never below what berth itself may set, within the kernel's range.
pub(super) fn oom_score_adj(requested: i64, floor: i32) -> i32 {
    let clamped = requested.clamp(-1000, 1000) as i32;
    if clamped < floor {
        tracing::debug!(
            requested,
            applied = floor,
            "oom_score_adj below the runtime's own; clamped"
        );
        return floor.min(1000);
    }
    clamped
}

/// A signal by name (`SIGTERM`, `TERM`, any case) or number.
pub fn parse_signal(value: &str) -> Option<Signal> {
    let value = value.trim();
    if let Ok(number) = value.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = value.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

/// The signal StopContainer sends first: the CRI's, else the image's STOPSIGNAL, else SIGTERM.
/// (k8s-cri 0.11's ContainerConfig has no stop_signal; the caller passes it when it has one.)
/// An unparsable value is logged and skipped.
pub fn stop_signal(image: &ImageConfiguration, cri_override: Option<&str>) -> Signal {
    let image_signal = image
        .config()
        .as_ref()
        .and_then(|c| c.stop_signal().clone());
    for candidate in [cri_override.map(str::to_owned), image_signal]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
    {
        match parse_signal(&candidate) {
            Some(signal) => return signal,
            None => tracing::warn!(signal = %candidate, "unknown stop signal; trying the next"),
        }
    }
    Signal::SIGTERM
}
