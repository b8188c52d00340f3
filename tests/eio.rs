//! EIO at every durable step, as a property: for the reference patch, the full update and a
//! rollback, make the k-th durable step fail with `EIO` (`MOLT_TEST_FAIL_AT_STEP=k`, after its
//! effect, like an fsync reporting a lost writeback) for every k, and check that the exit code
//! tells the truth about the tree:
//!
//! - 0 ⇒ the tree is exactly the new release, state agrees, and the failure is reported as a
//!   warning (it happened after the commit record);
//! - 1 or 3 ⇒ the tree is exactly the old release, state agrees, and the JSON error names the
//!   errno (`"os_error": "EIO"`);
//! - 4 ⇒ the message names the transaction directory, and the next command resolves it to
//!   exactly old or exactly new.
//!
//! Each time, the next command leaves no transaction behind, `molt verify` is clean, and (for
//! updates) a later apply still reaches the new release.

use std::path::Path;

use crate::craft::reference_releases;
use crate::crash::{copy_tree, steps_of};
use crate::util::{Env, Snapshot, assert_same_tree, snapshot, tree_snapshot};

/// What one flow's runs ended with, by exit code.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    failed: usize,
    manual: usize,
}

struct Flow<'a> {
    args: &'a [&'a str],
    old: &'a Snapshot,
    old_version: &'a str,
    new: &'a Snapshot,
    new_version: &'a str,
    /// The command that brings the install to the new release afterwards (updates only).
    reapply: Option<&'a [&'a str]>,
}

fn txn_dir_is_empty(env: &Env) -> bool {
    let dir = env.install().join(".molt/txn");
    !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none()
}

fn eio_at_every_step(env: &Env, pristine: &Path, flow: &Flow) -> (usize, Tally) {
    copy_tree(pristine, &env.install());
    let mut args = flow.args.to_vec();
    args.push("--json");
    let counted = env
        .molt_with_env(&args, &[("MOLT_TEST_REPORT_STEPS", "1")])
        .success();
    let total = steps_of(&counted);
    assert!(total >= 5, "suspiciously few steps: {total}");
    assert_same_tree(&snapshot(&env.install()), flow.new, "uninterrupted run");

    let mut tally = Tally::default();
    for k in 1..=total {
        copy_tree(pristine, &env.install());
        let k_str = k.to_string();
        let run = env.molt_with_env(&args, &[("MOLT_TEST_FAIL_AT_STEP", &k_str)]);
        let ctx = format!(
            "step {k}: exit {}\n--- stdout\n{}\n--- stderr\n{}",
            run.code, run.stdout, run.stderr
        );
        assert!(
            run.stderr
                .contains(&format!("molt: EIO injected at step {k} ")),
            "{ctx}"
        );
        let result = run.result();
        let now = snapshot(&env.install());
        let version = || env.installed_version();
        match run.code {
            0 => {
                tally.ok += 1;
                assert_same_tree(&now, flow.new, &format!("step {k}: exit 0 but not new"));
                assert_eq!(version(), flow.new_version, "{ctx}");
                let warnings = result["warnings"].as_array().cloned().unwrap_or_default();
                assert!(
                    warnings
                        .iter()
                        .any(|w| w.as_str().unwrap_or("").contains("os error 5")),
                    "step {k}: exit 0 must report the injected EIO as a warning\n{ctx}"
                );
            }
            1 | 3 => {
                tally.failed += 1;
                assert_same_tree(&now, flow.old, &format!("step {k}: exit 1/3 but not old"));
                assert_eq!(result["os_error"], "EIO", "{ctx}");
                assert_eq!(version(), flow.old_version, "{ctx}");
            }
            4 => {
                tally.manual += 1;
                let error = result["error"].as_str().unwrap_or_default().to_owned();
                assert!(error.contains(".molt/txn/"), "{ctx}");
                env.molt(&["status", "--config", "molt.toml"]).success();
                let now = snapshot(&env.install());
                if &now == flow.old {
                    assert_eq!(version(), flow.old_version, "{ctx}");
                } else {
                    assert_same_tree(&now, flow.new, &format!("step {k}: unresolved after 4"));
                    assert_eq!(version(), flow.new_version, "{ctx}");
                }
            }
            other => panic!("step {k}: unexpected exit {other}\n{ctx}"),
        }
        // The next command finishes whatever housekeeping is left.
        env.molt(&["status", "--config", "molt.toml"]).success();
        assert!(
            txn_dir_is_empty(env),
            "step {k}: transaction left behind\n{ctx}"
        );
        env.molt(&["verify", "--config", "molt.toml"]).success();
        if let Some(reapply) = flow.reapply {
            env.molt(reapply).success();
            assert_same_tree(
                &snapshot(&env.install()),
                flow.new,
                &format!("step {k}: update after the failure"),
            );
        }
    }
    (total, tally)
}

#[test]
fn eio_at_every_step_of_a_patch_and_a_full_update_leaves_old_or_new_as_the_exit_code_says() {
    let env = Env::new();
    let [t1, t2, _] = reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    let (old, new) = (tree_snapshot(&t1), tree_snapshot(&t2));
    let pristine = env.path("pristine");
    copy_tree(&env.install(), &pristine);

    let patch = ["apply", "--config", "molt.toml", "--version", "1.1.0"];
    let full = [
        "apply",
        "--config",
        "molt.toml",
        "--version",
        "1.1.0",
        "--force-full",
    ];
    for (name, args) in [("patch", &patch[..]), ("full update", &full[..])] {
        let flow = Flow {
            args,
            old: &old,
            old_version: "1.0.0",
            new: &new,
            new_version: "1.1.0",
            reapply: Some(args),
        };
        let (total, t) = eio_at_every_step(&env, &pristine, &flow);
        eprintln!(
            "eio test: {name}: {total}/{total} steps hold (exit 0: {}, exit 1/3: {}, exit 4: {})",
            t.ok, t.failed, t.manual
        );
    }
}

#[test]
fn eio_at_every_step_of_a_rollback_leaves_old_or_new_as_the_exit_code_says() {
    let env = Env::new();
    let [t1, t2, _] = reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    env.apply(&["--version", "1.1.0"]).success();
    let pristine = env.path("pristine");
    copy_tree(&env.install(), &pristine);
    let (at_new, at_old) = (tree_snapshot(&t2), tree_snapshot(&t1));
    let flow = Flow {
        args: &["rollback", "--config", "molt.toml"],
        old: &at_new,
        old_version: "1.1.0",
        new: &at_old,
        new_version: "1.0.0",
        reapply: None,
    };
    let (total, t) = eio_at_every_step(&env, &pristine, &flow);
    eprintln!(
        "eio test: rollback: {total}/{total} steps hold (exit 0: {}, exit 1/3: {}, exit 4: {})",
        t.ok, t.failed, t.manual
    );
}

/// EIO at every durable step of a publish (the manifest pair's three renames): exit 1 leaves the
/// repository serving the release before it; exit 0 has published the new one, says what failed
/// as a warning, and its manifest pair verifies. Either way an install then reaches the newest
/// release the repository offers, and the next publish lands.
#[test]
fn eio_at_every_publish_step_tells_the_truth_about_the_repository() {
    let env = Env::new();
    env.keygen("release");
    let t1 = env.tree("1.0.0", crate::craft::R1);
    let t2 = env.tree("1.1.0", crate::craft::R2);
    env.publish(&t1, "1.0.0").success();
    let pristine = env.path("pristine-repo");
    copy_tree(&env.repo(), &pristine);
    let args = crate::util::publish_args(&t2, "1.1.0");
    let counted = env
        .molt_with_env(&args, &[("MOLT_TEST_REPORT_STEPS", "1")])
        .success();
    let total = steps_of(&counted);
    assert_eq!(total, 3, "{}", counted.stderr);

    let mut codes = Vec::new();
    for k in 1..=total {
        copy_tree(&pristine, &env.repo());
        let k_str = k.to_string();
        let run = env.molt_with_env(&args, &[("MOLT_TEST_FAIL_AT_STEP", &k_str)]);
        let ctx = format!(
            "step {k}: exit {}\n--- stdout\n{}\n--- stderr\n{}",
            run.code, run.stdout, run.stderr
        );
        codes.push(run.code);
        // What clients read now: `molt check` verifies the pair and names the newest release.
        let _ = std::fs::remove_dir_all(env.install());
        env.file_config();
        let check = env
            .molt(&["check", "--config", "molt.toml", "--json"])
            .success();
        let offered = check.result()["to"].clone();
        match run.code {
            0 => {
                assert!(run.stderr.contains("warning: "), "{ctx}");
                assert_eq!(env.manifest()["serial"], 2, "{ctx}");
                assert_eq!(offered, "1.1.0", "{ctx}\n{}", check.stdout);
            }
            1 => {
                assert_eq!(env.manifest()["serial"], 1, "{ctx}");
                assert_eq!(offered, "1.0.0", "{ctx}\n{}", check.stdout);
            }
            other => panic!("unexpected exit {other}: {ctx}"),
        }
        // The next publish lands, from whichever state this left.
        env.molt(&args).success();
        assert_eq!(
            env.manifest()["serial"],
            2 + u64::from(run.code == 0),
            "{ctx}"
        );
    }
    // The bridge's rename is before the commit point; the manifest's and the last signature's
    // are after it.
    assert_eq!(codes, [1, 0, 0]);
}
