//! What molt's fuzz targets share: the fixed publisher key and trust policy, scratch directories
//! (on tmpfs when there is one, so the many small writes and `syncfs` calls stay cheap), tree
//! snapshots, and the real transaction a recovery target starts from.
//!
//! The seed corpus (`corpus/<target>/`) is written by `cargo run --example seeds` with this same
//! code, so every seed is something the real molt produced.
//!
//! Each target is a module with one `check(data)` that asserts its invariants; the libFuzzer
//! binaries in `fuzz_targets/` only call it. The main test suite includes this same file
//! (`tests/fuzz_seeds.rs`) and runs every seed and every saved regression through the same
//! `check`, on stable and without libFuzzer, so a seed that stops passing fails `cargo test`.
//! That is why the modules refer to each other through `super::`, never through the crate name.

pub mod config;
pub mod delta;
pub mod extract;
pub mod manifest;
pub mod plugin_answer;
pub mod recovery;
pub mod state;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use molt::relpath::RelPath;
use molt::repo::trust::TrustPolicy;
use molt::state::StateDir;
use molt::tree::TreeListing;
use molt::txn::{PlanContext, Transaction, plan_full};
use molt::version::Version;
use time::OffsetDateTime;
use time::macros::datetime;

/// The repository URL named in errors.
pub const SOURCE_URL: &str = "https://updates.example.com/demo-app";
/// The product the policy trusts.
pub const PRODUCT: &str = "demo-app";
/// The policy's "now"; seed manifests expire after it.
pub const NOW: OffsetDateTime = datetime!(2026-12-01 00:00:00 UTC);
/// The highest serial accepted before: the seed repository has two publishes (serial 2).
pub const MIN_SERIAL: u64 = 2;

/// The publisher key every signed fuzz input is signed with.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x5a; 32])
}

/// A client that trusts only [`signing_key`].
pub fn policy() -> TrustPolicy {
    TrustPolicy {
        product: PRODUCT.to_owned(),
        keys: vec![signing_key().verifying_key()],
        threshold: 1,
        min_serial: MIN_SERIAL,
        now: NOW,
    }
}

/// A fresh scratch directory for this process, removed when it exits (also after a fuzzer's
/// crash report, which ends the process with `exit`).
pub fn scratch(name: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_owned()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("molt-fuzz-{name}-"))
        .tempdir_in(base)
        .expect("scratch dir")
        .keep();
    remove_at_exit(dir.clone());
    dir
}

static SCRATCH: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn remove_at_exit(dir: PathBuf) {
    extern "C" fn remove_all() {
        if let Ok(dirs) = SCRATCH.lock() {
            for d in dirs.iter() {
                let _ = fs::remove_dir_all(d);
            }
        }
    }
    static REGISTER: std::sync::Once = std::sync::Once::new();
    // SAFETY: `remove_all` is a plain function that stays valid for the whole process.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_all);
    });
    SCRATCH.lock().unwrap().push(dir);
}

/// Every entry below `root` (except the paths in `skip` and what lies under them): kind, mode,
/// content hash (the snapshot of every molt test suite, `molt-test-support`).
pub use molt_test_support::tree::{Snapshot, snapshot};

/// Copies a tree (files, directories, modes); symlinks are not expected.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let mut dirs = Vec::new();
    for e in walkdir::WalkDir::new(from).min_depth(1) {
        let e = e.unwrap();
        let target = to.join(e.path().strip_prefix(from).unwrap());
        let meta = fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() {
            fs::create_dir_all(&target).unwrap();
            dirs.push((target, meta.permissions()));
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
    for (d, p) in dirs.into_iter().rev() {
        fs::set_permissions(d, p).unwrap();
    }
}

/// Writes `files` (path, content, mode) below `root`.
pub fn write_files(root: &Path, files: &[(&str, &str, u32)]) {
    for (rel, content, mode) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// Release 1.0.0 of the recovery scenario.
pub const OLD_TREE: &[(&str, &str, u32)] = &[
    ("bin/app", "app 1.0.0\n", 0o755),
    ("conf/app.yml", "level: 1\n", 0o644),
    ("web/a.js", "a1\n", 0o644),
    ("web/b.js", "b1\n", 0o644),
    ("legacy/x.txt", "x\n", 0o644),
];
/// Release 2.0.0: a changed binary (and mode), an unchanged config, a changed and a dropped web
/// file, the directory `legacy` turned into a file, a new nested directory.
pub const NEW_TREE: &[(&str, &str, u32)] = &[
    ("bin/app", "app 2.0.0\n", 0o700),
    ("conf/app.yml", "level: 1\n", 0o644),
    ("web/a.js", "a2\n", 0o644),
    ("legacy", "now a file\n", 0o644),
    ("lib/new/mod.so", "mod\n", 0o644),
];
/// A file the operator's application wrote; molt never owns it.
pub const UNOWNED: (&str, &str, u32) = ("conf/local.yml", "operator\n", 0o600);

/// The install at three moments of one real update from 1.0.0 to 2.0.0, each a copy of
/// `install/` and `state/` (the state dir lives beside the install).
pub struct RecoveryScenario {
    /// The update staged, its intent not yet journaled: nothing in the install moved.
    pub staged: PathBuf,
    /// Every op applied, just before the validators run (journal: intent, applied).
    pub applied: PathBuf,
    /// The transaction id (`state/txn/<id>`), `@TXN@` in journal seeds.
    pub txn_id: String,
    /// The scenario's own root, `@ROOT@` in journal seeds.
    pub root: PathBuf,
    /// The complete journal of the update, with the root and id replaced by placeholders.
    pub journal: Vec<u8>,
    /// `install/` before and after the update.
    pub old: Snapshot,
    pub new: Snapshot,
}

/// A refused package's invariant, shared by the extracting targets: the refusal says something,
/// its transaction can be discarded, and neither the stage nor the transaction dir is left.
pub fn assert_refused_cleanly(
    e: &dyn std::fmt::Display,
    txn: Transaction,
    stage: &Path,
    txn_dir: &Path,
) {
    assert!(!e.to_string().is_empty());
    txn.abandon()
        .expect("a refused package's transaction cannot be discarded");
    assert!(
        !stage.exists() && !txn_dir.exists(),
        "{e}: the stage was left behind"
    );
}

/// What the extracting targets check after every input: nothing outside the stage changed
/// (`now` against `before`, both taken with the stage left out), and no transaction is left.
pub fn assert_nothing_written_outside(now: &Snapshot, before: &Snapshot, state: &StateDir) {
    assert_eq!(now, before, "extraction wrote outside its stage");
    assert_eq!(fs::read_dir(state.txn_root()).unwrap().count(), 0);
}

/// The install's state dir and its install dir, under `root`.
pub fn open_state(root: &Path) -> StateDir {
    StateDir::open(&root.join("state"), &root.join("install")).expect("state dir")
}

/// Runs a full update of `files` as `version` into the install under `root`, calling `at_stage`
/// once the stage is written and `at_validate` when every op is applied.
fn full_update(
    root: &Path,
    files: &[(&str, &str, u32)],
    version: &str,
    at_stage: impl FnOnce(&Transaction),
    at_validate: impl FnOnce(&Path),
) -> String {
    let state = open_state(root);
    let txn = Transaction::begin(&state, 3).expect("begin");
    let stage = txn.stage_dir();
    write_files(&stage, files);
    let staged = TreeListing::scan(&stage, &[]).expect("scan stage");
    let ctx = PlanContext::new(&state, &[] as &[RelPath]);
    let old = state.load_state().expect("state");
    let plan =
        plan_full(&ctx, &stage, staged, &old, Version::parse(version).unwrap()).expect("plan");
    let id = txn.id().to_owned();
    at_stage(&txn);
    txn.apply(&plan, |_| {
        at_validate(root);
        Ok(())
    })
    .expect("apply");
    id
}

impl RecoveryScenario {
    pub fn build() -> RecoveryScenario {
        let base = scratch("recovery-template");
        let root = base.join("live");
        let staged = base.join("staged");
        let applied = base.join("applied");
        full_update(&root, OLD_TREE, "1.0.0", |_| {}, |_| {});
        write_files(&root.join("install"), &[UNOWNED]);
        let old = snapshot(&root.join("install"), &[]);
        let txn_id = full_update(
            &root,
            NEW_TREE,
            "2.0.0",
            |_| copy_tree(&root, &staged),
            |r| copy_tree(r, &applied),
        );
        let new = snapshot(&root.join("install"), &[]);
        let journal_path = root.join("state/history").join(&txn_id).join("journal");
        let journal = fs::read(&journal_path).expect("the update's journal");
        let journal = String::from_utf8(journal)
            .unwrap()
            .replace(root.to_str().unwrap(), "@ROOT@")
            .replace(&txn_id, "@TXN@")
            .into_bytes();
        // Each line's checksum now covers the text with the placeholders.
        let journal = map_lines(&journal, |json, _| {
            Some((json.to_vec(), molt::hashing::sha256_hex(json)))
        });
        RecoveryScenario {
            staged,
            applied,
            txn_id,
            root,
            journal,
            old,
            new,
        }
    }

    /// Journal bytes as a seed names them, made concrete for an install under `root`. A line
    /// whose checksum matches its text with the placeholders gets the checksum of its concrete
    /// text; any other line keeps a checksum that fails, as a record changed on disk would.
    pub fn concrete(&self, journal: &[u8], root: &Path) -> Vec<u8> {
        let root = root.to_str().unwrap().as_bytes();
        map_lines(journal, |json, checksum| {
            let concrete = replace(
                &replace(json, b"@ROOT@", root),
                b"@TXN@",
                self.txn_id.as_bytes(),
            );
            (checksum == molt::hashing::sha256_hex(json).as_bytes())
                .then(|| molt::hashing::sha256_hex(&concrete))
                .map(|c| (concrete, c))
        })
    }
}

/// Rewrites each `json<TAB>checksum` line of a journal: `f` gets the JSON and the checksum and
/// returns the new JSON and checksum, or `None` to keep the line as it is. Bytes after the last
/// newline (a torn append) are kept as they are.
fn map_lines(
    journal: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Option<(Vec<u8>, String)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(journal.len());
    let mut rest = journal;
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let (json, checksum) = match line.iter().rposition(|b| *b == b'\t') {
            Some(tab) => (&line[..tab], &line[tab + 1..]),
            None => (line, &[][..]),
        };
        match f(json, checksum) {
            Some((json, checksum)) => {
                out.extend_from_slice(&json);
                out.push(b'\t');
                out.extend_from_slice(checksum.as_bytes());
            }
            None => out.extend_from_slice(line),
        }
        out.push(b'\n');
    }
    out.extend_from_slice(rest);
    out
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}
