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
//!
//! A large file is *chunked* ([`encode_chunked`]): cut into [`CHUNKS`]`.chunk`-byte pieces, each
//! its own frame against a `CHUNKS.slice`-byte slice of the base, so decoding it holds one slice
//! and one chunk's window, whatever the size of either file. The publisher picks each slice
//! where the chunk's content lies in the base: positions whose 8 bytes hash into one value in
//! 2,048 are *anchors*, the same content gives the same anchors in both files, and the slice
//! covers most of the base offsets of the chunk's anchors (a window over the sorted offsets);
//! a chunk with no anchor in the base takes the slice at its proportional place. On two
//! releases of a compiler toolchain this beat one frame against the whole base: `libLLVM.so`
//! (200 MB) 18.8 MB against 36.8 MB (55.1 MB alone, all at level 12), because a match finder
//! indexes a 12 MiB prefix densely and a 200 MB one only through long-distance matching. Chunks
//! are encoded with zstd's fast strategy and whole files at level 9 ([`CHUNK_HASH_LOG`] says
//! why): the same libLLVM is 20.4 MB in 3.3 s of CPU, against 15.2 s at level 12.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use zstd::stream::raw::CParameter;

use crate::fsutil;
use crate::hashing::HashingWriter;
use crate::relpath::RelPath;
use crate::repo::manifest::{
    DeltaChunk, DeltaPackage, FileDelta, MAX_DELTA_WINDOW_LOG, MIN_DELTA_WINDOW_LOG,
};
use crate::tree::FileRecord;

/// zstd level of a whole-file delta (the packages' level): at most 16 MiB of base and file
/// together, which level 9's match finder indexes well.
const WHOLE_DELTA_LEVEL: i32 = crate::package::archive::ZSTD_LEVEL;
/// log2 of the hash table of a chunk's frame (8M entries, 32 MiB). Chunks are encoded with
/// zstd's fast strategy: against a 12 MiB slice of a large binary, the lazy match finders of the
/// higher levels miss the cache on nearly every byte. On the toolchain bench's chunked files
/// (libLLVM, librustc_driver, cargo, libcore's metadata: 11 files, 530 MiB) level 12 took 55 s of
/// CPU for 91 MiB of deltas and this 13 s for 103 MiB; level 9 did worse than both on libLLVM
/// (28.3 MB against 18.5 and 20.4). A table of 2^24 entries saved 0.5 % for a third more time.
const CHUNK_HASH_LOG: u32 = 23;
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

/// Encodes the whole file `target` against its whole `base` with window `window_log` into
/// `out`.
pub(crate) fn encode<W: Write>(
    base: &[u8],
    target: &[u8],
    window_log: u32,
    out: W,
) -> io::Result<W> {
    encode_frame(base, target, (window_log, Frame::Whole), out)
}

/// What a frame encodes, which sets how hard its matches are searched for.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// A whole file against its whole base: [`WHOLE_DELTA_LEVEL`].
    Whole,
    /// A chunk of a large file against a slice of its base: the fast strategy with a hash table
    /// of up to 2^[`CHUNK_HASH_LOG`] entries.
    Chunk,
}

fn encode_frame<W: Write>(
    base: &[u8],
    target: &[u8],
    (window_log, frame): (u32, Frame),
    out: W,
) -> io::Result<W> {
    let target_len = target.len() as u64;
    let level = match frame {
        Frame::Whole => WHOLE_DELTA_LEVEL,
        Frame::Chunk => 1,
    };
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(out, level, base)?;
    // The frame then declares the file's size, and the decoder's buffer is no larger than it.
    encoder.set_pledged_src_size(Some(target_len))?;
    encoder.window_log(window_log)?;
    if let Frame::Chunk = frame {
        encoder.set_parameter(CParameter::HashLog(window_log.min(CHUNK_HASH_LOG)))?;
    }
    // Long-distance matching pays off only for bases beyond what the regular match finder
    // indexes well; below that its tables cost more time than they save bytes.
    encoder.long_distance_matching(base.len() as u64 + target_len > LDM_SPAN)?;
    encoder.include_checksum(false)?;
    encoder.write_all(target)?;
    encoder.finish()
}

/// How a chunked delta cuts its file: `chunk` bytes of output per frame, each against at most
/// `slice` bytes of the base.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkGeometry {
    pub(crate) chunk: usize,
    pub(crate) slice: usize,
}

/// The publisher's chunks: 4 MiB against 12 MiB of base, a 16 MiB window (`window_log` 24).
pub(crate) const CHUNKS: ChunkGeometry = ChunkGeometry {
    chunk: 4 << 20,
    slice: 12 << 20,
};

/// One position in `1 << ANCHOR_BITS` is an anchor (see the module docs).
const ANCHOR_BITS: u32 = 11;

/// The anchor key at `window` (8 bytes), if it is one.
fn anchor(window: &[u8]) -> Option<u64> {
    let key = u64::from_le_bytes(window.try_into().expect("8 bytes"));
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - ANCHOR_BITS) == 0).then_some(key)
}

/// Where each anchor key occurs in a base, if it occurs exactly once there (a repeated key says
/// nothing about where content lies).
struct Anchors(HashMap<u64, Option<u64>>);

impl Anchors {
    fn of(base: &[u8]) -> Self {
        let mut map = HashMap::new();
        for (offset, window) in base.windows(8).enumerate() {
            if let Some(key) = anchor(window) {
                map.entry(key)
                    .and_modify(|at: &mut Option<u64>| *at = None)
                    .or_insert(Some(offset as u64));
            }
        }
        Anchors(map)
    }

    /// The slice of a `base_len`-byte base that `chunk` (at `offset` in a `target_len`-byte
    /// file) is encoded against: `(base_offset, base_size)`.
    fn slice_for(
        &self,
        chunk: &[u8],
        offset: usize,
        (base_len, target_len): (usize, usize),
        slice: usize,
    ) -> (usize, usize) {
        let size = slice.min(base_len);
        let mut hits: Vec<u64> = chunk
            .windows(8)
            .filter_map(anchor)
            .filter_map(|key| self.0.get(&key).copied().flatten())
            .collect();
        hits.sort_unstable();
        let centre = if hits.is_empty() {
            let middle = offset as u128 + chunk.len() as u128 / 2;
            (middle * base_len as u128 / target_len.max(1) as u128) as usize
        } else {
            // The most hits within one slice's width; the slice is centred on them.
            let (mut best, mut first, mut last, mut lo) = (0, 0, 0, 0);
            for hi in 0..hits.len() {
                while hits[hi] - hits[lo] > size as u64 {
                    lo += 1;
                }
                if hi - lo + 1 > best {
                    (best, first, last) = (hi - lo + 1, hits[lo], hits[hi]);
                }
            }
            ((first + last) / 2) as usize
        };
        (centre.saturating_sub(size / 2).min(base_len - size), size)
    }
}

/// Encodes `target` against `base` in chunks of `geometry` into `out`: the frames, in order,
/// and what the manifest says of each.
pub(crate) fn encode_chunked<W: Write>(
    base: &[u8],
    target: &[u8],
    geometry: ChunkGeometry,
    mut out: W,
) -> io::Result<(W, Vec<DeltaChunk>)> {
    let anchors = Anchors::of(base);
    let mut chunks = Vec::with_capacity(target.len().div_ceil(geometry.chunk));
    for (i, piece) in target.chunks(geometry.chunk).enumerate() {
        let at = i * geometry.chunk;
        let (base_offset, base_size) =
            anchors.slice_for(piece, at, (base.len(), target.len()), geometry.slice);
        let prefix = &base[base_offset..base_offset + base_size];
        let window_log = window_log_for(base_size as u64, piece.len() as u64).ok_or_else(|| {
            io::Error::other("a chunk and its slice exceed the largest delta window")
        })?;
        out = encode_frame(prefix, piece, (window_log, Frame::Chunk), out)?;
        chunks.push(DeltaChunk {
            size: piece.len() as u64,
            base_offset: base_offset as u64,
            base_size: base_size as u64,
        });
    }
    Ok((out, chunks))
}

/// The window a delta needs: the largest of its frames', each covering its prefix and output.
pub(crate) fn window_log_of(base_len: u64, file: &FileDelta) -> Option<u32> {
    if file.chunks.is_empty() {
        return window_log_for(base_len, file.size);
    }
    file.chunks
        .iter()
        .map(|c| window_log_for(c.base_size, c.size))
        .try_fold(MIN_DELTA_WINDOW_LOG, |most, log| Some(most.max(log?)))
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

    /// [`Bases::get`], with the table's own copy of the path, for a listing to share.
    pub(crate) fn get_key_value(&self, path: &RelPath) -> Option<(&'a RelPath, &'a FileDelta)> {
        self.delta.files.get_key_value(path)
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

    /// The base of a chunked `file`, opened (never through a link) and hashed whole against
    /// its signed hash: its slices are then read from this same open file.
    pub(crate) fn open(&self, file: &FileDelta) -> Result<BaseFile, BaseReadError> {
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
        let mut opened = fsutil::open_regular(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => fail("is missing".into()),
            _ => fail(e.to_string()),
        })?;
        let mut hashing = HashingWriter::new(io::sink());
        io::copy(&mut opened, &mut hashing).map_err(|e| fail(e.to_string()))?;
        let (_, sha256, _) = hashing.finish();
        if sha256 != file.base_sha256 {
            return Err(fail(format!(
                "was modified (sha256 {sha256}, the delta needs {})",
                file.base_sha256
            )));
        }
        Ok(BaseFile { file: opened })
    }

    /// A reader of one decoded frame, from `raw` (the delta entry's bytes, buffered so that
    /// the next frame's bytes stay in `raw`) and `prefix` (the base, or a chunk's slice of it):
    /// within the declared window.
    pub(crate) fn decoder<'b, R: BufRead>(
        &self,
        raw: R,
        prefix: &'b [u8],
    ) -> io::Result<zstd::stream::read::Decoder<'b, R>> {
        let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(raw, prefix)?.single_frame();
        decoder.window_log_max(self.delta.window_log)?;
        Ok(decoder)
    }
}

/// A chunked delta's base, checked whole against its signed hash.
pub(crate) struct BaseFile {
    file: File,
}

impl BaseFile {
    /// Reads `chunk`'s slice of the base into `into`.
    pub(crate) fn read_slice(&self, chunk: &DeltaChunk, into: &mut Vec<u8>) -> io::Result<()> {
        let size = usize::try_from(chunk.base_size).map_err(io::Error::other)?;
        into.clear();
        into.resize(size, 0);
        self.file
            .read_exact_at(into, chunk.base_offset)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    e.kind(),
                    format!(
                        "its slice {}..{} lies past the end of its base",
                        chunk.base_offset,
                        chunk.base_offset + chunk.base_size
                    ),
                ),
                _ => e,
            })
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
    use std::io::Read;

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
                    chunks: Vec::new(),
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
