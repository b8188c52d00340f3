//! `molt plugin inspect FILE.wasm`: what a component is, read from its types and its own
//! `info()` (called in the sandbox), without trusting it with anything.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bindings::{PluginKind, WIT_PACKAGE, WIT_VERSION};
use super::builtin::PluginRef;
use super::engine::{Identity, PluginRuntime, identify};
use super::error::PluginError;
use super::plugin::{PluginInfo, World};
use super::strategy::StrategyWorld;
use super::validator::ValidatorWorld;

/// The description of one component.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// `None` when the component is not a molt plugin.
    pub world: Option<PluginKind>,
    /// `molt:plugin` when it is one.
    pub package: Option<String>,
    pub package_version: Option<String>,
    /// True when this molt can run it.
    pub compatible: bool,
    /// Why it cannot, when it cannot.
    pub incompatible_reason: Option<String>,
    pub info: Option<PluginInfo>,
    /// Why `info` is missing, when it is.
    pub info_error: Option<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl PluginRuntime {
    /// Describes the component at `path`; fails only if it is not a component at all.
    pub fn inspect(&self, path: &Path) -> Result<InspectReport, PluginError> {
        let plugin = PluginRef::File(path.to_path_buf());
        let name = plugin.to_string();
        let wasm = self.read_plugin(&plugin)?;
        let component = self.compile(&name, &wasm)?;
        let engine = self.engine();
        let ty = component.component_type();
        let imports = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let exports = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        let (world, package_version) = match identify(engine, &component) {
            Identity::Plugin { kind, version } => (Some(kind), Some(version)),
            Identity::Foreign { .. } => (None, None),
        };
        let version_ok = world.is_some() && package_version.as_deref() == Some(WIT_VERSION);
        // The same checks `load_strategy` / `load_validator` make, instantiation excluded.
        let prepared = match world {
            Some(PluginKind::Strategy) if version_ok => {
                Some(self.prepared_info::<StrategyWorld>(&name, &component))
            }
            Some(PluginKind::Validator) if version_ok => {
                Some(self.prepared_info::<ValidatorWorld>(&name, &component))
            }
            _ => None,
        };
        let mut incompatible_reason = None;
        let info = match prepared {
            Some(Ok(info)) => info,
            Some(Err(e)) => {
                incompatible_reason = Some(e.to_string());
                Err(e)
            }
            None => Err(match world {
                Some(_) => PluginError::WrongVersion {
                    plugin: name.clone(),
                    found: package_version.clone().unwrap_or_default(),
                    expected: WIT_VERSION,
                },
                None => PluginError::WrongWorld {
                    plugin: name.clone(),
                    found: "not a molt plugin".into(),
                    expected: "strategy or validator",
                    section: "molt.toml",
                },
            }),
        };
        if incompatible_reason.is_none()
            && let Err(e) = &info
            && !version_ok
        {
            incompatible_reason = Some(e.to_string());
        }
        let compatible = incompatible_reason.is_none();
        let (info, info_error) = match info {
            Ok(info) => (Some(info), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(InspectReport {
            path: name,
            size: wasm.len() as u64,
            sha256: hex::encode(Sha256::digest(&wasm)),
            world,
            package: world.map(|_| WIT_PACKAGE.to_owned()),
            package_version,
            compatible,
            incompatible_reason,
            info,
            info_error,
            imports,
            exports,
        })
    }
}

impl PluginRuntime {
    /// Prepares `component` as a plugin of world `W` (the error: why this molt cannot run it)
    /// and asks it for its `info()` (the inner result).
    fn prepared_info<W: World>(
        &self,
        name: &str,
        component: &wasmtime::component::Component,
    ) -> Result<Result<PluginInfo, PluginError>, PluginError> {
        self.prepare::<W>(name.to_owned(), component)
            .map(|plugin| plugin.info())
    }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.path)?;
        writeln!(
            f,
            "  size:       {} bytes, sha256 {}",
            self.size, self.sha256
        )?;
        match (&self.world, &self.package, &self.package_version) {
            (Some(world), Some(package), Some(version)) => {
                let note = if self.compatible {
                    String::new()
                } else {
                    format!(" (this molt speaks {WIT_PACKAGE}@{WIT_VERSION})")
                };
                writeln!(f, "  world:      {world} ({package}@{version}){note}")?;
                if let Some(reason) = &self.incompatible_reason {
                    writeln!(f, "  compatible: no: {reason}")?;
                }
            }
            _ => writeln!(f, "  world:      none (not a molt plugin)")?,
        }
        match (&self.info, &self.info_error) {
            (Some(info), _) => {
                writeln!(f, "  plugin:     {} {}", info.name, info.version)?;
                writeln!(f, "  about:      {}", info.description)?;
            }
            (None, Some(error)) => writeln!(f, "  info:       unavailable: {error}")?,
            (None, None) => {}
        }
        writeln!(f, "  imports:")?;
        for import in &self.imports {
            writeln!(f, "    {import}")?;
        }
        writeln!(f, "  exports:")?;
        for export in &self.exports {
            writeln!(f, "    {export}")?;
        }
        Ok(())
    }
}
