//! TEST ONLY. A validator that misbehaves on purpose so molt's tests can prove the sandbox
//! stops it. Never configure it on a real machine.
//!
//! Config `mode`: `write` (tries to create, append to and delete files in the read-only tree),
//! `escape` (tries to read `/etc/passwd`, `../` out of the tree, and list `/`), `fail`
//! (returns `Err(reason)`; config `reason`), `loop` (spins forever), `sleep` (blocks in the host
//! for an hour), `hoard` (opens config `path`, default `bin/app`, `count` times, default 1000,
//! keeping every file open and stopping at the first error; then sleeps for an hour if `sleep`
//! is true, else returns an error saying how many it opened), `stdout-flood` (prints 1 MiB to
//! stdout and stderr, then passes). `write` and `escape` return an error listing the outcome of
//! every attempt, so a test can see them all.

use std::hint::black_box;
use std::io::Write;

use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{PluginInfo, ValidationContext, Validator, export_validator, log};

#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default)]
pub struct Config {
    mode: String,
    reason: Option<String>,
    path: Option<String>,
    count: Option<usize>,
    sleep: bool,
}

fn outcome<T>(what: &str, result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => format!("{what}: SUCCEEDED"),
        Err(e) => format!("{what}: refused ({e})"),
    }
}

pub struct HostileValidator;

impl Validator for HostileValidator {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "test-hostile-validator",
            env!("CARGO_PKG_VERSION"),
            "TEST ONLY: misbehaves on purpose",
        )
    }

    fn validate(ctx: &ValidationContext, config: Config) -> Result<(), String> {
        log::warn(&format!("hostile validator: attempting {}", config.mode));
        match config.mode.as_str() {
            "write" => {
                let mut attempts = vec![outcome(
                    "create evil",
                    std::fs::write(ctx.path("evil"), b"pwned"),
                )];
                for relative in &ctx.changed {
                    let path = ctx.path(relative);
                    let append = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(b"pwned"));
                    attempts.push(outcome(&format!("append {relative}"), append));
                    attempts.push(outcome(
                        &format!("remove {relative}"),
                        std::fs::remove_file(&path),
                    ));
                }
                attempts.push(outcome("mkdir", std::fs::create_dir(ctx.path("evil-dir"))));
                Err(attempts.join("; "))
            }
            "escape" => {
                let attempts = [
                    outcome("read /etc/passwd", std::fs::read("/etc/passwd")),
                    outcome(
                        "read ../etc/passwd",
                        std::fs::read(ctx.path("../etc/passwd")),
                    ),
                    outcome(
                        "read ../../../../etc/passwd",
                        std::fs::read(ctx.path("../../../../etc/passwd")),
                    ),
                    outcome("list /", std::fs::read_dir("/").map(|d| d.count())),
                    outcome(
                        "list ..",
                        std::fs::read_dir(ctx.path("..")).map(|d| d.count()),
                    ),
                ];
                Err(attempts.join("; "))
            }
            "fail" => Err(config
                .reason
                .unwrap_or_else(|| "the hostile validator says no".into())),
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Err("woke up".into())
            }
            "hoard" => {
                let path = ctx.path(config.path.as_deref().unwrap_or("bin/app"));
                let mut files = Vec::new();
                let mut stopped = String::from("no error");
                for _ in 0..config.count.unwrap_or(1000) {
                    match std::fs::File::open(&path) {
                        Ok(f) => files.push(f),
                        Err(e) => {
                            stopped = e.to_string();
                            break;
                        }
                    }
                }
                log::warn(&format!("hoarding {} open files ({stopped})", files.len()));
                if config.sleep {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
                Err(format!(
                    "opened {} files, then: {stopped}",
                    black_box(&files).len()
                ))
            }
            "stdout-flood" => {
                let line = "o".repeat(1023);
                for _ in 0..1024 {
                    println!("{line}");
                    eprintln!("{line}");
                }
                Ok(())
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

export_validator!(HostileValidator);
