//! Builds molt's own plugins (the `plugins/` workspace) for `wasm32-wasip2`, the way wasmtime's
//! `crates/test-programs/artifacts/build.rs` builds its guests:
//!
//! * a separate `cargo build --release --target wasm32-wasip2` into `<target>/wasm-plugins`,
//!   with the host build's flags removed from the child's environment (they are for the host,
//!   not for wasm);
//! * `rustup target add wasm32-wasip2` first when the target's standard library is missing;
//! * `default.wasm` and `require_files.wasm` are copied into `OUT_DIR` for `include_bytes!`
//!   (the builtins embedded in the binary);
//! * `MOLT_TEST_PLUGIN_DIR` points the unit tests at every built plugin;
//! * `MOLT_PLUGIN_TOOLCHAIN` (e.g. `stable`) builds the plugins with that rustup toolchain instead
//!   of the host's: the fuzz targets build molt with nightly, which may lack the wasm32-wasip2
//!   standard library where rustup cannot download it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const EMBEDDED: &[&str] = &["default.wasm", "require_files.wasm"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let plugins = root.join("plugins");

    watch_sources(&root, &plugins);
    println!("cargo:rerun-if-env-changed=MOLT_PLUGIN_TOOLCHAIN");
    let toolchain = env::var("MOLT_PLUGIN_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty());
    ensure_wasm_target(toolchain.as_deref());

    let wasm_target_dir = main_target_dir(&out_dir).join("wasm-plugins");
    build_plugins(&plugins, &wasm_target_dir, toolchain.as_deref());

    let artifacts = wasm_target_dir.join(TARGET).join("release");
    for name in EMBEDDED {
        let from = artifacts.join(name);
        let to = out_dir.join(name);
        if let Err(e) = std::fs::copy(&from, &to) {
            fail(&format!(
                "cannot copy {} to {}: {e}",
                from.display(),
                to.display()
            ));
        }
    }
    println!(
        "cargo:rustc-env=MOLT_TEST_PLUGIN_DIR={}",
        artifacts.display()
    );
}

/// Re-run when the WIT, the SDK or a plugin's sources change (never on target directories).
fn watch_sources(root: &Path, plugins: &Path) {
    for path in [
        root.join("wit"),
        root.join("plugin-sdk/src"),
        root.join("plugin-sdk/Cargo.toml"),
        root.join("plugin-sdk/build.rs"),
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let entries = std::fs::read_dir(plugins)
        .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", plugins.display())));
    for entry in entries.flatten() {
        let crate_dir = entry.path();
        if crate_dir.join("Cargo.toml").is_file() {
            println!(
                "cargo:rerun-if-changed={}",
                crate_dir.join("Cargo.toml").display()
            );
            println!("cargo:rerun-if-changed={}", crate_dir.join("src").display());
        }
    }
}

/// Installs the wasm32-wasip2 standard library with rustup when this toolchain lacks it.
/// A command for `tool` (`cargo`, `rustc`): the given rustup toolchain's, else `default`.
fn tool(toolchain: Option<&str>, tool: &str, default: String) -> Command {
    match toolchain {
        Some(t) => {
            let mut c = Command::new("rustup");
            c.args(["run", t, tool]);
            for var in ["RUSTUP_TOOLCHAIN", "CARGO", "RUSTC", "RUSTDOC"] {
                c.env_remove(var);
            }
            c
        }
        None => Command::new(default),
    }
}

fn ensure_wasm_target(toolchain: Option<&str>) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = tool(toolchain, "rustc", rustc.clone())
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {rustc}: {e}")));
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() && Path::new(&libdir).is_dir() {
        return;
    }
    println!(
        "cargo:warning=installing the {TARGET} target with rustup (needed to build molt's plugins)"
    );
    let mut add = Command::new("rustup");
    add.args(["target", "add", TARGET]);
    if let Some(t) = toolchain {
        add.args(["--toolchain", t]);
    }
    let status = add
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run rustup to install {TARGET}: {e}; install it with `rustup target add {TARGET}`")));
    if !status.success() {
        fail(&format!(
            "`rustup target add {TARGET}` failed ({status}); install the target by hand"
        ));
    }
}

/// The target directory of the host build: `CARGO_TARGET_DIR` if it is absolute, else the first
/// ancestor of `OUT_DIR` that cargo tagged with `CACHEDIR.TAG`, else the parent of the profile
/// directory. A relative `CARGO_TARGET_DIR` is relative to where cargo was started, which a
/// build script (run in `host/`) cannot know; `OUT_DIR` is always absolute.
fn main_target_dir(out_dir: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && dir.is_absolute()
    {
        return dir;
    }
    if let Some(tagged) = out_dir
        .ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file())
    {
        return tagged.to_path_buf();
    }
    out_dir
        .ancestors()
        .find(|a| a.join("debug").is_dir() || a.join("release").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            fail(&format!(
                "cannot find the target directory above {}",
                out_dir.display()
            ))
        })
}

fn build_plugins(plugins: &Path, target_dir: &Path, toolchain: Option<&str>) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = tool(toolchain, "cargo", cargo.clone());
    command
        .current_dir(plugins)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {cargo} to build the plugins: {e}")));
    if !status.success() {
        fail(&format!(
            "building molt's plugins failed ({status}); reproduce with `cd {} && cargo build --release --target {TARGET}`",
            plugins.display()
        ));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}");
}
