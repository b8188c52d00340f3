//! Reading a repository over `http(s)://` with reqwest, on a private current-thread runtime.
//!
//! Each request is one attempt; transient failures (connect errors, stalls, dropped bodies, short
//! bodies, 408/429/5xx) are retried with backoff, everything else ends the fetch at once. A package
//! attempt resumes from whatever the part file already holds.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE, RANGE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use tokio::runtime::Runtime;

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

pub struct HttpClient {
    runtime: Runtime,
    client: reqwest::Client,
    options: FetchOptions,
}

impl HttpClient {
    pub fn new(options: &FetchOptions) -> Result<Self, FetchError> {
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
    pub fn fetch_small(&self, url: &Url, cap: u64) -> Result<Vec<u8>, FetchError> {
        self.runtime
            .block_on(self.retrying(url, || self.small_attempt(url, cap)))
    }

    /// Downloads `url` into the target's part file (resuming it) and verifies it.
    pub fn download(
        &self,
        url: &Url,
        target: &Target,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PathBuf, FetchError> {
        let progress = &std::cell::RefCell::new(progress);
        let result = self.runtime.block_on(self.retrying(url, move || async move {
            let mut progress = progress.borrow_mut();
            self.package_attempt(url, target, &mut **progress).await
        }));
        if let Err(FetchError::SizeMismatch { .. }) = &result {
            target.discard();
        }
        result
    }

    async fn retrying<T, F, Fut>(&self, url: &Url, mut attempt: F) -> Result<T, FetchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
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

    async fn small_attempt(&self, url: &Url, cap: u64) -> Result<Vec<u8>, AttemptError> {
        let mut response = self.send(url, self.client.get(url.clone())).await?;
        let too_large = || FetchError::TooLarge {
            url: redacted(url),
            limit: cap,
        };
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(too_large().into());
        }
        let mut body = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.options.idle_timeout, response.chunk()).await;
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
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PathBuf, AttemptError> {
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
        let mut response = match self.send(url, request).await {
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
        loop {
            let chunk = tokio::time::timeout(self.options.idle_timeout, response.chunk()).await;
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

    /// Sends `request`; a response with a non-success status becomes an error.
    async fn send(&self, url: &Url, request: RequestBuilder) -> Result<Response, AttemptError> {
        let shown = redacted(url);
        let response = match tokio::time::timeout(self.options.idle_timeout, request.send()).await
        {
            Err(_) => {
                return Err(retry(FetchError::Timeout {
                    url: shown,
                    timeout: self.options.idle_timeout,
                }));
            }
            Ok(Err(source)) => return Err(send_error(shown, source, &self.options)),
            Ok(Ok(response)) => response,
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
        chunk: Result<Result<Option<B>, reqwest::Error>, tokio::time::error::Elapsed>,
    ) -> Result<Option<B>, AttemptError> {
        match chunk {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(source)) => Err(retry(FetchError::ReadBody {
                url: redacted(url),
                source,
            })),
            Err(_) => Err(retry(FetchError::Timeout {
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
