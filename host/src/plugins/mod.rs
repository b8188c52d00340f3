//! WebAssembly plugins: the upgrade strategy and the post-apply validators named in
//! `molt.toml`, run sandboxed with wasmtime.
//!
//! * [`PluginRuntime`] owns the process-wide engine, the on-disk cache of compiled components and
//!   the [`PluginLimits`] (time, memory, captured output) applied to every call.
//! * [`PluginRef`] is what the config names: `builtin:default`, `builtin:require-files`, or a
//!   path to a `.wasm` component.
//! * [`StrategyPlugin::decide`] and [`ValidatorPlugin::validate`] run one call each in a fresh
//!   store. Strategies see no files; validators see the new install tree read-only at
//!   `/install`. Nothing a plugin returns is trusted: the pipeline checks every [`Decision`]
//!   against the signed manifest.
//! * [`PluginRuntime::inspect`] describes a component for `molt plugin inspect`.
//!
//! Everything here is synchronous. Each call runs on a short-lived thread of its own (so a guest
//! that blocks inside a host call still times out), so callers need no runtime; do not call it
//! from inside a tokio worker all the same (use `spawn_blocking`): it blocks the caller for up
//! to the time limit.

mod bindings;
mod builtin;
mod cache;
mod engine;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod inspect;
mod limits;
mod sandbox;
mod strategy;
mod validator;

pub use builtin::{Builtin, PluginRef};
pub use engine::{LoadStats, PluginRuntime};
pub use error::PluginError;
pub use inspect::{InspectReport, PluginKind};
pub use limits::PluginLimits;
pub use strategy::{Decision, PatchOffer, ReleaseOffer, StrategyInput, StrategyPlugin};
pub use validator::{ValidationInput, ValidatorPlugin};

/// The WIT package version this molt speaks.
pub const WIT_PACKAGE: &str = "molt:plugin";
pub const WIT_VERSION: &str = "0.1.0";

#[cfg(test)]
mod tests;
