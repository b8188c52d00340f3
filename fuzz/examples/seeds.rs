//! Writes the checked-in seed corpus (`corpus/<target>/`) with the real molt code: a published
//! and signed repository, real packages, the configs of the docs, a real transaction's journal
//! at each of its records, real state files, and the answers a plugin gives.
//!
//! `cargo run --example seeds` (from `fuzz/`; any toolchain).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use molt::package::archive::{PackageEntries, write_package};
use molt::relpath::RelPath;
use molt::repo::manifest::PathSet;
use molt::repo::publish::{PublishRequest, publish};
use molt::state::TrustState;
use molt::tree::TreeListing;
use molt::version::Version;
use molt_fuzz::{NOW, RecoveryScenario, open_state, scratch, signing_key, write_files};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn seed(dir: &Path, name: &str, parts: &[&[u8]]) {
    fs::write(dir.join(name), parts.concat()).unwrap();
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn paths(list: &[&str]) -> Vec<RelPath> {
    list.iter().map(|p| RelPath::new(p).unwrap()).collect()
}

fn manifest_seeds(work: &Path) {
    let dir = corpus("manifest");
    let key = work.join("release.key.pem");
    fs::write(&key, molt::keys::secret_key_pem(&signing_key()).unwrap()).unwrap();
    let repo = work.join("repo");
    for (i, (version, files)) in [
        (
            "1.0.0",
            &[("bin/app", "one\n", 0o755), ("web/a.js", "a\n", 0o644)][..],
        ),
        (
            "1.1.0",
            &[("bin/app", "two\n", 0o755), ("conf/x.yml", "x\n", 0o600)][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let tree = work.join(format!("tree-{version}"));
        write_files(&tree, files);
        let mut req = PublishRequest::new(
            &repo,
            &key,
            "demo-app",
            Version::parse(version).unwrap(),
            &tree,
        );
        req.arch = Some("x86_64".into());
        req.notes = Some(format!("release {i}"));
        req.now = NOW - time::Duration::days(1);
        publish(&req).unwrap();
    }
    let manifest = fs::read(repo.join("manifest.json")).unwrap();
    let sig = fs::read(repo.join("manifest.json.sig")).unwrap();
    seed(&dir, "published-signed-by-target", &[&[0], &manifest]);
    seed(
        &dir,
        "published-with-its-signature",
        &[&[1], &manifest, b"\n--sig--\n", &sig],
    );
    let other = ed25519_dalek::SigningKey::from_bytes(&[0x33; 32]);
    let foreign = molt::repo::signature::SignatureFile {
        signatures: vec![molt::repo::signature::sign(&manifest, &other)],
    }
    .to_bytes();
    seed(
        &dir,
        "signed-by-an-unknown-key",
        &[&[1], &manifest, b"\n--sig--\n", &foreign],
    );
    let mut value: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    value["serial"] = 1.into();
    seed(
        &dir,
        "serial-rollback",
        &[&[0], &serde_json::to_vec(&value).unwrap()],
    );
}

fn extract_seeds(work: &Path) {
    let dir = corpus("extract");
    let tree = work.join("pkg-tree");
    write_files(
        &tree,
        &[
            ("bin/app", "binary\n", 0o755),
            ("conf/app.yml", "level: 1\n", 0o644),
            ("web/x.js", "x\n", 0o644),
            ("web/sub/y.css", "y\n", 0o600),
            ("c", "c\n", 0o644),
            ("a/b/z", "z\n", 0o644),
        ],
    );
    fs::create_dir_all(tree.join("empty")).unwrap();
    // Links a release may hold: to a file beside it, and to a directory through another link.
    std::os::unix::fs::symlink("app", tree.join("bin/app-link")).unwrap();
    std::os::unix::fs::symlink("../web", tree.join("conf/web")).unwrap();
    std::os::unix::fs::symlink("../conf/web/sub", tree.join("bin/styles")).unwrap();
    let listing = TreeListing::scan(&tree, &[]).unwrap();
    let sets = [
        ("full", 0u8, None),
        (
            "patch-web",
            1,
            Some(PathSet {
                files: paths(&["bin/app", "conf/app.yml"]),
                directories: paths(&["web"]),
            }),
        ),
        (
            "patch-ab",
            2,
            Some(PathSet {
                files: paths(&["c"]),
                directories: paths(&["a/b", "empty"]),
            }),
        ),
    ];
    for (name, allowed, set) in sets {
        let out = work.join(format!("{name}.tar.gz"));
        let entries = set
            .as_ref()
            .map_or(PackageEntries::FullTree, PackageEntries::Replace);
        write_package(&out, &tree, &listing, entries).unwrap();
        let gz = fs::read(&out).unwrap();
        seed(
            &dir,
            &format!("{name}-gzip"),
            &[&[1 | (allowed << 1), 255, 255], &gz],
        );
        seed(
            &dir,
            &format!("{name}-tar"),
            &[&[allowed << 1, 255, 255], &gunzip(&gz)],
        );
        let zst = work.join(format!("{name}.tar.zst"));
        write_package(&zst, &tree, &listing, entries).unwrap();
        seed(
            &dir,
            &format!("{name}-zstd"),
            &[&[1 | (allowed << 1), 255, 255], &fs::read(&zst).unwrap()],
        );
        // The same package against tight caps: refused, and nothing may be left behind.
        seed(
            &dir,
            &format!("{name}-over-caps"),
            &[&[allowed << 1, 0, 2], &gunzip(&gz)],
        );
    }
}

/// The delta target's seeds: the publisher's real encodings of both files (whole, chunked),
/// each also with the plain entry first and with its base modified on disk, and hostile
/// variants of them: a bomb, a slice past the end of the base, a window too small, a chunk
/// table that does not add up.
fn delta_seeds() {
    use molt_fuzz::delta::{Encoding, encodings, files, input, window_log};
    let dir = corpus("delta");
    for (which, file) in files().iter().enumerate() {
        let size = file.target.len() as u64;
        for (i, e) in encodings(file).iter().enumerate() {
            let kind = if e.chunks.is_empty() {
                "whole"
            } else {
                "chunked"
            };
            let name = |what: &str| format!("{}-{kind}-{what}", ["app", "renamed-lib"][which]);
            let log = window_log(file, e);
            seed(
                &dir,
                &name("as-published"),
                &[&input(which, 0, log, size, e)],
            );
            seed(
                &dir,
                &name("plain-first"),
                &[&input(which, 4, log, size, e)],
            );
            seed(
                &dir,
                &name("base-modified"),
                &[&input(which, 2, log, size, e)],
            );
            seed(
                &dir,
                &name("window-too-small"),
                &[&input(which, 0, 10, size, e)],
            );
            seed(
                &dir,
                &name("size-short"),
                &[&input(which, 0, log, size - 1, e)],
            );
            if i == 1 {
                let mut past = Encoding {
                    frames: e.frames.clone(),
                    chunks: e.chunks.clone(),
                };
                past.chunks[0].base_offset = file.base.len() as u64;
                seed(
                    &dir,
                    &name("slice-past-base"),
                    &[&input(which, 0, log, size, &past)],
                );
                let mut short = Encoding {
                    frames: e.frames.clone(),
                    chunks: e.chunks.clone(),
                };
                short.chunks.pop();
                seed(
                    &dir,
                    &name("chunks-short"),
                    &[&input(which, 0, log, size, &short)],
                );
            }
        }
        // Declared as the real file; decodes to 4 MiB of zeros.
        let bomb = molt::package::fuzzing::encode_whole(&file.base, &vec![0; 4 << 20]).unwrap();
        let bomb = Encoding {
            frames: bomb,
            chunks: Vec::new(),
        };
        let name = format!("{}-bomb", ["app", "renamed-lib"][which]);
        seed(&dir, &name, &[&input(which, 0, 23, size, &bomb)]);
    }
}

fn config_seeds() {
    let dir = corpus("config");
    seed(
        &dir,
        "design-example",
        &[br#"product = "demo-app"
install_dir = "/opt/demo-app"
state_dir = "/var/lib/molt/demo-app"
arch = "x86_64"
channel = "stable"
device_id = "rack-7-node-3"

[source]
url = "https://updates.example.com/demo-app"
keys = ["/etc/molt/keys/release.pub.pem"]
threshold = 1

[strategy]
plugin = "builtin:default"
[strategy.config]
allow_downgrade = false

[[validators]]
plugin = "builtin:require-files"
[validators.config]
paths = ["bin/app"]

[apply]
preserve = ["data/", "conf/local.toml"]
keep_backups = 2

[limits]
plugin_timeout_ms = 5000
plugin_memory_mb = 64
"#],
    );
    seed(
        &dir,
        "minimal",
        &[b"product = \"demo-app\"\ninstall_dir = \"install\"\n[source]\nurl = \"file:///srv/repo\"\nkeys = [\"k.pem\"]\n"],
    );
}

fn recovery_seeds() -> RecoveryScenario {
    let dir = corpus("recovery");
    let s = RecoveryScenario::build();
    let lines: Vec<&[u8]> = s.journal.split_inclusive(|b| *b == b'\n').collect();
    for moment in [0u8, 1] {
        let at = ["staged", "applied"][usize::from(moment)];
        for n in 0..=lines.len() {
            seed(
                &dir,
                &format!("{at}-{n}-records"),
                &[&[moment], &lines[..n].concat()],
            );
        }
        // Torn in the middle of the second record.
        let torn = &lines[..2].concat();
        seed(
            &dir,
            &format!("{at}-torn"),
            &[&[moment], &torn[..lines[0].len() + lines[1].len() / 2]],
        );
    }
    s
}

fn state_seeds(s: &RecoveryScenario) {
    let dir = corpus("state");
    let state = fs::read(s.root.join("state/state.json")).unwrap();
    seed(&dir, "state-after-two-updates", &[&[0], &state]);
    let trust_root = scratch("seed-trust");
    let st = open_state(&trust_root);
    st.save_trust(&TrustState { highest_serial: 42 }).unwrap();
    seed(&dir, "trust", &[&[1], &fs::read(st.trust_path()).unwrap()]);
    fs::remove_dir_all(trust_root).unwrap();
}

fn plugin_answer_seeds() {
    let dir = corpus("plugin_answer");
    // [kind, cap, flags, a 0xFF b]; flags: 1 allow_downgrade, 2 --version, 4 --force-full,
    // bits 3-4 installed version, bits 5-7 requested version.
    seed(&dir, "full-1.1.0-from-1.0.0", &[&[0, 3, 1 << 3], b"1.1.0"]);
    seed(
        &dir,
        "patch-1.0.0-to-1.1.0",
        &[&[1, 3, 1 << 3], b"1.0.0\xff1.1.0"],
    );
    seed(
        &dir,
        "patch-with-v-prefix",
        &[&[1, 2, 2 << 3], b"v1.1.0\xffv2.0.0-rc.1"],
    );
    seed(
        &dir,
        "downgrade-allowed",
        &[&[0, 3, 1 | (4 << 3)], b"1.1.0"],
    );
    seed(
        &dir,
        "pinned-version",
        &[&[0, 3, 2 | (1 << 3) | (2 << 5)], b"1.1.0"],
    );
    seed(&dir, "none", &[&[2, 1, 0], b"up to date \x1b[2J"]);
    seed(
        &dir,
        "refused",
        &[
            &[3, 2, 0],
            "the policy says no: ünïcode\nforged log line".as_bytes(),
        ],
    );
}

fn main() {
    let work = scratch("seeds");
    manifest_seeds(&work);
    extract_seeds(&work);
    delta_seeds();
    config_seeds();
    let s = recovery_seeds();
    state_seeds(&s);
    plugin_answer_seeds();
    fs::remove_dir_all(&work).unwrap();
    println!(
        "seed corpus written to {}/corpus",
        env!("CARGO_MANIFEST_DIR")
    );
}
