//! Binary deltas end to end: `molt publish` writes a patch's delta package beside its plain one
//! (a changed file against its old self, a renamed file with a hash in its name against its old
//! name), a client holding the old release installs through the deltas, a client whose base was
//! edited locally falls back to the plain package and still ends at the release, and a tampered
//! delta package is refused with the install untouched.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde_json::Value;

use crate::util::{Env, assert_same_tree, snapshot, tree_snapshot};

/// Deterministic, poorly compressible bytes (so a delta beats compressing the file alone).
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A release tree: a binary, a hashed asset, a small config; `edit` flips bytes of the binary
/// and the asset, and `hash` names the asset.
fn release(env: &Env, name: &str, edit: u8, hash: &str) -> PathBuf {
    let root = env.path(&format!("trees/{name}"));
    let write = |rel: &str, bytes: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    let mut app = noise(1, 400_000);
    app[1000] = edit;
    app[200_000] = edit;
    write("bin/app", &app, 0o755);
    let mut asset = noise(2, 300_000);
    asset[5] = edit;
    write(&format!("web/assets/main.{hash}.js"), &asset, 0o644);
    write(
        "conf/app.yml",
        format!("release: {edit}\n").as_bytes(),
        0o644,
    );
    root
}

fn patch_of(env: &Env, to: &str) -> Value {
    let m = env.manifest();
    let r = m["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == to)
        .unwrap()
        .clone();
    r["artifacts"]["x86_64"]["patches"][0].clone()
}

fn events(run: &crate::util::Run, name: &str) -> Vec<Value> {
    run.json_lines()
        .into_iter()
        .filter(|l| l["event"] == name)
        .collect()
}

/// Publishes 1.0.0 and 1.1.0 and installs 1.0.0.
fn setup() -> (Env, PathBuf) {
    let env = Env::new();
    env.keygen("release");
    let t1 = release(&env, "1.0.0", 1, "3f9a2c1e");
    let t2 = release(&env, "1.1.0", 2, "b81d07aa");
    env.publish(&t1, "1.0.0").success();
    env.publish(&t2, "1.1.0").success();
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    (env, t2)
}

#[test]
fn a_patch_installs_through_deltas_including_a_renamed_file() {
    let (env, t2) = setup();
    let patch = patch_of(&env, "1.1.0");
    let delta = &patch["delta"];
    let files = delta["files"].as_object().unwrap();
    assert_eq!(files.len(), 2, "{delta:#}");
    assert_eq!(files["bin/app"]["base"], "bin/app");
    assert_eq!(
        files["web/assets/main.b81d07aa.js"]["base"], "web/assets/main.3f9a2c1e.js",
        "a renamed file is decoded against its old name"
    );
    let plain = patch["size"].as_u64().unwrap();
    let small = delta["size"].as_u64().unwrap();
    assert!(
        small * 20 < plain,
        "delta package {small} bytes, plain {plain}"
    );

    let run = env.apply(&[]).success();
    let used = events(&run, "delta");
    assert_eq!(used.len(), 1, "{}", run.stdout);
    let r = run.result();
    assert_eq!(r["kind"], "patch");
    assert_eq!(r["delta_files"], 2);
    assert_eq!(r["bytes"].as_u64().unwrap(), small);
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t2),
        "through deltas",
    );
    env.molt(&["verify", "--config", "molt.toml"]).success();
}

/// Edits `base` in the install (keeping or changing its size), applies, and checks the plain
/// patch was installed after a `delta-fallback` naming the base and `entry`, the file decoded
/// against it.
fn edited_base_falls_back(base: &str, entry: &str, same_size: bool) {
    let (env, t2) = setup();
    let app = env.install().join(base);
    let mut bytes = fs::read(&app).unwrap();
    bytes[7] ^= 0xff;
    if !same_size {
        bytes.push(b'!');
    }
    fs::write(&app, &bytes).unwrap();
    let run = env.apply(&[]).success();
    let fallback = events(&run, "delta-fallback");
    assert_eq!(fallback.len(), 1, "{}", run.stdout);
    assert_eq!(
        (&fallback[0]["base"], &fallback[0]["path"]),
        (&Value::from(base), &Value::from(entry))
    );
    // A changed size is seen from metadata, before anything is fetched; the same size only
    // when the base is hashed while decoding, after the delta package was fetched.
    assert_eq!(
        events(&run, "delta").len(),
        usize::from(same_size),
        "{}",
        run.stdout
    );
    let r = run.result();
    assert_eq!(r["kind"], "patch");
    assert!(r.get("delta_files").is_none());
    assert_eq!(r["bytes"], patch_of(&env, "1.1.0")["size"]);
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t2),
        "plain fallback",
    );
}

#[test]
fn a_locally_edited_base_falls_back_to_the_plain_patch() {
    edited_base_falls_back("bin/app", "bin/app", false);
}

#[test]
fn a_base_edited_at_the_same_size_falls_back_while_decoding() {
    edited_base_falls_back("bin/app", "bin/app", true);
}

#[test]
fn a_renamed_file_whose_base_was_edited_falls_back_naming_both() {
    let (old, new) = ("web/assets/main.3f9a2c1e.js", "web/assets/main.b81d07aa.js");
    edited_base_falls_back(old, new, false);
    edited_base_falls_back(old, new, true);
}

#[test]
fn a_delta_package_that_does_not_match_its_signature_is_refused() {
    let (env, _) = setup();
    let delta = patch_of(&env, "1.1.0")["delta"].clone();
    let path = env.repo().join(delta["url"].as_str().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let before = snapshot(&env.install());
    let run = env.apply(&[]).code(3);
    assert!(run.error_text().contains("sha256"), "{}", run.error_text());
    assert_same_tree(&snapshot(&env.install()), &before, "refused delta package");
}

#[test]
fn gzip_repositories_get_no_deltas() {
    let env = Env::new();
    env.keygen("release");
    let t1 = release(&env, "1.0.0", 1, "3f9a2c1e");
    let t2 = release(&env, "1.1.0", 2, "b81d07aa");
    env.publish_with(&t1, "1.0.0", &["--compression", "gzip"])
        .success();
    env.publish_with(&t2, "1.1.0", &["--compression", "gzip"])
        .success();
    assert!(patch_of(&env, "1.1.0").get("delta").is_none());
}

#[test]
fn a_delta_that_decodes_past_its_signed_size_is_stopped_and_changes_nothing() {
    let (env, _) = setup();
    // Signed as 100 bytes; the frame decodes to 400,000.
    crate::craft::edit_manifest(&env, |m| {
        let r = crate::craft::release_mut(m, "1.1.0");
        r["artifacts"]["x86_64"]["patches"][0]["delta"]["files"]["bin/app"]["size"] =
            serde_json::json!(100);
    });
    let before = snapshot(&env.install());
    let state = fs::read(env.install().join(".molt/state.json")).unwrap();
    let run = env.apply(&[]).code(3);
    assert!(
        run.error_text()
            .contains("decodes to more than its signed 100 bytes"),
        "{}",
        run.error_text()
    );
    assert_same_tree(&snapshot(&env.install()), &before, "delta bomb");
    assert_eq!(
        fs::read(env.install().join(".molt/state.json")).unwrap(),
        state
    );
    assert!(
        fs::read_dir(env.install().join(".molt/txn"))
            .unwrap()
            .next()
            .is_none(),
        "the refused stage is gone"
    );
}

#[test]
fn a_manifest_whose_delta_names_a_path_the_patch_does_not_replace_is_refused() {
    let (env, _) = setup();
    crate::craft::edit_manifest(&env, |m| {
        let r = crate::craft::release_mut(m, "1.1.0");
        let files = &mut r["artifacts"]["x86_64"]["patches"][0]["delta"]["files"];
        let app = files["bin/app"].clone();
        files["etc/passwd"] = app;
    });
    let before = snapshot(&env.install());
    let run = env.apply(&[]).code(3);
    assert!(
        run.error_text()
            .contains("etc/passwd is not a file the patch replaces"),
        "{}",
        run.error_text()
    );
    assert_same_tree(&snapshot(&env.install()), &before, "bad delta metadata");
}

/// A file whose base and itself pass 16 MiB is chunked: its delta goes under `chunked_delta`,
/// where clients from before chunks do not look, with a base found by its name's stem (the
/// version and channel in its name changed), and installs to the exact release.
#[test]
fn a_large_file_is_chunked_against_its_stem_twin_and_installs() {
    let env = Env::new();
    env.keygen("release");
    let tree = |name: &str, lib: &str, edit: u8| {
        let root = env.path(&format!("trees/{name}"));
        fs::create_dir_all(root.join("lib")).unwrap();
        // 9 MiB of noise with a 64 KiB block inserted in the middle: every chunk past it is
        // shifted, so slices must follow the content, not the offset.
        let mut big = noise(7, 9 << 20);
        if edit != 0 {
            big.splice(4 << 20..4 << 20, noise(8, 64 << 10));
            big[100] = edit;
        }
        fs::write(root.join("lib").join(lib), &big).unwrap();
        root
    };
    let t1 = tree("1.0.0", "libbig.so.1-rust-1.95.0-stable", 0);
    let t2 = tree("1.1.0", "libbig.so.1-rust-1.97.0-nightly", 9);
    env.publish(&t1, "1.0.0").success();
    env.publish(&t2, "1.1.0").success();
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();

    let patch = patch_of(&env, "1.1.0");
    assert!(patch.get("delta").is_none(), "{patch:#}");
    let delta = &patch["chunked_delta"];
    let file = &delta["files"]["lib/libbig.so.1-rust-1.97.0-nightly"];
    assert_eq!(file["base"], "lib/libbig.so.1-rust-1.95.0-stable");
    assert_eq!(file["chunks"].as_array().unwrap().len(), 3, "{file:#}");
    let small = delta["size"].as_u64().unwrap();
    assert!(
        small < 200 << 10,
        "a 9 MiB file with 64 KiB inserted: delta package of {small} bytes"
    );

    let run = env.apply(&[]).success();
    assert_eq!(events(&run, "delta").len(), 1, "{}", run.stdout);
    let r = run.result();
    assert_eq!(r["delta_files"], 1);
    assert_eq!(r["bytes"].as_u64().unwrap(), small);
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t2),
        "through chunks",
    );
    env.molt(&["verify", "--config", "molt.toml"]).success();
}
