//! TEST ONLY: a strategy component as plugins of `molt:plugin@0.1.0` were built before the
//! optional `config-check` export existed (the `strategy-base` world: `info` and `decide`
//! only). molt must keep loading it.

wit_bindgen::generate!({ path: "../../wit", world: "strategy-base" });

use exports::molt::plugin::strategy_plugin::Guest;
use molt::plugin::types::{Decision, PluginInfo, StrategyContext};

struct OldStrategy;

impl Guest for OldStrategy {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "test-before-config-check".into(),
            version: "0.1.0".into(),
            description: "TEST ONLY: built without config-check".into(),
        }
    }

    fn decide(_ctx: StrategyContext, _config: String) -> Result<Decision, String> {
        Ok(Decision::None("old plugin, nothing to do".into()))
    }
}

export!(OldStrategy);
