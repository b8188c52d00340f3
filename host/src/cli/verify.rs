//! `molt verify`: every file molt installed, checked against its recorded SHA-256, size and mode,
//! and every symbolic link against its recorded target (never followed).

use std::fs::Metadata;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use super::ConfigArgs;
use crate::Error;
use crate::config::Config;
use crate::hashing::sha256_file;
use crate::install::Install;
use crate::output::Output;
use crate::tree::FileRecord;

pub(super) fn run(common: &ConfigArgs, out: &Output) -> Result<(), Error> {
    let config = Config::load(&common.config)?;
    let install = Install::open(&config, out)?;
    let state = install.state()?;
    let mut problems = Vec::new();
    for (path, record) in &state.files {
        let full = path.under(&config.install_dir);
        let problem = match std::fs::symlink_metadata(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("missing".to_owned()),
            Err(e) => Some(format!("unreadable: {e}")),
            Ok(m) => match &record.link {
                Some(target) => check_link(&full, &m, target),
                None => check_file(&full, &m, record),
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

/// What is wrong with the regular file at `full`, if anything.
fn check_file(full: &Path, m: &Metadata, record: &FileRecord) -> Option<String> {
    if !m.is_file() {
        return Some("no longer a regular file".to_owned());
    }
    if m.len() != record.size {
        return Some(format!("size {} (recorded {})", m.len(), record.size));
    }
    let mode = m.permissions().mode() & 0o777;
    if mode != record.mode {
        return Some(format!("mode {mode:o} (recorded {:o})", record.mode));
    }
    match sha256_file(full) {
        Ok(h) if h == record.sha256 => None,
        Ok(h) => Some(format!("sha256 {h} (recorded {})", record.sha256)),
        Err(e) => Some(format!("unreadable: {e}")),
    }
}

/// What is wrong with the symbolic link at `full`, if anything.
fn check_link(full: &Path, m: &Metadata, target: &str) -> Option<String> {
    if !m.file_type().is_symlink() {
        return Some(format!(
            "no longer a symbolic link (recorded -> {target:?})"
        ));
    }
    match std::fs::read_link(full) {
        Ok(now) if now.as_os_str() == target => None,
        Ok(now) => Some(format!("link -> {now:?} (recorded -> {target:?})")),
        Err(e) => Some(format!("unreadable: {e}")),
    }
}
