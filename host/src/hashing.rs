//! SHA-256 while streaming, with a hard cap on how many bytes may pass.
//!
//! Everything molt reads from a repository flows through [`CappedHashReader`] or
//! [`HashingWriter`], so a package is hashed exactly once, as it is copied, and an endless or
//! oversized stream is cut at the signed size + 1 byte instead of filling the disk (the pattern of
//! tough's `io.rs`).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest as the repository contract writes it: 64 lowercase hex digits. The one rule
/// for a signed digest, checked when a manifest is parsed; a digest also names files in
/// `downloads/`, so nothing else may pass.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(String);

/// A string that is not a [`Sha256Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sha256 {0:?} is not 64 lowercase hex digits")]
pub struct InvalidDigest(pub String);

impl Sha256Digest {
    pub fn parse(s: &str) -> Result<Self, InvalidDigest> {
        let well_formed = s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(Sha256Digest(s.to_owned()))
        } else {
            Err(InvalidDigest(s.to_owned()))
        }
    }

    /// The lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digest of `bytes`.
    #[cfg(test)]
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(sha256_hex(bytes))
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = InvalidDigest;
    fn try_from(s: String) -> Result<Self, InvalidDigest> {
        Self::parse(&s)
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> String {
        d.0
    }
}

impl std::str::FromStr for Sha256Digest {
    type Err = InvalidDigest;
    fn from_str(s: &str) -> Result<Self, InvalidDigest> {
        Self::parse(s)
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq<str> for Sha256Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for Sha256Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Sha256Digest> for String {
    fn eq(&self, other: &Sha256Digest) -> bool {
        *self == other.0
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of a file's contents.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_file_and_size(path).map(|(sha256, _)| sha256)
}

/// Lowercase hex SHA-256 and length of a file's contents, both from the same read (a length from
/// `metadata` could belong to other contents than the hash), read in 64 KiB blocks.
pub(crate) fn sha256_file_and_size(path: &Path) -> io::Result<(String, u64)> {
    let file = BufReader::with_capacity(64 * 1024, File::open(path)?);
    let mut reader = CappedHashReader::new(file, u64::MAX);
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.finish())
}

/// Reads `reader` to its end into memory with its SHA-256, failing with [`is_cap_exceeded`]'s
/// kind past `cap` bytes: the one way molt reads a whole file it did not write (keys, a
/// repository's manifest, delta bases).
pub(crate) fn read_capped<R: Read>(reader: R, cap: u64) -> io::Result<(Vec<u8>, String)> {
    let mut capped = CappedHashReader::new(reader, cap);
    let mut bytes = Vec::new();
    capped.read_to_end(&mut bytes)?;
    let (sha256, _) = capped.finish();
    Ok((bytes, sha256))
}

/// Wraps a reader: hashes every byte read and fails once more than `cap` bytes have passed.
pub(crate) struct CappedHashReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    cap: u64,
}

impl<R: Read> CappedHashReader<R> {
    pub(crate) fn new(inner: R, cap: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
            cap,
        }
    }

    /// Hex digest and byte count of everything read.
    pub(crate) fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.read)
    }
}

/// The error kind a cap violation surfaces as; callers turn it into their own typed error.
pub(crate) fn is_cap_exceeded(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::FileTooLarge
}

impl<R: Read> Read for CappedHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.cap {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("stream exceeds its limit of {} bytes", self.cap),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Wraps a reader with what it must yield: a stream of exactly `size` bytes with SHA-256
/// `sha256`. A byte past `size`, or at the end a wrong length or digest, makes that read fail
/// (`InvalidData`) instead of returning data or a clean end — in band, so whatever consumes the
/// stream (the extractor) cannot finish on bytes that are not the signed ones (tough's
/// `DigestAdapter`). How they differ is also left in `verdict`, since a decoder between this
/// reader and its consumer may replace the error with its own.
pub(crate) struct VerifyingReader<R> {
    inner: CappedHashReader<R>,
    size: u64,
    sha256: Sha256Digest,
    verdict: Rc<RefCell<Option<String>>>,
}

impl<R: Read> VerifyingReader<R> {
    pub(crate) fn new(
        inner: R,
        size: u64,
        sha256: &Sha256Digest,
        verdict: Rc<RefCell<Option<String>>>,
    ) -> Self {
        Self {
            inner: CappedHashReader::new(inner, u64::MAX),
            size,
            sha256: sha256.clone(),
            verdict,
        }
    }

    fn mismatch(&self, what: String) -> io::Error {
        let error = io::Error::new(io::ErrorKind::InvalidData, what.clone());
        *self.verdict.borrow_mut() = Some(what);
        error
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.inner.read > self.size {
            return Err(self.mismatch(format!("larger than the signed {} bytes", self.size)));
        }
        if n == 0 && !buf.is_empty() {
            let read = self.inner.read;
            let digest = hex::encode(self.inner.hasher.clone().finalize());
            if read != self.size || self.sha256 != digest {
                return Err(self.mismatch(format!(
                    "{read} bytes with sha256 {digest}; the manifest says {} bytes with sha256 {}",
                    self.size, self.sha256
                )));
            }
        }
        Ok(n)
    }
}

/// Wraps a writer: hashes and counts every byte written.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Resumes hashing a stream whose first bytes were already hashed into `hasher`.
    pub(crate) fn resume(inner: W, hasher: Sha256, written: u64) -> Self {
        Self {
            inner,
            hasher,
            written,
        }
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    pub(crate) fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            hex::encode(self.hasher.finalize()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_64_lowercase_hex_digits() {
        let hex = sha256_hex(b"x");
        assert_eq!(Sha256Digest::parse(&hex).unwrap(), Sha256Digest::of(b"x"));
        for bad in [
            "../../etc/passwd",
            "ab",
            &hex.to_uppercase(),
            &format!("{hex}0"),
            "",
        ] {
            let err = Sha256Digest::parse(bad).unwrap_err();
            assert!(err.to_string().contains("64 lowercase hex"), "{err}");
        }
        let parsed: Result<Sha256Digest, _> = serde_json::from_str("\"ABC\"");
        assert!(parsed.is_err());
    }

    #[test]
    fn cap_cuts_the_stream() {
        let data = vec![7u8; 100];
        let mut r = CappedHashReader::new(&data[..], 99);
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(is_cap_exceeded(&err));
        let mut r = CappedHashReader::new(&data[..], 100);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish(), (sha256_hex(&data), 100));
    }

    #[test]
    fn writer_hashes_what_passes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (buf, hex, n) = w.finish();
        assert_eq!((buf.as_slice(), n), (&b"abc"[..], 3));
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
