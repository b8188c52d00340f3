//! The values a plugin receives and returns, as plain Rust types.
//!
//! They mirror the records of the WIT package (`wit/molt-plugin.wit`) with versions already
//! parsed, so plugin code never touches generated bindings. Each converts straight from (or
//! into) the SDK's one set of generated `types` bindings, at the bottom of this file.

use std::path::PathBuf;

pub use semver::Version;

use crate::wit_bindings::molt::plugin::types as wit;

/// What a plugin says about itself; shown by `molt plugin inspect` and in molt's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

impl PluginInfo {
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
        }
    }
}

/// A patch package into a release, starting from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub from: Version,
    /// Download size in bytes.
    pub size: u64,
}

/// A release of the signed manifest that carries artifacts for this device's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: Version,
    pub channel: String,
    pub notes: String,
    /// RFC 3339 publication time.
    pub published: String,
    /// Download size of the full package; `None` if the release only has patches for this arch.
    pub full_size: Option<u64>,
    pub patches: Vec<Patch>,
}

impl Release {
    /// The patch from `installed` into this release, if the manifest has one.
    pub fn patch_from(&self, installed: &Version) -> Option<&Patch> {
        self.patches.iter().find(|p| &p.from == installed)
    }

    pub fn has_full(&self) -> bool {
        self.full_size.is_some()
    }
}

/// Everything a strategy is told when molt asks it what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyContext {
    /// The version installed now; `None` on a fresh install.
    pub installed_version: Option<Version>,
    /// This device's architecture in Rust's spelling (`x86_64`, `aarch64`).
    pub arch: String,
    /// The channel the operator configured.
    pub channel: String,
    /// `molt apply --force-full`.
    pub force_full: bool,
    /// `molt apply --version V`.
    pub requested_version: Option<Version>,
    /// Releases on offer for this arch (all channels), in manifest order.
    pub releases: Vec<Release>,
    /// Versions that were installed here and then rolled back.
    pub rolled_back_from: Vec<Version>,
    /// Versions whose post-apply validation failed here.
    pub failed_validation: Vec<Version>,
    /// A stable, opaque identifier of this device.
    pub device_id: String,
    /// The current time, RFC 3339 UTC (`2026-11-30T10:00:00Z`).
    pub now: String,
}

impl StrategyContext {
    /// The release with exactly this version, if it is on offer.
    pub fn release(&self, version: &Version) -> Option<&Release> {
        self.releases.iter().find(|r| &r.version == version)
    }

    /// True if `version` was rolled back or failed validation on this device: the default
    /// policy does not offer it again unless the operator asks for it by name.
    pub fn is_blocked(&self, version: &Version) -> bool {
        self.rolled_back_from.contains(version) || self.failed_validation.contains(version)
    }

    /// Hours and minutes (UTC) of [`StrategyContext::now`], or `None` if it is not RFC 3339.
    pub fn now_hour_minute(&self) -> Option<(u8, u8)> {
        let time = self.now.split_once('T')?.1;
        let hour: u8 = time.get(0..2)?.parse().ok()?;
        let minute: u8 = time.get(3..5)?.parse().ok()?;
        (time.as_bytes().get(2) == Some(&b':') && hour < 24 && minute < 60)
            .then_some((hour, minute))
    }
}

/// A strategy's answer. molt checks it against the signed manifest before acting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Install the full package of this version.
    Full(Version),
    /// Apply the patch package from `from` (the installed version) to `to`.
    Patch { from: Version, to: Version },
    /// Change nothing; the reason is shown to the operator.
    None(String),
}

/// What a validator is told about the update it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationContext {
    pub old_version: Option<Version>,
    pub new_version: Version,
    /// Install-relative paths the update wrote.
    pub changed: Vec<String>,
    /// Install-relative paths the update removed.
    pub removed: Vec<String>,
    /// Where the new install tree is mounted, read-only (`/install`).
    pub root: PathBuf,
}

impl ValidationContext {
    /// The guest path of an install-relative path (`bin/app` → `/install/bin/app`).
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }
}

/// A version molt sent, parsed; the error names what it was.
fn version(text: &str, what: &str) -> Result<Version, String> {
    Version::parse(text).map_err(|e| format!("molt sent an invalid {what} {text:?}: {e}"))
}

fn versions(texts: &[String], what: &str) -> Result<Vec<Version>, String> {
    texts.iter().map(|t| version(t, what)).collect()
}

fn optional_version(text: Option<String>, what: &str) -> Result<Option<Version>, String> {
    text.map(|t| version(&t, what)).transpose()
}

impl TryFrom<wit::PatchOffer> for Patch {
    type Error = String;

    fn try_from(wire: wit::PatchOffer) -> Result<Self, String> {
        Ok(Patch {
            from: version(&wire.from, "patch source version")?,
            size: wire.size,
        })
    }
}

impl TryFrom<wit::ReleaseOffer> for Release {
    type Error = String;

    fn try_from(wire: wit::ReleaseOffer) -> Result<Self, String> {
        Ok(Release {
            version: version(&wire.version, "release version")?,
            channel: wire.channel,
            notes: wire.notes,
            published: wire.published,
            full_size: wire.full_size,
            patches: wire
                .patches
                .into_iter()
                .map(Patch::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<wit::StrategyContext> for StrategyContext {
    type Error = String;

    fn try_from(wire: wit::StrategyContext) -> Result<Self, String> {
        Ok(StrategyContext {
            installed_version: optional_version(wire.installed_version, "installed version")?,
            arch: wire.arch,
            channel: wire.channel,
            force_full: wire.force_full,
            requested_version: optional_version(wire.requested_version, "requested version")?,
            releases: wire
                .releases
                .into_iter()
                .map(Release::try_from)
                .collect::<Result<_, _>>()?,
            rolled_back_from: versions(&wire.rolled_back_from, "rolled-back version")?,
            failed_validation: versions(&wire.failed_validation, "failed-validation version")?,
            device_id: wire.device_id,
            now: wire.now,
        })
    }
}

impl TryFrom<wit::ValidationContext> for ValidationContext {
    type Error = String;

    fn try_from(wire: wit::ValidationContext) -> Result<Self, String> {
        Ok(ValidationContext {
            old_version: optional_version(wire.old_version, "old version")?,
            new_version: version(&wire.new_version, "new version")?,
            changed: wire.changed,
            removed: wire.removed,
            root: wire.root.into(),
        })
    }
}

impl From<Decision> for wit::Decision {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Full(v) => wit::Decision::Full(v.to_string()),
            Decision::Patch { from, to } => wit::Decision::Patch(wit::PatchChoice {
                from: from.to_string(),
                to: to.to_string(),
            }),
            Decision::None(reason) => wit::Decision::None(reason),
        }
    }
}

impl From<PluginInfo> for wit::PluginInfo {
    fn from(info: PluginInfo) -> Self {
        wit::PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strategy_context_converts_with_versions_parsed() {
        let wire = wit::StrategyContext {
            installed_version: Some("1.0.0".into()),
            arch: "x86_64".into(),
            channel: "stable".into(),
            force_full: false,
            requested_version: None,
            releases: vec![wit::ReleaseOffer {
                version: "1.1.0".into(),
                channel: "stable".into(),
                notes: "n".into(),
                published: "2026-11-30T10:00:00Z".into(),
                full_size: Some(5),
                patches: vec![wit::PatchOffer {
                    from: "1.0.0".into(),
                    size: 2,
                }],
            }],
            rolled_back_from: vec!["0.9.0".into()],
            failed_validation: vec![],
            device_id: "dev".into(),
            now: "2026-11-30T10:00:00Z".into(),
        };
        let ctx = StrategyContext::try_from(wire.clone()).unwrap();
        assert_eq!(ctx.installed_version, Some(Version::new(1, 0, 0)));
        assert_eq!(
            ctx.releases[0].patch_from(&Version::new(1, 0, 0)),
            Some(&Patch {
                from: Version::new(1, 0, 0),
                size: 2
            })
        );
        assert_eq!(ctx.rolled_back_from, vec![Version::new(0, 9, 0)]);

        let mut bad = wire;
        bad.releases[0].patches[0].from = "one".into();
        let err = StrategyContext::try_from(bad).unwrap_err();
        assert!(err.contains("patch source version \"one\""), "{err}");
    }

    #[test]
    fn a_decision_converts_to_the_wit_variant() {
        let wire = wit::Decision::from(Decision::Patch {
            from: Version::new(1, 0, 0),
            to: Version::new(1, 1, 0),
        });
        assert!(
            matches!(&wire, wit::Decision::Patch(p) if p.from == "1.0.0" && p.to == "1.1.0"),
            "{wire:?}"
        );
        assert!(matches!(
            wit::Decision::from(Decision::None("why".into())),
            wit::Decision::None(r) if r == "why"
        ));
    }
}
