//! Reading a repository that is a directory on this machine (`file://` or a plain path).
//!
//! A local package goes through the same part file, cap and hash checks as a downloaded one: a
//! repository on a shared mount is no more trusted than a web server.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::FetchError;
use super::part::{PartWriter, Target};

/// Reads `path` whole, refusing it past `cap` bytes.
pub fn read_small(path: &Path, cap: u64) -> Result<Vec<u8>, FetchError> {
    let read_error = |source| FetchError::ReadLocal {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > cap {
        return Err(FetchError::TooLarge {
            url: path.display().to_string(),
            limit: cap,
        });
    }
    Ok(bytes)
}

/// Copies the package at `path` into the target's part file and verifies it.
pub fn download(
    path: &Path,
    target: &Target,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PathBuf, FetchError> {
    let read_error = |source| FetchError::ReadLocal {
        path: path.to_owned(),
        source,
    };
    let mut source = File::open(path)
        .map_err(read_error)?
        .take(target.size.saturating_add(1));
    let mut part = PartWriter::resume(target)?.restart()?;
    progress(0, target.size);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                target.discard();
                return Err(read_error(e));
            }
        };
        part.append(&buf[..n])?;
        progress(part.len(), target.size);
    }
    part.finish()
}
