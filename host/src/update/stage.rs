//! Stage: extract the verified package into a new transaction's stage (caps, the operations'
//! allow-list, a patch's links checked against the tree the install will have, the signed
//! unpacked size), then plan the primitive operations against what molt owns. Nothing in the
//! install changes here; a failure gives the transaction up.

use serde_json::json;

use crate::Error;
use crate::config::Config;
use crate::fetch::VerifiedPackage;
use crate::install::Install;
use crate::output::Output;
use crate::output::Unit;
use crate::package::delta::Bases;
use crate::package::extract::{Allowed, ExtractLimits, check_patch_links, extract_reporting};
use crate::repo::manifest::DeltaPackage;
use crate::state::InstallState;
use crate::strategy::{Choice, Request};
use crate::tree::TreeListing;
use crate::txn::{self, Plan, PlanContext, PlanError, Staged, plan_full, plan_patch};

/// Stages `package` (what `choice` names) for the install's state, reporting the `extract`
/// event and, when the plan refuses, a `refused` event per entry molt does not own.
///
/// The state is read (under the install's lock, so as the choice saw it) only once the package
/// is extracted, and the delta table is let go then: at 66,000 files each is megabytes, and
/// extraction (holding a decoder's window and a delta's base) needs only the one, planning only
/// the other.
pub(crate) fn stage(
    config: &Config,
    install: &Install,
    choice: &Choice,
    (package, delta): (&VerifiedPackage, Option<DeltaPackage>),
    request: &Request,
    out: &Output,
) -> Result<Staged, Error> {
    txn::stage(&install.state_dir, config.keep_backups, |stage_dir| {
        let bases = delta.as_ref().map(|d| Bases::new(&config.install_dir, d));
        let total = package.package.unpacked_size;
        let mut progress = |done| out.progress("extract", Unit::Bytes, done, total);
        let extracted = extract_reporting(
            &package.path,
            stage_dir,
            &ExtractLimits::for_package(&package.package),
            allowed(choice),
            bases,
            &mut progress,
        )
        .map_err(Error::from);
        out.clear_bar();
        // Planning has no use for the delta table.
        drop(delta);
        // A package that does not stage is of no use to a retry: it goes with the stage.
        let give_up = |e: Error| {
            let _ = std::fs::remove_file(&package.path);
            e
        };
        let staged = extracted.map_err(give_up)?;
        let state = install.state()?;
        check_links(choice, package, &staged, &state).map_err(give_up)?;
        out.event(
            "extract",
            &format!(
                "extracted {} files ({} bytes)",
                staged.files.len(),
                staged.total_size()
            ),
            json!({"files": staged.files.len(), "bytes": staged.total_size()}),
        );
        let mut ctx = PlanContext::new(&install.state_dir, &config.preserve);
        ctx.adopt = request.adopt;
        plan(&ctx, choice, stage_dir, staged, &state).inspect_err(|e| {
            if let Error::Plan(PlanError::NotOwned { conflicts }) = e {
                for c in conflicts {
                    out.event(
                        "refused",
                        &format!("refusing: {} is a {} molt does not own", c.path, c.existing),
                        json!({"path": c.path.as_str(), "existing": c.existing, "wanted": c.wanted}),
                    );
                }
            }
        })
    })
}

/// What the package may hold: a patch's operations, or anything.
fn allowed(choice: &Choice) -> Allowed<'_> {
    match choice {
        Choice::Patch { operations, .. } => Allowed::Operations(operations),
        _ => Allowed::Any,
    }
}

/// A patch's links must resolve inside the tree the install will have.
fn check_links(
    choice: &Choice,
    package: &VerifiedPackage,
    staged: &TreeListing,
    state: &InstallState,
) -> Result<(), Error> {
    if let Choice::Patch { operations, .. } = choice {
        check_patch_links(&package.path, staged, operations, &state.files, &state.dirs)?;
    }
    Ok(())
}

fn plan(
    ctx: &PlanContext,
    choice: &Choice,
    stage_dir: &std::path::Path,
    staged: TreeListing,
    state: &InstallState,
) -> Result<Plan, Error> {
    Ok(match choice {
        Choice::Patch { to, operations, .. } => {
            plan_patch(ctx, stage_dir, staged, operations, state, to.clone())?
        }
        Choice::Full { to, .. } => plan_full(ctx, stage_dir, staged, state, to.clone())?,
        Choice::None { .. } => unreachable!("a package implies a full or patch choice"),
    })
}
