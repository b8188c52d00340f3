//! Patch documents end to end: a patch whose operations and delta tables are too large to list
//! inline is written beside its package as a document the manifest names by size and SHA-256.
//! A client fetches the document of the patch its strategy chose (over file:// and HTTP) and
//! installs it as it would an inline patch; a tampered document is refused with the install
//! untouched.

use std::fs;

use serde_json::{Value, json};

use crate::craft::reference_releases_with;
use crate::server::Server;
use crate::util::{Env, assert_same_tree, snapshot, tree_snapshot};

/// The 1.1.0 release's artifacts for this arch.
fn artifacts_of(env: &Env, version: &str) -> Value {
    env.manifest()["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == version)
        .unwrap()["artifacts"]["x86_64"]
        .clone()
}

/// Publishes the reference releases with every patch in a document, and installs 1.0.0.
fn setup() -> (Env, [std::path::PathBuf; 3]) {
    let env = Env::new();
    let trees = reference_releases_with(&env, &["--inline-patch-bytes", "0"]);
    (env, trees)
}

#[test]
fn large_patches_are_documents_and_install_like_inline_ones() {
    let (env, [t1, t2, t3]) = setup();
    let a = artifacts_of(&env, "1.2.0");
    assert_eq!(a["patches"], json!([]), "{a}");
    let documents = a["patch_documents"].as_array().unwrap();
    let froms: Vec<&str> = documents
        .iter()
        .map(|d| d["from"].as_str().unwrap())
        .collect();
    assert_eq!(froms, ["1.0.0", "1.1.0"], "{a}");
    // The document is the patch object as it would stand inline, and its size is the package's.
    let d = &documents[1];
    let path = env.repo().join(d["document"]["url"].as_str().unwrap());
    let json = zstd::decode_all(&fs::read(&path).unwrap()[..]).unwrap();
    let patch: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(patch["from"], "1.1.0");
    assert_eq!(patch["size"], d["size"]);
    assert!(patch["operations"]["replace"].is_object(), "{patch}");
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        d["document"]["size"].as_u64().unwrap()
    );

    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    assert_same_tree(&snapshot(&env.install()), &tree_snapshot(&t1), "1.0.0");
    let r = env.apply(&["--version", "1.1.0"]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["from"].clone()),
        (json!("patch"), json!("1.0.0"))
    );
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t2),
        "patched to 1.1.0",
    );
    env.molt(&["verify", "--config", "molt.toml"]).success();

    // The same over HTTP, from 1.1.0 to 1.2.0.
    let server = Server::start(env.repo());
    env.config(&server.url(), "");
    let r = env.apply(&[]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["to"].clone()),
        (json!("patch"), json!("1.2.0"))
    );
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t3),
        "patched to 1.2.0",
    );
    assert!(
        server
            .seen()
            .iter()
            .any(|s| s.path.ends_with(".patch.json.zst")),
        "the patch document was not fetched over HTTP"
    );
    // No document is left behind in downloads/.
    let downloads = env.install().join(".molt/downloads");
    let left: Vec<_> = fs::read_dir(&downloads)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_tampered_patch_document_is_refused_and_changes_nothing() {
    let (env, _) = setup();
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    let before = snapshot(&env.install());
    let d = artifacts_of(&env, "1.1.0")["patch_documents"][0].clone();
    let url = d["document"]["url"].as_str().unwrap().to_owned();
    let path = env.repo().join(&url);
    // Another file list, well formed: only the signed hash tells.
    let text = String::from_utf8(zstd::decode_all(&fs::read(&path).unwrap()[..]).unwrap()).unwrap();
    let tampered = text.replacen("\"conf\"", "\"conX\"", 1);
    assert_ne!(text, tampered);
    fs::write(&path, zstd::encode_all(tampered.as_bytes(), 3).unwrap()).unwrap();
    env.apply(&["--version", "1.1.0"])
        .code(3)
        .error_contains(&[&url]);
    assert_eq!(
        snapshot(&env.install()),
        before,
        "a refused document changed the install"
    );
    assert_eq!(env.installed_version(), "1.0.0");
    // --force-full still installs the release.
    env.apply(&["--version", "1.1.0", "--force-full"]).success();
}

#[test]
fn a_signed_document_of_another_patch_is_refused() {
    let (env, _) = setup();
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    let before = snapshot(&env.install());
    // The manifest (re-signed) names the 1.1.0 → 1.2.0 document for the 1.0.0 → 1.1.0 patch.
    let other = artifacts_of(&env, "1.2.0")["patch_documents"][1]["document"].clone();
    crate::craft::edit_manifest(&env, |m| {
        let a = &mut crate::craft::release_mut(m, "1.1.0")["artifacts"]["x86_64"];
        a["patch_documents"][0]["document"] = other.clone();
    });
    env.apply(&["--version", "1.1.0"]).code(3).error_contains(&[
        other["url"].as_str().unwrap(),
        "describes the patch from 1.1.0",
    ]);
    assert_eq!(snapshot(&env.install()), before);
}
