//! The reference journey over file://: publish three releases, install into an empty
//! directory, patch forward, roll back, force a full update, and verify — checking the exact
//! tree after every step, with user data and unowned files surviving.

use std::fs;

use serde_json::json;

use crate::craft::{R1, R2, R3, reference_releases};
use crate::util::{Env, Snapshot, assert_same_tree, snapshot, tree_snapshot};

/// The release tree plus the files the operator's app made, which molt must never touch.
fn with_user_files(tree: &std::path::Path) -> Snapshot {
    let mut s = tree_snapshot(tree);
    let user = Env::new();
    let t = user.tree(
        "u",
        &[
            ("data/user.db", "precious\n", 0o600),
            ("extra.log", "unowned\n", 0o644),
        ],
    );
    s.extend(snapshot(&t));
    s
}

#[test]
fn publish_writes_full_packages_and_patches_from_every_earlier_release() {
    let env = Env::new();
    reference_releases(&env);
    let m = env.manifest();
    assert_eq!(m["serial"], 3);
    assert_eq!(m["product"], "demo-app");
    let r3 = m["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == "1.2.0")
        .unwrap();
    let patches = r3["artifacts"]["x86_64"]["patches"].as_array().unwrap();
    let froms: Vec<_> = patches
        .iter()
        .map(|p| p["from"].as_str().unwrap())
        .collect();
    assert!(
        froms.contains(&"1.0.0") && froms.contains(&"1.1.0"),
        "{froms:?}"
    );
    let r2 = m["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == "1.1.0")
        .unwrap();
    let ops = &r2["artifacts"]["x86_64"]["patches"][0]["operations"];
    let deleted: Vec<_> = ops["delete"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .chain(ops["delete"]["directories"].as_array().unwrap())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let replaced_dirs = ops["replace"]["directories"].as_array().unwrap();
    assert!(
        deleted.iter().any(|d| d == "conf/legacy.yml") || replaced_dirs.contains(&json!("conf")),
        "{ops}"
    );
    assert!(
        replaced_dirs.contains(&json!("web")),
        "web/ lost b.js, so it is replaced whole: {ops}"
    );
    assert!(
        deleted
            .iter()
            .any(|d| d == "plugins" || d == "plugins/legacy"),
        "{ops}"
    );
    for r in m["releases"].as_array().unwrap() {
        let full = &r["artifacts"]["x86_64"]["full"];
        let bytes = fs::read(env.repo().join(full["url"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, full["size"].as_u64().unwrap());
        assert_eq!(molt::hashing::sha256_hex(&bytes), full["sha256"]);
    }
}

#[test]
fn publishing_the_same_tree_twice_gives_identical_packages() {
    let env = Env::new();
    env.keygen("release");
    let tree = env.tree("1.0.0", R1);
    env.publish(&tree, "1.0.0").success();
    let first = env.manifest()["releases"][0]["artifacts"]["x86_64"]["full"].clone();
    env.publish(&tree, "1.0.0").success();
    let m = env.manifest();
    assert_eq!(m["serial"], 2);
    assert_eq!(m["releases"].as_array().unwrap().len(), 1);
    assert_eq!(
        m["releases"][0]["artifacts"]["x86_64"]["full"]["sha256"],
        first["sha256"]
    );
}

#[test]
fn full_install_patches_rollback_force_full_and_verify() {
    let env = Env::new();
    let [t1, t2, t3] = reference_releases(&env);
    env.config(
        &format!("file://{}", env.repo().display()),
        "[apply]\npreserve = [\"data/\"]\nkeep_backups = 2\n",
    );

    // First install into a directory that does not exist yet: a full package.
    let r = env.apply(&["--version", "1.0.0"]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["to"].clone()),
        (json!("full"), json!("1.0.0"))
    );
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t1),
        "after full install of 1.0.0",
    );

    // The application writes user data and an unowned file.
    fs::create_dir_all(env.install().join("data")).unwrap();
    fs::write(env.install().join("data/user.db"), "precious\n").unwrap();
    fs::set_permissions(
        env.install().join("data/user.db"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    fs::write(env.install().join("extra.log"), "unowned\n").unwrap();

    let r = env.apply(&["--version", "1.1.0"]).success().result();
    assert_eq!(r["kind"], "patch");
    assert_eq!(
        (r["from"].clone(), r["to"].clone()),
        (json!("1.0.0"), json!("1.1.0"))
    );
    assert_same_tree(
        &snapshot(&env.install()),
        &with_user_files(&t2),
        "after patch to 1.1.0",
    );

    let r = env.apply(&[]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["from"].clone(), r["to"].clone()),
        (json!("patch"), json!("1.1.0"), json!("1.2.0"))
    );
    assert_same_tree(
        &snapshot(&env.install()),
        &with_user_files(&t3),
        "after patch to 1.2.0",
    );
    let mode = fs::metadata(env.install().join("bin/tool"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o644
    );

    let r = env.apply(&[]).success().result();
    assert_eq!(r["kind"], "none", "{r}");

    env.molt(&["rollback", "--config", "molt.toml"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &with_user_files(&t2),
        "after rollback to 1.1.0",
    );
    assert_eq!(env.installed_version(), "1.1.0");

    env.apply(&["--force-full", "--version", "1.2.0"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &with_user_files(&t3),
        "after forced full 1.2.0",
    );

    let status = env
        .molt(&["status", "--config", "molt.toml", "--json"])
        .success()
        .json_lines()
        .pop()
        .unwrap();
    assert_eq!(status["version"], "1.2.0");
    assert_eq!(status["serial"], 3);
    assert!(status["history"].as_array().unwrap().len() >= 4, "{status}");

    env.molt(&["verify", "--config", "molt.toml"]).success();
    fs::write(env.install().join("conf/app.yml"), "tampered\n").unwrap();
    env.molt(&["verify", "--config", "molt.toml"])
        .code(1)
        .error_contains(&["conf/app.yml"]);
    let _ = (R1, R2, R3);
}

#[test]
fn dry_run_and_check_change_nothing() {
    let env = Env::new();
    reference_releases(&env);
    env.file_config();
    let r = env.apply(&["--dry-run"]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["to"].clone()),
        (json!("full"), json!("1.2.0"))
    );
    assert!(r["bytes"].as_u64().unwrap() > 0);
    assert!(snapshot(&env.install()).is_empty());
    let r = env
        .molt(&["check", "--config", "molt.toml", "--json"])
        .success()
        .result();
    assert_eq!(r["kind"], "full");
    assert!(snapshot(&env.install()).is_empty());
}

#[test]
fn plain_path_sources_work_like_file_urls() {
    let env = Env::new();
    let [_, _, t3] = reference_releases(&env);
    env.config("repo", "");
    env.apply(&[]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t3),
        "install from a plain path",
    );
}

/// Bytes of the regular files under `root` (links count 0, as in a package's unpacked size).
fn regular_bytes(root: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The `progress` events of one step, as (done, total) pairs.
fn progress_of(lines: &[serde_json::Value], what: &str) -> Vec<(u64, u64)> {
    lines
        .iter()
        .filter(|l| l["event"] == "progress" && l["what"] == what)
        .map(|l| (l["done"].as_u64().unwrap(), l["total"].as_u64().unwrap()))
        .collect()
}

#[test]
fn progress_is_reported_for_the_download_the_staging_and_the_install() {
    let env = Env::new();
    let [t1, _, _] = reference_releases(&env);
    env.file_config();
    for (version, kind) in [("1.0.0", "full"), ("1.1.0", "patch")] {
        let run = env.apply(&["--version", version]).success();
        let lines = run.json_lines();
        assert_eq!(run.result()["kind"], kind);
        for (what, unit) in [
            ("download", "bytes"),
            ("extract", "bytes"),
            ("apply", "ops"),
        ] {
            let steps = progress_of(&lines, what);
            assert!(
                !steps.is_empty(),
                "no {what} progress for {version}: {lines:?}"
            );
            let total = steps[0].1;
            assert!(
                steps
                    .windows(2)
                    .all(|w| w[0].0 <= w[1].0 && w[1].1 == total),
                "{what} progress of {version} goes back or changes its total: {steps:?}"
            );
            assert_eq!(
                steps.last().unwrap(),
                &(total, total),
                "{what} of {version}"
            );
            assert!(lines.iter().any(|l| l["what"] == what && l["unit"] == unit));
        }
        assert_eq!(
            progress_of(&lines, "download").last().unwrap().0,
            run.result()["bytes"].as_u64().unwrap()
        );
        if kind == "full" {
            // Staging a full package writes every file of the release.
            assert_eq!(
                progress_of(&lines, "extract").last().unwrap().0,
                regular_bytes(&t1)
            );
        }
    }
    // Without a terminal and without --json, a line per quarter of each step goes to stderr.
    let run = env
        .molt(&["apply", "--config", "molt.toml", "--version", "1.2.0"])
        .success();
    for what in ["download", "extract", "apply"] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.starts_with(&format!("{what}: ")) && l.ends_with("(100%)")),
            "no finished {what} progress line in {}",
            run.stderr
        );
    }
}
