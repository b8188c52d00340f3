//! Embeds the WIT package (`../wit/molt-plugin.wit`, the single source of truth) into a hidden
//! `macro_rules!` so that `export_strategy!` / `export_validator!` can hand it to
//! `wit_bindgen::generate!` as an inline string from inside the plugin author's crate.
//! A proc macro only sees tokens, so `include_str!` cannot be used there; this file is how the
//! WIT text becomes a literal without keeping a second copy in the source tree.
//!
//! It also writes the SDK's own bindings of the `types` interface (`wit_types.rs`): the records
//! that cross the boundary, generated once here so that the SDK converts them to its plain Rust
//! types in ordinary, tested code, and the plugin's bindings reuse them (`with`) instead of
//! generating a second set that would have to be copied field by field. They come from a world
//! the SDK adds to the text (`sdk-types`, importing `types` and nothing else), so the component
//! metadata they carry adds no import or export to a plugin.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let wit_path = manifest_dir.join("../wit/molt-plugin.wit");
    println!("cargo:rerun-if-changed={}", wit_path.display());
    let wit = std::fs::read_to_string(&wit_path)
        .unwrap_or_else(|e| panic!("cannot read the WIT package {}: {e}", wit_path.display()));
    assert!(
        !wit.contains("\"####"),
        "the WIT text must not contain \"####"
    );
    // `package molt:plugin@X.Y.Z;`: the plugin's bindings reuse the SDK's `types` of this version.
    let package = wit
        .lines()
        .find_map(|line| line.trim().strip_prefix("package "))
        .and_then(|rest| rest.strip_suffix(';'))
        .unwrap_or_else(|| panic!("{} has no `package …;` line", wit_path.display()));
    let generated = format!(
        r#####"/// Generates the guest bindings of one world of `molt:plugin` in the invoking module.
#[doc(hidden)]
#[macro_export]
macro_rules! __molt_generate_bindings {{
    ($world:tt) => {{
        $crate::wit_bindgen::generate!({{
            inline: r####"{wit}"####,
            world: $world,
            runtime_path: "::molt_plugin_sdk::wit_bindgen::rt",
            with: {{
                "{types_interface}": ::molt_plugin_sdk::__private::wit_types,
            }},
        }});
    }};
}}

/// The WIT package this SDK was built against.
pub const WIT: &str = r####"{wit}"####;
"#####,
        types_interface = package.replacen('@', "/types@", 1),
    );
    let types = format!(
        r#####"wit_bindgen::generate!({{
    inline: r####"{wit}
/// The SDK's own bindings of `types` (see plugin-sdk/build.rs).
world sdk-types {{
    import types;
}}
"####,
    world: "sdk-types",
}});
"#####
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (name, text) in [("wit_macro.rs", generated), ("wit_types.rs", types)] {
        let out = out_dir.join(name);
        std::fs::write(&out, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    }
}
