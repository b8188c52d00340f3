//! Logging into molt's log. Each line is tagged with the plugin's name by the host; the host
//! caps how many bytes one call may log, so log what helps an operator, not everything.

use std::sync::OnceLock;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

static SINK: OnceLock<fn(Level, &str)> = OnceLock::new();

/// Installed by the export macro: the function that reaches the host's `log` import.
#[doc(hidden)]
pub fn __install_sink(sink: fn(Level, &str)) {
    let _ = SINK.set(sink);
}

/// Logs `msg` at `level`. Outside molt (native unit tests) the line goes to stderr.
pub fn log(level: Level, msg: &str) {
    match SINK.get() {
        Some(sink) => sink(level, msg),
        None => eprintln!("[{level:?}] {msg}"),
    }
}

pub fn trace(msg: &str) {
    log(Level::Trace, msg)
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}

pub fn info(msg: &str) {
    log(Level::Info, msg)
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}

pub fn error(msg: &str) {
    log(Level::Error, msg)
}
