//! Shared fixtures: a scratch directory per test, the real `molt` binary, release trees,
//! snapshots of install trees, and a signing helper to craft hostile repositories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// One test's world: a temp dir holding keys, trees, a repository, an install and its config.
pub struct Env {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// The arguments of [`Env::publish`]: `tree` as `version` into `repo/` with
/// `keys/release.key.pem`.
pub fn publish_args<'a>(tree: &'a Path, version: &'a str) -> Vec<&'a str> {
    vec![
        "publish",
        "--repo",
        "repo",
        "--key",
        "keys/release.key.pem",
        "--product",
        "demo-app",
        "--version",
        version,
        "--tree",
        tree.to_str().unwrap(),
        "--arch",
        "x86_64",
        "--notes",
        "test release",
    ]
}

/// A file in a release tree: path, contents, mode.
pub type Spec<'a> = (&'a str, &'a str, u32);

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("molt-it-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_owned();
        Env { _dir: dir, root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    pub fn install(&self) -> PathBuf {
        self.path("install")
    }

    /// Runs the real `molt` binary in the env's root with a clean MOLT_* environment.
    pub fn molt(&self, args: &[&str]) -> Run {
        self.molt_with_env(args, &[])
    }

    pub fn molt_with_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_molt"));
        cmd.args(args);
        self.run_molt(cmd, args, envs)
    }

    /// Runs `molt` through `sh -c '<setup>; exec molt …'`, e.g. with `ulimit -n 256` as setup.
    pub fn molt_in_shell(&self, setup: &str, args: &[&str]) -> Run {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{setup}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_molt"))
            .args(args);
        self.run_molt(cmd, args, &[])
    }

    fn run_molt(&self, mut cmd: Command, args: &[&str], envs: &[(&str, &str)]) -> Run {
        cmd.current_dir(&self.root);
        for (k, _) in std::env::vars() {
            if k.starts_with("MOLT_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(envs.iter().copied());
        let output = cmd.output().expect("run molt");
        Run::new(args, output)
    }

    /// `molt keygen` into `keys/` (name `release` unless given).
    pub fn keygen(&self, name: &str) -> (PathBuf, PathBuf) {
        self.molt(&["keygen", "--out-dir", "keys", "--name", name])
            .success();
        (
            self.path(&format!("keys/{name}.key.pem")),
            self.path(&format!("keys/{name}.pub.pem")),
        )
    }

    /// Writes a release tree under `trees/<name>` and returns its path.
    pub fn tree(&self, name: &str, files: &[Spec]) -> PathBuf {
        let dir = self.path(&format!("trees/{name}"));
        for (rel, content, mode) in files {
            let p = dir.join(rel);
            if let Some(rel_dir) = rel.strip_suffix('/') {
                fs::create_dir_all(dir.join(rel_dir)).unwrap();
                continue;
            }
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `molt publish` of `tree` as `version` into `repo/` with `keys/release.key.pem`.
    pub fn publish(&self, tree: &Path, version: &str) -> Run {
        self.publish_with(tree, version, &[])
    }

    pub fn publish_with(&self, tree: &Path, version: &str, extra: &[&str]) -> Run {
        let mut args = publish_args(tree, version);
        args.extend_from_slice(extra);
        self.molt(&args)
    }

    /// Writes `molt.toml` for `source_url` with extra TOML appended, returns its path.
    pub fn config(&self, source_url: &str, extra: &str) -> PathBuf {
        let text = format!(
            "product = \"demo-app\"\ninstall_dir = \"install\"\narch = \"x86_64\"\n\
             device_id = \"test-device\"\n\
             {extra}\n[source]\nurl = \"{source_url}\"\nkeys = [\"keys/release.pub.pem\"]\n"
        );
        let path = self.path("molt.toml");
        fs::write(&path, text).unwrap();
        path
    }

    /// A config reading the repository over file://.
    pub fn file_config(&self) -> PathBuf {
        self.config(&format!("file://{}", self.repo().display()), "")
    }

    pub fn apply(&self, extra: &[&str]) -> Run {
        let mut args = vec!["apply", "--config", "molt.toml", "--json"];
        args.extend_from_slice(extra);
        self.molt(&args)
    }

    /// The persisted highest accepted serial, from `molt status --json`.
    pub fn serial(&self) -> Value {
        self.molt(&["status", "--config", "molt.toml", "--json"])
            .success()
            .json_lines()
            .pop()
            .unwrap()["serial"]
            .clone()
    }

    pub fn installed_version(&self) -> Value {
        self.molt(&["status", "--config", "molt.toml", "--json"])
            .success()
            .json_lines()
            .pop()
            .unwrap()["version"]
            .clone()
    }

    pub fn manifest(&self) -> Value {
        serde_json::from_slice(&fs::read(self.repo().join("manifest.json")).unwrap()).unwrap()
    }
}

/// The result of one `molt` run.
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn new(args: &[&str], o: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let code = o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn success(self) -> Run {
        self.code(0)
    }

    #[track_caller]
    pub fn code(self, expected: i32) -> Run {
        assert_eq!(
            self.code, expected,
            "molt {:?} exited {} (expected {expected})\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect()
    }

    /// The final `{"result": ...}` object of a `--json` run.
    pub fn result(&self) -> Value {
        let last = self.json_lines().pop().expect("no JSON output");
        assert!(
            last.get("result").is_some(),
            "last line is not a result: {last}"
        );
        last
    }

    /// The error text, from the JSON result or stderr.
    pub fn error_text(&self) -> String {
        match self.json_lines().pop() {
            Some(v) if v["result"] == "error" => v["error"].as_str().unwrap_or("").to_owned(),
            _ => self.stderr.clone(),
        }
    }

    #[track_caller]
    pub fn error_contains(self, needles: &[&str]) -> Run {
        let text = self.error_text().to_lowercase();
        for n in needles {
            assert!(
                text.contains(&n.to_lowercase()),
                "error of molt {:?} does not mention {n:?}:\n{}\n--- stderr\n{}",
                self.args,
                self.error_text(),
                self.stderr
            );
        }
        self
    }
}

pub use molt_test_support::tree::{Snapshot, assert_same_tree};

/// Every entry of an install (except the state dir `.molt`): kind, content hash and mode (a
/// symbolic link: its target, never followed).
pub fn snapshot(root: &Path) -> Snapshot {
    molt_test_support::tree::snapshot(root, &[".molt"])
}

/// The snapshot a release tree installs as (the tree itself, compared like an install).
pub fn tree_snapshot(tree: &Path) -> Snapshot {
    snapshot(tree)
}
