//! `PluginRef`: how molt.toml names a plugin, and the builtins embedded in the binary (built
//! from `plugins/` by `host/build.rs`).

use std::fmt;
use std::path::PathBuf;

use super::error::PluginError;

/// A plugin compiled into molt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `builtin:default`, the standard strategy (`plugins/default`).
    Default,
    /// `builtin:require-files`, the validator of required files (`plugins/require-files`).
    RequireFiles,
}

impl Builtin {
    pub(crate) const ALL: [Builtin; 2] = [Builtin::Default, Builtin::RequireFiles];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Default => "default",
            Builtin::RequireFiles => "require-files",
        }
    }

    /// The component's bytes.
    pub fn wasm(self) -> &'static [u8] {
        match self {
            Builtin::Default => include_bytes!(concat!(env!("OUT_DIR"), "/default.wasm")),
            Builtin::RequireFiles => {
                include_bytes!(concat!(env!("OUT_DIR"), "/require_files.wasm"))
            }
        }
    }
}

/// A plugin as named in molt.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    Builtin(Builtin),
    /// A `.wasm` component on disk (relative paths are resolved by the config loader).
    File(PathBuf),
}

impl PluginRef {
    /// `builtin:NAME` or a path.
    pub fn parse(text: &str) -> Result<PluginRef, PluginError> {
        match text.strip_prefix("builtin:") {
            Some(name) => Builtin::ALL
                .into_iter()
                .find(|b| b.name() == name)
                .map(PluginRef::Builtin)
                .ok_or_else(|| PluginError::UnknownBuiltin {
                    name: text.to_owned(),
                    available: Builtin::ALL
                        .iter()
                        .map(|b| format!("builtin:{}", b.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            None => Ok(PluginRef::File(PathBuf::from(text))),
        }
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Builtin(b) => write!(f, "builtin:{}", b.name()),
            PluginRef::File(path) => write!(f, "{}", path.display()),
        }
    }
}
