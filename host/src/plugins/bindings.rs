//! Host bindings of `wit/molt-plugin.wit`, one `bindgen!` module per world, with the names the
//! rest of the module uses re-exported (like wasmtime-wasi's p2 bindings). The interfaces both
//! plugin worlds share (`host`, `types`) are generated once, in `strategy`, and reused by
//! `validator` (`with`), so the host implements `log` once.
//!
//! The host binds the `*-base` worlds — what every plugin of a kind exports, since 0.1.0 — and
//! the optional `config-check` export on its own (`config-checker`), looked up on the same
//! pre-instantiated component: a component built before `config-check` existed still loads.
//!
//! Exports are generated `async` (`instantiate_async`, `call_*` futures): a call is a future the
//! sandbox can drop at its deadline, which frees the store and everything the guest holds. The
//! one import of ours (`log`) is synchronous: it never blocks.
//!
//! This module also names what the WIT package says about itself — its package and version, the
//! interface names, the two kinds of plugins — so every other module of `plugins` can depend on
//! it and it on none of them.

use std::fmt;

use serde::Serialize;

/// The WIT package version this molt speaks.
pub(crate) const WIT_PACKAGE: &str = "molt:plugin";
pub(crate) const WIT_VERSION: &str = "0.1.0";

/// The two kinds of plugins (the two worlds of the WIT package).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Strategy,
    Validator,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Strategy => "strategy",
            PluginKind::Validator => "validator",
        })
    }
}

/// The `strategy` world, as the host requires it (`strategy-base`).
pub(super) mod strategy {
    wasmtime::component::bindgen!({
        world: "strategy-base",
        path: "../wit",
        exports: { default: async },
    });

    pub(crate) use self::StrategyBase as Strategy;
    pub(crate) use self::StrategyBasePre as StrategyPre;
    pub(crate) use self::molt::plugin::host::{Host, Level};
    pub(crate) use self::molt::plugin::types::Host as TypesHost;
    pub(crate) use self::molt::plugin::types::{
        Decision, PatchChoice, PatchOffer, PluginInfo, ReleaseOffer, StrategyContext,
    };
}

/// The `validator` world, as the host requires it (`validator-base`).
pub(super) mod validator {
    wasmtime::component::bindgen!({
        world: "validator-base",
        path: "../wit",
        exports: { default: async },
        with: {
            "molt:plugin/host": super::strategy::molt::plugin::host,
            "molt:plugin/types": super::strategy::molt::plugin::types,
        },
    });

    pub(crate) use self::ValidatorBase as Validator;
    pub(crate) use self::ValidatorBasePre as ValidatorPre;
    pub(crate) use super::strategy::molt::plugin::types::ValidationContext;
}

/// The optional `config-check` export of either kind.
pub(super) mod config_check {
    wasmtime::component::bindgen!({
        world: "config-checker",
        path: "../wit",
        exports: { default: async },
    });

    pub(crate) use self::ConfigCheckerPre as CheckerPre;
}

/// Export names as they appear in a component (`molt:plugin/strategy-plugin@0.1.0`).
pub(super) const STRATEGY_INTERFACE: &str = "strategy-plugin";
pub(super) const VALIDATOR_INTERFACE: &str = "validator-plugin";
pub(super) const CONFIG_CHECK_INTERFACE: &str = "config-check";
