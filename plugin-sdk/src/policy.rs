//! The standard upgrade policy of `builtin:default`, exposed so that other strategies can be
//! written as "the default, but …" (the staged-rollout and maintenance-window plugins are).
//!
//! Rules, in order:
//! 1. `requested_version` (`molt apply --version V`) wins: that version, even if it is older,
//!    on another channel, a prerelease, rolled back or failed validation before. Already
//!    installed (and no `force_full`) ⇒ nothing to do.
//! 2. Otherwise `pin`: exactly that version (a downgrade if it is older), unless it was rolled
//!    back or failed validation here.
//! 3. Otherwise the newest release on the configured channel, skipping prereleases (unless
//!    `allow_prerelease`) and versions that were rolled back or failed validation here. It is
//!    installed when nothing is installed, when it is newer than the installed version, or when
//!    `force_full` asks for a reinstall; otherwise the device is up to date. The policy never
//!    proposes a downgrade on its own.
//! 4. The move to the target is a patch when a patch from the installed version exists and
//!    `force_full` is off, a full package otherwise.

use serde::Deserialize;

use crate::types::{Decision, StrategyContext, Version};

/// The knobs of the standard policy: the `[strategy.config]` of `builtin:default`, and the part
/// of a derived strategy's config that it passes on — declare it there as
/// `#[serde(flatten)] policy: PolicyOptions`, and `pin` / `allow_prerelease` are read (and
/// checked, with the key named) for you.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyOptions {
    /// Stay on / move to exactly this version.
    pub pin: Option<Version>,
    /// Offer prereleases (`1.3.0-rc.1`) when looking for the newest release.
    pub allow_prerelease: bool,
}

/// Why the standard policy picked its target: lets derived strategies gate only automatic
/// upgrades and leave an operator's explicit choice alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `molt apply --version`.
    Requested,
    /// The `pin` option.
    Pinned,
    /// Nothing is installed yet.
    FreshInstall,
    /// A newer release than the installed one.
    Upgrade,
    /// `--force-full` reinstalls the newest release.
    Reinstall,
}

/// The standard policy's decision and, when it changes something, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub reason: Option<Reason>,
}

/// The decision of the standard policy; see the module docs for the rules.
pub fn decide(ctx: &StrategyContext, options: &PolicyOptions) -> Result<Decision, String> {
    decide_with_reason(ctx, options).map(|outcome| outcome.decision)
}

/// Like [`decide`], and says why the target was chosen.
pub fn decide_with_reason(
    ctx: &StrategyContext,
    options: &PolicyOptions,
) -> Result<Outcome, String> {
    let installed = ctx.installed_version.as_ref();
    let (target, reason) = if let Some(requested) = &ctx.requested_version {
        if ctx.release(requested).is_none() {
            return Err(format!(
                "version {requested} was requested, but the repository offers no such release for {}",
                ctx.arch
            ));
        }
        (requested.clone(), Reason::Requested)
    } else if let Some(pin) = &options.pin {
        if ctx.release(pin).is_none() && installed != Some(pin) {
            return Err(format!(
                "pinned version {pin} is not offered for {} by the repository",
                ctx.arch
            ));
        }
        if ctx.is_blocked(pin) && installed != Some(pin) {
            return Ok(none(format!(
                "pinned version {pin} was rolled back or failed validation on this device; \
                 run `molt apply --version {pin}` to try it again"
            )));
        }
        (pin.clone(), Reason::Pinned)
    } else {
        let newest = ctx
            .releases
            .iter()
            .filter(|r| r.channel == ctx.channel)
            .filter(|r| options.allow_prerelease || r.version.pre.is_empty())
            .filter(|r| !ctx.is_blocked(&r.version))
            .map(|r| &r.version)
            .max();
        let Some(newest) = newest else {
            return Ok(none(format!(
                "no release on channel {} for {}",
                ctx.channel, ctx.arch
            )));
        };
        let reason = match installed {
            None => Reason::FreshInstall,
            Some(_) if ctx.force_full => Reason::Reinstall,
            Some(current) if newest > current => Reason::Upgrade,
            Some(current) => {
                return Ok(none(format!(
                    "up to date: {current} is installed, the newest release on channel {} is {newest}",
                    ctx.channel
                )));
            }
        };
        (newest.clone(), reason)
    };

    if installed == Some(&target) && !ctx.force_full {
        return Ok(none(format!("{target} is already installed")));
    }
    Ok(Outcome {
        decision: move_to(ctx, &target)?,
        reason: Some(reason),
    })
}

/// The cheapest allowed way from the installed version to `target`: a patch when one exists
/// and `force_full` is off, else the full package.
pub fn move_to(ctx: &StrategyContext, target: &Version) -> Result<Decision, String> {
    let release = ctx
        .release(target)
        .ok_or_else(|| format!("{target} is not on offer for {}", ctx.arch))?;
    if let Some(installed) = &ctx.installed_version
        && !ctx.force_full
        && release.patch_from(installed).is_some()
    {
        return Ok(Decision::Patch {
            from: installed.clone(),
            to: target.clone(),
        });
    }
    if release.has_full() {
        Ok(Decision::Full(target.clone()))
    } else {
        Err(format!(
            "{target} has no full package for {} and no patch from the installed version",
            ctx.arch
        ))
    }
}

fn none(reason: String) -> Outcome {
    Outcome {
        decision: Decision::None(reason),
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Patch, Release};

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn release(version: &str, channel: &str, patches_from: &[&str]) -> Release {
        Release {
            version: v(version),
            channel: channel.into(),
            notes: String::new(),
            published: "2026-11-30T10:00:00Z".into(),
            full_size: Some(1000),
            patches: patches_from
                .iter()
                .map(|f| Patch {
                    from: v(f),
                    size: 10,
                })
                .collect(),
        }
    }

    fn ctx(installed: Option<&str>) -> StrategyContext {
        StrategyContext {
            installed_version: installed.map(v),
            arch: "x86_64".into(),
            channel: "stable".into(),
            force_full: false,
            requested_version: None,
            releases: molt_test_support::releases::REFERENCE
                .iter()
                .map(|(version, channel, from)| release(version, channel, from))
                .collect(),
            rolled_back_from: vec![],
            failed_validation: vec![],
            device_id: "dev".into(),
            now: "2026-11-30T03:00:00Z".into(),
        }
    }

    fn opts() -> PolicyOptions {
        PolicyOptions::default()
    }

    #[test]
    fn fresh_install_takes_newest_stable_full() {
        assert_eq!(decide(&ctx(None), &opts()), Ok(Decision::Full(v("1.2.0"))));
    }

    #[test]
    fn upgrade_uses_patch_when_one_exists_else_full() {
        let patch = Decision::Patch {
            from: v("1.1.0"),
            to: v("1.2.0"),
        };
        assert_eq!(decide(&ctx(Some("1.1.0")), &opts()), Ok(patch));
        assert_eq!(
            decide(&ctx(Some("1.0.0")), &opts()),
            Ok(Decision::Full(v("1.2.0")))
        );
    }

    #[test]
    fn up_to_date_and_never_an_automatic_downgrade() {
        assert!(
            matches!(decide(&ctx(Some("1.2.0")), &opts()), Ok(Decision::None(r)) if r.contains("up to date"))
        );
        assert!(matches!(
            decide(&ctx(Some("5.0.0")), &opts()),
            Ok(Decision::None(_))
        ));
    }

    #[test]
    fn force_full_reinstalls_newest_or_requested() {
        let mut c = ctx(Some("1.2.0"));
        c.force_full = true;
        assert_eq!(decide(&c, &opts()), Ok(Decision::Full(v("1.2.0"))));
        c.installed_version = Some(v("1.1.0"));
        assert_eq!(decide(&c, &opts()), Ok(Decision::Full(v("1.2.0"))));
        c.requested_version = Some(v("1.0.0"));
        assert_eq!(decide(&c, &opts()), Ok(Decision::Full(v("1.0.0"))));
    }

    #[test]
    fn blocked_releases_are_skipped_unless_requested() {
        let mut c = ctx(Some("1.1.0"));
        c.rolled_back_from = vec![v("1.2.0")];
        assert!(matches!(decide(&c, &opts()), Ok(Decision::None(_))));
        c.rolled_back_from = vec![];
        c.failed_validation = vec![v("1.2.0")];
        assert!(matches!(decide(&c, &opts()), Ok(Decision::None(_))));
        c.requested_version = Some(v("1.2.0"));
        assert_eq!(
            decide(&c, &opts()),
            Ok(Decision::Patch {
                from: v("1.1.0"),
                to: v("1.2.0")
            })
        );
    }

    #[test]
    fn requested_version_may_downgrade_or_cross_channels() {
        let mut c = ctx(Some("1.2.0"));
        c.requested_version = Some(v("1.0.0"));
        assert_eq!(decide(&c, &opts()), Ok(Decision::Full(v("1.0.0"))));
        c.requested_version = Some(v("2.0.0"));
        assert_eq!(
            decide(&c, &opts()),
            Ok(Decision::Patch {
                from: v("1.2.0"),
                to: v("2.0.0")
            })
        );
        c.requested_version = Some(v("1.2.0"));
        assert!(
            matches!(decide(&c, &opts()), Ok(Decision::None(r)) if r.contains("already installed"))
        );
        c.requested_version = Some(v("9.9.9"));
        assert!(decide(&c, &opts()).unwrap_err().contains("9.9.9"));
    }

    #[test]
    fn pin_holds_or_moves_to_exactly_that_version() {
        let pinned = PolicyOptions {
            pin: Some(v("1.1.0")),
            ..opts()
        };
        assert_eq!(
            decide(&ctx(Some("1.0.0")), &pinned),
            Ok(Decision::Patch {
                from: v("1.0.0"),
                to: v("1.1.0")
            })
        );
        assert!(matches!(
            decide(&ctx(Some("1.1.0")), &pinned),
            Ok(Decision::None(_))
        ));
        assert_eq!(
            decide(&ctx(Some("1.2.0")), &pinned),
            Ok(Decision::Full(v("1.1.0")))
        );
    }

    #[test]
    fn prereleases_only_when_allowed() {
        let pre = PolicyOptions {
            allow_prerelease: true,
            ..opts()
        };
        assert_eq!(
            decide(&ctx(Some("1.2.0")), &pre),
            Ok(Decision::Patch {
                from: v("1.2.0"),
                to: v("1.3.0-rc.1")
            })
        );
    }

    #[test]
    fn reason_tells_automatic_upgrades_from_explicit_choices() {
        assert_eq!(
            decide_with_reason(&ctx(Some("1.1.0")), &opts())
                .unwrap()
                .reason,
            Some(Reason::Upgrade)
        );
        assert_eq!(
            decide_with_reason(&ctx(None), &opts()).unwrap().reason,
            Some(Reason::FreshInstall)
        );
        let mut c = ctx(Some("1.1.0"));
        c.requested_version = Some(v("1.2.0"));
        assert_eq!(
            decide_with_reason(&c, &opts()).unwrap().reason,
            Some(Reason::Requested)
        );
    }

    /// A derived strategy's config, as the sample plugins declare theirs.
    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Derived {
        percent: Option<u8>,
        #[serde(flatten)]
        policy: PolicyOptions,
    }

    #[test]
    fn policy_options_flatten_into_a_derived_config_and_keep_the_key_in_errors() {
        assert_eq!(
            crate::check_config::<Derived>(
                r#"{"percent": 5, "pin": "1.1.0", "allow_prerelease": true}"#
            ),
            Ok(Derived {
                percent: Some(5),
                policy: PolicyOptions {
                    pin: Some(v("1.1.0")),
                    allow_prerelease: true
                }
            })
        );
        for (json, key) in [
            (r#"{"pin": 3}"#, "pin"),
            (r#"{"allow_prerelease": "yes"}"#, "allow_prerelease"),
            (r#"{"percent": "ten"}"#, "percent"),
            (r#"{"percnt": 3}"#, "percnt"),
        ] {
            let problem = crate::check_config::<Derived>(json).unwrap_err();
            assert_eq!(problem.key, key, "{json}: {problem}");
        }
        assert_eq!(
            crate::check_config::<PolicyOptions>(r#"{"pin": "1.0.0"}"#),
            Ok(PolicyOptions {
                pin: Some(v("1.0.0")),
                allow_prerelease: false
            })
        );
        assert_eq!(
            crate::check_config::<PolicyOptions>(r#"{"pinn": "1.0.0"}"#)
                .unwrap_err()
                .key,
            "pinn"
        );
    }

    #[test]
    fn now_is_read_as_utc_hour_and_minute() {
        assert_eq!(ctx(None).now_hour_minute(), Some((3, 0)));
        let mut c = ctx(None);
        c.now = "garbage".into();
        assert_eq!(c.now_hour_minute(), None);
    }
}
