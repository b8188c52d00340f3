//! Recovery: finish or undo whatever an earlier process left in `txn/`.
//!
//! Decided from the journal: no intent ⇒ nothing was touched, drop the directory — but only when
//! that is provable (see [`unused_without_intent`]), never by guessing; intent without commit ⇒
//! undo (whatever the apply or an earlier undo got through); commit without done ⇒ roll forward
//! by writing the state the commit record carries; done ⇒ archive. Every branch is idempotent,
//! so a crash during recovery is recovered by the next run.

use std::fmt;
use std::path::Path;

use super::apply::{archive_done, finish_rolled_back};
use super::journal::{self, Journal, Record};
use super::kept::{dir_names, discard, sweep_discarded};
use super::undo::undo;
use super::{TxnError, version_or_nothing};
use crate::fsutil;
use crate::state::{Outcome, StateDir, TxnKind};
use crate::version::Version;

/// What recovery did with one interrupted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryAction {
    /// It never journaled an intent (nothing was touched); its directory was removed.
    Discarded,
    /// It had not committed; the old tree was restored.
    RolledBack,
    /// It had committed; the new state was written.
    RolledForward,
    /// It was complete; its backup was archived.
    Archived,
}

/// One transaction recovery dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTxn {
    pub id: String,
    /// `None` when no intent was journaled.
    pub kind: Option<TxnKind>,
    pub from: Option<Version>,
    pub to: Option<Version>,
    pub action: RecoveryAction,
}

impl fmt::Display for RecoveredTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(kind) = self.kind else {
            return write!(
                f,
                "removed an unfinished update ({}) that had changed nothing",
                self.id
            );
        };
        let what = if kind == TxnKind::Rollback {
            "rollback"
        } else {
            "update"
        };
        let action = match self.action {
            RecoveryAction::Discarded => "discarded",
            RecoveryAction::RolledBack => "rolled back",
            RecoveryAction::RolledForward => "completed",
            RecoveryAction::Archived => "archived",
        };
        write!(
            f,
            "recovered an interrupted {what} from {} to {}: {action}",
            version_or_nothing(&self.from),
            version_or_nothing(&self.to)
        )
    }
}

/// Everything recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub transactions: Vec<RecoveredTxn>,
}

/// How far an unfinished transaction got, as its journal says (what the crash tests check
/// before recovering; `molt status` recovers first, so it only ever reports what recovery did).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingStage {
    /// No intent journaled: still downloading or staging (nothing in the install touched).
    Staging,
    /// Intent journaled, not committed: recovery will roll it back.
    Applying,
    /// Committed, not done: recovery will roll it forward.
    Committed,
    /// Done or rolled back, only cleanup left.
    Finishing,
}

/// A transaction still in `txn/`, read without changing anything.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTxn {
    pub id: String,
    pub kind: Option<TxnKind>,
    pub from: Option<Version>,
    pub to: Option<Version>,
    pub stage: PendingStage,
}

/// Transactions left in `txn/` (by a running or an interrupted molt), oldest first.
#[cfg(test)]
pub fn pending(state: &StateDir) -> Result<Vec<PendingTxn>, TxnError> {
    let mut out = Vec::new();
    for id in dir_names(&state.txn_root())? {
        if id.starts_with('.') {
            continue;
        }
        let s = journal::summarize(&state.txn_root().join(&id).join("journal"))?;
        let stage = match (&s.intent, &s.commit, s.done || s.rolled_back.is_some()) {
            (None, ..) => PendingStage::Staging,
            (_, _, true) => PendingStage::Finishing,
            (_, Some(_), false) => PendingStage::Committed,
            (_, None, false) => PendingStage::Applying,
        };
        out.push(PendingTxn {
            kind: s.intent.as_ref().map(|i| i.kind),
            from: s.intent.as_ref().and_then(|i| i.from.clone()),
            to: s.intent.as_ref().and_then(|i| i.to.clone()),
            id,
            stage,
        });
    }
    Ok(out)
}

/// Recovers every transaction left in `txn/`; `None` if there was nothing to do.
pub fn recover(state: &StateDir) -> Result<Option<RecoveryReport>, TxnError> {
    sweep_discarded(&state.txn_root())?;
    sweep_discarded(&state.history_root())?;
    let mut transactions = Vec::new();
    for id in dir_names(&state.txn_root())? {
        if id.starts_with('.') {
            continue;
        }
        transactions.push(recover_one(state, &id)?);
    }
    Ok((!transactions.is_empty()).then_some(RecoveryReport { transactions }))
}

fn recover_one(state: &StateDir, id: &str) -> Result<RecoveredTxn, TxnError> {
    let dir = state.txn_root().join(id);
    let journal_path = dir.join("journal");
    let summary = match journal::summarize(&journal_path) {
        Ok(s) => s,
        // An unreadable journal may hold an intent: the install may be half-updated.
        Err(TxnError::JournalRead { .. }) => {
            return Err(TxnError::UnprovenTxn {
                holds: unused_without_intent(&dir, false)?
                    .unwrap_or_else(|| "nothing else".to_owned()),
                txn_dir: dir,
                journal: "its journal cannot be read",
            });
        }
        Err(e) => return Err(e),
    };
    let Some(intent) = summary.intent else {
        let has_journal =
            fsutil::exists(&journal_path).map_err(|source| TxnError::ReadHistory {
                path: journal_path.clone(),
                source,
            })?;
        if let Some(holds) = unused_without_intent(&dir, has_journal)? {
            return Err(TxnError::UnprovenTxn {
                txn_dir: dir,
                holds,
                journal: if has_journal {
                    "its journal has no intent record"
                } else {
                    "its journal is missing"
                },
            });
        }
        discard(&dir)?;
        return Ok(RecoveredTxn {
            id: id.to_owned(),
            kind: None,
            from: None,
            to: None,
            action: RecoveryAction::Discarded,
        });
    };
    let report = |action| RecoveredTxn {
        id: id.to_owned(),
        kind: Some(intent.kind),
        from: intent.from.clone(),
        to: intent.to.clone(),
        action,
    };

    // A rolled-back record wins over a commit record: it is only written after a commit append
    // that failed, and the undo already ran.
    match (&summary.rolled_back, &summary.commit) {
        (None, Some(new_state)) => {
            let mut j = Journal::open_append(&journal_path)?;
            let action = if summary.done {
                RecoveryAction::Archived
            } else {
                state.save_state(new_state)?;
                j.append(&Record::Done)?;
                RecoveryAction::RolledForward
            };
            archive_done(state, &dir, &intent)?;
            tracing::info!(txn = id, "recovery: {action:?}");
            Ok(report(action))
        }
        (rolled_back, _) => {
            undo(state.install_dir(), &dir.join("backup"), &intent).map_err(|undo_error| {
                TxnError::RollbackFailed {
                    txn_dir: dir.clone(),
                    failure: super::TxnFailure::Interrupted.to_string(),
                    undo_error,
                }
            })?;
            let (outcome, reason) = rolled_back.clone().unwrap_or((
                Outcome::Interrupted,
                "interrupted before commit; recovered at the next start".to_owned(),
            ));
            let mut j = Journal::open_append(&journal_path)?;
            finish_rolled_back(state, &dir, &intent, outcome, &reason, &mut j)?;
            Ok(report(RecoveryAction::RolledBack))
        }
    }
}

/// For a transaction directory without an intent record: `None` if it provably never touched
/// the install (so it may be removed), else what it holds that molt cannot account for.
///
/// Provable means: nothing but `journal`, `stage/` and `backup/` in it; `backup/` empty (old
/// files are only moved there after the intent is durable); and `stage/` empty unless the
/// journal exists — [`super::Transaction::begin`] creates the journal before anything is staged,
/// so a filled stage without one means the journal was lost, not that staging was interrupted.
fn unused_without_intent(dir: &Path, has_journal: bool) -> Result<Option<String>, TxnError> {
    let mut holds = Vec::new();
    for name in dir_names(dir)? {
        let path = dir.join(&name);
        match name.as_str() {
            "journal" => {}
            "stage" | "backup" => {
                let kind = fsutil::entry_kind(&path)
                    .map_err(|source| TxnError::ReadHistory { path, source })?;
                if kind != Some(fsutil::EntryKind::Dir) {
                    holds.push(format!("a {name} that is not a directory"));
                    continue;
                }
                let empty = dir_names(&dir.join(&name))?.is_empty();
                if !empty && (name == "backup" || !has_journal) {
                    holds.push(format!("files in {name}/"));
                }
            }
            other => holds.push(format!("an unknown entry {other:?}")),
        }
    }
    Ok((!holds.is_empty()).then(|| holds.join(" and ")))
}
