//! Test helpers: snapshot a whole tree (kind, content hash, mode) to compare before and after.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::hashing::sha256_file;

/// What a snapshot records per path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { sha256: String, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

/// Every entry under `root` (not following links), keyed by relative path, skipping the
/// top-level names in `exclude`.
pub fn snapshot(root: &Path, exclude: &[&str]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let entry = entry.expect("walk");
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let top = rel.split('/').next().unwrap_or_default();
        if exclude.contains(&top) {
            continue;
        }
        let meta = fs::symlink_metadata(entry.path()).expect("lstat");
        let mode = meta.permissions().mode() & 0o7777;
        let e = if meta.file_type().is_symlink() {
            Entry::Symlink {
                target: fs::read_link(entry.path())
                    .expect("readlink")
                    .to_string_lossy()
                    .into_owned(),
            }
        } else if meta.is_dir() {
            Entry::Dir { mode }
        } else {
            Entry::File {
                sha256: sha256_file(entry.path()).expect("hash").to_hex(),
                mode,
            }
        };
        out.insert(rel, e);
    }
    out
}
