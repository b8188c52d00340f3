//! Strategy plugins: what the pipeline tells them ([`StrategyContext`]) and what they answer
//! ([`Decision`]). The pipeline builds the input from the verified manifest and checks the
//! decision against it; nothing a plugin says is trusted.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::bindings::config_check::CheckerPre;
use super::bindings::strategy as wit;
use super::error::PluginError;
use super::inspect::PluginInfo;
use super::limits::PluginLimits;
use super::sandbox::{Loaded, SandboxState, guest_text};
use crate::version::Version;

/// A patch into a release, from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOffer {
    pub from: Version,
    pub size: u64,
}

/// A release on offer for this device's arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOffer {
    pub version: Version,
    pub channel: String,
    pub notes: String,
    pub published: OffsetDateTime,
    /// Size of the full package for this arch, if there is one.
    pub full_size: Option<u64>,
    pub patches: Vec<PatchOffer>,
}

/// Everything a strategy is told (see `strategy-context` in `wit/molt-plugin.wit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyContext {
    pub installed_version: Option<Version>,
    pub arch: String,
    pub channel: String,
    pub force_full: bool,
    pub requested_version: Option<Version>,
    pub releases: Vec<ReleaseOffer>,
    pub rolled_back_from: Vec<Version>,
    pub failed_validation: Vec<Version>,
    pub device_id: String,
    pub now: OffsetDateTime,
}

/// A strategy's answer, with versions parsed. Not yet checked against the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Decision {
    Full { version: Version },
    Patch { from: Version, to: Version },
    None { reason: String },
}

/// A loaded strategy plugin, pre-instantiated; each call gets a fresh store.
pub struct StrategyPlugin {
    loaded: Loaded<wit::StrategyPre<SandboxState>>,
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn to_wit(input: &StrategyContext) -> wit::StrategyContext {
    let versions = |list: &[Version]| list.iter().map(Version::to_string).collect();
    wit::StrategyContext {
        installed_version: input.installed_version.as_ref().map(Version::to_string),
        arch: input.arch.clone(),
        channel: input.channel.clone(),
        force_full: input.force_full,
        requested_version: input.requested_version.as_ref().map(Version::to_string),
        releases: input
            .releases
            .iter()
            .map(|r| wit::ReleaseOffer {
                version: r.version.to_string(),
                channel: r.channel.clone(),
                notes: r.notes.clone(),
                published: rfc3339(r.published),
                full_size: r.full_size,
                patches: r
                    .patches
                    .iter()
                    .map(|p| wit::PatchOffer {
                        from: p.from.to_string(),
                        size: p.size,
                    })
                    .collect(),
            })
            .collect(),
        rolled_back_from: versions(&input.rolled_back_from),
        failed_validation: versions(&input.failed_validation),
        device_id: input.device_id.clone(),
        now: rfc3339(input.now),
    }
}

impl StrategyPlugin {
    pub(super) fn new(
        name: String,
        pre: wit::StrategyPre<SandboxState>,
        checker: Option<CheckerPre<SandboxState>>,
        engine: wasmtime::Engine,
        limits: PluginLimits,
    ) -> Self {
        Self {
            loaded: Loaded::new(name, pre, checker, engine, limits),
        }
    }

    /// Whether the plugin accepts `config_json` (its `[strategy.config]` table as
    /// JSON): [`PluginError::BadConfig`] if not; `Ok(false)` if it predates config checks.
    pub(crate) fn check_config(&self, config_json: &str) -> Result<bool, PluginError> {
        self.loaded.check_config(config_json)
    }

    /// The plugin as named in molt.toml (`builtin:default` or its path).
    pub fn name(&self) -> &str {
        &self.loaded.name
    }

    /// The plugin's `info()`, called in the sandbox.
    pub fn info(&self) -> Result<PluginInfo, PluginError> {
        let pre = self.loaded.pre.clone();
        let info = self.loaded.call(None).run(async move |store| {
            let plugin = pre.instantiate_async(&mut *store).await?;
            plugin
                .molt_plugin_strategy_plugin()
                .call_info(&mut *store)
                .await
        })?;
        Ok(PluginInfo::from_guest(
            info,
            self.loaded.limits.output_bytes,
        ))
    }

    /// Asks the plugin what to do. `config_json` is the `[strategy.config]` table as JSON.
    pub fn decide(
        &self,
        input: &StrategyContext,
        config_json: &str,
    ) -> Result<Decision, PluginError> {
        let ctx = to_wit(input);
        let config = config_json.to_owned();
        let pre = self.loaded.pre.clone();
        let answer = self.loaded.call(None).run(async move |store| {
            let plugin = pre.instantiate_async(&mut *store).await?;
            plugin
                .molt_plugin_strategy_plugin()
                .call_decide(&mut *store, &ctx, &config)
                .await
        })?;
        decision_from_guest(&self.loaded.name, answer, self.loaded.limits.output_bytes)
    }
}

/// What the guest's `decide` returned, made a [`Decision`]: every string capped at `cap` bytes
/// and made printable, versions parsed; an error string is the plugin's refusal.
pub(super) fn decision_from_guest(
    plugin: &str,
    answer: Result<wit::Decision, String>,
    cap: usize,
) -> Result<Decision, PluginError> {
    let text = |t: &str| guest_text(t, cap);
    let decision = answer.map_err(|reason| PluginError::Rejected {
        plugin: plugin.to_owned(),
        reason: text(&reason),
    })?;
    let parse = |version: &str, what: &str| {
        Version::parse(&text(version)).map_err(|e| PluginError::Malformed {
            plugin: plugin.to_owned(),
            what: format!("{what}: {e}"),
        })
    };
    Ok(match decision {
        wit::Decision::Full(version) => Decision::Full {
            version: parse(&version, "full(version)")?,
        },
        wit::Decision::Patch(choice) => Decision::Patch {
            from: parse(&choice.from, "patch from")?,
            to: parse(&choice.to, "patch to")?,
        },
        wit::Decision::None(reason) => Decision::None {
            reason: text(&reason),
        },
    })
}
