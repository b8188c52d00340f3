//! # molt-plugin-sdk: write molt plugins in plain Rust
//!
//! molt asks two kinds of WebAssembly plugins for help:
//!
//! * a **strategy** decides what a device installs next (`[strategy] plugin = "…"` in
//!   `molt.toml`): a full package, a patch, or nothing;
//! * **validators** check a freshly applied install tree (`[[validators]] plugin = "…"`); an
//!   error makes molt roll the update back.
//!
//! A plugin depends on this crate alone. Implement [`Strategy`] or [`Validator`] for a type,
//! call [`export_strategy!`] or [`export_validator!`] once, and build with
//! `cargo build --release --target wasm32-wasip2`: the `.wasm` in `target/wasm32-wasip2/release/`
//! is the component molt loads. The macros generate the WebAssembly bindings (wit-bindgen)
//! inside your crate, for exactly one world, so a strategy component exports only the strategy
//! interface and can never be mistaken for a validator.
//!
//! The operator's config table reaches your `Config` type through serde: a bad config becomes
//! an error that names the offending field, e.g. `invalid plugin config: percent: invalid type:
//! string "ten", expected u8`.
//!
//! ## Example: a strategy
//!
//! ```ignore
//! use molt_plugin_sdk::{export_strategy, log, policy, Decision, PluginInfo, Strategy, StrategyContext};
//! use molt_plugin_sdk::serde::Deserialize;
//!
//! #[derive(Default, Deserialize)]
//! #[serde(crate = "molt_plugin_sdk::serde", default, deny_unknown_fields)]
//! struct Config {
//!     /// Never leave this major version.
//!     major: Option<u64>,
//! }
//!
//! struct SameMajor;
//!
//! impl Strategy for SameMajor {
//!     type Config = Config;
//!
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("same-major", env!("CARGO_PKG_VERSION"), "the default policy within one major version")
//!     }
//!
//!     fn decide(ctx: &StrategyContext, config: Config) -> Result<Decision, String> {
//!         let mut ctx = ctx.clone();
//!         if let Some(major) = config.major {
//!             ctx.releases.retain(|r| r.version.major == major);
//!         }
//!         log::info(&format!("{} releases in major {:?}", ctx.releases.len(), config.major));
//!         policy::decide(&ctx, &policy::PolicyOptions::default())
//!     }
//! }
//!
//! export_strategy!(SameMajor);
//! ```
//!
//! `Cargo.toml` of the plugin:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! molt-plugin-sdk = { path = "…/plugin-sdk" }   # keep the name: the bindings refer to it
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! strip = true
//! panic = "abort"
//! codegen-units = 1
//! ```
//!
//! ## Example: a validator
//!
//! ```ignore
//! use molt_plugin_sdk::{export_validator, PluginInfo, ValidationContext, Validator};
//!
//! struct HasBinary;
//!
//! impl Validator for HasBinary {
//!     type Config = ();
//!
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("has-binary", "0.1.0", "bin/app exists")
//!     }
//!
//!     fn validate(ctx: &ValidationContext, _config: ()) -> Result<(), String> {
//!         let path = ctx.path("bin/app");
//!         std::fs::metadata(&path).map(drop).map_err(|e| format!("{}: {e}", path.display()))
//!     }
//! }
//!
//! export_validator!(HasBinary);
//! ```
//!
//! ## The sandbox
//!
//! molt gives a plugin a time limit (1 s by default), a memory limit (64 MiB), no network, no
//! environment variables and no arguments. A strategy sees no files at all; a validator sees the
//! new install tree, read-only, at [`ValidationContext::root`] (`/install`). Whatever a strategy
//! returns is checked against the signed manifest: it can choose among the releases on offer,
//! never invent one.

mod types;

pub mod log;
pub mod policy;

pub use semver;
pub use serde;
pub use serde_json;
pub use types::{
    Decision, Patch, PluginInfo, Release, StrategyContext, ValidationContext, Version,
};
pub use wit_bindgen;

use serde::de::DeserializeOwned;

include!(concat!(env!("OUT_DIR"), "/wit_macro.rs"));

/// A strategy plugin: decides what the device installs next.
pub trait Strategy {
    /// The operator's `[strategy.config]`, deserialized from JSON. An absent table is
    /// `Config::default()`; use `()` when the plugin takes no settings.
    type Config: DeserializeOwned + Default;

    fn info() -> PluginInfo;

    /// The decision, or an error the operator should read (nothing is changed then).
    fn decide(ctx: &StrategyContext, config: Self::Config) -> Result<Decision, String>;
}

/// A validator plugin: checks the new install tree after an update was applied.
pub trait Validator {
    /// The operator's `[validators.config]`, deserialized from JSON.
    type Config: DeserializeOwned + Default;

    fn info() -> PluginInfo;

    /// `Ok(())` if the tree is good; an error makes molt roll the update back.
    fn validate(ctx: &ValidationContext, config: Self::Config) -> Result<(), String>;
}

/// Keys of a `[strategy.config]` / `[validators.config]` table that molt itself reads (see the
/// README): they are removed before the plugin's `Config` sees the table, so a plugin with
/// `deny_unknown_fields` does not refuse an operator's `allow_downgrade = true`.
pub const HOST_KEYS: &[&str] = &["allow_downgrade"];

/// What is wrong with a config table: the offending key as a path into the table (`percent`,
/// `paths[1]`; empty for the table as a whole) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid plugin config: {}", self.message)
        } else {
            write!(f, "invalid plugin config: {}: {}", self.key, self.message)
        }
    }
}

/// Parses the JSON config handed over by molt into the plugin's config type. Empty input,
/// `null` and an empty table (what molt sends when `molt.toml` has no config table) mean "no
/// config" and give `C::default()`, so `type Config = ()` works; [`HOST_KEYS`] are dropped
/// first; errors name the offending field.
pub fn parse_config<C: DeserializeOwned + Default>(json: &str) -> Result<C, String> {
    check_config(json).map_err(|problem| problem.to_string())
}

/// [`parse_config`] with the offending key apart from the message: what molt's config check
/// (`check-config`, run when the plugin is loaded) reports. A plugin whose `Config` takes no
/// settings (`()`) names the first key it was given.
pub fn check_config<C: DeserializeOwned + Default>(json: &str) -> Result<C, ConfigProblem> {
    let problem = |key: String, message: String| ConfigProblem { key, message };
    let trimmed = json.trim();
    if trimmed.is_empty() {
        return Ok(C::default());
    }
    let mut value: serde_json::Value =
        serde_json::from_str(trimmed).map_err(|e| problem(String::new(), e.to_string()))?;
    if let Some(table) = value.as_object_mut() {
        for key in HOST_KEYS {
            table.remove(*key);
        }
        if table.is_empty() {
            return Ok(C::default());
        }
    }
    if value.is_null() {
        return Ok(C::default());
    }
    let table = value.as_object().cloned().unwrap_or_default();
    let first_key = table.keys().next().cloned().unwrap_or_default();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path != "." {
            return problem(path, inner);
        }
        // serde reports an unknown key of a `deny_unknown_fields` struct at the table itself.
        if let Some(key) = inner
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(key, _)| key.to_owned())
        {
            return problem(key, inner);
        }
        // A config type that takes nothing (`()`, a unit struct) reads `null`: any key is one
        // it does not know.
        let takes_nothing = serde_json::from_value::<C>(serde_json::Value::Null).is_ok();
        if takes_nothing && !first_key.is_empty() {
            return problem(
                first_key,
                "unknown key: this plugin takes no configuration".into(),
            );
        }
        match flattened_culprit::<C>(&table, &inner) {
            Some(key) => problem(key, inner),
            None => problem(String::new(), inner),
        }
    })
}

/// The key behind an error serde reports at the table itself although one key caused it: a
/// `#[serde(flatten)]`ed part of the config (such as [`policy::PolicyOptions`] in a derived
/// strategy's) is read from a buffer after the table, where the key is lost. It is the first
/// key without which the table no longer fails with `error` (and not merely for lacking a
/// required key).
fn flattened_culprit<C: DeserializeOwned>(
    table: &serde_json::Map<String, serde_json::Value>,
    error: &str,
) -> Option<String> {
    table.keys().find_map(|key| {
        let mut without = table.clone();
        without.remove(key);
        let gone = match serde_json::from_value::<C>(serde_json::Value::Object(without)) {
            Ok(_) => true,
            Err(e) => {
                let e = e.to_string();
                e != error && !e.starts_with("missing field")
            }
        };
        gone.then(|| key.clone())
    })
}

/// The SDK's bindings of the WIT `types` interface, which the plugin's own bindings reuse
/// (see `build.rs`).
mod wit_bindings {
    include!(concat!(env!("OUT_DIR"), "/wit_types.rs"));
}

/// Glue used by the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::log::Level;
    pub use crate::wit_bindings::molt::plugin::types as wit_types;
    use crate::{ConfigProblem, Strategy, Validator, check_config, parse_config};

    /// `info()` of either kind, as it crosses the boundary.
    pub fn info(info: crate::PluginInfo) -> wit_types::PluginInfo {
        info.into()
    }

    /// `check-config` of a plugin whose config type is `C`: the key and message of what is
    /// wrong (the record is generated in the plugin's own bindings).
    pub fn check<C: serde::de::DeserializeOwned + Default>(
        config: &str,
    ) -> Result<(), (String, String)> {
        check_config::<C>(config)
            .map(drop)
            .map_err(|ConfigProblem { key, message }| (key, message))
    }

    pub fn run_strategy<P: Strategy>(
        ctx: wit_types::StrategyContext,
        config: &str,
    ) -> Result<wit_types::Decision, String> {
        let ctx = ctx.try_into()?;
        let config = parse_config::<P::Config>(config)?;
        P::decide(&ctx, config).map(Into::into)
    }

    pub fn run_validator<P: Validator>(
        ctx: wit_types::ValidationContext,
        config: &str,
    ) -> Result<(), String> {
        let ctx = ctx.try_into()?;
        let config = parse_config::<P::Config>(config)?;
        P::validate(&ctx, config)
    }
}

/// Glue shared by both export macros, for plugin type `$plugin` of kind `$kind` (`Strategy` or
/// `Validator`): the host `log` sink, the `Adapter` the exports are implemented on, and its
/// `config-check` export.
#[doc(hidden)]
#[macro_export]
macro_rules! __molt_common_glue {
    ($plugin:ty, $kind:path) => {
        fn __molt_log_sink(level: $crate::__private::Level, msg: &str) {
            use self::molt::plugin::host::{Level, log};
            let level = match level {
                $crate::__private::Level::Trace => Level::Trace,
                $crate::__private::Level::Debug => Level::Debug,
                $crate::__private::Level::Info => Level::Info,
                $crate::__private::Level::Warn => Level::Warn,
                $crate::__private::Level::Error => Level::Error,
            };
            log(level, msg)
        }

        struct Adapter;

        impl self::exports::molt::plugin::config_check::Guest for Adapter {
            fn check_config(
                config: String,
            ) -> Result<(), self::exports::molt::plugin::config_check::ConfigProblem> {
                $crate::log::__install_sink(__molt_log_sink);
                $crate::__private::check::<<$plugin as $kind>::Config>(&config).map_err(
                    |(key, message)| self::exports::molt::plugin::config_check::ConfigProblem {
                        key,
                        message,
                    },
                )
            }
        }
    };
}

/// Exports a [`Strategy`] implementation as the component's `molt:plugin/strategy` world.
///
/// Call it once, at the crate root or in any module, with the implementing type.
#[macro_export]
macro_rules! export_strategy {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __MoltStrategyPlugin = $plugin;

        #[doc(hidden)]
        #[allow(dead_code, unused_imports, clippy::all)]
        mod __molt_strategy_export {
            $crate::__molt_generate_bindings!("strategy");
            $crate::__molt_common_glue!(super::__MoltStrategyPlugin, $crate::Strategy);

            use $crate::__private as glue;
            use $crate::__private::wit_types as wit;

            impl self::exports::molt::plugin::strategy_plugin::Guest for Adapter {
                fn info() -> wit::PluginInfo {
                    $crate::log::__install_sink(__molt_log_sink);
                    glue::info(<super::__MoltStrategyPlugin as $crate::Strategy>::info())
                }

                fn decide(
                    ctx: wit::StrategyContext,
                    config: String,
                ) -> Result<wit::Decision, String> {
                    $crate::log::__install_sink(__molt_log_sink);
                    glue::run_strategy::<super::__MoltStrategyPlugin>(ctx, &config)
                }
            }

            export!(Adapter);
        }
    };
}

/// Exports a [`Validator`] implementation as the component's `molt:plugin/validator` world.
#[macro_export]
macro_rules! export_validator {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __MoltValidatorPlugin = $plugin;

        #[doc(hidden)]
        #[allow(dead_code, unused_imports, clippy::all)]
        mod __molt_validator_export {
            $crate::__molt_generate_bindings!("validator");
            $crate::__molt_common_glue!(super::__MoltValidatorPlugin, $crate::Validator);

            use $crate::__private as glue;
            use $crate::__private::wit_types as wit;

            impl self::exports::molt::plugin::validator_plugin::Guest for Adapter {
                fn info() -> wit::PluginInfo {
                    $crate::log::__install_sink(__molt_log_sink);
                    glue::info(<super::__MoltValidatorPlugin as $crate::Validator>::info())
                }

                fn validate(ctx: wit::ValidationContext, config: String) -> Result<(), String> {
                    $crate::log::__install_sink(__molt_log_sink);
                    glue::run_validator::<super::__MoltValidatorPlugin>(ctx, &config)
                }
            }

            export!(Adapter);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Config {
        percent: u8,
        paths: Vec<String>,
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = parse_config::<Config>(r#"{"percent": "ten"}"#).unwrap_err();
        assert!(err.contains("percent"), "{err}");
        let err = parse_config::<Config>(r#"{"paths": ["a", 3]}"#).unwrap_err();
        assert!(err.contains("paths[1]"), "{err}");
        let err = parse_config::<Config>(r#"{"percnt": 3}"#).unwrap_err();
        assert!(err.contains("percnt"), "{err}");
    }

    #[test]
    fn absent_config_is_default() {
        assert_eq!(parse_config::<Config>(""), Ok(Config::default()));
        assert_eq!(parse_config::<Config>("null"), Ok(Config::default()));
        assert_eq!(parse_config::<Config>("{}"), Ok(Config::default()));
        assert_eq!(parse_config::<()>("null"), Ok(()));
    }

    #[test]
    fn unit_config_accepts_the_empty_table_molt_sends() {
        assert_eq!(parse_config::<()>("{}"), Ok(()));
        assert_eq!(parse_config::<()>(" { } "), Ok(()));
        assert!(parse_config::<()>(r#"{"x": 1}"#).is_err());
    }

    #[test]
    fn host_keys_never_reach_the_plugin_config() {
        assert_eq!(
            parse_config::<Config>(r#"{"percent": 5, "allow_downgrade": true}"#),
            Ok(Config {
                percent: 5,
                paths: vec![]
            })
        );
        assert_eq!(parse_config::<()>(r#"{"allow_downgrade": true}"#), Ok(()));
    }

    #[test]
    fn config_problems_keep_the_key_apart() {
        assert_eq!(
            check_config::<Config>(r#"{"paths": ["a", 3]}"#)
                .unwrap_err()
                .key,
            "paths[1]"
        );
        assert_eq!(
            check_config::<Config>(r#"{"percnt": 3}"#).unwrap_err().key,
            "percnt"
        );
        let problem = check_config::<()>(r#"{"mode": "x"}"#).unwrap_err();
        assert_eq!(problem.key, "mode");
        assert!(
            problem.message.contains("takes no configuration"),
            "{problem}"
        );
    }

    #[test]
    fn malformed_json_is_an_error() {
        let err = parse_config::<Config>("{percent").unwrap_err();
        assert!(err.starts_with("invalid plugin config"), "{err}");
    }

    #[test]
    fn embedded_wit_is_the_package_file() {
        assert_eq!(WIT, include_str!("../../wit/molt-plugin.wit"));
        assert!(WIT.contains("package molt:plugin@0.1.0;"));
    }
}
