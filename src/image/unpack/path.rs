//! The pure parts of the extractor: entry paths made relative to the layer root, and
//! OCI whiteout names.

use std::fmt;

/// Why an entry path (or a hard link target, or a whiteout name) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    Empty,
    Absolute,
    ParentComponent,
    NulByte,
    BadWhiteoutName,
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathRefusal::Empty => "empty path",
            PathRefusal::Absolute => "absolute path",
            PathRefusal::ParentComponent => "path contains a `..` component",
            PathRefusal::NulByte => "path contains a NUL byte",
            PathRefusal::BadWhiteoutName => "whiteout names no file (`.wh.`, `.wh..` or `.wh...`)",
        })
    }
}

/// A tar entry path relative to the layer root: components joined by `/`, none of them
/// empty, `.` or `..`. The empty path is the layer root itself (`.` or `./` in the tar).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerPath(Vec<u8>);

impl LayerPath {
    /// Normalizes a raw tar path: `./a//b/` becomes `a/b`. Absolute paths and `..`
    /// components are refused rather than rewritten, so a hostile layer fails loudly.
    pub fn parse(raw: &[u8]) -> Result<LayerPath, PathRefusal> {
        if raw.is_empty() {
            return Err(PathRefusal::Empty);
        }
        if raw.contains(&0) {
            return Err(PathRefusal::NulByte);
        }
        if raw[0] == b'/' {
            return Err(PathRefusal::Absolute);
        }
        let mut out = Vec::with_capacity(raw.len());
        for component in raw.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => return Err(PathRefusal::ParentComponent),
                name => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(name);
                }
            }
        }
        Ok(LayerPath(out))
    }

    pub fn root() -> LayerPath {
        LayerPath(Vec::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The parent directory and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(&[u8], &[u8])> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&self.0[..slash], &self.0[slash + 1..]),
            None => (&[][..], &self.0[..]),
        })
    }

    /// Number of components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            1 + self.0.iter().filter(|&&b| b == b'/').count()
        }
    }

    /// Whether `self` is `ancestor` or lies beneath it, component-wise.
    pub fn is_within(&self, ancestor: &LayerPath) -> bool {
        ancestor.0.is_empty()
            || (self.0.starts_with(&ancestor.0)
                && (self.0.len() == ancestor.0.len() || self.0[ancestor.0.len()] == b'/'))
    }

    /// `parent/name`, for a name that holds no `/`.
    pub fn join(parent: &[u8], name: &[u8]) -> LayerPath {
        let mut out = Vec::with_capacity(parent.len() + 1 + name.len());
        out.extend_from_slice(parent);
        if !parent.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        LayerPath(out)
    }
}

impl fmt::Display for LayerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&String::from_utf8_lossy(&self.0))
        }
    }
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// What an entry's last path component means in the OCI whiteout convention.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// An ordinary name.
    None,
    /// `.wh..wh..opq`: the parent directory hides everything below it in lower layers.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted; overlay wants a 0/0 character device there.
    Remove(&'a [u8]),
    /// Another `.wh..wh.` name (aufs bookkeeping such as `.wh..wh.plnk`): skipped.
    Meta,
}

pub fn classify_whiteout(name: &[u8]) -> Result<Whiteout<'_>, PathRefusal> {
    if name == OPAQUE_MARKER {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(WHITEOUT_META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Ok(Whiteout::None),
        Some(b"" | b"." | b"..") => Err(PathRefusal::BadWhiteoutName),
        Some(target) => Ok(Whiteout::Remove(target)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<String, PathRefusal> {
        LayerPath::parse(raw.as_bytes()).map(|p| String::from_utf8(p.0).unwrap())
    }

    #[test]
    fn paths_are_normalized_to_the_same_relative_form() {
        assert_eq!(parsed("x").unwrap(), "x");
        assert_eq!(parsed("./x").unwrap(), "x");
        assert_eq!(parsed("./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(parsed(".").unwrap(), "");
        assert_eq!(parsed("./").unwrap(), "");
        assert_eq!(parsed("a/..b/c..").unwrap(), "a/..b/c..");
    }

    #[test]
    fn escaping_paths_are_refused() {
        assert_eq!(parsed("../escape"), Err(PathRefusal::ParentComponent));
        assert_eq!(parsed("a/../../escape"), Err(PathRefusal::ParentComponent));
        assert_eq!(parsed("a/.."), Err(PathRefusal::ParentComponent));
        assert_eq!(parsed("/abs/escape"), Err(PathRefusal::Absolute));
        assert_eq!(parsed("//x"), Err(PathRefusal::Absolute));
        assert_eq!(parsed(""), Err(PathRefusal::Empty));
        assert_eq!(
            LayerPath::parse(b"a\0b").map(|_| ()),
            Err(PathRefusal::NulByte)
        );
    }

    #[test]
    fn split_depth_and_ancestry() {
        let p = LayerPath::parse(b"a/b/c").unwrap();
        assert_eq!(p.split_last(), Some((&b"a/b"[..], &b"c"[..])));
        assert_eq!(p.depth(), 3);
        let top = LayerPath::parse(b"a").unwrap();
        assert_eq!(top.split_last(), Some((&b""[..], &b"a"[..])));
        assert_eq!(LayerPath::root().split_last(), None);
        assert_eq!(LayerPath::root().depth(), 0);
        assert!(p.is_within(&top));
        assert!(p.is_within(&p));
        assert!(p.is_within(&LayerPath::root()));
        assert!(!LayerPath::parse(b"ab/c").unwrap().is_within(&top));
        assert!(!top.is_within(&p));
        assert_eq!(LayerPath::join(b"a/b", b"c"), p);
        assert_eq!(LayerPath::join(b"", b"a"), top);
        assert_eq!(p.to_string(), "a/b/c");
        assert_eq!(LayerPath::root().to_string(), ".");
    }

    #[test]
    fn whiteout_names_are_classified() {
        assert_eq!(classify_whiteout(b"file"), Ok(Whiteout::None));
        assert_eq!(classify_whiteout(b".whx"), Ok(Whiteout::None));
        assert_eq!(classify_whiteout(b".wh..wh..opq"), Ok(Whiteout::Opaque));
        assert_eq!(classify_whiteout(b".wh..wh.plnk"), Ok(Whiteout::Meta));
        assert_eq!(classify_whiteout(b".wh.foo"), Ok(Whiteout::Remove(b"foo")));
        assert_eq!(
            classify_whiteout(b".wh..hidden"),
            Ok(Whiteout::Remove(b".hidden"))
        );
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            assert_eq!(classify_whiteout(bad), Err(PathRefusal::BadWhiteoutName));
        }
    }
}
