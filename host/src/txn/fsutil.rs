//! The few filesystem primitives a crash-safe transaction is built from: renames that never
//! clobber, durable directory fsyncs, atomic whole-file replacement and kind-aware lookups.
//!
//! Everything here reports plain `io::Error`s; the callers attach the operation and path.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::failpoint;

/// What sits at a path (symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The kind of entry at `path`, or `None` if nothing is there (also when a parent is a file).
pub fn entry_kind(path: &Path) -> io::Result<Option<EntryKind>> {
    match fs::symlink_metadata(path) {
        Ok(m) => {
            let ft = m.file_type();
            Ok(Some(if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File
            } else if ft.is_symlink() {
                EntryKind::Symlink
            } else {
                EntryKind::Other
            }))
        }
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// True if anything (even a dangling symlink) is at `path`.
pub fn exists(path: &Path) -> io::Result<bool> {
    entry_kind(path).map(|k| k.is_some())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing an existing `to`.
///
/// Uses `renameat2(RENAME_NOREPLACE)`; on a filesystem without it, checks and renames (molt holds
/// the state lock, so nothing else of ours races the check).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c_from = c_path(from)?;
    let c_to = c_path(to)?;
    // SAFETY: both arguments are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            if exists(to)? {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", to.display()),
                ));
            }
            fs::rename(from, to)
        }
        _ => Err(err),
    }
}

/// Flushes a directory's entries (creations, renames, removals) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates one directory with `mode` (subject to the umask); `Ok(false)` if a directory is
/// already there.
pub fn create_dir(path: &Path, mode: u32) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The id of the mount `path` lies on (`statx` with `STATX_MNT_ID`), or `None` where the kernel
/// does not report one. Two paths on one filesystem (same `st_dev`) can still be on different
/// mounts — a bind mount — and `rename` between them fails with `EXDEV`.
pub fn mount_id(path: &Path) -> io::Result<Option<u64>> {
    let c = c_path(path)?;
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `buf` a valid, writable statx.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_MNT_ID,
            &mut buf,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(None),
            _ => Err(err),
        };
    }
    Ok((buf.stx_mask & libc::STATX_MNT_ID != 0).then_some(buf.stx_mnt_id))
}

/// Sets the permission bits of `path` (not following a symlink at `path` is the caller's check).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777))
}

/// Removes `path` if it is an empty directory; `Ok(false)` if it is absent, not empty, or not a
/// directory.
pub fn remove_dir_if_empty(path: &Path) -> io::Result<bool> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.kind() == io::ErrorKind::DirectoryNotEmpty
                || e.kind() == io::ErrorKind::NotADirectory =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Removes a directory tree; absent is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` atomically and durably: write a private temp file next to it,
/// fsync it, rename it over `path`, fsync the directory. Readers see the old or the new content,
/// never a mix, also after a power loss.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", random_suffix()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)?;
    failpoint::step(&format!("write {}", path.display()));
    Ok(())
}

/// Eight random lowercase hex digits, for unique temporary and transaction names.
pub fn random_suffix() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        // Uniqueness is also guaranteed by create_new/create_dir; randomness only avoids retries.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes = (nanos ^ std::process::id()).to_le_bytes();
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_noreplace_refuses_to_clobber() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"b");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"a");
        assert!(!exists(&a).unwrap());
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn remove_dir_if_empty_keeps_full_dirs() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("x");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("f"), b"").unwrap();
        assert!(!remove_dir_if_empty(&sub).unwrap());
        fs::remove_file(sub.join("f")).unwrap();
        assert!(remove_dir_if_empty(&sub).unwrap());
        assert!(!remove_dir_if_empty(&sub).unwrap());
    }
}
