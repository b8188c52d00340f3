//! Strategy and validator plugins through the real binary: real components built from
//! `plugins/` (molt's own and the hostile `test-*` ones), configured in `molt.toml`.

use std::fs;
use std::path::PathBuf;

use serde_json::json;

use crate::craft::reference_releases;
use crate::util::{Env, Snapshot, assert_same_tree, snapshot, tree_snapshot};

fn wasm(name: &str) -> PathBuf {
    PathBuf::from(env!("MOLT_TEST_PLUGIN_DIR")).join(format!("{name}.wasm"))
}

/// Three releases published; 1.0.0 installed with the default config; then `molt.toml` is
/// rewritten with `extra` (plugin sections). Returns the install snapshot at 1.0.0.
fn at_1_0_0_with(env: &Env, extra: &str) -> Snapshot {
    reference_releases(env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    env.config(&format!("file://{}", env.repo().display()), extra);
    snapshot(&env.install())
}

fn hostile_strategy(mode: &str) -> String {
    format!(
        "[limits]\nplugin_timeout_ms = 300\nplugin_memory_mb = 16\n\n[strategy]\nplugin = \"{}\"\n[strategy.config]\nmode = \"{mode}\"\n",
        wasm("test_hostile_strategy").display()
    )
}

#[track_caller]
fn assert_unchanged(env: &Env, before: &Snapshot) {
    assert_same_tree(
        &snapshot(&env.install()),
        before,
        "install after a refused plugin",
    );
    assert_eq!(env.installed_version(), "1.0.0");
}

#[test]
fn passing_validators_keep_the_new_release() {
    let env = Env::new();
    let trees = reference_releases(&env);
    let extra = format!(
        "[[validators]]\nplugin = \"builtin:require-files\"\n[validators.config]\npaths = [\"bin/app\", \"conf/app.yml\"]\n\n\
         [[validators]]\nplugin = \"{}\"\n[validators.config]\npath = \"bin/app\"\n",
        wasm("version_file").display()
    );
    env.config(&format!("file://{}", env.repo().display()), &extra);
    let run = env.apply(&["--version", "1.1.0"]).success();
    let validated: Vec<_> = run
        .json_lines()
        .into_iter()
        .filter(|l| l["event"] == "validated")
        .collect();
    assert_eq!(validated.len(), 2, "{}", run.stdout);
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&trees[1]),
        "validated 1.1.0",
    );
}

#[test]
fn failing_validator_restores_the_exact_old_tree_and_says_why() {
    let env = Env::new();
    let before = at_1_0_0_with(
        &env,
        "[[validators]]\nplugin = \"builtin:require-files\"\n[validators.config]\npaths = [\"bin/missing-daemon\"]\n",
    );
    env.apply(&["--version", "1.1.0"])
        .code(1)
        .error_contains(&["require-files", "bin/missing-daemon"]);
    assert_unchanged(&env, &before);
    let status = env
        .molt(&["status", "--config", "molt.toml", "--json"])
        .success()
        .json_lines()
        .pop()
        .unwrap();
    assert_eq!(status["failed_validation"], json!(["1.1.0"]), "{status}");
}

#[test]
fn default_strategy_skips_a_release_this_install_rolled_back_from() {
    let env = Env::new();
    let [_, t2, t3] = reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.1.0"]).success();
    env.apply(&[]).success();
    env.molt(&["rollback", "--config", "molt.toml"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t2),
        "rolled back to 1.1.0",
    );
    let r = env.apply(&[]).success().result();
    assert_eq!(
        r["kind"], "none",
        "a timer must not re-apply the bad release: {r}"
    );
    let r = env.apply(&["--version", "1.2.0"]).success().result();
    assert_eq!(r["kind"], "patch");
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t3),
        "explicit --version 1.2.0",
    );
}

#[test]
fn staged_rollout_holds_back_devices_outside_the_percentage() {
    let env = Env::new();
    at_1_0_0_with(
        &env,
        &format!(
            "[strategy]\nplugin = \"{}\"\n[strategy.config]\npercent = 0\n",
            wasm("staged_rollout").display()
        ),
    );
    let r = env.apply(&[]).success().result();
    assert_eq!(r["kind"], "none", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("rolled out"), "{r}");
    env.config(
        &format!("file://{}", env.repo().display()),
        &format!(
            "[strategy]\nplugin = \"{}\"\n[strategy.config]\npercent = 100\n",
            wasm("staged_rollout").display()
        ),
    );
    let r = env.apply(&[]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["to"].clone()),
        (json!("patch"), json!("1.2.0"))
    );
}

#[test]
fn maintenance_window_defers_updates_outside_the_window() {
    let env = Env::new();
    let before = at_1_0_0_with(&env, "");
    // A one-minute window twelve hours from now is never open during this test.
    let now = time::OffsetDateTime::now_utc();
    let start = now + time::Duration::hours(12);
    let end = start + time::Duration::minutes(1);
    let hhmm = |t: time::OffsetDateTime| format!("{:02}:{:02}", t.hour(), t.minute());
    env.config(
        &format!("file://{}", env.repo().display()),
        &format!(
            "[strategy]\nplugin = \"{}\"\n[strategy.config]\nstart = \"{}\"\nend = \"{}\"\n",
            wasm("maintenance_window").display(),
            hhmm(start),
            hhmm(end)
        ),
    );
    let r = env.apply(&[]).success().result();
    assert_eq!(r["kind"], "none");
    assert!(
        r["reason"].as_str().unwrap().contains("maintenance window"),
        "{r}"
    );
    assert_unchanged(&env, &before);
}

#[test]
fn hostile_strategies_are_stopped_and_change_nothing() {
    for (mode, needles) in [
        (
            "loop",
            &["test_hostile_strategy.wasm", "did not finish"][..],
        ),
        ("sleep", &["did not finish"][..]),
        ("memory", &["memory"][..]),
        ("panic", &["panicked on purpose"][..]),
        ("stack", &["crashed"][..]),
        ("bogus-version", &["9.9.9", "does not list"][..]),
    ] {
        let env = Env::new();
        let before = at_1_0_0_with(&env, &hostile_strategy(mode));
        let started = std::time::Instant::now();
        let run = env.apply(&[]);
        assert_eq!(run.code, 1, "mode {mode}: {}\n{}", run.stdout, run.stderr);
        run.error_contains(needles);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "mode {mode} took {:?}",
            started.elapsed()
        );
        assert_unchanged(&env, &before);
    }
}

#[test]
fn hostile_validators_cannot_write_or_escape_and_the_update_is_undone() {
    for mode in ["write", "escape", "loop"] {
        let env = Env::new();
        let before = at_1_0_0_with(
            &env,
            &format!(
                "[limits]\nplugin_timeout_ms = 300\n\n[[validators]]\nplugin = \"{}\"\n[validators.config]\nmode = \"{mode}\"\n",
                wasm("test_hostile_validator").display()
            ),
        );
        let run = env.apply(&["--version", "1.1.0"]).code(1);
        let text = run.error_text();
        assert!(
            !text.contains("SUCCEEDED"),
            "mode {mode}: the sandbox let something through: {text}"
        );
        if mode != "loop" {
            assert!(text.contains("refused"), "mode {mode}: {text}");
        }
        assert!(!env.install().join("evil").exists());
        assert_unchanged(&env, &before);
    }
}

#[test]
fn broken_plugins_are_reported_before_anything_is_fetched() {
    let env = Env::new();
    reference_releases(&env);
    let not_wasm = env.path("not-a-plugin.wasm");
    fs::write(&not_wasm, b"#!/bin/sh\necho hi\n").unwrap();
    // An unreachable repository: a plugin error must come first.
    env.config(
        "http://127.0.0.1:9/",
        &format!("[strategy]\nplugin = \"{}\"\n", not_wasm.display()),
    );
    env.apply(&[])
        .code(2)
        .error_contains(&["not-a-plugin.wasm", "not a WebAssembly component"]);
    env.config(
        "http://127.0.0.1:9/",
        &format!(
            "[strategy]\nplugin = \"{}\"\n",
            wasm("require_files").display()
        ),
    );
    env.apply(&[])
        .code(2)
        .error_contains(&["require_files.wasm", "validator", "strategy"]);
    env.config(
        "http://127.0.0.1:9/",
        "[[validators]]\nplugin = \"builtin:nope\"\n",
    );
    env.apply(&[])
        .code(2)
        .error_contains(&["nope", "builtin:default"]);
}

#[test]
fn plugin_inspect_describes_a_component() {
    let env = Env::new();
    let path = wasm("default");
    let doc = env
        .molt(&["plugin", "inspect", path.to_str().unwrap(), "--json"])
        .success()
        .json_lines()
        .pop()
        .unwrap();
    let text = doc.to_string();
    assert!(text.contains("strategy"), "{text}");
    assert!(text.contains("0.1.0"), "{text}");
    assert!(text.contains("molt:plugin/strategy-plugin@0.1.0"), "{text}");
    let human = env
        .molt(&["plugin", "inspect", path.to_str().unwrap()])
        .success();
    assert!(human.stdout.contains("default"), "{}", human.stdout);
}

#[test]
fn a_plugin_built_for_another_wit_version_is_refused_naming_both_versions() {
    let env = Env::new();
    reference_releases(&env);
    env.config(
        &format!("file://{}", env.repo().display()),
        &format!(
            "[strategy]\nplugin = \"{}\"\n",
            wasm("test_wrong_version").display()
        ),
    );
    env.apply(&[])
        .code(2)
        .error_contains(&["molt:plugin@0.2.0", "molt:plugin@0.1.0"]);
    assert!(snapshot(&env.install()).is_empty());
}

#[test]
fn the_template_plugin_keeps_an_install_within_its_major_version() {
    let env = Env::new();
    let [_, _, t3] = reference_releases(&env);
    let t4 = env.tree("2.0.0", &[("bin/app", "app 2.0.0\n", 0o755)]);
    env.publish(&t4, "2.0.0").success();
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    env.config(
        &format!("file://{}", env.repo().display()),
        &format!(
            "[strategy]\nplugin = \"{}\"\n[strategy.config]\nmajor = 1\n",
            wasm("template").display()
        ),
    );
    let r = env.apply(&[]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["to"].clone()),
        (json!("patch"), json!("1.2.0")),
        "{r}"
    );
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t3),
        "stayed on 1.x",
    );
    assert_eq!(env.apply(&[]).success().result()["kind"], "none");
}
