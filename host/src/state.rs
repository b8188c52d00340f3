//! The state directory: where molt keeps what it knows about one install between runs.
//!
//! `state.json` records the installed version, the files and directories molt owns, a history of
//! transactions and the releases that were rolled back or failed validation (so a strategy can
//! skip them). `trust.json` records the highest manifest serial accepted (rollback-attack
//! protection). Both are replaced atomically and durably. The `lock` file serialises every command
//! that touches the install. The state dir must be on the install's filesystem so that staged
//! files and backups move in and out of the install by `rename`, which is atomic.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ExitClass;
use crate::fsutil;
use crate::relpath::RelPath;
use crate::tree::FileRecord;
use crate::version::Version;

/// How long a command waits for another molt to release the lock before giving up.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How many entries of the transaction log `state.json` keeps.
pub(crate) const HISTORY_LOG_LIMIT: usize = 200;

/// Why the state directory or a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot inspect {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error(
        "state directory {state_dir} is not on the same filesystem as install directory \
         {install_dir}; choose a state_dir on the install's filesystem (updates move files by rename)"
    )]
    DifferentFilesystem {
        state_dir: PathBuf,
        install_dir: PathBuf,
    },
    #[error(
        "state directory {state_dir} and install directory {install_dir} are on one filesystem \
         but on different mounts (a bind mount?), so updates cannot move files between them by \
         rename; choose a state_dir on the install's own mount, e.g. the default \
         <install_dir>/.molt"
    )]
    DifferentMount {
        state_dir: PathBuf,
        install_dir: PathBuf,
    },
    #[error(
        "state directory {state_dir} belongs to the install at {recorded} (product {product}), \
         not to {install_dir}; give each install its own state_dir"
    )]
    ForeignStateDir {
        state_dir: PathBuf,
        recorded: PathBuf,
        product: String,
        install_dir: PathBuf,
    },
    #[error("cannot open lock file {path}: {source}")]
    OpenLock { path: PathBuf, source: io::Error },
    #[error(
        "another molt is working on {install_dir} (lock {lock}); try again when it has finished"
    )]
    Locked { install_dir: PathBuf, lock: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is corrupt ({source}); restore it from a backup or move it away to start over")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl StateError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            StateError::DifferentFilesystem { .. }
            | StateError::DifferentMount { .. }
            | StateError::ForeignStateDir { .. } => ExitClass::Usage,
            _ => ExitClass::Failure,
        }
    }
}

/// The default state directory's name inside the install (`<install_dir>/.molt`). It is
/// reserved wherever the state dir is: no release may contain it (publish refuses such a tree,
/// a client such a package).
pub(crate) const RESERVED_STATE_DIR: &str = ".molt";

/// The state directory of one install, with helpers for the paths inside it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    install_dir: PathBuf,
}

impl StateDir {
    /// Creates (mode 0700) or opens the state dir `root` for `install_dir` (created if missing),
    /// and checks both are on one filesystem.
    pub fn open(root: &Path, install_dir: &Path) -> Result<Self, StateError> {
        let mut created = Vec::new();
        if !install_dir.is_dir() {
            fs::create_dir_all(install_dir).map_err(|source| StateError::CreateDir {
                path: install_dir.to_owned(),
                source,
            })?;
            created.push(install_dir.to_owned());
        }
        let dir = StateDir {
            root: root.to_owned(),
            install_dir: install_dir.to_owned(),
        };
        for d in [
            dir.root.clone(),
            dir.txn_root(),
            dir.history_root(),
            dir.downloads_dir(),
            dir.cache_dir(),
        ] {
            if d.is_dir() {
                continue;
            }
            create_private_dir_all(&d).map_err(|source| StateError::CreateDir {
                path: d.clone(),
                source,
            })?;
            created.push(d);
        }
        // A journal in txn/ is only found after a power loss if the directories leading to it
        // are durable too: fsync the parents of what was just created (once, on first use).
        let parents: std::collections::BTreeSet<PathBuf> = created
            .iter()
            .flat_map(|d| d.ancestors().skip(1).take(2))
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .collect();
        fsutil::fsync_dirs(&parents, false)
            .map_err(|(path, source)| StateError::CreateDir { path, source })?;
        let dev = |p: &Path| {
            fs::metadata(p)
                .map(|m| m.dev())
                .map_err(|source| StateError::Stat {
                    path: p.to_owned(),
                    source,
                })
        };
        if dev(&dir.root)? != dev(install_dir)? {
            return Err(StateError::DifferentFilesystem {
                state_dir: dir.root,
                install_dir: install_dir.to_owned(),
            });
        }
        dir.check_same_mount()?;
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One filesystem is not enough: a bind mount shares `st_dev` but refuses renames. Compares
    /// mount ids, or where the kernel has none, renames a probe file from the state dir into
    /// the install and back.
    fn check_same_mount(&self) -> Result<(), StateError> {
        let different = || StateError::DifferentMount {
            state_dir: self.root.clone(),
            install_dir: self.install_dir.clone(),
        };
        let id = |p: &Path| {
            fsutil::mount_id(p).map_err(|source| StateError::Stat {
                path: p.to_owned(),
                source,
            })
        };
        match (id(&self.root)?, id(&self.install_dir)?) {
            (Some(a), Some(b)) if a == b => return Ok(()),
            (Some(_), Some(_)) => return Err(different()),
            _ => {}
        }
        let name = format!(".molt-mount-probe-{}", fsutil::random_suffix());
        let (here, there) = (self.txn_root().join(&name), self.install_dir.join(&name));
        let probe_err = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Stat { path, source }
        };
        File::create(&here).map_err(probe_err(&here))?;
        let moved = fsutil::rename_noreplace(&here, &there);
        let result = match moved {
            Ok(()) => fs::remove_file(&there).map_err(probe_err(&there)),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(different()),
            Err(e) => Err(probe_err(&there)(e)),
        };
        let _ = fs::remove_file(&here);
        result
    }

    pub fn install_dir(&self) -> &Path {
        &self.install_dir
    }

    pub(crate) fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn trust_path(&self) -> PathBuf {
        self.root.join("trust.json")
    }

    pub(crate) fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// `txn/`: transactions in flight, one directory each.
    pub fn txn_root(&self) -> PathBuf {
        self.root.join("txn")
    }

    /// `history/`: completed transactions kept for `molt rollback`.
    pub(crate) fn history_root(&self) -> PathBuf {
        self.root.join("history")
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Where the state dir sits inside the install, if it does (e.g. `.molt`): updates must
    /// never touch that path.
    pub(crate) fn relative_to_install(&self) -> Option<RelPath> {
        let root = fs::canonicalize(&self.root).ok()?;
        let install = fs::canonicalize(&self.install_dir).ok()?;
        let rel = root.strip_prefix(&install).ok()?;
        RelPath::from_path(rel).ok()
    }

    /// Takes the exclusive lock, waiting up to [`LOCK_WAIT`] for another molt to finish.
    pub fn lock(&self) -> Result<LockGuard, StateError> {
        self.lock_with_wait(LOCK_WAIT)
    }

    /// [`StateDir::lock`] with an explicit wait.
    pub(crate) fn lock_with_wait(&self, wait: Duration) -> Result<LockGuard, StateError> {
        let path = self.lock_path();
        match fsutil::lock_file(&path, wait) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(StateError::Locked {
                install_dir: self.install_dir.clone(),
                lock: path,
            }),
            Err(fsutil::LockFailure::Open(source)) => Err(StateError::OpenLock { path, source }),
            Err(fsutil::LockFailure::Lock(source)) => Err(StateError::Lock { path, source }),
        }
    }

    /// Reads `state.json`; a missing file is the empty state of a fresh install.
    pub fn load_state(&self) -> Result<InstallState, StateError> {
        load_json(&self.state_path())
    }

    /// Replaces `state.json` atomically and durably.
    pub fn save_state(&self, state: &InstallState) -> Result<(), StateError> {
        save_json(&self.state_path(), state)
    }

    /// Reads `trust.json`; missing means no manifest was accepted yet.
    pub fn load_trust(&self) -> Result<TrustState, StateError> {
        load_json(&self.trust_path())
    }

    /// Replaces `trust.json` atomically and durably (only after every check has passed).
    pub fn save_trust(&self, trust: &TrustState) -> Result<(), StateError> {
        save_json(&self.trust_path(), trust)
    }
}

fn create_private_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Parses the file streamed (at 66,000 files `state.json` is megabytes, which a whole-file
/// buffer would hold beside the parsed state at the transaction's peak).
fn load_json<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StateError> {
    let read_error = |source| StateError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => return Err(read_error(source)),
    };
    serde_json::from_reader(io::BufReader::with_capacity(64 * 1024, file)).map_err(|e| {
        if e.is_io() {
            read_error(e.into())
        } else {
            StateError::Corrupt {
                path: path.to_owned(),
                source: e,
            }
        }
    })
}

/// Streams `value` into the file (never the whole JSON in memory), durably.
fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    fsutil::write_atomic_with(path, |out| {
        serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
        out.write_all(b"\n")
    })
    .map_err(|source| StateError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Holds the state dir's exclusive lock until dropped.
pub type LockGuard = fsutil::FileLock;

/// What kind of change a transaction made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnKind {
    Full,
    Patch,
    Rollback,
}

impl std::fmt::Display for TxnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxnKind::Full => "full",
            TxnKind::Patch => "patch",
            TxnKind::Rollback => "rollback",
        })
    }
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Committed and still in place.
    Applied,
    /// Committed, later undone by `molt rollback`.
    RolledBack,
    /// A validator rejected the new tree; the old one was restored.
    FailedValidation,
    /// An error while applying; the old tree was restored.
    Failed,
    /// The process died before commit; recovery restored the old tree.
    Interrupted,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Applied => "applied",
            Outcome::RolledBack => "rolled-back",
            Outcome::FailedValidation => "failed-validation",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        })
    }
}

/// One line of the transaction log in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The transaction id (also the name of its `history/` directory while kept).
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub kind: TxnKind,
    pub from: Option<Version>,
    pub to: Option<Version>,
    pub outcome: Outcome,
    /// Why it failed, for failed outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `state.json`: what is installed and what molt owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallState {
    #[serde(default)]
    pub version: Option<Version>,
    /// Files molt installed (and may replace or delete), with their recorded hash, size and mode.
    #[serde(default, deserialize_with = "crate::bulk::map")]
    pub files: BTreeMap<RelPath, FileRecord>,
    /// Directories molt created or installed.
    #[serde(default, deserialize_with = "crate::bulk::set")]
    pub dirs: BTreeSet<RelPath>,
    /// Transactions, oldest first (the newest [`HISTORY_LOG_LIMIT`] are kept).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Versions that were left by `molt rollback`.
    #[serde(default)]
    pub rolled_back_from: Vec<Version>,
    /// Versions a validator rejected.
    #[serde(default)]
    pub failed: Vec<Version>,
    /// The install this state belongs to (canonical path), so a state dir shared by two
    /// installs is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<PathBuf>,
    /// The product of that install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

impl InstallState {
    /// The state a transaction moves to, before it is given its tree: this one's version, log
    /// and markers, with no files or directories (the new tree is moved in, never a copy of
    /// the old one made only to be replaced: at 66,000 files each is megabytes).
    pub(crate) fn successor(&self) -> InstallState {
        InstallState {
            version: self.version.clone(),
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            history: self.history.clone(),
            rolled_back_from: self.rolled_back_from.clone(),
            failed: self.failed.clone(),
            install_dir: self.install_dir.clone(),
            product: self.product.clone(),
        }
    }

    /// Appends to the transaction log, dropping the oldest entries beyond the limit.
    pub fn record(&mut self, entry: HistoryEntry) {
        self.history.push(entry);
        if self.history.len() > HISTORY_LOG_LIMIT {
            let excess = self.history.len() - HISTORY_LOG_LIMIT;
            self.history.drain(..excess);
        }
    }

    /// Notes that `version` failed validation (once).
    pub(crate) fn mark_failed(&mut self, version: &Version) {
        if !self.failed.contains(version) {
            self.failed.push(version.clone());
        }
    }

    /// Notes that `version` was rolled back (once).
    pub(crate) fn mark_rolled_back_from(&mut self, version: &Version) {
        if !self.rolled_back_from.contains(version) {
            self.rolled_back_from.push(version.clone());
        }
    }
}

/// `trust.json`: the repository trust that must survive between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustState {
    /// The highest manifest serial ever accepted; a lower one is a rollback attack.
    #[serde(default)]
    pub highest_serial: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::v;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn open_creates_private_layout_and_finds_itself_inside_the_install() {
        let d = tempfile::tempdir().unwrap();
        let install = d.path().join("app");
        let sd = StateDir::open(&install.join(".molt"), &install).unwrap();
        for p in [
            sd.txn_root(),
            sd.history_root(),
            sd.downloads_dir(),
            sd.cache_dir(),
        ] {
            assert!(p.is_dir(), "{p:?}");
        }
        let mode = fs::metadata(sd.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            sd.relative_to_install(),
            Some(RelPath::new(".molt").unwrap())
        );
        let outside = StateDir::open(&d.path().join("state"), &install).unwrap();
        assert_eq!(outside.relative_to_install(), None);
    }

    #[test]
    fn refuses_a_state_dir_on_another_filesystem() {
        let shm = Path::new("/dev/shm");
        let d = tempfile::tempdir().unwrap();
        let same_dev =
            |a: &Path, b: &Path| fs::metadata(a).unwrap().dev() == fs::metadata(b).unwrap().dev();
        if !shm.is_dir() || same_dev(shm, d.path()) {
            return;
        }
        let other = tempfile::tempdir_in(shm).unwrap();
        let err = StateDir::open(other.path(), d.path()).unwrap_err();
        assert!(matches!(err, StateError::DifferentFilesystem { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&other.path().display().to_string()), "{msg}");
        assert!(msg.contains(&d.path().display().to_string()), "{msg}");
        assert_eq!(err.exit_class(), ExitClass::Usage);
    }

    #[test]
    fn second_lock_waits_then_names_the_install() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&d.path().join("s"), d.path()).unwrap();
        let held = sd.lock().unwrap();
        let err = sd.lock_with_wait(Duration::from_millis(120)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("another molt is working on"), "{msg}");
        assert!(msg.contains(&sd.lock_path().display().to_string()), "{msg}");
        drop(held);
        // Other tests of this process fork children (crash points), which share the lock's open
        // file description until they exit: wait for them rather than race them.
        sd.lock_with_wait(Duration::from_secs(30)).unwrap();
    }

    #[test]
    fn state_round_trips_and_missing_is_default() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&d.path().join("s"), d.path()).unwrap();
        assert_eq!(sd.load_state().unwrap(), InstallState::default());
        assert_eq!(sd.load_trust().unwrap().highest_serial, 0);

        let mut st = InstallState {
            version: Some(v("1.2.0")),
            ..Default::default()
        };
        st.files.insert(
            RelPath::new("bin/app").unwrap(),
            FileRecord::regular(crate::hashing::Sha256Digest::of(b"app"), 3, 0o755),
        );
        st.dirs.insert(RelPath::new("bin").unwrap());
        st.record(HistoryEntry {
            id: "x".into(),
            at: OffsetDateTime::UNIX_EPOCH,
            kind: TxnKind::Patch,
            from: Some(v("1.1.0")),
            to: Some(v("1.2.0")),
            outcome: Outcome::FailedValidation,
            reason: Some("no".into()),
        });
        st.mark_failed(&v("1.3.0"));
        st.mark_failed(&v("1.3.0"));
        sd.save_state(&st).unwrap();
        assert_eq!(sd.load_state().unwrap(), st);
        assert_eq!(st.failed.len(), 1);
        let text = fs::read_to_string(sd.state_path()).unwrap();
        assert!(text.contains("\"failed-validation\""), "{text}");
        assert!(text.contains("1970-01-01T00:00:00Z"), "{text}");

        sd.save_trust(&TrustState { highest_serial: 9 }).unwrap();
        assert_eq!(sd.load_trust().unwrap().highest_serial, 9);
    }

    #[test]
    fn corrupt_state_is_a_clear_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&d.path().join("s"), d.path()).unwrap();
        fs::write(sd.state_path(), b"{\"version\": ").unwrap();
        let err = sd.load_state().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }));
        assert!(err.to_string().contains("state.json is corrupt"), "{err}");
    }

    #[test]
    fn history_log_is_capped() {
        let mut st = InstallState::default();
        for i in 0..HISTORY_LOG_LIMIT + 5 {
            st.record(HistoryEntry {
                id: i.to_string(),
                at: OffsetDateTime::UNIX_EPOCH,
                kind: TxnKind::Full,
                from: None,
                to: None,
                outcome: Outcome::Applied,
                reason: None,
            });
        }
        assert_eq!(st.history.len(), HISTORY_LOG_LIMIT);
        assert_eq!(st.history[0].id, "5");
    }
}
