//! `molt.toml` parsing on any text: never a panic; an accepted config is fully resolved
//! (absolute paths, a threshold the keys can meet, positive limits, plugin configs that are JSON
//! objects) and parsing is deterministic; a refused one is a usage error naming the file.

use std::path::Path;

use molt::config::Config;
use molt::error::ExitClass;

const PATH: &str = "/etc/molt/molt.toml";

/// One input: see the module doc for its layout and the invariants it asserts.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, Path::new(PATH)) {
        Ok(c) => {
            assert!(!c.product.trim().is_empty());
            assert!(
                c.install_dir.is_absolute() && c.state_dir.is_absolute(),
                "{c:?}"
            );
            assert!(
                !c.keys.is_empty() && c.keys.iter().all(|k| k.is_absolute()),
                "{c:?}"
            );
            assert!((1..=c.keys.len()).contains(&c.threshold), "{c:?}");
            assert!(
                !c.plugin_timeout.is_zero() && c.plugin_memory_bytes > 0,
                "{c:?}"
            );
            assert_eq!(c.plugin_memory_bytes % (1 << 20), 0);
            for p in std::iter::once(&c.strategy).chain(&c.validators) {
                assert!(
                    p.plugin.starts_with("builtin:") || Path::new(&p.plugin).is_absolute(),
                    "{p:?}"
                );
                let json: serde_json::Value = serde_json::from_str(&p.config_json).unwrap();
                assert!(json.is_object(), "{p:?}");
            }
            for p in &c.preserve {
                assert_eq!(molt::relpath::RelPath::new(p.as_str()).as_ref(), Ok(p));
            }
            let again = Config::parse(&text, Path::new(PATH)).unwrap();
            assert_eq!(
                format!("{again:?}"),
                format!("{c:?}"),
                "parsing is not deterministic"
            );
        }
        Err(e) => {
            assert_eq!(e.exit_class(), ExitClass::Usage, "{e}");
            assert!(e.to_string().contains(PATH), "{e}");
        }
    }
}
