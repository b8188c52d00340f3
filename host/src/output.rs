//! What molt tells the operator: human lines (with a progress bar on a terminal) or `--json`
//! JSON Lines — progress events first, then exactly one final object with `"result"`.
//!
//! The JSON shapes are a documented wire format (README, "JSON output"): keys are only ever
//! added. Human output goes to stderr while work is in progress and the final summary to stdout,
//! so `molt status | grep` stays clean.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// What a progress count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Bytes,
    /// File operations of a transaction (one per path).
    Ops,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Ops => "ops",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Unit::Bytes => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            Unit::Ops => "{msg} [{bar:30}] {human_pos}/{human_len} files eta {eta}",
        }
    }
}

pub struct Output {
    json: bool,
    tty: bool,
    bar: RefCell<Option<ProgressBar>>,
    last_json_progress: RefCell<Option<Instant>>,
    /// The step and last quarter (0–4) reported as a plain line when stderr is not a terminal.
    last_plain_quarter: RefCell<Option<(String, u64)>>,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            tty: std::io::stderr().is_terminal(),
            bar: RefCell::new(None),
            last_json_progress: RefCell::new(None),
            last_plain_quarter: RefCell::new(None),
        }
    }

    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// A step of the flow: `{"event": name, ...fields}` in JSON mode, `message` otherwise.
    pub fn event(&self, name: &str, message: &str, fields: impl Serialize) {
        if self.json {
            let fields = serde_json::to_value(fields).unwrap_or_default();
            let mut obj = Map::new();
            obj.insert("event".into(), Value::from(name));
            if let Value::Object(f) = fields {
                obj.extend(f);
            }
            print_json_line(&Value::Object(obj));
        } else {
            self.clear_bar();
            eprintln!("{message}");
        }
    }

    /// Progress of a long step — a download or an extraction in bytes, the install's file
    /// operations in ops — throttled in JSON mode. A step's first call starts its bar; a new
    /// step (another `what`) ends the previous bar.
    pub(crate) fn progress(&self, what: &str, unit: Unit, done: u64, total: u64) {
        if self.json {
            let mut last = self.last_json_progress.borrow_mut();
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
            if due || done == total {
                *last = Some(Instant::now());
                print_json_line(&json!({
                    "event": "progress",
                    "what": what,
                    "unit": unit.name(),
                    "done": done,
                    "total": total,
                }));
            }
        } else if self.tty {
            let mut slot = self.bar.borrow_mut();
            if slot.as_ref().is_some_and(|b| b.message() != what)
                && let Some(b) = slot.take()
            {
                b.finish_and_clear();
            }
            let bar = slot.get_or_insert_with(|| {
                let b = ProgressBar::new(total);
                b.set_style(
                    ProgressStyle::with_template(unit.template())
                        .expect("static template")
                        .progress_chars("=> "),
                );
                b.set_message(what.to_owned());
                b
            });
            bar.set_position(done);
        } else {
            let quarter = (done * 4).checked_div(total).unwrap_or(4).min(4);
            let mut last = self.last_plain_quarter.borrow_mut();
            if last
                .as_ref()
                .is_none_or(|(w, q)| *w != what || quarter > *q)
            {
                eprintln!("{what}: {done}/{total} {} ({}%)", unit.name(), quarter * 25);
                *last = Some((what.to_owned(), quarter));
            }
        }
    }

    /// Ends a progress bar, if one is showing.
    pub(crate) fn clear_bar(&self) {
        self.last_plain_quarter.replace(None);
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }

    /// The final object of a successful command; `summary` is the human line. A `"warnings"`
    /// array in `fields` (housekeeping that failed after the change was committed) is printed
    /// as `warning:` lines for humans.
    pub fn success(&self, summary: &str, fields: impl Serialize) {
        self.clear_bar();
        let fields = serde_json::to_value(fields).unwrap_or_default();
        if !self.json
            && let Some(warnings) = fields.get("warnings").and_then(Value::as_array)
        {
            for w in warnings {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
        }
        if self.json {
            let mut obj = Map::new();
            obj.insert("result".into(), Value::from("ok"));
            if let Value::Object(f) = fields {
                obj.extend(f);
            }
            print_json_line(&Value::Object(obj));
        } else if !summary.is_empty() {
            outln!("{summary}");
        }
    }

    /// The final object of a failed command; `os_error` is the errno name (`"ENOSPC"`) when an
    /// operating-system error caused it.
    pub fn failure(&self, error: &str, exit_code: i32, os_error: Option<&str>) {
        self.clear_bar();
        if self.json {
            let mut obj = json!({"result": "error", "error": error, "exit_code": exit_code});
            if let Some(name) = os_error {
                obj["os_error"] = json!(name);
            }
            print_json_line(&obj);
        } else {
            eprintln!("error: {error}");
        }
    }

    /// A whole document (e.g. `molt status --json`), printed as one line.
    pub(crate) fn document(&self, value: &Value) {
        print_json_line(value);
    }
}

/// One line on stdout. A closed stdout (`molt status | head -1`) is not an error of the
/// command: the line is dropped and the command ends with its own exit code (`println!` would
/// panic).
pub(crate) fn print_line(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(text).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}

/// `println!` through [`print_line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

fn print_json_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
