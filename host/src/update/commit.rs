//! Commit: run the staged transaction — validators on the new tree before the commit record,
//! any failure restoring the old tree exactly — then persist the manifest's serial. Once the
//! commit record is on disk the update has happened: what fails after it is a warning.

use std::path::Path;

use serde_json::json;

use super::manifest::VerifiedManifest;
use crate::Error;
use crate::config::Config;
use crate::fetch::VerifiedPackage;
use crate::install::Install;
use crate::output::{Output, Unit};
use crate::plugins::{PluginError, ValidationContext, ValidatorPlugin};
use crate::txn::{ApplyOutcome, Staged, ValidationFailure};

/// A committed update: the transaction's outcome, and every warning of what failed after the
/// commit record (the transaction's housekeeping, then recording the serial).
pub(crate) struct Committed {
    pub(crate) outcome: ApplyOutcome,
    pub(crate) warnings: Vec<String>,
}

/// Commits `staged`, validated by `validators`, then records the manifest's
/// serial. The package in `downloads/` is removed either way: its files were moved out of the
/// stage.
pub(crate) fn commit(
    config: &Config,
    validators: &[ValidatorPlugin],
    install: &Install,
    staged: Staged,
    package: &VerifiedPackage,
    manifest: VerifiedManifest,
    out: &Output,
) -> Result<Committed, Error> {
    let plan = staged.plan();
    let to = plan
        .to
        .clone()
        .unwrap_or_else(|| unreachable!("an update has a target"));
    let validation = ValidationContext {
        old_version: plan.from.clone(),
        new_version: to.clone(),
        changed: plan.changed(),
        removed: plan.removed(),
    };
    let applied = staged.commit(
        |tree: &Path| {
            out.clear_bar();
            run_validators(config, validators, &validation, tree, out)
        },
        &mut |done, total| out.progress("apply", Unit::Ops, done, total),
    );
    out.clear_bar();
    let _ = std::fs::remove_file(&package.path);
    let outcome = applied?;
    // The update is committed: what fails from here on is reported, never as a failure.
    let mut warnings = outcome.warnings.clone();
    let serial = manifest.manifest.serial;
    if let Err(e) = manifest.persist_serial(install) {
        warnings.push(format!(
            "the update to {to} is committed, but recording the manifest serial {serial} \
             failed: {}; the next molt apply records it",
            e.report()
        ));
    }
    Ok(Committed { outcome, warnings })
}

/// Runs every validator on `tree`. Only a validator's own rejection of the tree is a verdict
/// (the release is then recorded as failed validation); a validator that traps, times out or
/// rejects its config says nothing about the tree.
fn run_validators(
    config: &Config,
    validators: &[ValidatorPlugin],
    input: &ValidationContext,
    tree: &Path,
    out: &Output,
) -> Result<(), ValidationFailure> {
    for (plugin, cfg) in validators.iter().zip(&config.validators) {
        match plugin.validate(input, &cfg.config_json, tree) {
            Ok(()) => out.event(
                "validated",
                &format!("validator {} passed", plugin.name()),
                json!({"plugin": plugin.name()}),
            ),
            Err(e @ PluginError::Rejected { .. }) => {
                return Err(ValidationFailure::Verdict(Box::new(e)));
            }
            Err(e) => return Err(ValidationFailure::NoVerdict(Box::new(e))),
        }
    }
    Ok(())
}
