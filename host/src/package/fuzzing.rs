//! Entry points for the cargo-fuzz targets in `fuzz/`: the client's decoding of a delta package
//! against the installed bases, and the publisher's encoders that the seed generator makes real
//! deltas with. Not part of molt's API: the delta module itself stays crate-private.

use std::path::Path;

use super::delta::{self, Bases, ChunkGeometry};
use super::extract::{ExtractError, ExtractLimits};
use crate::repo::manifest::{DeltaChunk, DeltaPackage, FileDelta, Operations};
use crate::tree::TreeListing;

/// Extracts a patch's delta package into the empty directory `stage` as `molt apply` does: the
/// entries `delta` names are decoded against their bases below `install_root`.
pub fn extract_delta(
    package: &Path,
    stage: &Path,
    limits: &ExtractLimits,
    operations: &Operations,
    install_root: &Path,
    delta: &DeltaPackage,
) -> Result<TreeListing, ExtractError> {
    super::extract::extract_delta(
        package,
        stage,
        limits,
        operations,
        Bases::new(install_root, delta),
    )
}

/// Limits for a patch that unpacks to exactly `unpacked_size` bytes, the package file unchecked.
pub fn limits(unpacked_size: u64) -> ExtractLimits {
    ExtractLimits::for_unpacked_size(unpacked_size)
}

/// `target` as one delta frame against the whole of `base`, as the publisher writes it for a
/// small file. `None` when the two exceed the largest delta window.
pub fn encode_whole(base: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    let log = delta::window_log_for(base.len() as u64, target.len() as u64)?;
    Some(delta::encode(base, target, log, Vec::new()).expect("encoding into memory"))
}

/// `target` in frames of `chunk` bytes, each against `slice` bytes of `base` chosen by content,
/// as the publisher writes a large file (its own geometry is 4 MiB / 12 MiB).
pub fn encode_chunked(
    base: &[u8],
    target: &[u8],
    chunk: usize,
    slice: usize,
) -> (Vec<u8>, Vec<DeltaChunk>) {
    delta::encode_chunked(base, target, ChunkGeometry { chunk, slice }, Vec::new())
        .expect("encoding into memory")
}

/// The window the delta `file` of a `base_len`-byte base needs, as the publisher declares it.
pub fn window_log(base_len: u64, file: &FileDelta) -> Option<u32> {
    delta::window_log_of(base_len, file)
}
