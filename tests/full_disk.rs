//! A full disk mid-update: the install sits on a small tmpfs, the next release does not fit, and
//! the update fails with exit 1, a message naming the path and the errno, and the old tree
//! intact — then
//! succeeds once there is room.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::craft::{R1, reference_releases};
use crate::util::{Env, assert_same_tree, snapshot, tree_snapshot};

/// A tmpfs mounted for the test's lifetime (needs root, as CI and the dev VMs run).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_update_and_keeps_the_old_release() {
    let env = Env::new();
    let Some(_fs) = Tmpfs::mount(&env.install(), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    };
    let [t1, ..] = reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    let serial = env.serial();

    // 1.3.0 adds 4 MiB of zeros: a tiny package that cannot be unpacked in 1 MiB.
    let mut big = R1.to_vec();
    let zeros = "\0".repeat(4 << 20);
    big.push(("data.bin", zeros.as_str(), 0o644));
    let t4 = env.tree("1.3.0", &big);
    env.publish(&t4, "1.3.0").success();

    let run = env.apply(&["--version", "1.3.0"]).code(1);
    let text = run.error_text().to_lowercase();
    assert!(text.contains("no space left"), "{text}");
    assert_eq!(run.result()["os_error"], "ENOSPC", "{text}");
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t1),
        "after ENOSPC",
    );
    assert_eq!(env.installed_version(), "1.0.0");
    assert_eq!(env.serial(), serial);
    let leftovers = std::fs::read_dir(env.install().join(".molt/txn"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "a failed update left its transaction behind");

    // With room again, the same update goes through.
    Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(env.install())
        .status()
        .unwrap();
    env.apply(&["--version", "1.3.0"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t4),
        "after remount",
    );
}
