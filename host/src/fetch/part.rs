//! The file a package is downloaded into: `downloads/<sha256>.part`, hashed while it is written.
//!
//! A part never grows past the signed size, survives an interruption so the next attempt (or run)
//! can resume it, and is deleted the moment it is proven wrong, so a poisoned prefix is never
//! resumed. Only a part whose size and SHA-256 match is renamed to `<sha256>.pkg`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::FetchError;
use crate::fsutil::{self, Existing};
use crate::hashing::{HashingWriter, Sha256Digest, sha256_file};

/// What a downloaded package must be, and where its files live.
pub(crate) struct Target {
    /// The URL or path it comes from, for messages.
    pub url: String,
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: Sha256Digest,
    pub part: PathBuf,
    pub etag: PathBuf,
    pub pkg: PathBuf,
}

impl Target {
    /// The download paths, named by the signed digest (64 lowercase hex digits, so a safe file
    /// name).
    pub(super) fn new(url: String, size: u64, sha256: &Sha256Digest, downloads: &Path) -> Self {
        Self {
            url,
            size,
            part: downloads.join(format!("{sha256}.part")),
            etag: downloads.join(format!("{sha256}.part.etag")),
            pkg: downloads.join(format!("{sha256}.pkg")),
            sha256: sha256.clone(),
        }
    }

    /// The verified package from an earlier run, re-hashed before it is trusted again; a file
    /// that no longer matches is removed.
    pub(crate) fn reuse_verified(&self) -> Result<Option<PathBuf>, FetchError> {
        let len = match fs::metadata(&self.pkg) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.write_error(&self.pkg, e)),
        };
        if len == self.size {
            let digest = sha256_file(&self.pkg).map_err(|e| self.write_error(&self.pkg, e))?;
            if digest == self.sha256 {
                tracing::debug!(path = %self.pkg.display(), "reusing verified download");
                return Ok(Some(self.pkg.clone()));
            }
        }
        tracing::warn!(path = %self.pkg.display(), "an earlier download no longer matches its hash; fetching it again");
        fs::remove_file(&self.pkg).map_err(|e| self.write_error(&self.pkg, e))?;
        Ok(None)
    }

    /// The strong ETag stored with the part by an earlier attempt, if any.
    pub(crate) fn stored_etag(&self) -> Option<String> {
        let text = fs::read_to_string(&self.etag).ok()?;
        let tag = text.trim();
        is_strong_etag(tag).then(|| tag.to_owned())
    }

    /// Remembers the ETag of a fresh (200) response so a later resume can send `If-Range`; a weak
    /// or missing tag clears the stored one.
    pub(crate) fn store_etag(&self, tag: Option<&str>) -> Result<(), FetchError> {
        match tag.filter(|t| is_strong_etag(t)) {
            Some(tag) => fs::write(&self.etag, tag).map_err(|e| self.write_error(&self.etag, e)),
            None => remove_if_present(&self.etag).map_err(|e| self.write_error(&self.etag, e)),
        }
    }

    /// Deletes the part and its ETag; failures are logged, the caller's error matters more.
    pub(crate) fn discard(&self) {
        for path in [&self.part, &self.etag] {
            if let Err(e) = remove_if_present(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a rejected download");
            }
        }
    }

    pub(crate) fn write_error(&self, path: &Path, source: io::Error) -> FetchError {
        FetchError::WriteDownload {
            path: path.to_owned(),
            source,
        }
    }
}

/// `"abc"` is strong, `W/"abc"` is weak (RFC 9110 §8.8.3); only a strong tag may guard a Range.
fn is_strong_etag(tag: &str) -> bool {
    tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"') && tag.is_ascii()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An open part file: its bytes so far are hashed, new bytes are hashed as they are written.
pub(crate) struct PartWriter<'t> {
    target: &'t Target,
    writer: HashingWriter<File>,
}

impl<'t> PartWriter<'t> {
    /// Opens the part, keeping (and hashing) what an earlier attempt wrote; a part longer than the
    /// signed size cannot be a prefix and is emptied.
    pub(crate) fn resume(target: &'t Target) -> Result<Self, FetchError> {
        let wrap = |e| target.write_error(&target.part, e);
        if let Some(dir) = target.part.parent() {
            fs::create_dir_all(dir).map_err(|e| target.write_error(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target.part)
            .map_err(wrap)?;
        let mut hasher = Sha256::new();
        let mut kept = 0u64;
        if file.metadata().map_err(wrap)?.len() <= target.size {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf).map_err(wrap)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                kept += n as u64;
            }
        }
        let part = Self {
            target,
            writer: HashingWriter::resume(file, hasher, kept),
        };
        if kept == 0 { part.restart() } else { Ok(part) }
    }

    /// Opens the part empty, for a source that cannot resume.
    pub(super) fn fresh(target: &'t Target) -> Result<Self, FetchError> {
        if let Some(dir) = target.part.parent() {
            fs::create_dir_all(dir).map_err(|e| target.write_error(dir, e))?;
        }
        let file = File::create(&target.part).map_err(|e| target.write_error(&target.part, e))?;
        Ok(Self {
            target,
            writer: HashingWriter::new(file),
        })
    }

    /// Empties the part, for a server that sends the whole file again (or a fresh local copy).
    pub(crate) fn restart(self) -> Result<Self, FetchError> {
        let target = self.target;
        let wrap = |e| target.write_error(&target.part, e);
        let (mut file, _, _) = self.writer.finish();
        file.set_len(0).map_err(wrap)?;
        file.seek(SeekFrom::Start(0)).map_err(wrap)?;
        Ok(Self {
            target,
            writer: HashingWriter::new(file),
        })
    }

    /// Bytes in the part so far.
    pub(super) fn len(&self) -> u64 {
        self.writer.written()
    }

    /// Appends `chunk`; past the signed size the stream is cut and the part deleted.
    pub(super) fn append(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        let room = self.target.size - self.len();
        if chunk.len() as u64 > room {
            self.target.discard();
            return Err(FetchError::TooLarge {
                url: self.target.url.clone(),
                limit: self.target.size,
            });
        }
        self.writer
            .write_all(chunk)
            .map_err(|e| self.target.write_error(&self.target.part, e))
    }

    /// Flushes what arrived so far, so the next attempt can resume from it.
    pub(super) fn flush(&mut self) -> Result<(), FetchError> {
        self.writer
            .flush()
            .map_err(|e| self.target.write_error(&self.target.part, e))
    }

    /// Checks size and SHA-256, then makes the part durable as `<sha256>.pkg`. A wrong part is
    /// deleted.
    pub(super) fn finish(self) -> Result<PathBuf, FetchError> {
        let target = self.target;
        let wrap = |e| target.write_error(&target.part, e);
        let (file, actual, written) = self.writer.finish();
        if written != target.size {
            drop(file);
            target.discard();
            return Err(FetchError::SizeMismatch {
                url: target.url.clone(),
                expected: target.size,
                actual: written,
            });
        }
        if actual != target.sha256 {
            drop(file);
            target.discard();
            return Err(FetchError::HashMismatch {
                url: target.url.clone(),
                expected: target.sha256.clone(),
                actual,
            });
        }
        fsutil::persist(&file, &target.part, &target.pkg, Existing::Replace).map_err(wrap)?;
        drop(file);
        remove_if_present(&target.etag).map_err(|e| target.write_error(&target.etag, e))?;
        Ok(target.pkg.clone())
    }
}
