//! `molt rollback`: undo the newest kept update from its backup, as a journaled transaction.

use serde_json::json;

use super::ConfigArgs;
use crate::Error;
use crate::config::Config;
use crate::install::Install;
use crate::output::Output;
use crate::txn::{rollback_last, version_or_nothing};

pub fn run(common: &ConfigArgs, out: &Output) -> Result<(), Error> {
    let config = Config::load(&common.config)?;
    let install = Install::open(&config, out)?;
    let done = rollback_last(&install.state_dir, config.keep_backups)?;
    let mut fields = json!({
        "kind": "rollback",
        "from": done.from.as_ref().map(ToString::to_string),
        "to": done.to.as_ref().map(ToString::to_string),
        "undone": done.consumed,
    });
    if !done.warnings.is_empty() {
        fields["warnings"] = json!(done.warnings);
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
