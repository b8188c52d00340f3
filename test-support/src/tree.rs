//! Snapshots of a directory tree: every entry's kind, mode and content hash (a symbolic link:
//! its target, never followed), to assert that a tree is exactly what it was, or what a release
//! says.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Relative path → `dir MODE`, `file MODE SHA256`, `link TARGET` or `other KIND`.
pub type Snapshot = BTreeMap<String, String>;

/// Every entry below `root` except the paths in `skip` and what lies under them; empty if
/// `root` does not exist.
pub fn snapshot(root: &Path, skip: &[&str]) -> Snapshot {
    let mut out = Snapshot::new();
    if !root.exists() {
        return out;
    }
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.expect("walk the tree");
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        if skip
            .iter()
            .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
        {
            continue;
        }
        let meta = fs::symlink_metadata(e.path()).expect("lstat");
        let mode = meta.permissions().mode() & 0o7777;
        let desc = if meta.is_dir() {
            format!("dir {mode:o}")
        } else if meta.is_file() {
            let bytes = fs::read(e.path()).expect("read");
            format!("file {mode:o} {}", crate::sha256_hex(&bytes))
        } else if meta.file_type().is_symlink() {
            format!(
                "link {}",
                fs::read_link(e.path()).expect("readlink").display()
            )
        } else {
            format!("other {:?}", meta.file_type())
        };
        out.insert(rel, desc);
    }
    out
}

/// Asserts two snapshots are equal, naming the paths that differ.
#[track_caller]
pub fn assert_same_tree(actual: &Snapshot, expected: &Snapshot, what: &str) {
    if actual != expected {
        let mut diff = Vec::new();
        for k in actual.keys().chain(expected.keys()) {
            if actual.get(k) != expected.get(k) && !diff.contains(k) {
                diff.push(k.clone());
            }
        }
        panic!("{what}: trees differ at {diff:?}\nactual: {actual:#?}\nexpected: {expected:#?}");
    }
}
