//! A listing of a file tree: regular files with their hash, size and mode, and directories.
//!
//! The same shape describes a staged package, the files an install owns (`state.json`), and a
//! release tree being published, so diffing, verifying and planning all compare like with like.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hashing::sha256_file_and_size;
use crate::relpath::RelPath;

/// What molt records about one regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub sha256: String,
    pub size: u64,
    /// Permission bits, already masked to `0o777`.
    pub mode: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeListing {
    pub files: BTreeMap<RelPath, FileRecord>,
    pub dirs: BTreeSet<RelPath>,
}

/// Why a tree could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is a {kind}; release trees may hold only regular files and directories")]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    #[error("{path}: {source}")]
    UnsafeName {
        path: PathBuf,
        source: crate::relpath::RelPathError,
    },
}

impl TreeListing {
    /// Lists `root` recursively (hashing every file), skipping any top-level entry in `exclude`.
    /// Symlinks, sockets, devices and FIFOs are errors: molt never installs them.
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
                    FileRecord {
                        sha256,
                        size,
                        mode: meta.permissions().mode() & 0o777,
                    },
                );
            } else {
                let kind = if ft.is_symlink() {
                    "symbolic link"
                } else {
                    "special file"
                };
                return Err(ScanError::UnsupportedFileType {
                    path: entry.path().to_owned(),
                    kind,
                });
            }
        }
        Ok(listing)
    }

    /// Sum of the sizes of all regular files (the manifest's `unpacked_size`).
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
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
    fn refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert!(matches!(
            TreeListing::scan(dir.path(), &[]),
            Err(ScanError::UnsupportedFileType { .. })
        ));
    }
}
