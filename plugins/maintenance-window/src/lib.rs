//! `maintenance-window`: the default policy, but changes happen only inside a daily window.
//!
//! Config: `start` and `end` (required), UTC `"HH:MM"`; the window is `start <= now < end`,
//! and wraps midnight when `start > end` (`start = "22:00", end = "02:00"`). The time is
//! `ctx.now`, given by molt. Outside the window every change, including an explicit
//! `molt apply --version`, becomes `none("outside maintenance window 02:00–04:00")`: the window
//! is the operator's promise to the people using the machine. Also accepts `pin` and
//! `allow_prerelease` as in `builtin:default`.

use molt_plugin_sdk::policy::{self, PolicyOptions};
use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{Decision, PluginInfo, Strategy, StrategyContext, export_strategy, log};

#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default, deny_unknown_fields)]
pub struct Config {
    start: Option<String>,
    end: Option<String>,
    /// `pin` and `allow_prerelease`, as in `builtin:default`.
    #[serde(flatten)]
    policy: PolicyOptions,
}

/// Minutes since midnight of an `"HH:MM"` string.
fn minutes(field: &str, text: &str) -> Result<u16, String> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
    });
    parsed.ok_or_else(|| {
        format!("invalid plugin config: {field}: {text:?} is not a UTC time \"HH:MM\"")
    })
}

/// True if `now` lies in `[start, end)`, wrapping midnight when `start > end`.
fn inside(start: u16, end: u16, now: u16) -> bool {
    if start <= end {
        start <= now && now < end
    } else {
        now >= start || now < end
    }
}

pub struct MaintenanceWindow;

impl Strategy for MaintenanceWindow {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "maintenance-window",
            env!("CARGO_PKG_VERSION"),
            "the default policy, applied only inside a daily UTC maintenance window",
        )
    }

    fn decide(ctx: &StrategyContext, config: Config) -> Result<Decision, String> {
        let (Some(start_text), Some(end_text)) = (&config.start, &config.end) else {
            return Err(
                "maintenance-window needs `start` and `end` (UTC \"HH:MM\") in [strategy.config]"
                    .into(),
            );
        };
        let start = minutes("start", start_text)?;
        let end = minutes("end", end_text)?;
        if start == end {
            return Err(format!(
                "invalid plugin config: start and end are both {start_text}: the window is empty"
            ));
        }
        let (hour, minute) = ctx
            .now_hour_minute()
            .ok_or_else(|| format!("molt sent an invalid time {:?}", ctx.now))?;
        let decision = policy::decide(ctx, &config.policy)?;
        let now = u16::from(hour) * 60 + u16::from(minute);
        if matches!(decision, Decision::None(_)) || inside(start, end, now) {
            return Ok(decision);
        }
        log::info(&format!(
            "{hour:02}:{minute:02} UTC is outside {start_text}–{end_text}; holding {decision:?}"
        ));
        Ok(Decision::None(format!(
            "outside maintenance window {start_text}–{end_text}"
        )))
    }
}

export_strategy!(MaintenanceWindow);
