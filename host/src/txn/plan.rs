//! Planning: turn "install this patch / this full release / this kept backup" into primitive ops.
//!
//! A plan is computed from the staged listing, the owned-file records and one `lstat` per path
//! involved (never a scan of the whole install), and it refuses anything that would destroy data
//! molt does not own: a new file where an unowned directory is, a directory needed where an
//! unowned file is, a symlink on the way, or any path at or around the state directory.
//!
//! Ops come out in execution order — every delete first, then the created directories (parents
//! first), then every put — so a file may turn into a directory (or back) within one update.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::ExitClass;
use crate::hashing::sha256_file;
use crate::relpath::RelPath;
use crate::repo::manifest::Operations;
use crate::state::{InstallState, StateDir, TxnKind};
use crate::tree::{FileRecord, TreeListing};
use crate::txn::Op;
use crate::txn::fsutil::{self, EntryKind};
use crate::version::Version;

/// Why no safe plan exists.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot inspect {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("the update would touch {path}, which is at or around the state directory {state_dir}")]
    TouchesStateDir { path: RelPath, state_dir: RelPath },
    #[error(
        "the update needs a {wanted} at {path}, but the install has a {existing} there that molt \
         does not own (or that holds files molt does not own); move it away and retry"
    )]
    KindConflict {
        path: RelPath,
        existing: &'static str,
        wanted: &'static str,
    },
    #[error(
        "refusing to follow the symbolic link {path} in the install; replace it with a directory"
    )]
    SymlinkOnPath { path: RelPath },
    #[error("the staged package lacks {path}, which the patch operations name")]
    NotStaged { path: RelPath },
    #[error("the patch operations name {path} in both replace and delete")]
    ReplacedAndDeleted { path: RelPath },
    #[error("the patch operations overlap: {inner} lies inside {outer}")]
    Overlap { outer: RelPath, inner: RelPath },
    #[error(
        "the patch would change {path}, which overlaps the preserved path {preserved}; \
         apply the full package instead"
    )]
    TouchesPreserved { path: RelPath, preserved: RelPath },
    #[error("the staged listing holds {path} both as a file and as a directory")]
    ListingConflict { path: RelPath },
}

impl PlanError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            PlanError::TouchesStateDir { .. } => ExitClass::Security,
            _ => ExitClass::Failure,
        }
    }
}

/// Where a plan is made: the install, the state dir's place inside it, the preserved paths.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub install_dir: PathBuf,
    /// The state dir relative to the install, if it lies inside it (e.g. `.molt`).
    pub state_rel: Option<RelPath>,
    /// Operator-configured user data: never replaced, never deleted.
    pub preserve: Vec<RelPath>,
}

impl PlanContext {
    pub fn new(state: &StateDir, preserve: &[RelPath]) -> Self {
        PlanContext {
            install_dir: state.install_dir().to_owned(),
            state_rel: state.relative_to_install(),
            preserve: preserve.to_vec(),
        }
    }

    fn is_preserved(&self, p: &RelPath) -> bool {
        self.preserve.iter().any(|x| p.starts_with(x))
    }

    fn check_not_state(&self, p: &RelPath) -> Result<(), PlanError> {
        match &self.state_rel {
            Some(s) if p.starts_with(s) || s.starts_with(p) => Err(PlanError::TouchesStateDir {
                path: p.clone(),
                state_dir: s.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// A planned transaction: ops in execution order, plus the owned files and directories the
/// install will have afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kind: TxnKind,
    pub from: Option<Version>,
    pub to: Option<Version>,
    /// Deletes first, then puts.
    pub ops: Vec<Op>,
    /// Directories to create after the deletes, parents first.
    pub created_dirs: Vec<RelPath>,
    /// Deletes named by the update whose path was already absent (nothing to do).
    pub absent_deletes: Vec<RelPath>,
    /// `state.json`'s `files` after the transaction.
    pub owned_files: BTreeMap<RelPath, FileRecord>,
    /// `state.json`'s `dirs` after the transaction.
    pub owned_dirs: BTreeSet<RelPath>,
    /// Preserved paths a full update writes (nothing was there), with their SHA-256.
    pub preserved_written: BTreeMap<RelPath, String>,
    /// For a rollback: the kept transaction whose backup is consumed.
    pub consumes: Option<String>,
}

impl Plan {
    /// Number of paths the plan changes.
    pub fn changes(&self) -> usize {
        self.ops.len() + self.created_dirs.len()
    }
}

/// Caches what is at each install path (by `lstat`).
struct Probe<'a> {
    root: &'a Path,
    kinds: HashMap<RelPath, Option<EntryKind>>,
}

impl<'a> Probe<'a> {
    fn new(root: &'a Path) -> Self {
        Probe {
            root,
            kinds: HashMap::new(),
        }
    }

    fn kind(&mut self, p: &RelPath) -> Result<Option<EntryKind>, PlanError> {
        if let Some(k) = self.kinds.get(p) {
            return Ok(*k);
        }
        let path = p.under(self.root);
        let k = fsutil::entry_kind(&path).map_err(|source| PlanError::Inspect { path, source })?;
        self.kinds.insert(p.clone(), k);
        Ok(k)
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symbolic link",
        EntryKind::Other => "special file",
    }
}

/// True if `p` or one of its ancestors is in `set`.
fn covered_by(p: &RelPath, set: &BTreeSet<RelPath>) -> bool {
    set.contains(p) || p.ancestors().any(|a| set.contains(&a))
}

/// What a planner wants, before it is checked against the install and put in order.
#[derive(Default)]
struct Wanted {
    /// Paths to fill from a source (file or whole directory).
    puts: BTreeMap<RelPath, (PathBuf, bool)>,
    /// Paths to remove wholesale where present.
    deletes: BTreeSet<RelPath>,
    /// Directories to remove only if everything in them goes away.
    prune_dirs: BTreeSet<RelPath>,
    /// Directories that must exist afterwards.
    needed_dirs: BTreeSet<RelPath>,
    /// Existing directories a put may replace wholesale whatever they hold.
    replaceable_dirs: BTreeSet<RelPath>,
}

struct Assembled {
    ops: Vec<Op>,
    created_dirs: Vec<RelPath>,
    absent_deletes: Vec<RelPath>,
    /// Directories of `prune_dirs` (or replaced by a put) that go away.
    removed_dirs: BTreeSet<RelPath>,
}

/// Checks `wanted` against the install and orders it into ops.
fn assemble(
    ctx: &PlanContext,
    probe: &mut Probe<'_>,
    wanted: &Wanted,
) -> Result<Assembled, PlanError> {
    let mut present_deletes = BTreeSet::new();
    let mut absent_deletes = Vec::new();
    for d in &wanted.deletes {
        if wanted.puts.contains_key(d) {
            continue;
        }
        match probe.kind(d)? {
            Some(_) => {
                present_deletes.insert(d.clone());
            }
            None => absent_deletes.push(d.clone()),
        }
    }

    // Directories that go away because everything in them does, deepest first.
    let put_parents: BTreeSet<RelPath> = wanted.puts.keys().flat_map(|p| p.ancestors()).collect();
    let mut candidates: Vec<RelPath> = Vec::new();
    for d in wanted.prune_dirs.iter().chain(wanted.puts.keys()) {
        let needed = wanted.needed_dirs.contains(d) || put_parents.contains(d);
        if !needed && probe.kind(d)? == Some(EntryKind::Dir) {
            candidates.push(d.clone());
        }
    }
    candidates.sort_by_key(|d| std::cmp::Reverse(d.as_str().matches('/').count()));
    candidates.dedup();
    let mut removable = BTreeSet::new();
    for d in candidates {
        if dir_empties(probe.root, &d, &present_deletes, &removable)? {
            removable.insert(d);
        }
    }

    let mut gone: BTreeSet<RelPath> = present_deletes.union(&removable).cloned().collect();
    let mut puts = Vec::new();
    for (p, (source, is_dir)) in &wanted.puts {
        ctx.check_not_state(p)?;
        let existing = if covered_by(p, &gone) && !gone.contains(p) {
            None
        } else {
            probe.kind(p)?
        };
        if existing == Some(EntryKind::Dir)
            && !is_dir
            && !removable.contains(p)
            && !wanted.replaceable_dirs.contains(p)
        {
            return Err(PlanError::KindConflict {
                path: p.clone(),
                existing: "directory",
                wanted: "file",
            });
        }
        puts.push(Op {
            path: p.clone(),
            is_dir: *is_dir,
            source: Some(source.clone()),
            replaces_existing: existing.is_some(),
        });
    }
    // Whatever lies at or under a put path moves with the put.
    let put_paths: BTreeSet<RelPath> = wanted.puts.keys().cloned().collect();
    gone.extend(put_paths.iter().cloned());

    let mut created = BTreeSet::new();
    let needed = wanted.needed_dirs.iter().cloned().chain(
        put_paths
            .iter()
            .flat_map(|p| p.ancestors().collect::<Vec<_>>()),
    );
    for d in needed {
        if created.contains(&d) {
            continue;
        }
        ctx.check_not_state(&d)?;
        let existing = if covered_by(&d, &gone) {
            None
        } else {
            probe.kind(&d)?
        };
        match existing {
            Some(EntryKind::Dir) => {}
            None => {
                created.insert(d);
            }
            Some(EntryKind::Symlink) => return Err(PlanError::SymlinkOnPath { path: d }),
            Some(k) => {
                return Err(PlanError::KindConflict {
                    path: d,
                    existing: kind_name(k),
                    wanted: "directory",
                });
            }
        }
    }
    for p in put_paths.iter().chain(&present_deletes).chain(&removable) {
        for a in p.ancestors() {
            if !created.contains(&a) && probe.kind(&a)? == Some(EntryKind::Symlink) {
                return Err(PlanError::SymlinkOnPath { path: a });
            }
        }
    }

    // Delete ops: the outermost gone paths, minus those a put moves anyway.
    let delete_roots: BTreeSet<RelPath> = present_deletes.union(&removable).cloned().collect();
    let mut ops = Vec::new();
    for p in &delete_roots {
        let nested = p.ancestors().any(|a| delete_roots.contains(&a));
        if nested || covered_by(p, &put_paths) {
            continue;
        }
        ctx.check_not_state(p)?;
        ops.push(Op {
            path: p.clone(),
            is_dir: probe.kind(p)? == Some(EntryKind::Dir),
            source: None,
            replaces_existing: true,
        });
    }
    ops.extend(puts);
    Ok(Assembled {
        ops,
        created_dirs: created.into_iter().collect(),
        absent_deletes,
        removed_dirs: removable,
    })
}

/// True if every entry in directory `dir` is being deleted or is itself a removable directory.
fn dir_empties(
    root: &Path,
    dir: &RelPath,
    deletes: &BTreeSet<RelPath>,
    removable: &BTreeSet<RelPath>,
) -> Result<bool, PlanError> {
    let path = dir.under(root);
    let inspect = |source| PlanError::Inspect {
        path: path.clone(),
        source,
    };
    for entry in std::fs::read_dir(&path).map_err(inspect)? {
        let entry = entry.map_err(inspect)?;
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| RelPath::new(n).ok())
        else {
            return Ok(false);
        };
        let child = dir.join(&name);
        if !deletes.contains(&child) && !removable.contains(&child) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Plans a full package: the install ends up with exactly the staged release's files, except
/// preserved paths and files molt never owned. Owned files the release drops are deleted, owned
/// directories left empty are removed. A preserved path is only written if nothing is there.
pub fn plan_full(
    ctx: &PlanContext,
    stage_dir: &Path,
    staged: &TreeListing,
    old: &InstallState,
    to: Version,
) -> Result<Plan, PlanError> {
    let mut probe = Probe::new(&ctx.install_dir);
    let mut new_dirs: BTreeSet<RelPath> = staged.dirs.clone();
    for f in staged.files.keys() {
        new_dirs.extend(f.ancestors());
    }
    if let Some(f) = staged.files.keys().find(|f| new_dirs.contains(*f)) {
        return Err(PlanError::ListingConflict { path: f.clone() });
    }

    let mut wanted = Wanted::default();
    let mut preserved_written = BTreeMap::new();
    for (f, record) in &staged.files {
        ctx.check_not_state(f)?;
        if ctx.is_preserved(f) {
            if probe.kind(f)?.is_some() {
                continue;
            }
            preserved_written.insert(f.clone(), record.sha256.clone());
        }
        wanted.puts.insert(f.clone(), (f.under(stage_dir), false));
    }
    for d in &new_dirs {
        ctx.check_not_state(d)?;
        if !(ctx.is_preserved(d) && probe.kind(d)?.is_some()) {
            wanted.needed_dirs.insert(d.clone());
        }
    }
    let untouchable = |p: &RelPath| {
        ctx.is_preserved(p) || ctx.state_rel.as_ref().is_some_and(|s| p.starts_with(s))
    };
    for f in old.files.keys() {
        if staged.files.contains_key(f) || untouchable(f) {
            continue;
        }
        // An owned file the operator replaced with a directory is no longer ours to delete.
        if probe.kind(f)? != Some(EntryKind::Dir) {
            wanted.deletes.insert(f.clone());
        }
    }
    for d in &old.dirs {
        if !new_dirs.contains(d) && !untouchable(d) {
            wanted.prune_dirs.insert(d.clone());
        }
    }

    let assembled = assemble(ctx, &mut probe, &wanted)?;

    let owned_files: BTreeMap<RelPath, FileRecord> = staged
        .files
        .iter()
        .filter(|(p, _)| !ctx.is_preserved(p))
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect();
    let mut owned_dirs: BTreeSet<RelPath> = new_dirs
        .iter()
        .filter(|d| !ctx.is_preserved(d))
        .cloned()
        .collect();
    for d in &old.dirs {
        let stays = !assembled.removed_dirs.contains(d)
            && !covered_by(d, &assembled.removed_dirs)
            && !staged.files.contains_key(d)
            && !ctx.is_preserved(d)
            && probe.kind(d)? == Some(EntryKind::Dir);
        if stays {
            owned_dirs.insert(d.clone());
        }
    }

    Ok(Plan {
        kind: TxnKind::Full,
        from: old.version.clone(),
        to: Some(to),
        ops: assembled.ops,
        created_dirs: assembled.created_dirs,
        absent_deletes: assembled.absent_deletes,
        owned_files,
        owned_dirs,
        preserved_written,
        consumes: None,
    })
}

/// Plans a patch: each replaced file or directory ends up exactly as staged (a replaced
/// directory loses what the package does not have), each deleted path is gone, nothing else
/// changes. Paths overlapping a preserved path are refused.
pub fn plan_patch(
    ctx: &PlanContext,
    stage_dir: &Path,
    staged: &TreeListing,
    operations: &Operations,
    old: &InstallState,
    to: Version,
) -> Result<Plan, PlanError> {
    let mut probe = Probe::new(&ctx.install_dir);
    check_patch_paths(ctx, operations)?;

    let mut wanted = Wanted::default();
    for f in &operations.replace.files {
        if !staged.files.contains_key(f) {
            return Err(PlanError::NotStaged { path: f.clone() });
        }
        wanted.puts.insert(f.clone(), (f.under(stage_dir), false));
        if old.dirs.contains(f) {
            wanted.replaceable_dirs.insert(f.clone());
        }
    }
    for d in &operations.replace.directories {
        let staged_here = staged.dirs.contains(d)
            || fsutil::entry_kind(&d.under(stage_dir)).ok().flatten() == Some(EntryKind::Dir);
        if !staged_here {
            return Err(PlanError::NotStaged { path: d.clone() });
        }
        match probe.kind(d)? {
            Some(k) if k != EntryKind::Dir && !old.files.contains_key(d) => {
                return Err(PlanError::KindConflict {
                    path: d.clone(),
                    existing: kind_name(k),
                    wanted: "directory",
                });
            }
            _ => {}
        }
        wanted.puts.insert(d.clone(), (d.under(stage_dir), true));
    }
    for f in &operations.delete.files {
        if probe.kind(f)? == Some(EntryKind::Dir) && !old.dirs.contains(f) {
            return Err(PlanError::KindConflict {
                path: f.clone(),
                existing: "directory",
                wanted: "deleted file",
            });
        }
        wanted.deletes.insert(f.clone());
    }
    for d in &operations.delete.directories {
        match probe.kind(d)? {
            Some(k) if k != EntryKind::Dir && !old.files.contains_key(d) => {
                return Err(PlanError::KindConflict {
                    path: d.clone(),
                    existing: kind_name(k),
                    wanted: "deleted directory",
                });
            }
            _ => {}
        }
        wanted.deletes.insert(d.clone());
    }

    let assembled = assemble(ctx, &mut probe, &wanted)?;

    // Owned afterwards: drop everything at or under a changed path, then add what was put.
    let changed: BTreeSet<RelPath> = operations
        .replace
        .iter()
        .chain(operations.delete.iter())
        .cloned()
        .collect();
    let replaced_dirs: BTreeSet<RelPath> = operations.replace.directories.iter().cloned().collect();
    let mut owned_files: BTreeMap<RelPath, FileRecord> = old
        .files
        .iter()
        .filter(|(p, _)| !covered_by(p, &changed))
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect();
    let mut owned_dirs: BTreeSet<RelPath> = old
        .dirs
        .iter()
        .filter(|d| !covered_by(d, &changed))
        .cloned()
        .collect();
    for (p, r) in &staged.files {
        if operations.replace.files.contains(p) || covered_by(p, &replaced_dirs) {
            owned_files.insert(p.clone(), r.clone());
            for a in p.ancestors().filter(|a| covered_by(a, &replaced_dirs)) {
                owned_dirs.insert(a);
            }
        }
    }
    owned_dirs.extend(
        staged
            .dirs
            .iter()
            .filter(|d| covered_by(d, &replaced_dirs))
            .cloned(),
    );
    owned_dirs.extend(replaced_dirs.iter().cloned());
    owned_dirs.extend(assembled.created_dirs.iter().cloned());

    Ok(Plan {
        kind: TxnKind::Patch,
        from: old.version.clone(),
        to: Some(to),
        ops: assembled.ops,
        created_dirs: assembled.created_dirs,
        absent_deletes: assembled.absent_deletes,
        owned_files,
        owned_dirs,
        preserved_written: BTreeMap::new(),
        consumes: None,
    })
}

/// Structural checks of a patch's operations against the state dir and the preserved paths.
fn check_patch_paths(ctx: &PlanContext, operations: &Operations) -> Result<(), PlanError> {
    #[derive(PartialEq)]
    enum Role {
        Put,
        DeleteFile,
        DeleteDir,
    }
    let mut roles: BTreeMap<&RelPath, Role> = BTreeMap::new();
    let all = operations
        .replace
        .iter()
        .map(|p| (p, Role::Put))
        .chain(
            operations
                .delete
                .files
                .iter()
                .map(|p| (p, Role::DeleteFile)),
        )
        .chain(
            operations
                .delete
                .directories
                .iter()
                .map(|p| (p, Role::DeleteDir)),
        );
    for (p, role) in all {
        ctx.check_not_state(p)?;
        if let Some(x) = ctx
            .preserve
            .iter()
            .find(|x| p.starts_with(x) || x.starts_with(p))
        {
            return Err(PlanError::TouchesPreserved {
                path: p.clone(),
                preserved: x.clone(),
            });
        }
        if let Some(prev) = roles.insert(p, role) {
            let now = &roles[p];
            let put_and_delete = (prev == Role::Put) != (*now == Role::Put);
            return Err(if put_and_delete {
                PlanError::ReplacedAndDeleted { path: p.clone() }
            } else {
                PlanError::Overlap {
                    outer: p.clone(),
                    inner: p.clone(),
                }
            });
        }
    }
    for (p, role) in &roles {
        for a in p.ancestors() {
            match roles.get(&a) {
                // A deleted file may become a directory holding new files.
                Some(Role::DeleteFile) if *role == Role::Put => {}
                Some(_) => {
                    return Err(PlanError::Overlap {
                        outer: a,
                        inner: (*p).clone(),
                    });
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// Plans the inverse of a kept transaction whose backup lies in `backup_dir`: every path that
/// had an old version gets it back, every path it created is removed (except a preserved file
/// that no longer holds what the update wrote: that is user data now), and the directories it
/// created are removed where nothing else has been put in them since.
pub(crate) fn plan_inverse(
    ctx: &PlanContext,
    intent: &super::journal::Intent,
    backup_dir: &Path,
    consumes: &str,
) -> Result<Plan, PlanError> {
    let mut probe = Probe::new(&ctx.install_dir);
    let mut wanted = Wanted::default();
    for op in &intent.ops {
        let saved = op.path.under(backup_dir);
        let saved_kind = fsutil::entry_kind(&saved).map_err(|source| PlanError::Inspect {
            path: saved.clone(),
            source,
        })?;
        match saved_kind {
            Some(k) => {
                wanted
                    .puts
                    .insert(op.path.clone(), (saved, k == EntryKind::Dir));
                // A directory the update put where a file or link was goes back whole, too.
                if k == EntryKind::Dir || (op.is_dir && op.source.is_some()) {
                    wanted.replaceable_dirs.insert(op.path.clone());
                }
            }
            None if op.source.is_some()
                && !changed_since_written(ctx, &mut probe, intent, &op.path)? =>
            {
                wanted.deletes.insert(op.path.clone());
            }
            None => {}
        }
    }
    // A directory the update created goes away only if everything in it does.
    wanted.prune_dirs = intent.created_dirs.iter().cloned().collect();
    let assembled = assemble(ctx, &mut probe, &wanted)?;
    Ok(Plan {
        kind: TxnKind::Rollback,
        from: intent.to.clone(),
        to: intent.from.clone(),
        ops: assembled.ops,
        created_dirs: assembled.created_dirs,
        absent_deletes: assembled.absent_deletes,
        owned_files: intent.old_state.files.clone(),
        owned_dirs: intent.old_state.dirs.clone(),
        preserved_written: BTreeMap::new(),
        consumes: Some(consumes.to_owned()),
    })
}

/// True if `path` is a preserved path the update wrote and it no longer holds exactly that file.
fn changed_since_written(
    ctx: &PlanContext,
    probe: &mut Probe<'_>,
    intent: &super::journal::Intent,
    path: &RelPath,
) -> Result<bool, PlanError> {
    let Some(written) = intent.preserved_written.get(path) else {
        return Ok(false);
    };
    match probe.kind(path)? {
        None => Ok(false),
        Some(EntryKind::File) => {
            let full = path.under(&ctx.install_dir);
            let now =
                sha256_file(&full).map_err(|source| PlanError::Inspect { path: full, source })?;
            Ok(&now != written)
        }
        // A link's record hashes its target (see `tree::FileRecord::symlink`).
        Some(EntryKind::Symlink) => {
            let full = path.under(&ctx.install_dir);
            let now = std::fs::read_link(&full)
                .map_err(|source| PlanError::Inspect { path: full, source })?;
            Ok(FileRecord::symlink(&now.to_string_lossy()).sha256 != *written)
        }
        Some(_) => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::PathSet;
    use std::fs;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn ctx(root: &Path) -> PlanContext {
        PlanContext {
            install_dir: root.to_owned(),
            state_rel: Some(rp(".molt")),
            preserve: vec![rp("data")],
        }
    }

    fn write(root: &Path, p: &str, body: &str) {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn full_plan_refuses_a_file_over_an_unowned_directory() {
        let d = tempfile::tempdir().unwrap();
        let (install, stage) = (d.path().join("i"), d.path().join("s"));
        write(&install, "web/user.txt", "mine");
        write(&stage, "web", "file now");
        let staged = TreeListing::scan(&stage, &[]).unwrap();
        let err = plan_full(
            &ctx(&install),
            &stage,
            &staged,
            &InstallState::default(),
            v("1.0.0"),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::KindConflict { .. }), "{err}");
    }

    #[test]
    fn full_plan_refuses_a_directory_over_an_unowned_file() {
        let d = tempfile::tempdir().unwrap();
        let (install, stage) = (d.path().join("i"), d.path().join("s"));
        write(&install, "conf", "operator file");
        write(&stage, "conf/app.yml", "x");
        let staged = TreeListing::scan(&stage, &[]).unwrap();
        let err = plan_full(
            &ctx(&install),
            &stage,
            &staged,
            &InstallState::default(),
            v("1.0.0"),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::KindConflict { .. }), "{err}");
    }

    #[test]
    fn plans_refuse_the_state_dir_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let (install, stage) = (d.path().join("i"), d.path().join("s"));
        write(&stage, ".molt/state.json", "{}");
        let staged = TreeListing::scan(&stage, &[]).unwrap();
        let err = plan_full(
            &ctx(&install),
            &stage,
            &staged,
            &InstallState::default(),
            v("1.0.0"),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::TouchesStateDir { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Security);

        fs::remove_dir_all(&stage).unwrap();
        write(&stage, "etc/x", "x");
        fs::create_dir_all(&install).unwrap();
        std::os::unix::fs::symlink("/tmp", install.join("etc")).unwrap();
        let staged = TreeListing::scan(&stage, &[]).unwrap();
        let err = plan_full(
            &ctx(&install),
            &stage,
            &staged,
            &InstallState::default(),
            v("1.0.0"),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::SymlinkOnPath { .. }), "{err}");
    }

    #[test]
    fn patch_checks_overlaps_preserve_and_stage() {
        let d = tempfile::tempdir().unwrap();
        let (install, stage) = (d.path().join("i"), d.path().join("s"));
        fs::create_dir_all(&install).unwrap();
        write(&stage, "web/a", "a");
        let staged = TreeListing::scan(&stage, &[]).unwrap();
        let old = InstallState::default();
        let plan = |replace: PathSet, delete: PathSet| {
            plan_patch(
                &ctx(&install),
                &stage,
                &staged,
                &Operations { replace, delete },
                &old,
                v("1.1.0"),
            )
        };
        let files = |v: &[&str]| PathSet {
            files: v.iter().map(|s| rp(s)).collect(),
            directories: vec![],
        };
        let dirs = |v: &[&str]| PathSet {
            files: vec![],
            directories: v.iter().map(|s| rp(s)).collect(),
        };
        assert!(matches!(
            plan(dirs(&["web"]), files(&["web"])),
            Err(PlanError::ReplacedAndDeleted { .. })
        ));
        assert!(matches!(
            plan(dirs(&["web"]), files(&["web/x"])),
            Err(PlanError::Overlap { .. })
        ));
        assert!(matches!(
            plan(files(&["missing"]), PathSet::default()),
            Err(PlanError::NotStaged { .. })
        ));
        assert!(matches!(
            plan(PathSet::default(), dirs(&["data/cache"])),
            Err(PlanError::TouchesPreserved { .. })
        ));
        let ok = plan(dirs(&["web"]), files(&["gone"])).unwrap();
        assert_eq!(ok.absent_deletes, [rp("gone")]);
        assert_eq!(ok.ops.len(), 1);
        assert!(ok.ops[0].is_dir && !ok.ops[0].replaces_existing);
        assert!(ok.owned_files.contains_key(&rp("web/a")));
        assert!(ok.owned_dirs.contains(&rp("web")));
    }
}
