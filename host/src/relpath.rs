//! `RelPath`: a path inside an install tree that has been proven safe to join onto it.
//!
//! Every path that comes from outside — a manifest's operations, a tar entry, an operator's
//! `preserve` list — is parsed into a `RelPath` before it touches the filesystem, so the rest of
//! molt never has to ask whether a path could escape the install directory (the same idea as
//! tough's `TargetName`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-empty, normalized, relative path with `/` separators: no `..`, no `.`, no empty
/// components, no leading or trailing `/`, no NUL.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

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
        Ok(Self(s.to_owned()))
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
        root.join(&self.0)
    }

    /// The parent path, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_owned()))
    }

    /// Every proper ancestor, outermost first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        self.0
            .match_indices('/')
            .map(|(i, _)| RelPath(self.0[..i].to_owned()))
    }

    /// True if `self` equals `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// `self` joined with a further relative path.
    pub fn join(&self, tail: &RelPath) -> RelPath {
        RelPath(format!("{}/{}", self.0, tail.0))
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
}
