//! Reading a repository over `http(s)://` with reqwest, on a private current-thread runtime.
//!
//! Each request is one attempt; transient failures (connect errors, stalls, dropped bodies, short
//! bodies, 408/429/5xx) are retried with backoff, everything else ends the fetch at once. A package
//! attempt resumes from whatever the part file already holds.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE, RANGE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use tokio::runtime::Runtime;

use super::pace::{Attempt, Pace};
use super::part::{PartWriter, Target};
use super::retry::{FetchOptions, retry_after};
use super::{FetchError, redacted};

/// How one attempt ended, if not with success.
enum AttemptError {
    /// Worth another attempt, after at least `retry_after` if the server asked for it.
    Retry {
        error: FetchError,
        retry_after: Option<Duration>,
    },
    /// Another attempt would fail the same way (or must not be made).
    Fatal(FetchError),
}

impl From<FetchError> for AttemptError {
    fn from(error: FetchError) -> Self {
        Self::Fatal(error)
    }
}

fn retry(error: FetchError) -> AttemptError {
    AttemptError::Retry {
        error,
        retry_after: None,
    }
}

pub(crate) struct HttpClient {
    runtime: Runtime,
    client: reqwest::Client,
    options: FetchOptions,
}

impl HttpClient {
    pub(super) fn new(options: &FetchOptions) -> Result<Self, FetchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| FetchError::StartRuntime { source })?;
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("molt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| FetchError::StartHttpClient { source })?;
        Ok(Self {
            runtime,
            client,
            options: options.clone(),
        })
    }

    /// GETs `url` whole, refusing it past `cap` bytes (checked while streaming).
    pub(super) fn fetch_small(&self, url: &Url, cap: u64) -> Result<Vec<u8>, FetchError> {
        let pace = Pace::start(&self.options);
        self.runtime.block_on(self.retrying(url, &pace, async || {
            self.small_attempt(url, cap, &pace).await
        }))
    }

    /// Downloads `url` into the target's part file (resuming it) and verifies it.
    pub(super) fn download(
        &self,
        url: &Url,
        target: &Target,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PathBuf, FetchError> {
        let pace = Pace::start(&self.options);
        let result = self.runtime.block_on(self.retrying(url, &pace, async || {
            self.package_attempt(url, target, &pace, &mut *progress)
                .await
        }));
        if let Err(FetchError::SizeMismatch { .. }) = &result {
            target.discard();
        }
        result
    }

    async fn retrying<T>(
        &self,
        url: &Url,
        pace: &Pace,
        mut attempt: impl AsyncFnMut() -> Result<T, AttemptError>,
    ) -> Result<T, FetchError> {
        let mut number = 1;
        loop {
            let (error, retry_after) = match attempt().await {
                Ok(value) => return Ok(value),
                Err(AttemptError::Fatal(error)) => return Err(error),
                Err(AttemptError::Retry { error, retry_after }) => (error, retry_after),
            };
            if number >= self.options.attempts {
                return Err(error);
            }
            number += 1;
            let wait = self.options.backoff(number, retry_after);
            if wait >= pace.left() {
                tracing::warn!(url = %redacted(url), error = %error, "no time left for another attempt");
                return Err(FetchError::Deadline {
                    url: redacted(url),
                    limit: self.options.deadline,
                });
            }
            tracing::warn!(
                url = %redacted(url),
                attempt = number,
                attempts = self.options.attempts,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn small_attempt(
        &self,
        url: &Url,
        cap: u64,
        pace: &Pace,
    ) -> Result<Vec<u8>, AttemptError> {
        let attempt = Attempt::start();
        let mut response = self
            .send(url, self.client.get(url.clone()), pace, &attempt)
            .await?;
        let too_large = || FetchError::TooLarge {
            url: redacted(url),
            limit: cap,
        };
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(too_large().into());
        }
        let mut body = Vec::new();
        loop {
            let chunk = self
                .paced(url, pace, &attempt, body.len() as u64, response.chunk())
                .await?;
            let Some(chunk) = self.body_chunk(url, chunk)? else {
                return Ok(body);
            };
            if (body.len() + chunk.len()) as u64 > cap {
                return Err(too_large().into());
            }
            body.extend_from_slice(&chunk);
        }
    }

    async fn package_attempt(
        &self,
        url: &Url,
        target: &Target,
        pace: &Pace,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PathBuf, AttemptError> {
        let attempt = Attempt::start();
        let part = PartWriter::resume(target)?;
        let offset = part.len();
        if offset == target.size {
            return Ok(part.finish()?);
        }
        let mut request = self.client.get(url.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
            let etag = target.stored_etag();
            if let Some(tag) = &etag {
                request = request.header(IF_RANGE, tag);
            }
            tracing::info!(url = %redacted(url), offset, etag = ?etag, "resuming download");
        }
        let mut response = match self.send(url, request, pace, &attempt).await {
            Err(AttemptError::Retry { error, .. })
                if matches!(error, FetchError::HttpStatus { status: 416, .. }) =>
            {
                tracing::warn!(url = %redacted(url), offset, "the server cannot resume; starting over");
                drop(part);
                target.discard();
                return Err(retry(error));
            }
            other => other?,
        };
        let mut part = if response.status() == StatusCode::PARTIAL_CONTENT {
            if !content_range_starts_at(response.headers(), offset) {
                drop(part);
                target.discard();
                return Err(retry(FetchError::UnexpectedRange {
                    url: redacted(url),
                    offset,
                    content_range: header_text(response.headers(), CONTENT_RANGE.as_str()),
                }));
            }
            part
        } else {
            if offset > 0 {
                tracing::info!(url = %redacted(url), "the server sent the whole file; starting over");
            }
            target.store_etag(response.headers().get(ETAG).and_then(|v| v.to_str().ok()))?;
            part.restart()?
        };
        progress(part.len(), target.size);
        let start = part.len();
        loop {
            let chunk = match self
                .paced(url, pace, &attempt, part.len() - start, response.chunk())
                .await
            {
                Ok(chunk) => chunk,
                Err(error) => {
                    part.flush()?;
                    return Err(error);
                }
            };
            let chunk = match self.body_chunk(url, chunk) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(error) => {
                    part.flush()?;
                    return Err(error);
                }
            };
            part.append(&chunk)?;
            progress(part.len(), target.size);
        }
        if part.len() < target.size {
            part.flush()?;
            return Err(retry(FetchError::SizeMismatch {
                url: redacted(url),
                expected: target.size,
                actual: part.len(),
            }));
        }
        Ok(part.finish()?)
    }

    /// Awaits `future` for at most the idle timeout and what `pace` still allows after `bytes`
    /// arrived in this attempt: `None` when the idle timeout ran out; past the deadline or below
    /// the minimum rate the fetch ends (not retried: a trickling server would trickle again).
    async fn paced<T>(
        &self,
        url: &Url,
        pace: &Pace,
        attempt: &Attempt,
        bytes: u64,
        future: impl Future<Output = T>,
    ) -> Result<Option<T>, AttemptError> {
        let shown = redacted(url);
        let budget = pace.budget(&shown, attempt, bytes)?;
        match tokio::time::timeout(budget.min(self.options.idle_timeout), future).await {
            Ok(value) => Ok(Some(value)),
            Err(_) => {
                pace.budget(&shown, attempt, bytes)?;
                Ok(None)
            }
        }
    }

    /// Sends `request`; a response with a non-success status becomes an error.
    async fn send(
        &self,
        url: &Url,
        request: RequestBuilder,
        pace: &Pace,
        attempt: &Attempt,
    ) -> Result<Response, AttemptError> {
        let shown = redacted(url);
        let response = match self.paced(url, pace, attempt, 0, request.send()).await? {
            None => {
                return Err(retry(FetchError::Timeout {
                    url: shown,
                    timeout: self.options.idle_timeout,
                }));
            }
            Some(Err(source)) => return Err(send_error(shown, source, &self.options)),
            Some(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let code = status.as_u16();
        match code {
            404 | 410 => Err(FetchError::NotFound { url: shown }.into()),
            408 | 429 | 500..=599 => Err(AttemptError::Retry {
                error: FetchError::HttpStatus {
                    url: shown,
                    status: code,
                },
                retry_after: retry_after(response.headers()),
            }),
            416 => Err(retry(FetchError::HttpStatus {
                url: shown,
                status: code,
            })),
            _ => Err(FetchError::HttpStatus {
                url: shown,
                status: code,
            }
            .into()),
        }
    }

    /// The next piece of a body, or why it did not come.
    fn body_chunk<B>(
        &self,
        url: &Url,
        chunk: Option<Result<Option<B>, reqwest::Error>>,
    ) -> Result<Option<B>, AttemptError> {
        match chunk {
            Some(Ok(chunk)) => Ok(chunk),
            Some(Err(source)) => Err(retry(FetchError::ReadBody {
                url: redacted(url),
                source,
            })),
            None => Err(retry(FetchError::Timeout {
                url: redacted(url),
                timeout: self.options.idle_timeout,
            })),
        }
    }
}

fn send_error(url: String, source: reqwest::Error, options: &FetchOptions) -> AttemptError {
    if source.is_builder() || source.is_redirect() {
        AttemptError::Fatal(FetchError::Request { url, source })
    } else if source.is_connect() {
        retry(FetchError::Connect { url, source })
    } else if source.is_timeout() {
        retry(FetchError::Timeout {
            url,
            timeout: options.connect_timeout,
        })
    } else {
        retry(FetchError::Request { url, source })
    }
}

/// True if `Content-Range` is `bytes <offset>-...`: the server resumed where we asked.
fn content_range_starts_at(headers: &HeaderMap, offset: u64) -> bool {
    header_text(headers, CONTENT_RANGE.as_str())
        .strip_prefix("bytes ")
        .and_then(|range| range.split_once('-'))
        .and_then(|(start, _)| start.trim().parse::<u64>().ok())
        == Some(offset)
}

fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::time::Duration;

    use super::super::test_server::{Reply, Seen, TestServer};
    use super::super::{FetchError, FetchOptions, MANIFEST_CAP, Source};
    use crate::error::ExitClass;
    use crate::hashing::{Sha256Digest, sha256_hex};
    use crate::repo::manifest::{Package, PackageUrl};

    const PKG: &str = "packages/app-1.0.0.tar.gz";

    fn fast() -> FetchOptions {
        FetchOptions {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            attempts: 3,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            retry_after_max: Duration::from_millis(50),
            ..FetchOptions::default()
        }
    }

    fn source(server: &TestServer) -> Source {
        Source::parse(&server.base, Path::new("/unused"))
            .unwrap()
            .with_options(fast())
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn package_for(bytes: &[u8]) -> Package {
        Package {
            url: PackageUrl::new(PKG).unwrap(),
            size: bytes.len() as u64,
            sha256: Sha256Digest::of(bytes),
            unpacked_size: 0,
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn seen(range: Option<String>, if_range: Option<String>) -> Seen {
        Seen {
            path: PKG.to_owned(),
            range,
            if_range,
        }
    }

    #[test]
    fn downloads_verifies_and_names_the_package_by_hash() {
        let server = TestServer::start();
        let bytes = content(200_000);
        server.put(PKG, &bytes);
        let downloads = tempfile::tempdir().unwrap();
        let pkg = package_for(&bytes);
        let mut last = (0, 0);
        let path = source(&server)
            .fetch_package(&pkg, downloads.path(), &mut |done, total| {
                last = (done, total)
            })
            .unwrap();
        assert_eq!(path, downloads.path().join(format!("{}.pkg", pkg.sha256)));
        assert_eq!(fs::read(&path).unwrap(), bytes);
        assert_eq!(last, (200_000, 200_000));
        assert_eq!(leftovers(downloads.path()), [format!("{}.pkg", pkg.sha256)]);
        assert_eq!(server.seen(PKG), [seen(None, None)]);
    }

    #[test]
    fn a_dropped_connection_is_resumed_with_range_and_if_range() {
        let server = TestServer::start();
        let bytes = content(100_000);
        server.put(PKG, &bytes);
        server.script(PKG, [Reply::DropAfter(30_000)]);
        let downloads = tempfile::tempdir().unwrap();
        let path = source(&server)
            .fetch_package(&package_for(&bytes), downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), bytes);
        let etag = server.etag(PKG);
        assert_eq!(
            server.seen(PKG),
            [
                seen(None, None),
                seen(Some("bytes=30000-".into()), Some(etag))
            ]
        );
        assert_eq!(
            leftovers(downloads.path()).len(),
            1,
            "part and etag cleaned up"
        );
    }

    #[test]
    fn a_part_left_by_an_earlier_run_is_resumed() {
        let server = TestServer::start();
        let bytes = content(50_000);
        server.put(PKG, &bytes);
        let downloads = tempfile::tempdir().unwrap();
        let pkg = package_for(&bytes);
        let part = downloads.path().join(format!("{}.part", pkg.sha256));
        fs::write(&part, &bytes[..12_345]).unwrap();
        let path = source(&server)
            .fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(server.seen(PKG), [seen(Some("bytes=12345-".into()), None)]);
        assert!(!part.exists());
    }

    #[test]
    fn a_server_ignoring_range_makes_the_download_start_over() {
        let server = TestServer::start();
        let bytes = content(50_000);
        server.put(PKG, &bytes);
        server.script(PKG, [Reply::IgnoreRange]);
        let downloads = tempfile::tempdir().unwrap();
        let pkg = package_for(&bytes);
        // A stale prefix that would spoil the hash if it were kept.
        fs::write(
            downloads.path().join(format!("{}.part", pkg.sha256)),
            vec![0xAA; 20_000],
        )
        .unwrap();
        let path = source(&server)
            .fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(server.seen(PKG), [seen(Some("bytes=20000-".into()), None)]);
    }

    #[test]
    fn a_206_from_the_wrong_offset_is_not_appended() {
        let server = TestServer::start();
        let bytes = content(40_000);
        server.put(PKG, &bytes);
        server.script(PKG, [Reply::WrongContentRange]);
        let downloads = tempfile::tempdir().unwrap();
        let pkg = package_for(&bytes);
        fs::write(
            downloads.path().join(format!("{}.part", pkg.sha256)),
            &bytes[..10_000],
        )
        .unwrap();
        let path = source(&server)
            .fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(
            server.seen(PKG),
            [seen(Some("bytes=10000-".into()), None), seen(None, None)]
        );
    }

    #[test]
    fn a_changed_file_on_the_server_restarts_through_if_range() {
        let server = TestServer::start();
        let bytes = content(30_000);
        server.put(PKG, &bytes);
        let downloads = tempfile::tempdir().unwrap();
        let pkg = package_for(&bytes);
        let part = downloads.path().join(format!("{}.part", pkg.sha256));
        fs::write(&part, vec![1u8; 5_000]).unwrap();
        fs::write(part.with_extension("part.etag"), "\"old-version\"").unwrap();
        let path = source(&server)
            .fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(
            server.seen(PKG),
            [seen(
                Some("bytes=5000-".into()),
                Some("\"old-version\"".into())
            )]
        );
    }

    #[test]
    fn a_stalled_body_times_out_and_resumes() {
        let server = TestServer::start();
        let bytes = content(20_000);
        server.put(PKG, &bytes);
        server.script(PKG, [Reply::StallAfter(8_000)]);
        let downloads = tempfile::tempdir().unwrap();
        let options = FetchOptions {
            idle_timeout: Duration::from_millis(200),
            ..fast()
        };
        let src = Source::parse(&server.base, Path::new("/"))
            .unwrap()
            .with_options(options);
        let path = src
            .fetch_package(&package_for(&bytes), downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(server.seen(PKG)[1].range.as_deref(), Some("bytes=8000-"));
    }

    #[test]
    fn a_trickling_server_is_stopped_by_the_minimum_rate_and_not_retried() {
        let server = TestServer::start();
        let bytes = content(100_000);
        server.put("manifest.json", &bytes);
        server.put(PKG, &bytes);
        let trickle = Reply::Trickle(Duration::from_millis(10));
        server.script("manifest.json", [trickle.clone(), trickle.clone()]);
        server.script(PKG, [trickle.clone(), trickle]);
        let options = FetchOptions {
            min_rate: 1000,
            rate_grace: Duration::from_millis(300),
            ..fast()
        };
        let src = Source::parse(&server.base, Path::new("/"))
            .unwrap()
            .with_options(options);
        let err = src.fetch_small("manifest.json", MANIFEST_CAP).unwrap_err();
        assert!(
            matches!(err, FetchError::TooSlow { min_rate: 1000, bytes, .. } if bytes < 100),
            "{err}"
        );
        assert!(err.to_string().contains("min_rate_bytes_per_sec"), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Failure);
        assert_eq!(
            server.seen("manifest.json").len(),
            1,
            "a trickle is not retried"
        );

        let downloads = tempfile::tempdir().unwrap();
        let err = src
            .fetch_package(&package_for(&bytes), downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(err, FetchError::TooSlow { .. }), "{err}");
        assert_eq!(server.seen(PKG).len(), 1);
    }

    #[test]
    fn the_overall_deadline_stops_a_fetch_that_keeps_its_rate() {
        let server = TestServer::start();
        let bytes = content(100_000);
        server.put("manifest.json", &bytes);
        // 100 bytes/s: above a 10 bytes/s floor, far too slow for a 500 ms deadline.
        server.script("manifest.json", [Reply::Trickle(Duration::from_millis(10))]);
        let options = FetchOptions {
            min_rate: 10,
            rate_grace: Duration::from_millis(100),
            deadline: Duration::from_millis(500),
            ..fast()
        };
        let src = Source::parse(&server.base, Path::new("/"))
            .unwrap()
            .with_options(options);
        let err = src.fetch_small("manifest.json", MANIFEST_CAP).unwrap_err();
        assert!(
            matches!(err, FetchError::Deadline { limit, .. } if limit == Duration::from_millis(500)),
            "{err}"
        );
        assert!(err.to_string().contains("timeout_secs"), "{err}");
    }

    #[test]
    fn an_endless_stream_is_cut_at_the_signed_size() {
        let server = TestServer::start();
        server.script(PKG, [Reply::Endless]);
        let downloads = tempfile::tempdir().unwrap();
        let pkg = Package {
            url: PackageUrl::new(PKG).unwrap(),
            size: 100_000,
            sha256: Sha256Digest::parse(&"ab".repeat(32)).unwrap(),
            unpacked_size: 0,
        };
        let src = source(&server);
        let err = src
            .fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 100_000, .. }),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Security);
        assert!(err.to_string().contains(&src.display_url(PKG)), "{err}");
        assert!(leftovers(downloads.path()).is_empty());
        assert_eq!(server.seen(PKG).len(), 1, "a cap violation is not retried");
    }

    #[test]
    fn a_wrong_hash_is_refused_and_the_part_deleted() {
        let server = TestServer::start();
        let bytes = content(10_000);
        server.put(PKG, &bytes);
        let downloads = tempfile::tempdir().unwrap();
        let mut pkg = package_for(&bytes);
        pkg.sha256 = Sha256Digest::of(b"something else");
        let err = source(&server)
            .fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap_err();
        match &err {
            FetchError::HashMismatch {
                url,
                expected,
                actual,
            } => {
                assert!(url.ends_with(PKG));
                assert_eq!(expected, &pkg.sha256);
                assert_eq!(actual, &sha256_hex(&bytes));
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(err.exit_class(), ExitClass::Security);
        assert!(leftovers(downloads.path()).is_empty());
        assert_eq!(server.seen(PKG).len(), 1, "a hash mismatch is not retried");
    }

    #[test]
    fn a_short_file_is_a_size_mismatch_after_retries() {
        let server = TestServer::start();
        let bytes = content(10_000);
        server.put(PKG, &bytes[..9_000]);
        let downloads = tempfile::tempdir().unwrap();
        let err = source(&server)
            .fetch_package(&package_for(&bytes), downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::SizeMismatch {
                    expected: 10_000,
                    actual: 9_000,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Security);
        assert!(leftovers(downloads.path()).is_empty());
    }

    #[test]
    fn server_errors_are_retried_until_it_recovers() {
        let server = TestServer::start();
        let bytes = content(5_000);
        server.put(PKG, &bytes);
        server.script(PKG, [Reply::Status(500, None), Reply::Status(503, Some(0))]);
        let downloads = tempfile::tempdir().unwrap();
        let path = source(&server)
            .fetch_package(&package_for(&bytes), downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(server.seen(PKG).len(), 3);
    }

    #[test]
    fn retries_are_bounded() {
        let server = TestServer::start();
        server.put(PKG, b"x");
        server.script(PKG, std::iter::repeat_n(Reply::Status(429, Some(3600)), 5));
        let downloads = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let err = source(&server)
            .fetch_package(&package_for(b"x"), downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert!(
            matches!(err, FetchError::HttpStatus { status: 429, .. }),
            "{err}"
        );
        assert_eq!(server.seen(PKG).len(), 3);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "Retry-After is capped"
        );
    }

    #[test]
    fn not_found_is_clear_and_not_retried() {
        let server = TestServer::start();
        let downloads = tempfile::tempdir().unwrap();
        let src = source(&server);
        let err = src
            .fetch_package(&package_for(b"abc"), downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("not found: {}", src.display_url(PKG))
        );
        assert_eq!(err.exit_class(), ExitClass::Failure);
        assert_eq!(server.seen(PKG).len(), 1);
    }

    #[test]
    fn client_errors_are_not_retried() {
        let server = TestServer::start();
        server.put(PKG, b"abc");
        server.script(PKG, [Reply::Status(403, None)]);
        let downloads = tempfile::tempdir().unwrap();
        let err = source(&server)
            .fetch_package(&package_for(b"abc"), downloads.path(), &mut |_, _| {})
            .unwrap_err();
        assert!(
            matches!(err, FetchError::HttpStatus { status: 403, .. }),
            "{err}"
        );
        assert_eq!(server.seen(PKG).len(), 1);
    }

    #[test]
    fn a_verified_package_is_reused_and_a_corrupted_one_fetched_again() {
        let server = TestServer::start();
        let bytes = content(3_000);
        server.put(PKG, &bytes);
        let downloads = tempfile::tempdir().unwrap();
        let pkg = package_for(&bytes);
        let src = source(&server);
        let path = src
            .fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap();
        src.fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(server.seen(PKG).len(), 1, "reused without a request");
        let mut spoiled = bytes.clone();
        spoiled[0] ^= 1;
        fs::write(&path, &spoiled).unwrap();
        src.fetch_package(&pkg, downloads.path(), &mut |_, _| {})
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), bytes);
        assert_eq!(server.seen(PKG).len(), 2);
    }

    #[test]
    fn small_files_are_fetched_and_capped() {
        let server = TestServer::start();
        server.put("manifest.json", b"{\"format\":1}");
        let src = source(&server);
        assert_eq!(
            src.fetch_small("manifest.json", MANIFEST_CAP).unwrap(),
            b"{\"format\":1}"
        );
        server.put("manifest.json", &content(5_000));
        let err = src.fetch_small("manifest.json", 4_096).unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 4_096, .. }),
            "{err}"
        );
        assert_eq!(err.exit_class(), ExitClass::Security);
        assert_eq!(
            server.seen("manifest.json").len(),
            2,
            "a cap is not retried"
        );
    }

    #[test]
    fn an_endless_small_file_is_cut_while_streaming() {
        let server = TestServer::start();
        server.script("manifest.json.sig", [Reply::Endless]);
        let err = source(&server)
            .fetch_small("manifest.json.sig", 1 << 20)
            .unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_small_fetch_retries_a_dropped_body() {
        let server = TestServer::start();
        let bytes = content(2_000);
        server.put("manifest.json", &bytes);
        server.script("manifest.json", [Reply::DropAfter(500)]);
        let got = source(&server)
            .fetch_small("manifest.json", MANIFEST_CAP)
            .unwrap();
        assert_eq!(got, bytes);
        assert_eq!(server.seen("manifest.json").len(), 2);
    }

    #[test]
    fn an_unreachable_server_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let src = Source::parse(&format!("http://127.0.0.1:{port}/repo"), Path::new("/"))
            .unwrap()
            .with_options(fast());
        let err = src.fetch_small("manifest.json", MANIFEST_CAP).unwrap_err();
        assert!(matches!(err, FetchError::Connect { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("http://127.0.0.1:{port}/repo/manifest.json")),
            "{err}"
        );
    }
}
