//! A patch's delta package decoded against the installed bases, the way `molt apply` does it:
//! the delta table goes through the manifest's own checks (a [`Patch`] parsed from JSON), then
//! a transaction's stage is extracted with [`molt::package::fuzzing::extract_delta`].
//!
//! Input: `[flags, window_log, size (u32 LE), chunk count, chunks…, frames…]`. Flags bit 0
//! picks the delta file: `bin/app` against the installed `bin/app`, or `lib/libfoo.so.2`
//! against the installed `lib/libfoo.so.1` (a renamed base). Bit 1: one byte of that base is
//! changed on disk after the client checked it (same size and mode, so only the hash can tell).
//! Bit 2: the package's plain entry `conf/app.yml` comes before the delta entry instead of
//! after it. The signed size of the delta file is `size` modulo 8 MiB, its signed SHA-256 is
//! always the real new release's; the chunk count is taken modulo 17 and each chunk is three
//! u32 LE (`size`, `base_offset`, `base_size`); the rest is the delta entry's bytes, which the
//! target packs into a zstd tar with the plain entry.
//!
//! Invariants: the install (bases included) and the state dir stay byte-identical; an accepted
//! package's stage holds exactly the listing, and the delta file is the real new release's
//! bytes (its signed hash) decoded from an unmodified base; a base modified after the check is
//! never decoded into a file; the publisher's own encoding of the real files (whole, or chunked
//! with the table it wrote) is never refused; a refused package leaves no stage behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{open_state, scratch, snapshot};
use molt::hashing::Sha256Digest;
use molt::relpath::RelPath;
use molt::repo::manifest::{
    DeltaChunk, DeltaPackage, FileDelta, MAX_DELTA_WINDOW_LOG, Operations, Package, PackageUrl,
    Patch, PathSet,
};
use molt::state::StateDir;
use molt::txn::Transaction;
use molt::version::Version;

/// The plain entry of every package.
pub const CONF: (&str, &[u8]) = ("conf/app.yml", b"level: 2\n");
/// Geometry of the chunked seeds (the publisher's is 4 MiB / 12 MiB; the fuzzer's files are
/// small, so its chunks are too).
pub const CHUNK: usize = 32 << 10;
pub const SLICE: usize = 64 << 10;

/// One file a delta can rebuild: its install path, its base (installed), and its new bytes.
pub struct DeltaFile {
    pub path: &'static str,
    pub base_path: &'static str,
    pub base: Vec<u8>,
    pub target: Vec<u8>,
}

/// What the publisher writes for a file: the entry's frames and the chunk table (empty: one
/// frame against the whole base).
#[derive(PartialEq, Eq)]
pub struct Encoding {
    pub frames: Vec<u8>,
    pub chunks: Vec<DeltaChunk>,
}

struct World {
    root: PathBuf,
    state: StateDir,
    files: [DeltaFile; 2],
    /// The publisher's encodings of each file: whole, and (for the large one) chunked.
    encodings: [Vec<Encoding>; 2],
}

/// Deterministic bytes that compress somewhat (words from a small alphabet), like a binary's
/// string tables and code more than like noise.
fn pseudo_text(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = (x % 4096) as u32;
        out.extend_from_slice(format!("{word:x}").as_bytes());
        out.push(if x & 0x30 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// The two files of the scenario, base and new release. The small one changes in place; the
/// large one is renamed and gains an insertion and a moved block, so its chunks find their
/// content at other offsets of the base.
pub fn files() -> [DeltaFile; 2] {
    let small = pseudo_text(7, 48 << 10);
    let mut small_new = small.clone();
    small_new[1000..1016].copy_from_slice(b"app version 2.0\n");
    small_new.extend_from_slice(b"--help prints this\n");
    let large = pseudo_text(11, 160 << 10);
    let mut large_new = large[..40 << 10].to_vec();
    large_new.extend_from_slice(&pseudo_text(13, 20 << 10));
    large_new.extend_from_slice(&large[100 << 10..]);
    large_new.extend_from_slice(&large[40 << 10..100 << 10]);
    [
        DeltaFile {
            path: "bin/app",
            base_path: "bin/app",
            base: small,
            target: small_new,
        },
        DeltaFile {
            path: "lib/libfoo.so.2",
            base_path: "lib/libfoo.so.1",
            base: large,
            target: large_new,
        },
    ]
}

/// The publisher's encodings of `file`: one frame against the whole base, and for a file
/// larger than one chunk the chunked frames and their table.
pub fn encodings(file: &DeltaFile) -> Vec<Encoding> {
    let mut out = vec![Encoding {
        frames: molt::package::fuzzing::encode_whole(&file.base, &file.target)
            .expect("the scenario's files fit one window"),
        chunks: Vec::new(),
    }];
    if file.target.len() > CHUNK {
        let (frames, chunks) =
            molt::package::fuzzing::encode_chunked(&file.base, &file.target, CHUNK, SLICE);
        out.push(Encoding { frames, chunks });
    }
    out
}

/// The window the publisher declares for `encoding` of `file`.
pub fn window_log(file: &DeltaFile, encoding: &Encoding) -> u32 {
    molt::package::fuzzing::window_log(
        file.base.len() as u64,
        &file_delta(file, file.target.len() as u64, encoding.chunks.clone()),
    )
    .expect("the scenario's deltas fit a window")
}

/// The input that carries `encoding` of file `which` with `flags` (bit 0 is set from `which`).
pub fn input(which: usize, flags: u8, window_log: u32, size: u64, encoding: &Encoding) -> Vec<u8> {
    let mut out = vec![(flags & !1) | which as u8, window_log as u8];
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.push(encoding.chunks.len() as u8);
    for c in &encoding.chunks {
        for v in [c.size, c.base_offset, c.base_size] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
    }
    out.extend_from_slice(&encoding.frames);
    out
}

fn file_delta(file: &DeltaFile, size: u64, chunks: Vec<DeltaChunk>) -> FileDelta {
    FileDelta {
        base: RelPath::new(file.base_path).unwrap(),
        base_sha256: Sha256Digest::of(&file.base),
        size,
        sha256: Sha256Digest::of(&file.target),
        chunks,
    }
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let root = scratch("delta");
        let files = files();
        for f in &files {
            let p = root.join("install").join(f.base_path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, &f.base).unwrap();
        }
        let encodings = [encodings(&files[0]), encodings(&files[1])];
        World {
            state: open_state(&root),
            root,
            files,
            encodings,
        }
    })
}

/// The package: the delta entry and the plain one, in the order `plain_first` says.
fn package(path: &str, frames: &[u8], plain_first: bool) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(bytes.len() as u64);
        h.set_mode(mode);
        tar.append_data(&mut h, name, bytes).unwrap();
    };
    if plain_first {
        add(CONF.0, CONF.1, 0o644);
    }
    add(path, frames, 0o755);
    if !plain_first {
        add(CONF.0, CONF.1, 0o644);
    }
    zstd::encode_all(&tar.into_inner().unwrap()[..], 1).unwrap()
}

/// The patch a client would read from a signed manifest, through the manifest's own checks
/// (serialized and parsed again, so a table the client refuses never reaches the decoder).
fn patch(
    file: &DeltaFile,
    delta_file: FileDelta,
    window_log: u32,
    package: &[u8],
) -> Result<Patch, serde_json::Error> {
    let ops = Operations::new(
        PathSet {
            files: vec![
                RelPath::new(file.path).unwrap(),
                RelPath::new(CONF.0).unwrap(),
            ],
            directories: Vec::new(),
        },
        PathSet::default(),
    )
    .unwrap();
    let unpacked = delta_file.size + CONF.1.len() as u64;
    let described = |url: &str| Package {
        url: PackageUrl::new(url).unwrap(),
        size: package.len() as u64,
        sha256: Sha256Digest::of(package),
        unpacked_size: unpacked,
    };
    let patch = Patch {
        from: Version::parse("1.0.0").unwrap(),
        package: described("patches/1.0.0-2.0.0.tar.zst"),
        operations: ops,
        delta: Some(DeltaPackage {
            package: described("patches/1.0.0-2.0.0.delta.tar.zst"),
            window_log,
            files: [(RelPath::new(file.path).unwrap(), delta_file)].into(),
        }),
    };
    serde_json::from_value(serde_json::to_value(&patch)?)
}

/// One input: see the module doc for its layout and the invariants it asserts.
pub fn check(data: &[u8]) {
    let [flags, window_log, s0, s1, s2, s3, count, rest @ ..] = data else {
        return;
    };
    let count = usize::from(*count % 17);
    if rest.len() < count * 12 {
        return;
    }
    let (table, frames) = rest.split_at(count * 12);
    let u32_at = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().unwrap()));
    let chunks: Vec<DeltaChunk> = table
        .chunks(12)
        .map(|c| DeltaChunk {
            size: u32_at(&c[0..4]),
            base_offset: u32_at(&c[4..8]),
            base_size: u32_at(&c[8..12]),
        })
        .collect();
    let size = u64::from(u32::from_le_bytes([*s0, *s1, *s2, *s3])) % (8 << 20);
    let which = usize::from(flags & 1);
    let (modified, plain_first) = (flags & 2 != 0, flags & 4 != 0);
    let w = world();
    let file = &w.files[which];
    let encoding = Encoding {
        frames: frames.to_vec(),
        chunks: chunks.clone(),
    };
    let canonical = !modified
        && size == file.target.len() as u64
        && w.encodings[which].iter().any(|e| {
            *e == encoding
                && (self::window_log(file, e)..=MAX_DELTA_WINDOW_LOG)
                    .contains(&u32::from(*window_log))
        });

    let bytes = package(file.path, frames, plain_first);
    let patch = match patch(
        file,
        file_delta(file, size, chunks),
        u32::from(*window_log),
        &bytes,
    ) {
        Ok(p) => p,
        Err(e) => {
            assert!(
                !canonical,
                "the publisher's own delta table was refused: {e}"
            );
            return;
        }
    };
    let delta = patch.delta.as_ref().expect("the patch keeps its delta");
    let package_path = w.root.join("package.tar.zst");
    fs::write(&package_path, &bytes).unwrap();

    let base_path = w.root.join("install").join(file.base_path);
    if modified {
        let mut changed = file.base.clone();
        changed[file.base.len() / 2] ^= 0x20;
        fs::write(&base_path, &changed).unwrap();
    }
    let outside = |root: &Path| snapshot(root, &["state/txn", "package.tar.zst"]);
    let before = outside(&w.root);

    let txn = Transaction::begin(&w.state, 1).unwrap();
    let stage = txn.stage_dir();
    let txn_dir = txn.dir().to_owned();
    let result = molt::package::fuzzing::extract_delta(
        &package_path,
        &stage,
        &molt::package::fuzzing::limits(patch.package.unpacked_size),
        &patch.operations,
        &w.root.join("install"),
        delta,
    );
    match result {
        Ok(listing) => {
            assert!(!modified, "a delta decoded against a modified base");
            let staged = fs::read(stage.join(file.path)).unwrap();
            assert!(
                staged == file.target,
                "{} decoded to other bytes",
                file.path
            );
            assert_eq!(fs::read(stage.join(CONF.0)).unwrap(), CONF.1);
            let record = &listing.files[&RelPath::new(file.path).unwrap()];
            assert_eq!(record.sha256, Sha256Digest::of(&file.target));
            assert_eq!(record.size, file.target.len() as u64);
            assert_eq!(record.mode, 0o755);
            assert_eq!(
                listing.files.len(),
                2,
                "the stage holds more than the patch"
            );
            let on_disk = walkdir::WalkDir::new(&stage)
                .min_depth(1)
                .into_iter()
                .filter(|e| e.as_ref().unwrap().file_type().is_file())
                .count();
            assert_eq!(on_disk, 2, "the stage holds files the listing does not");
            txn.abandon().unwrap();
        }
        Err(e) => {
            assert!(!canonical, "the publisher's own delta was refused: {e}");
            super::assert_refused_cleanly(&e, txn, &stage, &txn_dir);
        }
    }
    super::assert_nothing_written_outside(&outside(&w.root), &before, &w.state);
    if modified {
        fs::write(&base_path, &file.base).unwrap();
    }
}
