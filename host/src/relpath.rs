//! `RelPath`: a path inside an install tree that has been proven safe to join onto it.
//!
//! Every path that comes from outside — a manifest's operations, a tar entry, an operator's
//! `preserve` list — is parsed into a `RelPath` before it touches the filesystem, so the rest of
//! molt never has to ask whether a path could escape the install directory (the same idea as
//! tough's `TargetName`).

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-empty, normalized, relative path with `/` separators: no `..`, no `.`, no empty
/// components, no leading or trailing `/`, no NUL.
///
/// The text is shared (`Arc<str>`): a path is cloned into the listing, the plan, the journal's
/// intent and the next state, and at 66,000 files copies of the text were a large part of an
/// apply's peak memory.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Arc<str>);

/// Why a string is not a safe relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe path {path:?}: {reason}")]
pub struct RelPathError {
    pub path: String,
    pub reason: &'static str,
}

impl RelPath {
    /// Parses `s`, refusing anything that is not a plain relative path.
    pub fn new(s: &str) -> Result<Self, RelPathError> {
        let fail = |reason| {
            Err(RelPathError {
                path: s.to_owned(),
                reason,
            })
        };
        if s.is_empty() {
            return fail("empty path");
        }
        if s.contains('\0') {
            return fail("contains a NUL byte");
        }
        if s.starts_with('/') {
            return fail("absolute path");
        }
        if s.len() > 4096 {
            return fail("longer than 4096 bytes");
        }
        for component in s.split('/') {
            match component {
                "" => return fail("empty component (`//` or a trailing `/`)"),
                "." => return fail("`.` component"),
                ".." => return fail("`..` component"),
                c if c.len() > 255 => return fail("component longer than 255 bytes"),
                _ => {}
            }
        }
        Ok(Self(Arc::from(s)))
    }

    /// Parses a filesystem path (e.g. from a tar header or a directory walk).
    pub fn from_path(p: &Path) -> Result<Self, RelPathError> {
        match p.to_str() {
            Some(s) => Self::new(s),
            None => Err(RelPathError {
                path: p.to_string_lossy().into_owned(),
                reason: "not valid UTF-8",
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `root` joined with this path.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&*self.0)
    }

    /// The parent path, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(Arc::from(p)))
    }

    /// Every proper ancestor, outermost first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        self.0
            .match_indices('/')
            .map(|(i, _)| RelPath(Arc::from(&self.0[..i])))
    }

    /// True if this path or one of its ancestors is in a set (`in_set` tells): the one "at or
    /// under" rule, whatever the set's type.
    pub(crate) fn is_at_or_under(&self, in_set: impl Fn(&RelPath) -> bool) -> bool {
        in_set(self) || self.ancestors().any(|a| in_set(&a))
    }

    /// True if `self` equals `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&*other.0)
                && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// `self` joined with a further relative path.
    pub fn join(&self, tail: &RelPath) -> RelPath {
        RelPath(Arc::from(format!("{}/{}", self.0, tail.0)))
    }
}

/// Every proper ancestor of every path in `paths`, each allocated once. (Collecting
/// `ancestors()` straight into a set first gathers every duplicate — one per file per level, half
/// a million at 66,000 files — before it sorts them out.)
pub(crate) fn all_ancestors<'a>(paths: impl IntoIterator<Item = &'a RelPath>) -> BTreeSet<RelPath> {
    let mut set = BTreeSet::new();
    for path in paths {
        for (i, _) in path.0.match_indices('/') {
            let ancestor = &path.0[..i];
            if !set.contains(ancestor) {
                set.insert(RelPath(Arc::from(ancestor)));
            }
        }
    }
    set
}

/// Lookups by `&str` (the same order and hash as the path's text).
impl Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for RelPath {
    type Err = RelPathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in ["a", "bin/app", "web/static/x.css", "..a", "a..", ".hidden"] {
            assert_eq!(RelPath::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_escapes_and_odd_forms() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "./a",
            "a//b",
            "a/",
            "a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefix_is_by_component() {
        let a = RelPath::new("web").unwrap();
        assert!(RelPath::new("web/x").unwrap().starts_with(&a));
        assert!(RelPath::new("web").unwrap().starts_with(&a));
        assert!(!RelPath::new("webby").unwrap().starts_with(&a));
        let anc: Vec<_> = RelPath::new("a/b/c").unwrap().ancestors().collect();
        assert_eq!(
            anc,
            [RelPath::new("a").unwrap(), RelPath::new("a/b").unwrap()]
        );
    }

    /// Component soup: mostly ordinary names, plus every form that must be refused.
    fn path_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let component = prop_oneof![
            4 => proptest::sample::select(vec!["a", "bin", "x.css", "..a", "a..", ".h", "é", " "])
                .prop_map(str::to_owned),
            1 => proptest::sample::select(vec!["", ".", "..", "a\0b", "\\", "a\\..\\b"])
                .prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        (
            any::<bool>(),
            proptest::collection::vec(component, 0..6),
            any::<bool>(),
        )
            .prop_map(|(lead, parts, trail)| {
                let mut s = parts.join("/");
                if lead {
                    s.insert(0, '/');
                }
                if trail {
                    s.push('/');
                }
                s
            })
    }

    /// Every path `p` derived from an accepted one is itself accepted and plain.
    fn assert_plain(p: &RelPath) {
        let s = p.as_str();
        assert_eq!(RelPath::new(s).as_ref(), Ok(p), "re-parse of {s:?}");
        assert!(
            !s.is_empty() && !s.starts_with('/') && !s.contains('\0'),
            "{s:?}"
        );
        for c in s.split('/') {
            assert!(
                !c.is_empty() && c != "." && c != "..",
                "{s:?} has component {c:?}"
            );
        }
        for c in Path::new(s).components() {
            assert!(
                matches!(c, std::path::Component::Normal(_)),
                "{s:?} has a {c:?} component"
            );
        }
        let root = Path::new("/install");
        let joined = p.under(root);
        assert!(joined.starts_with(root) && joined != root, "{joined:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 512,
            failure_persistence: None,
            ..Default::default()
        })]

        #[test]
        fn parsing_is_idempotent_and_never_yields_an_unsafe_path(s in path_like()) {
            match RelPath::new(&s) {
                Ok(p) => {
                    proptest::prop_assert_eq!(p.as_str(), s.as_str());
                    assert_plain(&p);
                    let from_path = RelPath::from_path(Path::new(&s));
                    proptest::prop_assert_eq!(from_path.as_ref(), Ok(&p));
                    let json = serde_json::to_string(&p).unwrap();
                    proptest::prop_assert_eq!(serde_json::from_str::<RelPath>(&json).unwrap(), p.clone());
                    for a in p.ancestors().chain(p.parent()) {
                        assert_plain(&a);
                        proptest::prop_assert!(p.starts_with(&a) && a != p);
                    }
                    if s.len() * 2 < 4096 {
                        let twice = p.join(&p);
                        assert_plain(&twice);
                        proptest::prop_assert!(twice.starts_with(&p));
                    }
                }
                Err(e) => {
                    proptest::prop_assert_eq!(e.path, s.clone());
                    // Whatever was refused is not made acceptable by serde either.
                    let json = serde_json::to_string(&s).unwrap();
                    proptest::prop_assert!(serde_json::from_str::<RelPath>(&json).is_err());
                }
            }
        }
    }
}
