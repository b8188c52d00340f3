//! `molt rollback`: undo the newest kept update from its backup.
//!
//! A rollback is an ordinary journaled transaction whose sources are a kept backup, so a crash
//! in the middle of it is recovered like any other. It restores the exact owned-file state the
//! rolled-back update started from (recorded in that update's intent), notes the version it left
//! in `rolled_back_from`, and consumes the kept entry, so the next rollback goes one further back.

use std::collections::HashSet;
use std::path::Path;

use super::apply::Transaction;
use super::journal;
use super::kept::kept_ids;
use super::plan::{PlanContext, plan_inverse};
use super::{TxnError, version_or_nothing};
use crate::fsutil::{self, EntryKind};
use crate::hashing::sha256_file_and_size;
use crate::relpath::RelPath;
use crate::state::{Outcome, StateDir};
use crate::version::Version;

/// A finished `molt rollback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RollbackOutcome {
    /// The rollback's own transaction id.
    pub id: String,
    /// The version that was installed before.
    pub from: Option<Version>,
    /// The version installed now.
    pub to: Option<Version>,
    /// The kept transaction that was undone (and whose backup is now used up).
    pub consumed: String,
    /// Entries molt does not own that stayed in place.
    pub kept_unowned: Vec<RelPath>,
    /// Preserved paths the rollback left alone.
    pub skipped_preserved: Vec<RelPath>,
    /// Housekeeping after the commit record that failed (see [`super::ApplyOutcome`]).
    pub warnings: Vec<String>,
}

/// Rolls the install back to the release before the newest kept update, exactly — except what
/// molt does not own (files added since, `preserve`d paths), which stays as it is.
pub(crate) fn rollback_last(
    state: &StateDir,
    keep_backups: usize,
    preserve: &[RelPath],
) -> Result<RollbackOutcome, TxnError> {
    let newest = kept_ids(state)?
        .pop()
        .ok_or(TxnError::NoBackup { keep_backups })?;
    let kept_dir = state.history_root().join(&newest);
    let journal_path = kept_dir.join("journal");
    let intent =
        journal::summarize(&journal_path)?
            .intent
            .ok_or(TxnError::JournalWithoutIntent {
                path: journal_path.clone(),
            })?;
    let current = state.load_state()?;
    if current.version != intent.to {
        return Err(TxnError::HistoryMismatch {
            id: newest,
            expected: version_or_nothing(&intent.to),
            installed: version_or_nothing(&current.version),
        });
    }

    verify_backup(&kept_dir.join("backup"), &intent)?;
    let ctx = PlanContext::new(state, preserve);
    let mut plan = plan_inverse(&ctx, &intent, &current, &kept_dir.join("backup"), &newest)?;
    let txn = Transaction::begin(state, keep_backups)?;

    let kept_unowned = std::mem::take(&mut plan.kept_unowned);
    let skipped_preserved = std::mem::take(&mut plan.skipped_preserved);
    let applied = txn.run(
        plan,
        |now, _, _| {
            let mut restored = now.successor();
            restored.version = intent.old_state.version.clone();
            restored.files = intent.old_state.files.clone();
            restored.dirs = intent.old_state.dirs.clone();
            for entry in restored.history.iter_mut().filter(|e| e.id == newest) {
                entry.outcome = Outcome::RolledBack;
            }
            if let Some(left) = &intent.to {
                restored.mark_rolled_back_from(left);
            }
            restored
        },
        |_| Ok(()),
        &mut |_, _| {},
    )?;
    Ok(RollbackOutcome {
        id: applied.id,
        from: applied.from,
        to: applied.to,
        consumed: newest,
        kept_unowned,
        skipped_preserved,
        warnings: applied.warnings,
    })
}

/// Checks, before anything moves, that a kept backup holds everything its update moved out of
/// the install: every replaced or deleted path, of the kind it was, and every file molt owned
/// there with its recorded size and SHA-256. A rollback from a backup missing any of them would
/// delete the new files without putting the old ones back.
fn verify_backup(backup: &Path, intent: &journal::Intent) -> Result<(), TxnError> {
    let incomplete = |path: &RelPath, detail: String| TxnError::BackupIncomplete {
        backup: backup.to_owned(),
        path: path.clone(),
        detail,
    };
    let inspect = |path: &Path, source| TxnError::ReadHistory {
        path: path.to_owned(),
        source,
    };
    let old = &intent.old_state;
    let mut moved_out = HashSet::new();
    for op in intent.ops.iter().filter(|op| op.replaces_existing) {
        let saved = op.path.under(backup);
        let kind = fsutil::entry_kind(&saved).map_err(|e| inspect(&saved, e))?;
        let expected = if let Some(record) = old.files.get(&op.path) {
            Some(if record.is_link() {
                EntryKind::Symlink
            } else {
                EntryKind::File
            })
        } else if old.dirs.contains(&op.path) {
            Some(EntryKind::Dir)
        } else {
            None
        };
        match (kind, expected) {
            (None, _) => return Err(incomplete(&op.path, String::new())),
            (Some(k), Some(e)) if k != e => {
                return Err(incomplete(
                    &op.path,
                    format!(" (it holds a {k:?} where a {e:?} was)").to_lowercase(),
                ));
            }
            _ => {}
        }
        moved_out.insert(op.path.clone());
    }
    for (path, record) in &old.files {
        let in_backup =
            moved_out.contains(path) || path.ancestors().any(|a| moved_out.contains(&a));
        if !in_backup {
            continue;
        }
        let saved = path.under(backup);
        match (
            fsutil::entry_kind(&saved).map_err(|e| inspect(&saved, e))?,
            &record.link,
        ) {
            (Some(EntryKind::File), None) => {}
            // A link is checked by its target (never followed).
            (Some(EntryKind::Symlink), Some(target)) => {
                let now = std::fs::read_link(&saved).map_err(|e| inspect(&saved, e))?;
                if now.as_os_str() != target.as_str() {
                    return Err(incomplete(
                        path,
                        format!(" as recorded (a link to {target:?}; the backup's is to {now:?})"),
                    ));
                }
                continue;
            }
            _ => return Err(incomplete(path, String::new())),
        }
        let (sha256, size) = sha256_file_and_size(&saved).map_err(|e| inspect(&saved, e))?;
        if size != record.size || sha256 != record.sha256 {
            return Err(incomplete(
                path,
                format!(
                    " as recorded ({} bytes, sha256 {}; the backup's copy has {size} bytes, \
                     sha256 {sha256})",
                    record.size, record.sha256
                ),
            ));
        }
    }
    Ok(())
}
