//! `molt verify`: every file molt installed, checked against its recorded SHA-256, size and mode.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::ConfigArgs;
use crate::Error;
use crate::config::Config;
use crate::hashing::sha256_file;
use crate::install::Install;
use crate::output::Output;

pub fn run(common: &ConfigArgs, out: &Output) -> Result<(), Error> {
    let config = Config::load(&common.config)?;
    let install = Install::open(&config, out)?;
    let state = install.state()?;
    let mut problems = Vec::new();
    for (path, record) in &state.files {
        let full = path.under(&config.install_dir);
        let problem = match std::fs::symlink_metadata(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("missing".to_owned()),
            Err(e) => Some(format!("unreadable: {e}")),
            Ok(m) if !m.is_file() => Some("no longer a regular file".to_owned()),
            Ok(m) if m.len() != record.size => {
                Some(format!("size {} (recorded {})", m.len(), record.size))
            }
            Ok(m) if m.permissions().mode() & 0o777 != record.mode => Some(format!(
                "mode {:o} (recorded {:o})",
                m.permissions().mode() & 0o777,
                record.mode
            )),
            Ok(_) => match sha256_file(&full) {
                Ok(h) if h == record.sha256 => None,
                Ok(h) => Some(format!("sha256 {h} (recorded {})", record.sha256)),
                Err(e) => Some(format!("unreadable: {e}")),
            },
        };
        if let Some(p) = problem {
            problems.push(format!("  {path}: {p}"));
        }
    }
    if !problems.is_empty() {
        return Err(Error::VerifyMismatch {
            count: problems.len(),
            details: problems.join("\n"),
        });
    }
    out.success(
        &format!(
            "{} files match their recorded hashes ({})",
            state.files.len(),
            state
                .version
                .as_ref()
                .map_or("nothing installed".to_owned(), ToString::to_string)
        ),
        json!({"files": state.files.len(), "version": state.version.as_ref().map(ToString::to_string)}),
    );
    Ok(())
}
