//! `molt plugin inspect`: what a component is — world, WIT version, `info()`, imports, exports.
//! Compiled components are cached per user (`$XDG_CACHE_HOME/molt/plugins`, else
//! `~/.cache/molt/plugins`), so inspecting a plugin again does not compile it again.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::output::{Output, outln};
use crate::plugins::{PluginLimits, PluginRuntime};

pub(super) fn inspect(file: &Path, out: &Output) -> Result<(), Error> {
    let runtime = PluginRuntime::new(user_cache().as_deref(), PluginLimits::default())?;
    let report = runtime.inspect(file)?;
    if out.is_json() {
        out.document(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        outln!("{report}");
    }
    Ok(())
}

/// This user's cache of compiled plugins, if there is a home to put it in.
fn user_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".cache"))
        })?;
    Some(base.join("molt").join("plugins"))
}
