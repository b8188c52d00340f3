//! Kept transactions (`history/<id>/`: journal + `backup/`): listing and pruning them, and the
//! crash-safe removal of a transaction directory (`discard`). `molt rollback` is in
//! [`super::rollback`].

use std::fs;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::TxnError;
use super::journal;
use crate::failpoint;
use crate::fsutil;
use crate::state::{StateDir, TxnKind};
use crate::version::Version;

/// Prefix of a directory being removed (renamed first so a half-removed tree is never mistaken
/// for a live one).
const DISCARD_PREFIX: &str = ".discard-";

/// A completed update whose backup is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeptTransaction {
    pub id: String,
    pub kind: TxnKind,
    pub from: Option<Version>,
    pub to: Option<Version>,
    pub at: OffsetDateTime,
    pub dir: PathBuf,
}

/// Removes a directory tree so that a crash midway never leaves a partial tree under its real
/// name: rename to `.discard-<name>`, fsync, then delete. Absent is fine.
pub(crate) fn discard(path: &Path) -> Result<(), TxnError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let trash = parent.join(format!("{DISCARD_PREFIX}{}", name.to_string_lossy()));
    let removed = |source| TxnError::Remove {
        path: path.to_owned(),
        source,
    };
    fsutil::remove_tree(&trash).map_err(removed)?;
    if !fsutil::exists(path).map_err(removed)? {
        return Ok(());
    }
    fsutil::rename_noreplace(path, &trash)
        .and_then(|()| fsutil::fsync_dir(parent))
        .and_then(|()| failpoint::step(&format!("discard {}", path.display())))
        .map_err(removed)?;
    fsutil::remove_tree(&trash).map_err(removed)
}

/// Finishes removals a crash interrupted (leftover `.discard-*` directories in `dir`).
pub(crate) fn sweep_discarded(dir: &Path) -> Result<(), TxnError> {
    for name in dir_names(dir)? {
        if name.starts_with(DISCARD_PREFIX) {
            let path = dir.join(&name);
            fsutil::remove_tree(&path).map_err(|source| TxnError::Remove { path, source })?;
        }
    }
    Ok(())
}

/// Names in `dir`, sorted (ids sort by time).
pub(crate) fn dir_names(dir: &Path) -> Result<Vec<String>, TxnError> {
    let read_err = |source| TxnError::ReadHistory {
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(read_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

pub(super) fn kept_ids(state: &StateDir) -> Result<Vec<String>, TxnError> {
    Ok(dir_names(&state.history_root())?
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect())
}

/// Kept transactions, oldest first.
pub(crate) fn kept_transactions(state: &StateDir) -> Result<Vec<KeptTransaction>, TxnError> {
    let mut kept = Vec::new();
    for id in kept_ids(state)? {
        let dir = state.history_root().join(&id);
        let path = dir.join("journal");
        let intent = journal::intent_header(&path)?;
        kept.push(KeptTransaction {
            id,
            kind: intent.kind,
            from: intent.from,
            to: intent.to,
            at: intent.at,
            dir,
        });
    }
    Ok(kept)
}

/// Removes the oldest kept transactions beyond the newest `keep` — except one whose backup
/// holds entries `--adopt` took over: those are the only copy of something molt did not own,
/// so only the operator removes them.
pub(crate) fn prune(state: &StateDir, keep: usize) -> Result<(), TxnError> {
    let ids = kept_ids(state)?;
    let excess = ids.len().saturating_sub(keep);
    for id in &ids[..excess] {
        let dir = state.history_root().join(id);
        let adopted =
            journal::intent_header(&dir.join("journal")).is_ok_and(|i| !i.adopted.is_empty());
        if adopted {
            tracing::info!(
                backup = %dir.display(),
                "kept: it holds entries taken over with --adopt; remove it when no longer needed"
            );
            continue;
        }
        discard(&dir)?;
    }
    Ok(())
}
