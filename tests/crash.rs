//! Kill -9 at every durable step of a reference update, then prove the next command leaves
//! the install exactly at the old release or exactly at the new one — never in between — and
//! that the install can still be updated afterwards.

use std::path::Path;
use std::process::Command;

use crate::craft::reference_releases;
use crate::util::{Env, Snapshot, assert_same_tree, snapshot, tree_snapshot};

pub(crate) fn steps_of(run: &crate::util::Run) -> usize {
    run.stderr
        .lines()
        .find_map(|l| l.strip_prefix("molt: steps taken: "))
        .unwrap_or_else(|| panic!("no step count in stderr:\n{}", run.stderr))
        .trim()
        .parse()
        .unwrap()
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Runs `apply args` crashing at every step k of it, checking recovery each time.
fn crash_at_every_step(
    env: &Env,
    pristine: &Path,
    args: &[&str],
    old: &Snapshot,
    new: &Snapshot,
    new_version: &str,
) -> usize {
    copy_tree(pristine, &env.install());
    let mut full_args = args.to_vec();
    full_args.push("--json");
    let counted = env
        .molt_with_env(&full_args, &[("MOLT_TEST_REPORT_STEPS", "1")])
        .success();
    let total = steps_of(&counted);
    assert!(total >= 5, "suspiciously few steps: {total}");
    assert_same_tree(&snapshot(&env.install()), new, "uninterrupted update");

    for k in 1..=total {
        copy_tree(pristine, &env.install());
        let k_str = k.to_string();
        let crashed = env.molt_with_env(&full_args, &[("MOLT_TEST_CRASH_AT_STEP", &k_str)]);
        assert_eq!(
            crashed.code,
            128 + 9,
            "step {k}: expected SIGKILL\n{}",
            crashed.stderr
        );
        // The next command that touches the install recovers it.
        let status = env
            .molt(&["status", "--config", "molt.toml", "--json"])
            .success();
        let s = status.json_lines().pop().unwrap();
        let now = snapshot(&env.install());
        if &now == old {
            assert_eq!(
                s["version"], "1.0.0",
                "step {k}: old tree but state says {s}"
            );
        } else {
            assert_same_tree(&now, new, &format!("step {k}: neither old nor new"));
            assert_eq!(
                s["version"], new_version,
                "step {k}: new tree but state says {s}"
            );
        }
        assert!(
            !env.install().join(".molt/txn").exists()
                || std::fs::read_dir(env.install().join(".molt/txn"))
                    .unwrap()
                    .next()
                    .is_none(),
            "step {k}: transaction left behind"
        );
        // And the install is still updatable.
        env.molt(&full_args).success();
        assert_same_tree(
            &snapshot(&env.install()),
            new,
            &format!("step {k}: update after recovery"),
        );
    }
    total
}

#[test]
fn kill_at_every_step_of_a_patch_and_a_full_update_recovers_to_old_or_new() {
    let env = Env::new();
    let [t1, t2, _] = reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    let old = tree_snapshot(&t1);
    let new = tree_snapshot(&t2);
    let pristine = env.path("pristine");
    copy_tree(&env.install(), &pristine);

    let patch_steps = crash_at_every_step(
        &env,
        &pristine,
        &["apply", "--config", "molt.toml", "--version", "1.1.0"],
        &old,
        &new,
        "1.1.0",
    );
    let full_steps = crash_at_every_step(
        &env,
        &pristine,
        &[
            "apply",
            "--config",
            "molt.toml",
            "--version",
            "1.1.0",
            "--force-full",
        ],
        &old,
        &new,
        "1.1.0",
    );
    eprintln!(
        "crash test: patch update has {patch_steps} steps, full update {full_steps}; every one recovered"
    );
}

#[test]
fn kill_at_every_step_of_a_rollback_recovers() {
    let env = Env::new();
    let [t1, t2, _] = reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    env.apply(&["--version", "1.1.0"]).success();
    let pristine = env.path("pristine");
    copy_tree(&env.install(), &pristine);
    let at_new = tree_snapshot(&t2);
    let at_old = tree_snapshot(&t1);

    let counted = env
        .molt_with_env(
            &["rollback", "--config", "molt.toml"],
            &[("MOLT_TEST_REPORT_STEPS", "1")],
        )
        .success();
    let total = steps_of(&counted);
    assert_same_tree(&snapshot(&env.install()), &at_old, "uninterrupted rollback");
    for k in 1..=total {
        copy_tree(&pristine, &env.install());
        let k_str = k.to_string();
        let crashed = env.molt_with_env(
            &["rollback", "--config", "molt.toml"],
            &[("MOLT_TEST_CRASH_AT_STEP", &k_str)],
        );
        assert_eq!(crashed.code, 137, "step {k}\n{}", crashed.stderr);
        env.molt(&["status", "--config", "molt.toml"]).success();
        let now = snapshot(&env.install());
        if now != at_new {
            assert_same_tree(&now, &at_old, &format!("rollback step {k}"));
            assert_eq!(env.installed_version(), "1.0.0");
        } else {
            assert_eq!(env.installed_version(), "1.1.0");
        }
    }
    eprintln!("crash test: rollback has {total} steps; every one recovered");
}
