//! Running a plan as one transaction: journal the intent, rename, fsync, validate, commit, record
//! the new state, archive the backup for `molt rollback`.
//!
//! The durable steps are few and O(1) per op: one (large) intent record, two renames per op, one
//! fsync per touched directory (deduplicated), a handful of small records. Nothing is fsynced
//! per file. Any failure before the commit record undoes everything and says so; a failure of
//! the undo itself is a `RollbackFailed` error that names the transaction directory.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::fsutil;
use super::history;
use super::journal::{Intent, Journal, Record};
use super::plan::Plan;
use super::undo::undo;
use super::{Op, TxnError, version_or_nothing};
use crate::failpoint;
use crate::relpath::RelPath;
use crate::state::{HistoryEntry, InstallState, Outcome, StateDir, TxnKind};
use crate::version::Version;

/// Mode of a directory while the transaction fills it; its own mode (`Intent::dir_modes`) is
/// set once every put is done, so a read-only directory can still be filled.
const FILLING_DIR_MODE: u32 = 0o700;

/// A transaction in `txn/<id>/`: its stage is filled by the caller, then [`Transaction::apply`]
/// runs a plan.
#[derive(Debug)]
pub struct Transaction {
    state: StateDir,
    id: String,
    dir: PathBuf,
    keep_backups: usize,
}

/// A successfully applied transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub id: String,
    pub kind: TxnKind,
    pub from: Option<Version>,
    pub to: Option<Version>,
    /// Primitive ops executed (puts and deletes) and directories created.
    pub changes: usize,
    /// Where the backup is kept for `molt rollback` (`None` for a rollback, or when
    /// `keep_backups` is 0).
    pub kept_in: Option<PathBuf>,
}

/// A new, sortable transaction id: UTC time to the nanosecond plus a random suffix.
fn new_txn_id() -> String {
    let now = OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond(),
        fsutil::random_suffix()
    )
}

impl Transaction {
    /// Creates `txn/<id>/{stage,backup}`. Nothing in the install is touched until `apply`; a
    /// transaction abandoned before that is removed by the next recovery.
    pub fn begin(state: &StateDir, keep_backups: usize) -> Result<Self, TxnError> {
        loop {
            let id = new_txn_id();
            let dir = state.txn_root().join(&id);
            match fsutil::create_dir(&dir, 0o700) {
                Ok(true) => {
                    for sub in ["stage", "backup"] {
                        let p = dir.join(sub);
                        fsutil::create_dir(&p, 0o700)
                            .map_err(|source| TxnError::Begin { path: p, source })?;
                    }
                    return Ok(Transaction {
                        state: state.clone(),
                        id,
                        dir,
                        keep_backups,
                    });
                }
                Ok(false) => continue,
                Err(source) => return Err(TxnError::Begin { path: dir, source }),
            }
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `txn/<id>/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the package is extracted before the plan is made.
    pub fn stage_dir(&self) -> PathBuf {
        self.dir.join("stage")
    }

    fn backup_dir(&self) -> PathBuf {
        self.dir.join("backup")
    }

    /// The state after `plan` succeeds: `current` with the plan's version and owned files, and
    /// this transaction appended to the history log.
    pub fn next_state(&self, plan: &Plan, current: &InstallState) -> InstallState {
        let mut next = current.clone();
        next.version = plan.to.clone();
        next.files = plan.owned_files.clone();
        next.dirs = plan.owned_dirs.clone();
        next.record(HistoryEntry {
            id: self.id.clone(),
            at: OffsetDateTime::now_utc(),
            kind: plan.kind,
            from: plan.from.clone(),
            to: plan.to.clone(),
            outcome: Outcome::Applied,
            reason: None,
        });
        next
    }

    /// Gives up before `apply` (e.g. the download or extraction failed): removes the directory.
    pub fn abandon(self) -> Result<(), TxnError> {
        history::discard(&self.dir)
    }

    /// Applies `plan`, runs `validate` on the new tree, and on success commits `new_state`
    /// (see [`Transaction::next_state`]). On any failure the old tree is restored.
    pub fn apply(
        self,
        plan: &Plan,
        new_state: InstallState,
        validate: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<ApplyOutcome, TxnError> {
        let old_state = self.state.load_state()?;
        let intent = Intent {
            id: self.id.clone(),
            kind: plan.kind,
            from: plan.from.clone(),
            to: plan.to.clone(),
            at: OffsetDateTime::now_utc(),
            ops: plan.ops.clone(),
            created_dirs: plan.created_dirs.clone(),
            old_state,
            preserved_written: plan.preserved_written.clone(),
            consumes: plan.consumes.clone(),
            dir_modes: plan.dir_modes.clone(),
            adopted: plan.adopted.clone(),
        };
        let journal_path = self.dir.join("journal");
        let begun = Journal::create(&journal_path).and_then(|mut j| {
            j.append(&Record::Intent(Box::new(intent.clone())))
                .map(|()| j)
        });
        let mut journal = match begun {
            Ok(j) => j,
            Err(e) => {
                // Nothing in the install was touched.
                let _ = history::discard(&self.dir);
                return Err(e);
            }
        };

        let install_dir = self.state.install_dir().to_owned();
        if let Err(step) = execute(&install_dir, &self.backup_dir(), &intent) {
            return Err(self.fail(&mut journal, &intent, Outcome::Failed, step));
        }
        if let Err(e) = journal.append(&Record::Applied) {
            return Err(self.fail(&mut journal, &intent, Outcome::Failed, e.to_string()));
        }
        if let Err(reason) = validate(&install_dir) {
            return Err(self.fail(&mut journal, &intent, Outcome::FailedValidation, reason));
        }
        let commit = Record::Commit {
            new_state: Box::new(new_state.clone()),
        };
        match journal.append(&commit) {
            Ok(()) => {}
            // Undoing now could leave a durable commit over the old tree, which recovery would
            // roll forward: leave the tree alone and let recovery follow the journal.
            Err(e @ TxnError::JournalUncertain { .. }) => {
                return Err(TxnError::CommitUncertain {
                    to: version_or_nothing(&intent.to),
                    txn_dir: self.dir.clone(),
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(self.fail(&mut journal, &intent, Outcome::Failed, e.to_string())),
        }

        let kept_in = finish_committed(&self.state, &self.dir, &intent, &new_state, &mut journal)
            .map_err(|step| TxnError::FinishFailed {
            to: version_or_nothing(&intent.to),
            txn_dir: self.dir.clone(),
            step,
        })?;
        if let Err(e) = history::prune(&self.state, self.keep_backups) {
            tracing::warn!("could not prune kept backups: {e}");
        }
        let kept_in = kept_in.filter(|p| p.exists());
        Ok(ApplyOutcome {
            id: self.id,
            kind: intent.kind,
            from: intent.from,
            to: intent.to,
            changes: plan.changes(),
            kept_in,
        })
    }

    /// Undoes a failed transaction, records the outcome and builds the error to return.
    fn fail(
        &self,
        journal: &mut Journal,
        intent: &Intent,
        outcome: Outcome,
        reason: String,
    ) -> TxnError {
        let install_dir = self.state.install_dir();
        if let Err(e) = undo(install_dir, &self.backup_dir(), intent) {
            return TxnError::RollbackFailed {
                txn_dir: self.dir.clone(),
                failure: reason,
                undo_error: e.to_string(),
            };
        }
        if let Err(e) =
            finish_rolled_back(&self.state, &self.dir, intent, outcome, &reason, journal)
        {
            tracing::warn!("the install is restored, but recording that failed: {e}");
        }
        let (from, to) = (
            version_or_nothing(&intent.from),
            version_or_nothing(&intent.to),
        );
        match outcome {
            Outcome::FailedValidation => TxnError::ValidationFailed { from, to, reason },
            _ => TxnError::ApplyFailed {
                from,
                to,
                step: reason,
            },
        }
    }
}

/// After a successful undo: journal it, record the outcome in `state.json` (from the intent's
/// old state, so running this twice is harmless) and discard the transaction directory.
pub(crate) fn finish_rolled_back(
    state: &StateDir,
    txn_dir: &Path,
    intent: &Intent,
    outcome: Outcome,
    reason: &str,
    journal: &mut Journal,
) -> Result<(), TxnError> {
    journal.append(&Record::RolledBack {
        outcome,
        reason: reason.to_owned(),
    })?;
    let mut restored = intent.old_state.clone();
    restored.record(HistoryEntry {
        id: intent.id.clone(),
        at: OffsetDateTime::now_utc(),
        kind: intent.kind,
        from: intent.from.clone(),
        to: intent.to.clone(),
        outcome,
        reason: Some(reason.to_owned()),
    });
    if outcome == Outcome::FailedValidation
        && let Some(to) = &intent.to
    {
        restored.mark_failed(to);
    }
    state.save_state(&restored)?;
    history::discard(txn_dir)
}

/// After the commit record: write the new state, journal `done`, archive. Returns where the
/// backup is kept (`history/<id>`), if it is.
pub(crate) fn finish_committed(
    state: &StateDir,
    txn_dir: &Path,
    intent: &Intent,
    new_state: &InstallState,
    journal: &mut Journal,
) -> Result<Option<PathBuf>, String> {
    state
        .save_state(new_state)
        .map_err(|e| format!("writing the new state: {e}"))?;
    journal
        .append(&Record::Done)
        .map_err(|e| format!("journaling done: {e}"))?;
    archive_done(state, txn_dir, intent).map_err(|e| format!("archiving the backup: {e}"))
}

/// Moves a done transaction out of `txn/`: an update's backup goes to `history/<id>` (its stage
/// is dropped); a rollback consumed its history entry, which is removed with the transaction.
pub(crate) fn archive_done(
    state: &StateDir,
    txn_dir: &Path,
    intent: &Intent,
) -> Result<Option<PathBuf>, TxnError> {
    if intent.kind == TxnKind::Rollback {
        if let Some(consumed) = &intent.consumes {
            history::discard(&state.history_root().join(consumed))?;
        }
        history::discard(txn_dir)?;
        return Ok(None);
    }
    let kept = state.history_root().join(&intent.id);
    history::discard(&txn_dir.join("stage"))?;
    let moved = fsutil::rename_noreplace(txn_dir, &kept)
        .and_then(|()| fsutil::fsync_dir(&state.history_root()))
        .and_then(|()| fsutil::fsync_dir(&state.txn_root()));
    moved.map_err(|source| TxnError::Remove {
        path: txn_dir.to_owned(),
        source,
    })?;
    failpoint::step(&format!("archive {}", intent.id));
    Ok(Some(kept))
}

/// Performs the intent's ops: deletes, created directories, puts; then fsyncs every touched
/// directory once. Returns a description of the failed step.
fn execute(install_dir: &Path, backup_dir: &Path, intent: &Intent) -> Result<(), String> {
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut backup_dirs: HashSet<RelPath> = HashSet::new();
    let (puts, deletes): (Vec<&Op>, Vec<&Op>) =
        intent.ops.iter().partition(|op| op.source.is_some());

    for op in deletes {
        move_to_backup(install_dir, backup_dir, op, &mut backup_dirs, &mut touched)?;
    }
    for d in &intent.created_dirs {
        let path = d.under(install_dir);
        match fsutil::create_dir(&path, FILLING_DIR_MODE) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "creating {}: it appeared since planning",
                    path.display()
                ));
            }
            Err(e) => return Err(format!("creating directory {}: {e}", path.display())),
        }
        touch_parent(&mut touched, &path);
        failpoint::step(&format!("mkdir {d}"));
    }
    for op in puts {
        if op.replaces_existing {
            move_to_backup(install_dir, backup_dir, op, &mut backup_dirs, &mut touched)?;
        }
        let Some(source) = &op.source else { continue };
        let target = op.path.under(install_dir);
        fsutil::rename_noreplace(source, &target).map_err(|e| {
            format!(
                "moving {} into place at {}: {e}",
                source.display(),
                target.display()
            )
        })?;
        touch_parent(&mut touched, source);
        touch_parent(&mut touched, &target);
        failpoint::step(&format!("put {}", op.path));
    }
    for m in &intent.dir_modes {
        let path = m.path.under(install_dir);
        fsutil::set_mode(&path, m.mode)
            .map_err(|e| format!("setting the mode of {}: {e}", path.display()))?;
        touched.insert(path);
    }
    for dir in &touched {
        fsutil::fsync_dir(dir).map_err(|e| format!("fsyncing directory {}: {e}", dir.display()))?;
    }
    failpoint::step("fsync directories");
    Ok(())
}

fn touch_parent(touched: &mut BTreeSet<PathBuf>, path: &Path) {
    if let Some(p) = path.parent() {
        touched.insert(p.to_owned());
    }
}

fn move_to_backup(
    install_dir: &Path,
    backup_dir: &Path,
    op: &Op,
    backup_dirs: &mut HashSet<RelPath>,
    touched: &mut BTreeSet<PathBuf>,
) -> Result<(), String> {
    for a in op.path.ancestors() {
        if backup_dirs.contains(&a) {
            continue;
        }
        let path = a.under(backup_dir);
        fsutil::create_dir(&path, 0o700)
            .map_err(|e| format!("creating backup directory {}: {e}", path.display()))?;
        touch_parent(touched, &path);
        backup_dirs.insert(a);
    }
    let target = op.path.under(install_dir);
    let saved = op.path.under(backup_dir);
    fsutil::rename_noreplace(&target, &saved).map_err(|e| {
        format!(
            "moving {} to the backup {}: {e}",
            target.display(),
            saved.display()
        )
    })?;
    touch_parent(touched, &target);
    touch_parent(touched, &saved);
    failpoint::step(&format!("backup {}", op.path));
    Ok(())
}
