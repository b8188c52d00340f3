//! Package extraction into a transaction's stage, every cap on, the way `molt apply` does it:
//! begin a transaction, extract, and on refusal abandon the transaction.
//!
//! Input: `[flags, size cap, entry cap, data…]`. Flags bit 0 set: the data is the package's
//! compressed bytes as given (gzip or zstd: the extractor picks the decoder by magic bytes);
//! clear: the data is a tar stream the target compresses (so mutations reach the tar parser),
//! with zstd when bit 3 is set, else gzip. Bits 1–2 pick what may be in it: any entry (a full
//! package) or one of two sets of signed patch operations. The unpacked-size cap is
//! `64 × size cap` bytes.
//!
//! Invariants: nothing outside the stage is ever written (the install, the state dir and the
//! package stay byte-identical); an accepted package's stage holds exactly the returned listing
//! (regular files, directories and links that resolve inside the tree, modes within 0o777, no more bytes or entries than the
//! caps, only what the operations permit and all they name); a refused package leaves no stage
//! behind once the transaction is abandoned.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use super::{open_state, scratch, snapshot};
use molt::package::extract::{Allowed, ExtractLimits, extract};
use molt::relpath::RelPath;
use molt::repo::manifest::{Operations, PathSet};
use molt::state::StateDir;
use molt::txn::Transaction;

struct World {
    root: PathBuf,
    state: StateDir,
    ops: [Operations; 2],
}

fn paths(list: &[&str]) -> Vec<RelPath> {
    list.iter().map(|p| RelPath::new(p).unwrap()).collect()
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let root = scratch("extract");
        let state = open_state(&root);
        let ops = [
            Operations::new(
                PathSet {
                    files: paths(&["bin/app", "conf/app.yml"]),
                    directories: paths(&["web"]),
                },
                PathSet {
                    files: paths(&["old.txt"]),
                    directories: paths(&["legacy"]),
                },
            )
            .unwrap(),
            Operations::new(
                PathSet {
                    files: paths(&["c"]),
                    directories: paths(&["a/b", "empty"]),
                },
                PathSet::default(),
            )
            .unwrap(),
        ];
        World { root, state, ops }
    })
}

/// Every file and directory under `stage`, as the listing would name them.
fn on_disk(stage: &std::path::Path) -> molt::tree::TreeListing {
    let mut listing = molt::tree::TreeListing::default();
    for e in walkdir::WalkDir::new(stage).min_depth(1) {
        let e = e.unwrap();
        let rel = RelPath::from_path(e.path().strip_prefix(stage).unwrap()).unwrap();
        let meta = fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() {
            listing.dirs.insert(rel);
        } else if meta.is_symlink() {
            let target = fs::read_link(e.path()).unwrap();
            listing.files.insert(
                rel,
                molt::tree::FileRecord::symlink(target.to_str().expect("a UTF-8 link target")),
            );
        } else {
            assert!(
                meta.is_file(),
                "{rel} in the stage is a {:?}",
                meta.file_type()
            );
            let bytes = fs::read(e.path()).unwrap();
            listing.files.insert(
                rel,
                molt::tree::FileRecord {
                    sha256: molt::hashing::Sha256Digest::of(&bytes),
                    size: bytes.len() as u64,
                    mode: meta.permissions().mode() & 0o7777,
                    link: None,
                },
            );
        }
    }
    listing
}

fn permitted(ops: &Operations, path: &RelPath, is_dir: bool) -> bool {
    let under = |set: &[RelPath]| set.iter().any(|d| path.starts_with(d));
    if under(&ops.delete.files) || under(&ops.delete.directories) {
        return false;
    }
    if under(&ops.replace.directories) {
        return true;
    }
    if ops.replace.files.contains(path) {
        return !is_dir;
    }
    is_dir && ops.replace.iter().any(|p| p.starts_with(path))
}

/// One input: see the module doc for its layout and the invariants it asserts.
pub fn check(data: &[u8]) {
    let [flags, cap, entries, body @ ..] = data else {
        return;
    };
    let w = world();
    let package = w.root.join("package.tar");
    let bytes = if flags & 1 == 1 {
        body.to_vec()
    } else if flags & 8 == 8 {
        zstd::encode_all(body, 1).unwrap()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).unwrap();
        gz.finish().unwrap()
    };
    fs::write(&package, &bytes).unwrap();
    let ops = match (flags >> 1) & 3 {
        1 => Some(&w.ops[0]),
        2 => Some(&w.ops[1]),
        _ => None,
    };
    let allowed = ops.map_or(Allowed::Any, Allowed::Operations);
    let limits = ExtractLimits {
        max_unpacked_bytes: u64::from(*cap) * 64,
        max_entries: u64::from(*entries),
        exact: false,
        signed: None,
    };
    let outside = |root: &std::path::Path| snapshot(root, &["state/txn"]);
    let before = outside(&w.root);

    let txn = Transaction::begin(&w.state, 1).unwrap();
    let stage = txn.stage_dir();
    let txn_dir = txn.dir().to_owned();
    match extract(&package, &stage, &limits, allowed) {
        Ok(listing) => {
            let found = on_disk(&stage);
            assert_eq!(
                found.files, listing.files,
                "the stage does not hold the listed files"
            );
            assert_eq!(
                found.dirs, listing.dirs,
                "the stage does not hold the listed dirs"
            );
            assert!(listing.total_size() <= limits.max_unpacked_bytes);
            assert!(listing.files.len() as u64 <= limits.max_entries);
            for (path, record) in &listing.files {
                assert!(record.mode <= 0o777, "{path} has mode {:o}", record.mode);
            }
            if let Some(ops) = ops {
                for path in listing.files.keys() {
                    assert!(permitted(ops, path, false), "{path} is not permitted");
                }
                for path in &listing.dirs {
                    assert!(
                        permitted(ops, path, true),
                        "directory {path} is not permitted"
                    );
                }
                for f in &ops.replace.files {
                    assert!(listing.files.contains_key(f), "{f} is missing");
                }
                for d in &ops.replace.directories {
                    assert!(listing.dirs.contains(d), "{d}/ is missing");
                }
            }
            txn.abandon().unwrap();
        }
        Err(e) => {
            super::assert_refused_cleanly(&e, txn, &stage, &txn_dir);
        }
    }
    super::assert_nothing_written_outside(&outside(&w.root), &before, &w.state);
}
