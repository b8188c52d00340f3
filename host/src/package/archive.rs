//! Deterministic package writer (used by the publisher): a tar stream compressed with zstd
//! (`.tar.zst`: long-distance matching over a [`ZSTD_WINDOW_LOG`] window, multithreaded) or
//! gzip (`.tar.gz`, what molt wrote before zstd; still written for a name ending so), chosen
//! by the package's file name.
//!
//! Symbolic links are written as tar symlink entries (size 0, mode `0o777`, the target in the
//! header or a GNU long-link entry), and must still have the listed target when packed.
//!
//! The same tree always gives a byte-identical package, so a re-publish is reproducible and a
//! package's hash says only what it holds: entries are sorted by path (a directory before its
//! contents), every header has mtime 0, owner 0:0 with empty user/group names and a mode masked
//! to `0o777`; paths too long for a header use GNU long-name entries (as the tar crate writes
//! them); the gzip header carries no file name and mtime 0.
//!
//! File contents are streamed, never read whole, and each file must still have the size and
//! SHA-256 the listing recorded while it is copied (the manifest's patch operations were derived
//! from those hashes). The package is written to a temp file beside `out`,
//! fsynced, renamed into place, and the directory is fsynced, so `out` is either the complete
//! package or absent.
//!
//! A package never replaces *different* bytes already at its name: those may be a package the
//! repository's live manifest names (the same version published before from another tree, or
//! a publish that stopped before its manifest), and replacing them would fail every client's
//! hash check until a new manifest lands — for good, if the publish then fails. Such a package
//! goes beside it under a name carrying its hash ([`PackageInfo::path`] says where it went).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::GzBuilder;
use tar::{EntryType, Header};

use crate::error::ExitClass;
use crate::fsutil::{self, Existing};
use crate::hashing::{CappedHashReader, HashingWriter, Sha256Digest};
use crate::relpath::RelPath;
use crate::repo::manifest::PathSet;
use crate::tree::{FileRecord, TreeListing};

/// Buffer between the compressor and the package file.
const OUTPUT_BUFFER: usize = 256 * 1024;
/// zstd level of the packages clients fetch: full packages, delta packages, and patch packages
/// no delta package stands beside. Above 9, zstd's match finder becomes bound by its tables'
/// cache misses: on the toolchain bench's 1.4 GB tar (two threads, 16 MiB window) level 9 took
/// 10.3 s for 219.7 MB and level 12 25.0 s for 212.1 MB, 2.4x the time for 3.5 % fewer bytes.
pub(crate) const ZSTD_LEVEL: i32 = 9;
/// zstd level of a patch package a delta package stands beside: only a client that cannot use
/// the deltas fetches it (a base edited locally, or a client from before deltas), so it is
/// written fast (the same tar: level 3 took 4.5 s for 244.6 MB).
pub(crate) const FALLBACK_LEVEL: i32 = 3;
/// log2 of the zstd window packages are written with (16 MiB): the decoder's buffer is one
/// window, so this bounds what extracting a package costs in memory (with a 128 MiB window it
/// was most of a 66,000-file apply's peak; the `apply` bench prints it).
pub(crate) const ZSTD_WINDOW_LOG: u32 = 24;
/// log2 of the zstd window delta packages are written with (1 MiB). Their entries are mostly
/// binary deltas, zstd frames already, so a long window finds almost nothing: on the toolchain
/// bench's 40,166-delta package, 2^20 instead of 2^24 cost 0.17 % (122.26 against 122.05 MB) and
/// took 13 MiB off the client's peak heap (76.6 → 63.3 MiB), which holds this window beside a
/// delta's own.
pub(crate) const DELTA_PACKAGE_WINDOW_LOG: u32 = 20;
/// log2 of the largest window a client decodes (128 MiB, as `zstd --long`, what packages were
/// written with before [`ZSTD_WINDOW_LOG`]): [`crate::package::extract`] refuses larger ones.
pub(crate) const MAX_ZSTD_WINDOW_LOG: u32 = 27;

/// How a package's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a package file name asks for: zstd for `.tar.zst`, else gzip.
    pub(crate) fn for_path(path: &Path) -> Self {
        if path.to_string_lossy().ends_with(".tar.zst") {
            Compression::Zstd
        } else {
            Compression::Gzip
        }
    }

    /// The file name ending of a package compressed so.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => "tar.gz",
            Compression::Zstd => "tar.zst",
        }
    }
}

type Output = HashingWriter<BufWriter<File>>;

/// The compressor in front of the package file.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Output>),
    Zstd(zstd::stream::write::Encoder<'static, Output>),
}

impl Encoder {
    /// `window_log` and `level` are those of a zstd encoder (long-distance matching over that
    /// window); gzip is always written at its default level.
    fn new(
        compression: Compression,
        output: Output,
        window_log: u32,
        level: i32,
    ) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip => Encoder::Gzip(
                GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(output, flate2::Compression::default()),
            ),
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(output, level)?;
                // Multithreaded output does not depend on the number of workers (>= 1), so the
                // same tree gives the same bytes on any machine.
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                z.multithread(u32::try_from(workers).unwrap_or(1))?;
                z.long_distance_matching(true)?;
                z.window_log(window_log)?;
                z.include_checksum(false)?;
                Encoder::Zstd(z)
            }
        })
    }

    fn finish(self) -> io::Result<Output> {
        match self {
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
        }
    }
}

/// Which part of a release tree goes into a package.
#[derive(Debug, Clone, Copy)]
pub enum PackageEntries<'a> {
    /// Every file and directory of the listing: a full package.
    FullTree,
    /// A patch package: exactly the files in `replace.files`, each directory in
    /// `replace.directories` with its full contents, and the directory entries of their
    /// ancestors.
    Replace(&'a PathSet),
}

/// What the manifest records about a written package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// Where the package is: the requested path, or beside it with its hash in the name when
    /// other bytes were already there.
    pub path: PathBuf,
    /// False when the same bytes were already at `path` (left as they were).
    pub fresh: bool,
    /// Size of the compressed package in bytes.
    pub size: u64,
    /// SHA-256 of the compressed package.
    pub sha256: Sha256Digest,
    /// Sum of the sizes of the package's regular files.
    pub unpacked_size: u64,
}

/// Why a package could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "{path} is named in the patch's replace.files but is not a regular file of the release \
         tree; the patch operations and the tree listing disagree"
    )]
    ReplacedFileMissing { path: RelPath },
    #[error(
        "{path} is named in the patch's replace.directories but is not a directory of the \
         release tree; the patch operations and the tree listing disagree"
    )]
    ReplacedDirectoryMissing { path: RelPath },
    #[error("failed to read {path} from the release tree: {source}")]
    ReadTree { path: PathBuf, source: io::Error },
    #[error(
        "{path} is no longer a regular file; publish from a tree nobody is changing while it is \
         packaged"
    )]
    NotARegularFile { path: PathBuf },
    #[error(
        "{path} is no longer a directory; publish from a tree nobody is changing while it is \
         packaged"
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} changed while it was packaged (listed with {expected} bytes, found {found}); \
         publish from a tree nobody is changing while it is packaged"
    )]
    FileChanged {
        path: PathBuf,
        expected: u64,
        found: String,
    },
    #[error(
        "{path} changed while it was packaged (listed as a link to {expected:?}, now {found:?}); \
         publish from a tree nobody is changing while it is packaged"
    )]
    LinkChanged {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("failed to write package {path}: {source}")]
    WritePackage { path: PathBuf, source: io::Error },
}

impl ArchiveError {
    pub fn exit_class(&self) -> ExitClass {
        ExitClass::Failure
    }
}

/// One entry to archive: a directory, or a regular file with its listed record.
type Selection<'a> = BTreeMap<&'a RelPath, Option<&'a FileRecord>>;

/// Regular files whose package entry holds other bytes than the tree's file: binary deltas the
/// publisher wrote one after another into one spool file (one file, not one each: creating and
/// removing 40,000 scratch files cost a toolchain publish more CPU than encoding its small
/// deltas). Each is at its offset in the spool, with its record: size and SHA-256 of the delta
/// bytes, and the mode the installed file gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Substitutes<'a> {
    pub(crate) spool: &'a Path,
    pub(crate) files: &'a BTreeMap<RelPath, (u64, FileRecord)>,
}

/// Where an entry's bytes are read from.
enum Contents<'a> {
    /// The tree's file at this path.
    Tree(PathBuf),
    /// `size` bytes at `offset` in the spool (see [`Substitutes`]).
    Spool {
        spool: &'a File,
        path: &'a Path,
        offset: u64,
    },
}

/// Writes the package for `entries` of the tree at `root` (described by `listing`) to `out`
/// (compressed as its name says, see [`Compression::for_path`]), atomically, and returns its
/// size, SHA-256 and unpacked size.
pub fn write_package(
    out: &Path,
    root: &Path,
    listing: &TreeListing,
    entries: PackageEntries<'_>,
) -> Result<PackageInfo, ArchiveError> {
    write_package_with(out, root, listing, entries, ZSTD_LEVEL, None)
}

/// [`write_package`] at zstd level `level`, with the regular files of `substitutes` taken from
/// their spool, zstd over a [`DELTA_PACKAGE_WINDOW_LOG`] window when there are any (a delta
/// package); the returned `unpacked_size` counts the substitutes' own sizes.
pub(crate) fn write_package_with(
    out: &Path,
    root: &Path,
    listing: &TreeListing,
    entries: PackageEntries<'_>,
    level: i32,
    substitutes: Option<Substitutes<'_>>,
) -> Result<PackageInfo, ArchiveError> {
    let write_err = |source| ArchiveError::WritePackage {
        path: out.to_owned(),
        source,
    };
    let spool = substitutes
        .map(|s| {
            fsutil::open_regular(s.spool)
                .map(|file| (file, s))
                .map_err(|source| ArchiveError::ReadTree {
                    path: s.spool.to_owned(),
                    source,
                })
        })
        .transpose()?;
    let window_log = if spool.is_some() {
        DELTA_PACKAGE_WINDOW_LOG
    } else {
        ZSTD_WINDOW_LOG
    };
    let selection = select(listing, entries)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".molt-package-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(write_err)?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_err)?;
    let output = HashingWriter::new(BufWriter::with_capacity(
        OUTPUT_BUFFER,
        temp.as_file().try_clone().map_err(write_err)?,
    ));
    let encoder =
        Encoder::new(Compression::for_path(out), output, window_log, level).map_err(write_err)?;
    let mut builder = tar::Builder::new(encoder);

    let mut unpacked_size = 0u64;
    for (path, record) in &selection {
        match record {
            None => append_directory(&mut builder, root, path, out)?,
            Some(FileRecord {
                link: Some(target), ..
            }) => append_link(&mut builder, root, path, target, out)?,
            Some(record) => {
                let substitute = spool
                    .as_ref()
                    .and_then(|(file, s)| Some((file, s, s.files.get(*path)?)));
                let (contents, record) = match substitute {
                    Some((spool, s, (offset, substitute))) => (
                        Contents::Spool {
                            spool,
                            path: s.spool,
                            offset: *offset,
                        },
                        substitute,
                    ),
                    None => (Contents::Tree(path.under(root)), *record),
                };
                append_file(&mut builder, contents, path, record, out)?;
                unpacked_size += record.size;
            }
        }
    }

    let encoder = builder.into_inner().map_err(write_err)?;
    let output = encoder.finish().map_err(write_err)?;
    let (buffered, sha256, size) = output.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    drop(file);
    let (path, fresh) = place(temp, out, size, &sha256).map_err(write_err)?;
    tracing::debug!(package = %path.display(), size, unpacked_size, entries = selection.len(), fresh, "wrote package");
    Ok(PackageInfo {
        path,
        fresh,
        size,
        sha256,
        unpacked_size,
    })
}

/// Puts the written `temp` (`size` bytes, `sha256`) at `out`, or beside it when `out` holds
/// other bytes (see the module doc); whether this made the file (false: the same bytes were
/// already there, and stay).
fn place(
    temp: tempfile::NamedTempFile,
    out: &Path,
    size: u64,
    sha256: &Sha256Digest,
) -> io::Result<(PathBuf, bool)> {
    let same = |path: &Path| -> io::Result<Option<bool>> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
            Ok(m) if !m.is_file() || m.len() != size => Ok(Some(false)),
            Ok(_) => Ok(Some(crate::hashing::sha256_file(path)? == *sha256)),
        }
    };
    // The same bytes already there may be a killed publish's, renamed but never made durable:
    // they are fsynced with their directory before a manifest can come to name them.
    let kept = |path: PathBuf| -> io::Result<(PathBuf, bool)> {
        File::open(&path)?.sync_all()?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        fsutil::fsync_dir(dir.unwrap_or(Path::new(".")))?;
        Ok((path, false))
    };
    let path = match same(out)? {
        None => out.to_owned(),
        Some(true) => return kept(out.to_owned()),
        Some(false) => {
            let beside = beside(out, sha256);
            if same(&beside)? == Some(true) {
                return kept(beside);
            }
            beside
        }
    };
    fsutil::persist_temp(temp, &path, Existing::Replace)?;
    Ok((path, true))
}

/// `dir/name-1.2.0-x86_64.<first 16 hex digits of sha256>.tar.zst` for `dir/name-1.2.0-x86_64.tar.zst`.
fn beside(out: &Path, sha256: &Sha256Digest) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hash = &sha256.to_hex()[..16];
    let (stem, ext) = match name.rfind(".tar.") {
        Some(i) => name.split_at(i),
        None => (name.as_str(), ""),
    };
    out.with_file_name(format!("{stem}.{hash}{ext}"))
}

/// The sorted entries of the package: BTreeMap order puts every directory before its contents,
/// because a path sorts before any longer path it prefixes.
fn select<'a>(
    listing: &'a TreeListing,
    entries: PackageEntries<'a>,
) -> Result<Selection<'a>, ArchiveError> {
    let mut selection = Selection::new();
    let set = match entries {
        PackageEntries::FullTree => {
            selection.extend(listing.dirs.iter().map(|d| (d, None)));
            selection.extend(listing.files.iter().map(|(p, r)| (p, Some(r))));
            return Ok(selection);
        }
        PackageEntries::Replace(set) => set,
    };
    for file in &set.files {
        let (path, record) = listing
            .files
            .get_key_value(file)
            .ok_or_else(|| ArchiveError::ReplacedFileMissing { path: file.clone() })?;
        selection.insert(path, Some(record));
    }
    for dir in &set.directories {
        let path = listing
            .dirs
            .get(dir)
            .ok_or_else(|| ArchiveError::ReplacedDirectoryMissing { path: dir.clone() })?;
        selection.insert(path, None);
        selection.extend(
            listing
                .dirs
                .iter()
                .filter(|d| d.starts_with(dir))
                .map(|d| (d, None)),
        );
        selection.extend(
            listing
                .files
                .iter()
                .filter(|(p, _)| p.starts_with(dir))
                .map(|(p, r)| (p, Some(r))),
        );
    }
    for named in set.iter() {
        for ancestor in named.ancestors() {
            let path = listing.dirs.get(&ancestor).ok_or_else(|| {
                ArchiveError::ReplacedDirectoryMissing {
                    path: ancestor.clone(),
                }
            })?;
            selection.entry(path).or_insert(None);
        }
    }
    Ok(selection)
}

/// A header with every field that could vary between machines or runs fixed.
fn fixed_header(entry_type: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode & 0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header
}

fn append_directory<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    path: &RelPath,
    out: &Path,
) -> Result<(), ArchiveError> {
    let full = path.under(root);
    let meta = fs::symlink_metadata(&full).map_err(|source| ArchiveError::ReadTree {
        path: full.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ArchiveError::NotADirectory { path: full });
    }
    let mut header = fixed_header(EntryType::Directory, meta.permissions().mode(), 0);
    builder
        .append_data(&mut header, path.as_str(), io::empty())
        .map_err(|source| ArchiveError::WritePackage {
            path: out.to_owned(),
            source,
        })
}

fn append_link<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    path: &RelPath,
    target: &str,
    out: &Path,
) -> Result<(), ArchiveError> {
    let full = path.under(root);
    let now = fs::read_link(&full).map_err(|source| ArchiveError::ReadTree {
        path: full.clone(),
        source,
    })?;
    if now.as_os_str() != target {
        return Err(ArchiveError::LinkChanged {
            path: full,
            expected: target.to_owned(),
            found: now.to_string_lossy().into_owned(),
        });
    }
    let write_err = |source| ArchiveError::WritePackage {
        path: out.to_owned(),
        source,
    };
    // The target goes in byte for byte (the tar crate's `set_link_name` would normalize it):
    // in the header when it fits, else in a GNU long-link entry before it.
    let bytes = target.as_bytes();
    let mut header = fixed_header(EntryType::Symlink, 0o777, 0);
    let field = header.as_old().linkname.len();
    if bytes.len() < field {
        header.set_link_name_literal(bytes).map_err(write_err)?;
    } else {
        let mut long = fixed_header(EntryType::GNULongLink, 0o644, bytes.len() as u64 + 1);
        let name = b"././@LongLink";
        long.as_old_mut().name[..name.len()].copy_from_slice(name);
        long.set_cksum();
        builder
            .append(&long, bytes.chain(&[0u8][..]))
            .map_err(write_err)?;
        header
            .set_link_name_literal(&bytes[..field])
            .map_err(write_err)?;
    }
    builder
        .append_data(&mut header, path.as_str(), io::empty())
        .map_err(write_err)
}

/// Appends `contents` as the entry `path`, checking them against `record` as it goes: a tree's
/// file must still be a regular file of the listed size and SHA-256, and a spooled delta must
/// still be the bytes its encoder hashed.
fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    contents: Contents<'_>,
    path: &RelPath,
    record: &FileRecord,
    out: &Path,
) -> Result<(), ArchiveError> {
    let full = match &contents {
        Contents::Tree(full) => full.clone(),
        Contents::Spool { path, .. } => path.to_path_buf(),
    };
    let read_err = |source| ArchiveError::ReadTree {
        path: full.clone(),
        source,
    };
    let changed = |found: String| ArchiveError::FileChanged {
        path: full.clone(),
        expected: record.size,
        found,
    };
    let from_tree = matches!(contents, Contents::Tree(_));
    let opened;
    let mut file: &File = match contents {
        Contents::Tree(_) => {
            opened = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&full)
                .map_err(read_err)?;
            let meta = opened.metadata().map_err(read_err)?;
            if !meta.is_file() {
                return Err(ArchiveError::NotARegularFile { path: full });
            }
            if meta.len() != record.size {
                return Err(changed(format!("{} bytes", meta.len())));
            }
            &opened
        }
        Contents::Spool {
            mut spool, offset, ..
        } => {
            spool.seek(SeekFrom::Start(offset)).map_err(read_err)?;
            spool
        }
    };
    let mut header = fixed_header(EntryType::Regular, record.mode, record.size);
    let mut reader = ExactReader {
        inner: CappedHashReader::new(Read::take(file, record.size), record.size),
        remaining: record.size,
    };
    if let Err(source) = builder.append_data(&mut header, path.as_str(), &mut reader) {
        if reader.remaining > 0 && source.kind() == io::ErrorKind::UnexpectedEof {
            return Err(changed(format!("{} bytes", record.size - reader.remaining)));
        }
        return Err(ArchiveError::WritePackage {
            path: out.to_owned(),
            source,
        });
    }
    let (sha256, _) = reader.inner.finish();
    if sha256 != record.sha256 {
        return Err(changed(format!(
            "other contents of that size (sha256 {sha256}, listed {})",
            record.sha256
        )));
    }
    // A tree's file must also end there (a spooled delta is followed by the next one).
    let mut probe = [0u8; 1];
    if from_tree && file.read(&mut probe).map_err(read_err)? != 0 {
        return Err(changed("more bytes".to_owned()));
    }
    Ok(())
}

/// Yields exactly the bytes the header announced, failing if the file ends early (the tar
/// crate would otherwise pad a short file silently into a corrupt archive).
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::PermissionsExt;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("web/static")).unwrap();
        fs::create_dir_all(root.join("conf")).unwrap();
        fs::write(root.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("web/index.html"), b"<html></html>").unwrap();
        fs::write(root.join("web/static/x.css"), b"body{}").unwrap();
        fs::write(root.join("conf/app.yml"), b"a: 1\n").unwrap();
        fs::write(root.join("conf/other.yml"), b"b: 2\n").unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(root.join(&long)).unwrap();
        fs::write(root.join(&long).join("f".repeat(150)), b"long").unwrap();
        dir
    }

    fn entry_names(package: &Path) -> Vec<(String, EntryType, u64, u32)> {
        let decoder = flate2::read::GzDecoder::new(File::open(package).unwrap());
        let mut archive = tar::Archive::new(decoder);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!(
                    (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
                    (0, 0, 0)
                );
                assert_eq!(h.username_bytes(), Some(&b""[..]));
                (
                    e.path().unwrap().to_str().unwrap().to_owned(),
                    h.entry_type(),
                    e.size(),
                    h.mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn full_package_is_sorted_normalized_and_deterministic() {
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let a = out.path().join("a.tar.gz");
        let b = out.path().join("b.tar.gz");
        let info_a = write_package(&a, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        // A different mtime on a file must not change the package.
        let later = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(tree.path().join("conf/app.yml"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        let info_b = write_package(&b, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        assert_eq!(
            PackageInfo {
                path: b.clone(),
                ..info_a.clone()
            },
            info_b
        );
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert_eq!(info_a.size, fs::metadata(&a).unwrap().len());
        assert_eq!(info_a.sha256, crate::hashing::sha256_file(&a).unwrap());
        assert_eq!(info_a.unpacked_size, listing.total_size());
        // gzip header: no FNAME flag, mtime 0.
        let bytes = fs::read(&a).unwrap();
        assert_eq!(bytes[3] & 0x08, 0);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);

        let names = entry_names(&a);
        let paths: Vec<&str> = names.iter().map(|n| n.0.trim_end_matches('/')).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert_eq!(paths.len(), listing.files.len() + listing.dirs.len());
        let app = names.iter().find(|n| n.0 == "bin/app").unwrap();
        assert_eq!((app.1, app.3), (EntryType::Regular, 0o755));
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        assert!(names.iter().any(|n| n.0 == long));
        // No stray temp files are left beside the package.
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 2);
    }

    #[test]
    fn zstd_packages_are_deterministic_and_hold_the_same_tar() {
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let (a, b, gz) = (
            out.path().join("a.tar.zst"),
            out.path().join("b.tar.zst"),
            out.path().join("c.tar.gz"),
        );
        let info_a = write_package(&a, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        let info_b = write_package(&b, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        write_package(&gz, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        assert_eq!((info_a.size, info_a.sha256), (info_b.size, info_b.sha256));
        assert_eq!(fs::read(&a).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        let mut zstd_tar = Vec::new();
        zstd::stream::read::Decoder::new(File::open(&a).unwrap())
            .unwrap()
            .read_to_end(&mut zstd_tar)
            .unwrap();
        let mut gzip_tar = Vec::new();
        flate2::read::GzDecoder::new(File::open(&gz).unwrap())
            .read_to_end(&mut gzip_tar)
            .unwrap();
        assert_eq!(zstd_tar, gzip_tar);
    }

    /// Decodes the zstd package at `path` with a decoder that refuses windows over
    /// `2^window_log_max`.
    fn decode_within(path: &Path, window_log_max: u32) -> io::Result<Vec<u8>> {
        let mut decoder = zstd::stream::read::Decoder::new(File::open(path)?)?;
        decoder.window_log_max(window_log_max)?;
        let mut tar = Vec::new();
        decoder.read_to_end(&mut tar)?;
        Ok(tar)
    }

    #[test]
    fn a_delta_package_declares_the_small_window_and_others_the_large_one() {
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let delta_bytes = out.path().join("app.delta");
        // The spool holds deltas one after another: this one sits between two others.
        fs::write(&delta_bytes, b"HEADdelta bytesTAIL").unwrap();
        let files = BTreeMap::from([(rel("bin/app"), (4, record_of(b"delta bytes")))]);
        let substitutes = Substitutes {
            spool: &delta_bytes,
            files: &files,
        };
        let (plain, delta) = (out.path().join("p.tar.zst"), out.path().join("d.tar.zst"));
        write_package(&plain, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        let entries = PackageEntries::FullTree;
        write_package_with(&delta, tree.path(), &listing, entries, 3, Some(substitutes)).unwrap();
        // A client's decoder buffers the window the frame declares, whatever the content size.
        let tar = decode_within(&delta, DELTA_PACKAGE_WINDOW_LOG).unwrap();
        assert!(tar.windows(11).any(|w| w == b"delta bytes"));
        assert!(!tar.windows(4).any(|w| w == b"HEAD" || w == b"TAIL"));
        assert!(decode_within(&plain, DELTA_PACKAGE_WINDOW_LOG).is_err());
        decode_within(&plain, ZSTD_WINDOW_LOG).unwrap();
    }

    #[test]
    fn a_spooled_delta_that_is_not_the_encoded_bytes_is_refused() {
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let spool = out.path().join("spool");
        fs::write(&spool, b"delta bytez").unwrap();
        let files = BTreeMap::from([(rel("bin/app"), (0, record_of(b"delta bytes")))]);
        let substitutes = Some(Substitutes {
            spool: &spool,
            files: &files,
        });
        let pkg = out.path().join("d.tar.zst");
        let entries = PackageEntries::FullTree;
        let err =
            write_package_with(&pkg, tree.path(), &listing, entries, 3, substitutes).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::FileChanged { path, .. } if *path == spool),
            "{err}"
        );
        // Nor is one the spool ends before.
        let files = BTreeMap::from([(rel("bin/app"), (1, record_of(b"delta bytes")))]);
        let substitutes = Some(Substitutes {
            spool: &spool,
            files: &files,
        });
        let err =
            write_package_with(&pkg, tree.path(), &listing, entries, 3, substitutes).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::FileChanged { found, .. } if found == "10 bytes"),
            "{err}"
        );
        assert!(!pkg.exists());
    }

    fn record_of(bytes: &[u8]) -> FileRecord {
        FileRecord::regular(Sha256Digest::of(bytes), bytes.len() as u64, 0o755)
    }

    #[test]
    fn a_package_goes_beside_other_bytes_at_its_name_and_keeps_the_same_bytes() {
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let pkg = out.path().join("demo-1.0.0-x86_64.delta.tar.zst");
        let first = write_package(&pkg, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        assert_eq!((first.path.as_path(), first.fresh), (pkg.as_path(), true));
        let before = fs::read(&pkg).unwrap();

        // The same tree again: the same bytes stay where they are.
        let same = write_package(&pkg, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        assert_eq!((same.path.as_path(), same.fresh), (pkg.as_path(), false));

        // Another tree: beside, with its hash in the name; the first package is untouched.
        fs::write(tree.path().join("conf/app.yml"), b"level: 9\n").unwrap();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        let other = write_package(&pkg, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        let hash = &other.sha256.to_hex()[..16];
        assert_eq!(
            other.path,
            out.path()
                .join(format!("demo-1.0.0-x86_64.delta.{hash}.tar.zst"))
        );
        assert!(other.fresh);
        assert_eq!(fs::read(&pkg).unwrap(), before);
        assert_eq!(
            crate::hashing::sha256_file(&other.path).unwrap(),
            other.sha256
        );
        // Written again, it finds itself there too.
        let again = write_package(&pkg, tree.path(), &listing, PackageEntries::FullTree).unwrap();
        assert_eq!((again.path, again.fresh), (other.path, false));
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 2);
    }

    #[test]
    fn patch_package_holds_exactly_the_replaced_paths_and_their_parents() {
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        let set = PathSet {
            files: vec![rel("conf/app.yml")],
            directories: vec![rel("web")],
        };
        let out = tempfile::tempdir().unwrap();
        let pkg = out.path().join("p.tar.gz");
        let info =
            write_package(&pkg, tree.path(), &listing, PackageEntries::Replace(&set)).unwrap();
        let names: Vec<String> = entry_names(&pkg)
            .into_iter()
            .map(|n| n.0.trim_end_matches('/').to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "conf",
                "conf/app.yml",
                "web",
                "web/index.html",
                "web/static",
                "web/static/x.css"
            ]
        );
        assert_eq!(info.unpacked_size, 5 + 13 + 6);
    }

    #[test]
    fn refuses_paths_missing_from_the_listing() {
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let pkg = out.path().join("p.tar.gz");
        let set = PathSet {
            files: vec![rel("bin/nope")],
            directories: vec![],
        };
        let err =
            write_package(&pkg, tree.path(), &listing, PackageEntries::Replace(&set)).unwrap_err();
        assert!(
            matches!(err, ArchiveError::ReplacedFileMissing { .. }),
            "{err}"
        );
        let set = PathSet {
            files: vec![],
            directories: vec![rel("bin/app")],
        };
        let err =
            write_package(&pkg, tree.path(), &listing, PackageEntries::Replace(&set)).unwrap_err();
        assert!(
            matches!(err, ArchiveError::ReplacedDirectoryMissing { .. }),
            "{err}"
        );
        assert!(!pkg.exists());
    }

    #[test]
    fn refuses_a_file_that_changed_size_after_the_scan() {
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        fs::write(tree.path().join("conf/app.yml"), b"a: 12345\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let pkg = out.path().join("full.tar.gz");
        let err = write_package(&pkg, tree.path(), &listing, PackageEntries::FullTree).unwrap_err();
        assert!(matches!(err, ArchiveError::FileChanged { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Failure);
        assert!(!pkg.exists());
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_a_file_whose_contents_changed_at_the_same_size() {
        // The manifest's patch operations come from the listed hashes: a package holding other
        // bytes would make a patched install differ from a full one.
        let tree = sample_tree();
        let listing = TreeListing::scan(tree.path(), &[]).unwrap();
        fs::write(tree.path().join("conf/app.yml"), b"a: 9\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let pkg = out.path().join("full.tar.gz");
        let err = write_package(&pkg, tree.path(), &listing, PackageEntries::FullTree).unwrap_err();
        assert!(matches!(err, ArchiveError::FileChanged { .. }), "{err}");
        assert!(err.to_string().contains("conf/app.yml"), "{err}");
        assert!(!pkg.exists());
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }
}
