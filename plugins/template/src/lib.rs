//! # A minimal molt strategy plugin: copy this crate to start your own
//!
//! 1. Copy `plugins/template/` somewhere, rename the package in `Cargo.toml`, and point the
//!    `molt-plugin-sdk` dependency at the SDK (`{ path = "…/plugin-sdk" }`; keep the name
//!    `molt-plugin-sdk`, the generated bindings refer to it). Outside this workspace, also copy
//!    the `[profile.release]` of `plugins/Cargo.toml` (`opt-level = "s"`, `lto`, `strip`,
//!    `panic = "abort"`, `codegen-units = 1`) and keep `crate-type = ["cdylib"]`.
//! 2. Change `info()` and `decide()`. [`molt_plugin_sdk::policy`] implements molt's default
//!    rules; most strategies narrow the releases on offer or gate the default decision.
//! 3. Build: `rustup target add wasm32-wasip2` once, then
//!    `cargo build --release --target wasm32-wasip2`. The component is
//!    `target/wasm32-wasip2/release/<crate_name>.wasm`.
//! 4. Check it: `molt plugin inspect target/wasm32-wasip2/release/<crate_name>.wasm`.
//! 5. Use it in `molt.toml`:
//!    ```toml
//!    [strategy]
//!    plugin = "/etc/molt/plugins/my_strategy.wasm"
//!    [strategy.config]
//!    major = 1
//!    ```
//!
//! The plugin runs sandboxed: no files, no network, no environment, 1 s and 64 MiB by default.
//! Whatever it decides, molt checks against the signed manifest.

use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{
    Decision, PluginInfo, Strategy, StrategyContext, export_strategy, log, policy,
};

/// The plugin's `[strategy.config]` table. `deny_unknown_fields` turns an operator's typo into
/// an error that names the key.
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default, deny_unknown_fields)]
pub struct Config {
    /// Never leave this major version (e.g. stay on 1.x while 2.0 is on offer).
    major: Option<u64>,
}

pub struct Template;

impl Strategy for Template {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "template",
            env!("CARGO_PKG_VERSION"),
            "the default policy, kept within one major version",
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

export_strategy!(Template);
