//! The ownership rule, end to end: molt moves, replaces or deletes only what `state.json` says it
//! owns. Files an operator put inside directories a patch, a full update or a rollback replaces
//! or deletes stay byte-identical; one exactly where a release puts its own is refused before
//! anything changes (or taken over with `--adopt`); preserved paths are skipped with a warning.
//! Every test checks the install tree, the files beside it and `state.json`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::util::{Env, Snapshot, Spec, assert_same_tree, snapshot, tree_snapshot};

const V1: &[Spec] = &[
    ("bin/app", "app 1\n", 0o755),
    ("web/index.html", "<h1>1</h1>\n", 0o644),
    ("web/old.js", "old()\n", 0o644),
    ("plugins/a.so", "plugin a\n", 0o644),
    ("README", "readme\n", 0o644),
];

/// web/ changes entirely and loses old.js (replaced whole), plugins/ goes (deleted), extras/
/// is new (replaced whole, nothing there).
const V2: &[Spec] = &[
    ("bin/app", "app 2\n", 0o755),
    ("web/index.html", "<h1>2</h1>\n", 0o644),
    ("web/new.js", "new()\n", 0o644),
    ("extras/tool", "tool\n", 0o755),
    ("README", "readme\n", 0o644),
];

/// What the operator adds after installing 1.0.0: none of it is molt's.
const OPERATOR: &[Spec] = &[
    ("web/upload.png", "an upload\n", 0o600),
    ("plugins/operator.so", "the operator's plugin\n", 0o700),
    ("plugins/sub/ops.conf", "ops\n", 0o600),
    ("notes.txt", "notes\n", 0o644),
];

fn add(root: &Path, files: &[Spec]) {
    for (rel, body, mode) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// `tree` plus `extra` files, as an install snapshot.
fn tree_plus(tree: &Path, extra: &[Spec]) -> Snapshot {
    let scratch = Env::new();
    let t = scratch.tree("x", extra);
    let mut s = tree_snapshot(tree);
    for (k, v) in snapshot(&t) {
        s.entry(k).or_insert(v);
    }
    s
}

fn state(env: &Env) -> Value {
    serde_json::from_slice(&fs::read(env.install().join(".molt/state.json")).unwrap()).unwrap()
}

fn owned_files(env: &Env) -> BTreeSet<String> {
    state(env)["files"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn files_of(specs: &[Spec]) -> BTreeSet<String> {
    specs.iter().map(|(p, ..)| p.to_string()).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Publishes V1 and V2, installs 1.0.0 and adds the operator's files.
fn installed_v1(env: &Env, extra_config: &str) -> [std::path::PathBuf; 2] {
    env.keygen("release");
    let t1 = env.tree("1.0.0", V1);
    let t2 = env.tree("1.1.0", V2);
    env.publish(&t1, "1.0.0").success();
    env.publish(&t2, "1.1.0").success();
    env.config(&format!("file://{}", env.repo().display()), extra_config);
    env.apply(&["--version", "1.0.0"]).success();
    add(&env.install(), OPERATOR);
    [t1, t2]
}

#[test]
fn patch_keeps_unowned_files_in_replaced_and_deleted_directories() {
    let env = Env::new();
    let [t1, t2] = installed_v1(&env, "[apply]\nkeep_backups = 0\n");
    let before = snapshot(&env.install());

    // check reports what the update keeps, and changes nothing.
    let r = env
        .molt(&["check", "--config", "molt.toml", "--json"])
        .success()
        .result();
    assert_eq!(r["kind"], "patch", "{r}");
    let kept = strings(&r["kept_unowned"]);
    for p in ["web/upload.png", "plugins/operator.so", "plugins/sub"] {
        assert!(kept.contains(&p.to_owned()), "{p} not in {kept:?}");
    }
    assert_same_tree(&snapshot(&env.install()), &before, "check changed the tree");

    let r = env.apply(&[]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["to"].clone()),
        (json!("patch"), json!("1.1.0"))
    );
    assert_eq!(strings(&r["kept_unowned"]), kept);
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_plus(&t2, OPERATOR),
        "after the patch (keep_backups = 0: nothing kept elsewhere)",
    );
    assert_eq!(owned_files(&env), files_of(V2));
    assert!(
        fs::read_dir(env.install().join(".molt/history"))
            .unwrap()
            .next()
            .is_none()
    );
    env.molt(&["verify", "--config", "molt.toml"]).success();
    let _ = t1;
}

#[test]
fn full_update_keeps_unowned_files_in_directories_it_drops() {
    let env = Env::new();
    let [_, t2] = installed_v1(&env, "[apply]\nkeep_backups = 0\n");
    let r = env.apply(&["--force-full"]).success().result();
    assert_eq!(r["kind"], "full");
    assert!(
        strings(&r["kept_unowned"]).contains(&"plugins/operator.so".to_owned()),
        "{r}"
    );
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_plus(&t2, OPERATOR),
        "after the full update",
    );
    assert_eq!(owned_files(&env), files_of(V2));
}

/// Adds `later` to the install (after an update), rolls back and checks that the install is
/// release 1.0.0 plus the operator's files, `later` included; returns `rollback --json`'s result.
fn roll_back_keeping(env: &Env, t1: &Path, later: &[Spec], what: &str) -> Value {
    add(&env.install(), later);
    env.molt(&["verify", "--config", "molt.toml"]).success();
    let r = env
        .molt(&["rollback", "--config", "molt.toml", "--json"])
        .success()
        .result();
    let mut all: Vec<Spec> = OPERATOR.to_vec();
    all.extend_from_slice(later);
    assert_same_tree(&snapshot(&env.install()), &tree_plus(t1, &all), what);
    assert_eq!(owned_files(env), files_of(V1));
    env.molt(&["verify", "--config", "molt.toml"]).success();
    r
}

#[test]
fn rollback_keeps_files_added_after_the_update() {
    let env = Env::new();
    let [t1, _] = installed_v1(&env, "");
    env.apply(&[]).success();
    // Added after the update, under directories it replaced (web/) and created (extras/).
    let later: &[Spec] = &[
        ("web/after.txt", "written by the app after 1.1.0\n", 0o644),
        ("extras/mine.txt", "mine\n", 0o644),
    ];
    let r = roll_back_keeping(&env, &t1, later, "after the rollback");
    assert_eq!(
        (r["from"].clone(), r["to"].clone()),
        (json!("1.1.0"), json!("1.0.0"))
    );
    assert_eq!(state(&env)["version"], "1.0.0");
}

#[test]
fn rollback_of_a_full_update_keeps_files_added_in_the_directories_it_created() {
    let env = Env::new();
    let [t1, _] = installed_v1(&env, "");
    // A full package puts a directory the install lacks (extras/) as one rename of its tree.
    let r = env.apply(&["--force-full"]).success().result();
    assert_eq!(r["kind"], "full");
    let later: &[Spec] = &[
        ("extras/mine.txt", "mine\n", 0o644),
        ("web/after.txt", "written by the app after 1.1.0\n", 0o644),
    ];
    roll_back_keeping(&env, &t1, later, "after rolling back the full update");
}

#[test]
fn an_unowned_file_where_the_release_puts_one_is_refused_then_adopted() {
    let env = Env::new();
    installed_v1(&env, "[apply]\nkeep_backups = 0\n");
    // The operator's own file exactly where 1.1.0 puts one.
    add(
        &env.install(),
        &[("extras/tool", "the operator's tool\n", 0o700)],
    );
    let before = snapshot(&env.install());
    let state_before = state(&env);

    for args in [
        vec!["check", "--config", "molt.toml", "--json"],
        vec!["apply", "--config", "molt.toml", "--json"],
        vec!["apply", "--config", "molt.toml", "--json", "--force-full"],
    ] {
        env.molt(&args).code(1).error_contains(&[
            "extras/tool",
            "does not own",
            "preserve",
            "--adopt",
        ]);
        assert_same_tree(
            &snapshot(&env.install()),
            &before,
            "a refusal changed the tree",
        );
        assert_eq!(state(&env)["files"], state_before["files"]);
    }

    let r = env.apply(&["--adopt"]).success().result();
    assert_eq!(strings(&r["adopted"]), ["extras/tool"]);
    assert_eq!(
        fs::read_to_string(env.install().join("extras/tool")).unwrap(),
        "tool\n"
    );
    assert!(owned_files(&env).contains("extras/tool"));
    // keep_backups = 0, yet the adopted file's only copy stays, until the operator removes it.
    let backup = Path::new(r["adopted_backup"].as_str().unwrap()).join("backup/extras/tool");
    assert_eq!(
        fs::read_to_string(&backup).unwrap(),
        "the operator's tool\n"
    );
    env.molt(&["status", "--config", "molt.toml"]).success();
    assert!(backup.exists(), "a later command pruned the adopted backup");
}

#[test]
fn an_unowned_file_can_be_preserved_instead() {
    let env = Env::new();
    installed_v1(&env, "[apply]\npreserve = [\"extras/tool\"]\n");
    add(
        &env.install(),
        &[("extras/tool", "the operator's tool\n", 0o700)],
    );
    let r = env.apply(&[]).success().result();
    assert_eq!(r["kind"], "patch");
    let warnings = strings(&r["warnings"]);
    assert!(
        warnings.iter().any(|w| w.contains("extras/tool")),
        "{warnings:?}"
    );
    assert_eq!(
        fs::read_to_string(env.install().join("extras/tool")).unwrap(),
        "the operator's tool\n"
    );
    assert!(!owned_files(&env).contains("extras/tool"));
}

#[test]
fn a_preserved_path_the_release_ships_is_skipped_with_a_warning() {
    let env = Env::new();
    env.keygen("release");
    let t1 = env.tree("1.0.0", &[("bin/app", "1\n", 0o755)]);
    let t2 = env.tree(
        "1.1.0",
        &[
            ("bin/app", "2\n", 0o755),
            ("data/default.db", "shipped\n", 0o644),
            ("conf/local.toml", "shipped local\n", 0o644),
        ],
    );
    env.publish(&t1, "1.0.0").success();
    env.publish(&t2, "1.1.0").success();
    env.config(
        &format!("file://{}", env.repo().display()),
        "[apply]\npreserve = [\"data/\", \"conf/local.toml\"]\n",
    );
    env.apply(&["--version", "1.0.0"]).success();
    add(
        &env.install(),
        &[("conf/local.toml", "operator's\n", 0o600)],
    );

    let r = env
        .molt(&["check", "--config", "molt.toml", "--json"])
        .success()
        .result();
    let warnings = strings(&r["warnings"]);
    assert!(
        warnings.iter().any(|w| w.contains("data"))
            && warnings.iter().any(|w| w.contains("conf/local.toml")),
        "{warnings:?}"
    );
    let r = env.apply(&[]).success().result();
    assert_eq!(
        r["kind"], "patch",
        "a preserved path no longer forces a refusal"
    );
    assert_eq!(strings(&r["warnings"]), warnings);
    let human = env
        .molt(&["apply", "--config", "molt.toml", "--force-full"])
        .success();
    assert!(
        human.stderr.contains("warning") && human.stderr.contains("data"),
        "{}",
        human.stderr
    );

    let mut expected = tree_snapshot(&env.tree("want", &[("bin/app", "2\n", 0o755)]));
    expected.extend(snapshot(
        &env.tree("op", &[("conf/local.toml", "operator's\n", 0o600)]),
    ));
    assert_same_tree(
        &snapshot(&env.install()),
        &expected,
        "preserved paths untouched",
    );
    assert_eq!(owned_files(&env), files_of(&[("bin/app", "", 0)]));
    // No refusal loop: the next run is simply up to date.
    let r = env.apply(&[]).success().result();
    assert_eq!(r["kind"], "none");
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn directory_modes_come_from_the_package() {
    let env = Env::new();
    env.keygen("release");
    let t1 = env.tree("1.0.0", V1);
    chmod(&t1.join("web"), 0o700);
    chmod(&t1.join("plugins"), 0o750);
    let t2 = env.tree("1.1.0", V2);
    chmod(&t2.join("web"), 0o750);
    chmod(&t2.join("extras"), 0o700);
    env.publish(&t1, "1.0.0").success();
    env.publish(&t2, "1.1.0").success();
    env.config(&format!("file://{}", env.repo().display()), "");

    env.apply(&["--version", "1.0.0"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t1),
        "full install",
    );
    add(&env.install(), &[("web/upload.png", "kept\n", 0o600)]);
    let r = env.apply(&[]).success().result();
    assert_eq!(r["kind"], "patch");
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_plus(&t2, &[("web/upload.png", "kept\n", 0o600)]),
        "patch",
    );
    env.molt(&["rollback", "--config", "molt.toml"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_plus(&t1, &[("web/upload.png", "kept\n", 0o600)]),
        "rollback",
    );
}

#[test]
fn an_owned_directory_holding_unowned_files_is_not_replaced_by_a_file() {
    let env = Env::new();
    env.keygen("release");
    let t1 = env.tree(
        "1.0.0",
        &[("bin/app", "1\n", 0o755), ("cache/a", "a\n", 0o644)],
    );
    let t2 = env.tree(
        "1.1.0",
        &[("bin/app", "2\n", 0o755), ("cache", "now a file\n", 0o644)],
    );
    env.publish(&t1, "1.0.0").success();
    env.publish(&t2, "1.1.0").success();
    env.config(&format!("file://{}", env.repo().display()), "");
    env.apply(&["--version", "1.0.0"]).success();
    add(
        &env.install(),
        &[("cache/operator.dat", "operator's\n", 0o600)],
    );
    let before = snapshot(&env.install());
    let run = env
        .apply(&[])
        .code(1)
        .error_contains(&["cache", "cache/operator.dat", "--adopt"]);
    let refused: Vec<Value> = run
        .json_lines()
        .into_iter()
        .filter(|l| l["event"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["path"], "cache");
    assert_same_tree(&snapshot(&env.install()), &before, "refused");
    assert_eq!(state(&env)["version"], "1.0.0");
    assert_eq!(
        owned_files(&env),
        files_of(&[("bin/app", "", 0), ("cache/a", "", 0)])
    );
}
