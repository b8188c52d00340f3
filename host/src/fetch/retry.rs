//! How hard molt tries: timeouts, the attempt budget and jittered exponential backoff.
//!
//! Transient trouble (connect errors, stalls, dropped bodies, 5xx, 408, 429) is retried a bounded
//! number of times; the waits grow exponentially with random jitter so many machines updating at
//! once do not hammer a recovering server in lockstep.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Timeouts, rate floor and retry budget (the deadline and rate apply to local sources too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchOptions {
    /// Longest wait for a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Longest wait for response headers or for the next piece of a body.
    pub idle_timeout: Duration,
    /// Attempts per file, the first one included.
    pub attempts: u32,
    /// Wait before the second attempt; doubles with each further one.
    pub backoff_base: Duration,
    /// Longest wait between two attempts.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; a server asking for more gets this much.
    pub retry_after_max: Duration,
    /// Longest time one file may take, all its attempts together (`[source] timeout_secs`).
    /// An interrupted package download resumes on the next run.
    pub deadline: Duration,
    /// Lowest average rate of an attempt, in bytes per second, once `rate_grace` has passed
    /// (`[source] min_rate_bytes_per_sec`; 0 turns the check off).
    pub min_rate: u64,
    /// How long an attempt may run before its average rate is held to `min_rate`.
    pub rate_grace: Duration,
}

/// Default of `[source] timeout_secs`.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Default of `[source] min_rate_bytes_per_sec`: a 1 byte/s server is stopped after
/// [`DEFAULT_RATE_GRACE`].
pub(crate) const DEFAULT_MIN_RATE: u64 = 1024;
pub(crate) const DEFAULT_RATE_GRACE: Duration = Duration::from_secs(30);

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            attempts: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            retry_after_max: Duration::from_secs(10),
            deadline: DEFAULT_DEADLINE,
            min_rate: DEFAULT_MIN_RATE,
            rate_grace: DEFAULT_RATE_GRACE,
        }
    }
}

impl FetchOptions {
    /// Wait before attempt `next_attempt` (2 for the first retry): the exponential step, jittered
    /// down to between half and all of it, and at least the server's capped `Retry-After`.
    pub(crate) fn backoff(&self, next_attempt: u32, retry_after: Option<Duration>) -> Duration {
        let doublings = next_attempt.saturating_sub(2).min(20);
        let step = self
            .backoff_base
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max);
        let jittered = step / 2 + step.mul_f64(jitter_fraction() / 2.0);
        let asked = retry_after.map_or(Duration::ZERO, |d| d.min(self.retry_after_max));
        jittered.max(asked)
    }
}

/// A uniformly random fraction in [0, 1); without an entropy source the wait is simply not jittered.
fn jitter_fraction() -> f64 {
    match getrandom::u32() {
        Ok(n) => f64::from(n) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 1.0,
    }
}

/// A `Retry-After` given in seconds (the HTTP-date form is ignored: the backoff applies instead).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let o = FetchOptions::default();
        for _ in 0..50 {
            let first = o.backoff(2, None);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
            let third = o.backoff(4, None);
            assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(800));
            assert!(o.backoff(40, None) <= Duration::from_secs(5));
        }
        assert!(o.backoff(2, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert_eq!(
            o.backoff(2, Some(Duration::from_secs(3600))),
            o.retry_after_max
        );
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
