//! TEST ONLY: a strategy component built against a future `molt:plugin@0.2.0`, so that molt's
//! WIT version check has a real component to refuse (with a message naming both versions).

wit_bindgen::generate!({
    inline: "
        package molt:plugin@0.2.0;

        interface strategy-plugin {
            decide: func(config: string) -> result<string, string>;
        }

        world strategy {
            export strategy-plugin;
        }
    ",
});

struct FutureStrategy;

impl exports::molt::plugin::strategy_plugin::Guest for FutureStrategy {
    fn decide(_config: String) -> Result<String, String> {
        Ok("none".into())
    }
}

export!(FutureStrategy);
