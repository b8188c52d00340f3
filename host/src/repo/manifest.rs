//! The data model of `manifest.json` (repository contract, format 1).
//!
//! Unknown fields are kept in `extra` maps so that a publisher built from this code re-writes a
//! manifest produced by a newer publisher without dropping what it does not understand.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::hashing::Sha256Digest;
use crate::relpath::RelPath;
use crate::version::{Version, normalize_arch};

/// The only manifest format this build understands.
pub const FORMAT: u32 = 1;

type Extra = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub product: String,
    pub serial: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    #[serde(default)]
    pub releases: Vec<Release>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub version: Version,
    pub channel: String,
    #[serde(with = "time::serde::rfc3339")]
    pub published: OffsetDateTime,
    #[serde(default)]
    pub notes: String,
    /// Keyed by architecture name (Rust spelling; aliases are accepted on lookup).
    #[serde(default)]
    pub artifacts: BTreeMap<String, Artifacts>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Artifacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<Package>,
    #[serde(default)]
    pub patches: Vec<Patch>,
    /// Patches whose metadata is a file of its own (see [`PatchDocument`]); clients that
    /// predate them ignore the key and install the full package instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patch_documents: Vec<PatchDocument>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A patch too large to list inline: its `operations` and `delta` tables name every changed
/// file (a 50,000-file patch is megabytes of JSON), and inline they would push `manifest.json`
/// past the size every client reads and make every client parse every patch on every check.
/// The manifest names the document by URL, size and SHA-256, so it is as signed as the manifest;
/// the document is the [`Patch`] object exactly as it would stand in `patches`. `from` and
/// `size` (the plain patch package's download size) are repeated here for the strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchDocument {
    pub from: Version,
    pub size: u64,
    pub document: SignedFile,
}

/// A file of the repository named by the manifest with the size and SHA-256 it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedFile {
    pub url: PackageUrl,
    pub size: u64,
    pub sha256: Sha256Digest,
}

/// The most bytes a client reads of one patch document, whatever the manifest declares.
pub const MAX_PATCH_DOCUMENT_BYTES: u64 = 256 * 1024 * 1024;

/// A package file: where it is (relative to the repository root) and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub url: PackageUrl,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub unpacked_size: u64,
}

/// A package's `url`: a plain relative path below the repository root, checked when the
/// manifest is parsed by [`repo_path`], the same rule the fetcher applies to every path it
/// reads, so nothing a URL parser or a server could reinterpret gets that far.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageUrl(RelPath);

/// A string that is not a [`PackageUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("package url {url:?} must be a plain relative path inside the repository: {reason}")]
pub struct InvalidPackageUrl {
    pub url: String,
    pub reason: &'static str,
}

impl PackageUrl {
    pub fn new(url: &str) -> Result<Self, InvalidPackageUrl> {
        repo_path(url)
            .map(PackageUrl)
            .map_err(|reason| InvalidPackageUrl {
                url: url.to_owned(),
                reason,
            })
    }

    /// The path below the repository root.
    pub fn path(&self) -> &RelPath {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<String> for PackageUrl {
    type Error = InvalidPackageUrl;
    fn try_from(s: String) -> Result<Self, InvalidPackageUrl> {
        Self::new(&s)
    }
}

impl From<PackageUrl> for String {
    fn from(u: PackageUrl) -> String {
        u.0.as_str().to_owned()
    }
}

impl std::fmt::Display for PackageUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for PackageUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<std::path::Path> for PackageUrl {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(self.as_str())
    }
}

impl PartialEq<&str> for PackageUrl {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A path in the repository (a package URL, `manifest.json`), proven to name a file below the
/// repository root: relative, normalized, no scheme, nothing a URL parser or a server could
/// reinterpret. The one rule for both the manifest's package URLs and what the fetcher reads.
pub(crate) fn repo_path(url: &str) -> Result<RelPath, &'static str> {
    if url
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return Err("it has a scheme; package URLs are relative to the repository");
    }
    if url.contains('\\') {
        return Err("it contains a backslash");
    }
    if url.contains(['%', '?', '#']) {
        return Err("percent-escapes, queries and fragments are not allowed");
    }
    if url.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    RelPath::new(url).map_err(|e| e.reason)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "PatchFields", into = "PatchFields")]
pub struct Patch {
    pub from: Version,
    #[serde(flatten)]
    pub package: Package,
    pub operations: Operations,
    /// The same patch with some files stored as binary deltas (see [`DeltaPackage`]); absent
    /// in repositories written before deltas, and ignored by clients that predate them, which
    /// install the plain package above.
    ///
    /// Written under the key `delta` when every delta is one frame against a whole base, and
    /// under `chunked_delta` when some file is [chunked](FileDelta::chunks): clients from
    /// before chunks know only `delta`, so they never see a delta they would decode wrongly,
    /// and install the plain package instead.
    pub delta: Option<DeltaPackage>,
}

/// A [`Patch`] as written, before its delta is checked against its operations.
#[derive(Serialize, Deserialize)]
struct PatchFields {
    from: Version,
    #[serde(flatten)]
    package: Package,
    operations: Operations,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delta: Option<DeltaPackage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunked_delta: Option<DeltaPackage>,
}

impl TryFrom<PatchFields> for Patch {
    type Error = InvalidDelta;

    fn try_from(p: PatchFields) -> Result<Self, InvalidDelta> {
        if let Some(delta) = &p.delta
            && let Some((path, _)) = delta.files.iter().find(|(_, f)| !f.chunks.is_empty())
        {
            return Err(InvalidDelta {
                reason: format!(
                    "{path} is chunked under `delta`, which clients from before chunks would \
                     decode as one frame; chunked deltas belong under `chunked_delta`"
                ),
            });
        }
        let mut delta = p.chunked_delta.or(p.delta);
        // Most deltas decode against the file at their own path: one copy of each path text.
        for (path, file) in delta.iter_mut().flat_map(|d| d.files.iter_mut()) {
            if file.base == *path {
                file.base = path.clone();
            }
        }
        let patch = Patch {
            from: p.from,
            package: p.package,
            operations: p.operations,
            // A repository may offer both, for old clients and new ones: new ones take chunks.
            delta,
        };
        patch.check_delta()?;
        Ok(patch)
    }
}

impl From<Patch> for PatchFields {
    fn from(p: Patch) -> Self {
        let chunked = p
            .delta
            .as_ref()
            .is_some_and(|d| d.files.values().any(|f| !f.chunks.is_empty()));
        let (delta, chunked_delta) = if chunked {
            (None, p.delta)
        } else {
            (p.delta, None)
        };
        PatchFields {
            from: p.from,
            package: p.package,
            operations: p.operations,
            delta,
            chunked_delta,
        }
    }
}

/// log2 of the largest zstd window a delta may need: base and decoded file together. The client
/// refuses a manifest that declares more, and the decoder refuses a frame that needs more, so
/// decoding one file never holds more than the base plus this window in memory.
pub const MAX_DELTA_WINDOW_LOG: u32 = 27;
/// The smallest window a delta may declare (zstd's own minimum).
pub const MIN_DELTA_WINDOW_LOG: u32 = 10;

/// A patch package in which the files of `files` are zstd frames compressed against a *base*
/// file of the installed release (zstd's `--patch-from`: the base is the frame's reference
/// prefix), and every other entry is as in the plain patch package. It installs exactly the
/// tree the plain package does: `unpacked_size` counts decoded bytes and equals the plain
/// package's. A client uses it only when every base is installed with its signed hash, and
/// otherwise fetches the plain package, so a locally modified base never fails an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaPackage {
    #[serde(flatten)]
    pub package: Package,
    /// log2 of the zstd window every delta of this package decodes within, at most
    /// [`MAX_DELTA_WINDOW_LOG`].
    pub window_log: u32,
    /// The delta-encoded files, by install path.
    #[serde(deserialize_with = "crate::bulk::map")]
    pub files: BTreeMap<RelPath, FileDelta>,
}

/// One delta-encoded file: the installed file it is decoded against, and what it decodes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDelta {
    /// A regular file of the release the patch starts from (not necessarily the same path: a
    /// renamed file is decoded against its old name).
    pub base: RelPath,
    pub base_sha256: Sha256Digest,
    /// The decoded file's size and SHA-256 (what the plain package holds at this path).
    pub size: u64,
    pub sha256: Sha256Digest,
    /// Empty: the entry is one zstd frame whose reference prefix is the whole base. Otherwise
    /// the entry is one frame per chunk, in order, each decoding `size` bytes of the file
    /// against the `base_size` bytes of the base at `base_offset`: a large file decodes in
    /// pieces, with a slice of its base and one chunk's window in memory at a time, whatever
    /// the size of either file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<DeltaChunk>,
}

/// One frame of a chunked [`FileDelta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaChunk {
    /// Bytes of the file this frame decodes to.
    pub size: u64,
    /// Where the frame's reference prefix starts in the base, and its length.
    pub base_offset: u64,
    pub base_size: u64,
}

/// The most chunks one file's delta may have: a 4 GiB file in chunks of 64 KiB.
pub const MAX_DELTA_CHUNKS: usize = 1 << 16;

/// Why a patch's `delta` does not fit the patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid patch delta: {reason}")]
pub struct InvalidDelta {
    pub reason: String,
}

impl Patch {
    /// A delta must decode to a tree the operations allow, within the window cap: every delta
    /// file is a replaced file or lies inside a replaced directory, and the decoded total is
    /// the plain package's.
    fn check_delta(&self) -> Result<(), InvalidDelta> {
        let Some(delta) = &self.delta else {
            return Ok(());
        };
        let invalid = |reason: String| Err(InvalidDelta { reason });
        if !(MIN_DELTA_WINDOW_LOG..=MAX_DELTA_WINDOW_LOG).contains(&delta.window_log) {
            return invalid(format!(
                "window_log {} is outside {MIN_DELTA_WINDOW_LOG}..={MAX_DELTA_WINDOW_LOG}",
                delta.window_log
            ));
        }
        if delta.package.unpacked_size != self.package.unpacked_size {
            return invalid(format!(
                "unpacked_size {} differs from the patch's {}",
                delta.package.unpacked_size, self.package.unpacked_size
            ));
        }
        let files: HashSet<&RelPath> = self.operations.replace.files.iter().collect();
        let dirs: HashSet<&RelPath> = self.operations.replace.directories.iter().collect();
        let mut total = 0u64;
        for (path, file) in &delta.files {
            if !files.contains(path) && !path.ancestors().any(|a| dirs.contains(&a)) {
                return invalid(format!("{path} is not a file the patch replaces"));
            }
            total = total.saturating_add(file.size);
            check_chunks(path, file, delta.window_log)?;
        }
        if total > self.package.unpacked_size {
            return invalid(format!(
                "its files decode to {total} bytes, more than the patch's unpacked_size {}",
                self.package.unpacked_size
            ));
        }
        Ok(())
    }
}

/// A chunked file's frames must decode to exactly its size, each within the package's window
/// (its base slice and its output together), with a slice that can lie inside a base.
fn check_chunks(path: &RelPath, file: &FileDelta, window_log: u32) -> Result<(), InvalidDelta> {
    if file.chunks.is_empty() {
        return Ok(());
    }
    let invalid = |reason: String| {
        Err(InvalidDelta {
            reason: format!("{path}: {reason}"),
        })
    };
    if file.chunks.len() > MAX_DELTA_CHUNKS {
        return invalid(format!(
            "{} chunks, more than the {MAX_DELTA_CHUNKS} a delta may have",
            file.chunks.len()
        ));
    }
    let window = 1u64 << window_log;
    let mut total = 0u64;
    for (i, chunk) in file.chunks.iter().enumerate() {
        if chunk.size == 0 {
            return invalid(format!("chunk {i} decodes to no bytes"));
        }
        if chunk.base_offset.checked_add(chunk.base_size).is_none()
            || chunk.base_size.saturating_add(chunk.size) > window
        {
            return invalid(format!(
                "chunk {i} ({} bytes against {} bytes of base) does not fit the window of \
                 {window} bytes",
                chunk.size, chunk.base_size
            ));
        }
        total = total.saturating_add(chunk.size);
    }
    if total != file.size {
        return invalid(format!(
            "its chunks decode to {total} bytes, not its signed {}",
            file.size
        ));
    }
    Ok(())
}

/// A patch's `operations` as the manifest writes them, not yet checked: what
/// [`Operations`] is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationLists {
    #[serde(default)]
    pub replace: PathSet,
    #[serde(default)]
    pub delete: PathSet,
}

/// A patch's operations, proven consistent when they were made (deserialized, or
/// [`Operations::new`]): no path listed twice; none both replaced and deleted, nor one inside
/// the other; nothing replaced inside a replaced directory or below a replaced file. Every stage
/// after parsing (trust, extraction, planning) takes this type and relies on those rules instead
/// of checking them again. Reads go through [`OperationLists`] (`ops.replace.files`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "OperationLists")]
pub struct Operations(OperationLists);

/// Why a patch's operations are inconsistent: `path` and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid patch operations: {path} {reason}")]
pub struct InvalidOperations {
    pub path: RelPath,
    pub reason: &'static str,
}

impl Operations {
    pub fn new(replace: PathSet, delete: PathSet) -> Result<Self, InvalidOperations> {
        OperationLists { replace, delete }.try_into()
    }
}

impl std::ops::Deref for Operations {
    type Target = OperationLists;
    fn deref(&self) -> &OperationLists {
        &self.0
    }
}

impl Serialize for Operations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl TryFrom<OperationLists> for Operations {
    type Error = InvalidOperations;

    fn try_from(ops: OperationLists) -> Result<Self, InvalidOperations> {
        let invalid = |path: &RelPath, reason| {
            Err(InvalidOperations {
                path: path.clone(),
                reason,
            })
        };
        let mut all = HashSet::new();
        for path in ops.replace.iter().chain(ops.delete.iter()) {
            if !all.insert(path) {
                return invalid(path, "is listed more than once");
            }
        }
        let replaced: HashSet<&RelPath> = ops.replace.iter().collect();
        let replaced_files: HashSet<&RelPath> = ops.replace.files.iter().collect();
        let replaced_dirs: HashSet<&RelPath> = ops.replace.directories.iter().collect();
        let deleted: HashSet<&RelPath> = ops.delete.iter().collect();
        for path in ops.replace.iter() {
            if path.is_at_or_under(|p| deleted.contains(p)) {
                return invalid(
                    path,
                    "is replaced but also deleted (itself or a directory holding it)",
                );
            }
            if path.ancestors().any(|a| replaced_files.contains(&a)) {
                return invalid(path, "is replaced but lies below a replaced file");
            }
            if path.ancestors().any(|a| replaced_dirs.contains(&a)) {
                return invalid(
                    path,
                    "is replaced but already lies inside a replaced directory",
                );
            }
        }
        for path in ops.delete.iter() {
            if path.ancestors().any(|a| replaced.contains(&a)) {
                return invalid(
                    path,
                    "is deleted but lies inside a replaced path, which the package already defines",
                );
            }
        }
        Ok(Operations(ops))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSet {
    #[serde(default)]
    pub files: Vec<RelPath>,
    #[serde(default)]
    pub directories: Vec<RelPath>,
}

impl PathSet {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.directories.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RelPath> {
        self.files.iter().chain(&self.directories)
    }
}

impl Manifest {
    /// The release `version`; when it is published on several channels, the one on
    /// `preferred_channel` (the install's own).
    pub fn release(&self, version: &Version, preferred_channel: &str) -> Option<&Release> {
        self.releases
            .iter()
            .filter(|r| &r.version == version)
            .min_by_key(|r| r.channel != preferred_channel)
    }
}

impl Release {
    /// The artifacts for `arch`, accepting `amd64`/`arm64` spellings on either side.
    pub fn artifacts_for(&self, arch: &str) -> Option<&Artifacts> {
        let wanted = normalize_arch(arch);
        self.artifacts
            .iter()
            .find(|(k, _)| normalize_arch(k) == wanted)
            .map(|(_, a)| a)
    }
}

impl Artifacts {
    pub fn patch_from(&self, from: &Version) -> Option<&Patch> {
        self.patches.iter().find(|p| &p.from == from)
    }

    /// The patch from `from` kept in a document of its own, if it is not inline.
    pub fn patch_document_from(&self, from: &Version) -> Option<&PatchDocument> {
        self.patch_documents.iter().find(|p| &p.from == from)
    }

    /// Drops the patch from `from`, inline or in a document.
    pub(crate) fn remove_patch_from(&mut self, from: &Version) {
        self.patches.retain(|p| &p.from != from);
        self.patch_documents.retain(|p| &p.from != from);
    }

    /// Every patch on offer, inline or in a document: (from, download size of the package).
    pub fn patch_offers(&self) -> impl Iterator<Item = (&Version, u64)> {
        self.patches
            .iter()
            .map(|p| (&p.from, p.package.size))
            .chain(self.patch_documents.iter().map(|d| (&d.from, d.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "format": 1, "product": "demo-app", "serial": 7, "expires": "2027-03-01T00:00:00Z",
      "mirror_hint": "kept",
      "releases": [{
        "version": "1.2.0", "channel": "stable", "published": "2026-11-30T10:00:00Z",
        "notes": "Fix login",
        "artifacts": { "amd64": {
          "full": { "url": "packages/a.tar.gz", "size": 1, "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "unpacked_size": 2 },
          "patches": [{ "from": "v1.1.0", "url": "packages/p.tar.gz", "size": 3, "sha256": "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
            "unpacked_size": 4,
            "operations": { "replace": { "files": ["bin/app"], "directories": ["web"] },
                            "delete": { "files": ["conf/legacy.yml"] } } }]
        }}
      }]
    }"#;

    /// Chunked deltas go under `chunked_delta`, where clients from before chunks do not look;
    /// a chunk under `delta`, or chunks that do not add up, are refused at parse.
    #[test]
    fn chunked_deltas_are_written_where_old_clients_do_not_look() {
        let digest = "aa".repeat(32);
        let patch = |key: &str, chunks: &str| {
            format!(
                r#"{{ "from": "1.0.0", "url": "p.tar.zst", "size": 3, "sha256": "{digest}",
                "unpacked_size": 10, "operations": {{ "replace": {{ "files": ["f"] }} }},
                "{key}": {{ "url": "d.tar.zst", "size": 2, "sha256": "{digest}",
                  "unpacked_size": 10, "window_log": 20,
                  "files": {{ "f": {{ "base": "g", "base_sha256": "{digest}", "size": 10,
                    "sha256": "{digest}", "chunks": {chunks} }} }} }} }}"#
            )
        };
        let good = r#"[{"size": 6, "base_offset": 0, "base_size": 4},
                        {"size": 4, "base_offset": 4, "base_size": 4}]"#;
        let parsed: Patch = serde_json::from_str(&patch("chunked_delta", good)).unwrap();
        assert_eq!(
            parsed.delta.as_ref().unwrap().files[&RelPath::new("f").unwrap()]
                .chunks
                .len(),
            2
        );
        let written = serde_json::to_value(&parsed).unwrap();
        assert!(written.get("delta").is_none(), "{written}");
        assert!(written["chunked_delta"]["files"]["f"]["chunks"].is_array());
        let err = serde_json::from_str::<Patch>(&patch("delta", good)).unwrap_err();
        assert!(
            err.to_string().contains("belong under `chunked_delta`"),
            "{err}"
        );
        let short = r#"[{"size": 6, "base_offset": 0, "base_size": 4}]"#;
        let err = serde_json::from_str::<Patch>(&patch("chunked_delta", short)).unwrap_err();
        assert!(err.to_string().contains("not its signed 10"), "{err}");
        let wide = r#"[{"size": 10, "base_offset": 0, "base_size": 1048576}]"#;
        let err = serde_json::from_str::<Patch>(&patch("chunked_delta", wide)).unwrap_err();
        assert!(err.to_string().contains("does not fit the window"), "{err}");
        // Without chunks the delta stays under `delta`, as every client reads it.
        let mut plain = parsed;
        for f in plain.delta.as_mut().unwrap().files.values_mut() {
            f.chunks.clear();
        }
        let written = serde_json::to_value(&plain).unwrap();
        assert!(written.get("chunked_delta").is_none() && written.get("delta").is_some());
    }

    #[test]
    fn parses_the_contract_example_and_keeps_unknown_fields() {
        let m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(m.serial, 7);
        let r = &m.releases[0];
        let a = r.artifacts_for("x86_64").unwrap();
        assert_eq!(r.version.to_string(), "1.2.0");
        let p = a.patch_from(&Version::parse("1.1.0").unwrap()).unwrap();
        assert_eq!(p.operations.replace.directories[0].as_str(), "web");
        let v = Version::parse("1.2.0").unwrap();
        assert_eq!(m.release(&v, "beta").unwrap().channel, "stable");
        let mut two = m.clone();
        let mut beta = two.releases[0].clone();
        beta.channel = "beta".into();
        two.releases.push(beta);
        assert_eq!(two.release(&v, "beta").unwrap().channel, "beta");
        assert_eq!(two.release(&v, "stable").unwrap().channel, "stable");
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["mirror_hint"], "kept");
    }

    #[test]
    fn operations_that_overlap_are_refused_when_made() {
        let rel = |s: &&str| RelPath::new(s).unwrap();
        let set = |f: &[&str], d: &[&str]| PathSet {
            files: f.iter().map(rel).collect(),
            directories: d.iter().map(rel).collect(),
        };
        let ops = |rf: &[&str], rd: &[&str], df: &[&str], dd: &[&str]| {
            Operations::new(set(rf, rd), set(df, dd))
        };
        let bad = [
            (ops(&["a"], &[], &["a"], &[]), "a is listed more than once"),
            (ops(&[], &["d"], &[], &["d"]), "d is listed more than once"),
            (
                ops(&["d/x"], &[], &[], &["d"]),
                "d/x is replaced but also deleted",
            ),
            (
                ops(&["d/x"], &["d"], &[], &[]),
                "d/x is replaced but already lies inside",
            ),
            (
                ops(&[], &["d", "d/e"], &[], &[]),
                "d/e is replaced but already lies inside",
            ),
            (
                ops(&["a", "a/b"], &[], &[], &[]),
                "a/b is replaced but lies below a replaced file",
            ),
            (ops(&["a"], &["a"], &[], &[]), "a is listed more than once"),
            (
                ops(&[], &["d"], &["d/old"], &[]),
                "d/old is deleted but lies inside a replaced",
            ),
        ];
        for (made, needle) in bad {
            let err = made.unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        ops(&["a/x", "b"], &["d", "e/f"], &["a/y", "g"], &["e/g"]).unwrap();
        // The same rules when parsed: a manifest cannot hold such operations.
        let twice = EXAMPLE.replace("conf/legacy.yml", "bin/app");
        let err = serde_json::from_str::<Manifest>(&twice).unwrap_err();
        assert!(
            err.to_string().contains("bin/app is listed more than once"),
            "{err}"
        );
    }

    #[test]
    fn refuses_unsafe_operation_paths() {
        let bad = EXAMPLE.replace("conf/legacy.yml", "../etc/passwd");
        assert!(serde_json::from_str::<Manifest>(&bad).is_err());
    }
}
