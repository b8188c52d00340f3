//! Symbolic-link targets: which ones a release may carry, decided lexically.
//!
//! Real release trees hold symlinks (`node_modules/.bin/tsc -> ../typescript/bin/tsc`,
//! `libfoo.so -> libfoo.so.1`, a link to a directory, chains of links), so molt carries them —
//! but it never follows one while writing, and it only accepts a target that stays inside the
//! release tree. The rule, applied by the publisher to the tree it packs and by the client to
//! every package it stages (a signed package is still untrusted):
//!
//! - the target is a non-empty relative path (never absolute), without NUL, at most 4096 bytes;
//! - resolved component by component from the link's own directory, `..` never climbs past the
//!   release root;
//! - a component that is itself a link of the tree is followed (its target, resolved from its
//!   own directory, replaces it), so `d -> .` plus `e -> d/../..` is seen for what it is;
//!   more than [`MAX_EXPANSIONS`] expansions is a cycle and refused;
//! - a regular file of the tree cannot be followed by further components;
//! - a path the tree does not hold is taken lexically (a dangling link, or a component the
//!   client's view cannot see, such as a preserved path): nothing of the tree can redirect it.
//!
//! The check never touches the filesystem: it asks a [`Node`] lookup of the tree being checked,
//! so the same rule runs on a scanned tree, a staged package and an install's recorded state.

use crate::relpath::RelPath;

/// Link expansions allowed while resolving one target (Linux allows 40).
pub(crate) const MAX_EXPANSIONS: u32 = 40;
/// Longest target accepted (as `PATH_MAX`).
pub(crate) const MAX_TARGET_LEN: usize = 4096;

/// What a tree holds at a path, as far as resolving a link needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node<'a> {
    Absent,
    Dir,
    File,
    /// A symbolic link with this target.
    Link(&'a str),
}

/// Why a link's target is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the target is empty")]
    Empty,
    #[error("the target is absolute; links must point inside the release tree, relatively")]
    Absolute,
    #[error("the target contains a NUL byte")]
    Nul,
    #[error("the target is longer than {MAX_TARGET_LEN} bytes")]
    TooLong,
    #[error("the target is not valid UTF-8")]
    NotUtf8,
    #[error("a component of the target is longer than 255 bytes")]
    ComponentTooLong,
    #[error("the target resolves past the root of the release tree")]
    PastRoot,
    #[error(
        "resolving the target passes through the link {via}, whose target {target:?} is unsafe: {reason}"
    )]
    Through {
        via: RelPath,
        target: String,
        reason: Box<LinkError>,
    },
    #[error("resolving the target follows more than {MAX_EXPANSIONS} links (a cycle)")]
    Cycle,
    #[error("resolving the target goes through {path}, which is a regular file")]
    NotADirectory { path: RelPath },
}

/// Checks the form of a target alone (what the tar header or `readlink` gave).
pub(crate) fn check_syntax(target: &str) -> Result<(), LinkError> {
    if target.is_empty() {
        return Err(LinkError::Empty);
    }
    if target.starts_with('/') {
        return Err(LinkError::Absolute);
    }
    if target.contains('\0') {
        return Err(LinkError::Nul);
    }
    if target.len() > MAX_TARGET_LEN {
        return Err(LinkError::TooLong);
    }
    if target.split('/').any(|c| c.len() > 255) {
        return Err(LinkError::ComponentTooLong);
    }
    Ok(())
}

/// Resolves the link at `link` with `target` inside the tree described by `lookup` and returns
/// where it points (`None` for the release root itself), or why it is refused.
pub fn resolve<'a>(
    link: &RelPath,
    target: &'a str,
    lookup: impl Fn(&RelPath) -> Node<'a>,
) -> Result<Option<RelPath>, LinkError> {
    check_syntax(target)?;
    // Where the walk stands, as components of a path below the root.
    let mut at: Vec<&str> = link
        .as_str()
        .rsplit_once('/')
        .map_or(Vec::new(), |(parent, _)| parent.split('/').collect());
    // Components still to walk, next one last.
    let mut pending: Vec<&'a str> = components(target).rev().collect();
    let mut expansions = 0u32;
    while let Some(c) = pending.pop() {
        if c == ".." {
            if at.pop().is_none() {
                return Err(LinkError::PastRoot);
            }
            continue;
        }
        at.push(c);
        let here = RelPath::new(&at.join("/")).map_err(|_| LinkError::ComponentTooLong)?;
        match lookup(&here) {
            Node::Link(next) => {
                expansions += 1;
                if expansions > MAX_EXPANSIONS {
                    return Err(LinkError::Cycle);
                }
                check_syntax(next).map_err(|reason| LinkError::Through {
                    via: here.clone(),
                    target: next.to_owned(),
                    reason: Box::new(reason),
                })?;
                at.pop();
                pending.extend(components(next).rev());
            }
            Node::File if !pending.is_empty() => {
                return Err(LinkError::NotADirectory { path: here });
            }
            Node::File | Node::Dir | Node::Absent => {}
        }
    }
    if at.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        RelPath::new(&at.join("/")).map_err(|_| LinkError::ComponentTooLong)?,
    ))
}

/// The components of a target that move somewhere (`.` and empty ones do not).
fn components(target: &str) -> impl DoubleEndedIterator<Item = &str> {
    target.split('/').filter(|c| !c.is_empty() && *c != ".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::rp as rel;
    use std::collections::BTreeMap;

    /// A tree from `path`, `path/` (dir) and `path -> target` entries.
    fn tree(entries: &[&'static str]) -> BTreeMap<String, Node<'static>> {
        let mut t = BTreeMap::new();
        for e in entries {
            if let Some((p, target)) = e.split_once(" -> ") {
                t.insert(p.to_owned(), Node::Link(target));
            } else if let Some(d) = e.strip_suffix('/') {
                t.insert(d.to_owned(), Node::Dir);
            } else {
                t.insert((*e).to_owned(), Node::File);
            }
        }
        t
    }

    fn check(
        t: &BTreeMap<String, Node<'static>>,
        link: &str,
    ) -> Result<Option<RelPath>, LinkError> {
        let Node::Link(target) = t[link] else {
            panic!("{link} is not a link")
        };
        resolve(&rel(link), target, |p| {
            t.get(p.as_str()).copied().unwrap_or(Node::Absent)
        })
    }

    #[test]
    fn node_style_links_resolve_inside() {
        let t = tree(&[
            "node_modules/",
            "node_modules/.bin/",
            "node_modules/typescript/",
            "node_modules/typescript/bin/",
            "node_modules/typescript/bin/tsc",
            "node_modules/.bin/tsc -> ../typescript/bin/tsc",
            "lib/",
            "lib/libfoo.so.1.2",
            "lib/libfoo.so.1 -> libfoo.so.1.2",
            "lib/libfoo.so -> ./libfoo.so.1",
            "current -> lib/",
            "top -> .",
            "via -> current/libfoo.so",
        ]);
        assert_eq!(
            check(&t, "node_modules/.bin/tsc").unwrap(),
            Some(rel("node_modules/typescript/bin/tsc"))
        );
        assert_eq!(
            check(&t, "lib/libfoo.so").unwrap(),
            Some(rel("lib/libfoo.so.1.2"))
        );
        assert_eq!(check(&t, "current").unwrap(), Some(rel("lib")));
        assert_eq!(check(&t, "top").unwrap(), None);
        assert_eq!(check(&t, "via").unwrap(), Some(rel("lib/libfoo.so.1.2")));
    }

    #[test]
    fn escapes_absolutes_and_cycles_are_refused() {
        let t = tree(&[
            "a/",
            "abs -> /etc/passwd",
            "up -> ..",
            "a/up2 -> ../..",
            "d -> .",
            "a/d -> ..",
            "e -> a/d/..",
            "loop1 -> loop2",
            "loop2 -> loop1",
            "self -> self/x",
            "f",
            "through-file -> f/x",
            "via-bad -> bad",
            "bad -> /",
            "missing -> nothing/../..",
        ]);
        assert_eq!(check(&t, "abs"), Err(LinkError::Absolute));
        assert_eq!(check(&t, "up"), Err(LinkError::PastRoot));
        assert_eq!(check(&t, "a/up2"), Err(LinkError::PastRoot));
        // a/d is the root, so a/d/.. is past it: only seen by following a/d.
        assert_eq!(check(&t, "e"), Err(LinkError::PastRoot));
        assert_eq!(check(&t, "d").unwrap(), None);
        assert_eq!(check(&t, "loop1"), Err(LinkError::Cycle));
        assert_eq!(check(&t, "self"), Err(LinkError::Cycle));
        assert!(matches!(
            check(&t, "through-file"),
            Err(LinkError::NotADirectory { .. })
        ));
        assert!(matches!(
            check(&t, "via-bad"),
            Err(LinkError::Through { .. })
        ));
        assert_eq!(check(&t, "missing"), Err(LinkError::PastRoot));
        for bad in ["", "a\0b"] {
            assert!(resolve(&rel("x"), bad, |_| Node::Absent).is_err());
        }
        let long = "a/".repeat(2100);
        assert_eq!(check_syntax(&long), Err(LinkError::TooLong));
    }

    #[test]
    fn dangling_targets_inside_are_allowed() {
        let t = tree(&["lib/", "lib/libgone.so -> libgone.so.1"]);
        assert_eq!(
            check(&t, "lib/libgone.so").unwrap(),
            Some(rel("lib/libgone.so.1"))
        );
    }
}
