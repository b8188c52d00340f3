//! Crash injection for tests, counted at every durable step of a transaction.
//!
//! Crash safety is only believable if every point between two durable steps has been crashed at
//! and recovered from. Each journal append, rename, directory creation or removal, directory-fsync
//! batch and state write calls [`step`] *after* its effect is on disk, so "crash at step k" means
//! "exactly k durable steps happened". The module is compiled into every build but does nothing
//! unless the environment asks for it:
//!
//! - `MOLT_TEST_CRASH_AT_STEP=N`: at the N-th step the process prints
//!   `molt: crash injected at step N (<label>)` to stderr and kills itself with `SIGKILL`, so no
//!   destructor, rollback or cleanup code runs — the same as a `kill -9`.
//! - `MOLT_TEST_FAIL_AT_STEP=N`: the N-th step returns an `io::Error` with `EIO` (after its
//!   effect happened, like an `fsync` that reports a failed writeback) and prints
//!   `molt: EIO injected at step N (<label>)` to stderr; the error flows through the caller's
//!   real error path. Every other step succeeds.
//! - `MOLT_TEST_REPORT_STEPS=1`: when the process exits normally it prints
//!   `molt: steps taken: N` to stderr (call [`init_from_env`] at start-up so a run with zero steps
//!   reports too).
//!
//! Unit tests inside the crate simulate a crash without killing the test process: the step
//! unwinds with a private payload (no panic hook, no output) and, because no transaction code
//! does work in a destructor, the filesystem is left exactly as a kill would leave it.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static STEPS: AtomicU64 = AtomicU64::new(0);

struct EnvConfig {
    crash_at: Option<u64>,
    fail_at: Option<u64>,
    report: bool,
}

fn env_config() -> &'static EnvConfig {
    static CONFIG: OnceLock<EnvConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let at = |name| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        let (crash_at, fail_at) = (at("MOLT_TEST_CRASH_AT_STEP"), at("MOLT_TEST_FAIL_AT_STEP"));
        let report = std::env::var("MOLT_TEST_REPORT_STEPS").is_ok_and(|v| v.trim() == "1");
        if report {
            register_exit_report();
        }
        EnvConfig {
            crash_at,
            fail_at,
            report,
        }
    })
}

extern "C" fn report_at_exit() {
    eprintln!("molt: steps taken: {}", STEPS.load(Ordering::SeqCst));
}

fn register_exit_report() {
    // SAFETY: `report_at_exit` is a plain `extern "C"` function without arguments that only
    // writes to the (unbuffered) standard error stream.
    let rc = unsafe { libc::atexit(report_at_exit) };
    if rc != 0 {
        tracing::warn!("could not register the step report (atexit returned {rc})");
    }
}

/// Reads the test environment variables now; call once at process start so a run that takes
/// no durable step still prints its step report.
pub fn init_from_env() {
    let config = env_config();
    if config.report {
        tracing::debug!("failpoint step report enabled");
    }
}

/// Number of durable steps this process has taken so far.
#[cfg(test)]
pub(crate) fn steps_taken() -> u64 {
    STEPS.load(Ordering::SeqCst)
}

/// Marks one durable step (`label` says which), right after its effect reached the disk. May
/// end the process, or fail with `EIO`, when a test asked for that here; the caller treats the
/// error like the failure of the step's own system calls.
pub fn step(label: &str) -> io::Result<()> {
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    let config = env_config();
    if config.crash_at == Some(n) {
        eprintln!("molt: crash injected at step {n} ({label})");
        // SAFETY: raising a signal has no memory-safety preconditions; SIGKILL ends the process.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
    #[cfg(test)]
    simulation::on_step(label);
    if config.fail_at == Some(n) {
        eprintln!("molt: EIO injected at step {n} ({label})");
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}

/// In-process crash simulation for the crate's unit tests.
#[cfg(test)]
pub(crate) mod simulation {
    use std::cell::{Cell, RefCell};
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
        static CRASH_AT: Cell<Option<u64>> = const { Cell::new(None) };
        static LABELS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// The unwind payload of a simulated crash.
    struct InjectedCrash;

    pub(super) fn on_step(label: &str) {
        let n = COUNT.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        LABELS.with(|l| l.borrow_mut().push(label.to_owned()));
        if CRASH_AT.with(|c| c.get()) == Some(n) {
            resume_unwind(Box::new(InjectedCrash));
        }
    }

    fn reset(crash_at: Option<u64>) {
        COUNT.with(|c| c.set(0));
        CRASH_AT.with(|c| c.set(crash_at));
        LABELS.with(|l| l.borrow_mut().clear());
    }

    /// Runs `f`, recording the label of every durable step it takes on this thread.
    pub(crate) fn record_steps<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
        reset(None);
        let out = f();
        (out, LABELS.with(|l| l.borrow_mut().split_off(0)))
    }

    /// Runs `f` and "crashes" it right after its `k`-th durable step: returns `None` if the crash
    /// happened, `Some(result)` if `f` finished in fewer steps.
    pub(crate) fn crash_after_step<T>(k: u64, f: impl FnOnce() -> T) -> Option<T> {
        reset(Some(k));
        let result = catch_unwind(AssertUnwindSafe(f));
        reset(None);
        match result {
            Ok(v) => Some(v),
            Err(payload) if payload.is::<InjectedCrash>() => None,
            Err(payload) => resume_unwind(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::simulation::{crash_after_step, record_steps};
    use super::*;

    #[test]
    fn counts_steps_and_stops_at_the_requested_one() {
        let before = steps_taken();
        let ((), labels) = record_steps(|| {
            for l in ["a", "b", "c"] {
                step(l).unwrap();
            }
        });
        assert_eq!(labels, ["a", "b", "c"]);
        assert!(steps_taken() >= before + 3);

        let mut reached = Vec::new();
        let out = crash_after_step(2, || {
            for l in ["a", "b", "c"] {
                step(l).unwrap();
                reached.push(l);
            }
        });
        assert!(out.is_none());
        assert_eq!(reached, ["a"]);
        assert_eq!(crash_after_step(9, || 7), Some(7));
    }

    /// Runs only inside the child process spawned by the test below.
    #[test]
    fn env_child_takes_three_steps() {
        if std::env::var_os("MOLT_FAILPOINT_CHILD").is_none() {
            return;
        }
        init_from_env();
        let results: Vec<_> = ["a", "b", "c"].iter().map(|l| step(l)).collect();
        for (l, r) in ["a", "b", "c"].iter().zip(results) {
            eprintln!(
                "step {l}: {}",
                r.map_or_else(|e| e.to_string(), |()| "ok".into())
            );
        }
    }

    fn run_child(env: (&str, &str)) -> std::process::Output {
        let exe = std::env::current_exe().unwrap();
        std::process::Command::new(exe)
            .args(["--exact", "failpoint::tests::env_child_takes_three_steps"])
            .args(["--nocapture", "--test-threads=1"])
            .env("MOLT_FAILPOINT_CHILD", "1")
            .env(env.0, env.1)
            .output()
            .unwrap()
    }

    #[test]
    fn env_crash_kills_the_process_with_sigkill() {
        use std::os::unix::process::ExitStatusExt;
        let out = run_child(("MOLT_TEST_CRASH_AT_STEP", "2"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{stderr}");
        assert!(
            stderr.contains("molt: crash injected at step 2 (b)"),
            "{stderr}"
        );
    }

    #[test]
    fn env_fail_returns_eio_at_exactly_that_step() {
        let out = run_child(("MOLT_TEST_FAIL_AT_STEP", "2"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("molt: EIO injected at step 2 (b)"),
            "{stderr}"
        );
        let eio = io::Error::from_raw_os_error(libc::EIO).to_string();
        assert!(stderr.contains("step a: ok"), "{stderr}");
        assert!(stderr.contains(&format!("step b: {eio}")), "{stderr}");
        assert!(stderr.contains("step c: ok"), "{stderr}");
    }

    #[test]
    fn env_report_prints_the_step_count_at_exit() {
        let out = run_child(("MOLT_TEST_REPORT_STEPS", "1"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("molt: steps taken: 3"), "{stderr}");
    }
}
