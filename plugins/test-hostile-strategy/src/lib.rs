//! TEST ONLY. A strategy that misbehaves on purpose so molt's tests can prove the sandbox
//! stops it. Never configure it on a real machine.
//!
//! Config `mode`: `loop` (spins forever), `memory` (grows a Vec without bound), `panic`,
//! `stack` (unbounded recursion), `bogus-version` (decides `full("9.9.9")`, a version no
//! manifest offers), `sleep` (blocks in the host for an hour), `log-flood` (logs ~100 MiB),
//! `huge-error` (an 8 MiB error that starts with a terminal escape), `huge-version` (decides
//! `full` of a valid 8 MiB version).
//! Each mode logs what it is about to try before it does.

use std::hint::black_box;

use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{
    Decision, PluginInfo, Strategy, StrategyContext, Version, export_strategy, log,
};

#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default)]
pub struct Config {
    mode: String,
}

fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = black_box([depth; 64]);
    recurse(depth + 1) + frame[3]
}

pub struct HostileStrategy;

impl Strategy for HostileStrategy {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "test-hostile-strategy",
            env!("CARGO_PKG_VERSION"),
            "TEST ONLY: misbehaves on purpose",
        )
    }

    fn decide(_ctx: &StrategyContext, config: Config) -> Result<Decision, String> {
        log::warn(&format!("hostile strategy: attempting {}", config.mode));
        match config.mode.as_str() {
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xa5; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "panic" => panic!("hostile strategy panicked on purpose"),
            "stack" => Ok(Decision::None(recurse(0).to_string())),
            "bogus-version" => Ok(Decision::Full(Version::new(9, 9, 9))),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Decision::None("woke up".into()))
            }
            "log-flood" => {
                let line = "x".repeat(1024);
                for _ in 0..100 * 1024 {
                    log::info(&line);
                }
                Ok(Decision::None("flooded the log".into()))
            }
            "huge-error" => Err(format!("\u{1b}[2J{}", "e".repeat(8 << 20))),
            "huge-version" => Ok(Decision::Full(
                Version::parse(&format!("1.0.0-{}", "a".repeat(8 << 20)))
                    .map_err(|e| e.to_string())?,
            )),
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

export_strategy!(HostileStrategy);
