//! The journaled, crash-safe transaction that changes an install.
//!
//! An update (or a `molt rollback`) is planned as a list of primitive ops — "put `source` at
//! `path`, moving whatever is there into `backup/path` first", or with no source, a delete — and
//! applied by renames only. The full op list is journaled (fsynced) before the first rename, so
//! after a crash at any point the intent plus the filesystem say exactly how to undo; once the
//! `commit` record (which carries the new `state.json`) is durable, recovery rolls forward
//! instead. See `docs/ARCHITECTURE.md`, "Transaction model".
//!
//! Every function here expects the caller to hold [`crate::state::StateDir::lock`].
//!
//! - [`plan`]: build ops from a patch, a full package, or a kept backup.
//! - [`apply`]: run a plan as a transaction (journal, renames, fsync, validate, commit, archive).
//! - [`undo`]: put the old tree back from the intent and the filesystem (idempotent).
//! - [`recover`]: finish or undo whatever a previous process left in `txn/`.
//! - [`kept`]: kept transactions in `history/` (listing, pruning, crash-safe removal); "history"
//!   alone is the log in `state.json`.
//! - [`rollback`]: `molt rollback`, a transaction whose sources are a kept backup.

pub mod apply;
pub mod journal;
pub mod kept;
pub mod plan;
pub mod recover;
pub(crate) mod rollback;
pub mod undo;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ExitClass;
use crate::relpath::RelPath;
use crate::state::StateError;
use crate::version::Version;
use undo::UndoError;

pub use crate::state::{Outcome, TxnKind};
pub use apply::{ApplyOutcome, Staged, Transaction, ValidationFailure, stage};
pub(crate) use kept::kept_transactions;
pub(crate) use plan::plan_patch;
pub use plan::{Plan, PlanContext, PlanError, plan_full};
#[cfg(test)]
pub(crate) use recover::{PendingStage, pending};
pub use recover::{RecoveredTxn, RecoveryAction, RecoveryReport, recover};
pub(crate) use rollback::rollback_last;

/// One primitive operation: put `source` at `path` (moving what is there into the backup
/// first), or with `source: None`, move what is at `path` into the backup (a delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub path: RelPath,
    /// Whether the entry being put (or deleted) is a whole directory.
    pub is_dir: bool,
    /// Where the new entry comes from (in `stage/`, or a kept `backup/` for a rollback).
    pub source: Option<Source>,
    /// Whether something was at `path` when the plan was made (so it goes to the backup).
    pub replaces_existing: bool,
}

/// The mode a transaction gives a directory: one it creates (`old: None`), or one molt owns
/// and keeps in place while replacing its contents (`old` is the mode to restore on undo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMode {
    pub path: RelPath,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<u32>,
}

/// Renders an optional version for messages ("nothing" for an empty install).
pub(crate) fn version_or_nothing(v: &Option<Version>) -> String {
    v.as_ref()
        .map_or_else(|| "nothing".to_owned(), ToString::to_string)
}

/// Why a validator rejected the new tree (the validator's own typed error, with its chain).
pub(crate) type ValidationError = Box<dyn std::error::Error + Send + Sync>;

/// What made a transaction fail before its commit record (it was undone).
#[derive(Debug, thiserror::Error)]
pub enum TxnFailure {
    /// A filesystem step: what was being done, and the error it got.
    #[error("{what}: {source}")]
    Step {
        what: String,
        source: std::io::Error,
    },
    /// A journal append (cut off again, so it is certainly not on disk).
    #[error(transparent)]
    Journal(Box<TxnError>),
    /// The process ended before commit; recovery undid it.
    #[error("an interrupted update")]
    Interrupted,
}

impl TxnFailure {
    pub(crate) fn step(what: String, source: std::io::Error) -> Self {
        TxnFailure::Step { what, source }
    }
}

/// Why a transaction could not run, or how it ended when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot create transaction directory {path}: {source}")]
    Begin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write journal {path}: {source}")]
    JournalWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write journal {path}: {source}; nor cut the failed record off again, so it may \
         be on disk"
    )]
    JournalUncertain {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read journal {path}: {source}")]
    JournalRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "journal {path} is corrupt at line {line} ({problem}); the install may be half-updated: \
         inspect {path} and the backup/ next to it, restore by hand, then remove that directory"
    )]
    JournalCorrupt {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("journal {path} has no intent record; the kept transaction cannot be used")]
    JournalWithoutIntent { path: PathBuf },
    #[error("update from {from} to {to} failed while {cause}; the install was restored to {from}")]
    ApplyFailed {
        from: String,
        to: String,
        #[source]
        cause: Box<TxnFailure>,
    },
    #[error("validation of {to} failed: {reason}; the install was restored to {from}")]
    ValidationFailed {
        from: String,
        to: String,
        #[source]
        reason: ValidationError,
    },
    #[error(
        "restoring the install after {failure} failed: {undo_error}. Manual attention needed: \
         the transaction is in {txn_dir} (journal lists every change; backup/ holds the old \
         files). molt retries the undo on its next run; if that keeps failing, move the entries \
         of backup/ back into the install by hand and remove {txn_dir}"
    )]
    RollbackFailed {
        txn_dir: PathBuf,
        failure: String,
        #[source]
        undo_error: UndoError,
    },
    #[error(
        "the update to {to} is committed, but {step} failed; the next molt command finishes \
         it (transaction {txn_dir})"
    )]
    FinishFailed {
        to: String,
        txn_dir: PathBuf,
        step: &'static str,
        #[source]
        source: Box<TxnError>,
    },
    #[error(
        "the update to {to} passed validation, but whether its commit record reached the disk is \
         unknown ({source}); the new tree is left in place. Check the disk: the next molt command \
         completes or undoes transaction {txn_dir}, whichever its journal says"
    )]
    CommitUncertain {
        to: String,
        txn_dir: PathBuf,
        #[source]
        source: Box<TxnError>,
    },
    #[error(
        "transaction directory {txn_dir} holds {holds}, but {journal}: molt cannot prove the \
         install was left untouched, so it changes nothing. Compare its backup/ and stage/ with \
         the install (put back from backup/ what is missing there), then remove {txn_dir}"
    )]
    UnprovenTxn {
        txn_dir: PathBuf,
        holds: String,
        /// What is wrong with the journal ("its journal is missing", ...).
        journal: &'static str,
    },
    #[error(
        "the kept backup {backup} lacks {path}, which its update replaced{detail}; refusing to \
         roll back (nothing was changed)"
    )]
    BackupIncomplete {
        backup: PathBuf,
        path: RelPath,
        detail: String,
    },
    #[error("cannot read kept transactions in {path}: {source}")]
    ReadHistory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no kept backup to roll back to (keep_backups = {keep_backups})")]
    NoBackup { keep_backups: usize },
    #[error(
        "the newest kept backup ({id}) is of the update to {expected}, but {installed} is \
         installed; refusing to roll back"
    )]
    HistoryMismatch {
        id: String,
        expected: String,
        installed: String,
    },
}

impl TxnError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            TxnError::State(e) => e.exit_class(),
            TxnError::Plan(e) => e.exit_class(),
            TxnError::RollbackFailed { .. }
            | TxnError::JournalCorrupt { .. }
            | TxnError::CommitUncertain { .. }
            | TxnError::UnprovenTxn { .. } => ExitClass::RollbackFailed,
            _ => ExitClass::Failure,
        }
    }
}

/// Where a put's new entry comes from: its own path below `root` (the stage, or a kept backup
/// for a rollback). A plan's sources share one `root` and each shares its op's path, so a source
/// costs no allocation of its own: an absolute path per op took 11 MB at 66,000 files. Written
/// to the journal as the absolute path; one read back holds that path as its root.
#[derive(Debug, Clone)]
pub struct Source {
    root: Arc<Path>,
    rel: Option<RelPath>,
}

impl Source {
    /// `rel` below `root`.
    pub(crate) fn under(root: &Arc<Path>, rel: &RelPath) -> Self {
        Source {
            root: Arc::clone(root),
            rel: Some(rel.clone()),
        }
    }

    /// The absolute path of the entry.
    pub fn path(&self) -> PathBuf {
        match &self.rel {
            Some(rel) => rel.under(&self.root),
            None => self.root.to_path_buf(),
        }
    }
}

impl From<&Path> for Source {
    fn from(path: &Path) -> Self {
        Source {
            root: Arc::from(path),
            rel: None,
        }
    }
}

impl PartialEq for Source {
    fn eq(&self, other: &Source) -> bool {
        self.path() == other.path()
    }
}

impl Eq for Source {}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.path().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Source::from(PathBuf::deserialize(d)?.as_path()))
    }
}
