//! A molt strategy plugin: molt's default policy, optionally kept within one major version.
//!
//! `molt plugin new NAME --kind strategy` writes this very file as the `src/lib.rs` of a new
//! crate (it is `plugins/template/src/lib.rs` in molt's sources, built with molt's own plugins,
//! so the starting point always builds against this SDK). Change `info()` and `decide()`:
//! `molt_plugin_sdk::policy` implements molt's default rules, and most strategies narrow the
//! releases on offer or gate the default decision.
//!
//! Build with `cargo build --release --target wasm32-wasip2` (once: `rustup target add
//! wasm32-wasip2`); the component is `target/wasm32-wasip2/release/<crate_name>.wasm`. Check it
//! with `molt plugin inspect` and name it in `molt.toml`:
//!
//! ```toml
//! [strategy]
//! plugin = "/etc/molt/plugins/my_strategy.wasm"
//! [strategy.config]
//! major = 1
//! ```
//!
//! The plugin runs sandboxed: no files, no network, no environment, 1 s and 64 MiB by default.
//! Whatever it decides, molt checks against the signed manifest.

use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{
    Decision, PluginInfo, Strategy, StrategyContext, export_strategy, log, policy,
};

/// The operator's `[strategy.config]` table. `deny_unknown_fields`: a mistyped key is refused,
/// by name, when molt loads the plugin.
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default, deny_unknown_fields)]
pub struct Config {
    /// Never leave this major version (e.g. stay on 1.x while 2.0 is on offer).
    major: Option<u64>,
}

pub(crate) struct Plugin;

impl Strategy for Plugin {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "the default policy, optionally within one major version",
        )
    }

    fn decide(ctx: &StrategyContext, config: Config) -> Result<Decision, String> {
        let mut ctx = ctx.clone();
        // An operator's `--version` is not filtered: it names exactly what to install.
        if let Some(major) = config.major
            && ctx.requested_version.is_none()
        {
            ctx.releases.retain(|r| r.version.major == major);
            log::info(&format!(
                "{} releases in major version {major}",
                ctx.releases.len()
            ));
        }
        policy::decide(&ctx, &policy::PolicyOptions::default())
    }
}

export_strategy!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use molt_plugin_sdk::{Release, Version};

    fn release(version: &str) -> Release {
        Release {
            version: Version::parse(version).unwrap(),
            channel: "stable".into(),
            notes: String::new(),
            published: "2026-01-01T00:00:00Z".into(),
            full_size: Some(1000),
            patches: vec![],
        }
    }

    fn ctx() -> StrategyContext {
        StrategyContext {
            installed_version: Some(Version::new(1, 0, 0)),
            arch: "x86_64".into(),
            channel: "stable".into(),
            force_full: false,
            requested_version: None,
            releases: vec![release("1.0.0"), release("1.1.0"), release("2.0.0")],
            rolled_back_from: vec![],
            failed_validation: vec![],
            device_id: "test-device".into(),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn stays_within_the_configured_major_version() {
        let within = Plugin::decide(&ctx(), Config { major: Some(1) }).unwrap();
        assert_eq!(within, Decision::Full(Version::new(1, 1, 0)));
        let newest = Plugin::decide(&ctx(), Config::default()).unwrap();
        assert_eq!(newest, Decision::Full(Version::new(2, 0, 0)));
    }
}
