//! Reference releases and hostile repositories.
//!
//! `reference_releases` is the three-release history every end-to-end test walks through (files
//! added, changed and removed, a directory replaced, an executable bit set and cleared).
//! The rest re-signs a tampered manifest with the test's own key, so that only the check under
//! test can reject it.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::Signer;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use serde_json::{Value, json};

use crate::util::{Env, Spec};

pub const R1: &[Spec] = &[
    ("bin/app", "app 1.0.0\n", 0o755),
    ("conf/app.yml", "level: 1\n", 0o644),
    ("conf/legacy.yml", "legacy: true\n", 0o644),
    ("web/index.html", "<h1>1</h1>\n", 0o644),
    ("web/static/a.css", "a { v: 1 }\n", 0o644),
    ("web/static/b.js", "b(1)\n", 0o644),
    ("plugins/legacy/x.so", "legacy plugin\n", 0o644),
    ("README", "readme\n", 0o644),
];

pub const R2: &[Spec] = &[
    ("bin/app", "app 1.1.0\n", 0o755),
    ("bin/tool", "tool\n", 0o755),
    ("conf/app.yml", "level: 2\n", 0o644),
    ("web/index.html", "<h1>2</h1>\n", 0o644),
    ("web/static/a.css", "a { v: 2 }\n", 0o644),
    ("web/static/c.js", "c(2)\n", 0o644),
    ("docs/guide.txt", "guide\n", 0o644),
    ("README", "readme\n", 0o644),
];

pub const R3: &[Spec] = &[
    ("bin/app", "app 1.2.0\n", 0o755),
    ("bin/tool", "tool\n", 0o644),
    ("conf/app.yml", "level: 2\n", 0o644),
    ("web/index.html", "<h1>2</h1>\n", 0o644),
    ("web/static/a.css", "a { v: 2 }\n", 0o644),
    ("web/static/c.js", "c(2)\n", 0o644),
    ("README", "readme, revised\n", 0o644),
];

/// keygen + publish 1.0.0, 1.1.0, 1.2.0; returns the three trees.
pub fn reference_releases(env: &Env) -> [PathBuf; 3] {
    reference_releases_with(env, &[])
}

/// [`reference_releases`], each publish given `extra` arguments.
pub fn reference_releases_with(env: &Env, extra: &[&str]) -> [PathBuf; 3] {
    env.keygen("release");
    let trees = [
        env.tree("1.0.0", R1),
        env.tree("1.1.0", R2),
        env.tree("1.2.0", R3),
    ];
    for (tree, v) in trees.iter().zip(["1.0.0", "1.1.0", "1.2.0"]) {
        env.publish_with(tree, v, extra).success();
    }
    trees
}

/// Signs `manifest` (as given, byte for byte) with the PKCS#8 key at `key` and writes both files.
pub fn write_signed(repo: &Path, manifest: &[u8], key: &Path) {
    let key = ed25519_dalek::SigningKey::read_pkcs8_pem_file(key).unwrap();
    let sig = key.sign(manifest);
    let keyid = molt::hashing::sha256_hex(key.verifying_key().as_bytes());
    let sig_file = json!({"signatures": [{
        "keyid": keyid,
        "sig": base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    }]});
    fs::write(repo.join("manifest.json"), manifest).unwrap();
    fs::write(
        repo.join("manifest.json.sig"),
        serde_json::to_vec(&sig_file).unwrap(),
    )
    .unwrap();
}

/// Edits the repository's manifest, bumps its serial (so a client that persisted trust before
/// finishing its checks would be caught) and re-signs it with the release key.
pub fn edit_manifest(env: &Env, edit: impl FnOnce(&mut Value)) {
    let mut m = env.manifest();
    m["serial"] = json!(m["serial"].as_u64().unwrap() + 1);
    edit(&mut m);
    write_signed(
        &env.repo(),
        &serde_json::to_vec_pretty(&m).unwrap(),
        &env.path("keys/release.key.pem"),
    );
}

/// The release entry for `version` in a manifest value.
pub fn release_mut<'a>(m: &'a mut Value, version: &str) -> &'a mut Value {
    m["releases"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["version"] == version)
        .unwrap_or_else(|| panic!("no release {version}"))
}

/// One raw tar entry for a hostile package.
pub struct RawEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<String>,
    pub mode: u32,
    /// For GNU sparse entries: the size the entry claims to expand to.
    pub real_size: Option<u64>,
}

impl RawEntry {
    pub fn file(path: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            path: path.into(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
            mode: 0o644,
            real_size: None,
        }
    }

    pub fn dir(path: &str) -> RawEntry {
        RawEntry {
            path: path.into(),
            kind: tar::EntryType::Directory,
            data: vec![],
            link: None,
            mode: 0o755,
            real_size: None,
        }
    }

    pub fn special(path: &str, kind: tar::EntryType, link: Option<&str>) -> RawEntry {
        RawEntry {
            path: path.into(),
            kind,
            data: vec![],
            link: link.map(str::to_owned),
            mode: 0o644,
            real_size: None,
        }
    }
}

/// A gzip-compressed tar of `entries`, names written raw (no normalization by the tar crate).
pub fn raw_package(entries: &[RawEntry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let name = e.path.as_bytes();
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        if let Some(l) = &e.link {
            h.set_link_name(l).unwrap();
        }
        if let Some(real) = e.real_size {
            let gnu = h.as_gnu_mut().unwrap();
            let octal = format!("{real:011o}\0");
            gnu.realsize.copy_from_slice(octal.as_bytes());
        }
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Replaces the package behind `release`'s full artifact (or its patch from `from`) with
/// `bytes`, updating size, sha256 and unpacked_size so that only the content check can object.
pub fn swap_package(env: &Env, release: &str, from: Option<&str>, bytes: &[u8], unpacked: u64) {
    let name = format!("packages/evil-{release}-{}.tar.gz", from.unwrap_or("full"));
    fs::write(env.repo().join(&name), bytes).unwrap();
    edit_manifest(env, |m| {
        let r = release_mut(m, release);
        let arts = &mut r["artifacts"]["x86_64"];
        let pkg = match from {
            None => &mut arts["full"],
            Some(f) => arts["patches"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|p| p["from"] == f)
                .unwrap(),
        };
        pkg["url"] = json!(name);
        pkg["size"] = json!(bytes.len());
        pkg["sha256"] = json!(molt::hashing::sha256_hex(bytes));
        pkg["unpacked_size"] = json!(unpacked);
    });
}
