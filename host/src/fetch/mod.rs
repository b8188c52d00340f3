//! How molt reads a repository: `file://` URLs, plain paths and `http(s)://` prefixes.
//!
//! Everything read here is untrusted until the caller verifies it, so this module enforces the
//! limits that make verification safe to attempt: small files (manifest, signature) are refused
//! past a fixed cap while streaming; a package is streamed into `downloads/<sha256>.part`, hashed
//! as it is written, cut at its signed size, and only renamed to `<sha256>.pkg` once size and
//! SHA-256 match. Interrupted HTTP downloads resume with `Range`/`If-Range`; transient failures are
//! retried with jittered backoff. Package URLs are paths below the repository root, never absolute.
//!
//! The rest of molt is synchronous: an HTTP source owns a current-thread tokio runtime and blocks
//! on it, so these calls must not be made from inside another tokio runtime.

mod error;
mod http;
mod local;
mod pace;
mod part;
mod retry;
#[cfg(test)]
mod test_server;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reqwest::Url;

pub use error::FetchError;
pub(crate) use retry::{DEFAULT_DEADLINE, DEFAULT_MIN_RATE, FetchOptions};

use crate::relpath::RelPath;
use crate::repo::manifest::{self, Package};
use http::HttpClient;
use part::Target;

/// Cap for `manifest.json`.
pub const MANIFEST_CAP: u64 = 16 * 1024 * 1024;
/// Cap for `manifest.json.sig`.
pub const SIGNATURE_CAP: u64 = 1024 * 1024;

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine.
    Local(PathBuf),
    /// A URL prefix; its path always ends with `/`.
    Http(Url),
}

/// A repository to read from: its location plus, for HTTP, a client created on first use.
pub struct Source {
    location: Location,
    options: FetchOptions,
    http: OnceLock<HttpClient>,
}

impl Source {
    /// Parses `file:///srv/repo`, `/srv/repo`, `repo` (relative to `base_dir`, the config file's
    /// directory) or `http(s)://host/prefix` (a trailing `/` is implied).
    pub fn parse(spec: &str, base_dir: &Path) -> Result<Self, FetchError> {
        Ok(Self::new(parse_location(spec, base_dir)?))
    }

    pub fn new(location: Location) -> Self {
        Self {
            location,
            options: FetchOptions::default(),
            http: OnceLock::new(),
        }
    }

    /// Replaces the timeouts and retry budget (tests shrink them).
    pub(crate) fn with_options(self, options: FetchOptions) -> Self {
        Self {
            options,
            http: OnceLock::new(),
            ..self
        }
    }

    #[cfg(test)]
    pub(crate) fn location(&self) -> &Location {
        &self.location
    }

    /// The full URL or path of `rel`, for messages.
    pub fn display_url(&self, rel: &str) -> String {
        match &self.location {
            Location::Local(root) => root.join(rel).display().to_string(),
            Location::Http(base) => match repo_path(rel).and_then(|p| http_url(base, &p)) {
                Ok(url) => redacted(&url),
                Err(_) => format!("{}{rel}", redacted(base)),
            },
        }
    }

    /// Reads a small file (`manifest.json`, `manifest.json.sig`) whole, refusing it once more than
    /// `cap` bytes have arrived.
    pub fn fetch_small(&self, rel: &str, cap: u64) -> Result<Vec<u8>, FetchError> {
        let path = repo_path(rel)?;
        match &self.location {
            Location::Local(root) => local::read_small(&path.under(root), cap, &self.options),
            Location::Http(base) => self.http()?.fetch_small(&http_url(base, &path)?, cap),
        }
    }

    /// The fetch stage of an update: [`Source::fetch_package`], with what was verified.
    pub(crate) fn fetch_verified(
        &self,
        package: &Package,
        downloads: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<VerifiedPackage, FetchError> {
        let path = self.fetch_package(package, downloads, progress)?;
        Ok(VerifiedPackage {
            path,
            package: package.clone(),
        })
    }

    /// Downloads `package` into `downloads/<sha256>.pkg` and returns that path, verified against
    /// the signed size and SHA-256. `progress` receives (bytes done, bytes total).
    pub(crate) fn fetch_package(
        &self,
        package: &Package,
        downloads: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PathBuf, FetchError> {
        let path = package.url.path();
        let target = Target::new(
            self.display_url(path.as_str()),
            package.size,
            &package.sha256,
            downloads,
        );
        if let Some(verified) = target.reuse_verified()? {
            progress(package.size, package.size);
            return Ok(verified);
        }
        match &self.location {
            Location::Local(root) => {
                local::download(&path.under(root), &target, &self.options, progress)
            }
            Location::Http(base) => {
                self.http()?
                    .download(&http_url(base, path)?, &target, progress)
            }
        }
    }

    fn http(&self) -> Result<&HttpClient, FetchError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = HttpClient::new(&self.options)?;
        Ok(self.http.get_or_init(|| client))
    }
}

/// A package in `downloads/` whose size and SHA-256 are the ones the manifest signed.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedPackage {
    pub path: PathBuf,
    /// The package as the signed manifest lists it.
    pub package: Package,
}

impl Clone for Source {
    fn clone(&self) -> Self {
        Self::new(self.location.clone()).with_options(self.options.clone())
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("location", &self.location)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn parse_location(spec: &str, base_dir: &Path) -> Result<Location, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidSource {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    if spec.trim().is_empty() {
        return Err(invalid("it is empty"));
    }
    let Some((scheme, _)) = spec.split_once("://") else {
        return Ok(Location::Local(base_dir.join(spec)));
    };
    let url = Url::parse(spec).map_err(|e| invalid(&e.to_string()))?;
    match scheme.to_ascii_lowercase().as_str() {
        "file" => url
            .to_file_path()
            .map(Location::Local)
            .map_err(|()| invalid("a file:// URL needs an absolute path and no host")),
        "http" | "https" => {
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid("a repository URL takes no query or fragment"));
            }
            let mut url = url;
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            Ok(Location::Http(url))
        }
        _ => Err(invalid("unsupported scheme")),
    }
}

/// A path in the repository, by the manifest's rule ([`crate::repo::manifest::repo_path`]).
fn repo_path(url: &str) -> Result<RelPath, FetchError> {
    manifest::repo_path(url).map_err(|reason| FetchError::UnsafePackageUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    })
}

/// `base` joined with `path`, each component percent-encoded so none can act as a separator.
fn http_url(base: &Url, path: &RelPath) -> Result<Url, FetchError> {
    let refuse = |reason: &str| FetchError::UnsafePackageUrl {
        url: path.to_string(),
        reason: reason.to_owned(),
    };
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| refuse("the repository URL cannot take a path"))?
        .pop_if_empty()
        .extend(path.as_str().split('/'));
    if !url.as_str().starts_with(base.as_str()) {
        return Err(refuse("it does not stay below the repository URL"));
    }
    Ok(url)
}

/// The URL for messages, with any password replaced.
fn redacted(url: &Url) -> String {
    if url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    match shown.set_password(Some("***")) {
        Ok(()) => shown.to_string(),
        Err(()) => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitClass;
    use crate::repo::manifest::PackageUrl;

    fn location(spec: &str) -> Result<Location, FetchError> {
        Source::parse(spec, Path::new("/etc/molt")).map(|s| s.location().clone())
    }

    #[test]
    fn parses_each_kind_of_location() {
        assert_eq!(
            location("file:///srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            location("/srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            location("repo").unwrap(),
            Location::Local("/etc/molt/repo".into())
        );
        for (spec, want) in [
            ("http://127.0.0.1:8080/demo", "http://127.0.0.1:8080/demo/"),
            ("http://127.0.0.1:8080/demo/", "http://127.0.0.1:8080/demo/"),
            (
                "https://updates.example.com",
                "https://updates.example.com/",
            ),
        ] {
            assert_eq!(
                location(spec).unwrap(),
                Location::Http(Url::parse(want).unwrap())
            );
        }
    }

    #[test]
    fn refuses_unusable_locations() {
        for bad in [
            "",
            "ftp://host/repo",
            "file://host/repo",
            "http://h/r?x=1",
            "http://",
        ] {
            let err = location(bad).unwrap_err();
            assert!(
                matches!(err, FetchError::InvalidSource { .. }),
                "{bad:?}: {err}"
            );
            assert_eq!(err.exit_class(), ExitClass::Usage);
        }
    }

    #[test]
    fn display_url_names_the_full_location() {
        let http = Source::parse("http://u:secret@h:1/demo", Path::new("/")).unwrap();
        assert_eq!(
            http.display_url("packages/a b.tar.gz"),
            "http://u:***@h:1/demo/packages/a%20b.tar.gz"
        );
        let local = Source::parse("/srv/repo", Path::new("/")).unwrap();
        assert_eq!(
            local.display_url("manifest.json"),
            "/srv/repo/manifest.json"
        );
    }

    #[test]
    fn unsafe_package_urls_are_refused_before_any_io() {
        let downloads = tempfile::tempdir().unwrap();
        let sources = [
            Source::parse("http://127.0.0.1:9/repo/", Path::new("/")).unwrap(),
            Source::parse(&downloads.path().display().to_string(), Path::new("/")).unwrap(),
        ];
        for bad in [
            "../secret.tar.gz",
            "packages/../../x",
            "/etc/passwd",
            "http://evil.example/x.tar.gz",
            "//evil.example/x",
            "file:///etc/passwd",
            "c:x",
            "packages\\..\\x",
            "%2e%2e/x",
            "p/x?y",
            "",
        ] {
            // A manifest cannot hold such a package URL; the fetcher refuses the path too.
            assert!(PackageUrl::new(bad).is_err(), "{bad:?}");
            for source in &sources {
                let err = source.fetch_small(bad, 10).unwrap_err();
                assert!(
                    matches!(err, FetchError::UnsafePackageUrl { .. }),
                    "{bad:?}: {err}"
                );
                assert_eq!(err.exit_class(), ExitClass::Security);
            }
        }
        assert_eq!(std::fs::read_dir(downloads.path()).unwrap().count(), 0);
    }

    #[test]
    fn urls_are_built_segment_by_segment_below_the_base() {
        let base = Url::parse("http://h/repo/").unwrap();
        let url = http_url(&base, &RelPath::new("packages/a.tar.gz").unwrap()).unwrap();
        assert_eq!(url.as_str(), "http://h/repo/packages/a.tar.gz");
    }
}
