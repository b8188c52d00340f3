//! `molt apply`: bring the install to the release the strategy chooses (see `update`).

use clap::Args;

use super::ConfigArgs;
use crate::Error;
use crate::config::Config;
use crate::output::Output;
use crate::strategy::Request;
use crate::update::{Mode, run as update};
use crate::version::Version;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Verify and print the plan (operations, bytes to fetch); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Install the full package even when a patch exists.
    #[arg(long)]
    pub force_full: bool,
    /// Install exactly this version (it may be one this install rolled back from).
    #[arg(long)]
    pub version: Option<String>,
    /// Take over files molt does not own where the release puts its own; their old contents
    /// stay in a kept backup (history/ in the state dir) until you remove it.
    #[arg(long)]
    pub adopt: bool,
}

pub(super) fn run(args: &ApplyArgs, out: &Output) -> Result<(), Error> {
    let config = Config::load(&args.common.config)?;
    let request = Request {
        version: args.version.as_deref().map(Version::parse).transpose()?,
        force_full: args.force_full,
        adopt: args.adopt,
    };
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    };
    let report = update(&config, &request, mode, out)?;
    out.success(&report.summary(), &report);
    Ok(())
}
