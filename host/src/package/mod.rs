//! The package format: gzip-compressed tar archives holding regular files and directories at
//! their install-relative paths.
//!
//! `archive` writes packages deterministically (the publisher); `extract` reads them into a
//! stage directory, refusing anything an updater running as root must never unpack (apply).

pub mod archive;
pub mod extract;
