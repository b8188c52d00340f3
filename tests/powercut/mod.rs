//! Power-loss tests: the install and its state dir on a FUSE filesystem (`fs.rs`) that forgets
//! every write not made durable when the test cuts the power, then the real `molt` binary run
//! against it (`flows.rs`). The filesystem is served by a thread of the test process; `molt` runs
//! as a child process, so the kernel's FUSE client sits in between exactly as in production.
//!
//! # What the model keeps across a power cut
//!
//! - **File contents and attributes** (size, mode, owner) as of the file's last `fsync` or
//!   `fdatasync`. Writes after it, truncations and `chmod`s are lost; a file whose name reached
//!   the disk but whose data never did comes back empty (the zero-length files ext4 and xfs leave
//!   with delayed allocation). `fdatasync` is treated like `fsync`: on ext4 and xfs it also
//!   commits a pending `chmod` (journaled with the inode), only timestamps may lag.
//! - **Directory entries** (create, `mkdir`, rename, unlink, `rmdir`) as of that directory's last
//!   `fsync`, directory by directory: a rename between two directories needs both fsynced, a new
//!   file needs its directory fsynced even if the file itself was. That is what POSIX and Linux's
//!   fsync(2) page promise ("calling fsync() does not necessarily ensure that the entry in the
//!   directory containing the file has also reached disk"), and no more.
//! - Nothing else: `close`, `syncfs(2)` and `sync(2)` make nothing durable. FUSE has no syncfs
//!   request (libfuse has no such operation; the kernel only writes back its own dirty pages, and
//!   writes reach this filesystem at once), so `syncfs` on a FUSE or network filesystem is no
//!   barrier — the failure issue 11 reported.
//!
//! A cut keeps exactly the durable image and nothing of what came after it: the most pessimistic
//! state a crash can leave, which is the one that finds a missing `fsync`.
//!
//! # Why this is the model that matters for ext4 and xfs
//!
//! Both write file data back lazily and journal metadata, so after a crash a file's data can be
//! missing while the entry naming it is there — the data half of the model is what they do. For
//! metadata they are kinder than the model: their journal commits operations in order, so any
//! `fsync` (and the periodic commit every few seconds) also persists every earlier rename in every
//! directory. The per-directory model therefore loses everything ext4 or xfs can lose at the same
//! point, and more: a program that survives it survives them, and a missing directory `fsync` that
//! ext4 hides (and btrfs, NFS or a FUSE filesystem may not) is caught.
//!
//! # What it does not model
//!
//! - Partial survival: a real crash may keep any subset of the pages and renames issued since the
//!   last barrier, in any order the block layer chose; we test only the state where none
//!   survived, not the combinations in between (as LazyFS does by default). Torn writes within a
//!   page are not modelled either.
//! - States a journal cannot produce are possible: with only one side of a cross-directory rename
//!   fsynced, the inode comes back under both names or under neither. A program that fsyncs both
//!   directories before relying on the rename never meets them.
//! - `fsync` failing (EIO, the other half of issue 11), timestamps surviving (they do, but are
//!   never checked), xattrs, symlinks and hard links (refused with `EPERM`; molt uses none).

mod flows;
mod fs;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use fs::Mounted;

fn write_file(path: &Path, bytes: &[u8]) -> File {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn fsync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let from = CString::new(from.as_os_str().as_bytes()).unwrap();
    let to = CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn mounted() -> (tempfile::TempDir, Mounted) {
    let dir = tempfile::Builder::new()
        .prefix("molt-powercut-")
        .tempdir()
        .unwrap();
    let m = Mounted::new(&dir.path().join("mnt"));
    (dir, m)
}

#[test]
fn powercut_fs_loses_data_that_was_not_fsynced() {
    let (_dir, mut m) = mounted();
    let root = m.path().to_owned();
    // The names are durable (directory fsynced), the data is not.
    let a = write_file(&root.join("a"), b"never synced");
    let b = write_file(&root.join("b"), b"synced");
    b.sync_data().unwrap();
    fsync_dir(&root);
    // Appending and overwriting after the fsync are lost; close makes nothing durable.
    drop(write_file(&root.join("b"), b"overwritten, not synced"));
    drop((a, b));
    // A file the directory never recorded is lost whole, even if its data was synced.
    write_file(&root.join("c"), b"synced data, unsynced name")
        .sync_all()
        .unwrap();
    assert_eq!(
        std::fs::read(root.join("b")).unwrap(),
        b"overwritten, not synced"
    );

    m.cut_power();
    assert_eq!(std::fs::read(root.join("a")).unwrap(), b"", "unsynced data");
    assert_eq!(std::fs::read(root.join("b")).unwrap(), b"synced");
    assert!(!root.join("c").exists(), "unsynced directory entry");
}

#[test]
fn powercut_fs_keeps_what_was_fsynced_and_reverts_modes() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, mut m) = mounted();
    let root = m.path().to_owned();
    std::fs::create_dir(root.join("d")).unwrap();
    let f = write_file(&root.join("d/f"), b"kept");
    std::fs::set_permissions(root.join("d/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fsync_dir(&root.join("d"));
    fsync_dir(&root);
    std::fs::set_permissions(root.join("d/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    m.cut_power();
    assert_eq!(std::fs::read(root.join("d/f")).unwrap(), b"kept");
    let mode = std::fs::metadata(root.join("d/f"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640, "the chmod after the fsync is lost");
    // The same state survives a second cut with nothing new written.
    m.cut_power();
    assert_eq!(std::fs::read(root.join("d/f")).unwrap(), b"kept");
    assert_eq!(m.counters().cuts, 2);
}

#[test]
fn powercut_fs_loses_namespace_changes_until_the_directory_is_fsynced() {
    let (_dir, mut m) = mounted();
    let root = m.path().to_owned();
    for d in ["x", "y"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    write_file(&root.join("x/f"), b"f").sync_all().unwrap();
    write_file(&root.join("x/gone"), b"g").sync_all().unwrap();
    fsync_dir(&root.join("x"));
    fsync_dir(&root);

    // Rename, unlink and mkdir without a directory fsync: all undone by the cut.
    std::fs::rename(root.join("x/f"), root.join("y/f")).unwrap();
    std::fs::remove_file(root.join("x/gone")).unwrap();
    std::fs::create_dir(root.join("z")).unwrap();
    m.cut_power();
    assert_eq!(
        std::fs::read(root.join("x/f")).unwrap(),
        b"f",
        "old name back"
    );
    assert!(!root.join("y/f").exists());
    assert_eq!(
        std::fs::read(root.join("x/gone")).unwrap(),
        b"g",
        "unlink undone"
    );
    assert!(!root.join("z").exists(), "mkdir undone");

    // With both directories fsynced the rename is durable.
    std::fs::rename(root.join("x/f"), root.join("y/f")).unwrap();
    fsync_dir(&root.join("x"));
    fsync_dir(&root.join("y"));
    m.cut_power();
    assert!(!root.join("x/f").exists());
    assert_eq!(std::fs::read(root.join("y/f")).unwrap(), b"f");

    // RENAME_NOREPLACE, which molt relies on, refuses an existing target.
    write_file(&root.join("x/f2"), b"2");
    let err = rename_noreplace(&root.join("x/f2"), &root.join("y/f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
}

#[test]
fn powercut_fs_syncfs_is_no_barrier() {
    use std::os::fd::AsRawFd;
    let (_dir, mut m) = mounted();
    let root = m.path().to_owned();
    let f = write_file(&root.join("f"), b"data");
    fsync_dir(&root);
    // SAFETY: `f` is an open descriptor for the duration of the call.
    assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0);
    drop(f);
    m.cut_power();
    assert_eq!(
        std::fs::read(root.join("f")).unwrap(),
        b"",
        "syncfs made data durable"
    );
}

#[test]
fn powercut_fs_restores_a_saved_image_and_lists_while_deleting() {
    let (_dir, mut m) = mounted();
    let root = m.path().to_owned();
    std::fs::create_dir(root.join("d")).unwrap();
    for i in 0..300 {
        write_file(&root.join(format!("d/file-with-a-long-name-{i:04}")), b"x");
    }
    m.sync_all();
    let image = m.disk_image();
    // remove_dir_all unlinks while it reads the directory: every entry must still be seen.
    std::fs::remove_dir_all(root.join("d")).unwrap();
    m.restore(&image);
    assert_eq!(std::fs::read_dir(root.join("d")).unwrap().count(), 300);
    let name = Path::new("d/file-with-a-long-name-0299");
    assert_eq!(std::fs::read(root.join(name)).unwrap(), b"x");
    assert!(
        m.counters().fsyncs == 0 && m.counters().fsyncdirs == 0,
        "{:?}",
        m.counters()
    );
}
