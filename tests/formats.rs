//! Package formats: packages are zstd (`.tar.zst`) by default; repositories written by the gzip
//! writer before that stay readable — installed from, patched from, and extended by a new
//! publish — and `--compression gzip` still writes gzip for older clients.

use std::fs;
use std::path::Path;

use crate::craft::{R1, R2, R3};
use crate::util::{Env, assert_same_tree, snapshot, tree_snapshot};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Every package URL of the manifest, with the first bytes of the file.
fn packages(env: &Env) -> Vec<(String, Vec<u8>)> {
    let m = env.manifest();
    let mut out = Vec::new();
    for r in m["releases"].as_array().unwrap() {
        let a = &r["artifacts"]["x86_64"];
        let mut urls = vec![a["full"]["url"].as_str().unwrap().to_owned()];
        for p in a["patches"].as_array().unwrap() {
            urls.push(p["url"].as_str().unwrap().to_owned());
        }
        for url in urls {
            let bytes = fs::read(env.repo().join(&url)).unwrap();
            out.push((url, bytes[..4].to_vec()));
        }
    }
    out
}

#[test]
fn a_gzip_repository_installs_patches_and_is_extended_with_zstd_packages() {
    let env = Env::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gzip-repo");
    copy_dir(&fixture.join("repo"), &env.repo());
    copy_dir(&fixture.join("keys"), &env.path("keys"));
    let old = packages(&env);
    assert_eq!(old.len(), 3);
    for (url, head) in &old {
        assert!(
            url.ends_with(".tar.gz") && head.starts_with(&GZIP_MAGIC),
            "{url}"
        );
    }

    env.file_config();
    let r = env.apply(&["--version", "1.0.0"]).success().result();
    assert_eq!(r["kind"], "full");
    let t1 = env.tree("1.0.0", R1);
    assert_same_tree(&snapshot(&env.install()), &tree_snapshot(&t1), "gzip full");
    let r = env.apply(&["--version", "1.1.0"]).success().result();
    assert_eq!(r["kind"], "patch");
    let t2 = env.tree("1.1.0", R2);
    assert_same_tree(&snapshot(&env.install()), &tree_snapshot(&t2), "gzip patch");

    // A new publish rebuilds the old trees from their gzip packages and writes zstd.
    let t3 = env.tree("1.2.0", R3);
    env.publish(&t3, "1.2.0").success();
    let now = packages(&env);
    let new: Vec<_> = now.iter().filter(|p| !old.contains(p)).collect();
    assert_eq!(new.len(), 3, "a full package and two patches: {now:?}");
    for (url, head) in new {
        assert!(
            url.ends_with(".tar.zst") && head.starts_with(&ZSTD_MAGIC),
            "{url}"
        );
    }
    let r = env.apply(&[]).success().result();
    assert_eq!((&r["kind"], &r["to"]), (&"patch".into(), &"1.2.0".into()));
    assert_same_tree(&snapshot(&env.install()), &tree_snapshot(&t3), "zstd patch");
    env.apply(&["--version", "1.2.0", "--force-full"]).success();
    assert_same_tree(&snapshot(&env.install()), &tree_snapshot(&t3), "zstd full");
    env.molt(&["verify", "--config", "molt.toml"]).success();
}

#[test]
fn publish_with_gzip_compression_still_writes_gzip() {
    let env = Env::new();
    env.keygen("release");
    let t1 = env.tree("1.0.0", R1);
    let t2 = env.tree("1.1.0", R2);
    env.publish_with(&t1, "1.0.0", &["--compression", "gzip"])
        .success();
    env.publish_with(&t2, "1.1.0", &["--compression", "gzip"])
        .success();
    for (url, head) in packages(&env) {
        assert!(
            url.ends_with(".tar.gz") && head.starts_with(&GZIP_MAGIC),
            "{url}"
        );
    }
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    let r = env.apply(&[]).success().result();
    assert_eq!(r["kind"], "patch");
    assert_same_tree(&snapshot(&env.install()), &tree_snapshot(&t2), "gzip patch");
    env.publish_with(&t1, "0.9.0", &["--compression", "brotli"])
        .code(2);
}
