//! `version-file`: a file of the new tree names the new version, so the tree that was committed
//! is the release molt meant to install.
//!
//! Config: `path = "VERSION"` (required, install-relative). The file must contain the new
//! version string (`1.2.0`), anywhere in its first 64 KiB.

use std::io::Read;

use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{PluginInfo, ValidationContext, Validator, export_validator};

#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default, deny_unknown_fields)]
pub struct Config {
    path: Option<String>,
}

pub struct VersionFile;

impl Validator for VersionFile {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "version-file",
            env!("CARGO_PKG_VERSION"),
            "a file of the new tree contains the new version",
        )
    }

    fn validate(ctx: &ValidationContext, config: Config) -> Result<(), String> {
        let relative = config
            .path
            .ok_or("version-file needs `path` (install-relative) in [validators.config]")?;
        if relative.starts_with('/') || relative.split('/').any(|c| c == "..") {
            return Err(format!(
                "invalid plugin config: path: {relative:?} is not install-relative"
            ));
        }
        let file =
            std::fs::File::open(ctx.path(&relative)).map_err(|e| format!("{relative}: {e}"))?;
        let mut text = String::new();
        file.take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| format!("{relative}: {e}"))?;
        let wanted = ctx.new_version.to_string();
        if text.contains(&wanted) {
            Ok(())
        } else {
            let shown: String = text.trim().chars().take(40).collect();
            Err(format!(
                "{relative} says {shown:?}, expected it to contain {wanted}"
            ))
        }
    }
}

export_validator!(VersionFile);
