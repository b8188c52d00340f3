//! Every security rejection: exit code 3, an error naming what failed, the install
//! byte-identical and the persisted serial unchanged.

use std::fs;

use serde_json::json;
use tar::EntryType;

use crate::craft::{
    RawEntry, edit_manifest, raw_package, reference_releases, release_mut, swap_package,
};
use crate::util::{Env, Snapshot, assert_same_tree, snapshot};

/// Three releases published, 1.0.0 installed; returns the install snapshot.
fn installed_at_1_0_0(env: &Env) -> Snapshot {
    reference_releases(env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    snapshot(&env.install())
}

/// Runs `apply` with `args`, expects exit 3 mentioning `needles`, and checks nothing changed.
#[track_caller]
fn assert_rejected(env: &Env, before: &Snapshot, args: &[&str], needles: &[&str]) {
    let serial = env.serial();
    env.apply(args).code(3).error_contains(needles);
    assert_same_tree(
        &snapshot(&env.install()),
        before,
        "install after a rejected update",
    );
    assert_eq!(
        env.serial(),
        serial,
        "persisted serial changed by a rejected update"
    );
    assert_eq!(env.installed_version(), "1.0.0");
}

#[test]
fn tampered_manifest_fails_signature_check() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    let path = env.repo().join("manifest.json");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("test release", "evil release");
    fs::write(&path, text).unwrap();
    assert_rejected(&env, &before, &[], &["signature", "manifest.json"]);
}

#[test]
fn manifest_signed_by_an_untrusted_key_is_refused() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    env.keygen("intruder");
    let m = fs::read(env.repo().join("manifest.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&m).unwrap();
    v["serial"] = json!(99);
    crate::craft::write_signed(
        &env.repo(),
        &serde_json::to_vec(&v).unwrap(),
        &env.path("keys/intruder.key.pem"),
    );
    assert_rejected(&env, &before, &[], &["signature"]);
}

#[test]
fn threshold_needs_distinct_trusted_keys() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    env.keygen("second");
    let cfg = fs::read_to_string(env.path("molt.toml")).unwrap().replace(
        "keys = [\"keys/release.pub.pem\"]",
        "keys = [\"keys/release.pub.pem\", \"keys/second.pub.pem\"]\nthreshold = 2",
    );
    fs::write(env.path("molt.toml"), cfg).unwrap();
    // The same key's signature twice still counts once.
    let sig: serde_json::Value =
        serde_json::from_slice(&fs::read(env.repo().join("manifest.json.sig")).unwrap()).unwrap();
    let entry = sig["signatures"][0].clone();
    fs::write(
        env.repo().join("manifest.json.sig"),
        serde_json::to_vec(&json!({"signatures": [entry.clone(), entry]})).unwrap(),
    )
    .unwrap();
    assert_rejected(&env, &before, &[], &["1 of 2"]);
}

#[test]
fn replayed_older_manifest_is_refused() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    let old_m = fs::read(env.repo().join("manifest.json")).unwrap();
    let old_s = fs::read(env.repo().join("manifest.json.sig")).unwrap();
    // A newer manifest is accepted (serial 4)…
    edit_manifest(&env, |_| {});
    env.molt(&["check", "--config", "molt.toml"]).success();
    env.apply(&["--version", "1.0.0"]).success();
    assert_eq!(env.serial(), 4);
    // …after which the old one (serial 3) is a rollback attack.
    fs::write(env.repo().join("manifest.json"), old_m).unwrap();
    fs::write(env.repo().join("manifest.json.sig"), old_s).unwrap();
    assert_rejected(&env, &before, &[], &["serial 3", "4"]);
}

#[test]
fn expired_manifest_is_refused() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    edit_manifest(&env, |m| m["expires"] = json!("2020-01-01T00:00:00Z"));
    assert_rejected(&env, &before, &[], &["expired"]);
}

#[test]
fn manifest_for_another_product_is_refused() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    edit_manifest(&env, |m| m["product"] = json!("other-app"));
    assert_rejected(&env, &before, &[], &["other-app", "demo-app"]);
}

#[test]
fn package_with_wrong_hash_is_refused() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    let m = env.manifest();
    let url = m["releases"][1]["artifacts"]["x86_64"]["patches"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = env.repo().join(&url);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    edit_manifest(&env, |_| {});
    assert_rejected(&env, &before, &["--version", "1.1.0"], &["sha256", &url]);
}

#[test]
fn package_larger_than_signed_size_is_cut() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    let m = env.manifest();
    let url = m["releases"][1]["artifacts"]["x86_64"]["patches"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(env.repo().join(&url))
        .unwrap();
    std::io::Write::write_all(&mut f, &vec![0u8; 1 << 20]).unwrap();
    edit_manifest(&env, |_| {});
    assert_rejected(&env, &before, &["--version", "1.1.0"], &[&url]);
}

/// Swaps 1.1.0's full package for `entries` and forces a full update to it.
fn assert_archive_rejected(entries: Vec<RawEntry>, unpacked: u64, needles: &[&str]) {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    swap_package(&env, "1.1.0", None, &raw_package(&entries), unpacked);
    assert_rejected(
        &env,
        &before,
        &["--version", "1.1.0", "--force-full"],
        needles,
    );
    assert!(!env.root.join("escaped").exists());
}

#[test]
fn archive_entry_with_dotdot_is_refused() {
    assert_archive_rejected(
        vec![
            RawEntry::file("bin/app", b"x"),
            RawEntry::file("../escaped", b"x"),
        ],
        2,
        &[".."],
    );
}

#[test]
fn archive_entry_with_absolute_path_is_refused() {
    let target = std::env::temp_dir().join("molt-it-absolute-escape");
    assert_archive_rejected(
        vec![RawEntry::file(target.to_str().unwrap(), b"x")],
        1,
        &["absolute"],
    );
    assert!(!target.exists());
}

#[test]
fn archive_symlink_is_refused() {
    assert_archive_rejected(
        vec![RawEntry::special(
            "bin/app",
            EntryType::Symlink,
            Some("/etc/passwd"),
        )],
        0,
        &["bin/app"],
    );
}

#[test]
fn archive_hardlink_is_refused() {
    assert_archive_rejected(
        vec![
            RawEntry::file("a", b"x"),
            RawEntry::special("b", EntryType::Link, Some("a")),
        ],
        1,
        &["b"],
    );
}

#[test]
fn archive_device_and_fifo_are_refused() {
    assert_archive_rejected(
        vec![RawEntry::special("dev", EntryType::Char, None)],
        0,
        &["dev"],
    );
    assert_archive_rejected(
        vec![RawEntry::special("pipe", EntryType::Fifo, None)],
        0,
        &["pipe"],
    );
}

#[test]
fn archive_sparse_entry_is_refused() {
    let mut sparse = RawEntry::special("sparse", EntryType::GNUSparse, None);
    sparse.real_size = Some(1 << 32);
    assert_archive_rejected(vec![sparse], 0, &["sparse"]);
}

#[test]
fn archive_duplicate_entry_is_refused() {
    assert_archive_rejected(
        vec![RawEntry::file("a", b"one"), RawEntry::file("a", b"two")],
        6,
        &["clashes with an earlier entry"],
    );
}

#[test]
fn decompression_bomb_is_cut_at_the_declared_size() {
    let zeros = vec![0u8; 8 << 20];
    assert_archive_rejected(vec![RawEntry::file("bomb", &zeros)], 1024, &["bomb"]);
}

#[test]
fn patch_entry_not_named_by_its_operations_is_refused() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    let ops =
        env.manifest()["releases"][1]["artifacts"]["x86_64"]["patches"][0]["operations"].clone();
    let mut entries: Vec<RawEntry> = Vec::new();
    for f in ops["replace"]["files"].as_array().unwrap() {
        entries.push(RawEntry::file(f.as_str().unwrap(), b"patched"));
    }
    for d in ops["replace"]["directories"].as_array().unwrap() {
        entries.push(RawEntry::dir(d.as_str().unwrap()));
    }
    entries.push(RawEntry::file("etc-sneaky.conf", b"smuggled"));
    let unpacked = entries.iter().map(|e| e.data.len() as u64).sum();
    swap_package(
        &env,
        "1.1.0",
        Some("1.0.0"),
        &raw_package(&entries),
        unpacked,
    );
    assert_rejected(&env, &before, &["--version", "1.1.0"], &["etc-sneaky.conf"]);
}

#[test]
fn patch_naming_a_path_in_replace_and_delete_is_refused() {
    let env = Env::new();
    let before = installed_at_1_0_0(&env);
    edit_manifest(&env, |m| {
        let p = &mut release_mut(m, "1.1.0")["artifacts"]["x86_64"]["patches"][0]["operations"];
        p["delete"]["files"]
            .as_array_mut()
            .unwrap()
            .push(json!("bin/app"));
    });
    assert_rejected(&env, &before, &["--version", "1.1.0"], &["bin/app"]);
}

#[test]
fn package_smaller_than_its_signed_unpacked_size_is_refused() {
    assert_archive_rejected(
        vec![RawEntry::file("bin/app", b"only one file")],
        4096,
        &["unpacks to 13 bytes", "4096"],
    );
}
