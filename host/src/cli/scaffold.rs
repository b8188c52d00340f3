//! `molt plugin new NAME --kind strategy|validator [--dir DIR]`: writes a standalone plugin crate
//! that builds as printed — its own `[workspace]` (so no surrounding workspace claims it), the
//! release profile that halves the component, the SDK dependency by path, a passing unit test
//! and a README.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::Error;
use crate::config::ConfigError;
use crate::output::Output;

/// The kinds of plugin a crate can be started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Strategy,
    Validator,
}

/// The build command the crate is made for (printed, and in its README).
pub(crate) const BUILD: &str = "cargo build --release --target wasm32-wasip2";

/// This molt's `plugin-sdk/` (the crate a plugin depends on), as seen from where it was built.
fn bundled_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk")
}

fn usage(key: &str, reason: String) -> Error {
    Error::Config(ConfigError::Invalid {
        path: PathBuf::from("molt plugin new"),
        key: key.to_owned(),
        reason,
    })
}

fn write_error(path: &Path, e: std::io::Error) -> Error {
    usage("--dir", format!("cannot write {}: {e}", path.display()))
}

pub(super) fn run(
    name: &str,
    kind: Kind,
    dir: Option<&Path>,
    sdk: Option<&Path>,
    out: &Output,
) -> Result<(), Error> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(usage(
            "NAME",
            format!(
                "is {name:?}; use lowercase letters, digits, `-` and `_`, starting with a letter"
            ),
        ));
    }
    let sdk = std::path::absolute(sdk.map_or_else(bundled_sdk, Path::to_path_buf))
        .and_then(fs::canonicalize)
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .ok_or_else(|| {
            usage(
                "--sdk",
                format!(
                    "cannot find molt-plugin-sdk (looked in {}); pass --sdk PATH/TO/plugin-sdk",
                    sdk.map_or_else(bundled_sdk, Path::to_path_buf).display()
                ),
            )
        })?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(usage(
            "--dir",
            format!(
                "{} exists and is not empty; refusing to write into it",
                dir.display()
            ),
        ));
    }
    let crate_name = name.replace('-', "_");
    let sdk_text = sdk
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk_text)
            .replace("{{build}}", BUILD)
    };
    let (lib, kind_name, section) = match kind {
        Kind::Strategy => (STRATEGY_LIB, "strategy", "[strategy]"),
        Kind::Validator => (VALIDATOR_LIB, "validator", "[[validators]]"),
    };
    let readme = README
        .replace("{{kind}}", kind_name)
        .replace("{{section}}", section);
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(lib)),
        ("README.md", fill(&readme)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        fs::write(&path, text).map_err(|e| write_error(&path, e))?;
    }
    let wasm = format!("target/wasm32-wasip2/release/{crate_name}.wasm");
    out.success(
        &format!(
            "created {kind_name} plugin {name} in {dir}\nnext:\n  cd {dir}\n  rustup target add wasm32-wasip2   # once\n  cargo test\n  {BUILD}\n  molt plugin inspect {wasm}",
            dir = dir.display()
        ),
        json!({
            "name": name,
            "kind": kind_name,
            "dir": dir.display().to_string(),
            "sdk": sdk.display().to_string(),
            "build": BUILD,
            "wasm": wasm,
        }),
    );
    Ok(())
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A WebAssembly component is a cdylib.
crate-type = ["cdylib"]

[dependencies]
# Keep this name: the bindings the export macro generates refer to it.
molt-plugin-sdk = { path = "{{sdk}}" }

# A crate of its own, never a member of a surrounding workspace.
[workspace]

# Small components (about half the size of a default release build), no unwinding.
[profile.release]
opt-level = "s"
lto = true
strip = true
panic = "abort"
codegen-units = 1
"#;

const README: &str = r#"# {{name}}

A molt {{kind}} plugin, started with `molt plugin new`.

```sh
rustup target add wasm32-wasip2     # once
cargo test                          # the unit tests, on this machine
{{build}}
molt plugin inspect target/wasm32-wasip2/release/{{crate}}.wasm
```

Then name the component in `molt.toml`:

```toml
{{section}}
plugin = "/etc/molt/plugins/{{crate}}.wasm"
```

The plugin runs sandboxed: no network, no environment, 1 s and 64 MiB per call by default;
a validator sees the new install tree read-only at `/install`, a strategy sees no files.
molt checks the plugin's config table when it loads it (`molt check`), so a mistyped key is
reported naming the key and its line. See the `molt-plugin-sdk` crate docs
(`cargo doc --open`) for the types and `molt_plugin_sdk::policy` for molt's default rules.
"#;

/// The strategy crate's `src/lib.rs`: molt's own template plugin, which `host/build.rs` builds
/// with the other plugins, so what `molt plugin new` writes is known to build. It names itself
/// by `CARGO_PKG_NAME` and needs no filling in.
const STRATEGY_LIB: &str = include_str!("../../../plugins/template/src/lib.rs");

const VALIDATOR_LIB: &str = r#"//! {{name}}: a molt validator plugin. Checks that the new install tree has every file named in
//! `paths`, each a non-empty regular file. Build with `{{build}}`.

use molt_plugin_sdk::serde::Deserialize;
use molt_plugin_sdk::{PluginInfo, ValidationContext, Validator, export_validator, log};

/// The operator's `[validators.config]` table. `deny_unknown_fields`: a mistyped key is
/// refused, by name, when molt loads the plugin.
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "molt_plugin_sdk::serde", default, deny_unknown_fields)]
pub struct Config {
    /// Install-relative paths that must be non-empty regular files.
    paths: Vec<String>,
}

pub(crate) struct Plugin;

impl Validator for Plugin {
    type Config = Config;

    fn info() -> PluginInfo {
        PluginInfo::new(
            "{{name}}",
            env!("CARGO_PKG_VERSION"),
            "the files named in `paths` exist and are not empty",
        )
    }

    fn validate(ctx: &ValidationContext, config: Config) -> Result<(), String> {
        for relative in &config.paths {
            let meta = std::fs::metadata(ctx.path(relative))
                .map_err(|e| format!("{relative}: {e}"))?;
            if !meta.is_file() || meta.len() == 0 {
                return Err(format!("{relative} is not a non-empty regular file"));
            }
        }
        log::info(&format!("{} files checked in {}", config.paths.len(), ctx.new_version));
        Ok(())
    }
}

export_validator!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use molt_plugin_sdk::Version;

    #[test]
    fn passes_a_tree_with_the_files_and_fails_one_without() {
        let root = std::env::temp_dir().join(format!("{{crate}}-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/app"), b"app").unwrap();
        let ctx = ValidationContext {
            old_version: None,
            new_version: Version::new(1, 0, 0),
            changed: vec!["bin/app".into()],
            removed: vec![],
            root: root.clone(),
        };
        let config = |paths: &[&str]| Config {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(Plugin::validate(&ctx, config(&["bin/app"])), Ok(()));
        assert!(Plugin::validate(&ctx, config(&["bin/missing"])).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }
}
"#;
