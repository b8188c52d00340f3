//! The flow of `molt check` and `molt apply`: [`run`] composes the stages, each in the module
//! named after it and each returning a typed value, into one [`UpdateReport`].
//!
//! 1. Open the install: lock the state dir and recover an interrupted transaction
//!    ([`crate::install::Install`]).
//! 2. Load what the operator configured — trusted keys and plugins (compiled once, then cached in
//!    the state dir) — so a missing key or a broken plugin is reported before anything is fetched
//!    ([`prepare`] → [`Prepared`]).
//! 3. Fetch `manifest.json` and its signature (both capped), verify the signatures over the exact
//!    bytes, then parse and check product, expiry and serial (`manifest` → `VerifiedManifest`,
//!    using `repo::trust`).
//! 4. Ask the strategy plugin, and resolve its answer against the signed manifest
//!    ([`crate::strategy::choose`] → [`crate::strategy::Choice`]).
//! 5. Pick the package file — a patch's delta package when the install holds every base it
//!    decodes against, else the plain one (`delivery` → `Delivery`) — and download it: resumable, hashed while written, cut at its signed size
//!    ([`crate::fetch::Source::fetch_verified`] → [`crate::fetch::VerifiedPackage`]).
//! 6. Extract it into a new transaction's stage with caps and the operations' allow-list, and
//!    plan the primitive operations (`stage` → [`crate::txn::Staged`]). `check` and
//!    `apply --dry-run` stop here: they report what the update would keep (entries molt does not
//!    own), skip (preserved paths) or refuse on, and leave the verified package in `downloads/`
//!    for the apply that follows.
//! 7. Run the journaled transaction; validators run on the new tree before the commit record,
//!    and any failure restores the old tree exactly (`commit` → `Committed`).
//! 8. Only now persist the manifest's serial as the highest accepted one.

mod commit;
mod delivery;
mod manifest;
mod prepare;
mod report;
mod stage;

use serde_json::json;

use crate::Error;
use crate::config::Config;
use crate::install::Install;
use crate::output::{Output, Unit};
use crate::package::extract::ExtractError;
use crate::strategy::{Request, choose};
use crate::txn::Plan;

pub(crate) use prepare::prepare;

pub(crate) use report::{Mode, UpdateReport};

/// Steps 1–8: the result of the command.
pub(crate) fn run(
    config: &Config,
    request: &Request,
    mode: Mode,
    out: &Output,
) -> Result<UpdateReport, Error> {
    let install = Install::open(config, out)?;
    let prepared = prepare(config, &install)?;
    let state = install.state()?;
    let trust = install.trust()?;
    let source = manifest::source(config)?;
    let verified = manifest::fetch_verified(config, &source, &prepared.keys, trust, out)?;
    let device_id = install.device_id(config)?;
    let downloads = install.state_dir.downloads_dir();
    let mut load_patch =
        |document: &_| manifest::fetch_patch_document(&source, document, &downloads);
    let mut choice = choose(
        config,
        &prepared.strategy,
        (&verified.manifest, &mut load_patch),
        &state,
        request,
        device_id,
    )?;
    let mut report = UpdateReport::new(
        mode,
        &choice,
        state.version.as_ref(),
        verified.manifest.serial,
    );
    out.event("decision", &report.describe(&choice), &report.choice);

    let Some(delivery) = delivery::delivery(&mut choice, &config.install_dir, &state, out) else {
        if mode == Mode::Apply {
            verified.persist_serial(&install)?;
        }
        return Ok(report);
    };
    report.delivered(&delivery);
    // The stage reads the state again once the package is extracted, and the transaction under
    // the lock: this copy is not held through either (at 66,000 files it is megabytes).
    drop(state);
    let plain = delivery::plain(&choice, &delivery);
    let fetch = |delivery: delivery::Delivery| -> Result<_, Error> {
        let downloads = install.state_dir.downloads_dir();
        let package =
            source.fetch_verified(&delivery.package, &downloads, &mut |done, total| {
                out.progress("download", Unit::Bytes, done, total)
            })?;
        out.clear_bar();
        let staged = stage::stage(
            config,
            &install,
            &choice,
            (&package, delivery.delta),
            request,
            out,
        );
        Ok((package, staged))
    };
    let (mut package, mut staged) = fetch(delivery)?;
    // A base edited without changing its size is only seen while decoding: give the deltas up.
    if let (Err(Error::Extract(e @ ExtractError::DeltaBase { .. })), Some(plain)) = (&staged, plain)
    {
        delivery::report_fallback(e, &plain, out);
        report.delivered(&plain);
        (package, staged) = fetch(plain)?;
    }
    let staged = staged?;
    report.planned(staged.plan(), report_ownership(staged.plan(), out));
    if mode != Mode::Apply {
        // The verified package stays in downloads/ for the apply that follows.
        staged.discard();
        return Ok(report);
    }
    // The choice (a large patch's operations and delta table: megabytes) is planned now.
    drop(choice);
    let committed = commit::commit(
        config,
        &prepared.validators,
        &install,
        staged,
        &package,
        verified,
        out,
    )?;
    report.committed(&committed.outcome, committed.warnings);
    Ok(report)
}

/// Reports what the plan keeps, skips and adopts as events; returns the warnings for skipped
/// preserved paths.
fn report_ownership(plan: &Plan, out: &Output) -> Vec<String> {
    for p in &plan.kept_unowned {
        out.event(
            "kept",
            &format!("keeping {p}: molt does not own it"),
            json!({"path": p.as_str()}),
        );
    }
    let warnings: Vec<String> = plan
        .skipped_preserved
        .iter()
        .map(|p| {
            format!("skipped the preserved path {p}: the release's version there is not installed")
        })
        .collect();
    for (p, w) in plan.skipped_preserved.iter().zip(&warnings) {
        out.event(
            "warning",
            &format!("warning: {w}"),
            json!({"message": w, "path": p.as_str()}),
        );
    }
    for p in &plan.adopted {
        out.event(
            "adopted",
            &format!("taking over {p} (--adopt); its old version stays in the kept backup"),
            json!({"path": p.as_str()}),
        );
    }
    warnings
}
