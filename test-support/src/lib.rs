//! Test scaffolding shared by molt's test suites, so each helper exists once: the unit tests in
//! `host/src` and the SDK, and the end-to-end tests in `tests/` all take it as a
//! dev-dependency (like rustup's `test` support, but a crate of its own: `tests/` links the
//! `molt` library without `cfg(test)`, so a `#[cfg(test)]` module could not serve both).
//!
//! * [`http`]: a real HTTP server on 127.0.0.1 (Range, strong ETag, scripted faults).
//! * [`tree`]: snapshots of a directory tree to compare before and after.
//! * [`releases`]: the reference release set strategy tests decide over.
//!
//! It knows nothing of molt's types (a crate molt depends on for tests cannot hand the unit
//! tests values of the crate under test); helpers that build molt values (`rp`, `v`) live in
//! `host/src/test_support.rs`.

#[cfg(feature = "http")]
pub mod http;
pub mod releases;
pub mod tree;

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
