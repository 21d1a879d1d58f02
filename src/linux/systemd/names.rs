//! systemd unit names for pods and containers, as data: a slice name expanded to its
//! cgroup path the way systemd does it, the kubelet's `cgroup_parent` forms, scope names.

/// A slice or scope name systemd would refuse, with the CRI field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {name:?} is not a valid systemd slice name: {reason}")]
pub struct InvalidUnitName {
    pub field: &'static str,
    pub name: String,
    pub reason: &'static str,
}

/// systemd's limit on a unit name, suffix included.
const UNIT_NAME_MAX: usize = 255;

/// The characters systemd accepts in a unit name (before escaping).
fn valid_unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\')
}

/// The cgroup path (from the hierarchy root, leading `/`) of slice `name`: every
/// dash-separated prefix is a parent slice, so `a-b-c.slice` lives at
/// `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
pub fn expand_slice(field: &'static str, name: &str) -> Result<String, InvalidUnitName> {
    let invalid = |reason| InvalidUnitName {
        field,
        name: name.to_string(),
        reason,
    };
    let Some(stem) = name.strip_suffix(".slice") else {
        return Err(invalid("it must end in .slice"));
    };
    if name.len() > UNIT_NAME_MAX {
        return Err(invalid("it is longer than 255 characters"));
    }
    if stem == "-" {
        return Ok("/".to_string());
    }
    if stem.is_empty() {
        return Err(invalid("the part before .slice is empty"));
    }
    if !stem.chars().all(valid_unit_char) {
        return Err(invalid(
            "only letters, digits and the characters : - _ . \\ are allowed",
        ));
    }
    if stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(invalid(
            "a dash separates parent slices, so it may not lead, trail or repeat",
        ));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for (i, part) in stem.split('-').enumerate() {
        if i > 0 {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// Where a pod's units go under the systemd driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodUnits {
    /// The pod's slice unit, e.g. `kubepods-burstable-pod1.slice`.
    pub slice: String,
    /// Its cgroup path, e.g. `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice`.
    pub slice_path: String,
    /// Scopes in the pod are named `<prefix>-<id>.scope`.
    pub scope_prefix: String,
}

/// The scope prefix berth uses when the parent names none.
pub const DEFAULT_SCOPE_PREFIX: &str = "berth";

impl PodUnits {
    /// From a pod's `cgroup_parent`: a slice name as the kubelet passes it
    /// (`kubepods-burstable-pod<uid>.slice`), or runc's `slice:prefix:name` form, whose
    /// prefix then names the scopes (its name part is per container, so it is ignored).
    pub fn from_parent(field: &'static str, parent: &str) -> Result<PodUnits, InvalidUnitName> {
        let mut parts = parent.splitn(3, ':');
        let given = parts.next().unwrap_or_default();
        let prefix = parts.next().filter(|p| !p.is_empty());
        // The kubelet's systemd cgroup manager passes the slice's expanded cgroup path
        // (`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice`,
        // critest `/test.slice`): its last component is the slice, and the rest must be
        // where systemd puts that slice.
        let slice = match given.rsplit_once('/') {
            Some((_, last)) => {
                if expand_slice(field, last)? != given {
                    return Err(InvalidUnitName {
                        field,
                        name: parent.to_string(),
                        reason: "a slice path must be where systemd puts its last slice (/a.slice/a-b.slice)",
                    });
                }
                last
            }
            None => given,
        };
        let slice_path = expand_slice(field, slice)?;
        let scope_prefix = match prefix {
            Some(p) if p.chars().all(valid_unit_char) && !p.contains('.') => p.to_string(),
            Some(_) => {
                return Err(InvalidUnitName {
                    field,
                    name: parent.to_string(),
                    reason: "the scope prefix after the first `:` may hold only letters, digits and : - _ \\",
                });
            }
            None => DEFAULT_SCOPE_PREFIX.to_string(),
        };
        Ok(PodUnits {
            slice: slice.to_string(),
            slice_path,
            scope_prefix,
        })
    }

    /// The slice berth makes for a pod whose request names no parent: `<parent>-pod<id>.slice`
    /// below the configured default slice (`berth.slice` → `berth-pod<id>.slice`).
    pub fn owned(default_slice: &str, id: &str) -> Result<PodUnits, InvalidUnitName> {
        let field = "default_cgroup_parent";
        expand_slice(field, default_slice)?;
        let stem = default_slice.trim_end_matches(".slice");
        let slice = if stem == "-" {
            format!("pod{id}.slice")
        } else {
            format!("{stem}-pod{id}.slice")
        };
        PodUnits::from_parent(field, &slice)
    }

    /// The scope of a process of this pod (the pause or a container), named by its id.
    pub fn scope(&self, id: &str) -> String {
        format!("{}-{id}.scope", self.scope_prefix)
    }

    /// The cgroup path of that scope.
    pub fn scope_path(&self, id: &str) -> String {
        format!(
            "{}/{}",
            self.slice_path.trim_end_matches('/'),
            self.scope(id)
        )
    }
}

/// The unit a cgroup path belongs to when it is a scope or slice made by systemd (its
/// last component), None for a cgroupfs path.
pub fn unit_of_path(path: &str) -> Option<&str> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    (last.ends_with(".scope") || last.ends_with(".slice")).then_some(last)
}

/// How many leading slices of `slice_path` (`/a.slice/a-b.slice`) exist already, by
/// `exists` of each one's cgroup path. Those need no StartTransientUnit: a pod's parents
/// are made for the first pod, and the kubelet makes a pod's slice before it asks.
pub fn slices_present(slice_path: &str, exists: impl Fn(&str) -> bool) -> usize {
    let mut path = String::new();
    let mut present = 0;
    for name in slice_path.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        path.push_str(name);
        if !exists(&path) {
            break;
        }
        present += 1;
    }
    present
}

/// What a unit of berth's holds; with the instance (berth's state dir) and the id, its
/// description says whose it is, which the sweep and `release` rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// A pod's slice, made by berth when the request named no parent.
    Pod,
    /// The scope of a pod's pause process.
    Pause,
    Container,
    /// The scope of a pod's shim (out of berth's own cgroup, so that restarting berth's
    /// service never touches a pod).
    Shim,
}

impl UnitKind {
    const ALL: [UnitKind; 4] = [
        UnitKind::Pod,
        UnitKind::Pause,
        UnitKind::Container,
        UnitKind::Shim,
    ];

    fn word(self) -> &'static str {
        match self {
            UnitKind::Pod => "pod",
            UnitKind::Pause => "pause",
            UnitKind::Container => "container",
            UnitKind::Shim => "shim",
        }
    }
}

/// `berth <kind> <id> (<instance>)`.
pub fn describe(instance: &str, kind: UnitKind, id: &str) -> String {
    format!("berth {} {id} ({instance})", kind.word())
}

/// The kind and id of a unit described by [`describe`] for `instance`; None for any other
/// unit (another program's, or another berth's).
pub fn parse_description<'a>(instance: &str, description: &'a str) -> Option<(UnitKind, &'a str)> {
    let rest = description.strip_prefix("berth ")?;
    let rest = rest
        .strip_suffix(')')?
        .strip_suffix(instance)?
        .strip_suffix(" (")?;
    let (word, id) = rest.split_once(' ')?;
    let kind = UnitKind::ALL.into_iter().find(|k| k.word() == word)?;
    (!id.is_empty() && !id.contains(' ')).then_some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_present_counts_the_existing_levels_from_the_top_only() {
        let path = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice";
        let made = [
            "/kubepods.slice",
            "/kubepods.slice/kubepods-besteffort.slice",
        ];
        assert_eq!(slices_present(path, |p| made.contains(&p)), 2);
        assert_eq!(slices_present(path, |_| true), 3);
        assert_eq!(slices_present(path, |_| false), 0);
        // A level below a missing one is not counted: its parent must be started first.
        let below = |p: &str| p != "/kubepods.slice";
        assert_eq!(slices_present(path, below), 0);
        assert_eq!(slices_present("/", |_| true), 0);
    }

    #[test]
    fn a_kubelet_pod_slice_expands_to_its_parents() {
        assert_eq!(
            expand_slice("cgroup_parent", "kubepods-burstable-pod1234_5678.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice"
        );
        assert_eq!(
            expand_slice("cgroup_parent", "kubepods.slice").unwrap(),
            "/kubepods.slice"
        );
        assert_eq!(expand_slice("cgroup_parent", "-.slice").unwrap(), "/");
    }

    #[test]
    fn invalid_slice_names_name_the_field() {
        for bad in [
            "/kubepods/burstable",
            "kubepods",
            "-kubepods.slice",
            "kubepods-.slice",
            "kube--pods.slice",
            ".slice",
            "kube pods.slice",
            "kube/pods.slice",
        ] {
            let err = expand_slice("cgroup_parent", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("cgroup_parent: "),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
        let long = format!("{}.slice", "a".repeat(250));
        assert!(expand_slice("cgroup_parent", &long).is_err());
    }

    #[test]
    fn parents_in_slice_and_runc_forms() {
        let plain =
            PodUnits::from_parent("cgroup_parent", "kubepods-besteffort-pod9.slice").unwrap();
        assert_eq!(plain.scope_prefix, "berth");
        assert_eq!(
            plain.scope_path("abc"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice/berth-abc.scope"
        );
        let runc =
            PodUnits::from_parent("cgroup_parent", "system.slice:cri-berth:ignored").unwrap();
        assert_eq!(runc.slice, "system.slice");
        assert_eq!(runc.scope("abc"), "cri-berth-abc.scope");
        assert!(PodUnits::from_parent("cgroup_parent", "system.slice:a/b:x").is_err());
        assert!(PodUnits::from_parent("cgroup_parent", "/kubepods/pod1").is_err());
    }

    #[test]
    fn the_kubelets_expanded_slice_path_names_its_last_slice() {
        let kubelet = PodUnits::from_parent(
            "cgroup_parent",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice",
        )
        .unwrap();
        assert_eq!(kubelet.slice, "kubepods-besteffort-pod9.slice");
        assert_eq!(
            kubelet.slice_path,
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice"
        );
        // critest's parent under the systemd driver.
        let critest = PodUnits::from_parent("cgroup_parent", "/test.slice").unwrap();
        assert_eq!(critest.slice, "test.slice");
        assert_eq!(critest.scope_path("abc"), "/test.slice/berth-abc.scope");
        // A path systemd would not give that slice, and paths without a slice at the end.
        let err =
            PodUnits::from_parent("cgroup_parent", "/other.slice/kubepods-pod9.slice").unwrap_err();
        assert!(err.to_string().contains("cgroup_parent"), "{err}");
        assert!(err.to_string().contains("where systemd puts"), "{err}");
        assert!(PodUnits::from_parent("cgroup_parent", "/").is_err());
        assert!(PodUnits::from_parent("cgroup_parent", "/kubepods.slice/").is_err());
    }

    #[test]
    fn berth_names_the_slices_of_pods_without_a_parent() {
        let owned = PodUnits::owned("berth.slice", "0123abcd").unwrap();
        assert_eq!(owned.slice, "berth-pod0123abcd.slice");
        assert_eq!(owned.slice_path, "/berth.slice/berth-pod0123abcd.slice");
        assert_eq!(owned.scope("0123abcd"), "berth-0123abcd.scope");
        assert!(PodUnits::owned("/berth", "x").is_err());
    }

    #[test]
    fn units_are_read_back_from_cgroup_paths() {
        assert_eq!(
            unit_of_path("/berth.slice/berth-pod1.slice/berth-c1.scope"),
            Some("berth-c1.scope")
        );
        assert_eq!(
            unit_of_path("/berth.slice/berth-pod1.slice"),
            Some("berth-pod1.slice")
        );
        assert_eq!(unit_of_path("/berth/pod1/c1"), None);
    }

    #[test]
    fn descriptions_name_kind_id_and_instance_and_read_back() {
        let d = describe("/run/berth", UnitKind::Container, "abc");
        assert_eq!(d, "berth container abc (/run/berth)");
        assert_eq!(
            parse_description("/run/berth", &d),
            Some((UnitKind::Container, "abc"))
        );
        // Another berth's units, and everyone else's, are not ours.
        assert_eq!(parse_description("/run/other", &d), None);
        assert_eq!(
            parse_description("/run/berth", "berth pods (/run/berth)"),
            None
        );
        assert_eq!(
            parse_description("/run/berth", "User Manager for UID 0"),
            None
        );
        let pod = describe("/run/berth", UnitKind::Pod, "p1");
        assert_eq!(
            parse_description("/run/berth", &pod),
            Some((UnitKind::Pod, "p1"))
        );
    }
}
