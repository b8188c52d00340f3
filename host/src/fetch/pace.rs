//! Deadlines on every fetch: one overall deadline per file (all its attempts together) and a
//! minimum average rate per attempt, for HTTP and local sources alike.
//!
//! The idle timeout alone stops a server that goes silent, not one that trickles a byte every
//! few seconds; the average rate stops that one. It is measured from the start of an attempt
//! and only enforced after a grace period, so a slow first byte (a cold cache, a TLS handshake)
//! is not mistaken for a trickle.

use std::time::{Duration, Instant};

use super::FetchError;
use super::retry::FetchOptions;

/// The clock of one file's fetch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    deadline: Instant,
    limit: Duration,
    min_rate: u64,
    grace: Duration,
}

/// The clock of one attempt within it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempt {
    started: Instant,
}

impl Attempt {
    pub(super) fn start() -> Attempt {
        Attempt {
            started: Instant::now(),
        }
    }
}

impl Pace {
    pub(super) fn start(options: &FetchOptions) -> Pace {
        Pace {
            deadline: Instant::now() + options.deadline,
            limit: options.deadline,
            min_rate: options.min_rate,
            grace: options.rate_grace,
        }
    }

    /// When the attempt falls below the minimum rate unless more than `bytes` arrive.
    fn rate_due(&self, attempt: &Attempt, bytes: u64) -> Instant {
        let needed = if self.min_rate == 0 {
            Duration::MAX
        } else {
            Duration::from_secs_f64(bytes as f64 / self.min_rate as f64)
        };
        attempt
            .started
            .checked_add(needed.max(self.grace))
            .unwrap_or(self.deadline)
    }

    /// How long the attempt may wait for more data now that `bytes` have arrived, or the error
    /// that ends the fetch: past the deadline, or too slow.
    pub(super) fn budget(
        &self,
        url: &str,
        attempt: &Attempt,
        bytes: u64,
    ) -> Result<Duration, FetchError> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(FetchError::Deadline {
                url: url.to_owned(),
                limit: self.limit,
            });
        }
        let due = self.rate_due(attempt, bytes);
        if now >= due {
            let elapsed = now.duration_since(attempt.started);
            return Err(FetchError::TooSlow {
                url: url.to_owned(),
                bytes,
                elapsed,
                min_rate: self.min_rate,
            });
        }
        Ok(self.deadline.min(due).duration_since(now))
    }

    /// Time left before the deadline (for the waits between attempts).
    pub(super) fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(deadline_ms: u64, min_rate: u64, grace_ms: u64) -> FetchOptions {
        FetchOptions {
            deadline: Duration::from_millis(deadline_ms),
            min_rate,
            rate_grace: Duration::from_millis(grace_ms),
            ..FetchOptions::default()
        }
    }

    #[test]
    fn a_trickle_is_too_slow_after_the_grace_period() {
        let pace = Pace::start(&options(60_000, 1000, 50));
        let attempt = Attempt::start();
        // Within the grace period any rate is fine; 10 bytes then buy 10 ms more at 1000 B/s.
        assert!(pace.budget("u", &attempt, 10).unwrap() <= Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        let err = pace.budget("u", &attempt, 10).unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::TooSlow {
                    bytes: 10,
                    min_rate: 1000,
                    ..
                }
            ),
            "{err}"
        );
        // Enough bytes push the due time beyond now.
        assert!(pace.budget("u", &attempt, 1_000_000).is_ok());
    }

    #[test]
    fn the_deadline_covers_every_attempt() {
        let pace = Pace::start(&options(30, 0, 0));
        assert!(pace.budget("u", &Attempt::start(), 0).is_ok());
        std::thread::sleep(Duration::from_millis(40));
        let err = pace.budget("u", &Attempt::start(), 0).unwrap_err();
        assert!(matches!(err, FetchError::Deadline { .. }), "{err}");
        assert_eq!(pace.left(), Duration::ZERO);
    }
}
