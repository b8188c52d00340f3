//! `molt check`: verify the repository, ask the strategy, print the plan; change nothing.

use super::ConfigArgs;
use crate::Error;
use crate::config::Config;
use crate::output::Output;
use crate::strategy::Request;
use crate::update::{Mode, run as update};
use crate::version::Version;

pub(super) fn run(
    common: &ConfigArgs,
    version: Option<&str>,
    force_full: bool,
    out: &Output,
) -> Result<(), Error> {
    let config = Config::load(&common.config)?;
    let request = Request {
        version: version.map(Version::parse).transpose()?,
        force_full,
        adopt: false,
    };
    let report = update(&config, &request, Mode::Check, out)?;
    if !out.is_json()
        && let Some(ops) = report.operations()
    {
        // Through a JSON value, whose keys are sorted: the same text as the JSON output.
        let ops = serde_json::to_value(ops).unwrap_or_default();
        eprintln!(
            "operations: {}",
            serde_json::to_string_pretty(&ops).unwrap_or_default()
        );
    }
    out.success(&report.summary(), &report);
    Ok(())
}
