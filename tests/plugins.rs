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
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("newest release on channel stable is 1.2.0")
            && reason.contains("rolled back from it (installed on"),
        "{reason}"
    );
    let status = env
        .molt(&["status", "--config", "molt.toml", "--json"])
        .success()
        .json_lines()
        .pop()
        .unwrap();
    assert_eq!(status["skipped"][0]["version"], "1.2.0", "{status}");
    assert_eq!(status["skipped"][0]["outcome"], "rolled-back", "{status}");
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
fn a_validator_hoarding_descriptors_then_sleeping_cannot_make_the_undo_fail() {
    let env = Env::new();
    let before = at_1_0_0_with(
        &env,
        &format!(
            "[limits]\nplugin_timeout_ms = 1000\n\n[[validators]]\nplugin = \"{}\"\n\
             [validators.config]\nmode = \"hoard\"\npath = \"bin/app\"\ncount = 1000\nsleep = true\n",
            wasm("test_hostile_validator").display()
        ),
    );
    let run = env
        .molt_in_shell(
            "ulimit -n 256",
            &[
                "apply",
                "--config",
                "molt.toml",
                "--json",
                "--version",
                "1.1.0",
            ],
        )
        .code(1);
    // Under 256 descriptors the guest runs out of them before it fills its resource table, so
    // it is asleep in the host when its time is up.
    run.error_contains(&["test_hostile_validator.wasm", "did not finish"]);
    assert_unchanged(&env, &before);
    let status = env
        .molt(&["status", "--config", "molt.toml", "--json"])
        .success()
        .json_lines()
        .pop()
        .unwrap();
    assert_eq!(status["version"], "1.0.0", "{status}");
    assert_eq!(
        status["failed_validation"],
        json!([]),
        "a validator that timed out gave no verdict: {status}"
    );
}

#[test]
fn a_mistyped_plugin_config_key_is_a_usage_error_before_anything_is_fetched() {
    let env = Env::new();
    let before = at_1_0_0_with(&env, "");
    let extra = format!(
        "[[validators]]\nplugin = \"{}\"\n[validators.config]\npth = \"bin/app\"\n",
        wasm("version_file").display()
    );
    env.config(&format!("file://{}", env.repo().display()), &extra);
    env.molt(&["check", "--config", "molt.toml"])
        .code(2)
        .error_contains(&["version_file.wasm", "validators[0].config.pth", "line 8"]);
    // apply refuses the same way, before the (unreachable) repository is read.
    env.config("http://127.0.0.1:9/", &extra);
    env.apply(&["--version", "1.1.0"]).code(2).error_contains(&[
        "version_file.wasm",
        "pth",
        "line 8",
    ]);
    assert_unchanged(&env, &before);
    let status = env
        .molt(&["status", "--config", "molt.toml", "--json"])
        .success()
        .json_lines()
        .pop()
        .unwrap();
    assert_eq!(status["failed_validation"], json!([]), "{status}");
    // A strategy's config is checked the same way.
    env.config(
        &format!("file://{}", env.repo().display()),
        "[strategy]\nplugin = \"builtin:default\"\n[strategy.config]\npin = 3\n",
    );
    env.molt(&["check", "--config", "molt.toml"])
        .code(2)
        .error_contains(&["builtin:default", "strategy.config.pin", "line 8"]);
}

#[test]
fn a_component_of_another_molt_plugin_0_1_0_is_refused_naming_interface_and_function() {
    let env = Env::new();
    reference_releases(&env);
    let path = wasm("test_wrong_import");
    env.config(
        &format!("file://{}", env.repo().display()),
        &format!("[strategy]\nplugin = \"{}\"\n", path.display()),
    );
    let run = env.molt(&["check", "--config", "molt.toml"]).code(2);
    let text = run.error_text();
    assert!(
        text.contains("now-ms") && text.contains("molt:plugin/host@0.1.0"),
        "{text}"
    );
    assert!(text.contains("rebuild the plugin"), "{text}");
    assert!(!text.contains("check the plugin path"), "{text}");
    let doc = env
        .molt(&["plugin", "inspect", path.to_str().unwrap(), "--json"])
        .success()
        .json_lines()
        .pop()
        .unwrap();
    assert_eq!(doc["compatible"], false, "{doc}");
    assert!(
        doc["incompatible_reason"]
            .as_str()
            .unwrap()
            .contains("now-ms"),
        "{doc}"
    );
}

#[test]
fn a_damaged_compiled_plugin_in_the_cache_is_recompiled_not_run() {
    let env = Env::new();
    at_1_0_0_with(&env, "");
    let cache = env.install().join(".molt/cache/plugins");
    let entries: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!entries.is_empty());
    for entry in &entries {
        let mut bytes = fs::read(entry).unwrap();
        let half = bytes.len() / 2;
        for byte in &mut bytes[half..] {
            *byte = !*byte;
        }
        let temp = entry.with_extension("tmp");
        fs::write(&temp, &bytes).unwrap();
        fs::rename(&temp, entry).unwrap();
    }
    let run = env
        .molt(&["-v", "check", "--config", "molt.toml", "--json"])
        .success();
    assert!(run.stderr.contains("damaged cache entry"), "{}", run.stderr);
    env.molt(&["check", "--config", "molt.toml"]).success();
}

#[test]
fn plugin_inspect_caches_the_compiled_component() {
    let env = Env::new();
    let cache_home = env.path("cache-home");
    let path = wasm("version_file");
    let xdg = cache_home.to_str().unwrap();
    for _ in 0..2 {
        env.molt_with_env(
            &["plugin", "inspect", path.to_str().unwrap(), "--json"],
            &[("XDG_CACHE_HOME", xdg)],
        )
        .success();
    }
    let entries = fs::read_dir(cache_home.join("molt/plugins"))
        .unwrap()
        .count();
    assert_eq!(entries, 1);
}

#[test]
fn plugin_paths_that_are_not_regular_files_are_refused_at_once() {
    let env = Env::new();
    reference_releases(&env);
    let fifo = env.path("plugin.wasm");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, what) in [
        (fifo.to_str().unwrap(), "FIFO"),
        ("/dev/zero", "character device"),
    ] {
        env.config(
            &format!("file://{}", env.repo().display()),
            &format!("[strategy]\nplugin = \"{path}\"\n"),
        );
        env.molt(&["check", "--config", "molt.toml"])
            .code(2)
            .error_contains(&[path, what]);
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

/// Runs `cargo ARGS` in `dir` as a plugin author would, with this build's own flags removed
/// and a target directory kept between test runs.
fn author_cargo(dir: &std::path::Path, args: &[&str]) {
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cmd.args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key.contains("RUSTFLAGS") {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "CARGO_TARGET_DIR",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-new"),
    );
    let output = cmd.output().expect("run cargo");
    assert!(
        output.status.success(),
        "cargo {args:?} in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn plugin_new_writes_crates_that_build_as_printed_and_load_in_molt_check() {
    let env = Env::new();
    reference_releases(&env);
    for (name, kind) in [("my-strategy", "strategy"), ("my-validator", "validator")] {
        let dir = env.path(name);
        let created = env
            .molt(&[
                "plugin",
                "new",
                name,
                "--kind",
                kind,
                "--dir",
                dir.to_str().unwrap(),
                "--json",
            ])
            .success()
            .result();
        assert_eq!(
            created["build"],
            "cargo build --release --target wasm32-wasip2"
        );
        let toml = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            toml.contains("[workspace]") && toml.contains("[profile.release]"),
            "{toml}"
        );
        assert!(dir.join("README.md").is_file());
        // Exactly the printed steps.
        author_cargo(&dir, &["test"]);
        let build: Vec<&str> = created["build"]
            .as_str()
            .unwrap()
            .split(' ')
            .skip(1)
            .collect();
        author_cargo(&dir, &build);
        let wasm = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("plugin-new/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let inspected = env
            .molt(&["plugin", "inspect", wasm.to_str().unwrap(), "--json"])
            .success()
            .json_lines()
            .pop()
            .unwrap();
        assert_eq!(inspected["compatible"], true, "{inspected}");
        assert_eq!(inspected["world"], kind, "{inspected}");
        let section = match kind {
            "strategy" => format!(
                "[strategy]\nplugin = \"{}\"\n[strategy.config]\nmajor = 1\n",
                wasm.display()
            ),
            _ => format!(
                "[[validators]]\nplugin = \"{}\"\n[validators.config]\npaths = [\"bin/app\"]\n",
                wasm.display()
            ),
        };
        env.config(&format!("file://{}", env.repo().display()), &section);
        let r = env
            .molt(&["check", "--config", "molt.toml", "--json"])
            .success()
            .result();
        assert_eq!(r["to"], "1.2.0", "{r}");
        // The generated config type refuses a mistyped key when molt loads the plugin.
        env.config(
            &format!("file://{}", env.repo().display()),
            &section.replace("major", "majr").replace("paths", "pahts"),
        );
        env.molt(&["check", "--config", "molt.toml"])
            .code(2)
            .error_contains(&[name.replace('-', "_").as_str(), "line 8", "unknown field"]);
    }
}
