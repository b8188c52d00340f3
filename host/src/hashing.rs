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
/// `downloads/`, so nothing else may pass. Held as its 32 bytes (a hex `String` took 88 bytes of
/// heap beside it: at 66,000 files, each map of file records carried 6 MB of them), written and
/// read as the hex string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let digits = self.hex_digits();
        s.serialize_str(std::str::from_utf8(&digits).expect("hex is ASCII"))
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = Sha256Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Sha256Digest, E> {
                Sha256Digest::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(Hex)
    }
}

/// A string that is not a [`Sha256Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sha256 {0:?} is not 64 lowercase hex digits")]
pub struct InvalidDigest(pub String);

impl Sha256Digest {
    pub fn parse(s: &str) -> Result<Self, InvalidDigest> {
        let well_formed = s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut bytes = [0u8; 32];
        if well_formed && hex::decode_to_slice(s, &mut bytes).is_ok() {
            Ok(Sha256Digest(bytes))
        } else {
            Err(InvalidDigest(s.to_owned()))
        }
    }

    /// The digest a finished hasher holds.
    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Sha256Digest(hasher.finalize().into())
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// The 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The hex digits in a stack buffer (comparisons and formatting allocate nothing).
    fn hex_digits(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        hex::encode_to_slice(self.0, &mut out).expect("64 digits for 32 bytes");
        out
    }
}

impl TryFrom<&str> for Sha256Digest {
    type Error = InvalidDigest;
    fn try_from(s: &str) -> Result<Self, InvalidDigest> {
        Self::parse(s)
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> String {
        d.to_hex()
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
        let digits = self.hex_digits();
        f.write_str(std::str::from_utf8(&digits).expect("hex is ASCII"))
    }
}

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl PartialEq<str> for Sha256Digest {
    fn eq(&self, other: &str) -> bool {
        self.hex_digits() == other.as_bytes()
    }
}

impl PartialEq<String> for Sha256Digest {
    fn eq(&self, other: &String) -> bool {
        *self == **other
    }
}

impl PartialEq<Sha256Digest> for String {
    fn eq(&self, other: &Sha256Digest) -> bool {
        *other == **self
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of a file's contents.
pub(crate) fn sha256_file(path: &Path) -> io::Result<Sha256Digest> {
    sha256_file_and_size(path).map(|(sha256, _)| sha256)
}

/// Lowercase hex SHA-256 and length of a file's contents, both from the same read (a length from
/// `metadata` could belong to other contents than the hash), read in 64 KiB blocks.
pub(crate) fn sha256_file_and_size(path: &Path) -> io::Result<(Sha256Digest, u64)> {
    let file = BufReader::with_capacity(64 * 1024, File::open(path)?);
    let mut reader = CappedHashReader::new(file, u64::MAX);
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.finish())
}

/// Reads `file` to its end into memory with its SHA-256, failing with [`is_cap_exceeded`]'s
/// kind past `cap` bytes: the one way molt reads a whole file it did not write (keys, a
/// repository's manifest, delta bases). The buffer starts at the file's length (at most `cap`),
/// so a 12 MiB base takes 12 MiB, not the 16 MiB a doubling buffer would reach; the length is
/// only a hint, the bytes read are what count.
pub(crate) fn read_capped(file: File, cap: u64) -> io::Result<(Vec<u8>, Sha256Digest)> {
    let hint = file.metadata().map_or(0, |m| m.len()).min(cap);
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(usize::try_from(hint).unwrap_or(0))?;
    let mut capped = CappedHashReader::new(file, cap);
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

    /// Digest and byte count of everything read.
    pub(crate) fn finish(self) -> (Sha256Digest, u64) {
        (Sha256Digest::from_hasher(self.hasher), self.read)
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

    pub(crate) fn finish(self) -> (W, Sha256Digest, u64) {
        (
            self.inner,
            Sha256Digest::from_hasher(self.hasher),
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
        assert_eq!(r.finish(), (Sha256Digest::of(&data), 100));
    }

    #[test]
    fn writer_hashes_what_passes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (buf, hex, n) = w.finish();
        assert_eq!((buf.as_slice(), n), (&b"abc"[..], 3));
        assert_eq!(
            hex.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
