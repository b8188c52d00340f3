//! Does a component speak this molt's `molt:plugin@0.1.0`? Checked by name before anything is
//! instantiated — interface by interface, function by function — so that a component built from
//! a different copy of the WIT is refused with a message naming the interface, the function and
//! the side to rebuild, instead of the linker's "a matching implementation was not found".
//! Types are left to the linker; its error is rephrased the same way ([`from_link_error`]).

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::bindings::{
    CONFIG_CHECK_INTERFACE, PluginKind, STRATEGY_INTERFACE, VALIDATOR_INTERFACE, WIT_PACKAGE,
    WIT_VERSION,
};

/// The interfaces of `wit/molt-plugin.wit` and their functions, as this molt has them (a unit
/// test holds this against the builtin plugins, which are built from that file).
const HOST: (&str, &[&str]) = ("host", &["log"]);
const TYPES: (&str, &[&str]) = ("types", &[]);
const STRATEGY: (&str, &[&str]) = (STRATEGY_INTERFACE, &["info", "decide"]);
const VALIDATOR: (&str, &[&str]) = (VALIDATOR_INTERFACE, &["info", "validate"]);
const CONFIG_CHECK: (&str, &[&str]) = (CONFIG_CHECK_INTERFACE, &["check-config"]);

fn qualified(interface: &str) -> String {
    format!("{WIT_PACKAGE}/{interface}@{WIT_VERSION}")
}

/// The functions (and types) a component instance type lists, by name.
fn functions(engine: &Engine, item: &ComponentItem) -> Option<Vec<(String, bool)>> {
    match item {
        ComponentItem::ComponentInstance(instance) => Some(
            instance
                .exports(engine)
                .map(|(name, item)| {
                    (
                        name.to_owned(),
                        matches!(item.ty, ComponentItem::ComponentFunc(_)),
                    )
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The first way `component` (already known to be a `kind` plugin of our WIT version) differs
/// from what this molt provides and requires, as a sentence.
pub(super) fn mismatch(engine: &Engine, component: &Component, kind: PluginKind) -> Option<String> {
    let ty = component.component_type();
    let provided = [HOST, TYPES];
    for (name, item) in ty.imports(engine) {
        let Some(interface) = ours(name) else {
            continue;
        };
        let Some((_, functions_we_have)) = provided.iter().find(|(i, _)| *i == interface) else {
            return Some(format!(
                "it imports interface {name}, which this molt does not provide"
            ));
        };
        for (function, is_func) in functions(engine, &item.ty).unwrap_or_default() {
            if is_func && !functions_we_have.contains(&function.as_str()) {
                return Some(format!(
                    "it imports function `{function}` of interface {name}, which this molt does not provide"
                ));
            }
        }
    }
    let required = match kind {
        PluginKind::Strategy => STRATEGY,
        PluginKind::Validator => VALIDATOR,
    };
    for (interface, needed) in [required, CONFIG_CHECK] {
        let wanted = qualified(interface);
        let Some((_, item)) = ty.exports(engine).find(|(name, _)| *name == wanted) else {
            // Only the plugin interface itself is required (checked by `identify` already);
            // config-check is optional.
            continue;
        };
        let exported = functions(engine, &item.ty).unwrap_or_default();
        for function in needed.iter() {
            if !exported
                .iter()
                .any(|(f, is_func)| *is_func && f == function)
            {
                return Some(format!(
                    "it does not export function `{function}` of interface {wanted}, which molt calls"
                ));
            }
        }
    }
    None
}

/// `molt:plugin/<interface>@<version>` → `<interface>`, for imports of our package and version.
fn ours(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    let (interface, version) = rest.split_once('@')?;
    (version == WIT_VERSION).then_some(interface)
}

/// The linker's (or the bindings') refusal of a component as a sentence naming what differs:
/// wasmtime reports "component imports instance `X`, but a matching implementation was not
/// found in the linker", caused by "instance export `f` has the wrong type".
pub(super) fn from_link_error(error: &wasmtime::Error) -> String {
    let chain: Vec<String> = error.chain().map(|e| e.to_string()).collect();
    let quoted = |text: &str| {
        let start = text.find('`')? + 1;
        let end = start + text[start..].find('`')?;
        Some(text[start..end].to_owned())
    };
    let interface = chain
        .iter()
        .find(|m| m.contains("imports instance"))
        .and_then(|m| quoted(m));
    let function = chain
        .iter()
        .find(|m| m.contains("instance export"))
        .and_then(|m| quoted(m));
    match (interface, function) {
        (Some(interface), Some(function)) => format!(
            "its function `{function}` of interface {interface} has a different type than this molt's ({})",
            chain.last().map(String::as_str).unwrap_or("")
        ),
        (Some(interface), None) => format!(
            "its import {interface} does not match this molt's ({})",
            chain.join(": ")
        ),
        _ => chain.join(": "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{Builtin, PluginLimits, PluginRuntime};

    /// The lists above are what the builtins, built from `wit/molt-plugin.wit`, actually have.
    #[test]
    fn the_function_lists_match_the_wit_the_builtins_were_built_from() {
        let runtime = PluginRuntime::new(None, PluginLimits::default()).unwrap();
        for (builtin, kind) in [
            (Builtin::Default, PluginKind::Strategy),
            (Builtin::RequireFiles, PluginKind::Validator),
        ] {
            let component = runtime.compile("builtin", builtin.wasm()).unwrap();
            assert_eq!(mismatch(runtime.engine(), &component, kind), None);
            let ty = component.component_type();
            let exports: Vec<_> = ty
                .exports(runtime.engine())
                .map(|(n, _)| n.to_owned())
                .collect();
            assert!(
                exports.contains(&qualified(CONFIG_CHECK_INTERFACE)),
                "{exports:?}"
            );
            let host = ty
                .imports(runtime.engine())
                .find(|(n, _)| *n == qualified("host"))
                .map(|(_, item)| functions(runtime.engine(), &item.ty).unwrap())
                .unwrap();
            let host: Vec<_> = host
                .into_iter()
                .filter(|(_, f)| *f)
                .map(|(n, _)| n)
                .collect();
            assert_eq!(host, HOST.1);
        }
    }
}
