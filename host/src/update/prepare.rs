//! Load: the operator's trusted keys and plugins, parsed and compiled (plugins once, then cached
//! in the state dir), so a missing key or a broken plugin is reported before anything is
//! fetched.

use std::path::Path;

use ed25519_dalek::VerifyingKey;

use crate::Error;
use crate::config::{Config, ConfigError, PluginConfig};
use crate::install::Install;
use crate::keys::load_verifying_key;
use crate::plugins::{
    PluginError, PluginLimits, PluginRef, PluginRuntime, StrategyPlugin, ValidatorPlugin,
};

/// The operator's configuration, loaded and checked: keys parsed, plugins compiled.
pub(crate) struct Prepared {
    pub keys: Vec<VerifyingKey>,
    pub strategy: StrategyPlugin,
    pub validators: Vec<ValidatorPlugin>,
}

/// Loads the trusted keys and every configured plugin.
pub(crate) fn prepare(config: &Config, install: &Install) -> Result<Prepared, Error> {
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
pub(crate) fn plugin_runtime(config: &Config, cache: &Path) -> Result<PluginRuntime, Error> {
    let limits = PluginLimits {
        timeout: config.plugin_timeout,
        memory_bytes: usize::try_from(config.plugin_memory_bytes).unwrap_or(usize::MAX),
        ..PluginLimits::default()
    };
    Ok(PluginRuntime::new(Some(cache), limits)?)
}
