//! `molt plugin inspect`: what a component is — world, WIT version, `info()`, imports, exports.

use std::path::Path;

use crate::Error;
use crate::output::Output;
use crate::plugins::{PluginLimits, PluginRuntime};

pub fn inspect(file: &Path, out: &Output) -> Result<(), Error> {
    let runtime = PluginRuntime::new(None, PluginLimits::default())?;
    let report = runtime.inspect(file)?;
    if out.is_json() {
        out.document(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        println!("{report}");
    }
    Ok(())
}
