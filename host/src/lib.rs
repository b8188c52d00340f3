//! molt: keeps an application's install directory at the release its deployment wants.
//!
//! The library holds the whole pipeline; `main.rs` only parses the command line. See
//! `docs/ARCHITECTURE.md` for the map of modules and the flow of an update.

pub mod error;
pub mod failpoint;
pub mod hashing;
pub mod relpath;
pub mod repo;
pub mod state;
pub mod tree;
pub mod txn;
pub mod version;
