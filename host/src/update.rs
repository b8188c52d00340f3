//! The flow of `molt check` and `molt apply`.
//!
//! 1. Open the install: lock the state dir and recover an interrupted transaction.
//! 2. Load what the operator configured — trusted keys and plugins (compiled once, then cached in
//!    the state dir) — so a missing key or a broken plugin is reported before anything is fetched.
//! 3. Fetch `manifest.json` and its signature (both capped), verify the signatures over the exact
//!    bytes, then parse and check product, expiry and serial (`repo::trust`).
//! 4. Ask the strategy plugin, and resolve its answer against the signed manifest (`strategy`).
//! 5. Download the package (resumable, hashed while written, cut at its signed size).
//! 6. Extract it into the transaction's stage with caps and the operations' allow-list.
//!    `check` and `apply --dry-run` stop after planning: they report what the update would keep
//!    (entries molt does not own), skip (preserved paths) or refuse on, and leave the verified
//!    package in `downloads/` for the apply that follows.
//! 7. Plan the primitive operations and run the journaled transaction; validators run on the
//!    new tree before the commit record, and any failure restores the old tree exactly.
//! 8. Only now persist the manifest's serial as the highest accepted one.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::Error;
use crate::config::{Config, ConfigError, PluginConfig};
use crate::fetch::{FetchOptions, MANIFEST_CAP, SIGNATURE_CAP, Source};
use crate::install::Install;
use crate::keys::load_verifying_key;
use crate::output::Output;
use crate::package::extract::{Allowed, ExtractLimits, check_patch_links, extract};
use crate::plugins::{
    PluginError, PluginLimits, PluginRef, PluginRuntime, StrategyPlugin, ValidationInput,
    ValidatorPlugin,
};
use crate::relpath::RelPath;
use crate::repo::manifest::Manifest;
use crate::repo::trust::{TrustError, TrustPolicy, verify_manifest};
use crate::state::TrustState;
use crate::strategy::{Choice, Request, resolve, strategy_input};
use crate::txn::{
    Plan, PlanContext, PlanError, Transaction, ValidationFailure, plan_full, plan_patch,
};

/// Most entries a package may hold.
pub const MAX_PACKAGE_ENTRIES: u64 = 1_000_000;

/// How far to go once the plan is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `molt check`: verify and plan, change nothing (not even the persisted serial).
    Check,
    /// `molt apply --dry-run`: the same, reported as an apply.
    DryRun,
    /// `molt apply`.
    Apply,
}

/// The operator's configuration, loaded and checked: keys parsed, plugins compiled.
pub struct Prepared {
    pub keys: Vec<VerifyingKey>,
    pub runtime: PluginRuntime,
    pub strategy: StrategyPlugin,
    pub validators: Vec<ValidatorPlugin>,
}

/// Loads the trusted keys and every configured plugin (step 2).
pub fn prepare(config: &Config, install: &Install) -> Result<Prepared, Error> {
    let keys = config
        .keys
        .iter()
        .map(|k| load_verifying_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = plugin_runtime(config, &install.state_dir.cache_dir().join("plugins"))?;
    let strategy = runtime.load_strategy(&PluginRef::parse(&config.strategy.plugin)?)?;
    checked_config(
        config,
        &config.strategy,
        strategy.check_config(&config.strategy.config_json),
    )?;
    let validators = config
        .validators
        .iter()
        .map(|v| {
            let plugin = runtime.load_validator(&PluginRef::parse(&v.plugin)?)?;
            checked_config(config, v, plugin.check_config(&v.config_json))?;
            Ok(plugin)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Prepared {
        keys,
        runtime,
        strategy,
        validators,
    })
}

/// A plugin's rejection of its config table as a config error naming the key and its line.
fn checked_config(
    config: &Config,
    entry: &PluginConfig,
    checked: Result<bool, PluginError>,
) -> Result<(), Error> {
    match checked {
        Ok(_) => Ok(()),
        Err(PluginError::BadConfig {
            plugin,
            key,
            message,
        }) => Err(ConfigError::PluginRejects {
            path: config.path.clone(),
            line: entry.line_of(&key),
            plugin,
            key: if key.is_empty() {
                entry.table.clone()
            } else {
                format!("{}.{key}", entry.table)
            },
            message,
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// The plugin runtime for `config`: its limits, and the compiled-component cache `cache` (a
/// directory only molt writes, because cached entries are native code).
pub fn plugin_runtime(config: &Config, cache: &Path) -> Result<PluginRuntime, Error> {
    let limits = PluginLimits {
        timeout: config.plugin_timeout,
        memory_bytes: usize::try_from(config.plugin_memory_bytes).unwrap_or(usize::MAX),
        ..PluginLimits::default()
    };
    Ok(PluginRuntime::new(Some(cache), limits)?)
}

/// Steps 1–8; returns the final JSON fields of the command's result.
pub fn run(config: &Config, request: &Request, mode: Mode, out: &Output) -> Result<Value, Error> {
    let install = Install::open(config, out)?;
    let prepared = prepare(config, &install)?;
    let state = install.state()?;
    let trust = install.trust()?;

    let source = Source::parse(&config.source_url, &config.base_dir)?.with_options(FetchOptions {
        deadline: config.fetch_deadline,
        min_rate: config.fetch_min_rate,
        ..FetchOptions::default()
    });
    let manifest = fetch_verified_manifest(config, &source, &prepared.keys, &trust)?;
    out.event(
        "manifest",
        &format!(
            "verified manifest serial {} from {} ({} releases)",
            manifest.serial,
            source.display_url("manifest.json"),
            manifest.releases.len()
        ),
        json!({"serial": manifest.serial, "url": source.display_url("manifest.json")}),
    );

    let input = strategy_input(
        config,
        &manifest,
        &state,
        request,
        install.device_id(config)?,
    );
    let decision = prepared
        .strategy
        .decide(&input, &config.strategy.config_json)?;
    let choice = resolve(
        prepared.strategy.name(),
        decision,
        &manifest,
        &state,
        config,
        request,
    )?;
    let from = state.version.as_ref().map(ToString::to_string);
    let mut result = json!({
        "kind": choice.kind(),
        "from": from,
        "to": choice.to().map(ToString::to_string),
        "bytes": choice.package().map_or(0, |p| p.size),
        "serial": manifest.serial,
    });
    out.event(
        "decision",
        &describe(&choice, from.as_deref()),
        result.clone(),
    );

    if mode != Mode::Apply {
        result["dry_run"] = json!(true);
        result["plan"] = plan_json(&choice);
    }
    let Some(package) = choice.package().cloned() else {
        if mode != Mode::Apply {
            return Ok(result);
        }
        if let Choice::Nothing { reason } = &choice {
            result["reason"] = json!(reason);
        }
        save_trust(&install, &manifest, trust)?;
        return Ok(result);
    };

    let pkg_path = source.fetch_package(
        &package,
        &install.state_dir.downloads_dir(),
        &mut |done, total| out.progress("download", done, total),
    )?;
    out.clear_bar();

    let txn = Transaction::begin(&install.state_dir, config.keep_backups)?;
    let limits = ExtractLimits {
        max_unpacked_bytes: package.unpacked_size,
        max_entries: MAX_PACKAGE_ENTRIES,
    };
    let allowed = match &choice {
        Choice::Patch { operations, .. } => Allowed::Operations(operations),
        _ => Allowed::Any,
    };
    let extracted = extract(&pkg_path, &txn.stage_dir(), &limits, allowed)
        .and_then(|staged| match &choice {
            // A patch's links must resolve inside the tree the install will have.
            Choice::Patch { operations, .. } => {
                check_patch_links(&pkg_path, &staged, operations, &state.files, &state.dirs)
                    .map(|()| staged)
            }
            _ => Ok(staged),
        })
        .map_err(Error::from)
        .and_then(|staged| {
            // The cap stops an archive that is too big; equality also catches one that is short.
            if staged.total_size() == package.unpacked_size {
                Ok(staged)
            } else {
                Err(Error::UnpackedSizeMismatch {
                    url: source.display_url(&package.url),
                    expected: package.unpacked_size,
                    actual: staged.total_size(),
                })
            }
        });
    let staged = match extracted {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&pkg_path);
            return Err(abandon(txn, e));
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
    let planned = match &choice {
        Choice::Patch { to, operations, .. } => plan_patch(
            &ctx,
            &txn.stage_dir(),
            &staged,
            operations,
            &state,
            to.clone(),
        ),
        Choice::Full { to, .. } => plan_full(&ctx, &txn.stage_dir(), &staged, &state, to.clone()),
        Choice::Nothing { .. } => unreachable!("a package implies a full or patch choice"),
    };
    let plan = match planned {
        Ok(p) => p,
        Err(e) => {
            if let PlanError::NotOwned { conflicts } = &e {
                for c in conflicts {
                    out.event(
                        "refused",
                        &format!("refusing: {} is a {} molt does not own", c.path, c.existing),
                        json!({"path": c.path.as_str(), "existing": c.existing, "wanted": c.wanted}),
                    );
                }
            }
            return Err(abandon(txn, e.into()));
        }
    };
    report_ownership(&plan, &mut result, out);
    if mode != Mode::Apply {
        // The verified package stays in downloads/ for the apply that follows.
        if let Err(e) = txn.abandon() {
            tracing::warn!("{e}; the next molt command removes it");
        }
        return Ok(result);
    }
    let new_state = txn.next_state(&plan, &state);
    let validation = ValidationInput {
        old_version: state.version.clone(),
        new_version: plan
            .to
            .clone()
            .unwrap_or_else(|| unreachable!("an update has a target")),
        changed: plan
            .ops
            .iter()
            .filter(|o| o.source.is_some())
            .map(|o| o.path.clone())
            .collect(),
        removed: plan
            .ops
            .iter()
            .filter(|o| o.source.is_none())
            .map(|o| o.path.clone())
            .collect(),
    };
    let applied = txn.apply_validated(&plan, new_state, |tree: &Path| {
        run_validators(config, &prepared.validators, &validation, tree, out)
    });
    // Staged files were moved out of the stage; the package is no longer needed either way.
    let _ = std::fs::remove_file(&pkg_path);
    let outcome = applied?;
    // The update is committed: what fails from here on is reported, never as a failure.
    let mut warnings = outcome.warnings.clone();
    if let Err(e) = save_trust(&install, &manifest, trust) {
        warnings.push(format!(
            "the update to {} is committed, but recording the manifest serial {} failed: {}; \
             the next molt apply records it",
            plan.to
                .as_ref()
                .map_or_else(String::new, ToString::to_string),
            manifest.serial,
            e.report()
        ));
    }
    result["changes"] = json!(outcome.changes);
    if !plan.adopted.is_empty()
        && let Some(kept) = &outcome.kept_in
    {
        result["adopted_backup"] = json!(kept.display().to_string());
    }
    if !warnings.is_empty() {
        match result["warnings"].as_array_mut() {
            Some(all) => all.extend(warnings.into_iter().map(Value::from)),
            None => result["warnings"] = json!(warnings),
        }
    }
    Ok(result)
}

/// Reports what the plan keeps, skips and adopts (events, and keys of the final result).
fn report_ownership(plan: &Plan, result: &mut Value, out: &Output) {
    let strs = |v: &[RelPath]| v.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>();
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
    result["kept_unowned"] = json!(strs(&plan.kept_unowned));
    result["warnings"] = json!(warnings);
    result["adopted"] = json!(strs(&plan.adopted));
}

/// Gives up a transaction that has not touched the install, returning `err`: that is what the
/// operator must see (and its exit class), not a failure to tidy up, which the next recovery
/// finishes anyway.
fn abandon(txn: Transaction, err: Error) -> Error {
    if let Err(e) = txn.abandon() {
        tracing::warn!("{e}; the next molt command removes it");
    }
    err
}

fn fetch_verified_manifest(
    config: &Config,
    source: &Source,
    keys: &[VerifyingKey],
    trust: &TrustState,
) -> Result<Manifest, Error> {
    let policy = TrustPolicy {
        product: config.product.clone(),
        keys: keys.to_vec(),
        threshold: config.threshold,
        min_serial: trust.highest_serial,
        now: OffsetDateTime::now_utc(),
    };
    let url = source.display_url("manifest.json");
    let fetch_pair = || -> Result<(Vec<u8>, Vec<u8>), Error> {
        let manifest = source.fetch_small("manifest.json", MANIFEST_CAP)?;
        let sig = match source.fetch_small("manifest.json.sig", SIGNATURE_CAP) {
            Ok(sig) => sig,
            // An unsigned manifest is a security rejection, whatever the source.
            Err(e) if e.is_not_found() => {
                return Err(TrustError::Unsigned { url: url.clone() }.into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok((manifest, sig))
    };
    let (manifest_bytes, sig_bytes) = fetch_pair()?;
    match verify_manifest(&manifest_bytes, &sig_bytes, &policy, &url) {
        // A publisher renames the manifest, then its signature: a read between the two renames
        // sees a mismatched pair. Read once more; only changed bytes get a second verification.
        Err(mismatch @ TrustError::SignatureThresholdNotMet { .. }) => {
            let (again_manifest, again_sig) = fetch_pair()?;
            if (&again_manifest, &again_sig) == (&manifest_bytes, &sig_bytes) {
                return Err(mismatch.into());
            }
            tracing::info!(%url, "the repository changed while it was read; verifying the new pair");
            Ok(verify_manifest(&again_manifest, &again_sig, &policy, &url)?)
        }
        other => Ok(other?),
    }
}

/// Persists the manifest's serial as the highest accepted (only ever raises it).
fn save_trust(install: &Install, manifest: &Manifest, mut trust: TrustState) -> Result<(), Error> {
    if manifest.serial > trust.highest_serial {
        trust.highest_serial = manifest.serial;
        install.state_dir.save_trust(&trust)?;
    }
    Ok(())
}

/// Runs every validator on `tree`. Only a validator's own rejection of the tree is a verdict
/// (the release is then recorded as failed validation); a validator that traps, times out or
/// rejects its config says nothing about the tree.
fn run_validators(
    config: &Config,
    validators: &[ValidatorPlugin],
    input: &ValidationInput,
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

fn describe(choice: &Choice, from: Option<&str>) -> String {
    let from = from.unwrap_or("nothing");
    match choice {
        Choice::Nothing { reason } => format!("no update: {reason}"),
        Choice::Full { to, package, .. } => {
            format!(
                "full install {from} → {to} ({} bytes to fetch)",
                package.size
            )
        }
        Choice::Patch { to, package, .. } => {
            format!("patch {from} → {to} ({} bytes to fetch)", package.size)
        }
    }
}

fn plan_json(choice: &Choice) -> Value {
    match choice {
        Choice::Nothing { reason } => json!({"reason": reason}),
        Choice::Full { package, .. } => json!({
            "url": package.url, "size": package.size, "unpacked_size": package.unpacked_size,
        }),
        Choice::Patch {
            package,
            operations,
            ..
        } => json!({
            "url": package.url, "size": package.size, "unpacked_size": package.unpacked_size,
            "operations": operations,
        }),
    }
}
