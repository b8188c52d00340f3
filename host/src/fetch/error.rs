//! `FetchError`: every way reading a repository can fail, each naming the URL or path involved.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ExitClass;
use crate::hashing::Sha256Digest;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "invalid repository location {spec:?}: {reason}; use file:///dir, a plain path or http(s)://host/prefix/"
    )]
    InvalidSource { spec: String, reason: String },

    #[error("could not start the HTTP runtime: {source}")]
    StartRuntime {
        #[source]
        source: std::io::Error,
    },

    #[error("could not start the HTTP client: {}", error_chain(.source))]
    StartHttpClient {
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "refusing repository path {url:?}: {reason}; the manifest must name files below the repository root"
    )]
    UnsafePackageUrl { url: String, reason: String },

    #[error("could not connect to {url}: {}; check the network and the [source] url", error_chain(.source))]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("request to {url} failed: {}", error_chain(.source))]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("no data from {url} for {timeout:?}; the server or the network stalled")]
    Timeout { url: String, timeout: Duration },

    #[error(
        "{url} is too slow: {bytes} bytes in {elapsed:.1?}, below the minimum average of {min_rate} bytes/s (`min_rate_bytes_per_sec` in [source])"
    )]
    TooSlow {
        url: String,
        bytes: u64,
        elapsed: Duration,
        min_rate: u64,
    },

    #[error(
        "fetching {url} took longer than {limit:?} and was stopped (`timeout_secs` in [source]); an interrupted download resumes on the next run"
    )]
    Deadline { url: String, limit: Duration },

    #[error("reading the body of {url} failed: {}", error_chain(.source))]
    ReadBody {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "{url} resumed at the wrong place: asked for byte {offset}, got Content-Range {content_range:?}"
    )]
    UnexpectedRange {
        url: String,
        offset: u64,
        content_range: String,
    },

    #[error("not found: {url}")]
    NotFound { url: String },

    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },

    #[error("{url} is larger than its limit of {limit} bytes; refusing the rest of the stream")]
    TooLarge { url: String, limit: u64 },

    #[error("{url} has {actual} bytes, but the signed manifest says {expected}")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },

    #[error("{url} has sha256 {actual}, but the signed manifest says {expected}")]
    HashMismatch {
        url: String,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },

    #[error("cannot read {}: {source}", path.display())]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write the download {}: {source}; check the state directory's disk space and permissions", path.display())]
    WriteDownload {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    /// The file is not there (HTTP 404/410, or no such local file).
    pub(crate) fn is_not_found(&self) -> bool {
        match self {
            Self::NotFound { .. } => true,
            Self::ReadLocal { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    pub fn exit_class(&self) -> ExitClass {
        match self {
            Self::InvalidSource { .. } => ExitClass::Usage,
            Self::UnsafePackageUrl { .. }
            | Self::TooLarge { .. }
            | Self::SizeMismatch { .. }
            | Self::HashMismatch { .. } => ExitClass::Security,
            Self::StartRuntime { .. }
            | Self::StartHttpClient { .. }
            | Self::Connect { .. }
            | Self::Request { .. }
            | Self::Timeout { .. }
            | Self::TooSlow { .. }
            | Self::Deadline { .. }
            | Self::ReadBody { .. }
            | Self::UnexpectedRange { .. }
            | Self::NotFound { .. }
            | Self::HttpStatus { .. }
            | Self::ReadLocal { .. }
            | Self::WriteDownload { .. } => ExitClass::Failure,
        }
    }
}

/// An error and its causes on one line: reqwest's own message alone rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
