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
    /// import per call, and on each string it returns (cut beyond). What a guest writes past
    /// the stdout/stderr cap is dropped and counted. Default 64 KiB.
    pub output_bytes: usize,
    /// Cap on the WASI resources one call may hold at once: open files and directories,
    /// streams, pollables (entries of its resource table). Past it the call is stopped.
    /// Default 256.
    pub resources: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            output_bytes: 64 << 10,
            resources: 256,
        }
    }
}

/// How often the epoch ticker advances the engine's epoch: how often a guest that computes
/// yields to the call's runtime, so the granularity of `timeout`.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances, tables and memories one plugin may create (a wasip2 component needs a few),
/// and the table elements of all its tables together.
pub(super) const MAX_INSTANCES: usize = 32;
pub(super) const MAX_TABLES: usize = 32;
pub(super) const MAX_MEMORIES: usize = 8;
pub(super) const MAX_TABLE_ELEMENTS: usize = 100_000;
