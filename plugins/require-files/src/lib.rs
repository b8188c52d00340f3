//! `builtin:require-files`: files that must be present and intact in the new install tree.
//!
//! Config (`[validators.config]`), either or both of:
//! * `paths = ["bin/app", "conf/app.yml"]`: each must exist, be a regular file (symlinks are
//!   followed, inside the tree only) and be non-empty;
//! * `files = [{ path = "bin/app", sha256 = "<hex>" }]`: the same, and the SHA-256 of the
//!   contents must match (`sha256` may be left out).
//!
//! Paths are install-relative; absolute paths and `..` are refused as a config error. All
//! problems are reported together.

use std::io::Read;

use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{PluginInfo, ValidationContext, Validator, export_validator, log};
use sha2::{Digest, Sha256};

#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default, deny_unknown_fields)]
pub struct Config {
    paths: Vec<String>,
    files: Vec<RequiredFile>,
}

#[derive(Debug, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", deny_unknown_fields)]
pub struct RequiredFile {
    path: String,
    sha256: Option<String>,
}

fn check(ctx: &ValidationContext, relative: &str, sha256: Option<&str>) -> Result<(), String> {
    if relative.starts_with('/') || relative.split('/').any(|c| c == "..") || relative.is_empty() {
        return Err(format!(
            "{relative:?} is not an install-relative path (fix the validator config)"
        ));
    }
    let path = ctx.path(relative);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{relative}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{relative}: not a regular file"));
    }
    if meta.len() == 0 {
        return Err(format!("{relative}: empty"));
    }
    if let Some(expected) = sha256 {
        let mut file = std::fs::File::open(&path).map_err(|e| format!("{relative}: {e}"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("{relative}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(format!(
                "{relative}: SHA-256 is {actual}, expected {expected}"
            ));
        }
    }
    Ok(())
}

pub struct RequireFiles;

impl Validator for RequireFiles {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "require-files",
            env!("CARGO_PKG_VERSION"),
            "required files exist, are regular, non-empty, and match their SHA-256",
        )
    }

    fn validate(ctx: &ValidationContext, config: Config) -> Result<(), String> {
        let wanted: Vec<(&str, Option<&str>)> = config
            .paths
            .iter()
            .map(|p| (p.as_str(), None))
            .chain(
                config
                    .files
                    .iter()
                    .map(|f| (f.path.as_str(), f.sha256.as_deref())),
            )
            .collect();
        if wanted.is_empty() {
            return Err(
                "require-files has nothing to check: set `paths` or `files` in [validators.config]"
                    .into(),
            );
        }
        let problems: Vec<String> = wanted
            .iter()
            .filter_map(|(path, sha256)| check(ctx, path, *sha256).err())
            .collect();
        log::debug(&format!(
            "checked {} files, {} problems",
            wanted.len(),
            problems.len()
        ));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

export_validator!(RequireFiles);
