//! Undo: put the old tree back using only a transaction's intent and what is on disk.
//!
//! Each op's progress is visible on disk (was the old entry moved to `backup/`? was the source
//! moved into place?), so undo needs no record of how far the apply got. It is idempotent and
//! safe after a crash at any point — including a crash in an earlier undo: ops are reversed
//! puts first, then created directories are removed (deepest first, only when empty), then
//! deletes, mirroring the apply order.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Op;
use super::journal::Intent;
use crate::failpoint;
use crate::fsutil;

/// Why undo stopped (the caller turns this into a `RollbackFailed` error).
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error("cannot move {from} back to {to}: {source}")]
    MoveBack {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot restore {path}: it exists and so does its backup {backup}")]
    BothPresent { path: PathBuf, backup: PathBuf },
    #[error("cannot inspect {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("cannot remove created directory {path}: {source}")]
    RemoveDir { path: PathBuf, source: io::Error },
    #[error("cannot set the mode of {path}: {source}")]
    Mode { path: PathBuf, source: io::Error },
    #[error("cannot fsync directory {path}: {source}")]
    Fsync { path: PathBuf, source: io::Error },
}

impl UndoError {
    /// An undo that stopped leaves the install needing attention.
    pub fn exit_class(&self) -> crate::error::ExitClass {
        crate::error::ExitClass::RollbackFailed
    }
}

/// Restores the tree `intent` was applied to; `backup_dir` is the transaction's `backup/`.
pub fn undo(install_dir: &Path, backup_dir: &Path, intent: &Intent) -> Result<(), UndoError> {
    let mut touched = BTreeSet::new();
    // Modes first: a created directory gets back the mode it was filled with, so it can be
    // emptied; a kept one gets back its old mode.
    for m in &intent.dir_modes {
        let path = m.path.under(install_dir);
        if fsutil::entry_kind(&path).ok().flatten() != Some(fsutil::EntryKind::Dir) {
            continue;
        }
        let mode = m.old.unwrap_or(0o700);
        fsutil::set_mode(&path, mode).map_err(|source| UndoError::Mode {
            path: path.clone(),
            source,
        })?;
        touched.insert(path);
    }
    let (puts, deletes): (Vec<&Op>, Vec<&Op>) =
        intent.ops.iter().partition(|op| op.source.is_some());
    for op in puts.iter().rev() {
        undo_op(install_dir, backup_dir, op, &mut touched)?;
    }
    for d in intent.created_dirs.iter().rev() {
        let path = d.under(install_dir);
        let removed =
            fsutil::remove_dir_if_empty(&path).map_err(|source| UndoError::RemoveDir {
                path: path.clone(),
                source,
            })?;
        if removed {
            touch_parent(&mut touched, &path);
            failpoint::step(&format!("undo rmdir {d}"))
                .map_err(|source| UndoError::RemoveDir { path, source })?;
        } else if path.is_dir() {
            tracing::warn!(dir = %path.display(), "kept a created directory that is not empty");
        }
    }
    for op in deletes.iter().rev() {
        undo_op(install_dir, backup_dir, op, &mut touched)?;
    }
    // A created directory removed after an op inside it was undone is gone: its removal is
    // made durable by fsyncing its parent, which is touched too.
    fsutil::fsync_dirs(&touched, true)
        .map_err(|(path, source)| UndoError::Fsync { path, source })?;
    if !touched.is_empty() {
        failpoint::step("undo fsync directories").map_err(|source| UndoError::Fsync {
            path: install_dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

fn touch_parent(touched: &mut BTreeSet<PathBuf>, path: &Path) {
    if let Some(p) = path.parent() {
        touched.insert(p.to_owned());
    }
}

fn present(path: &Path) -> Result<bool, UndoError> {
    fsutil::exists(path).map_err(|source| UndoError::Inspect {
        path: path.to_owned(),
        source,
    })
}

fn move_back(from: &Path, to: &Path, touched: &mut BTreeSet<PathBuf>) -> Result<(), UndoError> {
    let err = |source| UndoError::MoveBack {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    };
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    fsutil::rename_noreplace(from, to).map_err(err)?;
    touch_parent(touched, from);
    touch_parent(touched, to);
    failpoint::step(&format!("undo rename {}", to.display())).map_err(err)
}

fn undo_op(
    install_dir: &Path,
    backup_dir: &Path,
    op: &Op,
    touched: &mut BTreeSet<PathBuf>,
) -> Result<(), UndoError> {
    let target = op.path.under(install_dir);
    let saved = op.path.under(backup_dir);
    let saved_present = present(&saved)?;
    let mut target_present = present(&target)?;
    if let Some(source) = op.source.as_ref().map(super::Source::path) {
        // The source was moved into place if it is gone and the target is there — and, when
        // the op replaced something, that something already sits in the backup.
        let moved_in =
            !present(&source)? && target_present && (saved_present || !op.replaces_existing);
        if moved_in {
            move_back(&target, &source, touched)?;
            target_present = false;
        }
    }
    if saved_present {
        if target_present {
            return Err(UndoError::BothPresent {
                path: target,
                backup: saved,
            });
        }
        move_back(&saved, &target, touched)?;
    }
    Ok(())
}
