//! Host bindings of the two worlds of `wit/molt-plugin.wit`, one `bindgen!` module per world,
//! with the names the rest of the module uses re-exported (like wasmtime-wasi's p2 bindings).
//! The interfaces both worlds share (`host`, `types`) are generated once, in `strategy`, and
//! reused by `validator` (`with`), so the host implements `log` once.

/// The `strategy` world.
pub(super) mod strategy {
    wasmtime::component::bindgen!({ world: "strategy", path: "../wit" });

    pub use self::molt::plugin::host::{Host, Level};
    pub use self::molt::plugin::types::Host as TypesHost;
    pub use self::molt::plugin::types::{
        Decision, PatchChoice, PatchOffer, PluginInfo, ReleaseOffer, StrategyContext,
    };
}

/// The `validator` world.
pub(super) mod validator {
    wasmtime::component::bindgen!({
        world: "validator",
        path: "../wit",
        with: {
            "molt:plugin/host": super::strategy::molt::plugin::host,
            "molt:plugin/types": super::strategy::molt::plugin::types,
        },
    });

    pub use super::strategy::molt::plugin::types::ValidationContext;
}

/// Export names as they appear in a component (`molt:plugin/strategy-plugin@0.1.0`).
pub(super) const STRATEGY_INTERFACE: &str = "strategy-plugin";
pub(super) const VALIDATOR_INTERFACE: &str = "validator-plugin";
