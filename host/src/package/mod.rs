//! The package format: zstd- or gzip-compressed tar archives holding regular files, directories
//! and symbolic links at their install-relative paths.
//!
//! `archive` writes packages deterministically (the publisher); `extract` reads them into a
//! stage directory, refusing anything an updater running as root must never unpack (apply);
//! `delta` encodes and decodes the binary deltas of a patch's delta package; `fuzzing` opens
//! the delta decoder to the fuzz targets.

pub mod archive;
pub(crate) mod delta;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
