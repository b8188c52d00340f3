//! The host's side of a strategy decision: what the plugin is told, and the check of what it
//! answers against the signed manifest.
//!
//! A strategy plugin only ever chooses among what the manifest offers. Whatever it answers, the
//! host resolves the answer to a package that the manifest signed for this arch, refuses a patch
//! that does not start at the installed version, refuses a downgrade the operator did not allow,
//! and never lets a plugin override `--force-full` or `--version`.

use time::OffsetDateTime;

use crate::Error;
use crate::config::Config;
use crate::plugins::{Decision, PatchOffer, ReleaseOffer, StrategyContext, StrategyPlugin};
use crate::repo::manifest::{DeltaPackage, Manifest, Operations, Package, Patch, PatchDocument};
use crate::state::{InstallState, Outcome};
use crate::txn::version_or_nothing;
use crate::version::Version;

/// What the operator asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub version: Option<Version>,
    pub force_full: bool,
    /// `--adopt`: take over entries molt does not own where the release puts its own (not a
    /// strategy matter; carried to the planner).
    pub adopt: bool,
}

/// A strategy's [`Decision`] resolved against the manifest: exactly what to download and apply.
/// Its variants are the decision's (`none`, `full`, `patch` in the WIT and in JSON output).
#[derive(Debug, Clone)]
pub enum Choice {
    None {
        reason: String,
    },
    Full {
        from: Option<Version>,
        to: Version,
        package: Package,
    },
    Patch {
        from: Version,
        to: Version,
        package: Package,
        operations: Operations,
        /// The same patch with binary deltas, used when the install still holds its bases.
        delta: Option<DeltaPackage>,
    },
}

impl Choice {
    pub fn kind(&self) -> &'static str {
        match self {
            Choice::None { .. } => "none",
            Choice::Full { .. } => "full",
            Choice::Patch { .. } => "patch",
        }
    }

    pub fn package(&self) -> Option<&Package> {
        match self {
            Choice::None { .. } => None,
            Choice::Full { package, .. } | Choice::Patch { package, .. } => Some(package),
        }
    }

    pub fn to(&self) -> Option<&Version> {
        match self {
            Choice::None { .. } => None,
            Choice::Full { to, .. } | Choice::Patch { to, .. } => Some(to),
        }
    }
}

/// Everything the strategy is told: the releases on offer for this arch, this install's
/// version and history, the operator's request, a stable device id and the time.
pub fn strategy_context(
    config: &Config,
    manifest: &Manifest,
    state: &InstallState,
    request: &Request,
    device_id: String,
) -> StrategyContext {
    let releases = manifest
        .releases
        .iter()
        .filter_map(|r| {
            let a = r.artifacts_for(&config.arch)?;
            Some(ReleaseOffer {
                version: r.version.clone(),
                channel: r.channel.clone(),
                notes: r.notes.clone(),
                published: r.published,
                full_size: a.full.as_ref().map(|f| f.size),
                patches: a
                    .patch_offers()
                    .map(|(from, size)| PatchOffer {
                        from: from.clone(),
                        size,
                    })
                    .collect(),
            })
        })
        .collect();
    StrategyContext {
        installed_version: state.version.clone(),
        arch: config.arch.clone(),
        channel: config.channel.clone(),
        force_full: request.force_full,
        requested_version: request.version.clone(),
        releases,
        rolled_back_from: state.rolled_back_from.clone(),
        failed_validation: state.failed.clone(),
        device_id,
        now: OffsetDateTime::now_utc(),
    }
}

/// How the patch a strategy chose is read when the manifest keeps it in a document of its own
/// (fetched, checked against the manifest's size and hash, parsed).
pub type LoadPatch<'a> = &'a mut dyn FnMut(&PatchDocument) -> Result<Patch, Error>;

/// The resolve stage of an update: asks the strategy plugin, then resolves its answer against
/// the signed manifest and the operator's rules ([`resolve`]).
pub(crate) fn choose(
    config: &Config,
    strategy: &StrategyPlugin,
    (manifest, load_patch): (&Manifest, LoadPatch<'_>),
    state: &InstallState,
    request: &Request,
    device_id: String,
) -> Result<Choice, Error> {
    let input = strategy_context(config, manifest, state, request, device_id);
    let decision = strategy.decide(&input, &config.strategy.config_json)?;
    resolve(
        strategy.name(),
        decision,
        (manifest, load_patch),
        state,
        config,
        request,
    )
}

/// Resolves `decision` (from `plugin`) against the signed manifest and the operator's rules;
/// a chosen patch kept in a document is read with `load_patch`, and only that one.
pub fn resolve(
    plugin: &str,
    decision: Decision,
    (manifest, load_patch): (&Manifest, LoadPatch<'_>),
    state: &InstallState,
    config: &Config,
    request: &Request,
) -> Result<Choice, Error> {
    let refuse = |reason: String| Error::DecisionRefused {
        plugin: plugin.to_owned(),
        reason,
    };
    let installed = state.version.clone();
    let (to, patch_from) = match decision {
        Decision::None { reason } => {
            return Ok(Choice::None {
                reason: with_newest(reason, manifest, state, config),
            });
        }
        Decision::Full { version } => (version, None),
        Decision::Patch { from, to } => (to, Some(from)),
    };
    if let Some(wanted) = &request.version
        && wanted != &to
    {
        return Err(refuse(format!(
            "chose {to}, but the operator asked for --version {wanted}"
        )));
    }
    let release = manifest.release(&to, &config.channel).ok_or_else(|| {
        refuse(format!(
            "chose {to}, which the signed manifest does not list"
        ))
    })?;
    let artifacts = release.artifacts_for(&config.arch).ok_or_else(|| {
        refuse(format!(
            "chose {to}, which has no artifacts for {} in the signed manifest",
            config.arch
        ))
    })?;
    if let Some(current) = &installed
        && &to < current
        && !config.strategy.allow_downgrade()
        && request.version.as_ref() != Some(&to)
    {
        return Err(refuse(format!(
            "chose {to}, a downgrade from {current}; set allow_downgrade = true in \
             [strategy.config] or name the version with --version"
        )));
    }
    match patch_from {
        None => {
            if installed.as_ref() == Some(&to) && !request.force_full {
                return Ok(Choice::None {
                    reason: format!("{to} is already installed"),
                });
            }
            let package = artifacts.full.clone().ok_or_else(|| {
                refuse(format!(
                    "chose a full install of {to}, which has no full package for {}",
                    config.arch
                ))
            })?;
            Ok(Choice::Full {
                from: installed,
                to,
                package,
            })
        }
        Some(from) => {
            if request.force_full {
                return Err(refuse(format!(
                    "chose a patch {from} → {to}, but --force-full asks for a full package"
                )));
            }
            if installed.as_ref() != Some(&from) {
                return Err(refuse(format!(
                    "chose a patch from {from}, but the installed version is {}",
                    version_or_nothing(&installed)
                )));
            }
            let patch = match (
                artifacts.patch_from(&from),
                artifacts.patch_document_from(&from),
            ) {
                (Some(patch), _) => patch.clone(),
                (None, Some(document)) => load_patch(document)?,
                (None, None) => {
                    return Err(refuse(format!(
                        "chose a patch {from} → {to}, which the signed manifest does not offer \
                         for {}",
                        config.arch
                    )));
                }
            };
            Ok(Choice::Patch {
                from,
                to,
                package: patch.package,
                operations: patch.operations,
                delta: patch.delta,
            })
        }
    }
}

/// A release this install holds back, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub version: Version,
    /// `failed-validation` or `rolled-back`.
    pub outcome: Outcome,
    /// When it happened, RFC 3339 (if the history still has it).
    pub at: Option<String>,
    /// The reason recorded then.
    pub reason: Option<String>,
}

impl Skipped {
    /// "it failed validation on DATE (reason)" / "this install rolled back from it (installed
    /// on DATE)".
    pub fn describe(&self) -> String {
        let on = self
            .at
            .as_ref()
            .map(|a| format!(" on {a}"))
            .unwrap_or_default();
        let why = self
            .reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        match self.outcome {
            Outcome::FailedValidation => format!("it failed validation{on}{why}"),
            _ => format!(
                "this install rolled back from it{}",
                self.at
                    .as_ref()
                    .map(|a| format!(" (installed on {a})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Every release this install holds back (failed validation, rolled back from), newest
/// event first, with the date and reason from the history.
pub fn skipped(state: &InstallState) -> Vec<Skipped> {
    let rfc3339 = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .ok()
    };
    let find = |version: &Version, outcome: Outcome| {
        state
            .history
            .iter()
            .rev()
            .find(|h| h.outcome == outcome && h.to.as_ref() == Some(version))
    };
    let mut list = Vec::new();
    for (versions, outcome) in [
        (&state.failed, Outcome::FailedValidation),
        (&state.rolled_back_from, Outcome::RolledBack),
    ] {
        for version in versions {
            let entry = find(version, outcome);
            list.push(Skipped {
                version: version.clone(),
                outcome,
                at: entry.and_then(|h| rfc3339(h.at)),
                reason: entry.and_then(|h| h.reason.clone()),
            });
        }
    }
    list
}

/// A strategy's "nothing to do" completed, when the newest release on the channel is newer than
/// what is installed, with that release and why it was not taken: held back by this install's
/// history (when, and why), or filtered by the strategy (whose reason comes first).
fn with_newest(
    reason: String,
    manifest: &Manifest,
    state: &InstallState,
    config: &Config,
) -> String {
    let newest = manifest
        .releases
        .iter()
        .filter(|r| r.channel == config.channel && r.artifacts_for(&config.arch).is_some())
        .map(|r| &r.version)
        .filter(|v| {
            !v.is_prerelease() || state.version.as_ref().is_some_and(Version::is_prerelease)
        })
        .max();
    let Some(newest) = newest else {
        return reason;
    };
    if state
        .version
        .as_ref()
        .is_some_and(|installed| installed >= newest)
    {
        return reason;
    }
    let why = skipped(state)
        .into_iter()
        .find(|s| &s.version == newest)
        .map(|s| {
            format!(
                "{}; `molt apply --version {newest}` installs it anyway",
                s.describe()
            )
        })
        .unwrap_or_else(|| "the strategy did not choose it (its reason comes first)".into());
    format!(
        "{reason}; the newest release on channel {} is {newest}: {why}",
        config.channel
    )
}
