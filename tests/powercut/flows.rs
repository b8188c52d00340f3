//! The reference patch, full update and rollback of `crash.rs`, with the install and its state
//! dir on the power-cut filesystem: (a) the power goes right after molt reported success; (b)
//! molt is killed at each durable step k (`MOLT_TEST_CRASH_AT_STEP`) and the power goes with it.
//! After the reboot the tree must be exactly the old or exactly the new release, `molt status`
//! must agree, `molt verify` must pass, a second cut must not undo what the recovery did, and a
//! later apply must still reach the new release and survive a cut too.
//!
//! Every step is checked even when an earlier one failed, so a run reports `n/N` per flow and
//! lists each failing step.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::fs::{Image, Mounted};
use crate::craft::reference_releases;
use crate::util::{Env, Run, Snapshot, assert_same_tree, snapshot, tree_snapshot};

const PATCH: &[&str] = &["apply", "--config", "molt.toml", "--version", "1.1.0"];
const FULL: &[&str] = &[
    "apply",
    "--config",
    "molt.toml",
    "--version",
    "1.1.0",
    "--force-full",
];
const ROLLBACK: &[&str] = &["rollback", "--config", "molt.toml"];

/// An env whose install is on a power-cut filesystem, with disk images at 1.0.0 and 1.1.0.
struct Scene {
    // Field order: the filesystem is unmounted before the env's directory is removed.
    fs: Mounted,
    env: Env,
    old: Snapshot,
    new: Snapshot,
    at_old: Image,
    at_new: Image,
}

impl Scene {
    fn new() -> Scene {
        let env = Env::new();
        let [t1, t2, _] = reference_releases(&env);
        env.file_config();
        let mut fs = Mounted::new(&env.install());
        env.apply(&["--version", "1.0.0"]).success();
        fs.sync_all();
        let at_old = fs.disk_image();
        env.apply(&["--version", "1.1.0"]).success();
        fs.sync_all();
        let at_new = fs.disk_image();
        Scene {
            fs,
            env,
            old: tree_snapshot(&t1),
            new: tree_snapshot(&t2),
            at_old,
            at_new,
        }
    }

    fn molt(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut args = args.to_vec();
        args.push("--json");
        self.env.molt_with_env(&args, envs)
    }

    /// Which release the tree is, asserting it is exactly one of the two.
    #[track_caller]
    fn release_of(&self, what: &str) -> &'static str {
        let now = snapshot(&self.env.install());
        if now == self.old {
            "1.0.0"
        } else {
            assert_same_tree(&now, &self.new, &format!("{what}: neither old nor new"));
            "1.1.0"
        }
    }

    /// Runs the next command (`molt status`, which recovers), then checks tree, state,
    /// leftovers and `molt verify`; returns the release the install is at.
    #[track_caller]
    fn settle(&self, what: &str) -> &'static str {
        let status = self
            .molt(&["status", "--config", "molt.toml"], &[])
            .success();
        let state = status.json_lines().pop().unwrap();
        let release = self.release_of(what);
        assert_eq!(
            state["version"], release,
            "{what}: the tree is {release} but molt status says {state}"
        );
        let txn = self.env.install().join(".molt/txn");
        let left: Vec<_> = std::fs::read_dir(&txn)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{what}: transactions left behind: {left:?}"
        );
        let verify = self.molt(&["verify", "--config", "molt.toml"], &[]);
        assert_eq!(
            verify.code, 0,
            "{what}: molt verify fails at {release}:\n{}\n{}",
            verify.stdout, verify.stderr
        );
        release
    }

    /// Cuts the power and asserts the tree is still `release`, before any command runs.
    #[track_caller]
    fn cut_and_expect(&mut self, release: &str, what: &str) {
        self.fs.cut_power();
        let now = self.release_of(&format!("{what}, after a power cut"));
        assert_eq!(
            now, release,
            "{what}: a power cut turned {release} into {now}"
        );
    }

    fn steps_of(&mut self, start: &Image, args: &[&str]) -> usize {
        self.fs.restore(start);
        let run = self
            .molt(args, &[("MOLT_TEST_REPORT_STEPS", "1")])
            .success();
        run.stderr
            .lines()
            .find_map(|l| l.strip_prefix("molt: steps taken: "))
            .unwrap_or_else(|| panic!("no step count in stderr:\n{}", run.stderr))
            .trim()
            .parse()
            .unwrap()
    }

    /// (a): `args` succeeds from `start`, the power goes, the tree is `release`.
    fn cut_after_success(&mut self, start: &Image, args: &[&str], release: &str, what: &str) {
        self.fs.restore(start);
        self.molt(args, &[]).success();
        self.cut_and_expect(release, what);
        assert_eq!(self.settle(what), release, "{what}");
    }

    /// (b) for one step: kill at `k`, cut, recover, cut, verify, update to 1.1.0, cut.
    fn kill_and_cut_at(&mut self, start: &Image, args: &[&str], k: usize, what: &str) {
        self.fs.restore(start);
        let k_str = k.to_string();
        let crashed = self.molt(args, &[("MOLT_TEST_CRASH_AT_STEP", &k_str)]);
        assert_eq!(
            crashed.code, 137,
            "{what}: expected SIGKILL\n{}",
            crashed.stderr
        );
        self.fs.cut_power();
        let recovered = self.settle(&format!("{what}, recovery"));
        self.cut_and_expect(recovered, &format!("{what}, recovery"));
        assert_eq!(self.settle(&format!("{what}, after recovery")), recovered);
        self.molt(PATCH, &[]).success();
        self.cut_and_expect("1.1.0", &format!("{what}, later update"));
        assert_eq!(self.settle(&format!("{what}, later update")), "1.1.0");
    }

    /// Runs `check` for each of `steps`, catching failures; returns the failed ones' messages.
    fn each_step(&mut self, steps: usize, mut check: impl FnMut(&mut Scene, usize)) -> Vec<String> {
        let mut failed = Vec::new();
        for k in 1..=steps {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(self, k))) {
                failed.push(format!("step {k}: {}", first_line(&*panic)));
            }
        }
        failed
    }
}

/// The first line of a caught panic's message (the full message was already printed).
fn first_line(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    msg.lines().next().unwrap_or("").to_owned()
}

#[test]
fn power_cut_after_a_successful_apply_or_rollback_keeps_its_result() {
    let mut s = Scene::new();
    let (at_old, at_new) = (s.at_old.clone(), s.at_new.clone());
    let flows: [(&str, &Image, &[&str], &str); 3] = [
        ("patch", &at_old, PATCH, "1.1.0"),
        ("full update", &at_old, FULL, "1.1.0"),
        ("rollback", &at_new, ROLLBACK, "1.0.0"),
    ];
    let mut failed = Vec::new();
    for (name, start, args, release) in flows {
        let what = format!("{name}, power cut after success");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| {
            s.cut_after_success(start, args, release, &what)
        })) {
            failed.push(first_line(&*panic));
        }
    }
    eprintln!(
        "power-cut test (a): {}/3 flows kept their result",
        3 - failed.len()
    );
    assert!(
        failed.is_empty(),
        "lost after a power cut:\n{}",
        failed.join("\n")
    );
}

#[test]
fn kill_and_power_cut_at_every_step_recovers_to_old_or_new() {
    let mut s = Scene::new();
    let (at_old, at_new) = (s.at_old.clone(), s.at_new.clone());
    let flows: [(&str, &Image, &[&str]); 3] = [
        ("patch", &at_old, PATCH),
        ("full update", &at_old, FULL),
        ("rollback", &at_new, ROLLBACK),
    ];
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (name, start, args) in flows {
        let steps = s.steps_of(start, args);
        assert!(steps >= 5, "{name}: suspiciously few steps: {steps}");
        let failed = s.each_step(steps, |s, k| {
            s.kill_and_cut_at(start, args, k, &format!("{name} step {k}"))
        });
        report.push(format!("{name} {}/{steps}", steps - failed.len()));
        failures.extend(failed.into_iter().map(|f| format!("{name} {f}")));
    }
    eprintln!(
        "power-cut test (b): steps recovered after kill + power cut: {}",
        report.join(", ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
