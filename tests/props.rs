//! Property tests of the publish/apply pair with the real binary: random pairs of release trees
//! (files of a few contents and modes, nested and empty directories, relative symlinks to files,
//! directories, other links and nothing, paths that change between file, directory and link),
//! published as 1.0.0 and 2.0.0, installed full then patched, rolled back and
//! force-fully updated — each step must give exactly the expected tree, and the operator's
//! unowned and preserved files must come through byte-identical (or the step must be refused with
//! exit 1 and nothing changed, when a release needs their place). The patch package must hold
//! exactly what its operations name.
//!
//! The cases come from a fixed seed (`MOLT_PROPTEST_SEED=random` or a number explores others;
//! `MOLT_PROPTEST_CASES` sets how many). A shrunk failing case is printed as JSON; it goes into `tests/data/<scenario>/case.json`, and
//! `replays_recorded_scenarios` runs every recorded one on each test run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::util::{Env, Snapshot, assert_same_tree, snapshot};

/// One entry of a release tree, by path (`a/b`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Entry {
    /// A regular file; `mode` is octal text (`"644"`).
    File {
        content: String,
        mode: String,
    },
    Dir,
    /// A symbolic link; its target resolves inside the tree (`molt::symlink`'s rule).
    Link {
        target: String,
    },
}

/// A whole scenario, as recorded in `tests/data/<scenario>/case.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Case {
    /// Release 1.0.0 and release 2.0.0, path → entry (parents listed too).
    a: BTreeMap<String, Entry>,
    b: BTreeMap<String, Entry>,
    /// Files the operator's application wrote after the full install of 1.0.0 (path → content);
    /// their directories exist in 1.0.0.
    unowned: BTreeMap<String, String>,
    /// Files under the preserved `data/` directory (path → content).
    preserved: BTreeMap<String, String>,
}

const NAMES: &[&str] = &["a", "b", "c"];
const CONTENTS: &[&str] = &["", "x", "y\n", "zzzz"];
const MODES: &[&str] = &["644", "755", "600"];
/// Link targets: siblings, a parent's sibling, a path through a directory, one that escapes
/// from the top (dropped there by `keep_resolvable_links`), a dangling one.
const LINK_TARGETS: &[&str] = &["a", "b", "../c", "a/b", "../../a", "missing"];

#[derive(Debug, Clone)]
enum Node {
    File(&'static str, &'static str),
    Dir(BTreeMap<&'static str, Node>),
    Link(&'static str),
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        3 => (
            proptest::sample::select(CONTENTS),
            proptest::sample::select(MODES)
        )
            .prop_map(|(c, m)| Node::File(c, m)),
        1 => Just(Node::Dir(BTreeMap::new())),
        1 => proptest::sample::select(LINK_TARGETS).prop_map(Node::Link),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        proptest::collection::btree_map(proptest::sample::select(NAMES), inner, 0..3)
            .prop_map(Node::Dir)
    })
}

fn flatten(
    prefix: &str,
    children: &BTreeMap<&'static str, Node>,
    out: &mut BTreeMap<String, Entry>,
) {
    for (name, node) in children {
        let path = if prefix.is_empty() {
            (*name).to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        match node {
            Node::File(content, mode) => {
                out.insert(
                    path,
                    Entry::File {
                        content: (*content).to_owned(),
                        mode: (*mode).to_owned(),
                    },
                );
            }
            Node::Dir(kids) => {
                out.insert(path.clone(), Entry::Dir);
                flatten(&path, kids, out);
            }
            Node::Link(target) => {
                out.insert(
                    path,
                    Entry::Link {
                        target: (*target).to_owned(),
                    },
                );
            }
        }
    }
}

fn tree() -> impl Strategy<Value = BTreeMap<String, Entry>> {
    proptest::collection::btree_map(proptest::sample::select(NAMES), node(), 1..4).prop_map(|top| {
        let mut out = BTreeMap::new();
        flatten("", &top, &mut out);
        keep_resolvable_links(&mut out);
        out
    })
}

/// Drops the links a publisher must refuse (past the root, cycles, through a file), until every
/// link left resolves: a release tree as `molt publish` accepts it.
fn keep_resolvable_links(tree: &mut BTreeMap<String, Entry>) {
    loop {
        let bad = tree.iter().find_map(|(path, entry)| {
            let Entry::Link { target } = entry else {
                return None;
            };
            let link = molt::relpath::RelPath::new(path).unwrap();
            let lookup = |p: &molt::relpath::RelPath| match tree.get(p.as_str()) {
                None => molt::symlink::Node::Absent,
                Some(Entry::Dir) => molt::symlink::Node::Dir,
                Some(Entry::File { .. }) => molt::symlink::Node::File,
                Some(Entry::Link { target }) => molt::symlink::Node::Link(target),
            };
            molt::symlink::resolve(&link, target, lookup)
                .is_err()
                .then(|| path.clone())
        });
        match bad {
            Some(path) => {
                tree.remove(&path);
            }
            None => return,
        }
    }
}

/// A random scenario. With `nested_unowned`, unowned files go into directories of 1.0.0 (which
/// 2.0.0 may delete, replace whole or turn into a file); without, only at the top of the install.
fn case(nested_unowned: bool) -> impl Strategy<Value = Case> {
    (
        tree(),
        tree(),
        proptest::collection::vec(
            (
                any::<proptest::sample::Index>(),
                proptest::sample::select(CONTENTS),
            ),
            0..3,
        ),
        proptest::collection::vec(
            (
                proptest::sample::select(&["p", "sub/p", "sub/q"][..]),
                proptest::sample::select(CONTENTS),
            ),
            0..3,
        ),
    )
        .prop_map(move |(a, b, unowned, preserved)| {
            // Unowned files go into a directory of 1.0.0 (or the top), under names no release
            // uses, so only a directory of 1.0.0 turning into a file can need their place.
            let mut dirs: Vec<String> = vec![String::new()];
            if nested_unowned {
                dirs.extend(
                    a.iter()
                        .filter(|(_, e)| **e == Entry::Dir)
                        .map(|(p, _)| p.clone()),
                );
            }
            let unowned = unowned
                .into_iter()
                .enumerate()
                .map(|(i, (at, content))| {
                    let dir = at.get(&dirs);
                    let name = format!("u{i}.local");
                    let path = if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    };
                    (path, format!("unowned {content}"))
                })
                .collect();
            let preserved = preserved
                .into_iter()
                .map(|(p, c)| (format!("data/{p}"), format!("precious {c}")))
                .collect();
            Case {
                a,
                b,
                unowned,
                preserved,
            }
        })
}

fn mode(text: &str) -> u32 {
    u32::from_str_radix(text, 8).expect("octal mode")
}

fn write_tree(root: &Path, tree: &BTreeMap<String, Entry>) {
    fs::create_dir_all(root).unwrap();
    for (path, entry) in tree {
        let p = root.join(path);
        match entry {
            Entry::Dir => fs::create_dir_all(&p).unwrap(),
            Entry::Link { target } => {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(target, &p).unwrap();
            }
            Entry::File { content, mode: m } => {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, content).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(mode(m))).unwrap();
            }
        }
    }
    // Directory modes are not part of a release (tree listings record file modes only).
    for (path, entry) in tree {
        if *entry == Entry::Dir {
            fs::set_permissions(root.join(path), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// Writes operator files (and their missing parents, mode 0755) into the install.
fn write_operator_files(install: &Path, files: &BTreeMap<String, String>) {
    for (path, content) in files {
        let p = install.join(path);
        let parent = p.parent().unwrap();
        if !parent.exists() {
            fs::create_dir_all(parent).unwrap();
            fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
            if let Some(pp) = parent.parent().filter(|pp| *pp != install) {
                fs::set_permissions(pp, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    }
}

/// The snapshot (as `util::snapshot` renders it) of `release` plus the operator's files.
fn expected(release: &BTreeMap<String, Entry>, operator: &[&BTreeMap<String, String>]) -> Snapshot {
    let mut s = Snapshot::new();
    for (path, entry) in release {
        let desc = match entry {
            Entry::Dir => "dir 755".to_owned(),
            Entry::Link { target } => format!("link {target}"),
            Entry::File { content, mode } => {
                format!(
                    "file {mode} {}",
                    molt::hashing::sha256_hex(content.as_bytes())
                )
            }
        };
        s.insert(path.clone(), desc);
    }
    for files in operator {
        for (path, content) in *files {
            let mut dir = Path::new(path).parent();
            while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
                s.entry(d.to_str().unwrap().to_owned())
                    .or_insert_with(|| "dir 755".to_owned());
                dir = d.parent();
            }
            s.insert(
                path.clone(),
                format!("file 640 {}", molt::hashing::sha256_hex(content.as_bytes())),
            );
        }
    }
    s
}

/// True if `release` has a regular file or a link where an operator file needs a directory.
fn needs_operator_place(
    release: &BTreeMap<String, Entry>,
    unowned: &BTreeMap<String, String>,
) -> bool {
    unowned.keys().any(|path| {
        Path::new(path)
            .ancestors()
            .skip(1)
            .filter_map(|a| a.to_str())
            .any(|a| {
                matches!(
                    release.get(a),
                    Some(Entry::File { .. } | Entry::Link { .. })
                )
            })
    })
}

/// Every entry of a package (`.tar.zst`, or `.tar.gz` from older publishers): path → entry.
fn package_entries(path: &Path) -> BTreeMap<String, Entry> {
    let file = fs::File::open(path).unwrap();
    let decoded: Box<dyn Read> = if path.to_string_lossy().ends_with(".tar.zst") {
        Box::new(zstd::Decoder::new(file).unwrap())
    } else {
        Box::new(flate2::read::GzDecoder::new(file))
    };
    let mut archive = tar::Archive::new(decoded);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry
            .path()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('/')
            .to_owned();
        let kind = entry.header().entry_type();
        let e = if kind.is_dir() {
            Entry::Dir
        } else if kind.is_symlink() {
            Entry::Link {
                target: entry
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            }
        } else {
            assert!(kind.is_file(), "{name} is a {kind:?}");
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            Entry::File {
                content,
                mode: format!("{:o}", entry.header().mode().unwrap() & 0o777),
            }
        };
        assert!(
            out.insert(name.clone(), e).is_none(),
            "{name} twice in the package"
        );
    }
    out
}

/// What a patch package must hold: the named files, the named directories with everything in
/// them, and the directories holding a named path — all as in `b`.
fn expected_patch_entries(
    ops: &serde_json::Value,
    b: &BTreeMap<String, Entry>,
) -> BTreeMap<String, Entry> {
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let files = list(&ops["replace"]["files"]);
    let dirs = list(&ops["replace"]["directories"]);
    let mut want = BTreeSet::new();
    for p in files.iter().chain(&dirs) {
        let mut a = Path::new(p).parent();
        while let Some(d) = a.filter(|d| !d.as_os_str().is_empty()) {
            want.insert(d.to_str().unwrap().to_owned());
            a = d.parent();
        }
        want.insert(p.clone());
    }
    for d in &dirs {
        let prefix = format!("{d}/");
        want.extend(b.keys().filter(|k| k.starts_with(&prefix)).cloned());
    }
    want.into_iter()
        .map(|p| {
            let e = b
                .get(&p)
                .unwrap_or_else(|| panic!("the operations name {p}, which 2.0.0 does not have"))
                .clone();
            (p, e)
        })
        .collect()
}

/// Runs one scenario end to end; panics (with the case as JSON) on the first broken property.
fn check(case: &Case) {
    let json = serde_json::to_string_pretty(case).unwrap();
    let result = std::panic::catch_unwind(|| run(case));
    if let Err(e) = result {
        eprintln!("failing scenario (record as tests/data/<scenario>/case.json):\n{json}");
        std::panic::resume_unwind(e);
    }
}

fn run(case: &Case) {
    let env = Env::new();
    env.keygen("release");
    let ta = env.path("trees/a");
    let tb = env.path("trees/b");
    write_tree(&ta, &case.a);
    write_tree(&tb, &case.b);
    env.publish(&ta, "1.0.0").success();
    env.publish(&tb, "2.0.0").success();
    env.config(
        &format!("file://{}", env.repo().display()),
        "[apply]\npreserve = [\"data/\"]\nkeep_backups = 3\n",
    );

    // Property: a patch's package holds exactly what its operations name.
    let manifest = env.manifest();
    let r2 = manifest["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == "2.0.0")
        .unwrap();
    let patch = &r2["artifacts"]["x86_64"]["patches"][0];
    assert_eq!(patch["from"], "1.0.0", "{r2}");
    let pkg: PathBuf = env.repo().join(patch["url"].as_str().unwrap());
    assert_eq!(
        package_entries(&pkg),
        expected_patch_entries(&patch["operations"], &case.b),
        "patch package vs its operations {}",
        patch["operations"]
    );

    // Full install of 1.0.0 into an empty directory.
    let r = env.apply(&["--version", "1.0.0"]).success().result();
    assert_eq!(r["kind"], "full", "{r}");
    assert_same_tree(
        &snapshot(&env.install()),
        &expected(&case.a, &[]),
        "full install of 1.0.0",
    );

    write_operator_files(&env.install(), &case.unowned);
    write_operator_files(&env.install(), &case.preserved);
    let operator = [&case.unowned, &case.preserved];
    let before = snapshot(&env.install());
    assert_same_tree(
        &before,
        &expected(&case.a, &operator),
        "1.0.0 with operator files",
    );

    // Patch to 2.0.0: exactly 2.0.0 plus the operator's files, or refused with nothing changed
    // when 2.0.0 has a file where an unowned file needs its directory.
    let conflict = needs_operator_place(&case.b, &case.unowned);
    let run = env.apply(&["--version", "2.0.0"]);
    if conflict {
        run.code(1);
        assert_same_tree(
            &snapshot(&env.install()),
            &before,
            "refused patch (unowned file in the way)",
        );
        // The operator moves the file away; then the patch applies.
        for path in case.unowned.keys() {
            fs::remove_file(env.install().join(path)).unwrap();
        }
        return run_without_unowned(&env, case);
    }
    let r = run.success().result();
    assert_eq!(r["kind"], "patch", "{r}");
    assert_same_tree(
        &snapshot(&env.install()),
        &expected(&case.b, &operator),
        "patch 1.0.0 → 2.0.0 (unowned and preserved files kept)",
    );

    // Rollback to 1.0.0.
    env.molt(&["rollback", "--config", "molt.toml"]).success();
    assert_same_tree(&snapshot(&env.install()), &before, "rollback to 1.0.0");
    assert_eq!(env.installed_version(), "1.0.0");

    // A forced full update to 2.0.0 over 1.0.0.
    env.apply(&["--force-full", "--version", "2.0.0"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &expected(&case.b, &operator),
        "forced full update 1.0.0 → 2.0.0",
    );
}

/// The rest of a scenario once the unowned files were moved away: patch, rollback, full.
fn run_without_unowned(env: &Env, case: &Case) {
    let operator = [&case.preserved];
    let before = snapshot(&env.install());
    let r = env.apply(&["--version", "2.0.0"]).success().result();
    assert_eq!(r["kind"], "patch", "{r}");
    assert_same_tree(
        &snapshot(&env.install()),
        &expected(&case.b, &operator),
        "patch after moving unowned files",
    );
    env.molt(&["rollback", "--config", "molt.toml"]).success();
    assert_same_tree(&snapshot(&env.install()), &before, "rollback to 1.0.0");
    env.apply(&["--force-full", "--version", "2.0.0"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &expected(&case.b, &operator),
        "forced full update",
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: seed(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Publish, full install, patch, rollback, forced full — with unowned files at the top of
    /// the install and preserved files under `data/`.
    #[test]
    fn publish_patch_rollback_and_full_give_exactly_the_expected_tree(case in case(false)) {
        check(&case);
    }

    /// The same with unowned files inside directories of 1.0.0 that 2.0.0 may delete, replace
    /// whole or turn into a file (DESIGN.md: files molt does not own are never moved, replaced or
    /// deleted by any operation).
    #[test]
    fn unowned_files_inside_release_directories_survive_every_operation(case in case(true)) {
        check(&case);
    }
}

/// The generator's seed: fixed, so CI runs the same cases every time, unless
/// `MOLT_PROPTEST_SEED` is `random` or another number (to explore further).
fn seed() -> proptest::test_runner::RngSeed {
    use proptest::test_runner::RngSeed;
    match std::env::var("MOLT_PROPTEST_SEED").ok().as_deref() {
        Some("random") => RngSeed::Random,
        Some(n) => RngSeed::Fixed(n.parse().expect("MOLT_PROPTEST_SEED: a number or `random`")),
        None => RngSeed::Fixed(0x6d6f_6c74),
    }
}

/// Cases per property: `MOLT_PROPTEST_CASES`, default 16 (each case runs the binary 9–10 times).
fn cases() -> u32 {
    std::env::var("MOLT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

/// Every scenario recorded in `tests/data/<scenario>/case.json` (shrunk failures and hand-made
/// edge cases), each run on its own; the failing ones are named together.
#[test]
fn replays_recorded_scenarios() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&data)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|d| d.join("case.json").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no scenarios under {}", data.display());
    let mut failed = Vec::new();
    for dir in &dirs {
        let case_file = dir.join("case.json");
        let case: Case = serde_json::from_slice(&fs::read(&case_file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", case_file.display()));
        eprintln!("replaying {}", case_file.display());
        if std::panic::catch_unwind(|| check(&case)).is_err() {
            failed.push(dir.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed: {failed:?}",
        failed.len(),
        dirs.len()
    );
}
