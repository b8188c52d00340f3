//! Errors of loading and running plugins. Each names the plugin (`builtin:default` or the file
//! path) and says what to do.

use std::time::Duration;

use crate::error::ExitClass;

/// What to tell the operator to do about a mismatch at the same WIT version.
const REBUILD: &str = "rebuild the plugin against this molt's molt-plugin-sdk (or upgrade molt, if the plugin was built for a newer one)";

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot load plugin {plugin}: {source} (check the plugin path in molt.toml)")]
    Load {
        plugin: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    #[error(
        "unknown builtin plugin {name:?}; available: {available} (or give the path of a .wasm component)"
    )]
    UnknownBuiltin { name: String, available: String },

    #[error(
        "{plugin} is not a WebAssembly component ({what}); build plugins with `cargo build --target wasm32-wasip2` and molt-plugin-sdk"
    )]
    NotAComponent { plugin: String, what: String },

    #[error("{plugin} is {found}, but {section} needs a {expected} plugin")]
    WrongWorld {
        plugin: String,
        /// What the component is, e.g. "a validator plugin".
        found: String,
        expected: &'static str,
        /// The molt.toml section that named it.
        section: &'static str,
    },

    #[error(
        "{plugin} was built for molt:plugin@{found}; this molt expects molt:plugin@{expected} (rebuild it against this molt's plugin SDK)"
    )]
    WrongVersion {
        plugin: String,
        found: String,
        expected: &'static str,
    },

    #[error(
        "{plugin} does not match this molt's molt:plugin@{version}: {reason}; {}",
        REBUILD
    )]
    Incompatible {
        plugin: String,
        version: &'static str,
        /// What differs: the interface and the function.
        reason: String,
    },

    #[error(
        "plugin {plugin} did not finish within {limit:?} and was stopped (raise the plugin timeout or fix the plugin)"
    )]
    Timeout { plugin: String, limit: Duration },

    #[error("plugin {plugin} tried to use more than {limit_bytes} bytes of memory and was stopped")]
    MemoryLimit { plugin: String, limit_bytes: usize },

    #[error(
        "plugin {plugin} tried to hold more than {limit} WASI resources (open files, streams) at once and was stopped"
    )]
    ResourceLimit { plugin: String, limit: usize },

    #[error("plugin {plugin} crashed: {message}{}", stderr_suffix(guest_stderr))]
    Trap {
        plugin: String,
        message: String,
        /// What the guest wrote to stdout/stderr before it crashed (capped).
        guest_stderr: String,
    },

    #[error("plugin {plugin} rejects its config: {}{message}", key_prefix(key))]
    BadConfig {
        plugin: String,
        /// The offending key as a path into the config table (`paths[1]`); empty for the
        /// table as a whole.
        key: String,
        message: String,
    },

    #[error("plugin {plugin} refused: {reason}")]
    Rejected { plugin: String, reason: String },

    #[error("plugin {plugin} gave a malformed answer: {what}")]
    Malformed { plugin: String, what: String },

    #[error("cannot run plugin {plugin}: {reason}")]
    Sandbox { plugin: String, reason: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("`{key}`: ")
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; plugin output: {stderr}")
    }
}

impl PluginError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            PluginError::Load { .. }
            | PluginError::UnknownBuiltin { .. }
            | PluginError::NotAComponent { .. }
            | PluginError::WrongWorld { .. }
            | PluginError::WrongVersion { .. }
            | PluginError::Incompatible { .. }
            | PluginError::BadConfig { .. } => ExitClass::Usage,
            PluginError::Timeout { .. }
            | PluginError::MemoryLimit { .. }
            | PluginError::ResourceLimit { .. }
            | PluginError::Trap { .. }
            | PluginError::Rejected { .. }
            | PluginError::Malformed { .. }
            | PluginError::Sandbox { .. } => ExitClass::Failure,
        }
    }

    /// The plugin the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::UnknownBuiltin { name, .. } => name,
            PluginError::Load { plugin, .. }
            | PluginError::NotAComponent { plugin, .. }
            | PluginError::WrongWorld { plugin, .. }
            | PluginError::WrongVersion { plugin, .. }
            | PluginError::Incompatible { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::ResourceLimit { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::Rejected { plugin, .. }
            | PluginError::BadConfig { plugin, .. }
            | PluginError::Malformed { plugin, .. }
            | PluginError::Sandbox { plugin, .. } => plugin,
        }
    }

    pub(super) fn load(
        plugin: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        PluginError::Load {
            plugin: plugin.to_owned(),
            source: source.into(),
        }
    }
}
