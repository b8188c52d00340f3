//! `staged-rollout`: the default policy, but an automatic upgrade to a newer release reaches
//! only a stable share of the devices.
//!
//! A device is in the rollout of release `V` when `bucket(device_id, V) < percent`, where
//! `bucket` is the first 8 bytes of `SHA-256(device_id ‖ "\n" ‖ V)` read as a big-endian
//! `u64`, modulo 100. The bucket is stable for a device and a release (raising `percent` only
//! adds devices) and independent between releases (the same devices are not always first).
//!
//! Not gated: fresh installs (nothing to protect), `molt apply --version`, and `pin` — those are
//! explicit choices of the operator.
//!
//! Config: `percent` (0–100, required), plus `pin` and `allow_prerelease` as in
//! `builtin:default`.

use molt_plugin_sdk::policy::{self, PolicyOptions, Reason};
use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{
    Decision, PluginInfo, Strategy, StrategyContext, Version, export_strategy, log,
};
use sha2::{Digest, Sha256};

#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default, deny_unknown_fields)]
pub struct Config {
    percent: Option<u8>,
    /// `pin` and `allow_prerelease`, as in `builtin:default`.
    #[serde(flatten)]
    policy: PolicyOptions,
}

/// The device's rollout bucket (0–99) for a release; see the module docs.
pub fn bucket(device_id: &str, version: &Version) -> u8 {
    let mut hasher = Sha256::new();
    hasher.update(device_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(version.to_string().as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

pub struct StagedRollout;

impl Strategy for StagedRollout {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "staged-rollout",
            env!("CARGO_PKG_VERSION"),
            "the default policy, with upgrades released to a stable percentage of devices",
        )
    }

    fn decide(ctx: &StrategyContext, config: Config) -> Result<Decision, String> {
        let percent = config
            .percent
            .ok_or("staged-rollout needs `percent` (0-100) in [strategy.config]")?;
        if percent > 100 {
            return Err(format!(
                "invalid plugin config: percent: {percent} is more than 100"
            ));
        }
        let outcome = policy::decide_with_reason(ctx, &config.policy)?;
        let target = match &outcome.decision {
            Decision::Full(to) | Decision::Patch { to, .. } => to,
            Decision::None(_) => return Ok(outcome.decision),
        };
        let automatic = matches!(outcome.reason, Some(Reason::Upgrade | Reason::Reinstall));
        let newer = ctx
            .installed_version
            .as_ref()
            .is_some_and(|installed| target > installed);
        if automatic && newer {
            let bucket = bucket(&ctx.device_id, target);
            log::debug(&format!(
                "device bucket for {target}: {bucket} (rollout {percent} %)"
            ));
            if bucket >= percent {
                return Ok(Decision::None(format!(
                    "release {target} is not rolled out to this device yet ({percent} %)"
                )));
            }
        }
        Ok(outcome.decision)
    }
}

export_strategy!(StagedRollout);
