//! molt: keeps an application's install directory at the release its deployment wants.
//!
//! The library holds the whole pipeline; `main.rs` only parses the command line. See
//! `docs/ARCHITECTURE.md` for the map of modules and the flow of an update.

mod bulk;
pub mod cli;
mod command_error;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod fetch;
pub(crate) mod fsutil;
pub mod hashing;
pub(crate) mod install;
pub mod keys;
pub mod output;
pub mod package;
pub mod plugins;
pub mod relpath;
pub mod repo;
pub mod state;
pub mod strategy;
pub mod symlink;
#[cfg(test)]
mod test_support;
pub mod tree;
pub mod txn;
pub(crate) mod update;
pub mod version;

pub use command_error::Error;
pub use error::ExitClass;
