//! `builtin:default`: molt's standard upgrade strategy.
//!
//! Newest release on the configured channel; a patch when one exists from the installed
//! version, else the full package; never an automatic downgrade; releases that were rolled
//! back or failed validation on this device are skipped unless asked for by name. The rules are
//! those of [`molt_plugin_sdk::policy`].
//!
//! Config (`[strategy.config]`):
//! * `pin = "1.2.0"`: stay on / move to exactly this version (may be a downgrade);
//! * `allow_prerelease = true`: consider `1.3.0-rc.1` and the like (default false);
//! * `allow_downgrade`: read by molt itself (whether it accepts a decision that goes back a
//!   version); the SDK removes it before this plugin's config is parsed.

use molt_plugin_sdk::policy::{self, PolicyOptions};
use molt_plugin_sdk::{Decision, PluginInfo, Strategy, StrategyContext, export_strategy, log};

pub struct Default;

impl Strategy for Default {
    type Config = PolicyOptions;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "default",
            env!("CARGO_PKG_VERSION"),
            "newest release on the channel; patch when possible; skips rolled-back releases",
        )
    }

    fn decide(ctx: &StrategyContext, options: PolicyOptions) -> Result<Decision, String> {
        let decision = policy::decide(ctx, &options)?;
        log::debug(&format!("decision: {decision:?}"));
        Ok(decision)
    }
}

export_strategy!(Default);
