//! The operator's `molt.toml`: parsed strictly, resolved against the file's directory, and
//! validated before anything is fetched.
//!
//! Unknown keys are errors (naming the key and line, from `toml`'s diagnostics) because a typo in
//! an updater's config — `keep_backup = 0`, `[validator]` — silently changes what runs as root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ExitClass;
use crate::relpath::RelPath;
use crate::version::{host_arch, normalize_arch};

/// Default cap on how long one plugin call may run.
pub const DEFAULT_PLUGIN_TIMEOUT_MS: u64 = 1_000;
/// Default cap on a plugin's linear memory.
pub const DEFAULT_PLUGIN_MEMORY_MB: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: `{key}` {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    pub fn exit_class(&self) -> ExitClass {
        ExitClass::Usage
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    product: String,
    install_dir: PathBuf,
    state_dir: Option<PathBuf>,
    arch: Option<String>,
    channel: Option<String>,
    device_id: Option<String>,
    source: RawSource,
    #[serde(default)]
    strategy: Option<RawPlugin>,
    #[serde(default)]
    validators: Vec<RawPlugin>,
    #[serde(default)]
    apply: RawApply,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: String,
    keys: Vec<PathBuf>,
    threshold: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    plugin: String,
    #[serde(default)]
    config: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApply {
    #[serde(default)]
    preserve: Vec<String>,
    keep_backups: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    plugin_timeout_ms: Option<u64>,
    plugin_memory_mb: Option<u64>,
}

/// A validated, resolved configuration: every path absolute, every name normalized.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages.
    pub path: PathBuf,
    pub product: String,
    pub install_dir: PathBuf,
    pub state_dir: PathBuf,
    pub arch: String,
    pub channel: String,
    /// Operator-chosen device id for staged rollouts; molt makes and keeps one otherwise.
    pub device_id: Option<String>,
    /// Repository location as written (URL or path); resolved by `fetch::Source::parse`.
    pub source_url: String,
    /// The directory relative source paths resolve against.
    pub base_dir: PathBuf,
    pub keys: Vec<PathBuf>,
    pub threshold: usize,
    pub strategy: PluginConfig,
    pub validators: Vec<PluginConfig>,
    pub preserve: Vec<RelPath>,
    pub keep_backups: usize,
    pub plugin_timeout: Duration,
    pub plugin_memory_bytes: u64,
}

/// One `[strategy]` or `[[validators]]` entry.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// `builtin:NAME`, or an absolute path to a `.wasm` component.
    pub plugin: String,
    /// The free-form `config` table, as the JSON text handed to the plugin.
    pub config_json: String,
    /// The same table, for the few keys the host itself honours (`allow_downgrade`).
    pub config: toml::Table,
}

impl PluginConfig {
    /// The operator's `allow_downgrade = true` in `[strategy.config]`.
    pub fn allow_downgrade(&self) -> bool {
        self.config
            .get("allow_downgrade")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let base_dir = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("."));
        let resolve = |p: &Path| base_dir.join(p);

        if raw.product.trim().is_empty() {
            return Err(invalid("product", "must not be empty".into()));
        }
        let install_dir = resolve(&raw.install_dir);
        let state_dir = raw
            .state_dir
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| install_dir.join(crate::state::RESERVED_STATE_DIR));
        if raw.source.keys.is_empty() {
            return Err(invalid(
                "source.keys",
                "must list at least one trusted publisher key (SPKI PEM)".into(),
            ));
        }
        let threshold = raw.source.threshold.unwrap_or(1);
        if threshold == 0 || threshold > raw.source.keys.len() {
            return Err(invalid(
                "source.threshold",
                format!(
                    "is {threshold}; it must be between 1 and the number of keys ({})",
                    raw.source.keys.len()
                ),
            ));
        }
        let preserve = raw
            .apply
            .preserve
            .iter()
            .map(|p| {
                RelPath::new(p.trim_end_matches('/'))
                    .map_err(|e| invalid("apply.preserve", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plugin = |key: &str, raw: RawPlugin| -> Result<PluginConfig, ConfigError> {
            let plugin = if raw.plugin.starts_with("builtin:") {
                raw.plugin
            } else if raw.plugin.is_empty() {
                return Err(invalid(
                    key,
                    "must name `builtin:NAME` or a .wasm file".into(),
                ));
            } else {
                resolve(Path::new(&raw.plugin))
                    .to_string_lossy()
                    .into_owned()
            };
            let config_json = serde_json::to_string(&raw.config)
                .map_err(|e| invalid(&format!("{key}.config"), e.to_string()))?;
            Ok(PluginConfig {
                plugin,
                config_json,
                config: raw.config,
            })
        };
        let strategy = match raw.strategy {
            Some(s) => plugin("strategy.plugin", s)?,
            None => PluginConfig {
                plugin: "builtin:default".into(),
                config_json: "{}".into(),
                config: toml::Table::new(),
            },
        };
        let validators = raw
            .validators
            .into_iter()
            .map(|v| plugin("validators.plugin", v))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout_ms = raw
            .limits
            .plugin_timeout_ms
            .unwrap_or(DEFAULT_PLUGIN_TIMEOUT_MS);
        let memory_mb = raw
            .limits
            .plugin_memory_mb
            .unwrap_or(DEFAULT_PLUGIN_MEMORY_MB);
        if timeout_ms == 0 || memory_mb == 0 {
            return Err(invalid(
                "limits",
                "plugin limits must be greater than 0".into(),
            ));
        }
        let plugin_memory_bytes = memory_mb.checked_mul(1 << 20).ok_or_else(|| {
            invalid(
                "limits.plugin_memory_mb",
                format!("is {memory_mb}, more memory than a machine can address"),
            )
        })?;
        let config = Config {
            path: path.to_owned(),
            product: raw.product,
            install_dir,
            state_dir,
            arch: normalize_arch(raw.arch.as_deref().unwrap_or(host_arch())),
            channel: raw.channel.unwrap_or_else(|| "stable".into()),
            device_id: raw.device_id,
            source_url: raw.source.url,
            keys: raw.source.keys.iter().map(|k| resolve(k)).collect(),
            base_dir,
            threshold,
            strategy,
            validators,
            preserve,
            keep_backups: raw.apply.keep_backups.unwrap_or(2),
            plugin_timeout: Duration::from_millis(timeout_ms),
            plugin_memory_bytes,
        };
        config.check_placement()?;
        Ok(config)
    }

    /// Where things lie relative to the install: the state dir apart from anything a release
    /// writes, the install not inside the state dir, and the config, its keys and plugins where
    /// no release can replace them.
    fn check_placement(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_owned(),
            reason,
        };
        let install = resolved(&self.install_dir);
        let state = resolved(&self.state_dir);
        // Inside the install, only the reserved `.molt` and preserved paths are out of a
        // release's reach.
        let reachable = |p: &Path| -> bool {
            let Ok(rel) = p.strip_prefix(&install) else {
                return false;
            };
            match RelPath::from_path(rel) {
                Ok(rel) => {
                    let reserved = RelPath::new(crate::state::RESERVED_STATE_DIR).expect("valid");
                    !rel.starts_with(&reserved) && !self.preserve.iter().any(|x| rel.starts_with(x))
                }
                Err(_) => true,
            }
        };
        if state == install {
            return Err(invalid(
                "state_dir",
                format!(
                    "is the install directory {} itself; molt's state must not lie where a \
                     release writes: leave state_dir unset (default {}/.molt) or choose a \
                     directory outside the install",
                    install.display(),
                    install.display()
                ),
            ));
        }
        if install.starts_with(&state) {
            return Err(invalid(
                "install_dir",
                format!(
                    "{} lies inside state_dir {}; molt removes what it finds in its state \
                     directory, so keep the install outside it",
                    install.display(),
                    state.display()
                ),
            ));
        }
        if reachable(&state) {
            return Err(invalid(
                "state_dir",
                format!(
                    "{} lies inside install_dir {}, where a release may write; use {}/.molt, a \
                     directory outside the install, or a path listed under [apply] preserve",
                    state.display(),
                    install.display(),
                    install.display()
                ),
            ));
        }
        let mut own_files: Vec<(&str, PathBuf)> = vec![("config", self.path.clone())];
        own_files.extend(self.keys.iter().map(|k| ("source.keys", k.clone())));
        for (key, p) in [("strategy.plugin", &self.strategy)]
            .into_iter()
            .chain(self.validators.iter().map(|v| ("validators.plugin", v)))
        {
            if !p.plugin.starts_with("builtin:") {
                own_files.push((key, PathBuf::from(&p.plugin)));
            }
        }
        for (key, file) in own_files {
            let at = resolved(&std::path::absolute(&file).unwrap_or(file.clone()));
            if reachable(&at) {
                return Err(invalid(
                    key,
                    format!(
                        "{} lies inside install_dir {}, where a release may replace it; move it \
                         out of the install, or list its directory under [apply] preserve",
                        at.display(),
                        install.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `p` with symbolic links resolved as far as it exists (the rest appended), for comparing
/// where paths lie.
fn resolved(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut out) = std::fs::canonicalize(&existing) {
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent.to_owned();
            }
            _ => return p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
product = "demo-app"
install_dir = "app"
arch = "amd64"

[source]
url = "file:///srv/repo"
keys = ["keys/release.pub.pem"]

[strategy]
plugin = "builtin:default"
[strategy.config]
allow_downgrade = true
pin = "1.2.0"

[[validators]]
plugin = "plugins/check.wasm"
[validators.config]
paths = ["bin/app"]

[apply]
preserve = ["data/", "conf/local.toml"]
keep_backups = 3
"#;

    #[test]
    fn parses_and_resolves_the_contract_example() {
        let c = Config::parse(FULL, Path::new("/etc/molt/molt.toml")).unwrap();
        assert_eq!(c.install_dir, Path::new("/etc/molt/app"));
        assert_eq!(c.state_dir, Path::new("/etc/molt/app/.molt"));
        assert_eq!(c.arch, "x86_64");
        assert_eq!(c.channel, "stable");
        assert_eq!(c.keys, [PathBuf::from("/etc/molt/keys/release.pub.pem")]);
        assert!(c.strategy.allow_downgrade());
        assert_eq!(c.validators[0].plugin, "/etc/molt/plugins/check.wasm");
        assert_eq!(c.validators[0].config_json, r#"{"paths":["bin/app"]}"#);
        let preserve: Vec<_> = c.preserve.iter().map(RelPath::as_str).collect();
        assert_eq!(preserve, ["data", "conf/local.toml"]);
        assert_eq!(c.keep_backups, 3);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = FULL.replace("keep_backups = 3", "keep_backup = 3");
        let err = Config::parse(&text, Path::new("molt.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep_backup"), "{err}");
        assert!(err.contains("line 23"), "{err}");
    }

    #[test]
    fn refuses_bad_values() {
        for (from, to) in [
            ("keys = [\"keys/release.pub.pem\"]", "keys = []"),
            ("\"conf/local.toml\"", "\"../etc\""),
            ("[source]", "[source]\nthreshold = 2"),
        ] {
            let text = FULL.replace(from, to);
            assert!(Config::parse(&text, Path::new("m.toml")).is_err(), "{to}");
        }
    }

    #[test]
    fn an_oversized_memory_limit_is_refused_not_wrapped() {
        // 2^44 MiB << 20 wraps to 0 bytes: every plugin would run out of memory at once.
        let text = format!("{FULL}\n[limits]\nplugin_memory_mb = {}\n", 1u64 << 44);
        let err = Config::parse(&text, Path::new("m.toml")).unwrap_err();
        assert!(err.to_string().contains("plugin_memory_mb"), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Usage);
        let text = format!("{FULL}\n[limits]\nplugin_memory_mb = 128\n");
        let c = Config::parse(&text, Path::new("m.toml")).unwrap();
        assert_eq!(c.plugin_memory_bytes, 128 << 20);
    }
}
