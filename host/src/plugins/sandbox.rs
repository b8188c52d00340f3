//! One sandboxed plugin call: a fresh `Store` with an empty WASI context (plus, for validators,
//! one read-only preopen), caps on the memory of all its memories together, on instances and on
//! WASI resources (open files, streams), an epoch deadline, captured stdout/stderr, and the host
//! `log` import forwarded to `tracing` under a byte budget.
//!
//! The call is a future (wasmtime's async API: `instantiate_async`, `call_*_async`, an epoch
//! deadline that yields every tick) run under a tokio timeout on a current-thread runtime of its
//! own, on a thread of its own. At the deadline the future is dropped: that stops a guest that
//! computes (it yields at the next tick) and a guest blocked inside a host call (a WASI sleep or
//! read is a future too). Then the store is dropped — its WASI context, resource table, open
//! files and captured output with it — and the runtime shut down before the call returns, so
//! nothing a plugin held outlives its call: what molt does next (an undo) cannot run short of
//! descriptors because of it.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTableError;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, strategy::Level};
use super::error::PluginError;
use super::limits::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES, PluginLimits};

/// How long a timed-out call waits, after its store is dropped, for WASI work already handed to
/// tokio's blocking pool (a file read in progress) to finish and release what it holds.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);

/// Captured frames (wasmtime keeps the innermost 20) of one function under an out-of-bounds
/// trap from which it is reported as a stack overflow (a guest's own stack is in its linear
/// memory, without a guard).
const RECURSION_FRAMES: usize = 16;

/// Where a validator sees the new install tree.
pub(super) const GUEST_ROOT: &str = "/install";

/// The host state of one call's store. `pub` only because the `World` trait's signatures name
/// it; this module is private, so nothing outside `plugins` can.
pub struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    log: LogBudget,
}

/// The store's resource limiter. Unlike wasmtime's `StoreLimits`, whose caps apply to each
/// memory and each table on its own, the caps here are totals over everything the plugin
/// creates: a component may hold several core instances, each with its own memory and tables,
/// and must not get [`MAX_MEMORIES`] times the memory it was allowed.
struct Limiter {
    memory_limit: usize,
    memory_total: usize,
    table_elements_total: usize,
    /// A memory growth was refused (the error is then [`PluginError::MemoryLimit`]).
    memory_refused: bool,
}

impl Limiter {
    fn new(memory_limit: usize) -> Limiter {
        Limiter {
            memory_limit,
            memory_total: 0,
            table_elements_total: 0,
            memory_refused: false,
        }
    }
}

/// Counts a growth from `current` to `desired` into `total` if the new total stays within `cap`
/// and `desired` within the item's own `maximum`; otherwise leaves `total` alone and returns the
/// total the growth would have made. One rule for memories and tables.
fn grow_within(
    total: &mut usize,
    cap: usize,
    current: usize,
    desired: usize,
    maximum: Option<usize>,
) -> Result<bool, usize> {
    let grown = total.saturating_add(desired.saturating_sub(current));
    if grown > cap || maximum.is_some_and(|max| desired > max) {
        return Err(grown);
    }
    *total = grown;
    Ok(true)
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.memory_limit;
        grow_within(&mut self.memory_total, limit, current, desired, maximum).map_err(|total| {
            self.memory_refused = true;
            wasmtime::format_err!(
                "plugin memory limit: growing a memory to {desired} bytes would make {total} bytes in all, more than {limit} bytes"
            )
        })
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        Err(error.context("growing a plugin memory failed"))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let cap = MAX_TABLE_ELEMENTS;
        grow_within(
            &mut self.table_elements_total,
            cap,
            current,
            desired,
            maximum,
        )
        .map_err(|total| {
            wasmtime::format_err!(
                "plugin table limit: {total} table elements in all, more than {cap}"
            )
        })
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("growing a plugin table failed"))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// A guest's stdout or stderr: keeps the first `cap` bytes and counts the rest, which are
/// accepted and dropped. Never an error to the guest (a full pipe that refused writes made Rust
/// guests panic with "Broken pipe").
#[derive(Clone)]
struct CappedOutput {
    cap: usize,
    kept: Arc<Mutex<CappedBytes>>,
}

#[derive(Default)]
struct CappedBytes {
    bytes: Vec<u8>,
    dropped: u64,
}

impl CappedOutput {
    fn new(cap: usize) -> CappedOutput {
        CappedOutput {
            cap,
            kept: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CappedBytes> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What was kept, as text, and how many bytes were dropped.
    fn contents(&self) -> (String, u64) {
        let kept = self.lock();
        (
            String::from_utf8_lossy(&kept.bytes).into_owned(),
            kept.dropped,
        )
    }
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let cap = self.cap;
        let mut kept = self.lock();
        let room = cap.saturating_sub(kept.bytes.len()).min(buf.len());
        kept.bytes.extend_from_slice(&buf[..room]);
        kept.dropped += (buf.len() - room) as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Forwards guest log lines to `tracing` until the per-call budget is spent.
struct LogBudget {
    plugin: String,
    remaining: usize,
    dropped: usize,
}

/// `text` cut to at most `cap` bytes, at a character boundary.
fn cut(text: &str, cap: usize) -> &str {
    let mut end = text.len().min(cap);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Control characters (terminal escapes, newlines that forge log lines) replaced by U+FFFD.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// A string a plugin handed to the host (an error, a reason, a version, its `info()`, its
/// stderr), made safe to keep and show: at most `cap` bytes, the cut noted, no control
/// characters. The guest can return strings as large as its memory.
pub(super) fn guest_text(text: &str, cap: usize) -> String {
    let kept = cut(text, cap);
    let mut safe = printable(kept);
    if kept.len() < text.len() {
        safe.push_str(&format!("… ({} more bytes cut)", text.len() - kept.len()));
    }
    safe
}

impl LogBudget {
    fn forward(&mut self, level: Level, msg: &str) {
        let kept = cut(msg, self.remaining);
        self.dropped += msg.len() - kept.len();
        if kept.is_empty() {
            return;
        }
        self.remaining -= kept.len();
        let text = printable(kept);
        let plugin = self.plugin.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "molt::plugin", plugin, "{text}"),
            Level::Debug => tracing::debug!(target: "molt::plugin", plugin, "{text}"),
            Level::Info => tracing::info!(target: "molt::plugin", plugin, "{text}"),
            Level::Warn => tracing::warn!(target: "molt::plugin", plugin, "{text}"),
            Level::Error => tracing::error!(target: "molt::plugin", plugin, "{text}"),
        }
    }

    fn report(&self) {
        if self.dropped > 0 {
            tracing::warn!(
                target: "molt::plugin",
                plugin = self.plugin.as_str(),
                dropped_bytes = self.dropped,
                "plugin logged more than its budget; {} bytes of log dropped",
                self.dropped
            );
        }
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `host` interface of both worlds (generated once, see `bindings`).
impl bindings::strategy::Host for SandboxState {
    fn log(&mut self, level: Level, msg: String) {
        self.log.forward(level, &msg);
    }
}

impl bindings::strategy::TypesHost for SandboxState {}

/// One call to make in the sandbox.
pub(super) struct Call {
    pub plugin: String,
    pub engine: wasmtime::Engine,
    pub limits: PluginLimits,
    /// Host directory to mount read-only at [`GUEST_ROOT`] (validators only).
    pub preopen: Option<PathBuf>,
}

impl Call {
    /// Runs `body` in a fresh store, under the time limit, and maps every way it can fail. The
    /// store, and everything the guest held, is gone when this returns.
    pub(super) fn run<T, F>(self, body: F) -> Result<T, PluginError>
    where
        T: Send,
        F: AsyncFnOnce(&mut Store<SandboxState>) -> wasmtime::Result<T> + Send,
    {
        // A thread of its own: the call's runtime cannot be started inside another one.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let plugin = self.plugin.clone();
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("molt-plugin-call".into())
                .spawn_scoped(scope, move || {
                    tracing::dispatcher::with_default(&dispatch, || self.run_here(body))
                })
                .map_err(|e| PluginError::Sandbox {
                    plugin: plugin.clone(),
                    reason: format!("cannot start a thread for the call: {e}"),
                })?
                .join()
                .unwrap_or_else(|_| {
                    Err(PluginError::Sandbox {
                        plugin,
                        reason: "the call's thread panicked".into(),
                    })
                })
        })
    }

    fn run_here<T, F>(self, body: F) -> Result<T, PluginError>
    where
        F: AsyncFnOnce(&mut Store<SandboxState>) -> wasmtime::Result<T>,
    {
        let sandbox_error = |reason: String| PluginError::Sandbox {
            plugin: self.plugin.clone(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| sandbox_error(format!("cannot start the call's runtime: {e}")))?;
        let stdout = CappedOutput::new(self.limits.output_bytes);
        let stderr = CappedOutput::new(self.limits.output_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        if let Some(tree) = &self.preopen {
            wasi.preopened_dir(tree, GUEST_ROOT, FsPerms::ReadOnly)
                .map_err(|e| {
                    sandbox_error(format!(
                        "cannot open {} for the validator: {e:#}",
                        tree.display()
                    ))
                })?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(self.limits.resources);
        let state = SandboxState {
            wasi: wasi.build(),
            table,
            limiter: Limiter::new(self.limits.memory_bytes),
            log: LogBudget {
                plugin: self.plugin.clone(),
                remaining: self.limits.output_bytes,
                dropped: 0,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Yield to the runtime at every epoch tick, so the timeout below fires on time even for
        // a guest that never calls the host.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let outcome = runtime
            .block_on(async { tokio::time::timeout(self.limits.timeout, body(&mut store)).await });
        store.data().log.report();
        let memory_refused = store.data().limiter.memory_refused;
        // Free what the guest held (files, streams, memory) before anything else happens.
        drop(store);
        runtime.shutdown_timeout(BLOCKING_GRACE);
        for (what, pipe) in [("stdout", &stdout), ("stderr", &stderr)] {
            let (_, dropped) = pipe.contents();
            if dropped > 0 {
                tracing::warn!(
                    target: "molt::plugin",
                    plugin = self.plugin.as_str(),
                    dropped_bytes = dropped,
                    "plugin wrote more than {} bytes to its {what}; {dropped} bytes dropped",
                    self.limits.output_bytes
                );
            }
        }

        let error = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Err(_elapsed) => {
                return Err(PluginError::Timeout {
                    plugin: self.plugin.clone(),
                    limit: self.limits.timeout,
                });
            }
            Ok(Err(error)) => error,
        };
        if memory_refused {
            return Err(PluginError::MemoryLimit {
                plugin: self.plugin.clone(),
                limit_bytes: self.limits.memory_bytes,
            });
        }
        if matches!(
            error.root_cause().downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        ) {
            return Err(PluginError::ResourceLimit {
                plugin: self.plugin.clone(),
                limit: self.limits.resources,
            });
        }
        tracing::debug!(plugin = %self.plugin, "plugin trapped: {error:?}");
        let cap = self.limits.output_bytes;
        let mut output = guest_text(stderr.contents().0.trim(), cap);
        let out = guest_text(stdout.contents().0.trim(), cap);
        if !out.is_empty() {
            if !output.is_empty() {
                output.push_str(" | ");
            }
            output.push_str(&out);
        }
        // A Rust guest keeps its stack in linear memory: running off its end is an out-of-bounds
        // access, deep in a recursion — every captured frame below the innermost one is the
        // same function.
        let recursing = error
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .is_some_and(|trace| {
                let frames = trace.frames();
                frames.len() >= RECURSION_FRAMES
                    && frames[1..]
                        .iter()
                        .all(|f| f.func_index() == frames[1].func_index())
            });
        let message = match error.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => {
                "stack overflow (the plugin recursed too deeply)".to_owned()
            }
            Some(Trap::MemoryOutOfBounds) if recursing => {
                "stack overflow (an out of bounds memory access deep in a recursion: the plugin ran off its stack)".to_owned()
            }
            Some(Trap::Interrupt) => {
                return Err(PluginError::Timeout {
                    plugin: self.plugin.clone(),
                    limit: self.limits.timeout,
                });
            }
            _ => error.root_cause().to_string(),
        };
        Err(PluginError::Trap {
            plugin: self.plugin.clone(),
            message,
            guest_stderr: output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn memory_cap_is_a_total_over_all_memories() {
        let mut limiter = Limiter::new(64 * MIB);
        assert!(limiter.memory_growing(0, 40 * MIB, None).unwrap());
        assert!(!limiter.memory_refused);
        // A second memory of the same size would stay under a per-memory cap of 64 MiB.
        assert!(limiter.memory_growing(0, 40 * MIB, None).is_err());
        assert!(limiter.memory_refused);
        // Growing the first memory by what is left is still allowed.
        assert!(limiter.memory_growing(40 * MIB, 64 * MIB, None).unwrap());
        assert!(
            limiter
                .memory_growing(64 * MIB, 64 * MIB + 65536, None)
                .is_err()
        );
    }

    #[test]
    fn guest_text_is_capped_and_printable() {
        assert_eq!(guest_text("plain\ttext", 100), "plain\ttext");
        assert_eq!(
            guest_text("\u{1b}[2Jfake\nERROR line", 100),
            "\u{fffd}[2Jfake\u{fffd}ERROR line"
        );
        assert_eq!(guest_text("aé", 2), "a… (2 more bytes cut)");
        assert_eq!(
            guest_text(&"x".repeat(1 << 20), 10).len(),
            10 + "… (1048566 more bytes cut)".len()
        );
    }

    #[test]
    fn table_cap_is_a_total_over_all_tables() {
        let mut limiter = Limiter::new(64 * MIB);
        let half = MAX_TABLE_ELEMENTS / 2;
        assert!(limiter.table_growing(0, half, None).unwrap());
        assert!(limiter.table_growing(0, half, None).unwrap());
        assert!(limiter.table_growing(0, 2, None).is_err());
        assert!(!limiter.memory_refused);
    }
}
