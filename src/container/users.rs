//! Who a container runs as: `/etc/passwd` and `/etc/group` parsing, the image's `USER` forms,
//! and reading those files out of the image's layer directories as overlay would show them.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;

use crate::container::merged_view::{self, Entry, MAX_SYMLINKS, components};

/// Why a user could not be resolved; every variant names what was asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("invalid user {0:?}")]
    InvalidUser(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parses `/etc/passwd` (`name:password:uid:gid:gecos:home:shell`); comments, blank and
/// malformed lines are skipped, as libc does.
pub fn parse_passwd(contents: &str) -> Vec<PasswdEntry> {
    contents
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_owned(),
                uid: fields[2].trim().parse().ok()?,
                gid: fields[3].trim().parse().ok()?,
                home: fields.get(5).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// Parses `/etc/group` (`name:password:gid:member,member`).
pub fn parse_group(contents: &str) -> Vec<GroupEntry> {
    contents
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 3 || fields[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: fields[0].to_owned(),
                gid: fields[2].trim().parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// One side of a `USER` string: a number or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdOrName {
    Id(u32),
    Name(String),
}

impl IdOrName {
    fn parse(s: &str, whole: &str) -> Result<IdOrName, UserError> {
        if s.is_empty() {
            return Err(UserError::InvalidUser(whole.to_owned()));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(IdOrName::Id)
                .map_err(|_| UserError::InvalidUser(whole.to_owned()));
        }
        Ok(IdOrName::Name(s.to_owned()))
    }
}

/// A parsed `USER`: `uid`, `name`, `uid:gid`, `name:group`, `uid:group`, `name:gid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: IdOrName,
    pub group: Option<IdOrName>,
}

/// Parses a `USER` string; empty means root.
pub fn parse_user(s: &str) -> Result<UserSpec, UserError> {
    if s.is_empty() {
        return Ok(UserSpec {
            user: IdOrName::Id(0),
            group: None,
        });
    }
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    Ok(UserSpec {
        user: IdOrName::parse(user, s)?,
        group: group.map(|g| IdOrName::parse(g, s)).transpose()?,
    })
}

/// The ids a process gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first, then the groups listing the user in /etc/group, then `extra`.
    pub additional_gids: Vec<u32>,
    /// The passwd name of the user, when there is one.
    pub username: Option<String>,
    /// The passwd home directory, when there is one.
    pub home: Option<String>,
}

/// Resolves `user` against the image's passwd and group contents (None: the file is absent).
/// A name that is not in the file is an error; a number need not be. Without a group, the
/// gid is the user's passwd group, else 0. The groups listing the user in /etc/group are
/// added unless `strict` (the CRI's Strict supplemental groups policy); `extra_gids` (the
/// CRI supplemental groups) are appended; duplicates are dropped, first occurrence kept.
pub fn resolve_user(
    user: &UserSpec,
    passwd: Option<&str>,
    group: Option<&str>,
    extra_gids: &[u32],
    strict: bool,
) -> Result<ResolvedUser, UserError> {
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let groups = group.map(parse_group).unwrap_or_default();
    let entry = match &user.user {
        IdOrName::Id(uid) => users.iter().find(|u| u.uid == *uid),
        IdOrName::Name(name) => Some(
            users
                .iter()
                .find(|u| &u.name == name)
                .ok_or_else(|| UserError::UnknownUser(name.clone()))?,
        ),
    };
    let uid = match (&user.user, entry) {
        (IdOrName::Id(uid), _) => *uid,
        (IdOrName::Name(_), Some(e)) => e.uid,
        (IdOrName::Name(name), None) => return Err(UserError::UnknownUser(name.clone())),
    };
    let gid = match &user.group {
        Some(IdOrName::Id(gid)) => *gid,
        Some(IdOrName::Name(name)) => {
            groups
                .iter()
                .find(|g| &g.name == name)
                .ok_or_else(|| UserError::UnknownGroup(name.clone()))?
                .gid
        }
        None => entry.map_or(0, |e| e.gid),
    };
    let mut additional_gids = vec![gid];
    if let Some(e) = entry.filter(|_| !strict) {
        additional_gids.extend(
            groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == &e.name))
                .map(|g| g.gid),
        );
    }
    additional_gids.extend_from_slice(extra_gids);
    let mut seen = std::collections::HashSet::new();
    additional_gids.retain(|g| seen.insert(*g));
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        username: entry.map(|e| e.name.clone()),
        home: entry.map(|e| e.home.clone()),
    })
}

/// Reads `path` (absolute, inside the image) from the stacked layer dirs, top layer first, as
/// the overlay mount would show it (container/merged_view.rs). Symlinks (in the file or in a
/// directory on its path) are resolved within the layer stack, never on the host: absolute
/// targets start again at the image root and `..` stops at it, as the kernel does inside the
/// container. Ok(None) when the merged view has no regular file there.
pub fn read_image_file(layers_top_first: &[PathBuf], path: &str) -> io::Result<Option<String>> {
    let mut pending: VecDeque<String> = components(path).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(part);
        match merged_view::entry(layers_top_first, &resolved)? {
            Some(Entry::Dir) => {}
            Some(Entry::Symlink(target)) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links resolving {path}"
                    )));
                }
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                for p in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(p);
                }
            }
            Some(Entry::File(file)) if pending.is_empty() => {
                let bytes = std::fs::read(file)?;
                return Ok(Some(String::from_utf8_lossy(&bytes).into_owned()));
            }
            Some(Entry::File(_) | Entry::Other) | None => return Ok(None),
        }
    }
    // The path named a directory (the root included).
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::merged_view::OPAQUE_XATTR;
    use std::path::Path;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        broken line\n\
        default-user:x:1000:1000::/home/default-user:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        www-data:x:33:\n\
        default-user:x:1000:\n\
        audio:x:29:www-data\n\
        extra:x:50000:default-user,www-data\n";

    fn resolve(user: &str, extra: &[u32]) -> Result<ResolvedUser, UserError> {
        resolve_user(&parse_user(user)?, Some(PASSWD), Some(GROUP), extra, false)
    }

    #[test]
    fn passwd_and_group_parse_skipping_bad_lines() {
        let users = parse_passwd(PASSWD);
        assert_eq!(users.len(), 3);
        assert_eq!(
            users[1],
            PasswdEntry {
                name: "www-data".into(),
                uid: 33,
                gid: 33,
                home: "/var/www".into()
            }
        );
        let groups = parse_group(GROUP);
        assert_eq!(groups[4].members, ["default-user", "www-data"]);
        assert!(groups[0].members.is_empty());
    }

    #[test]
    fn user_forms_parse() {
        let id = IdOrName::Id;
        let name = |s: &str| IdOrName::Name(s.into());
        let cases = [
            ("1002", id(1002), None),
            ("www-data", name("www-data"), None),
            ("1003:1004", id(1003), Some(id(1004))),
            ("www-data:audio", name("www-data"), Some(name("audio"))),
            ("1003:audio", id(1003), Some(name("audio"))),
            ("www-data:1004", name("www-data"), Some(id(1004))),
            ("", id(0), None),
        ];
        for (s, user, group) in cases {
            assert_eq!(parse_user(s), Ok(UserSpec { user, group }), "{s}");
        }
        assert!(parse_user(":5").is_err());
        assert!(parse_user("5:").is_err());
        assert!(parse_user("99999999999").is_err());
    }

    #[test]
    fn numeric_uid_not_in_passwd_gets_gid_0() {
        let r = resolve("1002", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (1002, 0));
        assert_eq!(r.additional_gids, [0]);
        assert_eq!(r.username, None);
    }

    #[test]
    fn numeric_uid_in_passwd_gets_its_group_and_memberships() {
        let r = resolve("1000", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.additional_gids, [1000, 50000]);
        assert_eq!(r.username.as_deref(), Some("default-user"));
    }

    #[test]
    fn name_resolves_through_passwd() {
        let r = resolve("www-data", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (33, 33));
        assert_eq!(r.additional_gids, [33, 29, 50000]);
        assert_eq!(r.home.as_deref(), Some("/var/www"));
    }

    #[test]
    fn explicit_groups_override_the_primary_group() {
        let r = resolve("1003:1004", &[]).unwrap();
        assert_eq!(
            (r.uid, r.gid, r.additional_gids.clone()),
            (1003, 1004, vec![1004])
        );
        let r = resolve("www-data:1004", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (33, 1004));
        assert_eq!(r.additional_gids, [1004, 29, 50000]);
        let r = resolve("www-data:audio", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (33, 29));
        let r = resolve("1003:extra", &[]).unwrap();
        assert_eq!((r.uid, r.gid), (1003, 50000));
    }

    #[test]
    fn supplemental_groups_are_appended_without_duplicates() {
        let r = resolve("www-data", &[50000, 7, 33, 7]).unwrap();
        assert_eq!(r.additional_gids, [33, 29, 50000, 7]);
    }

    #[test]
    fn strict_policy_leaves_out_the_image_memberships() {
        let spec = parse_user("www-data").unwrap();
        let r = resolve_user(&spec, Some(PASSWD), Some(GROUP), &[7], true).unwrap();
        assert_eq!((r.uid, r.gid), (33, 33));
        assert_eq!(r.additional_gids, [33, 7]);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        assert_eq!(
            resolve("nobody", &[]),
            Err(UserError::UnknownUser("nobody".into()))
        );
        assert_eq!(
            resolve("1000:nogroup", &[]),
            Err(UserError::UnknownGroup("nogroup".into()))
        );
        // Without the files, names cannot resolve but numbers can.
        let spec = parse_user("www-data").unwrap();
        assert!(resolve_user(&spec, None, None, &[], false).is_err());
        let spec = parse_user("5:6").unwrap();
        assert_eq!(resolve_user(&spec, None, None, &[], false).unwrap().gid, 6);
    }

    fn write(path: &Path, contents: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn whiteout(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
    }

    #[test]
    fn top_layer_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
        write(&top.join("etc/passwd"), "top");
        write(&bottom.join("etc/passwd"), "bottom");
        write(&bottom.join("etc/group"), "group");
        let layers = [top, bottom];
        assert_eq!(
            read_image_file(&layers, "/etc/passwd").unwrap().as_deref(),
            Some("top")
        );
        assert_eq!(
            read_image_file(&layers, "/etc/group").unwrap().as_deref(),
            Some("group")
        );
        assert_eq!(read_image_file(&layers, "/etc/shadow").unwrap(), None);
    }

    #[test]
    fn whiteout_hides_lower_file_and_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
        write(&bottom.join("etc/passwd"), "bottom");
        whiteout(&top.join("etc/passwd"));
        assert_eq!(
            read_image_file(&[top.clone(), bottom.clone()], "/etc/passwd").unwrap(),
            None
        );
        std::fs::remove_dir_all(&top).unwrap();
        whiteout(&top.join("etc"));
        assert_eq!(
            read_image_file(&[top, bottom], "/etc/passwd").unwrap(),
            None
        );
    }

    #[test]
    fn opaque_dir_hides_lower_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
        write(&bottom.join("etc/passwd"), "bottom");
        write(&top.join("etc/group"), "top group");
        let layers = [top.clone(), bottom];
        assert_eq!(
            read_image_file(&layers, "/etc/passwd").unwrap().as_deref(),
            Some("bottom")
        );
        rustix::fs::setxattr(
            top.join("etc").as_path(),
            OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setting trusted.* xattrs needs root (tests run as root)");
        assert_eq!(read_image_file(&layers, "/etc/passwd").unwrap(), None);
        assert_eq!(
            read_image_file(&layers, "/etc/group").unwrap().as_deref(),
            Some("top group")
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_layer_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
        write(&bottom.join("usr/etc/passwd"), "real");
        std::fs::create_dir_all(top.join("etc")).unwrap();
        // Absolute target: from the image root, not the host's.
        std::os::unix::fs::symlink("/usr/etc/passwd", top.join("etc/passwd")).unwrap();
        // Relative target escaping with ..: clamped at the image root.
        std::os::unix::fs::symlink("../../../../usr/etc", top.join("etc2")).unwrap();
        let layers = [top.clone(), bottom];
        assert_eq!(
            read_image_file(&layers, "/etc/passwd").unwrap().as_deref(),
            Some("real")
        );
        assert_eq!(
            read_image_file(&layers, "/etc2/passwd").unwrap().as_deref(),
            Some("real")
        );
        // A link to a host file is looked up in the image, where it does not exist.
        std::os::unix::fs::symlink("/proc/self/status", top.join("etc/group")).unwrap();
        assert_eq!(read_image_file(&layers, "/etc/group").unwrap(), None);
        // A loop ends with an error, not forever.
        std::os::unix::fs::symlink("/etc/loop", top.join("etc/loop")).unwrap();
        assert!(read_image_file(&layers, "/etc/loop").is_err());
    }

    #[test]
    fn an_upper_directory_hides_a_lower_symlink_of_that_name() {
        let dir = tempfile::tempdir().unwrap();
        let (top, bottom) = (dir.path().join("top"), dir.path().join("bottom"));
        std::fs::create_dir_all(top.join("etc")).unwrap();
        write(&bottom.join("etc2/passwd"), PASSWD);
        std::os::unix::fs::symlink("/etc2", bottom.join("etc")).unwrap();
        // Overlay shows the upper directory alone: the lower entry is no directory to merge.
        assert_eq!(
            read_image_file(&[top, bottom], "/etc/passwd").unwrap(),
            None
        );
    }

    #[test]
    fn dot_dot_stops_at_the_image_root() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("etc/passwd"), PASSWD);
        let layers = vec![dir.path().to_path_buf()];
        assert_eq!(
            read_image_file(&layers, "/../../etc/./x/../passwd").unwrap(),
            None,
            "x does not exist, so neither does x/.."
        );
        assert_eq!(
            read_image_file(&layers, "/../../etc/./passwd")
                .unwrap()
                .as_deref(),
            Some(PASSWD)
        );
        assert_eq!(read_image_file(&layers, "").unwrap(), None);
    }
}
