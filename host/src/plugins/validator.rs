//! Validator plugins: run after an update was applied, against the new install tree mounted
//! read-only at `/install`; an error makes the pipeline roll back.

use std::path::Path;

use super::bindings::config_check::CheckerPre;
use super::bindings::validator as wit;
use super::error::PluginError;
use super::inspect::PluginInfo;
use super::limits::PluginLimits;
use super::sandbox::{GUEST_ROOT, Loaded, SandboxState, guest_text};
use crate::relpath::RelPath;
use crate::version::Version;

/// What a validator is told about the update (see `validation-context` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidationContext {
    pub old_version: Option<Version>,
    pub new_version: Version,
    pub changed: Vec<RelPath>,
    pub removed: Vec<RelPath>,
}

/// A loaded validator plugin, pre-instantiated; each call gets a fresh store.
pub struct ValidatorPlugin {
    loaded: Loaded<wit::ValidatorPre<SandboxState>>,
}

impl ValidatorPlugin {
    pub(super) fn new(
        name: String,
        pre: wit::ValidatorPre<SandboxState>,
        checker: Option<CheckerPre<SandboxState>>,
        engine: wasmtime::Engine,
        limits: PluginLimits,
    ) -> Self {
        Self {
            loaded: Loaded::new(name, pre, checker, engine, limits),
        }
    }

    /// Whether the plugin accepts `config_json` (its `[validators.config]` table as
    /// JSON): [`PluginError::BadConfig`] if not; `Ok(false)` if it predates config checks.
    pub(crate) fn check_config(&self, config_json: &str) -> Result<bool, PluginError> {
        self.loaded.check_config(config_json)
    }

    pub fn name(&self) -> &str {
        &self.loaded.name
    }

    /// The plugin's `info()`, called in the sandbox (with no files).
    pub fn info(&self) -> Result<PluginInfo, PluginError> {
        let pre = self.loaded.pre.clone();
        let info = self.loaded.call(None).run(async move |store| {
            let plugin = pre.instantiate_async(&mut *store).await?;
            plugin
                .molt_plugin_validator_plugin()
                .call_info(&mut *store)
                .await
        })?;
        Ok(PluginInfo::from_guest(
            info,
            self.loaded.limits.output_bytes,
        ))
    }

    /// Runs the validator against `tree` (mounted read-only at `/install`). `config_json` is
    /// the `[validators.config]` table as JSON. The plugin's own error is
    /// [`PluginError::Rejected`].
    pub(crate) fn validate(
        &self,
        input: &ValidationContext,
        config_json: &str,
        tree: &Path,
    ) -> Result<(), PluginError> {
        let paths = |list: &[RelPath]| list.iter().map(|p| p.as_str().to_owned()).collect();
        let ctx = wit::ValidationContext {
            old_version: input.old_version.as_ref().map(Version::to_string),
            new_version: input.new_version.to_string(),
            changed: paths(&input.changed),
            removed: paths(&input.removed),
            root: GUEST_ROOT.to_owned(),
        };
        let config = config_json.to_owned();
        let pre = self.loaded.pre.clone();
        let answer = self.loaded.call(Some(tree)).run(async move |store| {
            let plugin = pre.instantiate_async(&mut *store).await?;
            plugin
                .molt_plugin_validator_plugin()
                .call_validate(&mut *store, &ctx, &config)
                .await
        })?;
        verdict_from_guest(&self.loaded.name, answer, self.loaded.limits.output_bytes)
    }
}

/// What the guest's `validate` returned: its error string, capped and made printable, is the
/// plugin's refusal.
pub(super) fn verdict_from_guest(
    plugin: &str,
    answer: Result<(), String>,
    cap: usize,
) -> Result<(), PluginError> {
    answer.map_err(|reason| PluginError::Rejected {
        plugin: plugin.to_owned(),
        reason: guest_text(&reason, cap),
    })
}
