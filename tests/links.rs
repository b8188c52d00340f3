//! Symbolic links in releases: a Node.js-style tree (relative links in `node_modules/.bin/`, a
//! link to a directory, a chain of links, shared-library version links) published, installed,
//! patched (a link retargeted, a link turned into a file and back, a directory turned into a
//! link), rolled back and verified, with the app run from the install through its links; and
//! unsafe links refused by the publisher (exit 2) and by the client (exit 3, tree unchanged).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tar::EntryType;

use crate::craft::{RawEntry, edit_manifest, raw_package, release_mut, swap_package};
use crate::util::{Env, assert_same_tree, snapshot, tree_snapshot};

/// A file (`path`, contents, mode) or a link (`path`, `-> target`).
enum Item {
    File(&'static str, String, u32),
    Link(&'static str, &'static str),
    Dir(&'static str),
}

use Item::{Dir, File, Link};

fn hello(version: &str) -> String {
    format!("#!/bin/sh\necho \"hello {version}\"\n")
}

fn write_tree(env: &Env, name: &str, items: &[Item]) -> PathBuf {
    let root = env.path(&format!("trees/{name}"));
    fs::create_dir_all(&root).unwrap();
    for item in items {
        match item {
            File(p, body, mode) => {
                let path = root.join(p);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, body).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Link(p, target) => {
                let path = root.join(p);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                symlink(target, &path).unwrap();
            }
            Dir(p) => fs::create_dir_all(root.join(p)).unwrap(),
        }
    }
    root
}

/// The three releases of the Node.js-style app.
fn node_releases(env: &Env) -> [PathBuf; 3] {
    let common = |v: &str| {
        vec![
            File("node_modules/hello/bin/hello.sh", hello(v), 0o755),
            File(
                "node_modules/hello/package.json",
                format!("{{\"version\": \"{v}\"}}\n"),
                0o644,
            ),
            File(
                "node_modules/hello/lib/index.js",
                "module.exports = 1;\n".into(),
                0o644,
            ),
            // `npm install` puts relative links in .bin/; bin/app -> .bin/hello -> hello.sh is a chain.
            Link("node_modules/.bin/hello", "../hello/bin/hello.sh"),
            Link("bin/app", "../node_modules/.bin/hello"),
            // A link to a directory, and one that resolves to the release root.
            Link("node_modules/hello/current", "lib"),
            Link("node_modules/hello/root", "../.."),
            // Unchanged, so lib/ is patched entry by entry.
            File("lib/libbar.so", "bar\n".into(), 0o755),
        ]
    };
    let mut r1 = common("1.0.0");
    r1.extend([
        File("lib/libfoo.so.1.0", "elf 1.0\n".into(), 0o755),
        Link("lib/libfoo.so.1", "libfoo.so.1.0"),
        Link("lib/libfoo.so", "libfoo.so.1"),
        Link("share", "node_modules/hello/lib"),
        Dir("var/empty"),
    ]);
    let mut r2 = common("1.1.0");
    r2.extend([
        // Retargeted, with the old target gone; a link turned into a file.
        File("lib/libfoo.so.1.1", "elf 1.1\n".into(), 0o755),
        Link("lib/libfoo.so.1", "libfoo.so.1.1"),
        File("lib/libfoo.so", "INPUT(libfoo.so.1)\n".into(), 0o644),
        Link("share", "node_modules/hello/lib"),
        Link("node_modules/.bin/hello2", "../hello/bin/hello.sh"),
        // A directory turned into a link.
        Link("var", "lib"),
    ]);
    let mut r3 = common("1.2.0");
    r3.extend([
        File("lib/libfoo.so.1.1", "elf 1.1\n".into(), 0o755),
        Link("lib/libfoo.so.1", "libfoo.so.1.1"),
        // And back: the file is a link again; a link turned into a directory.
        Link("lib/libfoo.so", "libfoo.so.1"),
        File("share/README", "shared\n".into(), 0o644),
        Dir("var/empty"),
    ]);
    [
        write_tree(env, "1.0.0", &r1),
        write_tree(env, "1.1.0", &r2),
        write_tree(env, "1.2.0", &r3),
    ]
}

fn run_app(install: &Path) -> String {
    let out = Command::new(install.join("bin/app")).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn verify(env: &Env) -> crate::util::Run {
    env.molt(&["verify", "--config", "molt.toml", "--json"])
}

#[test]
fn a_node_style_tree_with_links_installs_patches_rolls_back_and_verifies() {
    let env = Env::new();
    env.keygen("release");
    let trees = node_releases(&env);
    for (tree, v) in trees.iter().zip(["1.0.0", "1.1.0", "1.2.0"]) {
        env.publish(tree, v).success();
    }
    // The patch 1.0.0 -> 1.1.0 replaces the retargeted link and the link that became a file.
    let m = env.manifest();
    let ops = &m["releases"][1]["artifacts"]["x86_64"]["patches"][0]["operations"];
    let files = ops["replace"]["files"].as_array().unwrap();
    for p in [
        "lib/libfoo.so",
        "lib/libfoo.so.1",
        "node_modules/.bin/hello2",
        "var",
    ] {
        assert!(files.contains(&json!(p)), "{p} not replaced: {ops}");
    }

    env.file_config();
    let r = env.apply(&["--version", "1.0.0"]).success().result();
    assert_eq!(r["kind"], "full");
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&trees[0]),
        "1.0.0",
    );
    assert_eq!(run_app(&env.install()), "hello 1.0.0\n");
    verify(&env).success();

    for (i, v) in [(1, "1.1.0"), (2, "1.2.0")] {
        let r = env.apply(&["--version", v]).success().result();
        assert_eq!(r["kind"], "patch", "{v}");
        assert_same_tree(&snapshot(&env.install()), &tree_snapshot(&trees[i]), v);
        assert_eq!(run_app(&env.install()), format!("hello {v}\n"));
        verify(&env).success();
    }

    env.molt(&["rollback", "--config", "molt.toml"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&trees[1]),
        "rolled back to 1.1.0",
    );
    assert_eq!(run_app(&env.install()), "hello 1.1.0\n");
    verify(&env).success();

    // verify checks a link's target without following it.
    let link = env.install().join("lib/libfoo.so.1");
    fs::remove_file(&link).unwrap();
    symlink("libfoo.so.1.0-local", &link).unwrap();
    verify(&env).code(1).error_contains(&[
        "lib/libfoo.so.1",
        "libfoo.so.1.0-local",
        "libfoo.so.1.1",
    ]);
    fs::remove_file(&link).unwrap();
    fs::write(&link, "not a link").unwrap();
    verify(&env)
        .code(1)
        .error_contains(&["lib/libfoo.so.1", "no longer a symbolic link"]);
}

#[test]
fn publish_refuses_absolute_escaping_and_cyclic_links() {
    let cases: [(&str, &str, &str); 4] = [
        ("bin/abs", "/etc/passwd", "absolute"),
        ("bin/up", "../../etc/passwd", "past the root"),
        ("bin/through", "../dot/../..", "past the root"),
        ("bin/loop", "loop", "cycle"),
    ];
    for (link, target, why) in cases {
        let env = Env::new();
        env.keygen("release");
        let tree = write_tree(
            &env,
            "bad",
            &[
                File("bin/app", "app\n".into(), 0o755),
                Link("dot", "."),
                Link(link, target),
            ],
        );
        env.publish(&tree, "1.0.0")
            .code(2)
            .error_contains(&[link, target, why]);
        assert!(!env.repo().join("manifest.json").exists(), "{link}");
    }
}

/// 1.0.0 of the Node.js-style app installed; returns the install snapshot.
fn node_installed(env: &Env) -> crate::util::Snapshot {
    env.keygen("release");
    let trees = node_releases(env);
    for (tree, v) in trees.iter().zip(["1.0.0", "1.1.0", "1.2.0"]) {
        env.publish(tree, v).success();
    }
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    snapshot(&env.install())
}

#[track_caller]
fn assert_refused(env: &Env, before: &crate::util::Snapshot, args: &[&str], needles: &[&str]) {
    let serial = env.serial();
    env.apply(args).code(3).error_contains(needles);
    assert_same_tree(&snapshot(&env.install()), before, "after a refused package");
    assert_eq!(env.serial(), serial);
    assert_eq!(env.installed_version(), "1.0.0");
    assert!(!env.root.join("escaped").exists());
}

#[test]
fn client_refuses_escaping_links_in_a_signed_full_package() {
    let cases: Vec<(Vec<RawEntry>, Vec<&str>)> = vec![
        (
            vec![RawEntry::special(
                "bin/app",
                EntryType::Symlink,
                Some("/etc/passwd"),
            )],
            vec!["bin/app", "/etc/passwd", "absolute"],
        ),
        (
            vec![
                RawEntry::dir("bin"),
                RawEntry::special("bin/app", EntryType::Symlink, Some("../../escaped")),
            ],
            vec!["bin/app", "../../escaped", "past the root"],
        ),
        (
            // Through another link of the package: d is the root, d/.. is outside.
            vec![
                RawEntry::special("d", EntryType::Symlink, Some(".")),
                RawEntry::special("e", EntryType::Symlink, Some("d/../escaped")),
            ],
            vec!["e", "past the root"],
        ),
        (
            // RUSTSEC-2021-0080: a link, then an entry through it.
            vec![
                RawEntry::special("sym", EntryType::Symlink, Some("bin")),
                RawEntry::file("sym/escaped", b"x"),
            ],
            vec!["sym/escaped", "clashes"],
        ),
        (
            // RUSTSEC-2018-0002: a link, then a file of the same path.
            vec![
                RawEntry::special("f", EntryType::Symlink, Some("g")),
                RawEntry::file("f", b"x"),
            ],
            vec!["f", "clashes"],
        ),
        (
            // RUSTSEC-2026-0067: a link, then a directory of the same name.
            vec![
                RawEntry::special("d", EntryType::Symlink, Some("bin")),
                RawEntry::dir("d"),
            ],
            vec!["d", "clashes"],
        ),
    ];
    for (entries, needles) in cases {
        let env = Env::new();
        let before = node_installed(&env);
        let unpacked = entries.iter().map(|e| e.data.len() as u64).sum();
        swap_package(&env, "1.1.0", None, &raw_package(&entries), unpacked);
        assert_refused(
            &env,
            &before,
            &["--version", "1.1.0", "--force-full"],
            &needles,
        );
    }
}

#[test]
fn client_refuses_a_patch_link_that_escapes_through_an_installed_link() {
    // node_modules/hello/root -> ../.. (installed by 1.0.0) is the install's root; a patch
    // whose new link goes one level above it is outside — seen only by following the
    // installed link, which the patch package does not carry.
    let env = Env::new();
    let before = node_installed(&env);
    let entries = vec![RawEntry::special(
        "evil",
        EntryType::Symlink,
        Some("node_modules/hello/root/../escaped"),
    )];
    swap_package(&env, "1.1.0", Some("1.0.0"), &raw_package(&entries), 0);
    edit_manifest(&env, |m| {
        let p = &mut release_mut(m, "1.1.0")["artifacts"]["x86_64"]["patches"][0];
        p["operations"] = json!({"replace": {"files": ["evil"]}});
    });
    assert_refused(
        &env,
        &before,
        &["--version", "1.1.0"],
        &[
            "evil",
            "node_modules/hello/root/../escaped",
            "past the root",
        ],
    );
}
