//! The publisher's half of binary deltas: for each file a patch ships, pick a base among the
//! files of the release the patch starts from, encode the file against it
//! ([`crate::package::delta::encode`]) and keep the delta only where it is smaller than the
//! file compressed on its own.
//!
//! Choosing a base (cheap, from the two listings only):
//! 1. the file at the same path, if the old release has a regular file there;
//! 2. otherwise a file of the old release with the same *shape* of path — every component with
//!    its hash- and version-like parts blanked out (`libstd-8bd6bb5d2f7bd3a8.rlib` and
//!    `libstd-0f3c…​.rlib` are both `libstd-*.rlib`; `foo-1.2.3/index.js` and
//!    `foo-1.3.0/index.js` both `foo-*.*.*/index.js`), the one closest in size;
//! 3. otherwise a file of the old release in the same directory whose name starts with the same
//!    stem (past leading separators, up to the next `-`, `_`, `.` or `+`:
//!    `libLLVM.so.22.1-rust-1.95.0-stable` and `libLLVM.so.22.1-rust-1.97.0-nightly` are both
//!    `libLLVM`, `_tsc.js` and `tsc.js` both `tsc`), at most twice or half its size, the one
//!    closest in size;
//! 4. otherwise a file of the old release in the same directory with the same extension, at
//!    most twice or half its size, the one closest in size;
//! 5. otherwise none: the file ships whole.
//!
//! A file whose base and itself fit [`SINGLE_FRAME_SPAN`] is one frame against the whole base;
//! a larger one (up to [`MAX_DELTA_FILE`], base and file each) is chunked
//! ([`crate::package::delta::encode_chunked`]), so a client decodes any delta within a 16 MiB
//! window and at most a 12 MiB slice of base beside its normal buffers. The bases' bytes come from the old release's
//! full package, streamed once through every extraction check (or, when a re-published release's
//! patches are rebuilt, from its tree on disk); each base is encoded against by a pool of
//! threads while the stream goes on, so at most a few bases are in memory at a time.
//!
//! Deciding: the file is compressed on its own at [`ALONE_LEVEL`] into a counter that gives up
//! as soon as it passes the delta's size, so a good delta costs little more than itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use crate::fsutil;
use crate::hashing::Sha256Digest;
use crate::package::delta::{CHUNKS, encode, encode_chunked, window_log_for, window_log_of};
use crate::package::extract::{self, ExtractError, ExtractLimits};
use crate::relpath::RelPath;
use crate::repo::manifest::{FileDelta, Operations};
use crate::tree::{FileRecord, TreeListing};

/// The most bytes base and file together may span (16 MiB) for the file to be one frame against
/// the whole base: what a client holds to decode it (the base, and a window no larger than the
/// file, whose size the frame declares). Larger files are chunked.
const SINGLE_FRAME_SPAN: u64 = 16 * 1024 * 1024;
/// The largest base, and the largest file, a delta is made for (1 GiB): the publisher holds
/// both in memory while it encodes. Larger files ship whole.
pub(crate) const MAX_DELTA_FILE: u64 = 1 << 30;
/// zstd level at which a file is compressed alone to decide whether its delta is worth
/// shipping. The package compresses a file shipped whole somewhat better (its level, and the
/// files before it), so a delta only just under this estimate may ship where the whole file
/// would have been a little smaller. On the toolchain patch the check took 41 s of CPU at
/// level 12 and 2.9 s at level 3 (mostly spent on large files whose delta is a tenth of them).
const ALONE_LEVEL: i32 = crate::package::archive::FALLBACK_LEVEL;
/// Files smaller than this ship whole: a delta could save only a few bytes.
const MIN_DELTA_FILE: u64 = 256;

/// Where the old release's files are read from.
pub(crate) enum OldRelease<'a> {
    /// Its full package, already checked against the manifest.
    Package(&'a Path, ExtractLimits),
    /// Its tree on disk (the tree being published, when patches from it are rebuilt).
    Tree(&'a Path),
}

/// The deltas worth shipping, one after another in one spool file.
pub(crate) struct Encoded {
    /// The deltas' bytes (removed when this is dropped).
    spool: tempfile::NamedTempFile,
    /// By install path: the delta's offset in the spool, its record (size and SHA-256 of the
    /// delta bytes, the installed file's mode) and what the manifest says of it.
    pub(crate) files: BTreeMap<RelPath, (u64, FileRecord, FileDelta)>,
    /// The largest window any delta needs.
    pub(crate) window_log: u32,
}

impl Encoded {
    /// The spool file the offsets of [`Encoded::files`] point into.
    pub(crate) fn spool(&self) -> &Path {
        self.spool.path()
    }
}

/// Why deltas could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("failed to read {path} for a binary delta: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} changed while the deltas were made (its hash or size differs from the scan); \
         publish from a tree nobody is changing"
    )]
    Changed { path: PathBuf },
    #[error("failed to write a binary delta into {dir}: {source}")]
    Write { dir: PathBuf, source: io::Error },
    #[error("failed to read the earlier release from {path}: {source}")]
    OldPackage {
        path: PathBuf,
        source: Box<ExtractError>,
    },
}

/// One encoding to try: `target` (of the new tree) against the base's bytes.
struct Job {
    base_path: RelPath,
    base: Arc<Vec<u8>>,
    target: RelPath,
}

/// Makes the deltas of a patch from `old` to the tree at `new_root` (`new`, its listing) under
/// `operations`, with scratch files in `scratch` (a directory of the repository). Returns
/// `None` when no delta beats its file.
pub(crate) fn make(
    old: &TreeListing,
    old_files: OldRelease<'_>,
    new_root: &Path,
    new: &TreeListing,
    operations: &Operations,
    scratch: &Path,
) -> Result<Option<Encoded>, DeltaError> {
    let pairs = choose_bases(old, new, operations);
    if pairs.is_empty() {
        return Ok(None);
    }
    let spool = tempfile::Builder::new()
        .prefix(".molt-deltas-")
        .tempfile_in(scratch)
        .map_err(|source| DeltaError::Write {
            dir: scratch.to_owned(),
            source,
        })?;
    let mut by_base: HashMap<RelPath, Vec<RelPath>> = HashMap::new();
    for (target, base) in &pairs {
        by_base
            .entry(base.clone())
            .or_default()
            .push(target.clone());
    }
    let results = Mutex::new(BTreeMap::new());
    let failure: Mutex<Option<DeltaError>> = Mutex::new(None);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (jobs, queue) = mpsc::sync_channel::<Job>(workers);
    let queue = Mutex::new(queue);
    let fail = |e: DeltaError| {
        failure
            .lock()
            .expect("no panics while held")
            .get_or_insert(e);
    };
    let ctx = Worker {
        new_root,
        new,
        old,
        spool: spool.as_file(),
        spool_path: spool.path(),
        spooled: Mutex::new(0),
    };
    let fed = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let job = queue.lock().expect("no panics while held").recv();
                    let Ok(job) = job else { break };
                    match ctx.run(&job) {
                        Ok(Some(done)) => {
                            results
                                .lock()
                                .expect("no panics while held")
                                .insert(job.target.clone(), done);
                        }
                        Ok(None) => {}
                        Err(e) => fail(e),
                    }
                }
            });
        }
        let mut feed = |base_path: &RelPath, bytes: Vec<u8>| {
            let base = Arc::new(bytes);
            for target in by_base.get(base_path).into_iter().flatten() {
                let job = Job {
                    base_path: base_path.clone(),
                    base: Arc::clone(&base),
                    target: target.clone(),
                };
                if jobs.send(job).is_err() {
                    return;
                }
            }
        };
        let fed = read_bases(&old_files, old, &by_base, &mut feed);
        drop(jobs);
        fed
    });
    fed?;
    if let Some(e) = failure.into_inner().expect("no panics while held") {
        return Err(e);
    }
    let files: BTreeMap<_, _> = results.into_inner().expect("no panics while held");
    if files.is_empty() {
        return Ok(None);
    }
    let window_log = files
        .values()
        .map(|(_, _, d): &(u64, FileRecord, FileDelta)| {
            window_log_of(old.files[&d.base].size, d).expect("made to fit")
        })
        .max()
        .expect("not empty");
    Ok(Some(Encoded {
        spool,
        files,
        window_log,
    }))
}

/// The file → base pairs worth trying (see the module docs).
fn choose_bases<'a>(
    old: &'a TreeListing,
    new: &TreeListing,
    operations: &Operations,
) -> BTreeMap<RelPath, RelPath> {
    let regular = |r: &FileRecord| r.link.is_none();
    let mut by_shape: HashMap<String, Vec<(&RelPath, u64)>> = HashMap::new();
    for (path, record) in &old.files {
        if regular(record) {
            by_shape
                .entry(shape(path.as_str()))
                .or_default()
                .push((path, record.size));
        }
    }
    let mut by_stem: HashMap<String, Vec<(&RelPath, u64)>> = HashMap::new();
    let mut by_extension: HashMap<String, Vec<(&RelPath, u64)>> = HashMap::new();
    for (path, record) in &old.files {
        if regular(record) {
            by_stem
                .entry(stem(path))
                .or_default()
                .push((path, record.size));
            if let Some(key) = extension(path) {
                by_extension
                    .entry(key)
                    .or_default()
                    .push((path, record.size));
            }
        }
    }
    let dirs: HashSet<&RelPath> = operations.replace.directories.iter().collect();
    let files: HashSet<&RelPath> = operations.replace.files.iter().collect();
    let mut pairs = BTreeMap::new();
    for (path, record) in &new.files {
        let shipped = files.contains(path) || path.ancestors().any(|a| dirs.contains(&a));
        if !shipped || !regular(record) || record.size < MIN_DELTA_FILE {
            continue;
        }
        // The candidate closest in size among those at most twice or half as large.
        let near = |candidates: Option<&Vec<(&'a RelPath, u64)>>| {
            let near: Vec<_> = candidates?
                .iter()
                .filter(|(_, size)| {
                    *size <= record.size.saturating_mul(2) && record.size <= size.saturating_mul(2)
                })
                .copied()
                .collect();
            closest(&near, record.size)
        };
        let base = match old.files.get(path) {
            Some(r) if regular(r) => Some((path, r.size)),
            _ => by_shape
                .get(&shape(path.as_str()))
                .and_then(|candidates| closest(candidates, record.size))
                .or_else(|| near(by_stem.get(&stem(path))))
                .or_else(|| near(extension(path).and_then(|key| by_extension.get(&key)))),
        };
        let Some((base, base_size)) = base else {
            continue;
        };
        let fits = base_size <= MAX_DELTA_FILE && record.size <= MAX_DELTA_FILE;
        if fits && base_size > 0 && old.files[base].sha256 != record.sha256 {
            pairs.insert(path.clone(), base.clone());
        }
    }
    pairs
}

/// The candidate closest in size to `size` (the first by path among equals).
fn closest<'a>(candidates: &[(&'a RelPath, u64)], size: u64) -> Option<(&'a RelPath, u64)> {
    candidates
        .iter()
        .min_by_key(|(p, s)| (s.abs_diff(size), *p))
        .copied()
}

/// Separators between the parts of a file name.
const NAME_SEPARATORS: [char; 4] = ['-', '_', '.', '+'];

/// A path's directory and the stem of its name: the name, past any leading separators, up to
/// its next `-`, `_`, `.` or `+` (`lib/libLLVM.so.22.1-rust-1.95.0-stable` → `lib/libLLVM`,
/// `lib/_tsc.js` → `lib/tsc`).
fn stem(path: &RelPath) -> String {
    let path = path.as_str();
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let name = name.trim_start_matches(NAME_SEPARATORS);
    let stem = name.split(NAME_SEPARATORS).next().unwrap_or(name);
    format!("{dir}/{stem}")
}

/// A path's directory and the extension of its name (`lib/_tsc.js` → `lib/*.js`); none for a
/// name without one.
fn extension(path: &RelPath) -> Option<String> {
    let path = path.as_str();
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let (rest, ext) = name.rsplit_once('.')?;
    (!rest.is_empty() && !ext.is_empty()).then(|| format!("{dir}/*.{ext}"))
}

/// A path with the parts that change from release to release blanked: in each component, every
/// token (split at `-`, `_`, `.`, `+`, `@`) made only of digits, or of at least 8 hex digits, or of
/// at least 16 letters and digits with a digit among them, becomes `*`.
fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        let digits = token.bytes().filter(u8::is_ascii_digit).count();
        let varying = !token.is_empty()
            && (digits == token.len()
                || (token.len() >= 8 && token.bytes().all(|b| b.is_ascii_hexdigit()))
                || (token.len() >= 16
                    && digits > 0
                    && token.bytes().all(|b| b.is_ascii_alphanumeric())));
        if varying {
            out.push('*');
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in path.chars() {
        if matches!(c, '-' | '_' | '.' | '+' | '@' | '/') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// Hands each base's bytes to `feed`, reading them from the old release.
fn read_bases(
    from: &OldRelease<'_>,
    old: &TreeListing,
    by_base: &HashMap<RelPath, Vec<RelPath>>,
    feed: &mut dyn FnMut(&RelPath, Vec<u8>),
) -> Result<(), DeltaError> {
    match from {
        OldRelease::Package(package, limits) => {
            let wanted: HashSet<RelPath> = by_base.keys().cloned().collect();
            extract::list_reading(package, limits, &wanted, feed).map_err(|source| {
                DeltaError::OldPackage {
                    path: package.to_path_buf(),
                    source: Box::new(source),
                }
            })?;
            Ok(())
        }
        OldRelease::Tree(root) => {
            let mut bases: Vec<&RelPath> = by_base.keys().collect();
            bases.sort();
            for base in bases {
                let record = &old.files[base];
                let path = base.under(root);
                let (bytes, sha256) = read_checked(&path, record.size)?;
                if sha256 != record.sha256 {
                    return Err(DeltaError::Changed { path });
                }
                feed(base, bytes);
            }
            Ok(())
        }
    }
}

/// The bytes of the regular file at `path`, which must have `size` bytes, and their SHA-256.
fn read_checked(path: &Path, size: u64) -> Result<(Vec<u8>, Sha256Digest), DeltaError> {
    let read_err = |source| DeltaError::Read {
        path: path.to_owned(),
        source,
    };
    let file = fsutil::open_regular(path).map_err(read_err)?;
    let changed = || DeltaError::Changed {
        path: path.to_owned(),
    };
    match crate::hashing::read_capped(file, size) {
        Ok((bytes, sha256)) if bytes.len() as u64 == size => Ok((bytes, sha256)),
        Ok(_) => Err(changed()),
        Err(e) if crate::hashing::is_cap_exceeded(&e) => Err(changed()),
        Err(e) => Err(read_err(e)),
    }
}

/// What every encoding thread shares.
struct Worker<'a> {
    new_root: &'a Path,
    new: &'a TreeListing,
    old: &'a TreeListing,
    spool: &'a File,
    spool_path: &'a Path,
    /// The spool's length: where the next delta goes.
    spooled: Mutex<u64>,
}

impl Worker<'_> {
    /// Encodes one file against its base; `None` when the file compressed alone is no larger.
    fn run(&self, job: &Job) -> Result<Option<(u64, FileRecord, FileDelta)>, DeltaError> {
        let record = &self.new.files[&job.target];
        let base_record = &self.old.files[&job.base_path];
        let path = job.target.under(self.new_root);
        let (target, sha256) = read_checked(&path, record.size)?;
        if sha256 != record.sha256 {
            return Err(DeltaError::Changed { path });
        }
        let write_err = |source| DeltaError::Write {
            dir: self.spool_path.to_owned(),
            source,
        };
        let (delta, chunks) = if base_record.size + record.size <= SINGLE_FRAME_SPAN {
            let window_log = window_log_for(base_record.size, record.size)
                .expect("SINGLE_FRAME_SPAN is within the largest window");
            let frame = encode(&job.base, &target, window_log, Vec::new()).map_err(write_err)?;
            (frame, Vec::new())
        } else {
            encode_chunked(&job.base, &target, CHUNKS, Vec::new()).map_err(write_err)?
        };
        if !compresses_above(&target, delta.len() as u64).map_err(write_err)? {
            return Ok(None);
        }
        let offset = {
            let mut spooled = self.spooled.lock().expect("no panics while held");
            let offset = *spooled;
            *spooled += delta.len() as u64;
            offset
        };
        self.spool.write_all_at(&delta, offset).map_err(write_err)?;
        Ok(Some((
            offset,
            FileRecord::regular(Sha256Digest::of(&delta), delta.len() as u64, record.mode),
            FileDelta {
                base: job.base_path.clone(),
                base_sha256: base_record.sha256.clone(),
                size: record.size,
                sha256: record.sha256.clone(),
                chunks,
            },
        )))
    }
}

/// True if `data` compressed on its own takes more than `limit` bytes; stops compressing as
/// soon as it does.
fn compresses_above(data: &[u8], limit: u64) -> io::Result<bool> {
    struct Counter {
        written: u64,
        limit: u64,
    }
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written += buf.len() as u64;
            if self.written > self.limit {
                return Err(io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let counter = Counter { written: 0, limit };
    let mut encoder = zstd::stream::write::Encoder::new(counter, ALONE_LEVEL)?;
    // Sized for this file: without the size zstd allocates and clears tables for any input,
    // which at 50,000 files costs more than the compression.
    encoder.set_pledged_src_size(Some(data.len() as u64))?;
    encoder.include_checksum(false)?;
    let over = encoder
        .write_all(data)
        .and_then(|()| encoder.finish().map(|_| ()));
    Ok(over.is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_blank_hashes_and_versions_only() {
        assert_eq!(
            shape("lib/rustlib/x86_64-unknown-linux-gnu/lib/libstd-8bd6bb5d2f7bd3a8.rlib"),
            "lib/rustlib/x86_*-unknown-linux-gnu/lib/libstd-*.rlib"
        );
        assert_eq!(
            shape("node_modules/foo-1.2.3/index.js"),
            "node_modules/foo-*.*.*/index.js"
        );
        assert_eq!(shape("assets/app.3f9a2c1e.js"), "assets/app.*.js");
        assert_eq!(shape("bin/app"), "bin/app");
        assert_eq!(shape("src/deadbeef"), "src/*");
        assert_eq!(shape("docs/readme.md"), "docs/readme.md");
    }

    #[test]
    fn stems_keep_the_directory_and_the_name_up_to_its_first_separator() {
        let stem_of = |p: &str| stem(&RelPath::new(p).unwrap());
        assert_eq!(
            stem_of("lib/libLLVM.so.22.1-rust-1.95.0-stable"),
            stem_of("lib/libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        assert_eq!(
            stem_of("lib/libLLVM.so.22.1-rust-1.95.0-stable"),
            "lib/libLLVM"
        );
        assert_ne!(stem_of("lib/libLLVM.so"), stem_of("bin/libLLVM.so"));
        assert_eq!(stem_of("app"), "/app");
        // A leading separator is not the stem: `_tsc.js` (TypeScript 5.7) is based on `tsc.js`.
        assert_eq!(stem_of("lib/_tsc.js"), stem_of("lib/tsc.js"));
    }

    #[test]
    fn extensions_keep_the_directory() {
        let ext_of = |p: &str| extension(&RelPath::new(p).unwrap());
        assert_eq!(ext_of("lib/_tsc.js").as_deref(), Some("lib/*.js"));
        assert_eq!(ext_of("lib/a.b.so").as_deref(), Some("lib/*.so"));
        assert_eq!(ext_of("bin/tool"), None);
        assert_eq!(ext_of(".bashrc"), None);
        assert_eq!(ext_of("x."), None);
    }

    #[test]
    fn compressing_stops_at_the_limit() {
        let noise: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(compresses_above(&noise, 1000).unwrap());
        assert!(!compresses_above(&vec![0u8; 100_000], 1000).unwrap());
    }
}
