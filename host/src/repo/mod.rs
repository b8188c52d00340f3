//! The signed repository: its manifest model, signatures, trust checks and the publisher.

pub(crate) mod delta;
pub mod diff;
pub mod manifest;
pub mod publish;
pub mod signature;
pub mod trust;
