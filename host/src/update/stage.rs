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

/// Stages `package` (what `choice` names) for `state`, reporting the `extract` event and, when
/// the plan refuses, a `refused` event per entry molt does not own.
pub(crate) fn stage(
    config: &Config,
    install: &Install,
    state: &InstallState,
    choice: &Choice,
    (package, delta): (&VerifiedPackage, Option<&DeltaPackage>),
    request: &Request,
    out: &Output,
) -> Result<Staged, Error> {
    txn::stage(&install.state_dir, config.keep_backups, |stage_dir| {
        let bases = delta.map(|d| Bases::new(&config.install_dir, d));
        let total = package.package.unpacked_size;
        let mut progress = |done| out.progress("extract", Unit::Bytes, done, total);
        let extracted = extract_checked(choice, (package, bases), state, stage_dir, &mut progress);
        out.clear_bar();
        let staged = match extracted {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&package.path);
                return Err(e);
            }
        };
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
        plan(&ctx, choice, stage_dir, staged, state).inspect_err(|e| {
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

/// Extracts the package and checks the stage against what the manifest signed.
fn extract_checked(
    choice: &Choice,
    (package, bases): (&VerifiedPackage, Option<Bases<'_>>),
    state: &InstallState,
    stage_dir: &std::path::Path,
    progress: &mut dyn FnMut(u64),
) -> Result<TreeListing, Error> {
    let limits = ExtractLimits::for_package(&package.package);
    let allowed = match choice {
        Choice::Patch { operations, .. } => Allowed::Operations(operations),
        _ => Allowed::Any,
    };
    let staged = extract_reporting(&package.path, stage_dir, &limits, allowed, bases, progress)?;
    // A patch's links must resolve inside the tree the install will have.
    if let Choice::Patch { operations, .. } = choice {
        check_patch_links(
            &package.path,
            &staged,
            operations,
            &state.files,
            &state.dirs,
        )?;
    }
    Ok(staged)
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
