//! `molt rollback`: undo the newest kept update from its backup, as a journaled transaction.

use serde_json::json;

use super::ConfigArgs;
use crate::Error;
use crate::config::Config;
use crate::install::Install;
use crate::output::Output;
use crate::txn::{rollback_last, version_or_nothing};

pub(super) fn run(common: &ConfigArgs, out: &Output) -> Result<(), Error> {
    let config = Config::load(&common.config)?;
    let install = Install::open(&config, out)?;
    let done = rollback_last(&install.state_dir, config.keep_backups, &config.preserve)?;
    for p in &done.kept_unowned {
        out.event(
            "kept",
            &format!("kept {p}: molt does not own it"),
            json!({"path": p.as_str()}),
        );
    }
    let mut warnings = done.warnings.clone();
    for p in &done.skipped_preserved {
        let msg = format!("left the preserved path {p} as it is");
        out.event(
            "warning",
            &format!("warning: {msg}"),
            json!({"message": msg, "path": p.as_str()}),
        );
        warnings.push(msg);
    }
    let mut fields = json!({
        "kind": "rollback",
        "from": done.from.as_ref().map(ToString::to_string),
        "to": done.to.as_ref().map(ToString::to_string),
        "undone": done.consumed,
        "kept_unowned": done.kept_unowned.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
    });
    if !warnings.is_empty() {
        fields["warnings"] = json!(warnings);
    }
    out.success(
        &format!(
            "rolled back {} → {}",
            version_or_nothing(&done.from),
            version_or_nothing(&done.to)
        ),
        fields,
    );
    Ok(())
}
