//! The signed repository: its manifest model, signatures, trust checks and the publisher.

pub mod manifest;
pub mod signature;
pub mod trust;
pub mod diff;
pub mod publish;
