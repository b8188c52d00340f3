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
pub(crate) const DEFAULT_PLUGIN_TIMEOUT_MS: u64 = 1_000;
/// Default cap on a plugin's linear memory.
pub(crate) const DEFAULT_PLUGIN_MEMORY_MB: u64 = 64;

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
    #[error(
        "invalid config {path}{}: plugin {plugin} rejects `{key}`: {message}",
        line.map(|n| format!(" line {n}")).unwrap_or_default()
    )]
    PluginRejects {
        path: PathBuf,
        /// The line of the key in molt.toml (of the plugin's section if the key is not found).
        line: Option<usize>,
        plugin: String,
        /// The key as the operator wrote it, e.g. `validators[0].config.mode`.
        key: String,
        message: String,
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
    timeout_secs: Option<u64>,
    min_rate_bytes_per_sec: Option<u64>,
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
    /// `[source] timeout_secs`: the longest one repository file may take to fetch.
    pub fetch_deadline: Duration,
    /// `[source] min_rate_bytes_per_sec`: the slowest average rate accepted (0: no floor).
    pub fetch_min_rate: u64,
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
    /// Where the config table is, as a TOML key path: `strategy.config`, `validators[0].config`.
    pub table: String,
    /// Lines in molt.toml of the plugin's section and of each top-level key of its config.
    pub lines: KeyLines,
}

/// Lines (1-based) of a plugin section of molt.toml and of the keys of its config table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLines {
    pub section: Option<usize>,
    pub keys: std::collections::BTreeMap<String, usize>,
}

impl PluginConfig {
    /// The line of `key` (a path such as `paths[1]` or `window.start`): that of its top-level
    /// key, else that of the plugin's section.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        let top = key.split(['.', '[']).next().unwrap_or(key);
        self.lines.keys.get(top).copied().or(self.lines.section)
    }
}

/// Finds the plugin sections in the text of molt.toml: `[strategy]` / `[strategy.config]`, and
/// each `[[validators]]` with its `[validators.config]`; keys written as `key = …` in the config
/// table or `config.key = …` in the section. Returns the strategy's lines and the validators'.
fn plugin_lines(text: &str) -> (KeyLines, Vec<KeyLines>) {
    #[derive(Clone, Copy, PartialEq)]
    enum At {
        Elsewhere,
        Strategy { config: bool },
        Validator { config: bool },
    }
    let mut strategy = KeyLines::default();
    let mut validators: Vec<KeyLines> = Vec::new();
    let mut at = At::Elsewhere;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            let header: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            at = match header.as_str() {
                "[strategy]" => {
                    strategy.section.get_or_insert(number);
                    At::Strategy { config: false }
                }
                "[strategy.config]" => {
                    strategy.section.get_or_insert(number);
                    At::Strategy { config: true }
                }
                "[[validators]]" => {
                    validators.push(KeyLines {
                        section: Some(number),
                        ..KeyLines::default()
                    });
                    At::Validator { config: false }
                }
                "[validators.config]" => At::Validator { config: true },
                _ => At::Elsewhere,
            };
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let key = match at {
            At::Strategy { config: true } | At::Validator { config: true } => key,
            At::Strategy { config: false } | At::Validator { config: false } => {
                match key.strip_prefix("config") {
                    Some(rest) if rest.trim_start().starts_with('.') => {
                        rest.trim_start().trim_start_matches('.').trim_start()
                    }
                    _ => continue,
                }
            }
            At::Elsewhere => continue,
        };
        let top = key
            .split('.')
            .next()
            .unwrap_or(key)
            .trim()
            .trim_matches(['"', '\''])
            .to_owned();
        let target = match at {
            At::Strategy { .. } => Some(&mut strategy),
            At::Validator { .. } => validators.last_mut(),
            At::Elsewhere => None,
        };
        if let Some(target) = target {
            target.keys.entry(top).or_insert(number);
        }
    }
    (strategy, validators)
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
        let timeout_secs = raw
            .source
            .timeout_secs
            .unwrap_or(crate::fetch::DEFAULT_DEADLINE.as_secs());
        if timeout_secs == 0 {
            return Err(invalid(
                "source.timeout_secs",
                "must be greater than 0".into(),
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
        let (strategy_lines, validator_lines) = plugin_lines(text);
        let plugin = |key: &str,
                      table: String,
                      lines: KeyLines,
                      raw: RawPlugin|
         -> Result<PluginConfig, ConfigError> {
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
                table,
                lines,
            })
        };
        let strategy = match raw.strategy {
            Some(s) => plugin(
                "strategy.plugin",
                "strategy.config".into(),
                strategy_lines,
                s,
            )?,
            None => PluginConfig {
                plugin: "builtin:default".into(),
                config_json: "{}".into(),
                config: toml::Table::new(),
                table: "strategy.config".into(),
                lines: KeyLines::default(),
            },
        };
        let validators = raw
            .validators
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let lines = validator_lines.get(i).cloned().unwrap_or_default();
                plugin(
                    "validators.plugin",
                    format!("validators[{i}].config"),
                    lines,
                    v,
                )
            })
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
            fetch_deadline: Duration::from_secs(timeout_secs),
            fetch_min_rate: raw
                .source
                .min_rate_bytes_per_sec
                .unwrap_or(crate::fetch::DEFAULT_MIN_RATE),
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
    fn plugin_config_keys_are_found_on_their_lines() {
        let text = "product = \"p\"\ninstall_dir = \"app\"\n\n[source]\nurl = \"/r\"\nkeys = [\"k\"]\n\
                    timeout_secs = 60\nmin_rate_bytes_per_sec = 0\n\n\
                    [strategy]\nplugin = \"builtin:default\"\nconfig.pin = \"1.0.0\"\n\n\
                    [[validators]]\nplugin = \"builtin:require-files\"\n\
                    [[validators]]\nplugin = \"builtin:require-files\"\n[validators.config]\n\
                    paths = [\"bin/app\"] # the binary\n";
        let config = Config::parse(text, Path::new("molt.toml")).unwrap();
        assert_eq!(config.fetch_deadline, Duration::from_secs(60));
        assert_eq!(config.fetch_min_rate, 0);
        assert_eq!(config.strategy.line_of("pin"), Some(12));
        assert_eq!(config.strategy.line_of("other"), Some(10));
        assert_eq!(config.validators[0].line_of("paths"), Some(14));
        assert_eq!(config.validators[1].line_of("paths[0]"), Some(19));
        assert_eq!(config.validators[1].table, "validators[1].config");
        let zero = text.replace("timeout_secs = 60", "timeout_secs = 0");
        assert!(Config::parse(&zero, Path::new("molt.toml")).is_err());
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
