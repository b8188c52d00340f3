//! A listing of a file tree: regular files with their hash, size and mode, symbolic links with
//! their target, and directories.
//!
//! The same shape describes a staged package, the files an install owns (`state.json`), and a
//! release tree being published, so diffing, verifying and planning all compare like with like.
//!
//! A symbolic link is a non-directory entry like a file — it is replaced, deleted, backed up and
//! rolled back by the same renames — so it lives in `files`, with `link` set to its target,
//! `sha256` the SHA-256 of the target's bytes, size 0 and mode `0o777`. Any change of target is a
//! change of the record. Nothing in molt ever opens a path through a link; only targets that
//! [`crate::symlink`] accepts are listed. A hard-linked file is listed as the regular file it is
//! at each of its paths (each path gets its own copy on install).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hashing::{Sha256Digest, sha256_file_and_size};
use crate::relpath::RelPath;
use crate::symlink::{self, LinkError, Node};

/// What molt records about one regular file or symbolic link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub sha256: Sha256Digest,
    pub size: u64,
    /// Permission bits, already masked to `0o777`.
    pub mode: u32,
    /// For a symbolic link, its target (then `sha256` is that of the target, size 0, mode
    /// `0o777`); absent for a regular file, so older `state.json` files read unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl FileRecord {
    /// The record of a regular file.
    pub fn regular(sha256: Sha256Digest, size: u64, mode: u32) -> Self {
        Self {
            sha256,
            size,
            mode: mode & 0o777,
            link: None,
        }
    }

    /// The record of a symbolic link to `target`.
    pub fn symlink(target: &str) -> Self {
        Self {
            sha256: Sha256Digest::of(target.as_bytes()),
            size: 0,
            mode: 0o777,
            link: Some(target.to_owned()),
        }
    }

    pub fn is_link(&self) -> bool {
        self.link.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeListing {
    #[serde(deserialize_with = "crate::bulk::map")]
    pub files: BTreeMap<RelPath, FileRecord>,
    #[serde(deserialize_with = "crate::bulk::set")]
    pub dirs: BTreeSet<RelPath>,
}

/// Why a tree could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is a {kind}; release trees may hold only regular files, directories and \
         symbolic links"
    )]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    #[error(
        "symbolic link {path} -> {target:?} cannot be published: {reason}; make it a relative \
         link that stays inside the release tree, or replace it with the file it points to"
    )]
    UnsafeLink {
        path: PathBuf,
        target: String,
        reason: LinkError,
    },
    #[error("{path}: {source}")]
    UnsafeName {
        path: PathBuf,
        source: crate::relpath::RelPathError,
    },
}

impl TreeListing {
    /// Lists `root` recursively (hashing every file, reading every link's target), skipping any
    /// top-level entry in `exclude`. A link whose target [`Self::check_links`] refuses, sockets,
    /// devices and FIFOs are errors: molt never installs them.
    pub fn scan(root: &Path, exclude: &[RelPath]) -> Result<Self, ScanError> {
        let mut listing = TreeListing::default();
        let walker = walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name();
        let mut it = walker.into_iter();
        while let Some(entry) = it.next() {
            let entry = entry.map_err(|e| ScanError::Read {
                path: e.path().unwrap_or(root).to_owned(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk error")),
            })?;
            let rel = entry
                .path()
                .strip_prefix(root)
                .expect("walkdir stays under root");
            let rel = RelPath::from_path(rel).map_err(|source| ScanError::UnsafeName {
                path: entry.path().to_owned(),
                source,
            })?;
            if exclude.iter().any(|x| rel.starts_with(x)) {
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
            let ft = entry.file_type();
            if ft.is_dir() {
                listing.dirs.insert(rel);
            } else if ft.is_file() {
                let read_err = |source| ScanError::Read {
                    path: entry.path().to_owned(),
                    source,
                };
                let meta = entry.metadata().map_err(|e| read_err(e.into()))?;
                let (sha256, size) = sha256_file_and_size(entry.path()).map_err(read_err)?;
                listing.files.insert(
                    rel,
                    FileRecord::regular(sha256, size, meta.permissions().mode()),
                );
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(entry.path()).map_err(|source| ScanError::Read {
                        path: entry.path().to_owned(),
                        source,
                    })?;
                let Some(target) = target.to_str() else {
                    return Err(ScanError::UnsafeLink {
                        path: entry.path().to_owned(),
                        target: target.to_string_lossy().into_owned(),
                        reason: LinkError::NotUtf8,
                    });
                };
                listing.files.insert(rel, FileRecord::symlink(target));
            } else {
                return Err(ScanError::UnsupportedFileType {
                    path: entry.path().to_owned(),
                    kind: "special file",
                });
            }
        }
        listing
            .check_links()
            .map_err(|(link, target, reason)| ScanError::UnsafeLink {
                path: link.under(root),
                target,
                reason,
            })?;
        Ok(listing)
    }

    /// What the listing holds at `path`.
    pub fn node(&self, path: &RelPath) -> Node<'_> {
        node_in(&self.files, &self.dirs, path)
    }

    /// Every link of the listing, with its target.
    pub fn links(&self) -> impl Iterator<Item = (&RelPath, &str)> {
        self.files
            .iter()
            .filter_map(|(p, r)| r.link.as_deref().map(|t| (p, t)))
    }

    /// Checks every link's target against this tree (see [`crate::symlink`]); the first refused
    /// link comes back with its target and the reason.
    pub(crate) fn check_links(&self) -> Result<(), (RelPath, String, LinkError)> {
        for (path, target) in self.links() {
            symlink::resolve(path, target, |p| self.node(p))
                .map_err(|reason| (path.clone(), target.to_owned(), reason))?;
        }
        Ok(())
    }

    /// Sum of the sizes of all regular files (the manifest's `unpacked_size`; links count 0).
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

/// What `files` and `dirs` (a listing, or an install's recorded state) hold at `path`.
pub(crate) fn node_in<'a>(
    files: &'a BTreeMap<RelPath, FileRecord>,
    dirs: &BTreeSet<RelPath>,
    path: &RelPath,
) -> Node<'a> {
    match files.get(path) {
        Some(FileRecord { link: Some(t), .. }) => Node::Link(t),
        Some(_) => Node::File,
        None if dirs.contains(path) => Node::Dir,
        None => Node::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_files_dirs_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::create_dir_all(dir.path().join(".molt")).unwrap();
        std::fs::write(dir.path().join("bin/app"), b"abc").unwrap();
        std::fs::set_permissions(
            dir.path().join("bin/app"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let l = TreeListing::scan(dir.path(), &[RelPath::new(".molt").unwrap()]).unwrap();
        assert_eq!(l.dirs.len(), 1);
        let rec = &l.files[&RelPath::new("bin/app").unwrap()];
        assert_eq!((rec.size, rec.mode), (3, 0o755));
        assert_eq!(l.total_size(), 3);
    }

    #[test]
    fn lists_relative_links_and_refuses_escaping_ones() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::write(root.join("lib/libfoo.so.1"), b"elf").unwrap();
        symlink("libfoo.so.1", root.join("lib/libfoo.so")).unwrap();
        symlink("lib", root.join("current")).unwrap();
        let l = TreeListing::scan(root, &[]).unwrap();
        let rec = &l.files[&RelPath::new("lib/libfoo.so").unwrap()];
        assert_eq!(rec, &FileRecord::symlink("libfoo.so.1"));
        assert_eq!(l.node(&RelPath::new("current").unwrap()), Node::Link("lib"));
        assert_eq!(l.total_size(), 3);

        for (target, reason) in [
            ("/etc/passwd", LinkError::Absolute),
            ("../../outside", LinkError::PastRoot),
            ("current/../..", LinkError::PastRoot),
        ] {
            let bad = root.join("bad");
            let _ = std::fs::remove_file(&bad);
            symlink(target, &bad).unwrap();
            match TreeListing::scan(root, &[]) {
                Err(ScanError::UnsafeLink {
                    path,
                    target: t,
                    reason: r,
                }) => {
                    assert_eq!((path, t.as_str(), r), (bad.clone(), target, reason));
                }
                other => panic!("{target}: {other:?}"),
            }
        }
    }
}
