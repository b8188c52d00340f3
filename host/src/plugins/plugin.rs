//! A loaded plugin of either kind, [`Plugin<W>`]: what strategies and validators have in
//! common — their name as configured, the pre-instantiated component, its optional
//! `config-check` export, `info()` and the limits every call runs under — written once, generic
//! over the WIT world ([`World`]). What differs (`decide`, `validate`) lives in `strategy` and
//! `validator`, each on `Plugin<ItsWorld>`.

use std::future::Future;
use std::path::Path;

use serde::Serialize;
use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

use super::bindings::config_check::CheckerPre;
use super::bindings::{self, PluginKind};
use super::error::PluginError;
use super::limits::PluginLimits;
use super::sandbox::{Call, SandboxState, guest_text};

/// One of the two plugin worlds of the WIT package, as the host binds it: a marker type that
/// names its bindings. Implemented by `strategy::StrategyWorld` and
/// `validator::ValidatorWorld` only.
pub trait World: 'static {
    const KIND: PluginKind;

    /// The world's pre-instantiated component (`bindgen!`'s `…Pre`).
    type Pre: Clone + Send + 'static;

    /// Adds the world's imports (molt's `host` interface) to `linker`.
    fn add_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()>;

    /// Checks `instance` against the world's exports.
    fn pre(instance: InstancePre<SandboxState>) -> wasmtime::Result<Self::Pre>;

    /// Instantiates `pre` in `store` and calls its `info()`.
    fn info(
        pre: Self::Pre,
        store: &mut Store<SandboxState>,
    ) -> impl Future<Output = wasmtime::Result<bindings::strategy::PluginInfo>> + '_;
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

impl PluginInfo {
    /// What the guest's `info()` returned (the same record in both worlds), made safe to show.
    pub(super) fn from_guest(info: bindings::strategy::PluginInfo, cap: usize) -> PluginInfo {
        PluginInfo {
            name: guest_text(&info.name, cap),
            version: guest_text(&info.version, cap),
            description: guest_text(&info.description, cap),
        }
    }
}

/// A loaded plugin of world `W`, pre-instantiated; each call gets a fresh store.
pub struct Plugin<W: World> {
    name: String,
    pub(super) pre: W::Pre,
    checker: Option<CheckerPre<SandboxState>>,
    pub(super) limits: PluginLimits,
    engine: wasmtime::Engine,
}

impl<W: World> Plugin<W> {
    pub(super) fn new(
        name: String,
        pre: W::Pre,
        checker: Option<CheckerPre<SandboxState>>,
        engine: wasmtime::Engine,
        limits: PluginLimits,
    ) -> Self {
        Plugin {
            name,
            pre,
            checker,
            limits,
            engine,
        }
    }

    /// The plugin as named in molt.toml (`builtin:default` or its path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's `info()`, called in the sandbox (with no files).
    pub fn info(&self) -> Result<PluginInfo, PluginError> {
        let pre = self.pre.clone();
        let info = self
            .call(None)
            .run(async move |store| W::info(pre, store).await)?;
        Ok(PluginInfo::from_guest(info, self.limits.output_bytes))
    }

    /// Whether the plugin accepts `config_json` (its `[strategy.config]` or
    /// `[validators.config]` table as JSON), asked in the sandbox with no files:
    /// [`PluginError::BadConfig`] if not; `Ok(false)` when the component predates `config-check`
    /// and cannot say.
    pub(crate) fn check_config(&self, config_json: &str) -> Result<bool, PluginError> {
        let Some(checker) = self.checker.clone() else {
            tracing::debug!(plugin = %self.name, "built without config-check; its config is checked when it runs");
            return Ok(false);
        };
        let config = config_json.to_owned();
        let answer = self.call(None).run(async move |store| {
            let plugin = checker.instantiate_async(&mut *store).await?;
            plugin
                .molt_plugin_config_check()
                .call_check_config(&mut *store, &config)
                .await
        })?;
        let cap = self.limits.output_bytes;
        answer
            .map(|()| true)
            .map_err(|problem| PluginError::BadConfig {
                plugin: self.name.clone(),
                key: guest_text(&problem.key, cap),
                message: guest_text(&problem.message, cap),
            })
    }

    /// A call of this plugin, with `preopen` mounted read-only at the guest root if given.
    pub(super) fn call(&self, preopen: Option<&Path>) -> Call {
        Call {
            plugin: self.name.clone(),
            engine: self.engine.clone(),
            limits: self.limits,
            preopen: preopen.map(Path::to_path_buf),
        }
    }
}
