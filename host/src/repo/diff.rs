//! The patch operations that turn one release tree into another.
//!
//! Given the listings of the old and the new tree, [`diff_trees`] names the paths a patch must
//! replace (shipped in the patch package) and delete, so that applying the operations to the old
//! tree gives exactly the new one. The rules, in order:
//!
//! 1. A file is *changed* when its SHA-256, size or mode differ; *new* when only the new tree
//!    has it; *removed* when only the old tree has it. A symbolic link is a file here (see
//!    `tree`): a changed target, or a file that became a link or back, is a change.
//! 2. A directory that only the new tree has goes whole into `replace.directories` (only the
//!    topmost one of a new subtree). This covers new directories of new files and new empty
//!    directories, which must be created too.
//! 3. A directory both trees have goes whole into `replace.directories` (topmost only) when
//!    **nothing in its subtree is unchanged and something in it was removed**: the package then
//!    ships exactly what listing the files would ship, and the removals need no operations of
//!    their own. Otherwise its changes are listed one by one (rules 4 and 5).
//! 4. Every other changed or new file goes into `replace.files`. A path whose type changed
//!    (file ↔ directory) is replaced, never deleted: replacing moves the old entry away.
//! 5. Every other path only the old tree has is deleted, topmost only: a removed directory goes
//!    into `delete.directories` with all it held, a removed file into `delete.files`.
//!
//! So no path is both replaced and deleted, and nothing replaced lies inside a replaced
//! directory. Directory permission changes are not seen: tree listings record file modes only.

use std::collections::BTreeSet;

use crate::relpath::{RelPath, all_ancestors};
use crate::repo::manifest::{Operations, PathSet};
use crate::tree::TreeListing;

/// The operations that turn `old` into `new` (see the module docs for the rules).
pub(crate) fn diff_trees(old: &TreeListing, new: &TreeListing) -> Operations {
    let unchanged: BTreeSet<&RelPath> = new
        .files
        .iter()
        .filter(|(path, record)| old.files.get(*path) == Some(*record))
        .map(|(path, _)| path)
        .collect();

    // Directories with an unchanged file below them, and directories that lose a file or a
    // directory below them: each a set lookup per directory instead of a scan of every path.
    let keeps_something = all_ancestors(unchanged.iter().copied());
    let lost = old
        .files
        .keys()
        .filter(|p| !new.files.contains_key(*p))
        .chain(old.dirs.iter().filter(|p| !new.dirs.contains(*p)));
    let loses_something = all_ancestors(lost);

    let mut replaced_dirs: BTreeSet<RelPath> = BTreeSet::new();
    for dir in &new.dirs {
        if dir.is_at_or_under(|a| replaced_dirs.contains(a)) {
            continue;
        }
        let replace_whole = !old.dirs.contains(dir)
            || (!keeps_something.contains(dir) && loses_something.contains(dir));
        if replace_whole {
            replaced_dirs.insert(dir.clone());
        }
    }
    let under_replaced_dir = |path: &RelPath| path.is_at_or_under(|a| replaced_dirs.contains(a));

    let replaced_files: BTreeSet<RelPath> = new
        .files
        .keys()
        .filter(|path| !unchanged.contains(path) && !under_replaced_dir(path))
        .cloned()
        .collect();
    let under_replaced = |path: &RelPath| {
        under_replaced_dir(path) || path.is_at_or_under(|a| replaced_files.contains(a))
    };

    let in_new = |path: &RelPath| new.dirs.contains(path) || new.files.contains_key(path);
    let parent_kept = |path: &RelPath| path.parent().is_none_or(|p| new.dirs.contains(&p));
    let removed = |path: &&RelPath| !in_new(path) && parent_kept(path) && !under_replaced(path);
    let deleted_dirs = old.dirs.iter().filter(removed).cloned().collect();
    let deleted_files = old.files.keys().filter(removed).cloned().collect();

    Operations::new(
        PathSet {
            files: replaced_files.into_iter().collect(),
            directories: replaced_dirs.into_iter().collect(),
        },
        PathSet {
            files: deleted_files,
            directories: deleted_dirs,
        },
    )
    .expect("the diff's paths are disjoint by construction (see the module docs)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::rp as rel;
    use crate::tree::FileRecord;

    /// A listing from `path=content[:mode]` entries (a trailing `/` marks a directory,
    /// `path=>target` a symbolic link); parent directories are added automatically.
    fn listing(entries: &[&str]) -> TreeListing {
        let mut l = TreeListing::default();
        for entry in entries {
            if let Some(dir) = entry.strip_suffix('/') {
                let dir = rel(dir);
                l.dirs.extend(dir.ancestors());
                l.dirs.insert(dir);
                continue;
            }
            let (path, content) = entry.split_once('=').unwrap();
            let (content, mode) = match content.split_once(':') {
                Some((c, m)) => (c, u32::from_str_radix(m, 8).unwrap()),
                None => (content, 0o644),
            };
            let path = rel(path);
            l.dirs.extend(path.ancestors());
            let record = match content.strip_prefix('>') {
                Some(target) => FileRecord::symlink(target),
                None => FileRecord::regular(
                    crate::hashing::Sha256Digest::of(content.as_bytes()),
                    content.len() as u64,
                    mode,
                ),
            };
            l.files.insert(path, record);
        }
        l
    }

    /// Applies `ops` to `old` the way a client does, taking replaced content from `new`.
    fn apply(old: &TreeListing, new: &TreeListing, ops: &Operations) -> TreeListing {
        let mut out = old.clone();
        let remove = |out: &mut TreeListing, p: &RelPath| {
            out.files.retain(|f, _| !f.starts_with(p));
            out.dirs.retain(|d| !d.starts_with(p));
        };
        for p in ops.delete.iter() {
            assert!(in_tree(old, p), "deleting {p}, which the old tree lacks");
            remove(&mut out, p);
        }
        for f in &ops.replace.files {
            remove(&mut out, f);
            out.files.insert(f.clone(), new.files[f].clone());
        }
        for d in &ops.replace.directories {
            remove(&mut out, d);
            out.dirs
                .extend(new.dirs.iter().filter(|x| x.starts_with(d)).cloned());
            out.files.extend(
                new.files
                    .iter()
                    .filter(|(x, _)| x.starts_with(d))
                    .map(|(x, r)| (x.clone(), r.clone())),
            );
        }
        for p in ops.replace.iter() {
            for a in p.ancestors() {
                assert!(out.dirs.contains(&a), "{p} replaced below missing {a}");
            }
        }
        out
    }

    fn in_tree(l: &TreeListing, p: &RelPath) -> bool {
        l.dirs.contains(p) || l.files.contains_key(p)
    }

    fn check_round_trip(old: &TreeListing, new: &TreeListing) -> Operations {
        let ops = diff_trees(old, new);
        let all: Vec<_> = ops.replace.iter().chain(ops.delete.iter()).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(
                    !a.starts_with(b) && !b.starts_with(a),
                    "{a} and {b} overlap in {ops:?}"
                );
            }
        }
        assert_eq!(&apply(old, new, &ops), new, "ops {ops:?}");
        ops
    }

    fn paths(v: &[RelPath]) -> Vec<&str> {
        v.iter().map(RelPath::as_str).collect()
    }

    #[test]
    fn identical_trees_need_nothing() {
        let t = listing(&["bin/app=1", "empty/"]);
        let ops = check_round_trip(&t, &t);
        assert_eq!(ops, Operations::default());
    }

    #[test]
    fn changed_new_and_removed_files_are_listed_one_by_one() {
        let old = listing(&["bin/app=1", "bin/tool=1", "conf/a.yml=1", "conf/old.yml=1"]);
        let new = listing(&["bin/app=2", "bin/tool=1", "conf/a.yml=1", "conf/b.yml=1"]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(paths(&ops.replace.files), ["bin/app", "conf/b.yml"]);
        assert!(ops.replace.directories.is_empty());
        assert_eq!(paths(&ops.delete.files), ["conf/old.yml"]);
        assert!(ops.delete.directories.is_empty());
    }

    #[test]
    fn a_mode_change_is_a_change() {
        let old = listing(&["bin/app=1:644", "bin/x=1"]);
        let new = listing(&["bin/app=1:755", "bin/x=1"]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(paths(&ops.replace.files), ["bin/app"]);
    }

    #[test]
    fn a_directory_that_keeps_nothing_and_loses_files_is_replaced_whole() {
        let old = listing(&["web/a.css=1", "web/b.css=1", "web/img/x.png=1", "keep=1"]);
        let new = listing(&["web/a.css=2", "web/c.css=1", "keep=1"]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(paths(&ops.replace.directories), ["web"]);
        assert!(ops.replace.files.is_empty());
        assert!(ops.delete.is_empty(), "{ops:?}");
    }

    #[test]
    fn a_directory_that_keeps_a_file_is_patched_file_by_file() {
        let old = listing(&["web/a.css=1", "web/b.css=1", "web/keep.css=1"]);
        let new = listing(&["web/a.css=2", "web/keep.css=1"]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(paths(&ops.replace.files), ["web/a.css"]);
        assert_eq!(paths(&ops.delete.files), ["web/b.css"]);
        assert!(ops.replace.directories.is_empty());
    }

    #[test]
    fn new_directories_are_replaced_whole_including_empty_ones() {
        let old = listing(&["bin/app=1"]);
        let new = listing(&[
            "bin/app=1",
            "plugins/x/a.so=1",
            "plugins/x/b.so=1",
            "data/cache/",
        ]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(paths(&ops.replace.directories), ["data", "plugins"]);
        assert!(ops.replace.files.is_empty());
    }

    #[test]
    fn removed_directories_are_deleted_at_the_top_only() {
        let old = listing(&[
            "bin/app=1",
            "plugins/legacy/a=1",
            "plugins/legacy/sub/b=1",
            "plugins/keep=1",
            "e/",
        ]);
        let new = listing(&["bin/app=1", "plugins/keep=1"]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(paths(&ops.delete.directories), ["e", "plugins/legacy"]);
        assert!(ops.delete.files.is_empty());
        assert!(ops.replace.is_empty());
    }

    #[test]
    fn type_changes_are_replacements() {
        let old = listing(&["x=1", "y/a=1", "y/b=1", "keep=1"]);
        let new = listing(&["x/inner=1", "y=1", "keep=1"]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(paths(&ops.replace.directories), ["x"]);
        assert_eq!(paths(&ops.replace.files), ["y"]);
        assert!(ops.delete.is_empty(), "{ops:?}");
    }

    #[test]
    fn links_retargeted_or_turned_into_files_and_back_are_replaced() {
        let old = listing(&[
            "app/.bin/tsc=>../ts/tsc",
            "app/.bin/fmt=>../prettier/fmt",
            "app/ts/tsc=1",
            "lib/libfoo.so=>libfoo.so.1",
            "lib/libfoo.so.1=1",
            "lib/plain=1",
            "cur=>lib",
            "gone=>lib",
        ]);
        let new = listing(&[
            "app/.bin/tsc=>../ts/tsc2",
            "app/.bin/fmt=>../prettier/fmt",
            "app/ts/tsc=1",
            "lib/libfoo.so=now a file",
            "lib/libfoo.so.1=1",
            "lib/plain=>libfoo.so.1",
            "cur/x=1",
        ]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(
            paths(&ops.replace.files),
            ["app/.bin/tsc", "lib/libfoo.so", "lib/plain"]
        );
        assert_eq!(paths(&ops.replace.directories), ["cur"]);
        assert_eq!(paths(&ops.delete.files), ["gone"]);
        let back = check_round_trip(&new, &old);
        assert_eq!(
            paths(&back.replace.files),
            ["app/.bin/tsc", "cur", "gone", "lib/libfoo.so", "lib/plain"]
        );
    }

    #[test]
    fn an_emptied_directory_is_replaced_by_an_empty_one() {
        let old = listing(&["logs/a=1", "logs/b=1", "keep=1"]);
        let new = listing(&["logs/", "keep=1"]);
        let ops = check_round_trip(&old, &new);
        assert_eq!(paths(&ops.replace.directories), ["logs"]);
    }
}
