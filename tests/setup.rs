//! Setups that cannot be safe are refused at load, before anything is fetched or changed: a
//! state dir overlapping the install, an install inside the state dir, config or keys a release
//! could replace, a state dir of another install, a bind-mounted install. Publishing refuses a
//! tree holding `.molt` and a serial that cannot grow; an unsigned manifest is a security
//! rejection from every source.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::craft::{RawEntry, raw_package, reference_releases, swap_package, write_signed};
use crate::server::Server;
use crate::util::{Env, snapshot};

fn config_with(env: &Env, head: &str, extra: &str) {
    let text = format!(
        "product = \"demo-app\"\n{head}\narch = \"x86_64\"\ndevice_id = \"d\"\n{extra}\n\
         [source]\nurl = \"file://{}\"\nkeys = [\"keys/release.pub.pem\"]\n",
        env.repo().display()
    );
    fs::write(env.path("molt.toml"), text).unwrap();
}

#[test]
fn overlapping_state_and_install_dirs_are_refused_at_load() {
    let env = Env::new();
    reference_releases(&env);
    let cases: &[(&str, &[&str])] = &[
        (
            "install_dir = \"install\"\nstate_dir = \"install\"",
            &["state_dir", "install"],
        ),
        (
            "install_dir = \"st/txn/app\"\nstate_dir = \"st\"",
            &["install_dir", "st/txn/app", "inside state_dir", "st"],
        ),
        (
            "install_dir = \"install\"\nstate_dir = \"install/var/molt\"",
            &["state_dir", "install/var/molt", "install", "preserve"],
        ),
        // The operator's config and keys would be release-replaceable.
        ("install_dir = \".\"", &["install_dir", "molt.toml"]),
    ];
    for (head, needles) in cases {
        config_with(&env, head, "");
        for cmd in ["status", "apply"] {
            env.molt(&[cmd, "--config", "molt.toml"])
                .code(2)
                .error_contains(needles);
        }
        assert!(
            !env.path("install/var").exists() && !env.path("st").exists(),
            "{head}"
        );
    }
    // Inside the install, under a preserved path, is fine.
    config_with(
        &env,
        "install_dir = \"install\"\nstate_dir = \"install/var/molt\"",
        "[apply]\npreserve = [\"var/\"]\n",
    );
    env.molt(&["apply", "--config", "molt.toml"]).success();
    assert!(env.path("install/var/molt/state.json").exists());
}

#[test]
fn a_state_dir_of_another_install_is_refused() {
    let env = Env::new();
    reference_releases(&env);
    config_with(&env, "install_dir = \"a\"\nstate_dir = \"shared\"", "");
    env.molt(&["apply", "--config", "molt.toml"]).success();
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(env.path("shared/state.json")).unwrap()).unwrap();
    let a = fs::canonicalize(env.path("a")).unwrap();
    assert_eq!(st["install_dir"], json!(a.to_str().unwrap()));
    assert_eq!(st["product"], "demo-app");
    let before = fs::read(env.path("shared/state.json")).unwrap();

    config_with(&env, "install_dir = \"b\"\nstate_dir = \"shared\"", "");
    env.molt(&["apply", "--config", "molt.toml"])
        .code(2)
        .error_contains(&["shared", a.to_str().unwrap(), "/b", "own state_dir"]);
    assert!(snapshot(&env.path("b")).is_empty());
    assert_eq!(fs::read(env.path("shared/state.json")).unwrap(), before);
}

#[test]
fn publish_refuses_a_tree_holding_molt_state() {
    let env = Env::new();
    env.keygen("release");
    let tree = env.tree(
        "t",
        &[("bin/app", "1\n", 0o755), (".molt/device-id", "x\n", 0o600)],
    );
    env.publish(&tree, "1.0.0").code(2).error_contains(&[
        ".molt",
        "reserved",
        tree.to_str().unwrap(),
    ]);
    assert!(!env.repo().join("manifest.json").exists());
}

#[test]
fn publish_refuses_to_wrap_the_serial() {
    let env = Env::new();
    reference_releases(&env);
    let mut m = env.manifest();
    m["serial"] = json!(u64::MAX);
    write_signed(
        &env.repo(),
        &serde_json::to_vec_pretty(&m).unwrap(),
        &env.path("keys/release.key.pem"),
    );
    let before = fs::read(env.repo().join("manifest.json")).unwrap();
    let tree = env.tree("1.3.0", &[("bin/app", "1.3\n", 0o755)]);
    env.publish(&tree, "1.3.0")
        .code(2)
        .error_contains(&["serial", "new repository"]);
    assert_eq!(fs::read(env.repo().join("manifest.json")).unwrap(), before);
}

#[test]
fn an_unsigned_manifest_is_a_security_rejection_from_every_source() {
    let env = Env::new();
    reference_releases(&env);
    let server = Server::start(env.repo());
    let sig = env.repo().join("manifest.json.sig");
    let good = fs::read(&sig).unwrap();
    for (what, bytes) in [
        ("missing", None),
        ("empty", Some(&b""[..])),
        ("no signatures", Some(&br#"{"signatures": []}"#[..])),
    ] {
        match bytes {
            None => fs::remove_file(&sig).unwrap(),
            Some(b) => fs::write(&sig, b).unwrap(),
        }
        for url in [format!("file://{}", env.repo().display()), server.url()] {
            env.config(&url, "");
            env.molt(&["check", "--config", "molt.toml"])
                .code(3)
                .error_contains(&["is not signed", "manifest.json.sig"]);
            assert!(snapshot(&env.install()).is_empty(), "{what} over {url}");
        }
    }
    fs::write(&sig, good).unwrap();
    env.molt(&["check", "--config", "molt.toml"]).success();
}

/// A bind mount keeps `st_dev` but refuses renames; molt must notice at load.
#[test]
fn a_bind_mounted_install_is_reported_at_load() {
    let env = Env::new();
    reference_releases(&env);
    let real = env.path("real");
    fs::create_dir_all(&real).unwrap();
    fs::create_dir_all(env.install()).unwrap();
    let mounted = Command::new("mount")
        .arg("--bind")
        .arg(&real)
        .arg(env.install())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot bind-mount here (needs root and mount rights)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&env.install());
    config_with(&env, "install_dir = \"install\"\nstate_dir = \"state\"", "");
    env.molt(&["apply", "--config", "molt.toml"])
        .code(2)
        .error_contains(&["different mounts", "state", "install"]);
    assert!(snapshot(&real).is_empty());
}

#[test]
fn a_package_holding_molt_is_refused_wherever_the_state_dir_is() {
    let env = Env::new();
    reference_releases(&env);
    let entries = [
        RawEntry::file("bin/app", b"app\n"),
        RawEntry::file(".molt/state.json", b"{}"),
    ];
    swap_package(&env, "1.2.0", None, &raw_package(&entries), 6);
    for head in [
        "install_dir = \"install\"",
        "install_dir = \"install\"\nstate_dir = \"state\"",
    ] {
        config_with(&env, head, "");
        env.molt(&["apply", "--config", "molt.toml", "--force-full"])
            .code(3)
            .error_contains(&[".molt", "reserved"]);
        assert!(snapshot(&env.install()).is_empty(), "{head}");
    }
}
