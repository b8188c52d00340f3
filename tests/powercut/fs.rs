//! `PowerCutFs`: an in-memory FUSE filesystem that remembers, for every inode, what the last
//! `fsync`/`fdatasync`/directory `fsync` made durable, and on [`Mounted::cut_power`] throws the
//! rest away. See the module doc of `powercut` for the model and why it is the one that matters.
//!
//! Two images live side by side: `live` (what processes see, the page cache and the dentry cache
//! of a real kernel) and `durable` (what the disk holds). Every operation changes `live` only;
//! `fsync` of a file copies that inode's contents and attributes to `durable`; `fsync` of a
//! directory copies its entry list to `durable` (an entry naming an inode the disk has never
//! seen brings that inode along as created: its mode, no contents, no entries). A power cut
//! replaces `live` by what is reachable from the root in `durable`. File contents are shared
//! between the images (`Arc`) and copied on write, so a sync is cheap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

const ROOT: u64 = 1;
/// Attribute and entry cache time handed to the kernel: every change goes through this
/// filesystem, so the kernel's caches never go stale within one mount.
const TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    /// Permission bits (`0o7777`).
    perm: u32,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// File contents (empty for a directory).
    data: Arc<Vec<u8>>,
    /// Directory entries (empty for a file).
    entries: BTreeMap<OsString, u64>,
}

impl Node {
    fn new(kind: Kind, perm: u32, uid: u32, gid: u32) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            data: Arc::new(Vec::new()),
            entries: BTreeMap::new(),
        }
    }

    /// The inode as a power cut finds it when its link reached the disk but none of its own
    /// contents did: the attributes it had, no data, no entries.
    fn as_created(&self) -> Node {
        Node {
            data: Arc::new(Vec::new()),
            entries: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// A filesystem image: inode number → inode, the root being inode 1.
#[derive(Clone, Debug)]
pub struct Image {
    nodes: HashMap<u64, Node>,
}

impl Image {
    fn empty() -> Image {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(Kind::Dir, 0o755, 0, 0));
        Image { nodes }
    }

    /// The inodes reachable from the root, with link counts recomputed (a cut can leave an
    /// inode linked from two directories when only one side of a rename reached the disk).
    fn reachable(&self) -> Image {
        let mut nodes = HashMap::new();
        let mut seen = HashSet::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if !seen.insert(ino) {
                continue;
            }
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            let mut node = node.clone();
            node.entries
                .retain(|_, child| self.nodes.contains_key(child));
            todo.extend(node.entries.values().copied());
            nodes.insert(ino, node);
        }
        Image { nodes }
    }
}

/// What the filesystem counted: durability requests it received and power cuts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    pub cuts: u64,
}

struct Volume {
    live: Image,
    durable: Image,
    next_ino: u64,
    /// Directory listings handed out at `opendir`, so entries removed while a reader iterates
    /// (`remove_dir_all`) do not shift the offsets of the rest.
    listings: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_fh: u64,
    counters: Counters,
}

impl Volume {
    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.live.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.live.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&Node, Errno> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(node)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn nlink(&self, ino: u64, node: &Node) -> u32 {
        match node.kind {
            Kind::Dir => {
                2 + node
                    .entries
                    .values()
                    .filter(|c| self.live.nodes.get(c).is_some_and(|n| n.kind == Kind::Dir))
                    .count() as u32
            }
            Kind::File => self
                .live
                .nodes
                .values()
                .map(|n| n.entries.values().filter(|c| **c == ino).count() as u32)
                .sum::<u32>()
                .max(1),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let size = node.data.len() as u64;
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.ctime,
            kind: match node.kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            },
            perm: node.perm as u16,
            nlink: self.nlink(ino, node),
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn create(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        umask: u32,
    ) -> Result<FileAttr, Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Node::new(kind, mode & !umask, req.uid(), req.gid());
        self.live.nodes.insert(ino, node);
        let dir = self.node_mut(parent)?;
        dir.entries.insert(name.to_owned(), ino);
        dir.mtime = SystemTime::now();
        self.attr(ino)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, kind: Kind) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        let node = self.node(ino)?;
        match (kind, node.kind) {
            (Kind::File, Kind::Dir) => return Err(Errno::EISDIR),
            (Kind::Dir, Kind::File) => return Err(Errno::ENOTDIR),
            (Kind::Dir, Kind::Dir) if !node.entries.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        // The inode itself stays in `live` (an open descriptor may still use it); a cut or a
        // remount drops whatever nothing links.
        let dir = self.node_mut(parent)?;
        dir.entries.remove(name);
        dir.mtime = SystemTime::now();
        Ok(())
    }

    /// True if `dir` is `ino` or lies somewhere below it.
    fn contains(&self, ino: u64, dir: u64) -> bool {
        let mut todo = vec![ino];
        let mut seen = HashSet::new();
        while let Some(i) = todo.pop() {
            if i == dir {
                return true;
            }
            if seen.insert(i)
                && let Some(n) = self.live.nodes.get(&i)
            {
                todo.extend(n.entries.values().copied());
            }
        }
        false
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        self.dir(newparent)?;
        let target = self.dir(newparent)?.entries.get(newname).copied();
        let kind = self.node(ino)?.kind;
        if kind == Kind::Dir && self.contains(ino, newparent) {
            return Err(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            let other = target.ok_or(Errno::ENOENT)?;
            if self.node(other)?.kind == Kind::Dir && self.contains(other, parent) {
                return Err(Errno::EINVAL);
            }
            self.node_mut(parent)?
                .entries
                .insert(name.to_owned(), other);
            self.node_mut(newparent)?
                .entries
                .insert(newname.to_owned(), ino);
            return Ok(());
        }
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        if let Some(target) = target {
            if target == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let t = self.node(target)?;
            match (kind, t.kind) {
                (Kind::File, Kind::Dir) => return Err(Errno::EISDIR),
                (Kind::Dir, Kind::File) => return Err(Errno::ENOTDIR),
                (Kind::Dir, Kind::Dir) if !t.entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY);
                }
                _ => {}
            }
        }
        let now = SystemTime::now();
        let from = self.node_mut(parent)?;
        from.entries.remove(name);
        from.mtime = now;
        let to = self.node_mut(newparent)?;
        to.entries.insert(newname.to_owned(), ino);
        to.mtime = now;
        self.node_mut(ino)?.ctime = now;
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file: its contents and attributes reach the disk.
    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.node(ino)?.clone();
        let durable = match node.kind {
            Kind::File => node,
            // An fsync of a directory through a file handle: its attributes only.
            Kind::Dir => Node {
                entries: self
                    .durable
                    .nodes
                    .get(&ino)
                    .map(|d| d.entries.clone())
                    .unwrap_or_default(),
                ..node
            },
        };
        self.durable.nodes.insert(ino, durable);
        self.counters.fsyncs += 1;
        Ok(())
    }

    /// `fsync` of a directory: its entry list (and attributes) reach the disk; an entry naming
    /// an inode the disk has never held brings it along as created.
    fn sync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.dir(ino)?.clone();
        for child in node.entries.values() {
            if !self.durable.nodes.contains_key(child) {
                let created = self.node(*child)?.as_created();
                self.durable.nodes.insert(*child, created);
            }
        }
        self.durable.nodes.insert(ino, node);
        self.counters.fsyncdirs += 1;
        Ok(())
    }
}

/// The FUSE side: a handle on the shared volume.
struct PowerCutFs {
    volume: Arc<Mutex<Volume>>,
}

impl PowerCutFs {
    fn lock(&self) -> MutexGuard<'_, Volume> {
        self.volume.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn set_time(t: Option<TimeOrNow>, field: &mut SystemTime) {
    match t {
        Some(TimeOrNow::SpecificTime(at)) => *field = at,
        Some(TimeOrNow::Now) => *field = SystemTime::now(),
        None => {}
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let v = self.lock();
        match v.child(parent.0, name).and_then(|ino| v.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut v = self.lock();
        let result = v.node_mut(ino.0).and_then(|node| {
            if let Some(mode) = mode {
                node.perm = mode & 0o7777;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            if let Some(size) = size {
                if node.kind == Kind::Dir {
                    return Err(Errno::EISDIR);
                }
                Arc::make_mut(&mut node.data).resize(size as usize, 0);
                node.mtime = SystemTime::now();
            }
            set_time(atime, &mut node.atime);
            set_time(mtime, &mut node.mtime);
            node.ctime = SystemTime::now();
            Ok(())
        });
        match result.and_then(|()| v.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        match self
            .lock()
            .create(req, parent.0, name, Kind::File, mode, umask)
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self
            .lock()
            .create(req, parent.0, name, Kind::Dir, mode, umask)
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().remove(parent.0, name, Kind::File) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().remove(parent.0, name, Kind::Dir) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self
            .lock()
            .rename(parent.0, name, newparent.0, newname, flags)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().node(ino.0) {
            Ok(n) if n.kind == Kind::File => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let v = self.lock();
        match v.node(ino.0) {
            Ok(n) => {
                let start = (offset as usize).min(n.data.len());
                let end = (start + size as usize).min(n.data.len());
                reply.data(&n.data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut v = self.lock();
        match v.node_mut(ino.0) {
            Ok(n) => {
                let buf = Arc::make_mut(&mut n.data);
                let start = offset as usize;
                if buf.len() < start + data.len() {
                    buf.resize(start + data.len(), 0);
                }
                buf[start..start + data.len()].copy_from_slice(data);
                n.mtime = SystemTime::now();
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().sync_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut v = self.lock();
        let listing = match v.dir(ino.0) {
            Ok(dir) => dir
                .entries
                .iter()
                .map(|(name, child)| {
                    let kind = match v.live.nodes.get(child).map(|n| n.kind) {
                        Some(Kind::Dir) => FileType::Directory,
                        _ => FileType::RegularFile,
                    };
                    (*child, kind, name.clone())
                })
                .collect(),
            Err(e) => return reply.error(e),
        };
        let fh = v.next_fh;
        v.next_fh += 1;
        v.listings.insert(fh, listing);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let v = self.lock();
        let Some(listing) = v.listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (child, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().listings.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().sync_dir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 4 GiB free in 4 KiB blocks: room enough for any test install.
        reply.statfs(1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .lock()
            .create(req, parent.0, name, Kind::File, mode, umask)
        {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted power-cut filesystem; unmounted when dropped.
pub struct Mounted {
    volume: Arc<Mutex<Volume>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl Mounted {
    /// Mounts an empty filesystem at `mountpoint` (created if missing). Panics, saying what is
    /// missing, when FUSE is not available: the power-cut tests are never skipped silently.
    pub fn new(mountpoint: &Path) -> Mounted {
        std::fs::create_dir_all(mountpoint).unwrap();
        let volume = Volume {
            live: Image::empty(),
            durable: Image::empty(),
            next_ino: ROOT + 1,
            listings: HashMap::new(),
            next_fh: 1,
            counters: Counters::default(),
        };
        let mut m = Mounted {
            volume: Arc::new(Mutex::new(volume)),
            mountpoint: mountpoint.to_owned(),
            session: None,
        };
        m.mount();
        m
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn lock(&self) -> MutexGuard<'_, Volume> {
        self.volume.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mount(&mut self) {
        assert!(
            Path::new("/dev/fuse").exists(),
            "the power-cut tests need FUSE, and /dev/fuse is missing: load the fuse module \
             (modprobe fuse) or give the container the device (--device /dev/fuse); \
             the mount also needs root or fusermount3 (apt-get install fuse3)"
        );
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("molt-powercut".into()),
            MountOption::DefaultPermissions,
        ];
        let fs = PowerCutFs {
            volume: self.volume.clone(),
        };
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config).unwrap_or_else(|e| {
            panic!(
                "the power-cut tests could not mount their FUSE filesystem at {}: {e} \
                 (they need /dev/fuse and root, or fusermount3: apt-get install fuse3)",
                self.mountpoint.display()
            )
        });
        self.session = Some(session);
    }

    /// Unmounts; every descriptor on the mount must be closed (a child being spawned by
    /// another test holds copies for an instant, hence the retries).
    fn unmount(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let mountpoint = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()).unwrap();
        let mut tries = 0;
        loop {
            // SAFETY: a valid NUL-terminated path that outlives the call.
            if unsafe { libc::umount2(mountpoint.as_ptr(), 0) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EPERM) {
                // Not root: fuser unmounts through fusermount3.
                return session.umount_and_join().unwrap_or_else(|e| {
                    panic!(
                        "unmounting the power-cut filesystem at {} failed: {e}",
                        self.mountpoint.display()
                    )
                });
            }
            tries += 1;
            if err.raw_os_error() != Some(libc::EBUSY) || tries == 100 {
                panic!(
                    "unmounting the power-cut filesystem at {} failed: {err}",
                    self.mountpoint.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Unmounted: the session thread sees the device close and ends.
        session.join().unwrap_or_else(|e| {
            panic!(
                "the power-cut filesystem at {} ended with {e}",
                self.mountpoint.display()
            )
        });
    }

    /// Cuts the power: unmounts (dropping the kernel's caches), forgets everything that was
    /// not made durable, and mounts the disk's image again, as a reboot would.
    pub fn cut_power(&mut self) {
        self.unmount();
        {
            let mut v = self.lock();
            let disk = v.durable.reachable();
            v.durable = disk.clone();
            v.live = disk;
            v.listings.clear();
            v.counters.cuts += 1;
        }
        self.mount();
    }

    /// Everything written so far reaches the disk, as a clean shutdown would do (used to set a
    /// scene up, never while molt runs).
    pub fn sync_all(&mut self) {
        let mut v = self.lock();
        v.durable = v.live.reachable();
    }

    /// The disk's image (what a power cut would leave), for [`Mounted::restore`].
    pub fn disk_image(&self) -> Image {
        self.lock().durable.reachable()
    }

    /// Puts `image` on the disk and boots from it: the page cache is empty and the tree is
    /// exactly the image.
    pub fn restore(&mut self, image: &Image) {
        self.unmount();
        {
            let mut v = self.lock();
            v.durable = image.clone();
            v.live = image.clone();
            v.listings.clear();
            let max = image.nodes.keys().copied().max().unwrap_or(ROOT);
            v.next_ino = v.next_ino.max(max + 1);
        }
        self.mount();
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}
