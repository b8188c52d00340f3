//! The limits every plugin call runs under.

use std::time::Duration;

/// Time, memory and output limits of one plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall-clock time of one call (instantiation included). Default 1 s.
    pub timeout: Duration,
    /// Cap on the linear memory of the plugin, all its memories together. Default 64 MiB.
    pub memory_bytes: usize,
    /// Cap on captured guest stdout and stderr (each), and on bytes forwarded from the `log`
    /// import per call, and on each string it returns (cut beyond). A guest writing past the
    /// stdout/stderr cap traps. Default 64 KiB.
    pub output_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            output_bytes: 64 << 10,
        }
    }
}

/// How often the epoch ticker advances the engine's epoch; the granularity of `timeout`.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances, tables and memories one plugin may create (a wasip2 component needs a few),
/// and the table elements of all its tables together.
pub(super) const MAX_INSTANCES: usize = 32;
pub(super) const MAX_TABLES: usize = 32;
pub(super) const MAX_MEMORIES: usize = 8;
pub(super) const MAX_TABLE_ELEMENTS: usize = 100_000;

impl PluginLimits {
    /// Epoch ticks until the deadline (at least one).
    pub(super) fn epoch_ticks(&self) -> u64 {
        let ticks = self.timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }

    /// When the calling thread gives up on a call that the epoch could not stop (a guest
    /// blocked inside a host call, e.g. a WASI sleep).
    pub(super) fn backstop(&self) -> Duration {
        self.timeout + self.timeout / 2 + Duration::from_millis(20)
    }
}
