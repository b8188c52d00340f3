//! Binary deltas: one file encoded as a zstd frame against a *base* — a file of the release the
//! patch starts from — used as the frame's reference prefix (what `zstd --patch-from` does), so
//! a file that changed a little, or was only renamed, costs the bytes that differ.
//!
//! Both halves live here so they cannot drift apart: [`encode`] (the publisher) and
//! [`Bases`] with [`Bases::decoder`] (the extractor). Memory is bounded on both sides: a base
//! is read whole (it is the prefix) but only up to `1 << window_log` bytes, and the decoder
//! refuses a frame that needs a larger window than the manifest declared, which is itself at
//! most [`MAX_DELTA_WINDOW_LOG`]. The decoded bytes are never trusted: the extractor hashes
//! and counts them against the signed size and SHA-256 of the file, like any other entry.
//!
//! Bases are read from the install only if molt's state records them with the signed hash
//! (a file molt does not own is never read), and their bytes are hashed again when read for
//! decoding, so a base changed after the check fails the extraction instead of decoding into
//! a wrong file. [`Bases::check`] is what lets the client choose: every base as signed → the
//! delta package; any base missing or modified → the plain package (a local edit never fails an
//! update).

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::relpath::RelPath;
use crate::repo::manifest::{DeltaPackage, FileDelta, MAX_DELTA_WINDOW_LOG, MIN_DELTA_WINDOW_LOG};
use crate::tree::FileRecord;

/// zstd level of deltas: the packages' level, so a delta and a whole file compete fairly.
const DELTA_LEVEL: i32 = crate::package::archive::ZSTD_LEVEL;
/// Base + file sizes above which a delta uses long-distance matching (16 MiB).
const LDM_SPAN: u64 = 16 * 1024 * 1024;

/// The window a delta of `target_len` bytes against a base of `base_len` bytes needs: the
/// decoder must reach back over the whole base from the end of the file. `None` when that is
/// more than [`MAX_DELTA_WINDOW_LOG`] allows.
pub(crate) fn window_log_for(base_len: u64, target_len: u64) -> Option<u32> {
    let span = base_len.checked_add(target_len)?.max(1);
    let log = (u64::BITS - (span - 1).leading_zeros()).max(MIN_DELTA_WINDOW_LOG);
    (log <= MAX_DELTA_WINDOW_LOG).then_some(log)
}

/// Encodes `target` against `base` with window `window_log` into `out`.
pub(crate) fn encode<W: Write>(
    base: &[u8],
    target: &[u8],
    window_log: u32,
    out: W,
) -> io::Result<W> {
    let target_len = target.len() as u64;
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(out, DELTA_LEVEL, base)?;
    // The frame then declares the file's size, and the decoder's buffer is no larger than it.
    encoder.set_pledged_src_size(Some(target_len))?;
    encoder.window_log(window_log)?;
    // Long-distance matching pays off only for bases beyond what the regular match finder
    // indexes well; below that its tables cost more time than they save bytes.
    encoder.long_distance_matching(base.len() as u64 + target_len > LDM_SPAN)?;
    encoder.include_checksum(false)?;
    encoder.write_all(target)?;
    encoder.finish()
}

/// Why a delta's base cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{base} (the base of {path}) {reason}")]
pub struct BaseMismatch {
    pub path: RelPath,
    pub base: RelPath,
    pub reason: String,
}

/// The installed files the deltas of one package decode against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bases<'a> {
    /// The install root the bases are read from.
    pub(crate) root: &'a Path,
    pub(crate) delta: &'a DeltaPackage,
}

impl<'a> Bases<'a> {
    pub(crate) fn new(root: &'a Path, delta: &'a DeltaPackage) -> Self {
        Self { root, delta }
    }

    /// The delta for the entry at `path`, if it is one.
    pub(crate) fn get(&self, path: &RelPath) -> Option<&'a FileDelta> {
        self.delta.files.get(path)
    }

    /// Checks that every base is a file molt owns (`owned`, the install's state) recorded with
    /// the signed hash, and is still a regular file of the recorded size — cheap, from metadata;
    /// the contents are hashed when they are decoded against ([`Bases::read`]). The first base
    /// that fails is returned.
    pub(crate) fn check(&self, owned: &BTreeMap<RelPath, FileRecord>) -> Result<(), BaseMismatch> {
        for (path, file) in &self.delta.files {
            let mismatch = |reason: String| BaseMismatch {
                path: path.clone(),
                base: file.base.clone(),
                reason,
            };
            let recorded = match owned.get(&file.base) {
                Some(r) if r.link.is_none() && r.sha256 == file.base_sha256 => r,
                Some(_) => return Err(mismatch("was installed with other contents".into())),
                None => return Err(mismatch("is not a file molt installed".into())),
            };
            let on_disk = file.base.under(self.root);
            match std::fs::symlink_metadata(&on_disk) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(mismatch("is now a symbolic link".into()));
                }
                Ok(m) if !m.is_file() => {
                    return Err(mismatch("is no longer a regular file".into()));
                }
                Ok(m) if m.len() != recorded.size => {
                    return Err(mismatch(format!(
                        "was modified ({} bytes, installed with {})",
                        m.len(),
                        recorded.size
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(mismatch("is missing".into()));
                }
                Err(e) => return Err(mismatch(e.to_string())),
            }
        }
        Ok(())
    }

    /// The bytes of `file`'s base, checked against its signed hash.
    pub(crate) fn read(&self, file: &FileDelta) -> Result<Vec<u8>, BaseReadError> {
        let path = file.base.under(self.root);
        let fail = |reason: String| BaseReadError {
            path: path.clone(),
            reason,
        };
        if fsutil::entry_kind(&path)
            .map_err(|e| fail(e.to_string()))?
            .is_some_and(|k| k == fsutil::EntryKind::Symlink)
        {
            return Err(fail("is now a symbolic link".into()));
        }
        let opened = fsutil::open_regular(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => fail("is missing".into()),
            _ => fail(e.to_string()),
        })?;
        let cap = 1u64 << self.delta.window_log;
        let (bytes, sha256) = crate::hashing::read_capped(opened, cap).map_err(|e| {
            if crate::hashing::is_cap_exceeded(&e) {
                fail(format!("is larger than the delta window of {cap} bytes"))
            } else {
                fail(e.to_string())
            }
        })?;
        if sha256 != file.base_sha256 {
            return Err(fail(format!(
                "was modified (sha256 {sha256}, the delta needs {})",
                file.base_sha256
            )));
        }
        Ok(bytes)
    }

    /// A reader of the decoded file, from `raw` (the delta entry's bytes) and `base` (from
    /// [`Bases::read`]): one zstd frame, within the declared window.
    pub(crate) fn decoder<'b, R: Read>(
        &self,
        raw: R,
        base: &'b [u8],
    ) -> io::Result<zstd::stream::read::Decoder<'b, BufReader<R>>> {
        let mut decoder =
            zstd::stream::read::Decoder::with_ref_prefix(BufReader::new(raw), base)?.single_frame();
        decoder.window_log_max(self.delta.window_log)?;
        Ok(decoder)
    }
}

/// A base that could not be read, or no longer has its signed hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delta base {path} {reason}")]
pub struct BaseReadError {
    pub path: PathBuf,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::Sha256Digest;
    use crate::repo::manifest::{Package, PackageUrl};

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn delta_for(base: &[u8], target: &[u8], window_log: u32) -> DeltaPackage {
        DeltaPackage {
            package: Package {
                url: PackageUrl::new("p.tar.zst").unwrap(),
                size: 1,
                sha256: Sha256Digest::of(b""),
                unpacked_size: target.len() as u64,
            },
            window_log,
            files: [(
                rel("new"),
                FileDelta {
                    base: rel("old"),
                    base_sha256: Sha256Digest::of(base),
                    size: target.len() as u64,
                    sha256: Sha256Digest::of(target),
                },
            )]
            .into_iter()
            .collect(),
        }
    }

    fn sample() -> (Vec<u8>, Vec<u8>) {
        let base: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let mut target = base.clone();
        target[1000..1010].copy_from_slice(b"0123456789");
        target.extend_from_slice(b"appended");
        (base, target)
    }

    #[test]
    fn a_delta_round_trips_and_is_a_fraction_of_the_file() {
        let (base, target) = sample();
        let log = window_log_for(base.len() as u64, target.len() as u64).unwrap();
        let encoded = encode(&base, &target, log, Vec::new()).unwrap();
        assert!(
            encoded.len() < target.len() / 100,
            "{} bytes",
            encoded.len()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), &base).unwrap();
        let delta = delta_for(&base, &target, log);
        let bases = Bases::new(dir.path(), &delta);
        let read = bases.read(&delta.files[&rel("new")]).unwrap();
        let mut decoded = Vec::new();
        bases
            .decoder(&encoded[..], &read)
            .unwrap()
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, target);
    }

    #[test]
    fn a_frame_needing_a_larger_window_than_declared_is_refused() {
        let (base, target) = sample();
        let encoded = encode(&base, &target, 22, Vec::new()).unwrap();
        let delta = delta_for(&base, &target, MIN_DELTA_WINDOW_LOG);
        let bases = Bases::new(Path::new("/nonexistent"), &delta);
        let mut decoded = Vec::new();
        let result = bases
            .decoder(&encoded[..], &base)
            .unwrap()
            .read_to_end(&mut decoded);
        assert!(result.is_err(), "decoded {} bytes", decoded.len());
    }

    #[test]
    fn a_modified_missing_or_unowned_base_is_named() {
        let (base, target) = sample();
        let dir = tempfile::tempdir().unwrap();
        let delta = delta_for(&base, &target, 22);
        let bases = Bases::new(dir.path(), &delta);
        let record = FileRecord::regular(Sha256Digest::of(&base), base.len() as u64, 0o644);
        let owned: BTreeMap<RelPath, FileRecord> = [(rel("old"), record)].into_iter().collect();
        let err = bases.check(&owned).unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
        std::fs::write(dir.path().join("old"), b"edited").unwrap();
        let err = bases.check(&owned).unwrap_err();
        assert!(err.to_string().contains("was modified"), "{err}");
        std::fs::write(dir.path().join("old"), &base).unwrap();
        bases.check(&owned).unwrap();
        let err = bases.check(&BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string().contains("not a file molt installed"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("old")).unwrap();
        std::os::unix::fs::symlink("elsewhere", dir.path().join("old")).unwrap();
        let err = bases.check(&owned).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn windows_cover_base_and_file_and_are_capped() {
        assert_eq!(window_log_for(0, 0), Some(MIN_DELTA_WINDOW_LOG));
        assert_eq!(window_log_for(1 << 20, 1 << 20), Some(21));
        assert_eq!(window_log_for((1 << 20) + 1, 1 << 20), Some(22));
        assert_eq!(window_log_for(1 << 26, 1 << 26), Some(27));
        assert_eq!(window_log_for(1 << 27, 1), None);
    }
}
