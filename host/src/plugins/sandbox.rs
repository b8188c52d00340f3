//! One sandboxed plugin call: a fresh `Store` with an empty WASI context (plus, for validators,
//! one read-only preopen), caps on the memory of all its memories together and on instances, an epoch deadline, captured stdout/stderr,
//! and the host `log` import forwarded to `tracing` under a byte budget.
//!
//! The call runs on a thread of its own and the caller waits at most
//! [`PluginLimits::backstop`]: the epoch deadline stops a guest that computes, the backstop
//! also covers a guest blocked inside a host call (a WASI sleep), which no epoch can interrupt.
//! Such a thread is abandoned; the deadline traps it as soon as it re-enters wasm.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, strategy::Level};
use super::error::PluginError;
use super::limits::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES, PluginLimits};

/// Where a validator sees the new install tree.
pub(super) const GUEST_ROOT: &str = "/install";

/// The host state of one call's store.
pub(super) struct SandboxState {
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

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_total
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_limit || maximum.is_some_and(|max| desired > max) {
            self.memory_refused = true;
            wasmtime::bail!(
                "plugin memory limit: growing a memory to {desired} bytes would make {total} bytes in all, more than {} bytes",
                self.memory_limit
            );
        }
        self.memory_total = total;
        Ok(true)
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
        let total = self
            .table_elements_total
            .saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS || maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!(
                "plugin table limit: {total} table elements in all, more than {MAX_TABLE_ELEMENTS}"
            );
        }
        self.table_elements_total = total;
        Ok(true)
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

/// What a loaded plugin of either kind keeps: its name as configured, its pre-instantiated
/// component, and what every call needs.
pub(super) struct Loaded<P> {
    pub name: String,
    pub pre: P,
    pub limits: PluginLimits,
    engine: wasmtime::Engine,
}

impl<P> Loaded<P> {
    pub fn new(name: String, pre: P, engine: wasmtime::Engine, limits: PluginLimits) -> Self {
        Loaded {
            name,
            pre,
            limits,
            engine,
        }
    }

    /// A call of this plugin, with `preopen` mounted read-only at [`GUEST_ROOT`] if given.
    pub fn call(&self, preopen: Option<&Path>) -> Call {
        Call {
            plugin: self.name.clone(),
            engine: self.engine.clone(),
            limits: self.limits,
            preopen: preopen.map(Path::to_path_buf),
        }
    }
}

/// One call to make in the sandbox.
pub(super) struct Call {
    pub plugin: String,
    pub engine: wasmtime::Engine,
    pub limits: PluginLimits,
    /// Host directory to mount read-only at [`GUEST_ROOT`] (validators only).
    pub preopen: Option<PathBuf>,
}

impl Call {
    /// Runs `body` in a fresh store on a thread of its own and maps every way it can fail.
    pub(super) fn run<T, F>(self, body: F) -> Result<T, PluginError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store<SandboxState>) -> wasmtime::Result<T> + Send + 'static,
    {
        let (sender, receiver) = mpsc::sync_channel(1);
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let plugin = self.plugin.clone();
        let limits = self.limits;
        std::thread::Builder::new()
            .name("molt-plugin-call".into())
            .spawn(move || {
                let result = tracing::dispatcher::with_default(&dispatch, || self.run_here(body));
                let _ = sender.send(result);
            })
            .map_err(|e| PluginError::Sandbox {
                plugin: plugin.clone(),
                reason: format!("cannot start a thread for the call: {e}"),
            })?;
        match receiver.recv_timeout(limits.backstop()) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(PluginError::Timeout {
                plugin,
                limit: limits.timeout,
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(PluginError::Sandbox {
                plugin,
                reason: "the call's thread ended without an answer".into(),
            }),
        }
    }

    fn run_here<T, F>(self, body: F) -> Result<T, PluginError>
    where
        F: FnOnce(&mut Store<SandboxState>) -> wasmtime::Result<T>,
    {
        let stdout = MemoryOutputPipe::new(self.limits.output_bytes);
        let stderr = MemoryOutputPipe::new(self.limits.output_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        if let Some(tree) = &self.preopen {
            wasi.preopened_dir(tree, GUEST_ROOT, FsPerms::ReadOnly)
                .map_err(|e| PluginError::Sandbox {
                    plugin: self.plugin.clone(),
                    reason: format!("cannot open {} for the validator: {e:#}", tree.display()),
                })?;
        }
        let state = SandboxState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(self.limits.memory_bytes),
            log: LogBudget {
                plugin: self.plugin.clone(),
                remaining: self.limits.output_bytes,
                dropped: 0,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(self.limits.epoch_ticks());
        store.epoch_deadline_trap();

        let outcome = body(&mut store);
        store.data().log.report();
        outcome.map_err(|error| {
            if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                return PluginError::Timeout {
                    plugin: self.plugin.clone(),
                    limit: self.limits.timeout,
                };
            }
            if store.data().limiter.memory_refused {
                return PluginError::MemoryLimit {
                    plugin: self.plugin.clone(),
                    limit_bytes: self.limits.memory_bytes,
                };
            }
            tracing::debug!(plugin = %self.plugin, "plugin trapped: {error:?}");
            let cap = self.limits.output_bytes;
            let mut output = guest_text(String::from_utf8_lossy(&stderr.contents()).trim(), cap);
            let out = guest_text(String::from_utf8_lossy(&stdout.contents()).trim(), cap);
            if !out.is_empty() {
                if !output.is_empty() {
                    output.push_str(" | ");
                }
                output.push_str(&out);
            }
            PluginError::Trap {
                plugin: self.plugin.clone(),
                message: error.root_cause().to_string(),
                guest_stderr: output,
            }
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
