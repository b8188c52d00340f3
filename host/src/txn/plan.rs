//! Planning: turn "install this patch / this full release / this kept backup" into primitive ops.
//!
//! One ownership rule holds for every plan: molt moves, replaces or deletes only what it owns
//! (the files and directories `state.json` records) and its own sources (the stage, a kept
//! backup). An entry molt does not own inside a directory being replaced or deleted stays in
//! place — the directory is then changed entry by entry instead of by one rename — and one
//! exactly where the release puts an entry of its own refuses the whole plan before anything
//! changes ([`PlanError::NotOwned`]), unless the operator adopts it (`--adopt`: it moves to a
//! backup that is never pruned automatically). Preserved paths are never written, moved or
//! deleted: whatever a release has there is skipped and reported. A plan reads the staged
//! listing, the owned-file records, one `lstat` per path involved and the entries of the
//! directories it replaces or deletes (never a scan of the whole install); it also refuses a
//! symlink on the way and any path at or around the state directory.
//!
//! Ops come out in execution order — every delete first, then the created directories (parents
//! first), then every put — so a file may turn into a directory (or back) within one update.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ExitClass;
use crate::fsutil::{self, EntryKind};
use crate::hashing::sha256_file;
use crate::relpath::{RelPath, all_ancestors};
use crate::repo::manifest::Operations;
use crate::state::{InstallState, RESERVED_STATE_DIR, StateDir, TxnKind};
use crate::tree::{FileRecord, TreeListing};
use crate::txn::{DirMode, Op, Source};
use crate::version::Version;

/// Mode of a directory whose mode the release does not say (an implicit parent on rollback).
const DEFAULT_DIR_MODE: u32 = 0o755;

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
    #[error(
        "the update needs the place of {}; nothing was changed. Keep such an entry by listing \
         it under [apply] preserve in molt.toml (the release's version is then skipped), move it \
         away, or take it over with `molt apply --adopt` (the old entry is kept in a backup \
         under the state directory's history/ until you remove it)",
        describe_conflicts(.conflicts)
    )]
    NotOwned { conflicts: Vec<Conflict> },
    #[error(
        "the package holds {path}, but .molt is reserved for molt's state directory; refusing \
         it (the publisher must remove .molt from the release tree)"
    )]
    Reserved { path: RelPath },
    #[error("the staged listing holds {path} both as a file and as a directory")]
    ListingConflict { path: RelPath },
}

impl PlanError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            PlanError::TouchesStateDir { .. } | PlanError::Reserved { .. } => ExitClass::Security,
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
    /// Operator-configured user data: never written, moved or deleted.
    pub preserve: Vec<RelPath>,
    /// `--adopt`: take over entries molt does not own where the release puts its own.
    pub adopt: bool,
}

impl PlanContext {
    pub fn new(state: &StateDir, preserve: &[RelPath]) -> Self {
        PlanContext {
            install_dir: state.install_dir().to_owned(),
            state_rel: state.relative_to_install(),
            preserve: preserve.to_vec(),
            adopt: false,
        }
    }

    fn is_preserved(&self, p: &RelPath) -> bool {
        self.preserve.iter().any(|x| p.starts_with(x))
    }

    fn check_not_state(&self, p: &RelPath) -> Result<(), PlanError> {
        let reserved = RelPath::new(RESERVED_STATE_DIR).expect("a valid name");
        if p.starts_with(&reserved) {
            return Err(PlanError::Reserved { path: p.clone() });
        }
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
    /// Written by older versions only (preserved paths are never written now); kept empty.
    pub preserved_written: BTreeMap<RelPath, String>,
    /// For a rollback: the kept transaction whose backup is consumed.
    pub consumes: Option<String>,
    /// Directory modes the transaction sets (created directories and owned ones it keeps).
    pub dir_modes: Vec<DirMode>,
    /// Topmost entries molt does not own that stay in place inside what the update replaces or
    /// deletes.
    pub kept_unowned: Vec<RelPath>,
    /// Topmost preserved paths where the release puts or deletes something: skipped.
    pub skipped_preserved: Vec<RelPath>,
    /// Entries molt did not own that `--adopt` takes over (their old version stays in the
    /// backup, which is then never pruned automatically).
    pub adopted: Vec<RelPath>,
}

impl Plan {
    /// Number of paths the plan changes.
    pub fn changes(&self) -> usize {
        self.ops.len() + self.created_dirs.len()
    }

    /// The paths the plan puts something at (what a validator is told changed).
    pub fn changed(&self) -> Vec<RelPath> {
        self.ops
            .iter()
            .filter(|o| o.source.is_some())
            .map(|o| o.path.clone())
            .collect()
    }

    /// The paths the plan deletes.
    pub fn removed(&self) -> Vec<RelPath> {
        self.ops
            .iter()
            .filter(|o| o.source.is_none())
            .map(|o| o.path.clone())
            .collect()
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

/// What a planner wants, before it is checked against the install and put in order.
#[derive(Default)]
struct Wanted {
    /// Paths to fill from the same path below the planner's `sources` (a file, or with `true`
    /// a whole directory).
    puts: BTreeMap<RelPath, bool>,
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
    (wanted, sources): (&Wanted, &Arc<Path>),
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
    let put_parents = all_ancestors(wanted.puts.keys());
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
    for (p, is_dir) in &wanted.puts {
        ctx.check_not_state(p)?;
        let existing = if p.is_at_or_under(|a| gone.contains(a)) && !gone.contains(p) {
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
            source: Some(Source::under(sources, p)),
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
        let existing = if d.is_at_or_under(|a| gone.contains(a)) {
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
        if nested || p.is_at_or_under(|a| put_paths.contains(a)) {
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

/// One entry molt does not own, where the release needs to put something of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub path: RelPath,
    /// What is there now ("file", "directory", …).
    pub existing: &'static str,
    /// What the release puts there.
    pub wanted: &'static str,
    /// For an owned directory that cannot be replaced: the entry in it molt does not own.
    pub holding: Option<RelPath>,
}

fn describe_conflicts(conflicts: &[Conflict]) -> String {
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| match &c.holding {
            Some(h) => format!(
                "{} (a directory holding {h}, which molt does not own; the release puts a {} \
                 there)",
                c.path, c.wanted
            ),
            None => format!(
                "{} (a {} molt does not own; the release puts a {} there)",
                c.path, c.existing, c.wanted
            ),
        })
        .collect();
    list.join(", ")
}

/// Builds the ops of one plan from "put this source here" and "delete what molt owns here",
/// applying the ownership rule: an entry molt does not own (not in `state.json`) is never moved,
/// replaced or deleted. Inside a directory being replaced or deleted it stays in place; exactly
/// where the release puts an entry of its own it is a [`Conflict`] (or, with `--adopt`, taken
/// over). Preserved paths are skipped wherever they appear.
struct Planner<'a> {
    ctx: &'a PlanContext,
    probe: Probe<'a>,
    /// What molt owns now.
    owned: &'a InstallState,
    /// Where the release's tree is staged (directory modes of implicit parents come from it).
    stage: Option<&'a Path>,
    /// Where every put takes its entry from, at the put's own path: the stage, or for a
    /// rollback the kept backup.
    sources: Arc<Path>,
    wanted: Wanted,
    conflicts: Vec<Conflict>,
    kept: BTreeSet<RelPath>,
    skipped: BTreeSet<RelPath>,
    adopted: BTreeSet<RelPath>,
    /// The mode each directory the release names should have.
    modes: BTreeMap<RelPath, u32>,
}

fn mode_of(path: &Path) -> Result<u32, PlanError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .map_err(|source| PlanError::Inspect {
            path: path.to_owned(),
            source,
        })
}

/// The entries of directory `path`: names that are valid path components, with their kind.
/// Other names are left out (nothing can address them, so nothing moves them).
fn children(path: &Path) -> Result<Vec<(RelPath, EntryKind)>, PlanError> {
    let inspect = |source| PlanError::Inspect {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(inspect)? {
        let entry = entry.map_err(inspect)?;
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| RelPath::new(n).ok())
        else {
            continue;
        };
        let kind = EntryKind::from(entry.file_type().map_err(inspect)?);
        out.push((name, kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl<'a> Planner<'a> {
    fn new(
        ctx: &'a PlanContext,
        owned: &'a InstallState,
        stage: Option<&'a Path>,
        sources: &Path,
    ) -> Self {
        Planner {
            ctx,
            probe: Probe::new(&ctx.install_dir),
            owned,
            stage,
            sources: Arc::from(sources),
            wanted: Wanted::default(),
            conflicts: Vec::new(),
            kept: BTreeSet::new(),
            skipped: BTreeSet::new(),
            adopted: BTreeSet::new(),
            modes: BTreeMap::new(),
        }
    }

    /// A preserved path lies at or below `p`.
    fn holds_preserved(&self, p: &RelPath) -> bool {
        self.ctx.preserve.iter().any(|x| x.starts_with(p))
    }

    fn is_state(&self, p: &RelPath) -> bool {
        self.ctx.state_rel.as_ref() == Some(p)
    }

    /// The unowned entry at `p` is in the release's way: take it over with `--adopt` (it moves
    /// to the backup), or record the conflict. Returns whether it was adopted.
    fn in_the_way(&mut self, p: &RelPath, existing: EntryKind, wanted: &'static str) -> bool {
        if self.ctx.adopt && existing != EntryKind::Symlink {
            self.adopted.insert(p.clone());
            return true;
        }
        self.conflicts.push(Conflict {
            path: p.clone(),
            existing: kind_name(existing),
            wanted,
            holding: None,
        });
        false
    }

    /// Records the modes of `p`'s not-yet-known ancestors from the stage.
    fn parent_modes(&mut self, p: &RelPath) -> Result<(), PlanError> {
        let Some(stage) = self.stage else {
            return Ok(());
        };
        for a in p.ancestors() {
            if self.modes.contains_key(&a) {
                break;
            }
            let src = a.under(stage);
            if fsutil::entry_kind(&src).ok().flatten() == Some(EntryKind::Dir) {
                self.modes.insert(a, mode_of(&src)?);
            }
        }
        Ok(())
    }

    /// True if the entry at `p` is what `src` is (nothing is lost by replacing it): a regular file
    /// with exactly its bytes, or a link with exactly its target. Links are never followed.
    fn same_file(&self, p: &RelPath, src: &Path) -> Result<bool, PlanError> {
        let here = p.under(&self.ctx.install_dir);
        let (a, b) = (
            std::fs::symlink_metadata(&here),
            std::fs::symlink_metadata(src),
        );
        let (Ok(a), Ok(b)) = (a, b) else {
            return Ok(false);
        };
        if a.is_symlink() || b.is_symlink() {
            let target = |path: &Path| std::fs::read_link(path).ok();
            return Ok(a.is_symlink() && b.is_symlink() && target(&here) == target(src));
        }
        if !a.is_file() || !b.is_file() || a.len() != b.len() {
            return Ok(false);
        }
        let hash = |path: &Path| {
            sha256_file(path).map_err(|source| PlanError::Inspect {
                path: path.to_owned(),
                source,
            })
        };
        Ok(hash(&here)? == hash(src)?)
    }

    /// Puts the file at `p` below the sources at `p`.
    fn put_file(&mut self, p: &RelPath) -> Result<(), PlanError> {
        let src = p.under(&self.sources);
        self.ctx.check_not_state(p)?;
        let existing = self.probe.kind(p)?;
        if self.ctx.is_preserved(p) || (self.holds_preserved(p) && existing == Some(EntryKind::Dir))
        {
            self.skipped.insert(p.clone());
            return Ok(());
        }
        match existing {
            None => {}
            // Replacing an owned file or link, or one that is exactly the new one, loses nothing.
            Some(EntryKind::File | EntryKind::Symlink)
                if self.owned.files.contains_key(p) || self.same_file(p, &src)? => {}
            Some(EntryKind::Dir) => {
                let (empties, kept) = if self.owned.dirs.contains(p) {
                    self.delete_tree(p)?
                } else {
                    (false, vec![p.clone()])
                };
                if !empties {
                    if self.in_the_way(p, EntryKind::Dir, "file") {
                        self.wanted.replaceable_dirs.insert(p.clone());
                    } else if let Some(c) = self.conflicts.last_mut() {
                        // Name what makes the directory impossible to replace.
                        c.holding = kept.into_iter().find(|k| k != p);
                    }
                }
            }
            Some(k) => {
                self.in_the_way(p, k, "file");
            }
        }
        self.parent_modes(p)?;
        self.wanted.puts.insert(p.clone(), false);
        Ok(())
    }

    /// Puts the directory tree at `p` below the sources at `p`: as one rename where nothing is
    /// there, otherwise entry by entry, so that what molt does not own inside `p` stays in place.
    fn put_tree(&mut self, p: &RelPath) -> Result<(), PlanError> {
        let src = p.under(&self.sources);
        self.ctx.check_not_state(p)?;
        if self.ctx.is_preserved(p) {
            self.skipped.insert(p.clone());
            return Ok(());
        }
        let src_mode = mode_of(&src)?;
        self.parent_modes(p)?;
        let existing = self.probe.kind(p)?;
        match existing {
            None if !self.holds_preserved(p) => {
                self.wanted.puts.insert(p.clone(), true);
                return Ok(());
            }
            None => {}
            Some(EntryKind::Dir) => {
                let here = p.under(&self.ctx.install_dir);
                for (name, kind) in children(&here)? {
                    let child = p.join(&name);
                    self.probe.kinds.insert(child.clone(), Some(kind));
                    if fsutil::entry_kind(&name.under(&src))
                        .ok()
                        .flatten()
                        .is_none()
                    {
                        let (_, kept) = self.delete_tree(&child)?;
                        self.kept.extend(kept);
                    }
                }
            }
            // A link molt did not put there may lead anywhere: never replaced by a directory.
            Some(EntryKind::Symlink) if !self.owned.files.contains_key(p) => {
                return Err(PlanError::SymlinkOnPath { path: p.clone() });
            }
            // An owned file or link where the release has a directory.
            Some(k) => {
                if !self.owned.files.contains_key(p) && !self.in_the_way(p, k, "directory") {
                    return Ok(());
                }
                if !self.holds_preserved(p) {
                    self.wanted.puts.insert(p.clone(), true);
                    return Ok(());
                }
                self.wanted.deletes.insert(p.clone());
            }
        }
        self.wanted.needed_dirs.insert(p.clone());
        self.modes.insert(p.clone(), src_mode);
        for (name, kind) in children(&src)? {
            let child = p.join(&name);
            match kind {
                EntryKind::Dir => self.put_tree(&child)?,
                _ => self.put_file(&child)?,
            }
        }
        Ok(())
    }

    /// Deletes what molt owns at and under `p`. Returns whether `p` is gone afterwards, and the
    /// topmost entries that stay because molt does not own them.
    fn delete_tree(&mut self, p: &RelPath) -> Result<(bool, Vec<RelPath>), PlanError> {
        if self.is_state(p) {
            return Ok((false, Vec::new()));
        }
        let kind = self.probe.kind(p)?;
        if kind.is_some() && self.ctx.is_preserved(p) {
            self.skipped.insert(p.clone());
            return Ok((false, Vec::new()));
        }
        match kind {
            None => {
                // Nothing there: recorded as an absent delete.
                self.wanted.deletes.insert(p.clone());
                Ok((true, Vec::new()))
            }
            Some(EntryKind::Dir) => {
                let before = self.wanted.deletes.len() + self.wanted.prune_dirs.len();
                let mut empties = true;
                let mut kept = Vec::new();
                let here = p.under(&self.ctx.install_dir);
                for (name, kind) in children(&here)? {
                    let child = p.join(&name);
                    self.probe.kinds.insert(child.clone(), Some(kind));
                    let (gone, k) = self.delete_tree(&child)?;
                    empties &= gone;
                    kept.extend(k);
                }
                if self.owned.dirs.contains(p) {
                    self.wanted.prune_dirs.insert(p.clone());
                    Ok((empties, kept))
                } else if before == self.wanted.deletes.len() + self.wanted.prune_dirs.len() {
                    // Nothing molt owns in here: the directory is the operator's.
                    Ok((false, vec![p.clone()]))
                } else {
                    Ok((false, kept))
                }
            }
            Some(_) if self.owned.files.contains_key(p) => {
                self.wanted.deletes.insert(p.clone());
                Ok((true, Vec::new()))
            }
            Some(_) => Ok((false, vec![p.clone()])),
        }
    }

    /// Checks the wanted changes against the install and orders them into a plan.
    fn finish(
        mut self,
        kind: TxnKind,
        from: Option<Version>,
        to: Option<Version>,
    ) -> Result<(Plan, Probe<'a>, BTreeSet<RelPath>), PlanError> {
        if !self.conflicts.is_empty() {
            return Err(PlanError::NotOwned {
                conflicts: self.conflicts,
            });
        }
        let assembled = assemble(self.ctx, &mut self.probe, (&self.wanted, &self.sources))?;
        let mut dir_modes = Vec::new();
        let created: BTreeSet<&RelPath> = assembled.created_dirs.iter().collect();
        for d in &assembled.created_dirs {
            dir_modes.push(DirMode {
                path: d.clone(),
                mode: self.modes.get(d).copied().unwrap_or(DEFAULT_DIR_MODE),
                old: None,
            });
        }
        for (d, mode) in &self.modes {
            if created.contains(d)
                || !self.owned.dirs.contains(d)
                || self.probe.kind(d)? != Some(EntryKind::Dir)
            {
                continue;
            }
            let now = mode_of(&d.under(&self.ctx.install_dir))?;
            if now != *mode {
                dir_modes.push(DirMode {
                    path: d.clone(),
                    mode: *mode,
                    old: Some(now),
                });
            }
        }
        let topmost = |set: &BTreeSet<RelPath>| -> Vec<RelPath> {
            set.iter()
                .filter(|p| !p.ancestors().any(|a| set.contains(&a)))
                .cloned()
                .collect()
        };
        let plan = Plan {
            kind,
            from,
            to,
            ops: assembled.ops,
            created_dirs: assembled.created_dirs,
            absent_deletes: assembled.absent_deletes,
            owned_files: BTreeMap::new(),
            owned_dirs: BTreeSet::new(),
            preserved_written: BTreeMap::new(),
            consumes: None,
            dir_modes,
            kept_unowned: topmost(&self.kept),
            skipped_preserved: topmost(&self.skipped),
            adopted: self.adopted.into_iter().collect(),
        };
        Ok((plan, self.probe, assembled.removed_dirs))
    }
}

/// Plans a full package: the install ends up with exactly the staged release's files, except
/// preserved paths (skipped, reported) and entries molt never owned (kept; refused where the
/// release puts its own). Owned files the release drops are deleted, owned directories left
/// empty are removed. A directory of the release that the install lacks goes in as one rename
/// of its staged tree.
pub fn plan_full(
    ctx: &PlanContext,
    stage_dir: &Path,
    staged: TreeListing,
    old: &InstallState,
    to: Version,
) -> Result<Plan, PlanError> {
    let mut new_dirs: BTreeSet<RelPath> = staged.dirs.clone();
    for f in staged.files.keys() {
        new_dirs.extend(f.ancestors());
    }
    if let Some(f) = staged.files.keys().find(|f| new_dirs.contains(*f)) {
        return Err(PlanError::ListingConflict { path: f.clone() });
    }

    let mut pl = Planner::new(ctx, old, Some(stage_dir), stage_dir);
    // A directory of the release that is not in the install at all goes in as one rename of
    // its staged tree (a fresh install is a handful of renames, not one per file); nothing can
    // be lost there, and nothing below it needs a plan of its own.
    let mut whole: BTreeSet<RelPath> = BTreeSet::new();
    for d in &new_dirs {
        if d.ancestors().any(|a| whole.contains(&a)) {
            continue;
        }
        ctx.check_not_state(d)?;
        if ctx.is_preserved(d) {
            pl.skipped.insert(d.clone());
            continue;
        }
        if !pl.holds_preserved(d) && pl.probe.kind(d)?.is_none() {
            pl.wanted.puts.insert(d.clone(), true);
            whole.insert(d.clone());
            continue;
        }
        pl.modes.insert(d.clone(), mode_of(&d.under(stage_dir))?);
        pl.wanted.needed_dirs.insert(d.clone());
        match pl.probe.kind(d)? {
            Some(EntryKind::Dir) | None => {}
            // An owned file or link goes (it is not in the new listing); a foreign link is
            // refused below, as a link on the path of a put.
            Some(_) if old.files.contains_key(d) => {}
            Some(EntryKind::Symlink) => {}
            Some(k) => {
                if pl.in_the_way(d, k, "directory") {
                    pl.wanted.deletes.insert(d.clone());
                }
            }
        }
    }
    for f in staged.files.keys() {
        if !f.ancestors().any(|a| whole.contains(&a)) {
            pl.put_file(f)?;
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
        if pl.probe.kind(f)? != Some(EntryKind::Dir) {
            pl.wanted.deletes.insert(f.clone());
        }
    }
    let dropped: BTreeSet<RelPath> = old
        .dirs
        .iter()
        .filter(|d| !new_dirs.contains(*d) && !untouchable(d))
        .cloned()
        .collect();
    for d in &dropped {
        if !d.ancestors().any(|a| dropped.contains(&a)) {
            let (_, kept) = pl.delete_tree(d)?;
            pl.kept.extend(kept);
        }
    }

    let skipped = pl.skipped.clone();
    let (mut plan, mut probe, removed_dirs) =
        pl.finish(TxnKind::Full, old.version.clone(), Some(to))?;
    let kept_out = |p: &RelPath| ctx.is_preserved(p) || p.is_at_or_under(|a| skipped.contains(a));
    plan.owned_dirs = new_dirs.iter().filter(|d| !kept_out(d)).cloned().collect();
    for d in &old.dirs {
        let stays = !removed_dirs.contains(d)
            && !d.is_at_or_under(|a| removed_dirs.contains(a))
            && !staged.files.contains_key(d)
            && !ctx.is_preserved(d)
            && probe.kind(d)? == Some(EntryKind::Dir);
        if stays {
            plan.owned_dirs.insert(d.clone());
        }
    }
    // The staged records become the owned ones: moved, not copied.
    plan.owned_files = staged
        .files
        .into_iter()
        .filter(|(p, _)| !kept_out(p))
        .collect();
    Ok(plan)
}

/// Plans a patch: each replaced file or directory ends up as staged (a replaced directory loses
/// what molt owned there that the package does not have, and keeps what molt does not own),
/// each deleted path molt owns is gone, nothing else changes. Preserved paths are skipped.
pub(crate) fn plan_patch(
    ctx: &PlanContext,
    stage_dir: &Path,
    staged: TreeListing,
    operations: &Operations,
    old: &InstallState,
    to: Version,
) -> Result<Plan, PlanError> {
    check_patch_paths(ctx, operations)?;
    let mut pl = Planner::new(ctx, old, Some(stage_dir), stage_dir);
    for f in &operations.replace.files {
        if !staged.files.contains_key(f) {
            return Err(PlanError::NotStaged { path: f.clone() });
        }
        pl.put_file(f)?;
    }
    for d in &operations.replace.directories {
        let staged_here = staged.dirs.contains(d)
            || fsutil::entry_kind(&d.under(stage_dir)).ok().flatten() == Some(EntryKind::Dir);
        if !staged_here {
            return Err(PlanError::NotStaged { path: d.clone() });
        }
        pl.put_tree(d)?;
    }
    for p in operations.delete.iter() {
        let (_, kept) = pl.delete_tree(p)?;
        pl.kept.extend(kept);
    }
    let skipped = pl.skipped.clone();
    let (mut plan, _, _) = pl.finish(TxnKind::Patch, old.version.clone(), Some(to))?;

    // Owned afterwards: drop everything at or under a changed path, then add what was put.
    let changed: BTreeSet<RelPath> = operations
        .replace
        .iter()
        .chain(operations.delete.iter())
        .cloned()
        .collect();
    let replaced_dirs: BTreeSet<RelPath> = operations.replace.directories.iter().cloned().collect();
    // A set, not the operations' list: looking each staged file up in the list was quadratic
    // (at 50,000 replaced files, a billion path comparisons: a third of a patch apply's time).
    let replaced_files: HashSet<&RelPath> = operations.replace.files.iter().collect();
    let kept_out = |p: &RelPath| ctx.is_preserved(p) || p.is_at_or_under(|a| skipped.contains(a));
    plan.owned_files = old
        .files
        .iter()
        .filter(|(p, _)| !p.is_at_or_under(|a| changed.contains(a)))
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect();
    plan.owned_dirs = old
        .dirs
        .iter()
        .filter(|d| !d.is_at_or_under(|a| changed.contains(a)))
        .cloned()
        .collect();
    for (p, r) in staged.files {
        if kept_out(&p) {
            continue;
        }
        if replaced_files.contains(&p) || p.is_at_or_under(|a| replaced_dirs.contains(a)) {
            for a in p
                .ancestors()
                .filter(|a| a.is_at_or_under(|a| replaced_dirs.contains(a)))
            {
                plan.owned_dirs.insert(a);
            }
            plan.owned_files.insert(p, r);
        }
    }
    plan.owned_dirs.extend(
        staged
            .dirs
            .iter()
            .filter(|d| d.is_at_or_under(|a| replaced_dirs.contains(a)) && !kept_out(d))
            .cloned(),
    );
    plan.owned_dirs
        .extend(replaced_dirs.iter().filter(|d| !kept_out(d)).cloned());
    plan.owned_dirs.extend(plan.created_dirs.iter().cloned());
    Ok(plan)
}

/// A patch's operations against the state dir (their consistency is [`Operations`]' own).
fn check_patch_paths(ctx: &PlanContext, operations: &Operations) -> Result<(), PlanError> {
    for p in operations.replace.iter().chain(operations.delete.iter()) {
        ctx.check_not_state(p)?;
    }
    Ok(())
}

/// Plans the inverse of a kept transaction whose backup lies in `backup_dir`, under the same
/// ownership rule as an update (`current` is what molt owns now): every path that had an old
/// version gets it back, every path the update created is removed, the directories it created
/// are removed where nothing else has been put in them since, and directory modes it changed
/// are set back. What molt does not own — files added since, preserved paths — stays.
pub(crate) fn plan_inverse(
    ctx: &PlanContext,
    intent: &super::journal::Intent,
    current: &InstallState,
    backup_dir: &Path,
    consumes: &str,
) -> Result<Plan, PlanError> {
    let mut pl = Planner::new(ctx, current, None, backup_dir);
    for op in &intent.ops {
        let saved = op.path.under(backup_dir);
        let saved_kind = fsutil::entry_kind(&saved).map_err(|source| PlanError::Inspect {
            path: saved.clone(),
            source,
        })?;
        match saved_kind {
            Some(EntryKind::Dir) => pl.put_tree(&op.path)?,
            Some(_) => pl.put_file(&op.path)?,
            None if op.source.is_some()
                && !changed_since_written(ctx, &mut pl.probe, intent, &op.path)? =>
            {
                let (_, kept) = pl.delete_tree(&op.path)?;
                pl.kept.extend(kept);
            }
            None => {}
        }
    }
    for m in &intent.dir_modes {
        if let Some(old) = m.old {
            pl.modes.insert(m.path.clone(), old);
        }
    }
    // A directory the update created goes away only if everything in it does.
    pl.wanted
        .prune_dirs
        .extend(intent.created_dirs.iter().cloned());
    let (mut plan, _, _) = pl.finish(TxnKind::Rollback, intent.to.clone(), intent.from.clone())?;
    plan.owned_files = intent
        .old_state
        .files
        .iter()
        .filter(|(p, _)| !ctx.is_preserved(p))
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect();
    plan.owned_dirs = intent.old_state.dirs.clone();
    plan.consumes = Some(consumes.to_owned());
    Ok(plan)
}

/// True if `path` is a preserved path an older molt wrote and it no longer holds exactly that
/// file (current molt never writes a preserved path).
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
            adopt: false,
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

    /// Plans the full package staged at `stage` for an install molt owns nothing of.
    fn plan_fresh(install: &Path, stage: &Path) -> Result<Plan, PlanError> {
        let staged = TreeListing::scan(stage, &[]).unwrap();
        plan_full(
            &ctx(install),
            stage,
            staged,
            &InstallState::default(),
            v("1.0.0"),
        )
    }

    #[test]
    fn full_plan_refuses_a_file_over_an_unowned_directory() {
        let d = tempfile::tempdir().unwrap();
        let (install, stage) = (d.path().join("i"), d.path().join("s"));
        write(&install, "web/user.txt", "mine");
        write(&stage, "web", "file now");
        let err = plan_fresh(&install, &stage).unwrap_err();
        assert!(matches!(err, PlanError::NotOwned { .. }), "{err}");
    }

    #[test]
    fn full_plan_refuses_a_directory_over_an_unowned_file() {
        let d = tempfile::tempdir().unwrap();
        let (install, stage) = (d.path().join("i"), d.path().join("s"));
        write(&install, "conf", "operator file");
        write(&stage, "conf/app.yml", "x");
        let err = plan_fresh(&install, &stage).unwrap_err();
        assert!(matches!(err, PlanError::NotOwned { .. }), "{err}");
    }

    #[test]
    fn full_plan_moves_a_directory_missing_from_the_install_as_one_tree() {
        let d = tempfile::tempdir().unwrap();
        let (install, stage) = (d.path().join("i"), d.path().join("s"));
        for p in [
            "lib/a/x.so",
            "lib/a/b/y.so",
            "lib/z.so",
            "bin/tool",
            "README",
        ] {
            write(&stage, p, p);
        }
        write(&install, "lib/operator.conf", "mine");
        let plan = plan_fresh(&install, &stage).unwrap();
        // `lib` exists (it holds an operator's file): its entries go in one by one; `lib/a`
        // and `bin` do not: one rename each.
        let ops: Vec<(&str, bool)> = plan
            .ops
            .iter()
            .map(|o| (o.path.as_str(), o.is_dir))
            .collect();
        assert_eq!(
            ops,
            [
                ("README", false),
                ("bin", true),
                ("lib/a", true),
                ("lib/z.so", false)
            ]
        );
        assert!(plan.created_dirs.is_empty(), "{:?}", plan.created_dirs);
        assert_eq!(plan.owned_files.len(), 5);
        let dirs: Vec<&str> = plan.owned_dirs.iter().map(RelPath::as_str).collect();
        assert_eq!(dirs, ["bin", "lib", "lib/a", "lib/a/b"]);
    }

    #[test]
    fn plans_refuse_the_state_dir_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let (install, stage) = (d.path().join("i"), d.path().join("s"));
        write(&stage, ".molt/state.json", "{}");
        let staged = TreeListing::scan(&stage, &[]).unwrap();
        let err = plan_fresh(&install, &stage).unwrap_err();
        assert!(matches!(err, PlanError::Reserved { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Security);
        // `.molt` stays reserved when the state dir is elsewhere.
        let elsewhere = PlanContext {
            state_rel: None,
            ..ctx(&install)
        };
        let err = plan_full(
            &elsewhere,
            &stage,
            staged.clone(),
            &InstallState::default(),
            v("1.0.0"),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::Reserved { .. }), "{err}");

        fs::remove_dir_all(&stage).unwrap();
        write(&stage, "etc/x", "x");
        fs::create_dir_all(&install).unwrap();
        std::os::unix::fs::symlink("/tmp", install.join("etc")).unwrap();
        let err = plan_fresh(&install, &stage).unwrap_err();
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
                staged.clone(),
                &Operations::new(replace, delete).unwrap(),
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
            plan(files(&["missing"]), PathSet::default()),
            Err(PlanError::NotStaged { .. })
        ));
        // A preserved path is skipped, never a refusal.
        assert!(
            plan(PathSet::default(), dirs(&["data/cache"]))
                .unwrap()
                .ops
                .is_empty()
        );
        let ok = plan(dirs(&["web"]), files(&["gone"])).unwrap();
        assert_eq!(ok.absent_deletes, [rp("gone")]);
        assert_eq!(ok.ops.len(), 1);
        assert!(ok.ops[0].is_dir && !ok.ops[0].replaces_existing);
        assert!(ok.owned_files.contains_key(&rp("web/a")));
        assert!(ok.owned_dirs.contains(&rp("web")));
    }
}
