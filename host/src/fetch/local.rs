//! Reading a repository that is a directory on this machine (`file://` or a plain path).
//!
//! A local package goes through the same part file, cap and hash checks as a downloaded one: a
//! repository on a shared mount is no more trusted than a web server. Only regular files are
//! read (a FIFO or a device is refused at once, `fsutil::open_regular`), and the same deadline
//! and minimum rate as for HTTP apply (a slow network or FUSE mount).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::FetchError;
use super::pace::{Attempt, Pace};
use super::part::{PartWriter, Target};
use super::retry::FetchOptions;
use crate::fsutil::open_regular;

/// Reads `path` whole, refusing it past `cap` bytes.
pub(crate) fn read_small(
    path: &Path,
    cap: u64,
    options: &FetchOptions,
) -> Result<Vec<u8>, FetchError> {
    let read_error = |source| FetchError::ReadLocal {
        path: path.to_owned(),
        source,
    };
    let (pace, attempt) = (Pace::start(options), Attempt::start());
    let shown = path.display().to_string();
    let mut file = open_regular(path)
        .map_err(read_error)?
        .take(cap.saturating_add(1));
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        pace.budget(&shown, &attempt, bytes.len() as u64)?;
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        }
    }
    if bytes.len() as u64 > cap {
        return Err(FetchError::TooLarge {
            url: shown,
            limit: cap,
        });
    }
    Ok(bytes)
}

/// Copies the package at `path` into the target's part file and verifies it.
pub(super) fn download(
    path: &Path,
    target: &Target,
    options: &FetchOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PathBuf, FetchError> {
    let read_error = |source| FetchError::ReadLocal {
        path: path.to_owned(),
        source,
    };
    let (pace, attempt) = (Pace::start(options), Attempt::start());
    let shown = path.display().to_string();
    let mut source = open_regular(path)
        .map_err(read_error)?
        .take(target.size.saturating_add(1));
    let mut part = PartWriter::fresh(target)?;
    progress(0, target.size);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = pace.budget(&shown, &attempt, part.len()) {
            target.discard();
            return Err(e);
        }
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::super::{FetchError, MANIFEST_CAP, Source};
    use crate::error::ExitClass;
    use crate::hashing::Sha256Digest;
    use crate::repo::manifest::{Package, PackageUrl};

    fn repo_with(path: &str, bytes: &[u8]) -> tempfile::TempDir {
        let repo = tempfile::tempdir().unwrap();
        let file = repo.path().join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, bytes).unwrap();
        repo
    }

    fn package(url: &str, bytes: &[u8]) -> Package {
        Package {
            url: PackageUrl::new(url).unwrap(),
            size: bytes.len() as u64,
            sha256: Sha256Digest::of(bytes),
            unpacked_size: 0,
        }
    }

    fn file_url(dir: &Path) -> String {
        format!("file://{}", dir.display())
    }

    #[test]
    fn file_urls_and_plain_paths_read_the_same_repository() {
        let bytes = vec![42u8; 70_000];
        let repo = repo_with("packages/a.tar.gz", &bytes);
        fs::write(repo.path().join("manifest.json"), b"{}").unwrap();
        let parent = repo.path().parent().unwrap();
        let name = repo.path().file_name().unwrap().to_str().unwrap();
        for spec in [
            file_url(repo.path()),
            repo.path().display().to_string(),
            name.to_owned(),
        ] {
            let source = Source::parse(&spec, parent).unwrap();
            assert_eq!(
                source.fetch_small("manifest.json", MANIFEST_CAP).unwrap(),
                b"{}"
            );
            let downloads = tempfile::tempdir().unwrap();
            let mut last = (0, 0);
            let path = source
                .fetch_package(
                    &package("packages/a.tar.gz", &bytes),
                    downloads.path(),
                    &mut |d, t| last = (d, t),
                )
                .unwrap();
            assert_eq!(fs::read(&path).unwrap(), bytes);
            assert_eq!(last, (70_000, 70_000));
            assert_eq!(fs::read_dir(downloads.path()).unwrap().count(), 1);
        }
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let repo = tempfile::tempdir().unwrap();
        let source = Source::parse(&repo.path().display().to_string(), Path::new("/")).unwrap();
        let err = source.fetch_small("manifest.json", 10).unwrap_err();
        let missing = repo.path().join("manifest.json");
        assert!(
            matches!(&err, FetchError::ReadLocal { path, .. } if *path == missing),
            "{err}"
        );
        assert!(err.to_string().contains(&missing.display().to_string()));
        let downloads = tempfile::tempdir().unwrap();
        let err = source
            .fetch_package(
                &package("p/x.tar.gz", b"x"),
                downloads.path(),
                &mut |_, _| {},
            )
            .unwrap_err();
        assert!(err.to_string().contains("p/x.tar.gz"), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Failure);
    }

    #[test]
    fn a_local_file_larger_than_signed_is_cut() {
        let repo = repo_with("p.tar.gz", &[7u8; 5_000]);
        let source = Source::parse(&file_url(repo.path()), Path::new("/")).unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let signed = package("p.tar.gz", &[7u8; 4_999]);
        let err = source
            .fetch_package(&signed, downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 4_999, .. }),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Security);
        assert_eq!(fs::read_dir(downloads.path()).unwrap().count(), 0);
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_at_once() {
        let source = Source::parse("/dev", Path::new("/")).unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let signed = Package {
            url: PackageUrl::new("zero").unwrap(),
            size: 1_000_000,
            sha256: Sha256Digest::parse(&"00".repeat(32)).unwrap(),
            unpacked_size: 0,
        };
        let err = source
            .fetch_package(&signed, downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert!(
            matches!(&err, FetchError::ReadLocal { source, .. } if source.to_string().contains("character device")),
            "{err}"
        );
        assert!(err.to_string().contains("/dev/zero"), "{err}");
        assert_eq!(fs::read_dir(downloads.path()).unwrap().count(), 0);

        // A FIFO nobody writes to would block a plain open forever.
        let repo = tempfile::tempdir().unwrap();
        let fifo = repo.path().join("manifest.json");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        fs::create_dir(repo.path().join("manifest.json.sig")).unwrap();
        let source = Source::parse(&file_url(repo.path()), Path::new("/")).unwrap();
        for (rel, what) in [
            ("manifest.json", "FIFO"),
            ("manifest.json.sig", "directory"),
        ] {
            let err = source.fetch_small(rel, MANIFEST_CAP).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
            assert_eq!(err.exit_class(), ExitClass::Failure);
        }
    }

    #[test]
    fn a_short_or_wrong_local_file_is_refused() {
        let repo = repo_with("p.tar.gz", b"hello");
        let source = Source::parse(&file_url(repo.path()), Path::new("/")).unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let err = source
            .fetch_package(
                &package("p.tar.gz", b"hello!"),
                downloads.path(),
                &mut |_, _| {},
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::SizeMismatch {
                    expected: 6,
                    actual: 5,
                    ..
                }
            ),
            "{err}"
        );
        let mut wrong = package("p.tar.gz", b"hello");
        wrong.sha256 = Sha256Digest::of(b"jello");
        let err = source
            .fetch_package(&wrong, downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Security);
        assert_eq!(fs::read_dir(downloads.path()).unwrap().count(), 0);
    }
}
