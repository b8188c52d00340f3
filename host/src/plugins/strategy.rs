//! Strategy plugins: what the pipeline tells them ([`StrategyContext`]) and what they answer
//! ([`Decision`]). The pipeline builds the input from the verified manifest and checks the
//! decision against it; nothing a plugin says is trusted.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::bindings::{PluginKind, strategy as wit};
use super::error::PluginError;
use super::plugin::{Plugin, World};
use super::sandbox::{SandboxState, guest_text};
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

/// The `strategy` world (its `strategy-base` bindings).
pub enum StrategyWorld {}

impl World for StrategyWorld {
    const KIND: PluginKind = PluginKind::Strategy;
    type Pre = wit::StrategyPre<SandboxState>;

    fn add_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
        wit::Strategy::add_to_linker::<SandboxState, HasSelf<SandboxState>>(linker, |s| s)
    }

    fn pre(instance: InstancePre<SandboxState>) -> wasmtime::Result<Self::Pre> {
        wit::StrategyPre::new(instance)
    }

    async fn info(
        pre: Self::Pre,
        store: &mut Store<SandboxState>,
    ) -> wasmtime::Result<wit::PluginInfo> {
        let plugin = pre.instantiate_async(&mut *store).await?;
        plugin
            .molt_plugin_strategy_plugin()
            .call_info(&mut *store)
            .await
    }
}

/// A loaded strategy plugin, pre-instantiated; each call gets a fresh store.
pub type StrategyPlugin = Plugin<StrategyWorld>;

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

impl Plugin<StrategyWorld> {
    /// Asks the plugin what to do. `config_json` is the `[strategy.config]` table as JSON.
    pub fn decide(
        &self,
        input: &StrategyContext,
        config_json: &str,
    ) -> Result<Decision, PluginError> {
        let ctx = to_wit(input);
        let config = config_json.to_owned();
        let pre = self.pre.clone();
        let answer = self.call(None).run(async move |store| {
            let plugin = pre.instantiate_async(&mut *store).await?;
            plugin
                .molt_plugin_strategy_plugin()
                .call_decide(&mut *store, &ctx, &config)
                .await
        })?;
        decision_from_guest(self.name(), answer, self.limits.output_bytes)
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
