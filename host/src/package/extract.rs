//! Safe extraction of a package into a stage directory (used by apply).
//!
//! molt runs as root, so the extractor trusts nothing in the archive, even after its hash and
//! signature were checked: tar extractors that honour links, devices, sparse headers or `..`
//! have all shipped escapes (the tar crate's own `unpack_in` is "best effort": RUSTSEC-2018-0002,
//! RUSTSEC-2021-0080, RUSTSEC-2026-0067). We therefore iterate the tar crate's entries ourselves
//! and
//! - accept only regular files, directories and symbolic links, at paths parsed into [`RelPath`]
//!   (the path the tar crate resolves, i.e. after PAX `path` and GNU long-name overrides);
//! - accept a link only with a target [`crate::symlink`] allows: relative, never past the root,
//!   also through the package's other links (a patch's links are checked again against the
//!   tree the install will have, by [`check_patch_links`]); hard links are refused (the
//!   publisher packs each path of a hard-linked file as a regular file);
//! - never follow a link: links are created only after every file and directory has been
//!   written, and no entry may lie below a link (a link is a leaf, like a file), so every
//!   parent of every entry is a real directory this extractor made in a stage only molt writes
//!   — files are then opened with `O_NOFOLLOW` on the last component, and nothing on the way
//!   can be a link;
//! - refuse duplicates and file/directory clashes, entries the signed operations do not allow,
//!   more than `max_entries` entries and more than `max_unpacked_bytes` bytes (counted on the
//!   decoded data itself, so a decompression bomb stops at the cap + 1 byte);
//! - cap the decoded tar metadata too (headers, long names, PAX records), so an oversized long
//!   name cannot fill memory before we ever see its entry;
//! - create every file with `O_CREAT | O_EXCL | O_NOFOLLOW` inside a stage directory that must
//!   be empty and that only molt writes, with modes masked to `0o777` (never setuid, setgid or
//!   sticky), hashing each file while writing it.
//!
//! Directory modes are applied after the last entry, so a read-only directory in the package
//! does not stop its own contents from being written.
//!
//! Durability: each file's writeback starts as soon as it is written and closed
//! ([`fsutil::start_writeback`]); after the last entry every staged file is fsynced, then every
//! stage directory, in parallel ([`SyncBatch`]), and extraction returns only when all of it is on
//! disk. Per-file fsyncs, not one `syncfs(2)`: a FUSE or network filesystem only sees an fsync of
//! the file itself, and `syncfs` would also wait for every other process's dirty data. They
//! come after the last entry rather than behind each file because on ext4 each fsync commits
//! the journal while the next files are created (see `start_writeback` for the figures).
//!
//! On error the stage holds whatever was written so far; the caller discards the stage.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;

use crate::error::ExitClass;
use crate::fsutil::{SyncBatch, WriteBehind};
use crate::hashing::{HashingWriter, Sha256Digest, VerifyingReader};
use crate::package::archive::MAX_ZSTD_WINDOW_LOG;
use crate::package::delta::{BaseReadError, Bases};
use crate::relpath::{RelPath, RelPathError};
use crate::repo::manifest::{Operations, Package};
use crate::symlink::{self, LinkError, Node};
use crate::tree::{FileRecord, TreeListing, node_in};

/// Entry cap used when the caller has no better figure.
pub(crate) const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// Read and copy buffer size: large, so a 1 GiB package moves in few system calls.
const IO_BUFFER: usize = 256 * 1024;
/// Decoded bytes allowed for one entry's metadata: its header plus GNU long-name and PAX
/// entries (a [`RelPath`] is at most 4096 bytes).
const METADATA_ALLOWANCE: u64 = 64 * 1024;
/// Decoded bytes allowed after the last entry: end-of-archive blocks and record padding.
const TRAILER_ALLOWANCE: u64 = 1024 * 1024;

/// Caps on what one package may unpack to, and what its bytes must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractLimits {
    /// The manifest's `unpacked_size`: the sum of all regular file sizes.
    pub max_unpacked_bytes: u64,
    /// The most entries (files and directories) the package may hold.
    pub max_entries: u64,
    /// The package must unpack to exactly `max_unpacked_bytes` (a signed `unpacked_size`): the
    /// cap stops an archive that is too big, this one that is short.
    pub exact: bool,
    /// The signed size and SHA-256 of the package file itself, checked in band as it is read
    /// ([`VerifyingReader`]): the bytes extracted are the bytes that were verified, whatever
    /// happened to the file since it was downloaded.
    pub signed: Option<(u64, Sha256Digest)>,
}

impl ExtractLimits {
    /// Limits for a package the manifest signed: its bytes, and exactly its `unpacked_size`,
    /// with the default entry cap.
    pub(crate) fn for_package(package: &Package) -> Self {
        Self {
            signed: Some((package.size, package.sha256.clone())),
            ..Self::for_unpacked_size(package.unpacked_size)
        }
    }

    /// Exactly `unpacked_size` bytes, with the default entry cap, the file unchecked.
    pub(crate) fn for_unpacked_size(unpacked_size: u64) -> Self {
        Self {
            max_unpacked_bytes: unpacked_size,
            max_entries: DEFAULT_MAX_ENTRIES,
            exact: true,
            signed: None,
        }
    }
}

/// Which entries a package may contain.
#[derive(Debug, Clone, Copy)]
pub enum Allowed<'a> {
    /// Any regular file or directory (a full package).
    Any,
    /// Only what the patch's signed operations name (see [`extract`]).
    Operations(&'a Operations),
}

/// Why a package could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("stage directory {stage} cannot be used: {reason}")]
    StageNotUsable { stage: PathBuf, reason: String },
    #[error("failed to open package {package}: {source}")]
    OpenPackage { package: PathBuf, source: io::Error },
    #[error("package {package} is corrupt or truncated: {source}")]
    CorruptPackage { package: PathBuf, source: io::Error },
    #[error("package {package} is not the one the manifest signed: {reason}")]
    PackageMismatch { package: PathBuf, reason: String },
    #[error(
        "package {package}: entry {entry:?} is a {kind}; packages may hold only regular files, \
         directories and symbolic links"
    )]
    UnsupportedEntryType {
        package: PathBuf,
        entry: String,
        kind: String,
    },
    #[error("package {package}: entry with an {source}")]
    UnsafeEntryPath {
        package: PathBuf,
        source: RelPathError,
    },
    #[error("package {package}: entry {entry} clashes with an earlier entry ({clash})")]
    DuplicateEntry {
        package: PathBuf,
        entry: RelPath,
        clash: &'static str,
    },
    #[error("package {package}: entry {entry} is not permitted by the patch's signed operations")]
    EntryNotAllowed { package: PathBuf, entry: RelPath },
    #[error("package {package} holds more than {max} entries")]
    TooManyEntries { package: PathBuf, max: u64 },
    #[error(
        "package {package}: entry {entry} takes the unpacked size past the signed {max} bytes \
         (a decompression bomb or a wrong manifest)"
    )]
    UnpackedSizeExceeded {
        package: PathBuf,
        entry: RelPath,
        max: u64,
    },
    #[error(
        "package {package}: tar metadata (headers, long names, PAX records) or trailing data \
         exceeds what its entries need"
    )]
    MetadataTooLarge { package: PathBuf },
    #[error(
        "package {package}: symbolic link {link} -> {target:?} is refused: {reason} (a package \
         may only link inside its release tree)"
    )]
    UnsafeLink {
        package: PathBuf,
        link: RelPath,
        target: String,
        reason: Box<LinkError>,
    },
    #[error("package {package}: directory or link entry {entry} carries {size} bytes of data")]
    DirectoryWithData {
        package: PathBuf,
        entry: RelPath,
        size: u64,
    },
    #[error(
        "package {package} does not match its signed operations: {path} is missing as a \
         {expected}"
    )]
    IncompletePackage {
        package: PathBuf,
        path: RelPath,
        expected: &'static str,
    },
    #[error(
        "package {package}: the delta of {entry} cannot be decoded against the installed \
         release: {source}"
    )]
    DeltaBase {
        package: PathBuf,
        entry: RelPath,
        /// The installed file the entry decodes against.
        base: RelPath,
        source: BaseReadError,
    },
    #[error("package {package}: delta-encoded entry {entry} {reason}")]
    DeltaMismatch {
        package: PathBuf,
        entry: RelPath,
        reason: String,
    },
    #[error(
        "package {package} unpacks to {actual} bytes, but the signed manifest says {expected}; \
         the package does not match its release"
    )]
    UnpackedSizeMismatch {
        package: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("failed to write {path} into the stage: {source}")]
    WriteStage { path: PathBuf, source: io::Error },
    #[error("failed to flush the staged {stage} to disk: {source}")]
    SyncStage { stage: PathBuf, source: io::Error },
}

impl ExtractError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Self::StageNotUsable { .. }
            | Self::OpenPackage { .. }
            | Self::WriteStage { .. }
            | Self::DeltaBase { .. }
            | Self::SyncStage { .. } => ExitClass::Failure,
            Self::CorruptPackage { .. }
            | Self::PackageMismatch { .. }
            | Self::UnsupportedEntryType { .. }
            | Self::UnsafeEntryPath { .. }
            | Self::DuplicateEntry { .. }
            | Self::EntryNotAllowed { .. }
            | Self::TooManyEntries { .. }
            | Self::UnpackedSizeExceeded { .. }
            | Self::MetadataTooLarge { .. }
            | Self::DirectoryWithData { .. }
            | Self::UnsafeLink { .. }
            | Self::DeltaMismatch { .. }
            | Self::UnpackedSizeMismatch { .. }
            | Self::IncompletePackage { .. } => ExitClass::Security,
        }
    }
}

/// Which entry paths the signed operations permit.
struct Permitted<'a> {
    files: HashSet<&'a RelPath>,
    dirs: HashSet<&'a RelPath>,
    ancestors: std::collections::BTreeSet<RelPath>,
    deleted: HashSet<&'a RelPath>,
}

impl<'a> Permitted<'a> {
    fn new(ops: &'a Operations) -> Self {
        Self {
            files: ops.replace.files.iter().collect(),
            dirs: ops.replace.directories.iter().collect(),
            ancestors: crate::relpath::all_ancestors(ops.replace.iter()),
            deleted: ops.delete.iter().collect(),
        }
    }

    /// A replaced file as a regular file; a replaced directory, or anything inside one; a
    /// directory holding a replaced path. Never anything at or under a deleted path.
    fn permits(&self, path: &RelPath, is_dir: bool) -> bool {
        if path.is_at_or_under(|a| self.deleted.contains(a)) {
            return false;
        }
        if self.dirs.contains(path) {
            return is_dir;
        }
        if path.ancestors().any(|a| self.dirs.contains(&a)) {
            return true;
        }
        if self.files.contains(path) {
            return !is_dir;
        }
        is_dir && self.ancestors.contains(path)
    }
}

/// Extracts `package` into the empty directory `stage`, enforcing `limits` and `allowed`, and
/// returns what was written (files with SHA-256, size and mode; directories including implicit
/// parents).
pub fn extract(
    package: &Path,
    stage: &Path,
    limits: &ExtractLimits,
    allowed: Allowed<'_>,
) -> Result<TreeListing, ExtractError> {
    extract_reporting(package, stage, limits, allowed, None, &mut |_| {})
}

/// [`extract`], or for a patch with `bases` [`extract_delta`], calling `progress` with the
/// file bytes written so far (of `limits.max_unpacked_bytes`) as they are written: what the
/// operator's progress bar shows while a package is staged.
pub(crate) fn extract_reporting(
    package: &Path,
    stage: &Path,
    limits: &ExtractLimits,
    allowed: Allowed<'_>,
    bases: Option<Bases<'_>>,
    progress: &mut dyn FnMut(u64),
) -> Result<TreeListing, ExtractError> {
    check_stage(stage)?;
    let extra = match bases {
        Some(bases) => Extra::Deltas(bases),
        None => Extra::None,
    };
    read_package(package, Some(stage), limits, allowed, extra, progress)
}

/// [`extract`] for a patch's delta package: the entries `bases` names are decoded against
/// their bases (see [`crate::package::delta`]) and must decode to their signed size and hash;
/// every other entry is as in the plain package. Returns the listing of the decoded tree.
pub(crate) fn extract_delta(
    package: &Path,
    stage: &Path,
    limits: &ExtractLimits,
    operations: &Operations,
    bases: Bases<'_>,
) -> Result<TreeListing, ExtractError> {
    extract_reporting(
        package,
        stage,
        limits,
        Allowed::Operations(operations),
        Some(bases),
        &mut |_| {},
    )
}

/// [`list`] that also hands the bytes of each regular file in `wanted` to `each` as it is read
/// (one file in memory at a time): how the publisher gets the bases of its deltas from an
/// earlier release's full package.
pub(crate) fn list_reading(
    package: &Path,
    limits: &ExtractLimits,
    wanted: &HashSet<RelPath>,
    each: &mut dyn FnMut(&RelPath, Vec<u8>),
) -> Result<TreeListing, ExtractError> {
    read_package(
        package,
        None,
        limits,
        Allowed::Any,
        Extra::Read { wanted, each },
        &mut |_| {},
    )
}

/// What an extraction does beyond checking and writing entries.
enum Extra<'a> {
    None,
    /// Decode these entries against their bases.
    Deltas(Bases<'a>),
    /// Listing only: hand these files' bytes to `each`.
    Read {
        wanted: &'a HashSet<RelPath>,
        each: &'a mut dyn FnMut(&RelPath, Vec<u8>),
    },
}

/// The listing of a full package (paths, hashes, sizes, modes, link targets) read the way
/// [`extract`] reads it — every check and cap, links resolved inside the tree — but without
/// writing anything: what a publisher needs of an earlier release to diff against it.
pub fn list(package: &Path, limits: &ExtractLimits) -> Result<TreeListing, ExtractError> {
    read_package(
        package,
        None,
        limits,
        Allowed::Any,
        Extra::None,
        &mut |_| {},
    )
}

/// Reads and checks every entry of `package`; with a stage, writes the tree there and makes it
/// durable before returning. Whatever fails once the package file's bytes have proven not to be
/// the signed ones is reported as that.
fn read_package(
    package: &Path,
    stage: Option<&Path>,
    limits: &ExtractLimits,
    allowed: Allowed<'_>,
    extra: Extra<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<TreeListing, ExtractError> {
    let verdict = Rc::new(std::cell::RefCell::new(None));
    let result = read_verified(package, stage, limits, allowed, extra, progress, &verdict);
    match (result, verdict.borrow_mut().take()) {
        (Err(_), Some(reason)) => Err(ExtractError::PackageMismatch {
            package: package.to_owned(),
            reason,
        }),
        (result, _) => result,
    }
}

fn read_verified(
    package: &Path,
    stage: Option<&Path>,
    limits: &ExtractLimits,
    allowed: Allowed<'_>,
    extra: Extra<'_>,
    progress: &mut dyn FnMut(u64),
    verdict: &Rc<std::cell::RefCell<Option<String>>>,
) -> Result<TreeListing, ExtractError> {
    let permitted = match allowed {
        Allowed::Any => None,
        Allowed::Operations(ops) => Some(Permitted::new(ops)),
    };
    let file = File::open(package).map_err(|source| ExtractError::OpenPackage {
        package: package.to_owned(),
        source,
    })?;
    let raw: Box<dyn Read> = match &limits.signed {
        Some((size, sha256)) => Box::new(VerifyingReader::new(
            file,
            *size,
            sha256,
            Rc::clone(verdict),
        )),
        None => Box::new(file),
    };
    let allowance = Rc::new(Cell::new(METADATA_ALLOWANCE));
    let decoded = BudgetReader {
        inner: Decoder::open(package, BufReader::with_capacity(IO_BUFFER, raw))?,
        consumed: 0,
        allowance: Rc::clone(&allowance),
    };
    let mut archive = tar::Archive::new(decoded);
    let mut stager = Stager {
        package,
        stage,
        limits,
        permitted: permitted.as_ref(),
        listing: TreeListing::default(),
        explicit_dirs: BTreeMap::new(),
        links: Vec::new(),
        entries: 0,
        remaining: limits.max_unpacked_bytes,
        buffer: vec![0u8; IO_BUFFER],
        extra,
        decoded: 0,
        progress,
    };
    let stream_err = |e| stream_error(package, e);
    let written = |(path, source)| ExtractError::WriteStage { path, source };
    let mut writer = match stage {
        Some(stage) => Some(WriteBehind::new().map_err(|e| written((stage.to_owned(), e)))?),
        None => None,
    };
    for entry in archive.entries().map_err(stream_err)? {
        let entry = entry.map_err(stream_err)?;
        stager.stage_entry(entry, &allowance, writer.as_mut())?;
    }
    if let Some(writer) = writer {
        writer.finish().map_err(written)?;
    }
    allowance.set(allowance.get().saturating_add(TRAILER_ALLOWANCE));
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(stream_err)?;
    let mut raw = rest.inner.into_raw();
    if !raw.fill_buf().map_err(stream_err)?.is_empty() {
        return Err(ExtractError::CorruptPackage {
            package: package.to_owned(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                "trailing data after the compressed stream",
            ),
        });
    }
    let Stager {
        listing,
        explicit_dirs,
        links,
        entries,
        extra,
        decoded,
        ..
    } = stager;
    if let Extra::Deltas(bases) = &extra
        && decoded != bases.delta.files.len()
        && let Some(missing) = bases
            .delta
            .files
            .keys()
            .find(|p| !listing.files.contains_key(*p))
    {
        return Err(ExtractError::IncompletePackage {
            package: package.to_owned(),
            path: missing.clone(),
            expected: "delta-encoded file",
        });
    }

    match allowed {
        Allowed::Operations(ops) => check_complete(package, ops, &listing)?,
        // A full package is the whole release tree: its links must resolve inside it.
        Allowed::Any => {
            listing
                .check_links()
                .map_err(|(link, target, reason)| ExtractError::UnsafeLink {
                    package: package.to_owned(),
                    link,
                    target,
                    reason: Box::new(reason),
                })?
        }
    }
    if limits.exact && listing.total_size() != limits.max_unpacked_bytes {
        return Err(ExtractError::UnpackedSizeMismatch {
            package: package.to_owned(),
            expected: limits.max_unpacked_bytes,
            actual: listing.total_size(),
        });
    }
    let Some(stage) = stage else {
        return Ok(listing);
    };
    for link in &links {
        let full = link.under(stage);
        let target = listing.files[link].link.as_deref().unwrap_or_default();
        std::os::unix::fs::symlink(target, &full)
            .map_err(|source| ExtractError::WriteStage { path: full, source })?;
    }
    // The files are opened again to be fsynced: before a directory may lose its search bit.
    tracing::debug!(
        files = listing.files.len(),
        "written; fsyncing the staged files"
    );
    sync_stage(stage, &listing, Synced::Files)?;
    for (dir, mode) in &explicit_dirs {
        let full = dir.under(stage);
        fs::set_permissions(&full, fs::Permissions::from_mode(*mode))
            .map_err(|source| ExtractError::WriteStage { path: full, source })?;
    }
    sync_stage(stage, &listing, Synced::Dirs)?;
    tracing::debug!(
        package = %package.display(),
        entries,
        files = listing.files.len(),
        bytes = listing.total_size(),
        "extracted package"
    );
    Ok(listing)
}

/// Checks the links a patch stages against the tree the install will have once the patch is
/// applied: what the package stages at and under the replaced paths, nothing at or under the
/// deleted ones, and what the install's state records everywhere else (`installed_files`,
/// `installed_dirs`). Files molt does not own are not part of that tree.
pub(crate) fn check_patch_links(
    package: &Path,
    staged: &TreeListing,
    ops: &Operations,
    installed_files: &BTreeMap<RelPath, FileRecord>,
    installed_dirs: &std::collections::BTreeSet<RelPath>,
) -> Result<(), ExtractError> {
    let replaced: HashSet<&RelPath> = ops.replace.iter().collect();
    let deleted: HashSet<&RelPath> = ops.delete.iter().collect();
    let after = |p: &RelPath| -> Node<'_> {
        if p.is_at_or_under(|a| replaced.contains(a)) {
            staged.node(p)
        } else if p.is_at_or_under(|a| deleted.contains(a)) {
            Node::Absent
        } else {
            match node_in(installed_files, installed_dirs, p) {
                Node::Absent => staged.node(p),
                found => found,
            }
        }
    };
    for (link, target) in staged.links() {
        symlink::resolve(link, target, after).map_err(|reason| ExtractError::UnsafeLink {
            package: package.to_owned(),
            link: link.clone(),
            target: target.to_owned(),
            reason: Box::new(reason),
        })?;
    }
    Ok(())
}

/// The stage must be a real directory (not a symlink) and empty.
fn check_stage(stage: &Path) -> Result<(), ExtractError> {
    let unusable = |reason: String| ExtractError::StageNotUsable {
        stage: stage.to_owned(),
        reason,
    };
    let meta = fs::symlink_metadata(stage).map_err(|e| unusable(e.to_string()))?;
    if !meta.is_dir() {
        return Err(unusable("not a directory".to_owned()));
    }
    let mut listing = fs::read_dir(stage).map_err(|e| unusable(e.to_string()))?;
    if listing.next().is_some() {
        return Err(unusable("not empty".to_owned()));
    }
    Ok(())
}

fn check_complete(
    package: &Path,
    ops: &Operations,
    listing: &TreeListing,
) -> Result<(), ExtractError> {
    let missing = |path: &RelPath, expected| ExtractError::IncompletePackage {
        package: package.to_owned(),
        path: path.clone(),
        expected,
    };
    if let Some(file) = ops
        .replace
        .files
        .iter()
        .find(|f| !listing.files.contains_key(*f))
    {
        return Err(missing(file, "regular file"));
    }
    if let Some(dir) = ops
        .replace
        .directories
        .iter()
        .find(|d| !listing.dirs.contains(*d))
    {
        return Err(missing(dir, "directory"));
    }
    Ok(())
}

/// What [`sync_stage`] fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synced {
    /// Every staged regular file, written and closed earlier.
    Files,
    /// Every stage directory (its entries and mode, links included): a staged directory is
    /// later moved into the install whole, entries and all.
    Dirs,
}

/// Fsyncs `what` of the stage in parallel.
fn sync_stage(stage: &Path, listing: &TreeListing, what: Synced) -> Result<(), ExtractError> {
    let mut sync = SyncBatch::new();
    match what {
        Synced::Files => {
            for (path, record) in &listing.files {
                if !record.is_link() {
                    sync.written(path.under(stage));
                }
            }
        }
        Synced::Dirs => {
            for dir in &listing.dirs {
                sync.dir(dir.under(stage));
            }
            sync.dir(stage.to_owned());
        }
    }
    sync.finish()
        .and_then(|()| match what {
            Synced::Files => Ok(()),
            Synced::Dirs => {
                crate::failpoint::step("fsync stage").map_err(|e| (stage.to_owned(), e))
            }
        })
        .map_err(|(path, source)| ExtractError::SyncStage {
            stage: path,
            source,
        })
}

/// A read error from the decoded stream: the metadata budget, or a corrupt/truncated archive.
fn stream_error(package: &Path, source: io::Error) -> ExtractError {
    if source.kind() == io::ErrorKind::FileTooLarge {
        ExtractError::MetadataTooLarge {
            package: package.to_owned(),
        }
    } else {
        ExtractError::CorruptPackage {
            package: package.to_owned(),
            source,
        }
    }
}

/// Human name of an entry type molt refuses.
fn entry_kind(entry_type: EntryType) -> String {
    match entry_type {
        EntryType::Link => "hard link".to_owned(),
        EntryType::Symlink => "symbolic link".to_owned(),
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "FIFO".to_owned(),
        EntryType::Continuous => "contiguous file".to_owned(),
        EntryType::GNUSparse => "GNU sparse file".to_owned(),
        EntryType::XGlobalHeader => "PAX global header".to_owned(),
        other => format!("entry of type {:?}", char::from(other.as_byte())),
    }
}

/// The decompressor, chosen by the package's first bytes (not its URL): zstd (`.tar.zst`) or
/// gzip (`.tar.gz`, every package molt wrote before zstd). Both read exactly one stream, so
/// trailing bytes are seen; zstd refuses a frame whose window is larger than
/// [`MAX_ZSTD_WINDOW_LOG`] (bounded decoding memory whatever the package declares).
enum Decoder {
    Gzip(flate2::bufread::GzDecoder<BufReader<Box<dyn Read>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Box<dyn Read>>>),
}

impl Decoder {
    fn open(package: &Path, mut raw: BufReader<Box<dyn Read>>) -> Result<Self, ExtractError> {
        let corrupt = |source| ExtractError::CorruptPackage {
            package: package.to_owned(),
            source,
        };
        let head = raw.fill_buf().map_err(corrupt)?;
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let mut z = zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(corrupt)?
                .single_frame();
            z.window_log_max(MAX_ZSTD_WINDOW_LOG).map_err(corrupt)?;
            Ok(Decoder::Zstd(z))
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Ok(Decoder::Gzip(flate2::bufread::GzDecoder::new(raw)))
        } else {
            Err(corrupt(io::Error::new(
                io::ErrorKind::InvalidData,
                "neither a zstd nor a gzip stream",
            )))
        }
    }

    /// The package file after the compressed stream.
    fn into_raw(self) -> BufReader<Box<dyn Read>> {
        match self {
            Decoder::Gzip(g) => g.into_inner(),
            Decoder::Zstd(z) => z.finish(),
        }
    }
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(g) => g.read(buf),
            Decoder::Zstd(z) => z.read(buf),
        }
    }
}

/// Counts decoded bytes and fails (as `FileTooLarge`) once more than the shared allowance has
/// passed. The extractor raises the allowance by each accepted entry's padded data size plus
/// [`METADATA_ALLOWANCE`], so only bytes that belong to accepted entries are ever decoded.
struct BudgetReader<R> {
    inner: R,
    consumed: u64,
    allowance: Rc<Cell<u64>>,
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.allowance.get().saturating_sub(self.consumed);
        let want = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.consumed += n as u64;
        if self.consumed > self.allowance.get() {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "decoded tar stream exceeds its allowance",
            ));
        }
        Ok(n)
    }
}

/// The state of one extraction.
struct Stager<'a, 'e> {
    package: &'a Path,
    /// Where the tree is written; `None` only lists it.
    stage: Option<&'a Path>,
    limits: &'a ExtractLimits,
    permitted: Option<&'a Permitted<'a>>,
    listing: TreeListing,
    /// Directories the archive named itself, with their modes (applied at the end).
    explicit_dirs: BTreeMap<RelPath, u32>,
    /// Symbolic links, created after the last entry.
    links: Vec<RelPath>,
    entries: u64,
    remaining: u64,
    buffer: Vec<u8>,
    extra: Extra<'e>,
    /// Delta-encoded entries decoded so far.
    decoded: usize,
    /// Told the file bytes written so far.
    progress: &'a mut dyn FnMut(u64),
}

impl Stager<'_, '_> {
    /// Checks and stages one entry; a regular file's bytes go through `writer` (none when
    /// only listing).
    fn stage_entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        allowance: &Cell<u64>,
        writer: Option<&mut WriteBehind>,
    ) -> Result<(), ExtractError> {
        let package = self.package;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ExtractError::TooManyEntries {
                package: package.to_owned(),
                max: self.limits.max_entries,
            });
        }
        let entry_type = entry.header().entry_type();
        let (is_dir, is_link) = match entry_type {
            EntryType::Regular => (false, false),
            EntryType::Directory => (true, false),
            EntryType::Symlink => (false, true),
            other => {
                return Err(ExtractError::UnsupportedEntryType {
                    package: package.to_owned(),
                    entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                    kind: entry_kind(other),
                });
            }
        };
        if has_pax_sparse_records(&mut entry).map_err(|e| stream_error(package, e))? {
            return Err(ExtractError::UnsupportedEntryType {
                package: package.to_owned(),
                entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                kind: "PAX sparse file".to_owned(),
            });
        }
        let path = entry_path(&entry, is_dir).map_err(|source| ExtractError::UnsafeEntryPath {
            package: package.to_owned(),
            source,
        })?;
        self.check_clash(&path, is_dir)?;
        if let Some(permitted) = self.permitted
            && !permitted.permits(&path, is_dir)
        {
            return Err(ExtractError::EntryNotAllowed {
                package: package.to_owned(),
                entry: path,
            });
        }
        let size = entry.size();
        // The listing shares the delta table's copy of the path (40,000 paths at a large patch).
        let (path, delta) = match &self.extra {
            Extra::Deltas(bases) => match bases.get_key_value(&path) {
                Some((shared, delta)) => (shared.clone(), Some(delta)),
                None => (path, None),
            },
            _ => (path, None),
        };
        if delta.is_some() && (is_dir || is_link) {
            return Err(ExtractError::DeltaMismatch {
                package: package.to_owned(),
                entry: path,
                reason: "is not a regular file".to_owned(),
            });
        }
        // A delta entry's data is counted as it decodes, against its signed size.
        if delta.map_or(size, |d| d.size) > self.remaining {
            return Err(ExtractError::UnpackedSizeExceeded {
                package: package.to_owned(),
                entry: path,
                max: self.limits.max_unpacked_bytes,
            });
        }
        if (is_dir || is_link) && size != 0 {
            return Err(ExtractError::DirectoryWithData {
                package: package.to_owned(),
                entry: path,
                size,
            });
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| stream_error(package, e))?
            & 0o777;
        let padded = size.div_ceil(512).saturating_mul(512);
        allowance.set(
            allowance
                .get()
                .saturating_add(padded)
                .saturating_add(METADATA_ALLOWANCE),
        );
        self.create_parents(&path)?;
        if is_link {
            let target =
                link_target(&entry).map_err(|(target, reason)| ExtractError::UnsafeLink {
                    package: package.to_owned(),
                    link: path.clone(),
                    target,
                    reason: Box::new(reason),
                })?;
            // Created after the last entry (see the module docs); listed now, as the leaf it is.
            self.links.push(path.clone());
            self.listing
                .files
                .insert(path, FileRecord::symlink(&target));
            return Ok(());
        }
        if is_dir {
            if !self.listing.dirs.contains(&path) {
                self.create_dir(&path)?;
            }
            self.explicit_dirs.insert(path, mode);
            return Ok(());
        }
        let record = self.write_file(&mut entry, &path, (size, mode), writer)?;
        self.remaining -= record.size;
        self.listing.files.insert(path, record);
        Ok(())
    }

    /// Refuses a path already staged as a file, a directory named twice, a file where a
    /// directory was, and anything below a file.
    fn check_clash(&self, path: &RelPath, is_dir: bool) -> Result<(), ExtractError> {
        let clash = if self.listing.files.contains_key(path) {
            Some("the same path was already a file")
        } else if is_dir && self.explicit_dirs.contains_key(path) {
            Some("the same directory appears twice")
        } else if !is_dir && self.listing.dirs.contains(path) {
            Some("the path was already a directory")
        } else if path
            .ancestors()
            .any(|a| self.listing.files.contains_key(&a))
        {
            Some("a parent path was already a file")
        } else {
            None
        };
        match clash {
            Some(clash) => Err(ExtractError::DuplicateEntry {
                package: self.package.to_owned(),
                entry: path.clone(),
                clash,
            }),
            None => Ok(()),
        }
    }

    fn create_parents(&mut self, path: &RelPath) -> Result<(), ExtractError> {
        for ancestor in path.ancestors() {
            if !self.listing.dirs.contains(&ancestor) {
                self.create_dir(&ancestor)?;
            }
        }
        Ok(())
    }

    /// Creates a directory that must not exist yet (mode 0o755 until the archive says
    /// otherwise).
    fn create_dir(&mut self, path: &RelPath) -> Result<(), ExtractError> {
        if let Some(stage) = self.stage {
            let full = path.under(stage);
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&full)
                .and_then(|()| fs::set_permissions(&full, fs::Permissions::from_mode(0o755)))
                .map_err(|source| ExtractError::WriteStage { path: full, source })?;
        }
        self.listing.dirs.insert(path.clone());
        Ok(())
    }

    /// Streams one regular file into a new file (or, listing only, into its hash), counting the
    /// bytes that actually arrive; a delta-encoded entry is decoded on the way.
    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &RelPath,
        (size, mode): (u64, u32),
        writer: Option<&mut WriteBehind>,
    ) -> Result<FileRecord, ExtractError> {
        let package = self.package;
        let (Some(stage), Some(writer)) = (self.stage, writer) else {
            let wanted = matches!(&self.extra, Extra::Read { wanted, .. } if wanted.contains(path));
            // Writing to memory or a sink cannot fail.
            let stream_err = move |source| stream_error(package, source);
            let (bytes, sha256, written) = if wanted {
                self.copy(entry, path, Vec::new(), stream_err)?
            } else {
                let (_, sha256, written) = self.copy(entry, path, io::sink(), stream_err)?;
                (Vec::new(), sha256, written)
            };
            self.expect_size(path, written, size)?;
            if let Extra::Read { each, .. } = &mut self.extra
                && wanted
            {
                each(path, bytes);
            }
            return Ok(FileRecord::regular(sha256, written, mode));
        };
        let full = path.under(stage);
        let write_err = |source| ExtractError::WriteStage {
            path: full.clone(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&full)
            .map_err(write_err)?;
        let delta = match &self.extra {
            Extra::Deltas(bases) => bases.get(path).map(|d| (*bases, d)),
            _ => None,
        };
        let file = writer
            .file(full.clone(), file)
            .map_err(|(path, source)| ExtractError::WriteStage { path, source })?;
        let (file, sha256, written) = match delta {
            None => {
                let copied = self.copy(entry, path, file, write_err)?;
                self.expect_size(path, copied.2, size)?;
                copied
            }
            Some((bases, delta)) => self.decode(entry, path, bases, delta, file, write_err)?,
        };
        file.close(mode).map_err(write_err)?;
        Ok(FileRecord::regular(sha256, written, mode))
    }

    /// A regular entry must hold exactly the `size` bytes its header announced.
    fn expect_size(&self, path: &RelPath, copied: u64, size: u64) -> Result<(), ExtractError> {
        if copied == size {
            return Ok(());
        }
        Err(ExtractError::CorruptPackage {
            package: self.package.to_owned(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry {path} ends after {copied} of its {size} bytes"),
            ),
        })
    }

    /// Decodes a delta entry against its base into `out`: one frame against the whole base, or
    /// one per chunk against the chunk's slice. At most each frame's signed size plus one byte
    /// is ever decoded, and the result must have the signed size and SHA-256.
    fn decode<R: Read, W: Write>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &RelPath,
        bases: Bases<'_>,
        delta: &crate::repo::manifest::FileDelta,
        out: W,
        write_err: impl Fn(io::Error) -> ExtractError,
    ) -> Result<(W, Sha256Digest, u64), ExtractError> {
        let package = self.package;
        let mismatch = |reason: String| ExtractError::DeltaMismatch {
            package: package.to_owned(),
            entry: path.clone(),
            reason,
        };
        let base_err = |source| ExtractError::DeltaBase {
            package: package.to_owned(),
            entry: path.clone(),
            base: delta.base.clone(),
            source,
        };
        let mut out = HashingWriter::new(out);
        let mut raw = BufReader::new(&mut *entry);
        if delta.chunks.is_empty() {
            let base = bases.read(delta).map_err(base_err)?;
            raw = self.decode_frame(raw, (bases, &base), path, delta.size, &mut out, &write_err)?;
        } else {
            let base = bases.open(delta).map_err(base_err)?;
            let mut slice = Vec::new();
            for (i, chunk) in delta.chunks.iter().enumerate() {
                base.read_slice(chunk, &mut slice)
                    .map_err(|e| mismatch(format!("chunk {i}: {e}")))?;
                raw = self
                    .decode_frame(raw, (bases, &slice), path, chunk.size, &mut out, &write_err)
                    .map_err(|e| match e {
                        ExtractError::DeltaMismatch { reason, .. } => {
                            mismatch(format!("chunk {i}: {reason}"))
                        }
                        other => other,
                    })?;
            }
        }
        let (out, sha256, written) = out.finish();
        if written != delta.size || sha256 != delta.sha256 {
            return Err(mismatch(format!(
                "decodes to {written} bytes with sha256 {sha256}; the manifest signed {} bytes \
                 with sha256 {}",
                delta.size, delta.sha256
            )));
        }
        let trailing = raw
            .fill_buf()
            .map(|b| !b.is_empty())
            .map_err(|e| stream_error(package, e))?;
        if trailing {
            return Err(mismatch("holds data after its zstd frames".to_owned()));
        }
        self.decoded += 1;
        Ok((out, sha256, written))
    }

    /// Decodes the one zstd frame at the start of `raw` against `prefix` into `out`, which must
    /// come to exactly `size` bytes (one more is the most ever decoded); returns `raw`, at the
    /// byte after the frame.
    fn decode_frame<B: BufRead, W: Write>(
        &mut self,
        raw: B,
        (bases, prefix): (Bases<'_>, &[u8]),
        path: &RelPath,
        size: u64,
        out: &mut HashingWriter<W>,
        write_err: &impl Fn(io::Error) -> ExtractError,
    ) -> Result<B, ExtractError> {
        let package = self.package;
        let mismatch = |reason: String| ExtractError::DeltaMismatch {
            package: package.to_owned(),
            entry: path.clone(),
            reason,
        };
        let decoder = bases
            .decoder(raw, prefix)
            .map_err(|e| mismatch(format!("cannot be decoded: {e}")))?;
        let mut bounded = decoder.take(size.saturating_add(1));
        let before = out.written();
        self.copy_into(&mut bounded, path, out, write_err)
            .map_err(|e| match e {
                ExtractError::CorruptPackage { source, .. } => {
                    mismatch(format!("does not decode against its base: {source}"))
                }
                other => other,
            })?;
        let decoded = out.written() - before;
        if decoded > size {
            return Err(mismatch(format!(
                "decodes to more than its signed {size} bytes (a delta bomb or a wrong manifest)"
            )));
        }
        if decoded != size {
            return Err(mismatch(format!(
                "decodes to {decoded} bytes; the manifest signed {size}"
            )));
        }
        Ok(bounded.into_inner().finish())
    }

    /// Copies `data` into `out` through a hash, within the unpacked-size cap; returns what was
    /// written, its SHA-256 and its length.
    fn copy<W: Write>(
        &mut self,
        data: &mut dyn Read,
        path: &RelPath,
        out: W,
        write_err: impl Fn(io::Error) -> ExtractError,
    ) -> Result<(W, Sha256Digest, u64), ExtractError> {
        let mut out = HashingWriter::new(out);
        self.copy_into(data, path, &mut out, &write_err)?;
        Ok(out.finish())
    }

    /// [`Self::copy`] onto what `out` has already been given (the frames of one chunked entry):
    /// the cap holds for everything `out` has had.
    fn copy_into<W: Write>(
        &mut self,
        data: &mut dyn Read,
        path: &RelPath,
        out: &mut HashingWriter<W>,
        write_err: &impl Fn(io::Error) -> ExtractError,
    ) -> Result<(), ExtractError> {
        let room = self.remaining.saturating_sub(out.written());
        let mut data = data.take(room.saturating_add(1));
        loop {
            let n = match data.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(self.package, e)),
            };
            let copied = out.written() + n as u64;
            if copied > self.remaining {
                return Err(ExtractError::UnpackedSizeExceeded {
                    package: self.package.to_owned(),
                    entry: path.clone(),
                    max: self.limits.max_unpacked_bytes,
                });
            }
            out.write_all(&self.buffer[..n]).map_err(write_err)?;
            (self.progress)(self.limits.max_unpacked_bytes - self.remaining + copied);
        }
        Ok(())
    }
}

/// The entry's path as the tar crate resolves it (PAX `path`, GNU long name, or the header),
/// with the one trailing `/` that marks a directory removed.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>, is_dir: bool) -> Result<RelPath, RelPathError> {
    let path = entry.path().map_err(|e| RelPathError {
        path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
        reason: if e.kind() == io::ErrorKind::InvalidData {
            "not a valid path"
        } else {
            "unreadable path"
        },
    })?;
    match path.to_str() {
        Some(s) if is_dir => RelPath::from_path(Path::new(s.strip_suffix('/').unwrap_or(s))),
        _ => RelPath::from_path(&path),
    }
}

/// A link entry's target exactly as the archive gives it (PAX `linkpath`, GNU long link, or the
/// header), if its form is acceptable; else the target as far as it can be shown, and why not.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, (String, LinkError)> {
    let bytes = entry.link_name_bytes().unwrap_or_default();
    let target = std::str::from_utf8(&bytes).map_err(|_| {
        (
            String::from_utf8_lossy(&bytes).into_owned(),
            LinkError::NotUtf8,
        )
    })?;
    symlink::check_syntax(target).map_err(|reason| (target.to_owned(), reason))?;
    Ok(target.to_owned())
}

/// True if the entry's PAX records describe a sparse file (the tar crate would write the raw
/// sparse map as file contents).
fn has_pax_sparse_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<bool> {
    Ok(match entry.pax_extensions()? {
        Some(records) => records
            .filter_map(Result::ok)
            .any(|r| r.key_bytes().starts_with(b"GNU.sparse.")),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use tar::Header;

    use super::*;
    use crate::package::archive::{PackageEntries, write_package};
    use crate::repo::manifest::PathSet;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A work dir holding `stage/` (empty), `outside/` (empty) and later the package.
    struct Env {
        work: tempfile::TempDir,
    }

    impl Env {
        fn new() -> Self {
            let work = tempfile::tempdir().unwrap();
            fs::create_dir(work.path().join("stage")).unwrap();
            fs::create_dir(work.path().join("outside")).unwrap();
            Env { work }
        }
        fn stage(&self) -> PathBuf {
            self.work.path().join("stage")
        }
        fn package(&self) -> PathBuf {
            self.work.path().join("pkg.tar.gz")
        }
        fn outside(&self) -> PathBuf {
            self.work.path().join("outside")
        }
        /// Everything in the work dir that is not inside the stage.
        fn outside_stage(&self) -> BTreeSet<PathBuf> {
            walkdir::WalkDir::new(self.work.path())
                .into_iter()
                .map(|e| e.unwrap().path().to_owned())
                .filter(|p| !p.starts_with(self.stage()) || *p == self.stage())
                .collect()
        }
        fn write_gz(&self, tar_bytes: &[u8]) {
            let mut gz = GzEncoder::new(File::create(self.package()).unwrap(), Compression::fast());
            gz.write_all(tar_bytes).unwrap();
            gz.finish().unwrap();
        }
        fn write_zst(&self, tar_bytes: &[u8], window_log: u32) {
            let file = File::create(self.package()).unwrap();
            let mut z = zstd::stream::write::Encoder::new(file, 3).unwrap();
            z.window_log(window_log).unwrap();
            z.long_distance_matching(true).unwrap();
            z.write_all(tar_bytes).unwrap();
            z.finish().unwrap();
        }
        fn extract(&self, max: u64, allowed: Allowed<'_>) -> Result<TreeListing, ExtractError> {
            extract(
                &self.package(),
                &self.stage(),
                &ExtractLimits::for_unpacked_size(max),
                allowed,
            )
        }
        /// Extracts a hostile archive and checks it was refused without touching anything
        /// outside the stage.
        fn refuse(&self, tar_bytes: &[u8], max: u64, allowed: Allowed<'_>) -> ExtractError {
            self.write_gz(tar_bytes);
            let before = self.outside_stage();
            let err = self.extract(max, allowed).unwrap_err();
            assert_eq!(
                self.outside_stage(),
                before,
                "wrote outside the stage: {err}"
            );
            assert_eq!(fs::read_dir(self.outside()).unwrap().count(), 0);
            err
        }
    }

    /// A GNU header with a raw name (bypassing the tar crate's own path checks).
    fn raw_header(name: &[u8], kind: EntryType, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        h
    }

    fn link_header(name: &[u8], kind: EntryType, target: &[u8]) -> Header {
        let mut h = raw_header(name, kind, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        h.set_cksum();
        h
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    struct RawTar(tar::Builder<Vec<u8>>);

    impl RawTar {
        fn new() -> Self {
            RawTar(tar::Builder::new(Vec::new()))
        }
        fn add(mut self, header: Header, data: &[u8]) -> Self {
            self.0.append(&header, data).unwrap();
            self
        }
        fn file(self, name: &str, data: &[u8]) -> Self {
            self.add(
                raw_header(name.as_bytes(), EntryType::Regular, data.len() as u64),
                data,
            )
        }
        fn dir(self, name: &str) -> Self {
            self.add(raw_header(name.as_bytes(), EntryType::Directory, 0), b"")
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn is_security(err: &ExtractError) -> bool {
        err.exit_class() == ExitClass::Security
    }

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["bin", "web/static", "conf", "empty", "private"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("web/index.html"), b"<html></html>").unwrap();
        fs::write(root.join("web/static/x.css"), vec![b'x'; 300_000]).unwrap();
        fs::write(root.join("conf/app.yml"), b"a: 1\n").unwrap();
        fs::write(root.join("conf/other.yml"), b"").unwrap();
        fs::write(root.join("private/key"), b"secret").unwrap();
        fs::set_permissions(root.join("private/key"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o750)).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(root.join(&long)).unwrap();
        fs::write(root.join(&long).join("f".repeat(150)), b"long").unwrap();
        dir
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn full_package_round_trips_to_the_scanned_tree() {
        let tree = sample_tree();
        let scanned = TreeListing::scan(tree.path(), &[]).unwrap();
        let env = Env::new();
        let info = write_package(
            &env.package(),
            tree.path(),
            &scanned,
            PackageEntries::FullTree,
        )
        .unwrap();
        let limits = ExtractLimits::for_unpacked_size(info.unpacked_size);
        let staged = extract(&env.package(), &env.stage(), &limits, Allowed::Any).unwrap();
        assert_eq!(staged, scanned);
        assert_eq!(TreeListing::scan(&env.stage(), &[]).unwrap(), scanned);
        // Listing without writing gives the same index, and is held to the same caps.
        assert_eq!(list(&env.package(), &limits).unwrap(), scanned);
        let tight = ExtractLimits::for_unpacked_size(info.unpacked_size - 1);
        assert!(matches!(
            list(&env.package(), &tight),
            Err(ExtractError::UnpackedSizeExceeded { .. })
        ));
        assert_eq!(mode_of(&env.stage().join("bin/app")), 0o755);
        assert_eq!(mode_of(&env.stage().join("private/key")), 0o600);
        assert_eq!(mode_of(&env.stage().join("private")), 0o750);
        assert_eq!(
            fs::read(env.stage().join("web/static/x.css")).unwrap(),
            vec![b'x'; 300_000]
        );
    }

    #[test]
    fn the_package_file_is_checked_against_its_signature_in_band() {
        let tree = sample_tree();
        let scanned = TreeListing::scan(tree.path(), &[]).unwrap();
        let env = Env::new();
        let info = write_package(
            &env.package(),
            tree.path(),
            &scanned,
            PackageEntries::FullTree,
        )
        .unwrap();
        let sha256 = info.sha256.clone();
        let signed = |size, sha256: &Sha256Digest| ExtractLimits {
            signed: Some((size, sha256.clone())),
            ..ExtractLimits::for_unpacked_size(info.unpacked_size)
        };
        assert_eq!(
            list(&env.package(), &signed(info.size, &sha256)).unwrap(),
            scanned
        );
        // The same bytes under another digest or size: every entry decodes, the end does not.
        let other = Sha256Digest::of(b"other");
        for limits in [signed(info.size, &other), signed(info.size + 1, &sha256)] {
            let err = list(&env.package(), &limits).unwrap_err();
            assert!(
                matches!(&err, ExtractError::PackageMismatch { reason, .. } if reason.contains("the manifest says")),
                "{err}"
            );
            assert!(is_security(&err));
        }
        let err = list(&env.package(), &signed(info.size - 1, &sha256)).unwrap_err();
        assert!(
            matches!(&err, ExtractError::PackageMismatch { reason, .. } if reason.contains("larger than the signed")),
            "{err}"
        );
        // Stage written, then refused at the end: the caller discards the stage.
        let err = extract(
            &env.package(),
            &env.stage(),
            &signed(info.size, &other),
            Allowed::Any,
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::PackageMismatch { .. }), "{err}");
    }

    #[test]
    fn patch_package_round_trips_under_its_operations() {
        let tree = sample_tree();
        let scanned = TreeListing::scan(tree.path(), &[]).unwrap();
        let ops = Operations::new(
            PathSet {
                files: vec![rel("conf/app.yml"), rel("bin/app")],
                directories: vec![rel("web")],
            },
            PathSet {
                files: vec![rel("conf/legacy.yml")],
                directories: vec![rel("plugins/legacy")],
            },
        )
        .unwrap();
        let env = Env::new();
        let info = write_package(
            &env.package(),
            tree.path(),
            &scanned,
            PackageEntries::Replace(&ops.replace),
        )
        .unwrap();
        let staged = env
            .extract(info.unpacked_size, Allowed::Operations(&ops))
            .unwrap();
        let files: Vec<&str> = staged.files.keys().map(RelPath::as_str).collect();
        assert_eq!(
            files,
            [
                "bin/app",
                "conf/app.yml",
                "web/index.html",
                "web/static/x.css"
            ]
        );
        let dirs: Vec<&str> = staged.dirs.iter().map(RelPath::as_str).collect();
        assert_eq!(dirs, ["bin", "conf", "web", "web/static"]);
        for (path, record) in &staged.files {
            assert_eq!(record, &scanned.files[path]);
        }
    }

    #[test]
    fn implicit_parents_are_created_and_listed_and_modes_are_masked() {
        let mut h = raw_header(b"a/b/tool", EntryType::Regular, 3);
        h.set_mode(0o6755);
        h.set_cksum();
        let mut d = raw_header(b"s/", EntryType::Directory, 0);
        d.set_mode(0o1777);
        d.set_cksum();
        let env = Env::new();
        env.write_gz(&RawTar::new().add(h, b"abc").add(d, b"").bytes());
        let staged = env.extract(3, Allowed::Any).unwrap();
        assert_eq!(
            staged.dirs.iter().map(RelPath::as_str).collect::<Vec<_>>(),
            ["a", "a/b", "s"]
        );
        assert_eq!(staged.files[&rel("a/b/tool")].mode, 0o755);
        assert_eq!(mode_of(&env.stage().join("a/b/tool")), 0o755);
        assert_eq!(mode_of(&env.stage().join("a/b")), 0o755);
        assert_eq!(mode_of(&env.stage().join("s")), 0o777);
    }

    #[test]
    fn refuses_parent_components_and_absolute_paths() {
        for name in ["../outside/x", "a/../../outside/x", "./x", "a//b"] {
            let env = Env::new();
            let err = env.refuse(
                &RawTar::new().file(name, b"pwned").bytes(),
                100,
                Allowed::Any,
            );
            assert!(
                matches!(err, ExtractError::UnsafeEntryPath { .. }),
                "{name}: {err}"
            );
            assert!(is_security(&err));
            assert!(err.to_string().contains("pkg.tar.gz"), "{err}");
        }
        let env = Env::new();
        let absolute = env.outside().join("abs");
        let tar = RawTar::new()
            .file(absolute.to_str().unwrap(), b"pwned")
            .bytes();
        let err = env.refuse(&tar, 100, Allowed::Any);
        assert!(matches!(err, ExtractError::UnsafeEntryPath { .. }), "{err}");
    }

    #[test]
    fn refuses_a_pax_path_override_with_parent_components() {
        let records = pax_record("path", "../outside/pax");
        let tar = RawTar::new()
            .add(
                raw_header(b"PaxHeaders/x", EntryType::XHeader, records.len() as u64),
                &records,
            )
            .file("innocent", b"pwned")
            .bytes();
        let env = Env::new();
        let err = env.refuse(&tar, 100, Allowed::Any);
        match err {
            ExtractError::UnsafeEntryPath { source, .. } => {
                assert_eq!(source.path, "../outside/pax")
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn refuses_a_gnu_long_name_with_parent_components() {
        let mut name = format!("{}/../../outside/long", "a".repeat(120)).into_bytes();
        name.push(0);
        let tar = RawTar::new()
            .add(
                raw_header(b"././@LongLink", EntryType::GNULongName, name.len() as u64),
                &name,
            )
            .file("innocent", b"pwned")
            .bytes();
        let env = Env::new();
        let err = env.refuse(&tar, 100, Allowed::Any);
        assert!(matches!(err, ExtractError::UnsafeEntryPath { .. }), "{err}");
    }

    #[test]
    fn refuses_an_escaping_symlink_and_any_entry_through_a_link() {
        let env = Env::new();
        let target = env.outside();
        let tar = RawTar::new()
            .add(
                link_header(
                    b"link",
                    EntryType::Symlink,
                    target.to_str().unwrap().as_bytes(),
                ),
                b"",
            )
            .file("link/pwned", b"pwned")
            .bytes();
        let err = env.refuse(&tar, 100, Allowed::Any);
        match &err {
            ExtractError::UnsafeLink { link, reason, .. } => {
                assert_eq!((link.as_str(), &**reason), ("link", &LinkError::Absolute))
            }
            other => panic!("{other}"),
        }
        assert!(is_security(&err));
        assert!(!env.stage().join("link").exists());

        // A relative link, then a file through it (RUSTSEC-2021-0080's shape).
        let env = Env::new();
        let tar = RawTar::new()
            .add(link_header(b"up", EntryType::Symlink, b"."), b"")
            .file("up/pwned", b"pwned")
            .bytes();
        let err = env.refuse(&tar, 100, Allowed::Any);
        assert!(matches!(err, ExtractError::DuplicateEntry { .. }), "{err}");
        assert!(fs::symlink_metadata(env.stage().join("up")).is_err());

        // Escapes seen only at the end, through the package's own links.
        let env = Env::new();
        let tar = RawTar::new()
            .add(link_header(b"d", EntryType::Symlink, b"."), b"")
            .add(link_header(b"e", EntryType::Symlink, b"d/../x"), b"")
            .bytes();
        let err = env.refuse(&tar, 100, Allowed::Any);
        assert!(
            matches!(&err, ExtractError::UnsafeLink { link, reason, .. } if link.as_str() == "e" && **reason == LinkError::PastRoot),
            "{err}"
        );
        assert_eq!(fs::read_dir(env.stage()).unwrap().count(), 0);

        // A link carrying data is malformed.
        let env = Env::new();
        let mut h = link_header(b"l", EntryType::Symlink, b"x");
        h.set_size(3);
        h.set_cksum();
        let err = env.refuse(&RawTar::new().add(h, b"abc").bytes(), 100, Allowed::Any);
        assert!(
            matches!(err, ExtractError::DirectoryWithData { .. }),
            "{err}"
        );
    }

    #[test]
    fn links_round_trip_byte_for_byte_and_are_created_last() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        let deep = format!("{}/{}", "d".repeat(120), "e".repeat(100));
        fs::create_dir_all(root.join(&deep)).unwrap();
        fs::write(root.join(&deep).join("f"), b"deep").unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/app"), b"app").unwrap();
        let long_target = format!("../{deep}/f");
        for (link, target) in [
            ("bin/tool", "./app"),
            ("bin/long", long_target.as_str()),
            ("current", "bin/"),
            ("chain", "current/tool"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        let scanned = TreeListing::scan(root, &[]).unwrap();
        assert_eq!(scanned.links().count(), 4);
        let env = Env::new();
        let info = write_package(&env.package(), root, &scanned, PackageEntries::FullTree).unwrap();
        assert_eq!(info.unpacked_size, 3 + 4);
        let staged = env.extract(info.unpacked_size, Allowed::Any).unwrap();
        assert_eq!(staged, scanned);
        assert_eq!(TreeListing::scan(&env.stage(), &[]).unwrap(), scanned);
        assert_eq!(
            fs::read_link(env.stage().join("bin/long")).unwrap(),
            Path::new(&long_target)
        );
        assert_eq!(
            fs::read_link(env.stage().join("bin/tool")).unwrap(),
            Path::new("./app")
        );
        assert_eq!(fs::read(env.stage().join("chain")).unwrap(), b"app");
    }

    #[test]
    fn patch_links_are_checked_against_the_tree_after_the_patch() {
        let mut installed = TreeListing::default();
        installed.dirs.insert(rel("a"));
        installed
            .files
            .insert(rel("a/root"), FileRecord::symlink(".."));
        let mut staged = TreeListing::default();
        staged
            .files
            .insert(rel("evil"), FileRecord::symlink("a/root/../x"));
        let ops = Operations::new(
            PathSet {
                files: vec![rel("evil")],
                directories: vec![],
            },
            PathSet::default(),
        )
        .unwrap();
        let pkg = Path::new("p.tar.gz");
        let err =
            check_patch_links(pkg, &staged, &ops, &installed.files, &installed.dirs).unwrap_err();
        assert!(matches!(err, ExtractError::UnsafeLink { .. }), "{err}");
        // Once the patch also replaces a/root with a directory, the same target is inside.
        staged.dirs.insert(rel("a/root"));
        let ops = Operations::new(
            PathSet {
                files: vec![rel("evil")],
                directories: vec![rel("a/root")],
            },
            PathSet::default(),
        )
        .unwrap();
        check_patch_links(pkg, &staged, &ops, &installed.files, &installed.dirs).unwrap();
        // A deleted link is not followed either.
        let ops = Operations::new(
            PathSet {
                files: vec![rel("evil")],
                directories: vec![],
            },
            PathSet {
                files: vec![rel("a/root")],
                directories: vec![],
            },
        )
        .unwrap();
        staged.dirs.clear();
        check_patch_links(pkg, &staged, &ops, &installed.files, &installed.dirs).unwrap();
    }

    #[test]
    fn refuses_hard_links_devices_fifos_and_unknown_types() {
        let cases = [
            (link_header(b"hl", EntryType::Link, b"a"), "hard link"),
            (raw_header(b"fifo", EntryType::Fifo, 0), "FIFO"),
            (raw_header(b"tty", EntryType::Char, 0), "character device"),
            (raw_header(b"sda", EntryType::Block, 0), "block device"),
            (
                raw_header(b"c", EntryType::Continuous, 0),
                "contiguous file",
            ),
            (
                raw_header(b"g", EntryType::XGlobalHeader, 0),
                "PAX global header",
            ),
            (
                raw_header(b"z", EntryType::new(b'Z'), 0),
                "entry of type 'Z'",
            ),
        ];
        for (header, expected) in cases {
            let env = Env::new();
            let err = env.refuse(&RawTar::new().add(header, b"").bytes(), 100, Allowed::Any);
            match &err {
                ExtractError::UnsupportedEntryType { kind, .. } => assert_eq!(kind, expected),
                other => panic!("{expected}: {other}"),
            }
            assert!(is_security(&err));
            assert_eq!(fs::read_dir(env.stage()).unwrap().count(), 0);
        }
    }

    #[test]
    fn refuses_sparse_entries() {
        // A GNU sparse entry: 512 bytes in the archive that claim to be a 1 TiB file.
        let mut h = raw_header(b"sparse", EntryType::GNUSparse, 512);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(1 << 40);
        gnu.sparse[0].set_length(512);
        gnu.set_real_size((1 << 40) + 512);
        h.set_cksum();
        let env = Env::new();
        let err = env.refuse(
            &RawTar::new().add(h, &[7u8; 512]).bytes(),
            1 << 50,
            Allowed::Any,
        );
        match &err {
            ExtractError::UnsupportedEntryType { kind, .. } => assert_eq!(kind, "GNU sparse file"),
            other => panic!("{other}"),
        }
        // A PAX-format sparse file is a "regular" entry whose records carry a sparse map.
        let records = pax_record("GNU.sparse.map", "0,4");
        let tar = RawTar::new()
            .add(
                raw_header(b"PaxHeaders/s", EntryType::XHeader, records.len() as u64),
                &records,
            )
            .file("paxsparse", b"data")
            .bytes();
        let env = Env::new();
        let err = env.refuse(&tar, 100, Allowed::Any);
        match &err {
            ExtractError::UnsupportedEntryType { kind, .. } => assert_eq!(kind, "PAX sparse file"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn refuses_duplicates_and_file_directory_clashes() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "same file twice",
                RawTar::new().file("a", b"1").file("a", b"2").bytes(),
            ),
            ("dir twice", RawTar::new().dir("d/").dir("d").bytes()),
            (
                "file over dir",
                RawTar::new().dir("d").file("d", b"1").bytes(),
            ),
            (
                "file over implicit dir",
                RawTar::new().file("d/x", b"1").file("d", b"1").bytes(),
            ),
            (
                "dir over file",
                RawTar::new().file("a", b"1").dir("a").bytes(),
            ),
            (
                "file under file",
                RawTar::new().file("a", b"1").file("a/b", b"2").bytes(),
            ),
        ];
        for (what, tar) in cases {
            let env = Env::new();
            let err = env.refuse(&tar, 100, Allowed::Any);
            assert!(
                matches!(err, ExtractError::DuplicateEntry { .. }),
                "{what}: {err}"
            );
            assert!(is_security(&err));
        }
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_unpacked_cap() {
        // 64 MiB of zeros compress to ~64 KiB; the signed unpacked size says 1 MiB.
        let size = 64 << 20;
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append(
                &raw_header(b"bomb", EntryType::Regular, size),
                io::repeat(0).take(size),
            )
            .unwrap();
        let env = Env::new();
        let err = env.refuse(&builder.into_inner().unwrap(), 1 << 20, Allowed::Any);
        assert!(
            matches!(err, ExtractError::UnpackedSizeExceeded { .. }),
            "{err}"
        );
        assert!(!env.stage().join("bomb").exists());

        // Many entries that each fit but together exceed the cap: staging stops at the cap.
        let chunk = vec![0u8; 300 << 10];
        let mut tar = RawTar::new();
        for i in 0..10 {
            tar = tar.file(&format!("part{i}"), &chunk);
        }
        let env = Env::new();
        let err = env.refuse(&tar.bytes(), 1 << 20, Allowed::Any);
        assert!(
            matches!(err, ExtractError::UnpackedSizeExceeded { .. }),
            "{err}"
        );
        let staged: u64 = fs::read_dir(env.stage())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(staged <= 1 << 20, "staged {staged} bytes");
        // Exactly at the cap is fine.
        let env = Env::new();
        env.write_gz(&RawTar::new().file("a", &chunk).bytes());
        env.extract(chunk.len() as u64, Allowed::Any).unwrap();
    }

    #[test]
    fn zstd_packages_extract_and_a_zstd_bomb_stops_at_the_cap() {
        let tar = RawTar::new().file("a", b"hello").dir("d").bytes();
        let env = Env::new();
        env.write_zst(&tar, MAX_ZSTD_WINDOW_LOG);
        let staged = env.extract(5, Allowed::Any).unwrap();
        assert_eq!(staged.total_size(), 5);
        assert_eq!(fs::read(env.stage().join("a")).unwrap(), b"hello");

        // 64 MiB of zeros compress to a few KiB; the signed unpacked size says 1 MiB.
        let size = 64 << 20;
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append(
                &raw_header(b"bomb", EntryType::Regular, size),
                io::repeat(0).take(size),
            )
            .unwrap();
        let env = Env::new();
        env.write_zst(&builder.into_inner().unwrap(), 20);
        assert!(fs::metadata(env.package()).unwrap().len() < 64 << 10);
        let err = env.extract(1 << 20, Allowed::Any).unwrap_err();
        assert!(
            matches!(err, ExtractError::UnpackedSizeExceeded { .. }),
            "{err}"
        );
        assert!(!env.stage().join("bomb").exists());

        // A frame that needs a larger window than the client allows is refused, not decoded.
        let env = Env::new();
        env.write_zst(&tar, MAX_ZSTD_WINDOW_LOG + 1);
        let err = env.extract(5, Allowed::Any).unwrap_err();
        assert!(matches!(err, ExtractError::CorruptPackage { .. }), "{err}");
        assert!(is_security(&err));

        // Trailing bytes after the frame, and bytes that are no known compression.
        let env = Env::new();
        env.write_zst(&tar, MAX_ZSTD_WINDOW_LOG);
        let mut bytes = fs::read(env.package()).unwrap();
        bytes.extend_from_slice(b"junk");
        fs::write(env.package(), &bytes).unwrap();
        let err = env.extract(5, Allowed::Any).unwrap_err();
        assert!(matches!(err, ExtractError::CorruptPackage { .. }), "{err}");
        let env = Env::new();
        fs::write(env.package(), &tar).unwrap();
        let err = env.extract(5, Allowed::Any).unwrap_err();
        assert!(
            err.to_string().contains("neither a zstd nor a gzip stream"),
            "{err}"
        );
    }

    #[test]
    fn refuses_oversized_metadata_before_buffering_it() {
        let name = vec![b'a'; 8 << 20];
        let tar = RawTar::new()
            .add(
                raw_header(b"././@LongLink", EntryType::GNULongName, name.len() as u64),
                &name,
            )
            .file("x", b"1")
            .bytes();
        let env = Env::new();
        let err = env.refuse(&tar, 100, Allowed::Any);
        assert!(
            matches!(err, ExtractError::MetadataTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_directories_with_data() {
        let env = Env::new();
        let tar = RawTar::new()
            .add(raw_header(b"d/", EntryType::Directory, 4), b"data")
            .bytes();
        let err = env.refuse(&tar, 100, Allowed::Any);
        assert!(
            matches!(err, ExtractError::DirectoryWithData { .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_more_entries_than_the_cap() {
        let mut tar = RawTar::new();
        for i in 0..6 {
            tar = tar.file(&format!("f{i}"), b"");
        }
        let env = Env::new();
        env.write_gz(&tar.bytes());
        let limits = ExtractLimits {
            max_unpacked_bytes: 0,
            max_entries: 5,
            exact: false,
            signed: None,
        };
        let err = extract(&env.package(), &env.stage(), &limits, Allowed::Any).unwrap_err();
        assert!(
            matches!(err, ExtractError::TooManyEntries { max: 5, .. }),
            "{err}"
        );
        assert_eq!(fs::read_dir(env.stage()).unwrap().count(), 5);
    }

    fn patch_ops() -> Operations {
        Operations::new(
            PathSet {
                files: vec![rel("bin/app")],
                directories: vec![rel("web")],
            },
            PathSet {
                files: vec![],
                directories: vec![rel("old")],
            },
        )
        .unwrap()
    }

    #[test]
    fn refuses_entries_outside_the_operations() {
        let ops = patch_ops();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "unnamed file",
                RawTar::new()
                    .file("bin/app", b"1")
                    .file("bin/other", b"2")
                    .bytes(),
            ),
            ("top-level file", RawTar::new().file("evil", b"1").bytes()),
            (
                "under a deleted dir",
                RawTar::new().file("old/x", b"1").bytes(),
            ),
            ("deleted dir itself", RawTar::new().dir("old").bytes()),
            (
                "replaced file as a dir",
                RawTar::new().dir("bin/app").bytes(),
            ),
            (
                "replaced dir as a file",
                RawTar::new().file("web", b"1").bytes(),
            ),
            (
                "ancestor as a file",
                RawTar::new().file("bin", b"1").bytes(),
            ),
        ];
        for (what, tar) in cases {
            let env = Env::new();
            let err = env.refuse(&tar, 100, Allowed::Operations(&ops));
            assert!(
                matches!(err, ExtractError::EntryNotAllowed { .. }),
                "{what}: {err}"
            );
            assert!(is_security(&err));
        }
    }

    #[test]
    fn refuses_a_package_missing_a_replaced_path() {
        let ops = patch_ops();
        let env = Env::new();
        let tar = RawTar::new().dir("web").bytes();
        let err = env.refuse(&tar, 100, Allowed::Operations(&ops));
        assert!(
            matches!(&err, ExtractError::IncompletePackage { path, expected: "regular file", .. } if path.as_str() == "bin/app"),
            "{err}"
        );
        let env = Env::new();
        let tar = RawTar::new().file("bin/app", b"1").bytes();
        let err = env.refuse(&tar, 100, Allowed::Operations(&ops));
        assert!(
            matches!(
                &err,
                ExtractError::IncompletePackage {
                    expected: "directory",
                    ..
                }
            ),
            "{err}"
        );
        // A replaced directory may arrive only implicitly, through its contents.
        let env = Env::new();
        env.write_gz(
            &RawTar::new()
                .file("bin/app", b"1")
                .file("web/i", b"2")
                .bytes(),
        );
        env.extract(2, Allowed::Operations(&ops)).unwrap();
    }

    #[test]
    fn refuses_truncated_and_corrupt_packages() {
        let tar = RawTar::new().file("a", &vec![9u8; 100_000]).bytes();
        let env = Env::new();
        env.write_gz(&tar);
        let full = fs::read(env.package()).unwrap();
        for cut in [10, full.len() / 2, full.len() - 4] {
            let env = Env::new();
            fs::write(env.package(), &full[..cut]).unwrap();
            let err = env.extract(100_000, Allowed::Any).unwrap_err();
            assert!(
                matches!(err, ExtractError::CorruptPackage { .. }),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().contains("pkg.tar.gz"));
        }
        let mut flipped = full.clone();
        let last = flipped.len() - 6;
        flipped[last] ^= 0xff;
        let env = Env::new();
        fs::write(env.package(), &flipped).unwrap();
        let err = env.extract(100_000, Allowed::Any).unwrap_err();
        assert!(matches!(err, ExtractError::CorruptPackage { .. }), "{err}");

        let mut trailing = full.clone();
        trailing.extend_from_slice(b"junk");
        let env = Env::new();
        fs::write(env.package(), &trailing).unwrap();
        let err = env.extract(100_000, Allowed::Any).unwrap_err();
        assert!(matches!(err, ExtractError::CorruptPackage { .. }), "{err}");

        // A tar stream cut inside an entry, wrapped in a valid gzip stream.
        let env = Env::new();
        let err = env.refuse(&tar[..512 + 50_000], 100_000, Allowed::Any);
        assert!(matches!(err, ExtractError::CorruptPackage { .. }), "{err}");
    }

    #[test]
    fn refuses_a_stage_that_is_not_empty_or_not_a_directory() {
        let env = Env::new();
        env.write_gz(&RawTar::new().file("a", b"1").bytes());
        fs::write(env.stage().join("leftover"), b"").unwrap();
        let err = env.extract(1, Allowed::Any).unwrap_err();
        assert!(matches!(err, ExtractError::StageNotUsable { .. }), "{err}");
        let link = env.work.path().join("stage-link");
        std::os::unix::fs::symlink(env.outside(), &link).unwrap();
        let limits = ExtractLimits::for_unpacked_size(1);
        let err = extract(&env.package(), &link, &limits, Allowed::Any).unwrap_err();
        assert!(matches!(err, ExtractError::StageNotUsable { .. }), "{err}");
        assert_eq!(fs::read_dir(env.outside()).unwrap().count(), 0);
    }
}

#[cfg(test)]
mod delta_tests {
    use super::*;
    use crate::hashing::Sha256Digest;
    use crate::package::delta::{encode, window_log_for};
    use crate::repo::manifest::{DeltaPackage, FileDelta, Package, PackageUrl, PathSet};

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// An install holding `old/app` (the base), a stage, and a delta package for `bin/app`.
    struct Env {
        work: tempfile::TempDir,
        base: Vec<u8>,
        target: Vec<u8>,
    }

    impl Env {
        fn new(target_len: usize) -> Self {
            let work = tempfile::tempdir().unwrap();
            for d in ["install/old", "stage"] {
                fs::create_dir_all(work.path().join(d)).unwrap();
            }
            let base: Vec<u8> = (0..target_len as u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
                .collect();
            let mut target = base.clone();
            target[10..20].copy_from_slice(b"0123456789");
            fs::write(work.path().join("install/old/app"), &base).unwrap();
            Env { work, base, target }
        }
        fn ops() -> Operations {
            Operations::new(
                PathSet {
                    files: vec![rel("bin/app")],
                    directories: vec![],
                },
                PathSet::default(),
            )
            .unwrap()
        }
        fn delta(&self, declared: &[u8]) -> DeltaPackage {
            DeltaPackage {
                package: Package {
                    url: PackageUrl::new("d.tar.zst").unwrap(),
                    size: 1,
                    sha256: Sha256Digest::of(b""),
                    unpacked_size: declared.len() as u64,
                },
                window_log: window_log_for(self.base.len() as u64, self.target.len() as u64)
                    .unwrap(),
                files: [(
                    rel("bin/app"),
                    FileDelta {
                        base: rel("old/app"),
                        base_sha256: Sha256Digest::of(&self.base),
                        size: declared.len() as u64,
                        sha256: Sha256Digest::of(declared),
                        chunks: Vec::new(),
                    },
                )]
                .into_iter()
                .collect(),
            }
        }
        /// Writes a package whose `bin/app` entry is `encoded`.
        fn package(&self, encoded: &[u8]) -> PathBuf {
            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Regular);
            h.set_size(encoded.len() as u64);
            h.set_mode(0o755);
            tar.append_data(&mut h, "bin/app", encoded).unwrap();
            let path = self.work.path().join("d.tar.zst");
            let mut z = zstd::stream::write::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
            z.write_all(&tar.into_inner().unwrap()).unwrap();
            z.finish().unwrap();
            path
        }
        fn extract(
            &self,
            package: &Path,
            delta: &DeltaPackage,
        ) -> Result<TreeListing, ExtractError> {
            let root = self.work.path().join("install");
            extract_delta(
                package,
                &self.work.path().join("stage"),
                &ExtractLimits::for_unpacked_size(delta.package.unpacked_size),
                &Env::ops(),
                Bases::new(&root, delta),
            )
        }
        fn encoded(&self, target: &[u8]) -> Vec<u8> {
            let log = window_log_for(self.base.len() as u64, target.len() as u64).unwrap();
            encode(&self.base, target, log, Vec::new()).unwrap()
        }
    }

    #[test]
    fn a_delta_entry_decodes_against_its_installed_base() {
        let env = Env::new(300_000);
        let encoded = env.encoded(&env.target);
        // Ten bytes changed in 300,000: the delta is under 1 % of the file.
        assert!(
            encoded.len() < env.target.len() / 100,
            "{} bytes",
            encoded.len()
        );
        let delta = env.delta(&env.target);
        let listing = env.extract(&env.package(&encoded), &delta).unwrap();
        let staged = env.work.path().join("stage/bin/app");
        assert_eq!(fs::read(&staged).unwrap(), env.target);
        let record = &listing.files[&rel("bin/app")];
        assert_eq!(record.sha256, Sha256Digest::of(&env.target));
        assert_eq!(record.mode, 0o755);
    }

    #[test]
    fn a_delta_bomb_stops_one_byte_past_its_signed_size() {
        let env = Env::new(4096);
        // Declared as 4 KiB; decodes to 64 MiB of zeros.
        let bomb = vec![0u8; 64 << 20];
        let log = window_log_for(env.base.len() as u64, bomb.len() as u64).unwrap();
        let encoded = encode(&env.base, &bomb, log, Vec::new()).unwrap();
        let mut delta = env.delta(&env.target);
        delta.window_log = log;
        // Room in the package's cap: the file's own signed size must stop it.
        delta.package.unpacked_size = 1 << 20;
        let err = env.extract(&env.package(&encoded), &delta).unwrap_err();
        assert!(
            err.to_string()
                .contains("decodes to more than its signed 4096 bytes"),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Security);
        let written = fs::metadata(env.work.path().join("stage/bin/app"))
            .unwrap()
            .len();
        assert!(written <= 4097, "{written} bytes written");
    }

    #[test]
    fn a_delta_that_decodes_to_other_bytes_or_is_not_a_frame_is_refused() {
        let env = Env::new(20_000);
        let mut other = env.target.clone();
        other[0] ^= 1;
        let err = env
            .extract(&env.package(&env.encoded(&other)), &env.delta(&env.target))
            .unwrap_err();
        assert!(err.to_string().contains("the manifest signed"), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Security);
        fs::remove_dir_all(env.work.path().join("stage")).unwrap();
        fs::create_dir(env.work.path().join("stage")).unwrap();
        let err = env
            .extract(
                &env.package(b"not a zstd frame at all"),
                &env.delta(&env.target),
            )
            .unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Security, "{err}");
    }

    #[test]
    fn a_base_changed_after_the_check_fails_without_decoding() {
        let env = Env::new(20_000);
        let package = env.package(&env.encoded(&env.target));
        fs::write(env.work.path().join("install/old/app"), b"edited").unwrap();
        let err = env.extract(&package, &env.delta(&env.target)).unwrap_err();
        assert!(err.to_string().contains("was modified"), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Failure);
    }

    #[test]
    fn a_delta_package_missing_a_delta_entry_is_incomplete() {
        let env = Env::new(20_000);
        let mut delta = env.delta(&env.target);
        let extra = FileDelta {
            base: rel("old/app"),
            base_sha256: Sha256Digest::of(&env.base),
            size: 1,
            sha256: Sha256Digest::of(b"x"),
            chunks: Vec::new(),
        };
        delta.files.insert(rel("bin/other"), extra);
        delta.package.unpacked_size += 1;
        let err = env
            .extract(&env.package(&env.encoded(&env.target)), &delta)
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
    /// A chunked entry against a base whose halves the file swaps: each chunk's slice must be
    /// found by its anchors (a proportional slice would miss), and a lying chunk is refused.
    #[test]
    fn a_chunked_delta_decodes_slice_by_slice_and_refuses_a_lying_chunk() {
        use crate::package::delta::{ChunkGeometry, encode_chunked, window_log_of};
        let env = Env::new(400_000);
        let (front, back) = env.base.split_at(200_000);
        let target = [back, front].concat();
        let geometry = ChunkGeometry {
            chunk: 64 << 10,
            slice: 96 << 10,
        };
        let (encoded, chunks) = encode_chunked(&env.base, &target, geometry, Vec::new()).unwrap();
        assert_eq!(chunks.len(), target.len().div_ceil(geometry.chunk));
        assert!(encoded.len() < target.len() / 20, "{} bytes", encoded.len());
        let mut delta = env.delta(&target);
        let file = delta.files.get_mut(&rel("bin/app")).unwrap();
        file.chunks = chunks;
        delta.window_log = window_log_of(env.base.len() as u64, file).unwrap();
        env.extract(&env.package(&encoded), &delta).unwrap();
        assert_eq!(
            fs::read(env.work.path().join("stage/bin/app")).unwrap(),
            target
        );

        let reset = || {
            fs::remove_dir_all(env.work.path().join("stage")).unwrap();
            fs::create_dir(env.work.path().join("stage")).unwrap();
        };
        // A chunk signed smaller than it decodes: stopped one byte past it.
        reset();
        let mut lying = delta.clone();
        let file = lying.files.get_mut(&rel("bin/app")).unwrap();
        file.chunks[0].size -= 1;
        file.chunks[1].size += 1;
        let err = env.extract(&env.package(&encoded), &lying).unwrap_err();
        assert!(
            err.to_string().contains("chunk 0: decodes to more"),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Security);
        // A slice past the end of its base.
        reset();
        let mut past = delta.clone();
        past.files.get_mut(&rel("bin/app")).unwrap().chunks[2].base_offset = 1 << 30;
        let err = env.extract(&env.package(&encoded), &past).unwrap_err();
        assert!(
            err.to_string().contains("past the end of its base"),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Security);
        // A base edited at the same size: not this package's fault, so the plain one is used.
        reset();
        let mut edited = env.base.clone();
        edited[123] ^= 1;
        fs::write(env.work.path().join("install/old/app"), &edited).unwrap();
        let err = env.extract(&env.package(&encoded), &delta).unwrap_err();
        assert!(err.to_string().contains("was modified"), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Failure);
    }
}

#[cfg(test)]
mod delta_props {
    use proptest::prelude::*;

    use super::*;
    use crate::hashing::Sha256Digest;
    use crate::package::delta::{encode, window_log_for};
    use crate::repo::manifest::{DeltaPackage, FileDelta, Package, PackageUrl, PathSet};

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever a delta entry holds — a valid frame, a frame with bytes flipped, cut short
        /// or extended, a frame of another file — extraction either stages exactly the signed
        /// file or refuses, and never writes more than the signed size + 1 bytes.
        #[test]
        fn a_hostile_delta_entry_stages_the_signed_file_or_nothing(
            seed in any::<u32>(),
            len in 300usize..20_000,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in proptest::option::of(any::<usize>()),
            extra in proptest::collection::vec(any::<u8>(), 0..3),
            other in any::<bool>(),
        ) {
            let work = tempfile::tempdir().unwrap();
            fs::create_dir_all(work.path().join("install")).unwrap();
            fs::create_dir(work.path().join("stage")).unwrap();
            let mut x = seed | 1;
            let base: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 17; x ^= x << 5; x as u8 }).collect();
            let mut target = base.clone();
            target[len / 2] ^= 0x5a;
            target.extend_from_slice(b"tail");
            fs::write(work.path().join("install/base"), &base).unwrap();
            let log = window_log_for(base.len() as u64, target.len() as u64).unwrap();
            let encoded_of = if other { &base[..len / 3] } else { &target[..] };
            let mut encoded = encode(&base, encoded_of, log, Vec::new()).unwrap();
            let valid = flips.is_empty() && cut.is_none() && extra.is_empty() && !other;
            for (at, bits) in &flips {
                let i = at % encoded.len();
                encoded[i] ^= bits | 1;
            }
            if let Some(c) = cut {
                encoded.truncate(c % encoded.len());
            }
            encoded.extend_from_slice(&extra);

            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Regular);
            h.set_size(encoded.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, "f", &encoded[..]).unwrap();
            let package = work.path().join("d.tar.zst");
            let mut z = zstd::stream::write::Encoder::new(File::create(&package).unwrap(), 1).unwrap();
            z.write_all(&tar.into_inner().unwrap()).unwrap();
            z.finish().unwrap();

            let delta = DeltaPackage {
                package: Package {
                    url: PackageUrl::new("d.tar.zst").unwrap(),
                    size: 1,
                    sha256: Sha256Digest::of(b""),
                    unpacked_size: 1 << 20,
                },
                window_log: log,
                files: [(rel("f"), FileDelta {
                    base: rel("base"),
                    base_sha256: Sha256Digest::of(&base),
                    size: target.len() as u64,
                    sha256: Sha256Digest::of(&target),
                    chunks: Vec::new(),
                })].into_iter().collect(),
            };
            let ops = Operations::new(
                PathSet { files: vec![rel("f")], directories: vec![] },
                PathSet::default(),
            ).unwrap();
            let root = work.path().join("install");
            let result = extract_delta(
                &package,
                &work.path().join("stage"),
                &ExtractLimits { max_unpacked_bytes: 1 << 20, max_entries: 10, exact: false, signed: None },
                &ops,
                Bases::new(&root, &delta),
            );
            let staged = work.path().join("stage/f");
            match result {
                Ok(listing) => {
                    prop_assert_eq!(fs::read(&staged).unwrap(), target.clone());
                    let want = Sha256Digest::of(&target);
                    prop_assert_eq!(&listing.files[&rel("f")].sha256, &want);
                }
                Err(e) => {
                    prop_assert!(!valid, "a valid delta was refused: {}", e);
                    prop_assert!(
                        matches!(e.exit_class(), ExitClass::Security),
                        "a hostile delta is a security refusal: {}", e
                    );
                    if let Ok(meta) = fs::metadata(&staged) {
                        prop_assert!(meta.len() <= target.len() as u64 + 1);
                    }
                }
            }
            prop_assert_eq!(fs::read(root.join("base")).unwrap(), base);
        }
    }
}
