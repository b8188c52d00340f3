//! Recovery: finish or undo whatever an earlier process left in `txn/`.
//!
//! Decided from the journal alone: no intent ⇒ nothing was touched, drop the directory; intent
//! without commit ⇒ undo (whatever the apply or an earlier undo got through); commit without
//! done ⇒ roll forward by writing the state the commit record carries; done ⇒ archive. Every
//! branch is idempotent, so a crash during recovery is recovered by the next run.

use std::fmt;

use super::apply::{archive_done, finish_rolled_back};
use super::history::{dir_names, discard, sweep_discarded};
use super::journal::{self, Journal, Record};
use super::undo::undo;
use super::{TxnError, version_or_nothing};
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

/// How far an unfinished transaction got, as its journal says.
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

/// A transaction still in `txn/` (read without changing anything, for `molt status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTxn {
    pub id: String,
    pub kind: Option<TxnKind>,
    pub from: Option<Version>,
    pub to: Option<Version>,
    pub stage: PendingStage,
}

/// Transactions left in `txn/` (by a running or an interrupted molt), oldest first.
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
    let summary = journal::summarize(&journal_path)?;
    let Some(intent) = summary.intent else {
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
            undo(state.install_dir(), &dir.join("backup"), &intent).map_err(|e| {
                TxnError::RollbackFailed {
                    txn_dir: dir.clone(),
                    failure: "an interrupted update".to_owned(),
                    undo_error: e.to_string(),
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
