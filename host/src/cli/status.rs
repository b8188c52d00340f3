//! `molt status`: what is installed, the trusted serial, what recovery just did, the history
//! and the backups kept for `molt rollback`.

use serde_json::json;

use super::ConfigArgs;
use crate::Error;
use crate::config::Config;
use crate::install::{Install, recovered_json};
use crate::output::{Output, outln};
use crate::strategy::skipped;
use crate::txn::kept_transactions;

pub(super) fn run(common: &ConfigArgs, out: &Output) -> Result<(), Error> {
    let config = Config::load(&common.config)?;
    let (install, recovered) = Install::open_quietly(&config)?;
    let state = install.state()?;
    let trust = install.trust()?;
    let kept = kept_transactions(&install.state_dir)?;
    let doc = json!({
        "product": config.product,
        "install_dir": config.install_dir,
        "version": state.version.as_ref().map(ToString::to_string),
        "serial": trust.highest_serial,
        "files": state.files.len(),
        "recovered": recovered.iter().map(recovered_json).collect::<Vec<_>>(),
        "history": state.history,
        "rolled_back_from": state.rolled_back_from,
        "failed_validation": state.failed,
        "skipped": skipped(&state),
        "backups": kept.iter().map(|k| json!({
            "id": k.id, "kind": k.kind, "from": k.from, "to": k.to,
        })).collect::<Vec<_>>(),
    });
    if out.is_json() {
        out.document(&doc);
        return Ok(());
    }
    for t in &recovered {
        outln!("{t}");
    }
    let version = state
        .version
        .as_ref()
        .map_or("nothing installed".to_owned(), |v| v.to_string());
    outln!(
        "{} in {}: {version}",
        config.product,
        config.install_dir.display()
    );
    outln!("trusted manifest serial: {}", trust.highest_serial);
    outln!("owned files: {}", state.files.len());
    for skip in skipped(&state) {
        outln!("skipped {}: {}", skip.version, skip.describe());
    }
    if !state.rolled_back_from.is_empty() {
        let list: Vec<_> = state
            .rolled_back_from
            .iter()
            .map(ToString::to_string)
            .collect();
        outln!("rolled back from: {}", list.join(", "));
    }
    if !state.failed.is_empty() {
        let list: Vec<_> = state.failed.iter().map(ToString::to_string).collect();
        outln!("failed validation: {}", list.join(", "));
    }
    outln!("backups kept for rollback: {}", kept.len());
    for h in state.history.iter().rev().take(10) {
        let v = |v: &Option<crate::version::Version>| {
            v.as_ref().map_or("-".to_owned(), ToString::to_string)
        };
        outln!(
            "  {}  {:<8} {} → {}  {}{}",
            h.at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            h.kind.to_string(),
            v(&h.from),
            v(&h.to),
            h.outcome,
            h.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
