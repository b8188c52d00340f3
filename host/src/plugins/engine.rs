//! The process-wide wasmtime engine and `PluginRuntime`, which loads plugins: read, check the
//! header, compile (or load from the cache), check the world and WIT version from the exports,
//! and pre-instantiate against the right linker.

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::bindings::config_check::CheckerPre;
use super::bindings::{
    CONFIG_CHECK_INTERFACE, PluginKind, STRATEGY_INTERFACE, VALIDATOR_INTERFACE, WIT_PACKAGE,
    WIT_VERSION,
};
use super::builtin::PluginRef;
use super::cache::{ComponentCache, Origin};
use super::compat;
use super::error::PluginError;
use super::limits::{EPOCH_TICK, PluginLimits};
use super::plugin::{Plugin, World};
use super::sandbox::SandboxState;
use super::strategy::{StrategyPlugin, StrategyWorld};
use super::validator::{ValidatorPlugin, ValidatorWorld};
use crate::fsutil::open_regular;

/// Plugin files larger than this are refused before compiling (ours are ~150 KB).
const MAX_PLUGIN_BYTES: u64 = 64 << 20;

/// Counts how plugins were obtained, to tell a cache hit from a compile.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub compiled: usize,
    pub from_cache: usize,
}

/// Loads and runs plugins under one set of limits.
pub struct PluginRuntime {
    engine: Engine,
    cache: Option<ComponentCache>,
    limits: PluginLimits,
    strategy_linker: Linker<SandboxState>,
    validator_linker: Linker<SandboxState>,
    compiled: AtomicUsize,
    from_cache: AtomicUsize,
}

/// The one engine of the process, with its epoch ticker thread.
fn shared_engine() -> Result<Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config
                .epoch_interruption(true)
                .parallel_compilation(true)
                .memory_reservation(1 << 30)
                .memory_guard_size(64 << 10)
                .memory_reservation_for_growth(0);
            let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("molt-plugin-epoch".into())
                .spawn(move || {
                    while let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(EPOCH_TICK);
                    }
                })
                .map_err(|e| format!("cannot start the plugin epoch ticker: {e}"))?;
            Ok(engine)
        })
        .clone()
}

/// The linker of world `W`: WASI (nothing granted yet: each call's context grants) and molt's
/// `host` interface.
fn linker<W: World>(engine: &Engine) -> Result<Linker<SandboxState>, PluginError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| W::add_to_linker(&mut linker))
        .map_err(|e| PluginError::Sandbox {
            plugin: "(linker)".into(),
            reason: format!("{e:#}"),
        })?;
    Ok(linker)
}

/// What a component says it is, read from its export names.
pub(super) enum Identity {
    /// Exports `molt:plugin/<interface>@<version>`.
    Plugin { kind: PluginKind, version: String },
    /// Exports nothing of ours.
    Foreign { exports: Vec<String> },
}

pub(super) fn identify(engine: &Engine, component: &Component) -> Identity {
    let mut exports = Vec::new();
    for (name, _) in component.component_type().exports(engine) {
        if let Some(rest) = name
            .strip_prefix(WIT_PACKAGE)
            .and_then(|r| r.strip_prefix('/'))
        {
            let (interface, version) = rest.split_once('@').unwrap_or((rest, "unversioned"));
            let kind = match interface {
                STRATEGY_INTERFACE => Some(PluginKind::Strategy),
                VALIDATOR_INTERFACE => Some(PluginKind::Validator),
                _ => None,
            };
            if let Some(kind) = kind {
                return Identity::Plugin {
                    kind,
                    version: version.to_owned(),
                };
            }
        }
        exports.push(name.to_owned());
    }
    Identity::Foreign { exports }
}

/// Refuses anything that is not a component before handing it to the compiler.
pub(super) fn check_header(plugin: &str, wasm: &[u8]) -> Result<(), PluginError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: &[u8] = &[1, 0, 0, 0];
    let what = if wasm.len() < 8 || &wasm[..4] != MAGIC {
        "no WebAssembly header"
    } else if &wasm[4..8] == CORE_VERSION {
        "it is a core module, not a component"
    } else if wasm[6..8] != [1, 0] {
        "unknown WebAssembly layer"
    } else {
        return Ok(());
    };
    Err(PluginError::NotAComponent {
        plugin: plugin.to_owned(),
        what: what.to_owned(),
    })
}

impl PluginRuntime {
    /// A runtime that caches compiled plugins in `cache_dir` (created 0700) when given.
    pub fn new(
        cache_dir: Option<&Path>,
        limits: PluginLimits,
    ) -> Result<PluginRuntime, PluginError> {
        let engine = shared_engine().map_err(|reason| PluginError::Sandbox {
            plugin: "(engine)".into(),
            reason,
        })?;
        Ok(PluginRuntime {
            cache: cache_dir.and_then(|dir| ComponentCache::open(dir, &engine)),
            strategy_linker: linker::<StrategyWorld>(&engine)?,
            validator_linker: linker::<ValidatorWorld>(&engine)?,
            engine,
            limits,
            compiled: AtomicUsize::new(0),
            from_cache: AtomicUsize::new(0),
        })
    }

    pub fn limits(&self) -> PluginLimits {
        self.limits
    }

    /// How many components this runtime compiled and how many it loaded from the cache.
    pub fn load_stats(&self) -> LoadStats {
        LoadStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            from_cache: self.from_cache.load(Ordering::Relaxed),
        }
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads the strategy named in `[strategy]`.
    pub fn load_strategy(&self, plugin: &PluginRef) -> Result<StrategyPlugin, PluginError> {
        self.load(plugin)
    }

    /// Loads a validator named in `[[validators]]`.
    pub(crate) fn load_validator(
        &self,
        plugin: &PluginRef,
    ) -> Result<ValidatorPlugin, PluginError> {
        self.load(plugin)
    }

    fn load<W: World>(&self, plugin: &PluginRef) -> Result<Plugin<W>, PluginError> {
        let component = self.load_component(plugin)?;
        self.prepare(plugin.to_string(), &component)
    }

    /// Checks that a compiled component is a plugin of world `W` and our WIT version, and
    /// pre-instantiates it.
    pub(super) fn prepare<W: World>(
        &self,
        name: String,
        component: &Component,
    ) -> Result<Plugin<W>, PluginError> {
        self.expect_kind(&name, component, W::KIND)?;
        self.expect_compatible(&name, component, W::KIND)?;
        let incompatible = |e: wasmtime::Error| PluginError::Incompatible {
            plugin: name.clone(),
            version: WIT_VERSION,
            reason: compat::from_link_error(&e),
        };
        let linker = match W::KIND {
            PluginKind::Strategy => &self.strategy_linker,
            PluginKind::Validator => &self.validator_linker,
        };
        let instance = linker.instantiate_pre(component).map_err(incompatible)?;
        let checker = self.checker(&name, component, &instance)?;
        let pre = W::pre(instance).map_err(incompatible)?;
        Ok(Plugin::new(
            name,
            pre,
            checker,
            self.engine.clone(),
            self.limits,
        ))
    }

    /// The component's `config-check` export, if it has one (components built before it
    /// existed do not; they load all the same).
    fn checker(
        &self,
        name: &str,
        component: &Component,
        instance: &wasmtime::component::InstancePre<SandboxState>,
    ) -> Result<Option<CheckerPre<SandboxState>>, PluginError> {
        let wanted = format!("{WIT_PACKAGE}/{CONFIG_CHECK_INTERFACE}@{WIT_VERSION}");
        let exported = component
            .component_type()
            .exports(&self.engine)
            .any(|(export, _)| export == wanted);
        if !exported {
            return Ok(None);
        }
        CheckerPre::new(instance.clone())
            .map(Some)
            .map_err(|e| PluginError::Incompatible {
                plugin: name.to_owned(),
                version: WIT_VERSION,
                reason: compat::from_link_error(&e),
            })
    }

    /// Refuses a component whose `molt:plugin` interfaces differ from this molt's by name.
    pub(super) fn expect_compatible(
        &self,
        name: &str,
        component: &Component,
        kind: PluginKind,
    ) -> Result<(), PluginError> {
        match compat::mismatch(&self.engine, component, kind) {
            None => Ok(()),
            Some(reason) => Err(PluginError::Incompatible {
                plugin: name.to_owned(),
                version: WIT_VERSION,
                reason,
            }),
        }
    }

    pub(super) fn read_plugin(&self, plugin: &PluginRef) -> Result<Vec<u8>, PluginError> {
        let name = plugin.to_string();
        match plugin {
            PluginRef::Builtin(builtin) => Ok(builtin.wasm().to_vec()),
            PluginRef::File(path) => {
                // A FIFO, a device (`/dev/zero`) or a directory is refused at once; the read is
                // capped whatever size the file claims.
                let file = open_regular(path).map_err(|e| PluginError::load(&name, e))?;
                let mut wasm = Vec::new();
                file.take(MAX_PLUGIN_BYTES + 1)
                    .read_to_end(&mut wasm)
                    .map_err(|e| PluginError::load(&name, e))?;
                if wasm.len() as u64 > MAX_PLUGIN_BYTES {
                    return Err(PluginError::load(
                        &name,
                        format!("it is larger than the {MAX_PLUGIN_BYTES} bytes a plugin may have"),
                    ));
                }
                Ok(wasm)
            }
        }
    }

    pub(super) fn load_component(&self, plugin: &PluginRef) -> Result<Component, PluginError> {
        let name = plugin.to_string();
        let wasm = self.read_plugin(plugin)?;
        self.compile(&name, &wasm)
    }

    pub(super) fn compile(&self, name: &str, wasm: &[u8]) -> Result<Component, PluginError> {
        check_header(name, wasm)?;
        let (component, origin) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, wasm),
            None => Component::new(&self.engine, wasm).map(|c| (c, Origin::Compiled)),
        }
        .map_err(|e| PluginError::load(name, e))?;
        match origin {
            Origin::Compiled => {
                self.compiled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(plugin = %name, "compiled");
            }
            Origin::Cache => {
                self.from_cache.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(plugin = %name, "loaded from cache");
            }
        }
        Ok(component)
    }

    fn expect_kind(
        &self,
        name: &str,
        component: &Component,
        expected: PluginKind,
    ) -> Result<(), PluginError> {
        let (section, wanted) = match expected {
            PluginKind::Strategy => ("[strategy]", "strategy"),
            PluginKind::Validator => ("[[validators]]", "validator"),
        };
        match identify(&self.engine, component) {
            Identity::Plugin { kind, version } if kind == expected => {
                if version == WIT_VERSION {
                    Ok(())
                } else {
                    Err(PluginError::WrongVersion {
                        plugin: name.to_owned(),
                        found: version,
                        expected: WIT_VERSION,
                    })
                }
            }
            Identity::Plugin { kind, .. } => Err(PluginError::WrongWorld {
                plugin: name.to_owned(),
                found: format!("a {kind} plugin"),
                expected: wanted,
                section,
            }),
            Identity::Foreign { exports } => Err(PluginError::WrongWorld {
                plugin: name.to_owned(),
                found: format!(
                    "not a molt plugin (it exports {})",
                    if exports.is_empty() {
                        "nothing".to_owned()
                    } else {
                        exports.join(", ")
                    }
                ),
                expected: wanted,
                section,
            }),
        }
    }
}
