//! Validator plugins: run after an update was applied, against the new install tree mounted
//! read-only at `/install`; an error makes the pipeline roll back.

use std::path::Path;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::bindings::{PluginKind, strategy::PluginInfo as WitPluginInfo, validator as wit};
use super::error::PluginError;
use super::plugin::{Plugin, World};
use super::sandbox::{GUEST_ROOT, SandboxState, guest_text};
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

/// The `validator` world (its `validator-base` bindings).
pub enum ValidatorWorld {}

impl World for ValidatorWorld {
    const KIND: PluginKind = PluginKind::Validator;
    type Pre = wit::ValidatorPre<SandboxState>;

    fn add_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
        wit::Validator::add_to_linker::<SandboxState, HasSelf<SandboxState>>(linker, |s| s)
    }

    fn pre(instance: InstancePre<SandboxState>) -> wasmtime::Result<Self::Pre> {
        wit::ValidatorPre::new(instance)
    }

    async fn info(
        pre: Self::Pre,
        store: &mut Store<SandboxState>,
    ) -> wasmtime::Result<WitPluginInfo> {
        let plugin = pre.instantiate_async(&mut *store).await?;
        plugin
            .molt_plugin_validator_plugin()
            .call_info(&mut *store)
            .await
    }
}

/// A loaded validator plugin, pre-instantiated; each call gets a fresh store.
pub type ValidatorPlugin = Plugin<ValidatorWorld>;

impl Plugin<ValidatorWorld> {
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
        let pre = self.pre.clone();
        let answer = self.call(Some(tree)).run(async move |store| {
            let plugin = pre.instantiate_async(&mut *store).await?;
            plugin
                .molt_plugin_validator_plugin()
                .call_validate(&mut *store, &ctx, &config)
                .await
        })?;
        verdict_from_guest(self.name(), answer, self.limits.output_bytes)
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
