//! `molt publish`: add a release to a repository directory and re-sign its manifest.
//!
//! One publish writes the full package of the new release, a patch package from each of the
//! newest earlier releases of the same product, architecture and channel (`--patches`, default
//! [`DEFAULT_PATCHES`]; an install of an older release takes the full package), and a new
//! manifest with `serial + 1`, signed with the publisher's key. A patch needs only the earlier
//! release's file index (paths, hashes, modes, link targets), which is read by streaming its full
//! package (hash-checked against the manifest) through the extractor's checks without writing
//! it out, so a repository needs nothing but its own files and the cost of a publish follows the
//! number of patches, not the history.
//!
//! Rules worth knowing:
//! - A publisher extends only a manifest its own key signed: an existing `manifest.json` must
//!   verify against the public half of `--key`, and its product must match.
//! - Packages are deterministic (see `package::archive`): the same tree gives the same bytes, so
//!   re-publishing a version with an unchanged tree changes nothing but the manifest. If the tree
//!   did change, the version's entry is replaced and every patch *from* that version to a later
//!   release is rebuilt, since the old one was made from the old tree. Those package files are
//!   rewritten in place before the new manifest is renamed in: until then a client fetching them
//!   gets a hash mismatch against the old manifest and refuses them (nothing changes); its next
//!   run sees the new manifest.
//! - A version lower than the newest may be published; patches are only made *from* earlier
//!   versions *to* the one being published.
//! - Re-signing replaces `manifest.json.sig` with this key's single signature: signatures by other
//!   keys over the previous manifest would not verify over the new bytes anyway.
//! - The signature goes to a temp file first, then the manifest; the manifest is renamed into
//!   place, then the signature. Between the two renames a client sees the new manifest with the
//!   old signature: it refuses it (signature check, nothing is changed) and succeeds on its next
//!   run. The reverse order would be refused the same way; no order exposes an unsigned manifest
//!   as valid.
//! - Old package files are left in place (clients may be downloading them).
//! - Packages of the default channel go to `packages/`, those of any other channel to
//!   `packages/<channel>/`: the same version may be on two channels with different trees.
//! - An advisory lock (`.molt-publish.lock` in the repository) keeps two publishes apart.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use time::{Duration, OffsetDateTime};

use crate::error::ExitClass;
use crate::fsutil::{self, Existing};
use crate::hashing::{Sha256Digest, sha256_hex};
use crate::keys::{self, KeyError, key_id};
use crate::package::archive::{
    ArchiveError, Compression, FALLBACK_LEVEL, PackageEntries, PackageInfo, Substitutes,
    ZSTD_LEVEL, write_package_with,
};
use crate::package::extract::{self, Allowed, ExtractError, ExtractLimits};
use crate::relpath::RelPath;
use crate::repo::delta::{self, DeltaError, OldRelease};
use crate::repo::diff::diff_trees;
use crate::repo::manifest::{
    Artifacts, DeltaPackage, FORMAT, Manifest, Operations, Package, PackageUrl, Patch,
    PatchDocument, Release, SignedFile,
};
use crate::repo::signature::{self, SignatureFile};
use crate::repo::trust::{TrustError, check_structure, verify_signatures};
use crate::state::RESERVED_STATE_DIR;
use crate::tree::{FileRecord, ScanError, TreeListing};
use crate::version::{Version, host_arch, normalize_arch};

/// The manifest file name inside a repository.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
/// The signature file name inside a repository.
pub(crate) const SIGNATURE_FILE: &str = "manifest.json.sig";
/// Where packages are written, relative to the repository; a channel other than
/// [`DEFAULT_CHANNEL`] gets its own subdirectory, because the same version may be published on two
/// channels from different trees and package file names carry no channel.
pub(crate) const PACKAGES_DIR: &str = "packages";
/// How long a manifest stays valid when `--expires-days` is not given.
pub(crate) const DEFAULT_EXPIRES_DAYS: u32 = 90;
/// Patches per publish: from the five newest earlier releases.
pub const DEFAULT_PATCHES: usize = 5;
/// A patch whose JSON (operations and delta tables) is larger than this is written as a
/// document of its own beside its package ([`PatchDocument`]) rather than inline in the
/// manifest, which every client fetches and parses on every check.
pub const DEFAULT_INLINE_PATCH_BYTES: u64 = 256 * 1024;
/// zstd level of a patch document: JSON of paths and hex digests compresses about 5x at level 3,
/// and level 19 gains 15 % for 100x the time.
const PATCH_DOCUMENT_LEVEL: i32 = 3;
/// The default release channel.
pub(crate) const DEFAULT_CHANNEL: &str = "stable";

const LOCK_FILE: &str = ".molt-publish.lock";
/// Largest manifest or signature file the publisher reads back (as the client caps it).
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;
const MAX_SIGNATURE_BYTES: u64 = 1024 * 1024;

/// Everything `molt publish` is asked to do.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub repo: PathBuf,
    /// The publisher's secret key (PKCS#8 PEM).
    pub key: PathBuf,
    pub product: String,
    pub version: Version,
    /// The release tree to publish.
    pub tree: PathBuf,
    /// Default: this machine's architecture. Aliases (`amd64`, `arm64`) are normalized.
    pub arch: Option<String>,
    /// Default: [`DEFAULT_CHANNEL`].
    pub channel: Option<String>,
    /// Release notes; re-publishing without notes keeps the earlier ones.
    pub notes: Option<String>,
    /// Default: [`DEFAULT_EXPIRES_DAYS`].
    pub expires_days: Option<u32>,
    /// How the packages of this publish are compressed (default: zstd).
    pub compression: Compression,
    /// Patches are made from this many of the newest earlier releases (default
    /// [`DEFAULT_PATCHES`]); older installs take the full package.
    pub patches: usize,
    /// Patches whose JSON is larger go to a document of their own (default
    /// [`DEFAULT_INLINE_PATCH_BYTES`]).
    pub inline_patch_bytes: u64,
    /// The publish time (`published`, and the start of `expires`); seconds precision is kept.
    pub now: OffsetDateTime,
}

impl PublishRequest {
    /// A request with the defaults for every optional field and `now` = the current time.
    pub fn new(repo: &Path, key: &Path, product: &str, version: Version, tree: &Path) -> Self {
        Self {
            repo: repo.to_owned(),
            key: key.to_owned(),
            product: product.to_owned(),
            version,
            tree: tree.to_owned(),
            arch: None,
            channel: None,
            notes: None,
            expires_days: None,
            compression: Compression::Zstd,
            patches: DEFAULT_PATCHES,
            inline_patch_bytes: DEFAULT_INLINE_PATCH_BYTES,
            now: OffsetDateTime::now_utc(),
        }
    }
}

/// A package written by this publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPatch {
    pub from: Version,
    pub to: Version,
    pub package: Package,
    pub operations: Operations,
    /// The patch's delta package, when deltas made one worth shipping.
    pub delta: Option<DeltaPackage>,
}

impl WrittenPatch {
    /// The patch as the manifest (or its document) lists it.
    fn into_patch(self) -> Patch {
        Patch {
            from: self.from,
            package: self.package,
            operations: self.operations,
            delta: self.delta,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishReport {
    pub manifest: PathBuf,
    pub serial: u64,
    pub version: Version,
    pub arch: String,
    pub channel: String,
    pub key_id: String,
    pub full: Package,
    /// Patches to the published version, and patches from it that were rebuilt because its tree
    /// changed.
    pub patches: Vec<WrittenPatch>,
    /// What failed after the new manifest was in place (the release is published, and clients
    /// see it): said, never reported as a failed publish.
    pub warnings: Vec<String>,
}

/// Why a publish failed. Nothing visible to clients changes unless the final renames happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid publish request: {reason}")]
    InvalidRequest { reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the release tree {path} is not a directory")]
    TreeNotADirectory { path: PathBuf },
    #[error("cannot publish the tree: {0}")]
    ScanTree(#[source] ScanError),
    #[error("failed to create the repository directory {path}: {source}")]
    CreateRepo { path: PathBuf, source: io::Error },
    #[error("another publish holds the lock {path}; wait for it to finish")]
    Locked { path: PathBuf },
    #[error("failed to read {path}: {source}")]
    ReadRepo { path: PathBuf, source: io::Error },
    #[error("{path} is larger than {max} bytes; this is not a molt manifest")]
    RepoFileTooLarge { path: PathBuf, max: u64 },
    #[error(
        "the manifest would be {size} bytes, more than the {max} bytes clients read; nothing was \
         published: publish with fewer --patches, or a lower --inline-patch-bytes so large \
         patches go to documents of their own"
    )]
    ManifestTooLarge { size: u64, max: u64 },
    #[error(
        "{manifest} exists but {signature} does not: refusing to extend a manifest nobody signed; restore the signature or publish into a new repository"
    )]
    UnsignedManifest {
        manifest: PathBuf,
        signature: PathBuf,
    },
    #[error(
        "refusing to extend {path}: it is not signed by the key {key_id} given with --key ({source}); publish with the repository's key"
    )]
    ForeignManifest {
        path: PathBuf,
        key_id: String,
        source: Box<TrustError>,
    },
    #[error("{path} is signed by this key but is not a valid format-{FORMAT} manifest: {reason}")]
    ParseManifest { path: PathBuf, reason: String },
    #[error(
        "{path} is the repository of product {found:?}, not {expected:?}; check --repo and --product"
    )]
    ProductMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("failed to write package {package}: {source}")]
    WritePackage {
        package: PathBuf,
        source: ArchiveError,
    },
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error(
        "package {path} of release {version} does not match the manifest ({reason}); it cannot be used to build patches — re-publish {version} from its tree"
    )]
    PackageMismatch {
        path: PathBuf,
        version: Version,
        reason: String,
    },
    #[error("failed to rebuild the tree of release {version} from {path}: {source}")]
    RebuildTree {
        path: PathBuf,
        version: Version,
        source: Box<ExtractError>,
    },
    #[error("the manifest this publish would sign is invalid (a publisher bug): {0}")]
    InvalidResult(#[source] Box<TrustError>),
    #[error("failed to serialize the manifest: {reason}")]
    SerializeManifest { reason: String },
    #[error("failed to write {path}: {source}")]
    WriteRepo { path: PathBuf, source: io::Error },
    #[error(
        "{path} is at serial {}, the highest there is, so no newer manifest can be signed; \
         publish into a new repository, point clients' [source] url at it and remove each \
         client's trust.json (its highest accepted serial)",
        u64::MAX
    )]
    SerialExhausted { path: PathBuf },
    #[error(
        "the release tree {tree} holds {path}: .molt is reserved for molt's state directory \
         (device id, trust state) and clients refuse a package containing it; remove it from \
         the tree"
    )]
    ReservedPath { tree: PathBuf, path: RelPath },
}

impl PublishError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            PublishError::InvalidRequest { .. }
            | PublishError::TreeNotADirectory { .. }
            | PublishError::ScanTree(_)
            | PublishError::ProductMismatch { .. }
            | PublishError::SerialExhausted { .. }
            | PublishError::ReservedPath { .. }
            | PublishError::ManifestTooLarge { .. } => ExitClass::Usage,
            PublishError::Key(e) => e.exit_class(),
            PublishError::UnsignedManifest { .. }
            | PublishError::ForeignManifest { .. }
            | PublishError::PackageMismatch { .. } => ExitClass::Security,
            PublishError::WritePackage { source, .. } => source.exit_class(),
            PublishError::RebuildTree { source, .. } => source.exit_class(),
            PublishError::Delta(DeltaError::OldPackage { source, .. }) => source.exit_class(),
            PublishError::Delta(_) => ExitClass::Failure,
            PublishError::CreateRepo { .. }
            | PublishError::Locked { .. }
            | PublishError::ReadRepo { .. }
            | PublishError::RepoFileTooLarge { .. }
            | PublishError::ParseManifest { .. }
            | PublishError::InvalidResult(_)
            | PublishError::SerializeManifest { .. }
            | PublishError::WriteRepo { .. } => ExitClass::Failure,
        }
    }
}

/// The validated, defaulted request.
struct Settings<'a> {
    req: &'a PublishRequest,
    arch: String,
    channel: String,
    /// The packages directory of this channel, relative to the repository.
    packages_dir: String,
    now: OffsetDateTime,
    expires: OffsetDateTime,
    /// Files this publish created in the repository (packages, patch documents): removed again
    /// if it fails before its manifest is written, since nothing names them then.
    created: RefCell<Vec<PathBuf>>,
}

impl Settings<'_> {
    fn created(&self, path: &Path) {
        self.created.borrow_mut().push(path.to_owned());
    }
}

/// Publishes `req.tree` as `req.version` into `req.repo` (see the module docs).
pub fn publish(req: &PublishRequest) -> Result<PublishReport, PublishError> {
    let settings = settings(req)?;
    let key = keys::load_signing_key(&req.key)?;
    let tree_is_dir = fs::metadata(&req.tree).is_ok_and(|m| m.is_dir());
    if !tree_is_dir {
        return Err(PublishError::TreeNotADirectory {
            path: req.tree.clone(),
        });
    }
    let packages_dir = req.repo.join(&settings.packages_dir);
    fs::create_dir_all(&packages_dir).map_err(|source| PublishError::CreateRepo {
        path: packages_dir.clone(),
        source,
    })?;
    let _lock = lock_repo(&req.repo)?;
    sweep_stale(&req.repo, &packages_dir);
    let previous = load_own_manifest(&req.repo, &key, &req.product)?;
    let built = build(&settings, previous.as_ref());
    let (manifest, full, report_patches) = match built {
        Ok(built) => built,
        Err(e) => {
            // Nothing names what this publish wrote: the live manifest is the old one.
            for path in settings.created.take() {
                let _ = fs::remove_file(&path);
            }
            return Err(e);
        }
    };

    let (manifest_path, warnings) = write_signed_manifest(&req.repo, &manifest, &key)?;
    tracing::info!(
        manifest = %manifest_path.display(),
        serial = manifest.serial,
        version = %req.version,
        patches = report_patches.len(),
        "published"
    );
    Ok(PublishReport {
        manifest: manifest_path,
        serial: manifest.serial,
        version: req.version.clone(),
        arch: settings.arch,
        channel: settings.channel,
        key_id: key_id(&key.verifying_key()),
        full,
        patches: report_patches,
        warnings,
    })
}

/// Everything a publish writes before its manifest: the packages and patch documents, and the
/// new manifest (not yet signed or written) with the full package and the patches made.
fn build(
    settings: &Settings<'_>,
    previous: Option<&Manifest>,
) -> Result<(Manifest, Package, Vec<WrittenPatch>), PublishError> {
    let req = settings.req;
    if previous.as_ref().is_some_and(|m| m.serial == u64::MAX) {
        return Err(PublishError::SerialExhausted {
            path: req.repo.join("manifest.json"),
        });
    }
    let mut manifest = previous.cloned().unwrap_or_else(|| Manifest {
        format: FORMAT,
        product: req.product.clone(),
        serial: 0,
        expires: settings.expires,
        releases: Vec::new(),
        extra: Default::default(),
    });
    let same_line = |r: &Release| r.channel == settings.channel;
    // Patches from the newest earlier releases, oldest first.
    let mut earlier: Vec<(Version, Package)> = manifest
        .releases
        .iter()
        .filter(|r| same_line(r) && r.version < req.version)
        .filter_map(|r| {
            let full = r.artifacts_for(&settings.arch)?.full.clone()?;
            Some((r.version.clone(), full))
        })
        .collect();
    earlier.sort_by(|a, b| b.0.cmp(&a.0));
    earlier.truncate(req.patches);
    earlier.reverse();

    // The earlier releases' file indexes come from their packages, decompressed and hashed on
    // one core: read them while this tree is scanned (one core) and packed.
    let (packed, old_listings) = std::thread::scope(|scope| {
        let listings = scope.spawn(|| {
            earlier
                .iter()
                .map(|(from, full)| listed_tree(&req.repo, from, full))
                .collect::<Vec<_>>()
        });
        let packed = scan_and_pack(settings);
        let listings = listings
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (packed, listings)
    });
    let (listing, full) = packed?;

    let mut patches_to_new = Vec::new();
    for ((from, from_full), old) in earlier.iter().zip(old_listings) {
        let old = old?;
        let old_package = req.repo.join(&from_full.url);
        let old_files = OldRelease::Package(&old_package, ExtractLimits::for_package(from_full));
        patches_to_new.push(make_patch(
            settings,
            from,
            &req.version,
            (&old, old_files),
            &req.tree,
            &listing,
        )?);
    }
    let mut report_patches = patches_to_new.clone();

    // If this version was published before from a different tree, patches from it are stale.
    let tree_changed = manifest
        .releases
        .iter()
        .find(|r| same_line(r) && r.version == req.version)
        .and_then(|r| r.artifacts_for(&settings.arch))
        .and_then(|a| a.full.as_ref())
        .is_some_and(|old| old.sha256 != full.sha256);
    if tree_changed {
        rebuild_patches_from(settings, &mut manifest, &listing, &mut report_patches)?;
    }

    let mut artifacts = Artifacts {
        full: Some(full.clone()),
        ..Artifacts::default()
    };
    for written in patches_to_new {
        place_patch(settings, &mut artifacts, written.into_patch())?;
    }
    upsert_release(settings, &mut manifest, artifacts);
    manifest.serial = previous.as_ref().map_or(1, |m| m.serial.saturating_add(1));
    manifest.expires = settings.expires;
    check_structure(&manifest, &req.repo.display().to_string())
        .map_err(|e| PublishError::InvalidResult(Box::new(e)))?;
    Ok((manifest, full, report_patches))
}

/// The listing of the tree being published and its full package.
fn scan_and_pack(settings: &Settings<'_>) -> Result<(TreeListing, Package), PublishError> {
    let req = settings.req;
    let listing = TreeListing::scan(&req.tree, &[]).map_err(PublishError::ScanTree)?;
    if let Some(p) = listing
        .files
        .keys()
        .chain(&listing.dirs)
        .find(|p| p.starts_with(&RelPath::new(RESERVED_STATE_DIR).expect("valid name")))
    {
        return Err(PublishError::ReservedPath {
            tree: req.tree.clone(),
            path: p.clone(),
        });
    }
    let full_name = format!(
        "{}-{}-{}.{}",
        req.product,
        req.version,
        settings.arch,
        req.compression.extension()
    );
    let full = write(
        settings,
        &full_name,
        &req.tree,
        &listing,
        PackageEntries::FullTree,
        ZSTD_LEVEL,
    )?;
    tracing::info!(package = %full.url, size = full.size, "wrote the full package");
    Ok((listing, full))
}

fn settings(req: &PublishRequest) -> Result<Settings<'_>, PublishError> {
    let invalid = |reason: String| Err(PublishError::InvalidRequest { reason });
    let arch = normalize_arch(req.arch.as_deref().unwrap_or(host_arch()));
    let channel = req
        .channel
        .clone()
        .unwrap_or_else(|| DEFAULT_CHANNEL.to_owned());
    for (what, value) in [
        ("product", &req.product),
        ("arch", &arch),
        ("channel", &channel),
    ] {
        if !is_plain_name(value) {
            return invalid(format!(
                "{what} {value:?} must be a plain name of letters, digits, `.`, `_` and `-` (it becomes part of file names)"
            ));
        }
    }
    let days = req.expires_days.unwrap_or(DEFAULT_EXPIRES_DAYS);
    if !(1..=3650).contains(&days) {
        return invalid(format!("--expires-days {days} must be between 1 and 3650"));
    }
    let now = req.now.replace_nanosecond(0).unwrap_or(req.now);
    let packages_dir = if channel == DEFAULT_CHANNEL {
        PACKAGES_DIR.to_owned()
    } else {
        format!("{PACKAGES_DIR}/{channel}")
    };
    Ok(Settings {
        req,
        arch,
        channel,
        packages_dir,
        now,
        expires: now + Duration::days(i64::from(days)),
        created: RefCell::new(Vec::new()),
    })
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Takes the repository's publish lock (held until the returned lock is dropped); another
/// publish holding it is an error at once.
/// Names a publish gives its scratch files and directories: in the repository's root (deltas
/// being encoded, rebuilt trees, a manifest or signature not yet renamed) and in a packages
/// directory (a package being written).
const ROOT_SCRATCH: [&str; 3] = [".molt-deltas-", ".molt-publish-", ".molt-manifest-"];
const PACKAGE_SCRATCH: &str = ".molt-package-";

/// Removes what a killed publish left (under the repository lock, so no publish is using them):
/// encoded deltas alone can be gigabytes, and every kill would leave more. Best effort: what
/// cannot be removed is logged and left.
fn sweep_stale(repo: &Path, packages_dir: &Path) {
    let scratch = |dir: &Path, prefixes: &[&str]| -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                prefixes.iter().any(|p| name.starts_with(p))
            })
            .map(|e| e.path())
            .collect()
    };
    let stale = scratch(repo, &ROOT_SCRATCH)
        .into_iter()
        .chain(scratch(packages_dir, &[PACKAGE_SCRATCH]));
    for path in stale {
        let removed = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fsutil::remove_tree(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed what an interrupted publish left")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove what an interrupted publish left")
            }
        }
    }
}

fn lock_repo(repo: &Path) -> Result<fsutil::FileLock, PublishError> {
    let path = repo.join(LOCK_FILE);
    match fsutil::lock_file(&path, std::time::Duration::ZERO) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(PublishError::Locked { path }),
        Err(fsutil::LockFailure::Open(source) | fsutil::LockFailure::Lock(source)) => {
            Err(PublishError::WriteRepo { path, source })
        }
    }
}

/// The existing manifest, if any, after proving this key signed it and it is for `product`.
fn load_own_manifest(
    repo: &Path,
    key: &SigningKey,
    product: &str,
) -> Result<Option<Manifest>, PublishError> {
    let manifest_path = repo.join(MANIFEST_FILE);
    let signature_path = repo.join(SIGNATURE_FILE);
    let Some(bytes) = read_capped(&manifest_path, MAX_MANIFEST_BYTES)? else {
        return Ok(None);
    };
    let Some(sig) = read_capped(&signature_path, MAX_SIGNATURE_BYTES)? else {
        return Err(PublishError::UnsignedManifest {
            manifest: manifest_path,
            signature: signature_path,
        });
    };
    let own = key.verifying_key();
    let source = manifest_path.display().to_string();
    verify_signatures(&bytes, &sig, &[own], 1, &source).map_err(|source| {
        PublishError::ForeignManifest {
            path: manifest_path.clone(),
            key_id: key_id(&own),
            source: Box::new(source),
        }
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| PublishError::ParseManifest {
            path: manifest_path.clone(),
            reason: e.to_string(),
        })?;
    if manifest.format != FORMAT {
        return Err(PublishError::ParseManifest {
            path: manifest_path,
            reason: format!(
                "format {} (this molt writes format {FORMAT})",
                manifest.format
            ),
        });
    }
    if manifest.product != product {
        return Err(PublishError::ProductMismatch {
            path: manifest_path,
            found: manifest.product,
            expected: product.to_owned(),
        });
    }
    Ok(Some(manifest))
}

/// The file's bytes, `None` if it does not exist, an error beyond `max` bytes.
fn read_capped(path: &Path, max: u64) -> Result<Option<Vec<u8>>, PublishError> {
    let read_err = |source| PublishError::ReadRepo {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    match crate::hashing::read_capped(file, max) {
        Ok((bytes, _)) => Ok(Some(bytes)),
        Err(e) if crate::hashing::is_cap_exceeded(&e) => Err(PublishError::RepoFileTooLarge {
            path: path.to_owned(),
            max,
        }),
        Err(e) => Err(read_err(e)),
    }
}

/// Writes `<packages dir>/<name>` from `root` and returns its manifest entry.
fn write(
    settings: &Settings<'_>,
    name: &str,
    root: &Path,
    listing: &TreeListing,
    entries: PackageEntries<'_>,
    level: i32,
) -> Result<Package, PublishError> {
    let url = PackageUrl::new(&format!("{}/{name}", settings.packages_dir)).map_err(|e| {
        PublishError::InvalidRequest {
            reason: e.to_string(),
        }
    })?;
    let out = settings.req.repo.join(&url);
    let PackageInfo {
        path,
        fresh,
        size,
        sha256,
        unpacked_size,
    } = write_package_with(&out, root, listing, entries, level, None).map_err(|source| {
        PublishError::WritePackage {
            package: out.clone(),
            source,
        }
    })?;
    if fresh {
        settings.created(&path);
    }
    Ok(Package {
        url: placed_url(settings, &path)?,
        size,
        sha256,
        unpacked_size,
    })
}

/// The URL of a package the archive writer placed at `path` in the packages directory (its
/// requested name, or that name with the package's hash when other bytes held it).
fn placed_url(settings: &Settings<'_>, path: &Path) -> Result<PackageUrl, PublishError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    PackageUrl::new(&format!("{}/{name}", settings.packages_dir)).map_err(|e| {
        PublishError::InvalidRequest {
            reason: e.to_string(),
        }
    })
}

/// Diffs `old` against the tree at `new_root` and writes the patch package from it, and for a
/// zstd repository the delta package too when its deltas make it smaller.
fn make_patch(
    settings: &Settings<'_>,
    from: &Version,
    to: &Version,
    (old, old_files): (&TreeListing, OldRelease<'_>),
    new_root: &Path,
    new: &TreeListing,
) -> Result<WrittenPatch, PublishError> {
    let operations = diff_trees(old, new);
    let extension = settings.req.compression.extension();
    let stem = format!("{}-{from}-to-{to}-{}", settings.req.product, settings.arch);
    // Deltas first: the plain package's level depends on whether a delta package stands
    // beside it.
    let delta = match settings.req.compression {
        Compression::Zstd => write_delta_package(
            settings,
            &format!("{stem}.delta.{extension}"),
            (old, old_files),
            new_root,
            new,
            &operations,
        )?,
        Compression::Gzip => None,
    };
    let level = if delta.is_some() {
        FALLBACK_LEVEL
    } else {
        ZSTD_LEVEL
    };
    let package = write(
        settings,
        &format!("{stem}.{extension}"),
        new_root,
        new,
        PackageEntries::Replace(&operations.replace),
        level,
    )?;
    tracing::info!(
        package = %package.url,
        size = package.size,
        replace = operations.replace.files.len() + operations.replace.directories.len(),
        delete = operations.delete.files.len() + operations.delete.directories.len(),
        "wrote a patch package"
    );
    let delta = delta.and_then(|(mut delta, fresh)| {
        if delta.package.size < package.size {
            delta.package.unpacked_size = package.unpacked_size;
            return Some(delta);
        }
        tracing::info!(package = %delta.package.url, size = delta.package.size, plain = package.size, "the delta package is no smaller; not offering it");
        if fresh {
            let _ = fs::remove_file(settings.req.repo.join(&delta.package.url));
        }
        None
    });
    Ok(WrittenPatch {
        from: from.clone(),
        to: to.clone(),
        package,
        operations,
        delta,
    })
}

/// Writes the delta package of a patch if any file has a delta smaller than itself (see
/// `repo::delta`); whether this publish made the file (false: the same bytes were there).
fn write_delta_package(
    settings: &Settings<'_>,
    name: &str,
    (old, old_files): (&TreeListing, OldRelease<'_>),
    new_root: &Path,
    new: &TreeListing,
    operations: &Operations,
) -> Result<Option<(DeltaPackage, bool)>, PublishError> {
    let Some(encoded) = delta::make(
        old,
        old_files,
        new_root,
        new,
        operations,
        &settings.req.repo,
    )?
    else {
        return Ok(None);
    };
    let spooled: BTreeMap<RelPath, (u64, FileRecord)> = encoded
        .files
        .iter()
        .map(|(path, (offset, record, _))| (path.clone(), (*offset, record.clone())))
        .collect();
    let url = PackageUrl::new(&format!("{}/{name}", settings.packages_dir)).map_err(|e| {
        PublishError::InvalidRequest {
            reason: e.to_string(),
        }
    })?;
    let out = settings.req.repo.join(&url);
    let info = write_package_with(
        &out,
        new_root,
        new,
        PackageEntries::Replace(&operations.replace),
        ZSTD_LEVEL,
        Some(Substitutes {
            spool: encoded.spool(),
            files: &spooled,
        }),
    )
    .map_err(|source| PublishError::WritePackage {
        package: out.clone(),
        source,
    })?;
    if info.fresh {
        settings.created(&info.path);
    }
    let url = placed_url(settings, &info.path)?;
    tracing::info!(
        package = %url,
        size = info.size,
        deltas = encoded.files.len(),
        "wrote a delta package"
    );
    Ok(Some((
        DeltaPackage {
            package: Package {
                url,
                size: info.size,
                sha256: info.sha256,
                // A delta entry unpacks to the file it encodes: the plain package's unpacked
                // size, set once that is written (`info` counted the deltas' own sizes).
                unpacked_size: 0,
            },
            window_log: encoded.window_log,
            files: encoded
                .files
                .into_iter()
                .map(|(path, (_, _, delta))| (path, delta))
                .collect(),
        },
        info.fresh,
    )))
}

/// The file index of `version`: its full package read through every check of the extractor
/// (its bytes against the manifest's size and SHA-256, in band) without being written out.
fn listed_tree(
    repo: &Path,
    version: &Version,
    full: &Package,
) -> Result<TreeListing, PublishError> {
    let path = repo.join(&full.url);
    extract::list(&path, &ExtractLimits::for_package(full))
        .map_err(|source| rebuild_error(&path, version, source))
}

/// A failure to read an earlier release's package: `PackageMismatch` when its bytes are not the
/// signed ones (it cannot be used; re-publish that release) — also when it does not decode,
/// which a package this publisher signed always does — else what the extractor said.
fn rebuild_error(path: &Path, version: &Version, source: ExtractError) -> PublishError {
    let mismatch = |reason| PublishError::PackageMismatch {
        path: path.to_owned(),
        version: version.clone(),
        reason,
    };
    match source {
        ExtractError::PackageMismatch { reason, .. } => mismatch(reason),
        ExtractError::CorruptPackage { source, .. } => {
            mismatch(format!("it does not decode: {source}"))
        }
        source => PublishError::RebuildTree {
            path: path.to_owned(),
            version: version.clone(),
            source: Box::new(source),
        },
    }
}

/// Extracts the full package of `version` (its bytes checked against the manifest in band) into
/// a temp dir inside the repository, and runs `work` on the rebuilt tree.
fn with_rebuilt_tree<T>(
    repo: &Path,
    version: &Version,
    full: &Package,
    work: impl FnOnce(&Path, &TreeListing) -> Result<T, PublishError>,
) -> Result<T, PublishError> {
    let path = repo.join(&full.url);
    let temp = tempfile::Builder::new()
        .prefix(".molt-publish-")
        .tempdir_in(repo)
        .map_err(|source| PublishError::WriteRepo {
            path: repo.to_owned(),
            source,
        })?;
    let stage = temp.path().join("tree");
    fs::create_dir(&stage).map_err(|source| PublishError::WriteRepo {
        path: stage.clone(),
        source,
    })?;
    let listing = extract::extract(
        &path,
        &stage,
        &ExtractLimits::for_package(full),
        Allowed::Any,
    )
    .map_err(|source| rebuild_error(&path, version, source))?;
    let result = work(&stage, &listing);
    fsutil::make_removable(&stage);
    result
}

/// Rebuilds every patch from the re-published version to a later release of the same line.
fn rebuild_patches_from(
    settings: &Settings<'_>,
    manifest: &mut Manifest,
    new_listing: &TreeListing,
    report: &mut Vec<WrittenPatch>,
) -> Result<(), PublishError> {
    let from = &settings.req.version;
    for release in &mut manifest.releases {
        if release.channel != settings.channel || release.version <= *from {
            continue;
        }
        let wanted = settings.arch.clone();
        let Some(artifacts) = release
            .artifacts
            .iter_mut()
            .find(|(k, _)| normalize_arch(k) == wanted)
            .map(|(_, a)| a)
        else {
            continue;
        };
        if artifacts.patch_from(from).is_none() && artifacts.patch_document_from(from).is_none() {
            continue;
        }
        let Some(later_full) = artifacts.full.clone() else {
            // Without the later tree the patch cannot be rebuilt; a stale one must not stay.
            tracing::warn!(to = %release.version, "dropping a stale patch that cannot be rebuilt");
            artifacts.remove_patch_from(from);
            continue;
        };
        let to = release.version.clone();
        let written = with_rebuilt_tree(&settings.req.repo, &to, &later_full, |root, later| {
            let old_files = OldRelease::Tree(&settings.req.tree);
            make_patch(settings, from, &to, (new_listing, old_files), root, later)
        })?;
        place_patch(settings, artifacts, written.clone().into_patch())?;
        report.push(written);
    }
    Ok(())
}

/// Lists `patch` in `artifacts`, replacing any patch from the same version: inline when its
/// JSON is at most `inline_patch_bytes`, else as a [`PatchDocument`] written durably beside its
/// package, named by its own hash so a re-publish never rewrites a document a client may be
/// reading.
fn place_patch(
    settings: &Settings<'_>,
    artifacts: &mut Artifacts,
    patch: Patch,
) -> Result<(), PublishError> {
    artifacts.remove_patch_from(&patch.from);
    let bytes = serde_json::to_vec(&patch).map_err(|e| PublishError::SerializeManifest {
        reason: e.to_string(),
    })?;
    if bytes.len() as u64 <= settings.req.inline_patch_bytes {
        artifacts.patches.push(patch);
        return Ok(());
    }
    // Paths compress well; a client fetches the document with the patch it chose.
    let bytes = zstd::bulk::compress(&bytes, PATCH_DOCUMENT_LEVEL).map_err(|source| {
        PublishError::WriteRepo {
            path: settings.req.repo.clone(),
            source,
        }
    })?;
    let sha256 = Sha256Digest::parse(&sha256_hex(&bytes)).expect("a digest is well formed");
    let package_url = patch.package.url.as_str();
    let stem = [".tar.zst", ".tar.gz"]
        .iter()
        .find_map(|ext| package_url.strip_suffix(ext))
        .unwrap_or(package_url);
    let url = PackageUrl::new(&format!("{stem}.{}.patch.json.zst", &sha256.to_hex()[..16]))
        .map_err(|e| PublishError::InvalidRequest {
            reason: e.to_string(),
        })?;
    let path = settings.req.repo.join(url.as_str());
    let existed = fs::symlink_metadata(&path).is_ok();
    let temp = readable_temp(&settings.req.repo, &path, &bytes)?;
    fsutil::persist_temp(temp, &path, Existing::Replace).map_err(|source| {
        PublishError::WriteRepo {
            path: path.clone(),
            source,
        }
    })?;
    if !existed {
        settings.created(&path);
    }
    artifacts.patch_documents.push(PatchDocument {
        from: patch.from,
        size: patch.package.size,
        document: SignedFile {
            url,
            size: bytes.len() as u64,
            sha256,
        },
    });
    Ok(())
}

/// Puts the release entry in place: an existing entry of the same version and channel keeps its
/// other architectures (and its notes if none are given); otherwise a new entry is appended.
fn upsert_release(settings: &Settings<'_>, manifest: &mut Manifest, artifacts: Artifacts) {
    let req = settings.req;
    let existing = manifest
        .releases
        .iter_mut()
        .find(|r| r.channel == settings.channel && r.version == req.version);
    match existing {
        Some(release) => {
            release.published = settings.now;
            if let Some(notes) = &req.notes {
                release.notes = notes.clone();
            }
            release
                .artifacts
                .retain(|k, _| normalize_arch(k) != settings.arch);
            release.artifacts.insert(settings.arch.clone(), artifacts);
        }
        None => manifest.releases.push(Release {
            version: req.version.clone(),
            channel: settings.channel.clone(),
            published: settings.now,
            notes: req.notes.clone().unwrap_or_default(),
            artifacts: [(settings.arch.clone(), artifacts)].into_iter().collect(),
            extra: Default::default(),
        }),
    }
}

/// Serializes and signs `manifest`, then writes both files durably (see the module docs for the
/// order). Returns the manifest's path.
/// Signs and writes the manifest pair; the manifest's rename is the publish's commit point. A
/// failure before it is the publish's failure (clients still see the old release); one after
/// it — the manifest's directory fsync, or the last signature file — is a warning, because the
/// new release is already what clients read, with a signature file valid for it either way.
fn write_signed_manifest(
    repo: &Path,
    manifest: &Manifest,
    key: &SigningKey,
) -> Result<(PathBuf, Vec<String>), PublishError> {
    let mut bytes =
        serde_json::to_vec_pretty(manifest).map_err(|e| PublishError::SerializeManifest {
            reason: e.to_string(),
        })?;
    bytes.push(b'\n');
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(PublishError::ManifestTooLarge {
            size: bytes.len() as u64,
            max: MAX_MANIFEST_BYTES,
        });
    }
    let new_signature = signature::sign(&bytes, key);
    let manifest_path = repo.join(MANIFEST_FILE);
    let signature_path = repo.join(SIGNATURE_FILE);

    // Two files cannot be renamed at once, so the signature file first carries the signatures
    // of both manifests: whichever manifest a reader (or a crash) finds beside it verifies.
    // Without that, a kill between the renames left a pair no client or publisher accepts.
    let old_signatures = read_capped(&signature_path, MAX_SIGNATURE_BYTES)?
        .and_then(|b| serde_json::from_slice::<SignatureFile>(&b).ok())
        .map(|f| f.signatures)
        .unwrap_or_default();
    let bridge = SignatureFile {
        signatures: std::iter::once(new_signature.clone())
            .chain(old_signatures)
            .collect(),
    }
    .to_bytes();
    let lone = SignatureFile {
        signatures: vec![new_signature],
    }
    .to_bytes();
    let mut steps: Vec<(&Path, Vec<u8>, &str)> = Vec::new();
    if bridge.len() as u64 <= MAX_SIGNATURE_BYTES {
        steps.push((
            &signature_path,
            bridge,
            "publish: signatures of both manifests",
        ));
    }
    steps.push((&manifest_path, bytes, "publish: the new manifest"));
    steps.push((&signature_path, lone, "publish: its signature alone"));
    let mut committed = false;
    let mut warnings = Vec::new();
    for (path, content, label) in steps {
        let written = readable_temp(repo, path, &content).and_then(|temp| {
            fsutil::persist_temp(temp, path, Existing::Replace)
                .and_then(|()| crate::failpoint::step(label))
                .map_err(|source| PublishError::WriteRepo {
                    path: path.to_owned(),
                    source,
                })
        });
        let is_manifest = path == manifest_path.as_path();
        match written {
            Ok(()) => committed |= is_manifest,
            // At the manifest's own step (a directory fsync failing after its rename), the file
            // in place says whether clients already read the new manifest.
            Err(e) if committed || (is_manifest && fs::read(path).is_ok_and(|b| b == content)) => {
                committed = true;
                warnings.push(format!(
                    "{}; the new manifest is published (clients see it), but this step may not \
                     survive a power cut: run the same publish again to make sure",
                    crate::error::chain(&e)
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((manifest_path, warnings))
}

/// A temp file holding `bytes`, beside `target`, readable by everyone (made durable when it is
/// persisted).
fn readable_temp(
    dir: &Path,
    target: &Path,
    bytes: &[u8],
) -> Result<tempfile::NamedTempFile, PublishError> {
    let write_err = |source| PublishError::WriteRepo {
        path: target.to_owned(),
        source,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".molt-manifest-")
        .tempfile_in(dir)
        .map_err(write_err)?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_err)?;
    temp.write_all(bytes).map_err(write_err)?;
    Ok(temp)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::macros::datetime;

    use super::*;
    use crate::hashing::sha256_file;
    use crate::relpath::RelPath;
    use crate::repo::trust::{TrustPolicy, verify_manifest};

    const NOW: OffsetDateTime = datetime!(2026-12-01 10:00:00.123 UTC);

    struct Fixture {
        _dir: tempfile::TempDir,
        repo: PathBuf,
        key: PathBuf,
        public: PathBuf,
        trees: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = keys::generate_keypair(&dir.path().join("keys"), "release").unwrap();
        Fixture {
            repo: dir.path().join("repo"),
            trees: dir.path().join("trees"),
            key,
            public,
            _dir: dir,
        }
    }

    /// Writes a tree from `path=content[:mode]` entries; a trailing `/` makes a directory.
    fn make_tree(f: &Fixture, name: &str, entries: &[&str]) -> PathBuf {
        let root = f.trees.join(name);
        fs::create_dir_all(&root).unwrap();
        for entry in entries {
            if let Some(dir) = entry.strip_suffix('/') {
                fs::create_dir_all(root.join(dir)).unwrap();
                continue;
            }
            let (path, content) = entry.split_once('=').unwrap();
            let (content, mode) = content
                .rsplit_once(':')
                .and_then(|(c, m)| u32::from_str_radix(m, 8).ok().map(|m| (c, m)))
                .unwrap_or((content, 0o644));
            let full = root.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, content).unwrap();
            fs::set_permissions(&full, fs::Permissions::from_mode(mode)).unwrap();
        }
        root
    }

    fn request(f: &Fixture, version: &str, tree: &Path) -> PublishRequest {
        let mut req = PublishRequest::new(
            &f.repo,
            &f.key,
            "demo-app",
            Version::parse(version).unwrap(),
            tree,
        );
        req.arch = Some("amd64".into());
        req.notes = Some(format!("release {}", req.version));
        req.now = NOW;
        req
    }

    fn verified(f: &Fixture) -> Manifest {
        let bytes = fs::read(f.repo.join(MANIFEST_FILE)).unwrap();
        let sig = fs::read(f.repo.join(SIGNATURE_FILE)).unwrap();
        let policy = TrustPolicy {
            product: "demo-app".into(),
            keys: vec![keys::load_verifying_key(&f.public).unwrap()],
            threshold: 1,
            min_serial: 0,
            now: NOW,
        };
        verify_manifest(&bytes, &sig, &policy, "test-repo").unwrap()
    }

    fn paths(v: &[RelPath]) -> Vec<&str> {
        v.iter().map(RelPath::as_str).collect()
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn assert_matches_file(f: &Fixture, package: &Package) {
        let path = f.repo.join(&package.url);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            package.size,
            "{}",
            package.url
        );
        assert_eq!(
            sha256_file(&path).unwrap(),
            package.sha256,
            "{}",
            package.url
        );
    }

    /// Extracts a patch package as a client would and checks every shipped file against the
    /// new tree.
    fn assert_patch_ships_new_content(f: &Fixture, patch: &Patch, new_tree: &Path) {
        let stage = tempfile::tempdir().unwrap();
        let listing = extract::extract(
            &f.repo.join(&patch.package.url),
            stage.path(),
            &ExtractLimits::for_unpacked_size(patch.package.unpacked_size),
            Allowed::Operations(&patch.operations),
        )
        .unwrap();
        let new = TreeListing::scan(new_tree, &[]).unwrap();
        assert_eq!(listing.total_size(), patch.package.unpacked_size);
        for (path, record) in &listing.files {
            assert_eq!(Some(record), new.files.get(path), "{path}");
        }
        for dir in &patch.operations.replace.directories {
            let shipped: BTreeMap<_, _> = listing
                .files
                .iter()
                .filter(|(p, _)| p.starts_with(dir))
                .collect();
            let wanted: BTreeMap<_, _> = new
                .files
                .iter()
                .filter(|(p, _)| p.starts_with(dir))
                .collect();
            assert_eq!(shipped, wanted, "directory {dir}");
        }
    }

    const V1: &[&str] = &[
        "bin/app=app v1:755",
        "bin/run.sh=run:644",
        "conf/app.yml=a: 1",
        "conf/legacy.yml=legacy",
        "web/a.css=a1",
        "web/b.css=b1",
        "plugins/legacy/x.so=x",
        "plugins/keep.so=k",
    ];
    const V2: &[&str] = &[
        "bin/app=app v2:755",
        "bin/run.sh=run:755",
        "conf/app.yml=a: 1",
        "conf/new.yml=new",
        "web/a.css=a2",
        "web/c.css=c2",
        "plugins/keep.so=k",
        "logs/",
    ];
    const V3: &[&str] = &[
        "bin/app=app v3:755",
        "bin/run.sh=run:755",
        "conf/app.yml=a: 2",
        "conf/new.yml=new",
        "web/a.css=a2",
        "web/c.css=c2",
        "plugins/keep.so=k",
        "logs/",
        "docs/guide/intro.md=hello",
    ];

    #[test]
    fn patches_come_from_the_newest_earlier_releases_only() {
        let f = fixture();
        let trees = [V1, V2, V3, V1];
        for (i, version) in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"].iter().enumerate() {
            let tree = make_tree(&f, &i.to_string(), trees[i]);
            let mut req = request(&f, version, &tree);
            req.patches = 2;
            let report = publish(&req).unwrap();
            assert_eq!(report.patches.len(), i.min(2), "{version}");
        }
        let m = verified(&f);
        let from: Vec<String> = m.releases[3].artifacts["x86_64"]
            .patches
            .iter()
            .map(|p| p.from.to_string())
            .collect();
        assert_eq!(from, ["1.1.0", "1.2.0"]);
        // No patch from 1.0.0: its installs take the full package.
        let mut req = request(&f, "1.4.0", &make_tree(&f, "4", V2));
        req.patches = 0;
        assert!(publish(&req).unwrap().patches.is_empty());
    }

    #[test]
    fn publishes_three_releases_with_patches_that_rebuild_each_tree() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        let t3 = make_tree(&f, "3", V3);

        let r1 = publish(&request(&f, "1.0.0", &t1)).unwrap();
        assert_eq!((r1.serial, r1.patches.len()), (1, 0));
        assert_eq!(r1.arch, "x86_64");
        assert_eq!(r1.full.url, "packages/demo-app-1.0.0-x86_64.tar.zst");
        let r2 = publish(&request(&f, "1.1.0", &t2)).unwrap();
        assert_eq!(r2.serial, 2);
        let r3 = publish(&request(&f, "v1.2.0", &t3)).unwrap();
        assert_eq!(r3.serial, 3);

        let m = verified(&f);
        assert_eq!((m.serial, m.product.as_str()), (3, "demo-app"));
        assert_eq!(m.expires, datetime!(2027-03-01 10:00:00 UTC));
        let versions: Vec<String> = m.releases.iter().map(|r| r.version.to_string()).collect();
        assert_eq!(versions, ["1.0.0", "1.1.0", "1.2.0"]);
        for r in &m.releases {
            assert_eq!(r.channel, "stable");
            assert_eq!(r.published, datetime!(2026-12-01 10:00:00 UTC));
            assert_eq!(r.notes, format!("release {}", r.version));
            assert_eq!(r.artifacts.keys().collect::<Vec<_>>(), ["x86_64"]);
            let a = &r.artifacts["x86_64"];
            assert_matches_file(&f, a.full.as_ref().unwrap());
            for p in &a.patches {
                assert_matches_file(&f, &p.package);
            }
        }
        let full1 = m.releases[0].artifacts["x86_64"].full.as_ref().unwrap();
        assert_eq!(
            full1.unpacked_size,
            TreeListing::scan(&t1, &[]).unwrap().total_size()
        );

        let a2 = &m.releases[1].artifacts["x86_64"];
        assert_eq!(a2.patches.len(), 1);
        let p12 = &a2.patches[0];
        assert_eq!(p12.from, v("1.0.0"));
        assert_eq!(
            p12.package.url,
            "packages/demo-app-1.0.0-to-1.1.0-x86_64.tar.zst"
        );
        let ops = &p12.operations;
        assert_eq!(
            paths(&ops.replace.files),
            ["bin/app", "bin/run.sh", "conf/new.yml"]
        );
        assert_eq!(paths(&ops.replace.directories), ["logs", "web"]);
        assert_eq!(paths(&ops.delete.files), ["conf/legacy.yml"]);
        assert_eq!(paths(&ops.delete.directories), ["plugins/legacy"]);
        assert_patch_ships_new_content(&f, p12, &t2);

        let a3 = &m.releases[2].artifacts["x86_64"];
        let froms: Vec<String> = a3.patches.iter().map(|p| p.from.to_string()).collect();
        assert_eq!(froms, ["1.0.0", "1.1.0"]);
        let p23 = a3.patch_from(&v("1.1.0")).unwrap();
        assert_eq!(
            paths(&p23.operations.replace.files),
            ["bin/app", "conf/app.yml"]
        );
        assert_eq!(paths(&p23.operations.replace.directories), ["docs"]);
        assert!(p23.operations.delete.is_empty());
        assert_patch_ships_new_content(&f, p23, &t3);
        assert_patch_ships_new_content(&f, a3.patch_from(&v("1.0.0")).unwrap(), &t3);

        // No temp files or rebuilt trees are left in the repository.
        let mut names: Vec<String> = fs::read_dir(&f.repo)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [LOCK_FILE, MANIFEST_FILE, SIGNATURE_FILE, PACKAGES_DIR]
        );
    }

    #[test]
    fn republishing_identical_input_gives_identical_packages() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        let first = publish(&request(&f, "1.1.0", &t2)).unwrap();
        let bytes_before: Vec<Vec<u8>> = std::iter::once(&first.full)
            .chain(first.patches.iter().map(|p| &p.package))
            .map(|p| fs::read(f.repo.join(&p.url)).unwrap())
            .collect();

        let again = publish(&request(&f, "1.1.0", &t2)).unwrap();
        assert_eq!(again.serial, 3);
        assert_eq!(again.full, first.full);
        assert_eq!(again.patches, first.patches);
        let bytes_after: Vec<Vec<u8>> = std::iter::once(&again.full)
            .chain(again.patches.iter().map(|p| &p.package))
            .map(|p| fs::read(f.repo.join(&p.url)).unwrap())
            .collect();
        assert_eq!(bytes_before, bytes_after);
        let m = verified(&f);
        assert_eq!(m.releases.len(), 2);
    }

    #[test]
    fn republishing_a_changed_tree_rebuilds_the_patches_from_it() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        publish(&request(&f, "1.1.0", &t2)).unwrap();
        let t1b = make_tree(&f, "1b", &[V1, &["extra.txt=x"]].concat());
        let report = publish(&request(&f, "1.0.0", &t1b)).unwrap();
        assert_eq!(report.patches.len(), 1);
        assert_eq!(
            (
                report.patches[0].from.to_string(),
                report.patches[0].to.to_string()
            ),
            ("1.0.0".into(), "1.1.0".into())
        );

        let m = verified(&f);
        let p = m.releases[1].artifacts["x86_64"]
            .patch_from(&v("1.0.0"))
            .unwrap();
        assert_eq!(
            paths(&p.operations.delete.files),
            ["conf/legacy.yml", "extra.txt"]
        );
        assert_matches_file(&f, &p.package);
        assert_patch_ships_new_content(&f, p, &t2);
    }

    #[test]
    fn a_publish_removes_what_an_interrupted_one_left_and_nothing_else() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        let packages = f.repo.join(PACKAGES_DIR);
        // What a kill leaves: encoded deltas, a rebuilt tree with a read-only directory, a
        // manifest not yet renamed, a package being written.
        let deltas = f.repo.join(".molt-deltas-x1");
        fs::create_dir_all(deltas.join("bin")).unwrap();
        fs::write(deltas.join("bin/app.delta"), b"frames").unwrap();
        // (a dir of delta files before molt spooled them into one file, which is scratch too)
        fs::write(f.repo.join(".molt-deltas-x5"), b"frames").unwrap();
        let rebuilt = f.repo.join(".molt-publish-x2/tree/ro");
        fs::create_dir_all(&rebuilt).unwrap();
        fs::write(rebuilt.join("f"), b"x").unwrap();
        fs::set_permissions(&rebuilt, fs::Permissions::from_mode(0o555)).unwrap();
        fs::write(f.repo.join(".molt-manifest-x3"), b"{}").unwrap();
        fs::write(packages.join(".molt-package-x4.part"), b"half").unwrap();
        // Not a publish's: kept.
        for kept in [f.repo.join(".well-known"), packages.join(".htaccess")] {
            fs::write(kept, b"mine").unwrap();
        }

        publish(&request(&f, "1.1.0", &make_tree(&f, "2", V2))).unwrap();
        let names = |dir: &Path| {
            let mut n: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with('.'))
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&f.repo), [LOCK_FILE, ".well-known"]);
        assert_eq!(names(&packages), [".htaccess"]);
        assert_eq!(verified(&f).serial, 2);
    }

    #[test]
    fn a_publish_killed_at_any_step_leaves_a_manifest_that_verifies() {
        use crate::failpoint::simulation::{crash_after_step, record_steps};
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        let (done, labels) = record_steps(|| publish(&request(&f, "1.1.0", &t2)));
        done.unwrap();
        assert_eq!(labels.len(), 3, "{labels:?}");
        let sig = fs::read(f.repo.join(SIGNATURE_FILE)).unwrap();
        let file: SignatureFile = serde_json::from_slice(&sig).unwrap();
        assert_eq!(file.signatures.len(), 1);

        for k in 1..=labels.len() as u64 {
            let version = format!("1.{}.0", k + 1);
            let serial = verified(&f).serial;
            assert!(crash_after_step(k, || publish(&request(&f, &version, &t1))).is_none());
            // Whichever manifest is there verifies: the old one, or (after its rename) the new.
            let m = verified(&f);
            let released = m.releases.iter().any(|r| r.version.to_string() == version);
            assert_eq!(m.serial, if released { serial + 1 } else { serial });
            assert_eq!(
                released,
                k >= 2,
                "crash after step {k} ({})",
                labels[k as usize - 1]
            );
            // The publisher carries on from it.
            let again = publish(&request(&f, &version, &t1)).unwrap();
            assert_eq!(again.serial, m.serial + 1);
            assert_eq!(verified(&f).serial, m.serial + 1);
        }
    }

    #[test]
    fn a_failed_republish_leaves_every_package_the_live_manifest_names_intact() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        publish(&request(&f, "1.1.0", &t2)).unwrap();
        let before = verified(&f);
        // 1.0.0's package goes bad, so re-publishing 1.1.0 from another tree fails while
        // building its patch from 1.0.0: after its own full package was written.
        let a1 = before.releases[0].artifacts["x86_64"].full.clone().unwrap();
        fs::write(f.repo.join(&a1.url), b"not a package").unwrap();
        let t2b = make_tree(&f, "2b", &[V2, &["extra.txt=x"]].concat());
        let listing = || {
            let mut names: Vec<_> = fs::read_dir(f.repo.join(PACKAGES_DIR))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let files_before = listing();
        let err = publish(&request(&f, "1.1.0", &t2b)).unwrap_err();
        assert!(matches!(err, PublishError::PackageMismatch { .. }), "{err}");
        // What the failed publish wrote is gone again: nothing names it.
        assert_eq!(listing(), files_before);

        let after = verified(&f);
        assert_eq!(
            serde_json::to_value(&after).unwrap(),
            serde_json::to_value(&before).unwrap()
        );
        let a2 = &after.releases[1].artifacts["x86_64"];
        assert_matches_file(&f, a2.full.as_ref().unwrap());
        for p in &a2.patches {
            assert_matches_file(&f, &p.package);
        }
        // Once 1.0.0 is whole again, the re-publish lands beside the old package, which the
        // manifest no longer names but a client that fetched the old one can still finish.
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        let report = publish(&request(&f, "1.1.0", &t2b)).unwrap();
        let old_full = a2.full.as_ref().unwrap();
        assert_ne!(report.full.url, old_full.url);
        assert!(report.full.url.as_str().ends_with(".tar.zst"));
        assert_matches_file(&f, &report.full);
        assert_matches_file(&f, old_full);
        assert_patch_ships_new_content(&f, &report.patches[0].clone().into_patch(), &t2b);
    }

    /// The patch a document of `artifacts` holds, read as a client reads it.
    fn document_patch(f: &Fixture, document: &PatchDocument) -> Patch {
        let bytes = fs::read(f.repo.join(document.document.url.as_str())).unwrap();
        assert_eq!(bytes.len() as u64, document.document.size);
        assert_eq!(Sha256Digest::of(&bytes), document.document.sha256);
        serde_json::from_slice(&zstd::decode_all(&bytes[..]).unwrap()).unwrap()
    }

    #[test]
    fn large_patches_are_documents_beside_their_packages_and_are_rebuilt_in_place() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        let small = |version: &str, tree: &Path| PublishRequest {
            inline_patch_bytes: 0,
            ..request(&f, version, tree)
        };
        publish(&small("1.0.0", &t1)).unwrap();
        publish(&small("1.1.0", &t2)).unwrap();
        let a = &verified(&f).releases[1].artifacts["x86_64"];
        assert!(a.patches.is_empty());
        let first = a.patch_document_from(&v("1.0.0")).unwrap().clone();
        let p = document_patch(&f, &first);
        assert_eq!((p.from.clone(), p.package.size), (v("1.0.0"), first.size));
        assert_matches_file(&f, &p.package);
        assert_patch_ships_new_content(&f, &p, &t2);

        // Re-publishing 1.0.0 from another tree replaces the document (a new name: the old one
        // may be in a client's hands), and the patch stays a document.
        let t1b = make_tree(&f, "1b", &[V1, &["extra.txt=x"]].concat());
        publish(&small("1.0.0", &t1b)).unwrap();
        let a = &verified(&f).releases[1].artifacts["x86_64"];
        assert!(a.patches.is_empty());
        assert_eq!(a.patch_documents.len(), 1);
        let again = &a.patch_documents[0];
        assert_ne!(again.document.url, first.document.url);
        let p = document_patch(&f, again);
        assert_eq!(
            paths(&p.operations.delete.files),
            ["conf/legacy.yml", "extra.txt"]
        );
        assert_patch_ships_new_content(&f, &p, &t2);

        // With the default limit the same small patch is inline again.
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        let a = &verified(&f).releases[1].artifacts["x86_64"];
        assert!(a.patch_documents.is_empty());
        assert!(a.patch_from(&v("1.0.0")).is_some());
    }

    #[test]
    fn refuses_to_write_a_manifest_clients_could_not_read() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        let before = fs::read(f.repo.join(MANIFEST_FILE)).unwrap();
        let huge = PublishRequest {
            notes: Some("x".repeat(MAX_MANIFEST_BYTES as usize)),
            ..request(&f, "1.1.0", &t2)
        };
        let err = publish(&huge).unwrap_err();
        assert!(
            matches!(err, PublishError::ManifestTooLarge { size, max } if size > max),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Usage);
        assert!(err.to_string().contains("--inline-patch-bytes"), "{err}");
        // The repository still says what it said.
        assert_eq!(fs::read(f.repo.join(MANIFEST_FILE)).unwrap(), before);
        assert_eq!(verified(&f).serial, 1);
    }

    /// Writes poorly compressible `len` bytes (seeded) with `edit` at a few offsets.
    fn write_noise(path: &Path, seed: u32, len: usize, edit: u8) {
        let mut x = seed | 1;
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        bytes[len / 3] = edit;
        bytes[len / 2] = edit;
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// Decodes `patch`'s delta package against the tree at `base_root` and checks it stages
    /// exactly what the plain package does.
    fn assert_delta_matches_plain(f: &Fixture, patch: &Patch, base_root: &Path) {
        let delta = patch.delta.as_ref().expect("a delta package");
        assert_matches_file(f, &delta.package);
        let work = tempfile::tempdir().unwrap();
        let (a, b) = (work.path().join("a"), work.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        let limits = ExtractLimits::for_unpacked_size(patch.package.unpacked_size);
        let plain = extract::extract(
            &f.repo.join(&patch.package.url),
            &a,
            &limits,
            Allowed::Operations(&patch.operations),
        )
        .unwrap();
        let decoded = extract::extract_delta(
            &f.repo.join(&delta.package.url),
            &b,
            &limits,
            &patch.operations,
            crate::package::delta::Bases::new(base_root, delta),
        )
        .unwrap();
        assert_eq!(plain, decoded);
    }

    #[test]
    fn patches_carry_deltas_against_the_old_file_or_its_renamed_twin() {
        let f = fixture();
        let (t1, t2) = (f.trees.join("1"), f.trees.join("2"));
        write_noise(&t1.join("bin/app"), 1, 200_000, 1);
        write_noise(&t2.join("bin/app"), 1, 200_000, 2);
        write_noise(&t1.join("web/app.3f9a2c1e.js"), 2, 100_000, 1);
        write_noise(&t2.join("web/app.b81d07aa.js"), 2, 100_000, 2);
        write_noise(&t1.join("tiny"), 3, 100, 1);
        write_noise(&t2.join("tiny"), 3, 100, 2);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        let report = publish(&request(&f, "1.1.0", &t2)).unwrap();
        let m = verified(&f);
        let p = m.releases[1].artifacts["x86_64"]
            .patch_from(&v("1.0.0"))
            .unwrap();
        assert_eq!(report.patches[0].delta.as_ref(), p.delta.as_ref());
        let delta = p.delta.as_ref().unwrap();
        let bases: Vec<(&str, &str)> = delta
            .files
            .iter()
            .map(|(path, d)| (path.as_str(), d.base.as_str()))
            .collect();
        // `tiny` is below the size worth a delta and ships whole.
        assert_eq!(
            bases,
            [
                ("bin/app", "bin/app"),
                ("web/app.b81d07aa.js", "web/app.3f9a2c1e.js")
            ]
        );
        assert!(
            delta.package.size * 20 < p.package.size,
            "{} vs {}",
            delta.package.size,
            p.package.size
        );
        assert_eq!(delta.package.unpacked_size, p.package.unpacked_size);
        assert_delta_matches_plain(&f, p, &t1);

        // Re-publishing 1.0.0 from another tree rebuilds the patch, its bases read from that
        // tree on disk.
        let t1b = f.trees.join("1b");
        write_noise(&t1b.join("bin/app"), 1, 200_000, 3);
        write_noise(&t1b.join("web/app.3f9a2c1e.js"), 2, 100_000, 3);
        publish(&request(&f, "1.0.0", &t1b)).unwrap();
        let m = verified(&f);
        let p = m.releases[1].artifacts["x86_64"]
            .patch_from(&v("1.0.0"))
            .unwrap();
        assert_eq!(p.delta.as_ref().unwrap().files.len(), 2);
        assert_delta_matches_plain(&f, p, &t1b);

        // gzip repositories get none.
        let g = fixture();
        let mut gz = request(&g, "1.0.0", &t1);
        gz.compression = Compression::Gzip;
        publish(&gz).unwrap();
        let mut gz = request(&g, "1.1.0", &t2);
        gz.compression = Compression::Gzip;
        publish(&gz).unwrap();
        let m = verified(&g);
        let p = m.releases[1].artifacts["x86_64"]
            .patch_from(&v("1.0.0"))
            .unwrap();
        assert!(p.delta.is_none());
    }

    #[test]
    fn a_lower_version_gets_patches_only_from_earlier_ones() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        let t3 = make_tree(&f, "3", V3);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        publish(&request(&f, "2.0.0", &t3)).unwrap();
        let mut req = request(&f, "1.5.0", &t2);
        req.channel = Some("stable".into());
        let report = publish(&req).unwrap();
        let froms: Vec<String> = report.patches.iter().map(|p| p.from.to_string()).collect();
        assert_eq!(froms, ["1.0.0"]);
        let m = verified(&f);
        assert_eq!(m.releases[1].artifacts["x86_64"].patches.len(), 1);

        // Another channel is another line: no patches across channels.
        let mut beta = request(&f, "3.0.0", &t1);
        beta.channel = Some("beta".into());
        assert!(publish(&beta).unwrap().patches.is_empty());
    }

    #[test]
    fn the_same_version_on_two_channels_keeps_both_packages_intact() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let t2 = make_tree(&f, "2", V2);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        publish(&request(&f, "1.1.0", &t1)).unwrap();
        let mut beta = request(&f, "1.1.0", &t2);
        beta.channel = Some("beta".into());
        publish(&beta).unwrap();
        let mut beta = request(&f, "1.0.0", &t2);
        beta.channel = Some("beta".into());
        publish(&beta).unwrap();
        // Every package the signed manifest names, on either channel, is still the file it names.
        let m = verified(&f);
        assert_eq!(m.releases.len(), 4);
        for release in &m.releases {
            let artifacts = &release.artifacts["x86_64"];
            assert_matches_file(&f, artifacts.full.as_ref().unwrap());
            for patch in &artifacts.patches {
                assert_matches_file(&f, &patch.package);
            }
        }
    }

    #[test]
    fn refuses_a_repository_signed_by_another_key() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        publish(&request(&f, "1.0.0", &t1)).unwrap();
        let before = fs::read(f.repo.join(MANIFEST_FILE)).unwrap();
        let (other, _) = keys::generate_keypair(&f.trees.join("other"), "other").unwrap();
        let mut req = request(&f, "1.1.0", &t1);
        req.key = other;
        let err = publish(&req).unwrap_err();
        assert!(matches!(err, PublishError::ForeignManifest { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Security);
        assert!(err.to_string().contains("not signed by the key"), "{err}");
        assert_eq!(fs::read(f.repo.join(MANIFEST_FILE)).unwrap(), before);
        assert!(
            !f.repo
                .join("packages/demo-app-1.1.0-x86_64.tar.zst")
                .exists()
        );
    }

    #[test]
    fn refuses_an_unsigned_manifest_another_product_and_bad_requests() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        publish(&request(&f, "1.0.0", &t1)).unwrap();

        let mut other = request(&f, "1.1.0", &t1);
        other.product = "other-app".into();
        let err = publish(&other).unwrap_err();
        assert!(matches!(err, PublishError::ProductMismatch { .. }), "{err}");

        let mut bad = request(&f, "1.1.0", &t1);
        bad.channel = Some("../x".into());
        assert_eq!(publish(&bad).unwrap_err().exit_class(), ExitClass::Usage);
        let mut bad = request(&f, "1.1.0", &t1);
        bad.expires_days = Some(0);
        assert_eq!(publish(&bad).unwrap_err().exit_class(), ExitClass::Usage);
        let bad = request(&f, "1.1.0", &f.trees.join("missing"));
        assert!(matches!(
            publish(&bad).unwrap_err(),
            PublishError::TreeNotADirectory { .. }
        ));

        fs::remove_file(f.repo.join(SIGNATURE_FILE)).unwrap();
        let err = publish(&request(&f, "1.1.0", &t1)).unwrap_err();
        assert!(
            matches!(err, PublishError::UnsignedManifest { .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_to_build_patches_from_a_tampered_package() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        let r1 = publish(&request(&f, "1.0.0", &t1)).unwrap();
        let path = f.repo.join(&r1.full.url);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = publish(&request(&f, "1.1.0", &t1)).unwrap_err();
        assert!(matches!(err, PublishError::PackageMismatch { .. }), "{err}");
    }

    #[test]
    fn a_symlink_in_the_tree_is_refused() {
        let f = fixture();
        let t1 = make_tree(&f, "1", V1);
        std::os::unix::fs::symlink("/etc/passwd", t1.join("link")).unwrap();
        let err = publish(&request(&f, "1.0.0", &t1)).unwrap_err();
        assert!(matches!(err, PublishError::ScanTree(_)), "{err}");
        assert!(!f.repo.join(MANIFEST_FILE).exists());
    }
}
