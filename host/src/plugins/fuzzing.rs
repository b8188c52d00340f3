//! Entry points for the cargo-fuzz targets in `fuzz/`: the host's handling of what a plugin
//! answers (decision, error strings, versions, `info()`), reached without running a plugin.
//! Not part of molt's API.

use super::bindings::strategy as wit;
use super::plugin::PluginInfo;
use super::{Decision, PluginError};

/// An answer a strategy guest can give from `decide`, in plain values.
#[derive(Debug, Clone)]
pub enum StrategyAnswer {
    Full(String),
    Patch {
        from: String,
        to: String,
    },
    None(String),
    /// The guest's `err(string)`.
    Refused(String),
}

/// What the host makes of a strategy's `decide` answer (text capped at `cap` bytes).
pub fn strategy_answer(
    plugin: &str,
    answer: StrategyAnswer,
    cap: usize,
) -> Result<Decision, PluginError> {
    let answer = match answer {
        StrategyAnswer::Full(v) => Ok(wit::Decision::Full(v)),
        StrategyAnswer::Patch { from, to } => {
            Ok(wit::Decision::Patch(wit::PatchChoice { from, to }))
        }
        StrategyAnswer::None(reason) => Ok(wit::Decision::None(reason)),
        StrategyAnswer::Refused(reason) => Err(reason),
    };
    super::strategy::decision_from_guest(plugin, answer, cap)
}

/// What the host makes of a validator's `validate` answer.
pub fn validator_answer(
    plugin: &str,
    answer: Result<(), String>,
    cap: usize,
) -> Result<(), PluginError> {
    super::validator::verdict_from_guest(plugin, answer, cap)
}

/// What the host makes of a guest's `info()` record.
pub fn info_answer(name: String, version: String, description: String, cap: usize) -> PluginInfo {
    PluginInfo::from_guest(
        wit::PluginInfo {
            name,
            version,
            description,
        },
        cap,
    )
}
