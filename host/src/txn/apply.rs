//! Running a plan as one transaction: journal the intent, rename, fsync, validate, commit, record
//! the new state, archive the backup for `molt rollback`.
//!
//! The durable steps are few and O(1) per op: one (large) intent record, two renames per op, one
//! parallel batch of fsyncs of the touched directories, a handful of small records. The files
//! themselves were fsynced when they were staged (`package::extract`), or are a kept backup.
//! Any failure before the commit record undoes everything and says so (exit 1); a failure of
//! the undo itself is a `RollbackFailed` error that names the transaction directory (exit 4).
//! After the commit record the update has happened: a failure to finish (state, `done` record,
//! archiving, pruning) is a warning in the outcome, and the next command's recovery finishes it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::journal::{Intent, Journal, Record};
use super::kept;
use super::plan::Plan;
use super::undo::undo;
use super::{Op, Source, TxnError, TxnFailure, ValidationError, version_or_nothing};
use crate::failpoint;
use crate::fsutil;
use crate::relpath::RelPath;
use crate::state::{InstallState, Outcome, StateDir, TxnKind};
use crate::tree::FileRecord;
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
    journal: Journal,
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
    /// `keep_backups` is 0, or when archiving it failed).
    pub kept_in: Option<PathBuf>,
    /// Housekeeping after the commit record that failed (the update itself happened; the next
    /// molt command finishes what is left): each a `TxnError::FinishFailed` with its causes.
    pub warnings: Vec<String>,
}

/// A transaction whose stage is filled and whose plan is made: nothing in the install has
/// changed yet. [`Staged::commit`] runs it; [`Staged::discard`] gives it up.
#[derive(Debug)]
pub struct Staged {
    txn: Transaction,
    plan: Plan,
}

/// Begins a transaction and lets `fill` put the new tree into its stage directory and plan
/// it. If `fill` fails, the transaction is given up (a failure to remove it is only logged: the
/// next recovery removes it) and `fill`'s error is returned, since that is what the operator
/// must see.
pub fn stage<E: From<TxnError>>(
    state: &StateDir,
    keep_backups: usize,
    fill: impl FnOnce(&Path) -> Result<Plan, E>,
) -> Result<Staged, E> {
    let txn = Transaction::begin(state, keep_backups)?;
    match fill(&txn.stage_dir()) {
        Ok(plan) => Ok(Staged { txn, plan }),
        Err(e) => {
            if let Err(d) = txn.abandon() {
                tracing::warn!("{d}; the next molt command removes it");
            }
            Err(e)
        }
    }
}

impl Staged {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// See [`Transaction::commit`].
    pub fn commit(
        self,
        validate: impl FnOnce(&Path) -> Result<(), ValidationFailure>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ApplyOutcome, TxnError> {
        self.txn.commit(self.plan, validate, progress)
    }

    /// Gives the transaction up without touching the install (`check`, `apply --dry-run`).
    pub(crate) fn discard(self) {
        if let Err(e) = self.txn.abandon() {
            tracing::warn!("{e}; the next molt command removes it");
        }
    }
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

/// Why the validators did not pass a new tree.
#[derive(Debug)]
pub enum ValidationFailure {
    /// A validator examined the tree and rejected it: the release is recorded as failed
    /// validation (and not chosen again unless asked for).
    Verdict(ValidationError),
    /// No verdict: a validator could not run to its end (it trapped, timed out, rejected its
    /// config). The update is undone all the same, but the release is not held against.
    NoVerdict(ValidationError),
}

impl Transaction {
    /// Creates `txn/<id>/{stage,backup}` and its (still empty) journal, durably: a directory
    /// whose journal exists but holds no intent is provably one that never touched the install,
    /// which lets recovery remove it. Nothing in the install is touched until `apply`; a
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
                    let journal = Journal::create(&dir.join("journal"))?;
                    failpoint::step(&format!("begin {id}")).map_err(|source| TxnError::Begin {
                        path: dir.clone(),
                        source,
                    })?;
                    return Ok(Transaction {
                        state: state.clone(),
                        id,
                        dir,
                        keep_backups,
                        journal,
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

    /// Gives up before `apply` (e.g. the download or extraction failed): removes the directory.
    pub fn abandon(self) -> Result<(), TxnError> {
        kept::discard(&self.dir)
    }

    /// Applies `plan`, runs `validate` on the new tree, and on success commits the state the
    /// plan leaves (see [`Transaction::commit`]); a validator's error is a verdict on the tree.
    pub fn apply(
        self,
        plan: &Plan,
        validate: impl FnOnce(&Path) -> Result<(), ValidationError>,
    ) -> Result<ApplyOutcome, TxnError> {
        self.commit(
            plan.clone(),
            |tree| validate(tree).map_err(ValidationFailure::Verdict),
            &mut |_, _| {},
        )
    }

    /// Applies `plan`, runs `validate` on the new tree and on success commits the next state:
    /// the current one with the plan's version, owned files and directories, and this
    /// transaction in the history log. On any failure before the commit record the old tree is
    /// restored; after it, the outcome is `Ok` and carries what failed as warnings. A
    /// [`ValidationFailure::NoVerdict`] is undone and recorded as `failed`, without marking the
    /// release as failed validation. `progress` is told the ops done of the ops in the plan as
    /// the install is changed.
    pub fn commit(
        self,
        plan: Plan,
        validate: impl FnOnce(&Path) -> Result<(), ValidationFailure>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ApplyOutcome, TxnError> {
        let to = plan.to.clone();
        self.run(
            plan,
            |current, files, dirs| InstallState {
                version: to,
                files,
                dirs,
                ..current.successor()
            },
            validate,
            progress,
        )
    }

    /// [`Transaction::commit`] with the next state made by `next_state` from the current one
    /// and the plan's owned files and directories (a rollback restores an earlier tree
    /// instead); the history entry is added here. The plan is taken apart into the journal's
    /// intent and the next state, not copied.
    pub(super) fn run(
        mut self,
        plan: Plan,
        next_state: impl FnOnce(
            &InstallState,
            BTreeMap<RelPath, FileRecord>,
            BTreeSet<RelPath>,
        ) -> InstallState,
        validate: impl FnOnce(&Path) -> Result<(), ValidationFailure>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ApplyOutcome, TxnError> {
        let old_state = self.state.load_state()?;
        let changes = plan.changes();
        let Plan {
            kind,
            from,
            to,
            ops,
            created_dirs,
            owned_files,
            owned_dirs,
            preserved_written,
            consumes,
            dir_modes,
            adopted,
            ..
        } = plan;
        let mut new_state = next_state(&old_state, owned_files, owned_dirs);
        let intent = Intent {
            id: self.id.clone(),
            kind,
            from,
            to,
            at: OffsetDateTime::now_utc(),
            ops,
            created_dirs,
            old_state,
            preserved_written,
            consumes,
            dir_modes,
            adopted,
        };
        new_state.record(intent.history_entry(Outcome::Applied, None));
        // Records own what they hold; they are taken apart again after the append rather than
        // cloned (at 66,000 files an intent is tens of megabytes).
        let record = Record::Intent(Box::new(intent));
        let appended = self.journal.append(&record);
        let Record::Intent(intent) = record else {
            unreachable!("built as an intent above")
        };
        let intent = *intent;
        if let Err(e) = appended {
            // The intent is not on disk, so nothing in the install was touched.
            if let Err(d) = kept::discard(&self.dir) {
                tracing::warn!("{d}; the next molt command removes it");
            }
            return Err(e);
        }

        let install_dir = self.state.install_dir().to_owned();
        if let Err(failure) = execute(&install_dir, &self.backup_dir(), &intent, progress) {
            return Err(self.fail(&intent, Failed::Step(failure)));
        }
        if let Err(e) = self.journal.append(&Record::Applied) {
            return Err(self.fail(&intent, Failed::Step(TxnFailure::Journal(Box::new(e)))));
        }
        if let Err(failure) = validate(&install_dir) {
            let failed = match failure {
                ValidationFailure::Verdict(reason) => Failed::Validation(reason),
                ValidationFailure::NoVerdict(reason) => Failed::NoVerdict(reason),
            };
            return Err(self.fail(&intent, failed));
        }
        let commit = Record::Commit {
            new_state: Box::new(new_state),
        };
        let appended = self.journal.append(&commit);
        let Record::Commit { new_state } = commit else {
            unreachable!("built as a commit above")
        };
        let new_state = *new_state;
        match appended {
            Ok(()) => {}
            // Undoing now could leave a durable commit over the old tree, which recovery would
            // roll forward: leave the tree alone and let recovery follow the journal.
            Err(e @ TxnError::JournalUncertain { .. }) => {
                return Err(TxnError::CommitUncertain {
                    to: version_or_nothing(&intent.to),
                    txn_dir: self.dir.clone(),
                    source: Box::new(e),
                });
            }
            Err(e) => {
                return Err(self.fail(&intent, Failed::Step(TxnFailure::Journal(Box::new(e)))));
            }
        }

        // Committed: from here on nothing may report the update as not having happened.
        let mut warnings = Vec::new();
        let kept_in = match finish_committed(
            &self.state,
            &self.dir,
            &intent,
            &new_state,
            &mut self.journal,
        ) {
            Ok(kept) => kept,
            Err((step, source)) => {
                warnings.push(TxnError::FinishFailed {
                    to: version_or_nothing(&intent.to),
                    txn_dir: self.dir.clone(),
                    step,
                    source: Box::new(source),
                });
                None
            }
        };
        if warnings.is_empty()
            && let Err(e) = kept::prune(&self.state, self.keep_backups)
        {
            warnings.push(TxnError::FinishFailed {
                to: version_or_nothing(&intent.to),
                txn_dir: self.state.history_root(),
                step: "removing backups beyond keep_backups",
                source: Box::new(e),
            });
        }
        let warnings = warnings.iter().map(|w| crate::error::chain(w)).collect();
        // Pruning with keep_backups = 0 removes the entry just archived.
        let kept_in = kept_in.filter(|p| p.exists());
        Ok(ApplyOutcome {
            id: self.id,
            kind: intent.kind,
            from: intent.from,
            to: intent.to,
            changes,
            kept_in,
            warnings,
        })
    }

    /// Undoes a failed transaction, records the outcome and builds the error to return.
    fn fail(&mut self, intent: &Intent, failed: Failed) -> TxnError {
        let install_dir = self.state.install_dir();
        if let Err(undo_error) = undo(install_dir, &self.backup_dir(), intent) {
            return TxnError::RollbackFailed {
                txn_dir: self.dir.clone(),
                failure: format!("\"{}\"", failed.report()),
                undo_error,
            };
        }
        let outcome = match failed {
            Failed::Validation(_) => Outcome::FailedValidation,
            Failed::Step(_) | Failed::NoVerdict(_) => Outcome::Failed,
        };
        let reason = failed.report();
        if let Err(e) = finish_rolled_back(
            &self.state,
            &self.dir,
            intent,
            outcome,
            &reason,
            &mut self.journal,
        ) {
            tracing::warn!("the install is restored, but recording that failed: {e}");
        }
        let (from, to) = (
            version_or_nothing(&intent.from),
            version_or_nothing(&intent.to),
        );
        match failed {
            Failed::Validation(reason) | Failed::NoVerdict(reason) => {
                TxnError::ValidationFailed { from, to, reason }
            }
            Failed::Step(cause) => TxnError::ApplyFailed {
                from,
                to,
                cause: Box::new(cause),
            },
        }
    }
}

/// Why [`Transaction::apply`] is undoing.
enum Failed {
    Step(TxnFailure),
    Validation(ValidationError),
    /// A validator that gave no verdict on the tree (see [`ValidationFailure::NoVerdict`]).
    NoVerdict(ValidationError),
}

impl Failed {
    /// The failure with its causes, for the journal, `state.json` and messages.
    fn report(&self) -> String {
        let err: &(dyn std::error::Error + 'static) = match self {
            Failed::Step(f) => f,
            Failed::Validation(v) | Failed::NoVerdict(v) => v.as_ref(),
        };
        crate::error::chain(err)
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
    restored.record(intent.history_entry(outcome, Some(reason.to_owned())));
    if outcome == Outcome::FailedValidation
        && let Some(to) = &intent.to
    {
        restored.mark_failed(to);
    }
    state.save_state(&restored)?;
    kept::discard(txn_dir)
}

/// After the commit record: write the new state, journal `done`, archive. Returns where the
/// backup is kept (`history/<id>`), if it is; on failure, which step failed and why.
pub(crate) fn finish_committed(
    state: &StateDir,
    txn_dir: &Path,
    intent: &Intent,
    new_state: &InstallState,
    journal: &mut Journal,
) -> Result<Option<PathBuf>, (&'static str, TxnError)> {
    state
        .save_state(new_state)
        .map_err(|e| ("writing the new state", e.into()))?;
    journal
        .append(&Record::Done)
        .map_err(|e| ("journaling done", e))?;
    archive_done(state, txn_dir, intent).map_err(|e| ("archiving the backup", e))
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
            kept::discard(&state.history_root().join(consumed))?;
        }
        kept::discard(txn_dir)?;
        return Ok(None);
    }
    let kept = state.history_root().join(&intent.id);
    kept::discard(&txn_dir.join("stage"))?;
    let moved = fsutil::rename_noreplace(txn_dir, &kept)
        .and_then(|()| fsutil::fsync_dir(&state.history_root()))
        .and_then(|()| fsutil::fsync_dir(&state.txn_root()))
        .and_then(|()| failpoint::step(&format!("archive {}", intent.id)));
    moved.map_err(|source| TxnError::Remove {
        path: txn_dir.to_owned(),
        source,
    })?;
    Ok(Some(kept))
}

/// Performs the intent's ops: deletes, created directories, puts; then fsyncs every touched
/// directory (in parallel, once each). `progress` is told the ops done of all ops.
fn execute(
    install_dir: &Path,
    backup_dir: &Path,
    intent: &Intent,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), TxnFailure> {
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut backup_dirs: HashSet<RelPath> = HashSet::new();
    let (puts, deletes): (Vec<&Op>, Vec<&Op>) =
        intent.ops.iter().partition(|op| op.source.is_some());
    let total = intent.ops.len() as u64;
    let mut done = 0;
    let mut step_done = || {
        done += 1;
        progress(done, total);
    };

    for op in deletes {
        move_to_backup(install_dir, backup_dir, op, &mut backup_dirs, &mut touched)?;
        step_done();
    }
    for d in &intent.created_dirs {
        let path = d.under(install_dir);
        let what = || format!("creating directory {}", path.display());
        match fsutil::create_dir(&path, FILLING_DIR_MODE) {
            Ok(true) => {}
            Ok(false) => {
                return Err(TxnFailure::step(
                    what(),
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "it appeared since planning",
                    ),
                ));
            }
            Err(e) => return Err(TxnFailure::step(what(), e)),
        }
        touch_parent(&mut touched, &path);
        failpoint::step(&format!("mkdir {d}")).map_err(|e| TxnFailure::step(what(), e))?;
    }
    for op in puts {
        if op.replaces_existing {
            move_to_backup(install_dir, backup_dir, op, &mut backup_dirs, &mut touched)?;
        }
        let Some(source) = op.source.as_ref().map(Source::path) else {
            continue;
        };
        let target = op.path.under(install_dir);
        let what = || {
            format!(
                "moving {} into place at {}",
                source.display(),
                target.display()
            )
        };
        fsutil::rename_noreplace(&source, &target).map_err(|e| TxnFailure::step(what(), e))?;
        touch_parent(&mut touched, &source);
        touch_parent(&mut touched, &target);
        failpoint::step(&format!("put {}", op.path)).map_err(|e| TxnFailure::step(what(), e))?;
        step_done();
    }
    for m in &intent.dir_modes {
        let path = m.path.under(install_dir);
        fsutil::set_mode(&path, m.mode)
            .map_err(|e| TxnFailure::step(format!("setting the mode of {}", path.display()), e))?;
        touched.insert(path);
    }
    fsutil::fsync_dirs(&touched, false)
        .map_err(|(dir, e)| TxnFailure::step(format!("fsyncing directory {}", dir.display()), e))?;
    failpoint::step("fsync directories").map_err(|e| {
        TxnFailure::step(
            format!("fsyncing directories of {}", install_dir.display()),
            e,
        )
    })
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
) -> Result<(), TxnFailure> {
    for a in op.path.ancestors() {
        if backup_dirs.contains(&a) {
            continue;
        }
        let path = a.under(backup_dir);
        fsutil::create_dir(&path, 0o700).map_err(|e| {
            TxnFailure::step(format!("creating backup directory {}", path.display()), e)
        })?;
        touch_parent(touched, &path);
        backup_dirs.insert(a);
    }
    let target = op.path.under(install_dir);
    let saved = op.path.under(backup_dir);
    let what = || {
        format!(
            "moving {} to the backup {}",
            target.display(),
            saved.display()
        )
    };
    fsutil::rename_noreplace(&target, &saved).map_err(|e| TxnFailure::step(what(), e))?;
    touch_parent(touched, &target);
    touch_parent(touched, &saved);
    failpoint::step(&format!("backup {}", op.path)).map_err(|e| TxnFailure::step(what(), e))
}
