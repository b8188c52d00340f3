//! On-disk cache of compiled components: compiling a plugin with Cranelift takes tens of
//! milliseconds (about a second in a debug build); loading the compiled form takes well under one.
//!
//! Entries are `<dir>/<sha256(wasm)>-<engine hash>.cwasm`, where the engine hash digests
//! `Engine::precompile_compatibility_hash` (wasmtime version, config, CPU features), so an entry
//! is only ever used by an engine that can run it. A `.cwasm` is native machine code that
//! wasmtime maps and executes without validation: loading one is as trusting as running a
//! binary. So entries are only read from this cache, which molt writes itself: the directory is
//! created 0700, files are written 0600 (temp file + rename, never half-written), and a
//! directory or entry that is writable by others or owned by another user is not used.
//!
//! A file molt wrote can still be damaged afterwards (a bad disk, a crash before the data
//! reached it on a filesystem that does not order writes), and wasmtime would run the damaged
//! code — a SIGSEGV in every later command. So each entry starts with a header: a magic line and
//! the SHA-256 of the serialized component that follows; the digest is checked before anything
//! is deserialized. A damaged, truncated, foreign or incompatible entry is logged, deleted and
//! the component recompiled.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::fsutil::{self, Existing};

/// The first bytes of every entry; the format number changes with the header layout.
const MAGIC: &[u8; 16] = b"molt-cwasm-v1\0\0\0";
/// Magic, then the SHA-256 of the rest.
const HEADER_LEN: usize = MAGIC.len() + 32;
/// Entries larger than this are not read (a compiled component is a few times its `.wasm`).
const MAX_ENTRY_BYTES: u64 = 512 << 20;

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Compiled,
    Cache,
}

#[derive(Debug)]
pub(super) struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
}

/// Feeds `Hash` output into SHA-256, so the engine hash is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn engine_hash(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

/// True if `meta` belongs to this process's user and nobody else may write it.
fn private(meta: &fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    meta.uid() == euid && meta.mode() & 0o022 == 0
}

impl ComponentCache {
    /// Opens (creating with mode 0700) the cache directory; `None` with a warning if it cannot
    /// be created or is not private to this user: molt then compiles every time.
    pub(super) fn open(dir: &Path, engine: &Engine) -> Option<ComponentCache> {
        if let Err(e) = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            tracing::warn!(dir = %dir.display(), "cannot create the plugin cache: {e}; compiling plugins every time");
            return None;
        }
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() && private(&meta) => Some(ComponentCache {
                dir: dir.to_path_buf(),
                engine_hash: engine_hash(engine),
            }),
            Ok(_) => {
                tracing::warn!(dir = %dir.display(), "plugin cache is writable by others or not ours; not using it (chmod 700 it)");
                None
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot read the plugin cache: {e}; compiling plugins every time");
                None
            }
        }
    }

    pub(super) fn entry(&self, wasm: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// The compiled component for `wasm`, from the cache when a good entry exists.
    pub(super) fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, Origin)> {
        let entry = self.entry(wasm);
        if let Some(component) = self.load(engine, &entry) {
            return Ok((component, Origin::Cache));
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&component, &entry) {
            tracing::warn!(entry = %entry.display(), "cannot write the compiled plugin to the cache: {e}");
        }
        Ok((component, Origin::Compiled))
    }

    fn load(&self, engine: &Engine, entry: &Path) -> Option<Component> {
        let meta = fs::symlink_metadata(entry).ok()?;
        if !meta.is_file() || !private(&meta) {
            tracing::warn!(entry = %entry.display(), "cache entry is not a private regular file; recompiling");
            self.discard(entry);
            return None;
        }
        let payload = match read_checked(entry) {
            Ok(payload) => payload,
            Err(why) => {
                tracing::warn!(entry = %entry.display(), "discarding damaged cache entry ({why}); recompiling");
                self.discard(entry);
                return None;
            }
        };
        // SAFETY: the entry lives in molt's private cache directory, was written by molt from a
        // component it compiled with an engine of the same compatibility hash (part of the file
        // name), is owned by this user and writable by nobody else (checked above), and its bytes
        // are exactly those molt wrote (the SHA-256 in its header matches).
        match unsafe { Component::deserialize(engine, &payload) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(entry = %entry.display(), "discarding unusable cache entry: {e}");
                self.discard(entry);
                None
            }
        }
    }

    fn discard(&self, entry: &Path) {
        if let Err(e) = fs::remove_file(entry) {
            tracing::warn!(entry = %entry.display(), "cannot remove cache entry: {e}");
        }
    }

    fn store(&self, component: &Component, entry: &Path) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))?;
        temp.write_all(MAGIC)?;
        temp.write_all(&Sha256::digest(&bytes))?;
        temp.write_all(&bytes)?;
        fsutil::persist_temp(temp, entry, Existing::Replace)
    }
}

/// The serialized component of an entry, once its header and digest check out.
fn read_checked(entry: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    fs::File::open(entry)
        .and_then(|f| f.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return Err(format!("larger than {MAX_ENTRY_BYTES} bytes"));
    }
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err("no molt cache header".into());
    }
    let payload = bytes.split_off(HEADER_LEN);
    if Sha256::digest(&payload)[..] != bytes[MAGIC.len()..] {
        return Err("its checksum does not match its contents".into());
    }
    Ok(payload)
}
