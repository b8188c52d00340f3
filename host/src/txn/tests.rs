//! End-to-end tests of the transaction on real temporary trees: apply, validator failure,
//! rollback, and a simulated crash after every durable step followed by recovery.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::testutil::{Entry, snapshot};
use super::*;
use crate::failpoint::simulation::{crash_after_step, record_steps};
use crate::repo::manifest::{Operations, PathSet};
use crate::state::StateDir;
use crate::tree::TreeListing;

type Tree = BTreeMap<String, Entry>;

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

/// (path, content, mode) of a release's files.
type Files<'a> = &'a [(&'a str, &'a str, u32)];

const V1: Files = &[
    ("bin/app", "app 1.0", 0o755),
    ("conf/app.yml", "conf 1.0", 0o644),
    ("conf/legacy.yml", "legacy", 0o600),
    ("web/index.html", "index 1.0", 0o644),
    ("web/old.css", "old css", 0o644),
    ("web/img/logo.png", "logo", 0o644),
    ("plugins/legacy/p.so", "plugin", 0o755),
    ("plugins/keep.so", "keep", 0o755),
    ("docs", "docs as a file", 0o644),
    ("lib/x/a", "lib a", 0o644),
];

/// The same release as V1 would become after the patch below.
const V11: Files = &[
    ("bin/app", "app 1.1", 0o700),
    ("conf/app.yml", "conf 1.1", 0o644),
    ("web/index.html", "index 1.1", 0o644),
    ("web/new.js", "new js", 0o644),
    ("plugins/keep.so", "keep", 0o755),
    ("docs", "docs as a file", 0o644),
    ("lib/x/a", "lib a", 0o644),
    ("fresh/deep/new.txt", "brand new", 0o640),
];

/// A full release that turns a file into a directory and a directory into a file.
const V2: Files = &[
    ("bin/app", "app 2.0", 0o755),
    ("conf/app.yml", "conf 2.0", 0o644),
    ("web/index.html", "index 2.0", 0o644),
    ("docs/readme", "docs are a dir now", 0o644),
    ("lib/x", "lib x is a file", 0o644),
    ("data/default.db", "shipped default", 0o644),
];

struct Fixture {
    _tmp: tempfile::TempDir,
    install: PathBuf,
    sd: StateDir,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let install = tmp.path().join("app");
        let sd = StateDir::open(&install.join(".molt"), &install).unwrap();
        Fixture {
            _tmp: tmp,
            install,
            sd,
        }
    }

    /// V1 installed by a full update, plus operator files molt does not own.
    fn with_v1() -> Self {
        let f = Fixture::new();
        f.full(V1, "1.0.0", 2, |_| Ok(())).unwrap();
        write(&f.install, "notes.txt", "operator notes", 0o600);
        write(&f.install, "data/user.db", "user data", 0o600);
        write(&f.install, "plugins/mine.so", "operator plugin", 0o755);
        f
    }

    fn tree(&self) -> Tree {
        snapshot(&self.install, &[".molt"])
    }

    fn preserve(&self) -> Vec<RelPath> {
        vec![rp("data")]
    }

    fn stage(&self, files: Files, keep: usize) -> (Transaction, TreeListing) {
        let txn = Transaction::begin(&self.sd, keep).unwrap();
        for (p, body, mode) in files {
            write(&txn.stage_dir(), p, body, *mode);
        }
        let listing = TreeListing::scan(&txn.stage_dir(), &[]).unwrap();
        (txn, listing)
    }

    fn prepare_full(&self, files: Files, to: &str, keep: usize) -> (Transaction, Plan) {
        let (txn, listing) = self.stage(files, keep);
        let old = self.sd.load_state().unwrap();
        let ctx = PlanContext::new(&self.sd, &self.preserve());
        let plan = plan_full(&ctx, &txn.stage_dir(), listing, &old, v(to)).unwrap();
        (txn, plan)
    }

    fn full(
        &self,
        files: Files,
        to: &str,
        keep: usize,
        validate: impl FnOnce(&Path) -> Result<(), super::ValidationError>,
    ) -> Result<ApplyOutcome, TxnError> {
        let (txn, plan) = self.prepare_full(files, to, keep);
        txn.apply(&plan, validate)
    }

    /// The 1.0.0 → 1.1.0 patch.
    fn prepare_patch(&self, keep: usize) -> (Transaction, Plan) {
        let staged: Vec<_> = V11
            .iter()
            .copied()
            .filter(|(p, ..)| {
                ["bin/app", "conf/app.yml", "fresh/deep/new.txt"].contains(p)
                    || p.starts_with("web/")
            })
            .collect();
        let (txn, listing) = self.stage(&staged, keep);
        let ops = Operations::new(
            PathSet {
                files: vec![rp("bin/app"), rp("conf/app.yml"), rp("fresh/deep/new.txt")],
                directories: vec![rp("web")],
            },
            PathSet {
                files: vec![rp("conf/legacy.yml"), rp("absent.txt")],
                directories: vec![rp("plugins/legacy")],
            },
        )
        .unwrap();
        let old = self.sd.load_state().unwrap();
        let ctx = PlanContext::new(&self.sd, &self.preserve());
        let plan = plan_patch(&ctx, &txn.stage_dir(), listing, &ops, &old, v("1.1.0")).unwrap();
        (txn, plan)
    }

    fn patch(
        &self,
        validate: impl FnOnce(&Path) -> Result<(), super::ValidationError>,
    ) -> Result<ApplyOutcome, TxnError> {
        let (txn, plan) = self.prepare_patch(2);
        txn.apply(&plan, validate)
    }

    fn version(&self) -> Option<Version> {
        self.sd.load_state().unwrap().version
    }

    fn txn_dirs(&self) -> Vec<String> {
        kept::dir_names(&self.sd.txn_root()).unwrap()
    }
}

fn write(root: &Path, p: &str, body: &str, mode: u32) {
    let path = root.join(p);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, body).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

fn read(root: &Path, p: &str) -> String {
    fs::read_to_string(root.join(p)).unwrap()
}

/// The tree a patch (or full update) should produce, built by hand from the old one.
fn expected_after_patch(old: &Tree, f: &Fixture) -> Tree {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    for (p, e) in old {
        match e {
            Entry::Dir { mode } => {
                fs::create_dir_all(dir.join(p)).unwrap();
                fs::set_permissions(dir.join(p), fs::Permissions::from_mode(*mode)).unwrap();
            }
            Entry::File { mode, .. } => {
                write(dir, p, &read(&f.install, p), *mode);
            }
            Entry::Symlink { .. } => unreachable!(),
        }
    }
    fs::remove_file(dir.join("conf/legacy.yml")).unwrap();
    fs::remove_dir_all(dir.join("plugins/legacy")).unwrap();
    fs::remove_dir_all(dir.join("web")).unwrap();
    for (p, body, mode) in V11 {
        write(dir, p, body, *mode);
    }
    snapshot(dir, &[])
}

#[test]
fn full_install_records_owned_files_and_history() {
    let f = Fixture::new();
    let out = f.full(V1, "1.0.0", 2, |_| Ok(())).unwrap();
    assert_eq!(out.kind, TxnKind::Full);
    assert_eq!(read(&f.install, "bin/app"), "app 1.0");
    let mode = fs::metadata(f.install.join("bin/app"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let st = f.sd.load_state().unwrap();
    assert_eq!(st.version, Some(v("1.0.0")));
    assert_eq!(st.files.len(), V1.len());
    assert!(st.dirs.contains(&rp("plugins/legacy")) && st.dirs.contains(&rp("web/img")));
    assert_eq!(st.history.len(), 1);
    assert_eq!(st.history[0].outcome, Outcome::Applied);
    assert!(f.txn_dirs().is_empty());
    assert_eq!(kept_transactions(&f.sd).unwrap().len(), 1);
    assert!(out.kept_in.unwrap().join("backup").is_dir());
}

#[test]
fn patch_replaces_files_and_directories_and_deletes() {
    let f = Fixture::with_v1();
    let old = f.tree();
    let expected = expected_after_patch(&old, &f);
    let out = f.patch(|_| Ok(())).unwrap();
    assert_eq!((out.from, out.to), (Some(v("1.0.0")), Some(v("1.1.0"))));
    assert_eq!(f.tree(), expected);
    assert!(
        !f.install.join("web/old.css").exists(),
        "replaced dir keeps stale file"
    );
    assert!(!f.install.join("web/img").exists());
    assert_eq!(read(&f.install, "plugins/mine.so"), "operator plugin");

    let st = f.sd.load_state().unwrap();
    assert_eq!(st.version, Some(v("1.1.0")));
    assert!(st.files.contains_key(&rp("web/new.js")));
    assert!(!st.files.contains_key(&rp("web/old.css")));
    assert!(!st.files.contains_key(&rp("conf/legacy.yml")));
    assert!(!st.dirs.contains(&rp("plugins/legacy")));
    assert!(st.dirs.contains(&rp("fresh/deep")));
    assert_eq!(st.files[&rp("bin/app")].mode, 0o700);
}

#[test]
fn validator_failure_restores_the_exact_old_tree() {
    let f = Fixture::with_v1();
    let old = f.tree();
    let old_state = f.sd.load_state().unwrap();
    let mut saw_new = false;
    let err = f
        .patch(|root| {
            saw_new = read(root, "bin/app") == "app 1.1";
            Err("bin/app does not start".into())
        })
        .unwrap_err();
    assert!(saw_new, "validator ran on the new tree");
    let msg = err.to_string();
    assert!(matches!(err, TxnError::ValidationFailed { .. }), "{msg}");
    assert!(
        msg.contains("bin/app does not start") && msg.contains("restored to 1.0.0"),
        "{msg}"
    );
    assert_eq!(err.exit_class(), crate::error::ExitClass::Failure);
    assert_eq!(f.tree(), old);

    let st = f.sd.load_state().unwrap();
    assert_eq!(st.version, old_state.version);
    assert_eq!(st.files, old_state.files);
    assert_eq!(st.failed, [v("1.1.0")]);
    assert_eq!(
        st.history.last().unwrap().outcome,
        Outcome::FailedValidation
    );
    assert!(f.txn_dirs().is_empty());
    assert_eq!(kept_transactions(&f.sd).unwrap().len(), 1);
}

#[test]
fn full_update_keeps_preserved_and_unowned_files_and_switches_kinds() {
    let f = Fixture::with_v1();
    write(
        &f.install,
        "plugins/legacy/operator.so",
        "in an owned dir",
        0o644,
    );
    f.full(V2, "2.0.0", 2, |_| Ok(())).unwrap();

    assert_eq!(read(&f.install, "notes.txt"), "operator notes");
    assert_eq!(read(&f.install, "data/user.db"), "user data");
    assert!(
        !f.install.join("data/default.db").exists(),
        "a preserved path is never written"
    );
    assert_eq!(read(&f.install, "plugins/mine.so"), "operator plugin");
    assert_eq!(
        read(&f.install, "plugins/legacy/operator.so"),
        "in an owned dir"
    );
    assert!(!f.install.join("plugins/legacy/p.so").exists());
    assert!(!f.install.join("plugins/keep.so").exists());
    assert!(
        !f.install.join("web/img").exists(),
        "owned dir left empty is removed"
    );
    assert!(!f.install.join("conf/legacy.yml").exists());
    assert_eq!(read(&f.install, "docs/readme"), "docs are a dir now");
    assert_eq!(read(&f.install, "lib/x"), "lib x is a file");

    let st = f.sd.load_state().unwrap();
    assert_eq!(st.version, Some(v("2.0.0")));
    assert!(
        !st.files.contains_key(&rp("data/default.db")),
        "preserved is never owned"
    );
    assert!(!st.files.contains_key(&rp("plugins/keep.so")));
    assert!(
        st.dirs.contains(&rp("plugins/legacy")),
        "a dir that stays stays owned"
    );
    assert!(!st.dirs.contains(&rp("web/img")));

    // A preserved file that exists is never replaced.
    write(&f.install, "data/default.db", "operator changed it", 0o644);
    f.full(V2, "2.0.1", 2, |_| Ok(())).unwrap();
    assert_eq!(read(&f.install, "data/default.db"), "operator changed it");
}

#[test]
fn rollback_restores_the_previous_release_exactly() {
    let f = Fixture::with_v1();
    let v1_tree = f.tree();
    let v1_state = f.sd.load_state().unwrap();
    f.full(V2, "2.0.0", 2, |_| Ok(())).unwrap();
    let v2_tree = f.tree();
    f.failed_update_keeps_history();

    let out = rollback_last(&f.sd, 2, &f.preserve()).unwrap();
    assert_eq!((out.from, out.to), (Some(v("2.0.0")), Some(v("1.0.0"))));
    assert_eq!(f.tree(), v1_tree);
    let st = f.sd.load_state().unwrap();
    assert_eq!(st.version, Some(v("1.0.0")));
    assert_eq!((&st.files, &st.dirs), (&v1_state.files, &v1_state.dirs));
    assert_eq!(st.rolled_back_from, [v("2.0.0")]);
    let kinds: Vec<_> = st.history.iter().map(|h| (h.kind, h.outcome)).collect();
    assert_eq!(
        kinds,
        [
            (TxnKind::Full, Outcome::Applied),
            (TxnKind::Full, Outcome::RolledBack),
            (TxnKind::Full, Outcome::FailedValidation),
            (TxnKind::Rollback, Outcome::Applied)
        ]
    );
    assert!(f.txn_dirs().is_empty());
    assert_ne!(v1_tree, v2_tree);

    // One further back: the initial install, which had nothing before it.
    rollback_last(&f.sd, 2, &f.preserve()).unwrap();
    let left: Vec<_> = f.tree().into_keys().collect();
    assert_eq!(
        left,
        [
            "data",
            "data/user.db",
            "notes.txt",
            "plugins",
            "plugins/mine.so"
        ]
    );
    assert_eq!(f.version(), None);
    let err = rollback_last(&f.sd, 2, &f.preserve()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no kept backup to roll back to (keep_backups = 2)"
    );
}

#[test]
fn rollback_leaves_a_preserved_path_the_release_shipped_alone() {
    let f = Fixture::with_v1();
    f.full(V2, "2.0.0", 2, |_| Ok(())).unwrap();
    assert!(!f.install.join("data/default.db").exists());
    write(
        &f.install,
        "data/default.db",
        "the application's records",
        0o644,
    );
    rollback_last(&f.sd, 2, &f.preserve()).unwrap();
    assert_eq!(f.version(), Some(v("1.0.0")));
    assert_eq!(
        read(&f.install, "data/default.db"),
        "the application's records"
    );
    let st = f.sd.load_state().unwrap();
    assert!(!st.files.contains_key(&rp("data/default.db")));
}

impl Fixture {
    /// A failed update in between leaves the kept backups as they were.
    fn failed_update_keeps_history(&self) {
        let before = kept_transactions(&self.sd).unwrap();
        let err = self
            .full(V1, "3.0.0", 2, |_| Err("nope".into()))
            .unwrap_err();
        assert!(matches!(err, TxnError::ValidationFailed { .. }));
        assert_eq!(kept_transactions(&self.sd).unwrap(), before);
    }
}

#[test]
fn rollback_after_patch_and_history_pruning() {
    let f = Fixture::with_v1();
    let v1_tree = f.tree();
    f.patch(|_| Ok(())).unwrap();
    assert_eq!(kept_transactions(&f.sd).unwrap().len(), 2);
    rollback_last(&f.sd, 2, &f.preserve()).unwrap();
    assert_eq!(f.tree(), v1_tree);

    // keep_backups = 1 prunes the older entry; 0 keeps nothing.
    f.patch(|_| Ok(())).unwrap();
    let (txn, plan) = f.prepare_full(V2, "2.0.0", 1);
    txn.apply(&plan, |_| Ok(())).unwrap();
    let kept = kept_transactions(&f.sd).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].to, Some(v("2.0.0")));
    let out = f.full(V1, "3.0.0", 0, |_| Ok(())).unwrap();
    assert!(out.kept_in.is_none());
    assert!(kept_transactions(&f.sd).unwrap().is_empty());
    let err = rollback_last(&f.sd, 0, &f.preserve()).unwrap_err();
    assert!(matches!(err, TxnError::NoBackup { keep_backups: 0 }));
}

#[test]
fn recover_with_nothing_to_do_and_abandoned_stage() {
    let f = Fixture::with_v1();
    assert_eq!(recover(&f.sd).unwrap(), None);
    let (txn, _) = f.stage(V2, 2);
    let id = txn.id().to_owned();
    drop(txn);
    let report = recover(&f.sd).unwrap().unwrap();
    assert_eq!(report.transactions[0].action, RecoveryAction::Discarded);
    assert_eq!(report.transactions[0].id, id);
    assert!(f.txn_dirs().is_empty());
    assert_eq!(recover(&f.sd).unwrap(), None);
}

/// The operation a crash test interrupts.
type Operation = Box<dyn FnOnce(&Fixture)>;
/// What a crash test runs: builds a fresh fixture, returns it with the operation to crash.
type Scenario = fn() -> (Fixture, Operation);
/// A tree and the version `state.json` records for it.
type Observed = (Tree, Option<Version>);

fn patch_scenario() -> (Fixture, Operation) {
    let f = Fixture::with_v1();
    let (txn, plan) = f.prepare_patch(2);
    (
        f,
        Box::new(move |_| {
            let _ = txn.apply(&plan, |_| Ok(()));
        }),
    )
}

fn full_scenario() -> (Fixture, Operation) {
    let f = Fixture::with_v1();
    let (txn, plan) = f.prepare_full(V2, "2.0.0", 1);
    (
        f,
        Box::new(move |_| {
            let _ = txn.apply(&plan, |_| Ok(()));
        }),
    )
}

fn failing_validator_scenario() -> (Fixture, Operation) {
    let f = Fixture::with_v1();
    let (txn, plan) = f.prepare_patch(2);
    (
        f,
        Box::new(move |_| {
            let _ = txn.apply(&plan, |_| Err("rejected".into()));
        }),
    )
}

fn rollback_scenario() -> (Fixture, Operation) {
    let f = Fixture::with_v1();
    f.full(V2, "2.0.0", 2, |_| Ok(())).unwrap();
    (
        f,
        Box::new(|f: &Fixture| {
            let _ = rollback_last(&f.sd, 2, &f.preserve());
        }),
    )
}

/// The tree and version before and after the scenario's operation, and its step labels.
fn learn(scenario: Scenario) -> (Observed, Observed, Vec<String>) {
    let (f, op) = scenario();
    let before = (f.tree(), f.version());
    let ((), labels) = record_steps(|| op(&f));
    let after = (f.tree(), f.version());
    assert!(f.txn_dirs().is_empty());
    (before, after, labels)
}

/// Crashes `scenario` after each of its durable steps (and recovery after each of its own),
/// then checks recovery leaves exactly the old or exactly the new tree, with matching state.
fn crash_everywhere(scenario: Scenario, crash_recovery_too: bool) {
    let (old, new, labels) = learn(scenario);
    let commit_step = labels
        .iter()
        .position(|l| l == "journal commit")
        .map(|i| i + 1);
    assert!(labels.len() > 5, "{labels:?}");
    for needed in ["journal intent", "fsync directories", "journal applied"] {
        assert!(
            labels.iter().any(|l| l == needed),
            "{needed} missing: {labels:?}"
        );
    }
    if commit_step.is_some() {
        assert_ne!(old, new, "the scenario changes nothing");
    }
    for k in 1..=labels.len() as u64 {
        let expected = match commit_step {
            Some(c) if k >= c as u64 => &new,
            _ => &old,
        };
        let (f, op) = scenario();
        assert!(
            crash_after_step(k, || op(&f)).is_none(),
            "no crash at step {k}"
        );
        let label = &labels[k as usize - 1];
        let stages: Vec<_> = pending(&f.sd)
            .unwrap()
            .into_iter()
            .map(|p| p.stage)
            .collect();
        if label == "journal intent" {
            assert_eq!(stages, [PendingStage::Applying], "crash at {k} ({label})");
        } else if label == "journal commit" {
            assert_eq!(stages, [PendingStage::Committed], "crash at {k} ({label})");
        }

        if crash_recovery_too {
            let (_, rec_labels) = record_steps(|| recover(&f.sd).unwrap());
            for j in 1..=rec_labels.len() as u64 {
                let (g, op) = scenario();
                assert!(crash_after_step(k, || op(&g)).is_none());
                assert!(crash_after_step(j, || recover(&g.sd)).is_none());
                recover(&g.sd).unwrap();
                check(
                    &g,
                    expected,
                    &format!("crash at {k} ({label}), recovery crash at {j}"),
                );
            }
        } else {
            recover(&f.sd).unwrap();
        }
        check(&f, expected, &format!("crash at {k} ({label})"));
        let again = f.tree();
        assert_eq!(recover(&f.sd).unwrap(), None, "recovery is not idempotent");
        assert_eq!(f.tree(), again);
    }
}

fn check(f: &Fixture, expected: &Observed, what: &str) {
    if f.tree() != expected.0 {
        let got = f.tree();
        let diff: Vec<_> = got
            .iter()
            .filter(|(k, v)| expected.0.get(*k) != Some(v))
            .map(|(k, _)| format!("+{k}"))
            .chain(
                expected
                    .0
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(v))
                    .map(|(k, _)| format!("-{k}")),
            )
            .collect();
        panic!("{what}: tree differs: {diff:?}");
    }
    assert_eq!(f.version(), expected.1, "{what}: state version");
    assert!(
        f.txn_dirs().is_empty(),
        "{what}: txn dir left: {:?}",
        f.txn_dirs()
    );
}

#[test]
fn crash_at_every_step_of_a_patch_recovers_old_or_new() {
    crash_everywhere(patch_scenario, false);
}

#[test]
fn crash_at_every_step_of_a_full_update_recovers_old_or_new() {
    crash_everywhere(full_scenario, false);
}

#[test]
fn crash_at_every_step_of_a_failing_validation_recovers_old() {
    let (old, _, _) = learn(failing_validator_scenario);
    crash_everywhere(failing_validator_scenario, false);
    let (f, _) = failing_validator_scenario();
    assert_eq!(f.tree(), old.0);
}

#[test]
fn crash_at_every_step_of_a_rollback_recovers_old_or_new() {
    crash_everywhere(rollback_scenario, false);
}

#[test]
fn crash_during_recovery_is_recovered_too() {
    crash_everywhere(patch_scenario, true);
}

#[test]
fn crash_points_cover_both_sides_of_the_commit() {
    let (_, _, labels) = learn(patch_scenario);
    let commit = labels.iter().position(|l| l == "journal commit").unwrap();
    assert!(labels[..commit].iter().any(|l| l.starts_with("put ")));
    assert!(labels[..commit].iter().any(|l| l.starts_with("backup ")));
    assert!(labels[commit..].iter().any(|l| l.contains("state.json")));
    assert!(labels[commit..].iter().any(|l| l == "journal done"));
}

#[test]
fn ten_thousand_file_update_takes_one_dir_fsync_batch_and_few_records() {
    let f = Fixture::new();
    let stage_release = |txn: &Transaction, tag: &str| {
        for i in 0..10_000 {
            let p = txn.stage_dir().join(format!("d{:03}/f{i}", i % 100));
            if i < 100 {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
            }
            fs::write(p, format!("{tag}{i}")).unwrap();
        }
        TreeListing::scan(&txn.stage_dir(), &[]).unwrap()
    };
    let ctx = PlanContext::new(&f.sd, &[]);
    let mut elapsed = Vec::new();
    for (tag, to) in [("a", "1.0.0"), ("b", "2.0.0")] {
        let txn = Transaction::begin(&f.sd, 1).unwrap();
        let listing = stage_release(&txn, tag);
        let start = std::time::Instant::now();
        let old = f.sd.load_state().unwrap();
        let plan = plan_full(&ctx, &txn.stage_dir(), listing, &old, v(to)).unwrap();
        let (out, labels) = record_steps(|| txn.apply(&plan, |_| Ok(())));
        out.unwrap();
        elapsed.push(start.elapsed());
        let journal_records = labels.iter().filter(|l| l.starts_with("journal ")).count();
        assert_eq!(journal_records, 4, "intent, applied, commit, done");
        assert_eq!(
            labels.iter().filter(|l| *l == "fsync directories").count(),
            1
        );
    }
    assert_eq!(read(&f.install, "d007/f9907"), "b9907");
    assert_eq!(f.sd.load_state().unwrap().files.len(), 10_000);
    // Generous: a debug build on a busy 2-core machine; per-file fsyncs would take far longer.
    assert!(
        elapsed[1] < std::time::Duration::from_secs(60),
        "{elapsed:?}"
    );
    eprintln!("10k-file install {:?}, update {:?}", elapsed[0], elapsed[1]);
}

/// Everything below `dir`, for "nothing in it was touched".
fn listing_of(dir: &Path) -> Tree {
    snapshot(dir, &[])
}

#[test]
fn recovery_never_discards_a_txn_without_a_journal_that_holds_a_backup_or_stage() {
    let f = Fixture::with_v1();
    // A patch interrupted mid-way whose journal was then lost.
    let (txn, plan) = f.prepare_patch(2);
    let dir = txn.dir().to_owned();
    assert!(crash_after_step(4, || txn.apply(&plan, |_| Ok(()))).is_none());
    fs::remove_file(dir.join("journal")).unwrap();
    let install_before = f.tree();
    let txn_before = listing_of(&dir);
    assert!(!listing_of(&dir.join("backup")).is_empty());

    let err = recover(&f.sd).unwrap_err();
    assert!(matches!(err, TxnError::UnprovenTxn { .. }), "{err}");
    assert_eq!(err.exit_class(), crate::error::ExitClass::RollbackFailed);
    let msg = err.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(
        msg.contains("journal is missing") && msg.contains("files in backup/"),
        "{msg}"
    );
    assert_eq!(f.tree(), install_before, "the install was touched");
    assert_eq!(
        listing_of(&dir),
        txn_before,
        "the transaction dir was touched"
    );

    // A filled stage without a journal is refused too; an empty one is provably unused.
    fs::remove_dir_all(&dir).unwrap();
    let (txn, _) = f.stage(V2, 2);
    fs::remove_file(txn.dir().join("journal")).unwrap();
    let err = recover(&f.sd).unwrap_err();
    assert!(err.to_string().contains("files in stage/"), "{err}");
    fs::remove_dir_all(txn.dir().join("stage")).unwrap();
    fs::create_dir(txn.dir().join("stage")).unwrap();
    let report = recover(&f.sd).unwrap().unwrap();
    assert_eq!(report.transactions[0].action, RecoveryAction::Discarded);

    // Something molt does not know in a journal-less dir is never thrown away.
    let odd = f.sd.txn_root().join("20260101T000000.000000000Z-abcdef01");
    fs::create_dir_all(odd.join("stage")).unwrap();
    fs::write(odd.join("notes"), "operator's").unwrap();
    let err = recover(&f.sd).unwrap_err();
    assert!(err.to_string().contains("\"notes\""), "{err}");
    assert_eq!(read(&odd, "notes"), "operator's");
}

#[test]
fn rollback_refuses_a_backup_missing_a_path_or_holding_another_file() {
    let f = Fixture::with_v1();
    f.patch(|_| Ok(())).unwrap();
    let kept = kept_transactions(&f.sd).unwrap().pop().unwrap();
    let at_new = f.tree();
    let state_before = f.sd.load_state().unwrap();

    let saved = kept.dir.join("backup/conf/legacy.yml");
    let body = fs::read(&saved).unwrap();
    fs::remove_file(&saved).unwrap();
    let err = rollback_last(&f.sd, 2, &[]).unwrap_err();
    assert!(matches!(err, TxnError::BackupIncomplete { .. }), "{err}");
    assert_eq!(err.exit_class(), crate::error::ExitClass::Failure);
    assert!(err.to_string().contains("conf/legacy.yml"), "{err}");
    assert_eq!(f.tree(), at_new);
    assert_eq!(f.sd.load_state().unwrap(), state_before);
    assert!(f.txn_dirs().is_empty());

    // A file inside a replaced directory, changed since it was backed up.
    fs::write(&saved, body).unwrap();
    fs::write(kept.dir.join("backup/web/img/logo.png"), "not the logo").unwrap();
    let err = rollback_last(&f.sd, 2, &[]).unwrap_err();
    assert!(err.to_string().contains("web/img/logo.png"), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert_eq!(f.tree(), at_new);

    fs::write(kept.dir.join("backup/web/img/logo.png"), "logo").unwrap();
    rollback_last(&f.sd, 2, &[]).unwrap();
    assert_eq!(f.version(), Some(v("1.0.0")));
}
