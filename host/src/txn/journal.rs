//! The transaction journal: append-only JSON lines, each made durable before the next step.
//!
//! The journal is the only thing recovery trusts besides the filesystem. The `intent` record holds
//! everything needed to undo (the op list, created directories) and to restore the exact old
//! `state.json`; the `commit` record holds the new `state.json`, so a crash after commit rolls
//! forward without recomputing anything. A torn last line (power loss mid-append) is ignored and
//! cut off before the next append.
//!
//! Each line is the record's JSON, a tab, and the SHA-256 of that JSON. A record that still
//! parses after a bit flip would otherwise be believed: an intent naming `leGacy` instead of
//! `legacy` made recovery undo the wrong path and leave a tree that was neither release (found
//! by the `recovery` fuzz target). A line whose checksum fails is treated as unreadable: torn if it
//! is the last, corruption (exit 4, nothing touched) before it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{DirMode, Op, TxnError};
use crate::failpoint;
use crate::fsutil;
use crate::hashing::HashingWriter;
use crate::relpath::RelPath;
use crate::state::{HistoryEntry, InstallState, Outcome, TxnKind};
use crate::version::Version;

/// Buffer between an appended record's JSON and the journal file.
const APPEND_BUFFER: usize = 256 * 1024;

/// Everything a transaction is about to do, journaled before it touches the install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub id: String,
    pub kind: TxnKind,
    pub from: Option<Version>,
    pub to: Option<Version>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Deletes first, then puts, in execution order.
    pub ops: Vec<Op>,
    /// Directories created (parents first) after the deletes and before the puts.
    pub created_dirs: Vec<RelPath>,
    /// `state.json` as it was when the transaction started.
    pub old_state: InstallState,
    /// Preserved paths the update wrote because nothing was there, with the SHA-256 it wrote:
    /// once changed they are user data, which a `molt rollback` must not delete.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preserved_written: BTreeMap<RelPath, String>,
    /// For a rollback: the kept transaction (in `history/`) whose backup is the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumes: Option<String>,
    /// Directory modes set after the puts (and reset first by an undo).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dir_modes: Vec<DirMode>,
    /// Entries molt did not own that `--adopt` moved into this transaction's backup: the kept
    /// backup is then never pruned automatically.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<RelPath>,
}

impl Intent {
    /// This transaction's line in `state.json`'s history log (the one place one is made).
    pub(crate) fn history_entry(&self, outcome: Outcome, reason: Option<String>) -> HistoryEntry {
        HistoryEntry {
            id: self.id.clone(),
            at: OffsetDateTime::now_utc(),
            kind: self.kind,
            from: self.from.clone(),
            to: self.to.clone(),
            outcome,
            reason,
        }
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    Intent(Box<Intent>),
    /// Every op is done and the touched directories are fsynced.
    Applied,
    /// Validators passed; from here on the transaction rolls forward.
    Commit {
        new_state: Box<InstallState>,
    },
    /// `state.json` holds the new state.
    Done,
    /// The old tree is back.
    RolledBack {
        outcome: Outcome,
        reason: String,
    },
}

/// What a journal says, folded from its records.
#[derive(Debug, Clone, Default)]
pub(crate) struct JournalSummary {
    pub intent: Option<Intent>,
    pub commit: Option<InstallState>,
    pub done: bool,
    pub rolled_back: Option<(Outcome, String)>,
}

/// An open journal to append to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes of complete, durable records: where a failed append is cut back to.
    len: u64,
}

impl Journal {
    /// Creates a new, empty journal and makes its directory entry durable.
    pub fn create(path: &Path) -> Result<Self, TxnError> {
        let write_err = |source| TxnError::JournalWrite {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        if let Some(dir) = path.parent() {
            fsutil::fsync_dir(dir).map_err(write_err)?;
            if let Some(grandparent) = dir.parent() {
                fsutil::fsync_dir(grandparent).map_err(write_err)?;
            }
        }
        Ok(Journal {
            path: path.to_owned(),
            file,
            len: 0,
        })
    }

    /// Opens an existing journal for appending, first cutting off a torn last line.
    pub(crate) fn open_append(path: &Path) -> Result<Self, TxnError> {
        let write_err = |source| TxnError::JournalWrite {
            path: path.to_owned(),
            source,
        };
        let bytes = fs::read(path).map_err(write_err)?;
        let mut complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        // A last line that ends in a newline but does not check out is a torn append too (its
        // newline reached the disk, part of its text did not): cut it as well, or the next
        // record would make it look like corruption in the middle.
        let start = bytes[..complete.saturating_sub(1)]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if complete > start && parse_line(&bytes[start..complete - 1]).is_err() {
            complete = start;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(write_err)?;
        if complete != bytes.len() {
            file.set_len(complete as u64).map_err(write_err)?;
            file.sync_data().map_err(write_err)?;
        }
        Ok(Journal {
            path: path.to_owned(),
            file,
            len: complete as u64,
        })
    }

    /// Appends one record and makes it durable. A failed append is cut off again, so it leaves
    /// no record behind (`JournalWrite`); if even that fails, the record may be on disk
    /// (`JournalUncertain`).
    pub fn append(&mut self, record: &Record) -> Result<(), TxnError> {
        // Streamed into the file through the checksum: an intent at 66,000 files is tens of
        // megabytes of JSON, which need not be in memory at once.
        let written = (|| {
            let mut out =
                HashingWriter::new(io::BufWriter::with_capacity(APPEND_BUFFER, &self.file));
            serde_json::to_writer(&mut out, record).map_err(io::Error::from)?;
            let (mut buffered, checksum, json_len) = out.finish();
            buffered.write_all(b"\t")?;
            let checksum = checksum.to_hex();
            buffered.write_all(checksum.as_bytes())?;
            buffered.write_all(b"\n")?;
            buffered.flush()?;
            Ok(json_len + 2 + checksum.len() as u64)
        })();
        let result = written.and_then(|n| {
            self.file.sync_data()?;
            failpoint::step(&format!("journal {}", record.name()))?;
            Ok(n)
        });
        match result {
            Ok(n) => {
                self.len += n;
                Ok(())
            }
            Err(source) => Err(self.retract(source)),
        }
    }

    /// After a failed append: durably cut the journal back to its complete records, so the
    /// failed one is certainly not there (a write may have landed even though `fsync` failed).
    fn retract(&mut self, source: io::Error) -> TxnError {
        let path = self.path.clone();
        match self
            .file
            .set_len(self.len)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => TxnError::JournalWrite { path, source },
            Err(e) => {
                tracing::warn!(journal = %path.display(), "cannot cut off a failed record: {e}");
                TxnError::JournalUncertain { path, source }
            }
        }
    }
}

impl Record {
    fn name(&self) -> &'static str {
        match self {
            Record::Intent(_) => "intent",
            Record::Applied => "applied",
            Record::Commit { .. } => "commit",
            Record::Done => "done",
            Record::RolledBack { .. } => "rolled-back",
        }
    }
}

/// What a listing of kept transactions needs of one: its intent's header. The other fields
/// (the ops and the old state, tens of megabytes at 66,000 files) are skipped as they are read,
/// never held.
#[derive(Debug, Deserialize)]
pub(crate) struct IntentHeader {
    record: String,
    pub(crate) kind: TxnKind,
    pub(crate) from: Option<Version>,
    pub(crate) to: Option<Version>,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) at: OffsetDateTime,
    #[serde(default)]
    pub(crate) adopted: Vec<RelPath>,
}

/// The header of the intent that opens the journal at `path` (for `molt status` and pruning,
/// which only list transactions): streamed from the first record, without its checksum, which
/// recovery and `molt rollback` check when they read the whole journal ([`read_records`]).
pub(crate) fn intent_header(path: &Path) -> Result<IntentHeader, TxnError> {
    let corrupt = |problem: String| TxnError::JournalCorrupt {
        path: path.to_owned(),
        line: 1,
        problem,
    };
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TxnError::JournalWithoutIntent {
            path: path.to_owned(),
        },
        _ => TxnError::JournalRead {
            path: path.to_owned(),
            source,
        },
    })?;
    let mut json = serde_json::Deserializer::from_reader(io::BufReader::new(file));
    let header = IntentHeader::deserialize(&mut json).map_err(|e| corrupt(e.to_string()))?;
    if header.record != "intent" {
        return Err(TxnError::JournalWithoutIntent {
            path: path.to_owned(),
        });
    }
    Ok(header)
}

/// Reads every complete record; a missing journal has none. An unreadable last line is a torn
/// append and is ignored; an unreadable line before it is corruption.
pub(crate) fn read_records(path: &Path) -> Result<Vec<Record>, TxnError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TxnError::JournalRead {
                path: path.to_owned(),
                source,
            });
        }
    };
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match parse_line(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == lines.len() => {
                tracing::warn!(journal = %path.display(), "ignoring a torn last journal record");
            }
            Err(problem) => {
                return Err(TxnError::JournalCorrupt {
                    path: path.to_owned(),
                    line: i + 1,
                    problem,
                });
            }
        }
    }
    Ok(records)
}

/// One line: the record's JSON, a tab, the SHA-256 of the JSON (JSON as serde writes it holds
/// no raw tab).
fn parse_line(line: &[u8]) -> Result<Record, String> {
    let Some(tab) = line.iter().rposition(|b| *b == b'\t') else {
        return Err("no checksum".to_owned());
    };
    let (json, checksum) = (&line[..tab], &line[tab + 1..]);
    if checksum != crate::hashing::sha256_hex(json).as_bytes() {
        return Err("its checksum does not match".to_owned());
    }
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

/// Reads a journal and folds it into what it says.
pub(crate) fn summarize(path: &Path) -> Result<JournalSummary, TxnError> {
    let mut s = JournalSummary::default();
    for record in read_records(path)? {
        match record {
            Record::Intent(i) => s.intent = Some(*i),
            Record::Applied => {}
            Record::Commit { new_state } => s.commit = Some(*new_state),
            Record::Done => s.done = true,
            Record::RolledBack { outcome, reason } => s.rolled_back = Some((outcome, reason)),
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> Intent {
        Intent {
            id: "t1".into(),
            kind: TxnKind::Patch,
            from: Some(Version::parse("1.0.0").unwrap()),
            to: Some(Version::parse("1.1.0").unwrap()),
            at: OffsetDateTime::UNIX_EPOCH,
            ops: vec![Op {
                path: RelPath::new("bin/app").unwrap(),
                is_dir: false,
                source: Some(Path::new("/s/stage/bin/app").into()),
                replaces_existing: true,
            }],
            created_dirs: vec![RelPath::new("web").unwrap()],
            old_state: InstallState::default(),
            preserved_written: BTreeMap::new(),
            consumes: None,
            dir_modes: Vec::new(),
            adopted: Vec::new(),
        }
    }

    #[test]
    fn appends_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal");
        let mut j = Journal::create(&p).unwrap();
        j.append(&Record::Intent(Box::new(intent()))).unwrap();
        j.append(&Record::Applied).unwrap();
        j.append(&Record::Commit {
            new_state: Box::default(),
        })
        .unwrap();
        let s = summarize(&p).unwrap();
        assert_eq!(s.intent.unwrap(), intent());
        assert!(s.commit.is_some() && !s.done && s.rolled_back.is_none());
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("{\"record\":\"intent\""), "{text}");
    }

    #[test]
    fn torn_last_line_is_ignored_and_cut_before_appending() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal");
        let mut j = Journal::create(&p).unwrap();
        j.append(&Record::Intent(Box::new(intent()))).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"record\":\"comm").unwrap();
        let s = summarize(&p).unwrap();
        assert!(s.intent.is_some() && s.commit.is_none());

        let mut j = Journal::open_append(&p).unwrap();
        j.append(&Record::RolledBack {
            outcome: Outcome::Interrupted,
            reason: "crash".into(),
        })
        .unwrap();
        let s = summarize(&p).unwrap();
        assert_eq!(s.rolled_back.unwrap().0, Outcome::Interrupted);
        assert_eq!(read_records(&p).unwrap().len(), 2);
    }

    /// A commit record too big for the file-size limit: `write` fails after a partial write.
    fn big_commit() -> Record {
        let mut state = InstallState::default();
        for i in 0..200 {
            state
                .dirs
                .insert(RelPath::new(&format!("dir-{i:04}")).unwrap());
        }
        Record::Commit {
            new_state: Box::new(state),
        }
    }

    /// Runs only inside the child process spawned by the test below (it lowers RLIMIT_FSIZE).
    #[test]
    fn fsize_child_appends_past_the_limit() {
        let Some(dir) = std::env::var_os("MOLT_JOURNAL_CHILD_DIR") else {
            return;
        };
        let p = Path::new(&dir).join("journal");
        let mut j = Journal::create(&p).unwrap();
        j.append(&Record::Applied).unwrap();
        // SAFETY: plain libc calls on this single-test child process, with valid arguments.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        let err = j.append(&big_commit()).unwrap_err();
        assert!(matches!(err, TxnError::JournalWrite { .. }), "{err}");
        let applied = fs::read(&p).unwrap();
        assert!(
            applied.starts_with(b"{\"record\":\"applied\"}\t"),
            "{applied:?}"
        );
        assert_eq!(applied.iter().filter(|b| **b == b'\n').count(), 1);
        j.append(&Record::Done).unwrap();
        assert_eq!(read_records(&p).unwrap(), [Record::Applied, Record::Done]);
    }

    #[test]
    fn a_failed_append_is_cut_off_again() {
        let d = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "txn::journal::tests::fsize_child_appends_past_the_limit",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("MOLT_JOURNAL_CHILD_DIR", d.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    #[test]
    fn an_append_that_cannot_be_cut_off_is_uncertain() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal");
        Journal::create(&p).unwrap();
        let mut j = Journal {
            path: p.clone(),
            file: File::open(&p).unwrap(),
            len: 0,
        };
        let err = j.append(&Record::Applied).unwrap_err();
        assert!(matches!(err, TxnError::JournalUncertain { .. }), "{err}");
        assert!(err.to_string().contains("may be on disk"), "{err}");
    }

    #[test]
    fn a_torn_last_line_with_its_newline_is_cut_before_appending() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal");
        let mut j = Journal::create(&p).unwrap();
        j.append(&Record::Applied).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"record\":\"do\0\0\0\n").unwrap();
        drop(f);
        assert_eq!(read_records(&p).unwrap(), [Record::Applied]);
        let mut j = Journal::open_append(&p).unwrap();
        j.append(&Record::Done).unwrap();
        assert_eq!(read_records(&p).unwrap(), [Record::Applied, Record::Done]);
    }

    #[test]
    fn corruption_before_the_last_line_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal");
        fs::write(&p, b"garbage\n{\"record\":\"applied\"}\n").unwrap();
        let err = read_records(&p).unwrap_err();
        assert!(
            matches!(err, TxnError::JournalCorrupt { line: 1, .. }),
            "{err}"
        );
        // A record that parses but whose bytes changed is corruption too, not a torn append.
        let mut j = Journal::create(&d.path().join("flipped")).unwrap();
        j.append(&Record::Intent(Box::new(intent()))).unwrap();
        j.append(&Record::Applied).unwrap();
        let bytes = fs::read(d.path().join("flipped")).unwrap();
        let key = b"\"id\":\"";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x20; // a case flip inside the id: still valid JSON, still a record
        fs::write(&p, &flipped).unwrap();
        let err = read_records(&p).unwrap_err();
        assert!(
            matches!(err, TxnError::JournalCorrupt { line: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("checksum"), "{err}");
        fs::write(&p, b"garbage\n{\"record\":\"applied\"}\n").unwrap();
        let err = read_records(&p).unwrap_err();
        assert!(
            matches!(err, TxnError::JournalCorrupt { line: 1, .. }),
            "{err}"
        );
        assert_eq!(err.exit_class(), crate::error::ExitClass::RollbackFailed);
        assert!(read_records(&d.path().join("none")).unwrap().is_empty());
    }
}
