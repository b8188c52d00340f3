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
//! * [`StrategyPlugin::check_config`] / [`ValidatorPlugin::check_config`] ask a plugin whether
//!   it accepts its config table (the optional `config-check` export), before anything runs.
//!
//! The API is synchronous: each call runs on wasmtime's async API on a short-lived thread with
//! a current-thread tokio runtime of its own, and returns only once the call's store — with
//! everything the guest held — is gone (see `sandbox`). It blocks the caller for up to the time
//! limit.

mod bindings;
mod builtin;
mod cache;
mod compat;
mod engine;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod inspect;
mod limits;
mod plugin;
mod sandbox;
mod strategy;
mod validator;

pub use bindings::PluginKind;
pub use builtin::{Builtin, PluginRef};
pub use engine::{LoadStats, PluginRuntime};
pub use error::PluginError;
pub use inspect::InspectReport;
pub use limits::PluginLimits;
pub use strategy::{Decision, PatchOffer, ReleaseOffer, StrategyContext, StrategyPlugin};
pub(crate) use validator::ValidationContext;
pub use validator::ValidatorPlugin;

#[cfg(test)]
mod tests;
