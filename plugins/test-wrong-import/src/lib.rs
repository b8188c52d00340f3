//! TEST ONLY: a strategy component built against a `molt:plugin@0.1.0` that is not molt's: its
//! `host` interface has a `now-ms` function molt does not provide, and its `strategy-plugin`
//! lacks `info`. molt must refuse it before instantiating, naming the interface and function.

wit_bindgen::generate!({
    inline: "
        package molt:plugin@0.1.0;

        interface host {
            now-ms: func() -> u64;
        }

        interface strategy-plugin {
            decide: func(config: string) -> result<string, string>;
        }

        world strategy {
            import host;
            export strategy-plugin;
        }
    ",
});

struct OtherStrategy;

impl exports::molt::plugin::strategy_plugin::Guest for OtherStrategy {
    fn decide(_config: String) -> Result<String, String> {
        Ok(format!("none at {}", molt::plugin::host::now_ms()))
    }
}

export!(OtherStrategy);
