//! What both bench runners share: the real `molt` binary, running a child process and measuring
//! its wall time, CPU time and peak RSS (from `wait4`, so the figure is the child's own and not
//! this runner's), size overrides from the environment, a scratch directory, and the table the
//! results are printed in.
//!
//! The runners are plain `main` programs (`harness = false`): they time multi-second end-to-end
//! runs once, so a statistics harness would add nothing but build time.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why a bench run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error(
        "{command} exited with status {status}; its output is in {stdout} and {stderr}:\n{tail}"
    )]
    Failed {
        command: String,
        status: u64,
        stdout: PathBuf,
        stderr: PathBuf,
        tail: String,
    },
    #[error("{command} did not do what the bench expects: {reason}")]
    Unexpected { command: String, reason: String },
    #[error("environment variable {name}={value:?} is not a positive whole number")]
    BadOverride { name: &'static str, value: String },
    #[error(transparent)]
    Molt(#[from] molt::Error),
}

impl BenchError {
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BenchError {
        let path = path.to_owned();
        move |source| BenchError::Io { what, path, source }
    }
}

/// The `molt` binary cargo built next to this bench (same profile).
pub fn molt_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_molt"))
}

/// A size override from the environment, or `default` when unset.
pub fn env_count(name: &'static str, default: u64) -> Result<u64, BenchError> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(BenchError::BadOverride { name, value }),
        },
    }
}

/// A scratch directory under `MOLT_BENCH_DIR` (default: the system temp dir), removed on drop
/// unless `MOLT_BENCH_KEEP` is set.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, BenchError> {
    let parent = std::env::var_os("MOLT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .map_err(BenchError::io(
            "cannot create a scratch directory in",
            &parent,
        ))?;
    if std::env::var_os("MOLT_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// One finished child process.
#[derive(Debug, Clone)]
pub struct Measured {
    pub wall: Duration,
    /// User + system CPU time of the child and of the descendants it waited for.
    pub cpu: Duration,
    /// The largest resident set of the child or any descendant it waited for (Linux reports
    /// the maximum over the tree, not a sum).
    pub peak_rss_bytes: u64,
    /// Where its stdout went.
    pub stdout: PathBuf,
}

impl Measured {
    /// The last line of stdout parsed as JSON (molt's `--json` final object), or null.
    pub fn final_object(&self) -> Result<serde_json::Value, BenchError> {
        let text = std::fs::read_to_string(&self.stdout)
            .map_err(BenchError::io("cannot read", &self.stdout))?;
        Ok(text
            .lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
            .unwrap_or(serde_json::Value::Null))
    }
}

/// A child to run and measure: the program, its arguments and working directory; stdout and
/// stderr go to `<logs>/<label>.out` / `.err`.
pub struct Child<'a> {
    pub label: &'a str,
    pub program: &'a OsStr,
    pub args: Vec<&'a OsStr>,
    pub cwd: &'a Path,
    pub logs: &'a Path,
}

impl Child<'_> {
    fn describe(&self) -> String {
        let mut text = Path::new(self.program)
            .file_name()
            .unwrap_or(self.program)
            .to_string_lossy()
            .into_owned();
        for arg in &self.args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    }

    /// Runs the child to completion (through the measuring helper, see
    /// [`serve_as_measuring_helper`]); a non-zero exit is an error carrying its stderr tail.
    pub fn run(&self) -> Result<Measured, BenchError> {
        let stdout = self.logs.join(format!("{}.out", self.label));
        let stderr = self.logs.join(format!("{}.err", self.label));
        let report = self.logs.join(format!("{}.rusage", self.label));
        let out_file = File::create(&stdout).map_err(BenchError::io("cannot create", &stdout))?;
        let err_file = File::create(&stderr).map_err(BenchError::io("cannot create", &stderr))?;
        let helper = std::env::current_exe().map_err(BenchError::io(
            "cannot find this bench's executable",
            Path::new(""),
        ))?;
        let mut command = Command::new(&helper);
        command
            .arg(self.program)
            .args(&self.args)
            .current_dir(self.cwd)
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(err_file)
            .env_remove("RUST_LOG");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MOLT_") {
                command.env_remove(key);
            }
        }
        command.env(HELPER_ENV, &report);

        // Flush what earlier steps left dirty, so that a child that syncs the filesystem (molt
        // does after extracting) pays only for its own writes.
        sync_filesystem(self.cwd)?;
        let helper_status = command.status().map_err(|source| BenchError::Spawn {
            program: self.describe(),
            source,
        })?;
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        let fields: Vec<u64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let &[code, wall_ns, cpu_us, rss_kib] = fields.as_slice() else {
            return Err(BenchError::Unexpected {
                command: self.describe(),
                reason: format!(
                    "the measuring helper exited with {helper_status} and reported {text:?}; \
                     see {}",
                    stderr.display()
                ),
            });
        };
        if code != 0 {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            return Err(BenchError::Failed {
                command: self.describe(),
                status: code,
                stdout,
                stderr,
                tail,
            });
        }
        Ok(Measured {
            wall: Duration::from_nanos(wall_ns),
            cpu: Duration::from_micros(cpu_us),
            peak_rss_bytes: rss_kib * 1024,
            stdout,
        })
    }
}

/// Set (to the report file) when a bench executable is started as the measuring helper.
const HELPER_ENV: &str = "MOLT_BENCH_MEASURE_INTO";

/// Call first in a bench's `main`. When this process is the measuring helper, it runs its
/// arguments as a command, writes `exit-code wall-ns cpu-us peak-rss-kib` to the report file
/// and exits; otherwise it returns.
///
/// Why a helper: Linux counts the peak RSS of the address space a process had *before* `exec`
/// into its `ru_maxrss`, and `Command` spawns with `vfork` semantics, so a child of the bench
/// runner (which may hold a wasmtime engine or large buffers) would report the runner's peak as
/// its own. The helper is a fresh process that forks (not vforks) the command, so the figure is
/// the command's own plus the helper's few pages — the `true` row of each table shows that floor.
pub fn serve_as_measuring_helper() {
    let Some(report) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let report = PathBuf::from(report);
    let code = match measure_command(&report) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("bench measuring helper: {message}");
            125
        }
    };
    std::process::exit(code);
}

fn measure_command(report: &Path) -> Result<(), String> {
    let mut args = std::env::args_os().skip(1);
    let program = args.next().ok_or("no command to run")?;
    let mut command = Command::new(&program);
    command.args(args).env_remove(HELPER_ENV);
    // A `pre_exec` hook makes std fork instead of vfork/posix_spawn: see above.
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe {
        command.pre_exec(|| Ok(()));
    }
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
    let pid = i32::try_from(child.id()).map_err(|_| format!("pid {} too large", child.id()))?;
    let (status, usage) = wait_with_usage(pid).map_err(|e| format!("wait4({pid}): {e}"))?;
    let wall = started.elapsed();
    // The pid is reaped; dropping `child` neither waits nor kills.
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    // Linux reports ru_maxrss in KiB.
    let line = format!(
        "{code} {} {} {}\n",
        wall.as_nanos(),
        cpu.as_micros(),
        usage.ru_maxrss
    );
    std::fs::write(report, line).map_err(|e| format!("cannot write {}: {e}", report.display()))
}

/// `syncfs(2)` on the filesystem holding `dir`.
fn sync_filesystem(dir: &Path) -> Result<(), BenchError> {
    let handle = File::open(dir).map_err(BenchError::io("cannot open", dir))?;
    // SAFETY: a valid, open file descriptor.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(BenchError::Io {
            what: "cannot sync the filesystem of",
            path: dir.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `wait4` on one pid, retried on EINTR: the exit status and the rusage of that child tree.
fn wait_with_usage(pid: i32) -> io::Result<(i32, libc::rusage)> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data; wait4 writes it fully on success.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals; `pid` is our own unreaped child.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            return Ok((status, usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// A plain-text table: a header row, then rows of cells, columns padded to the widest cell
/// (first column left-aligned, the rest right-aligned).
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (i, row) in self.rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c == 0 {
                        format!("{cell:<w$}", w = widths[c])
                    } else {
                        format!("{cell:>w$}", w = widths[c])
                    }
                })
                .collect();
            println!("{}", line.join("  ").trim_end());
            if i == 0 {
                let total = widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
                println!("{}", "-".repeat(total));
            }
        }
    }
}

/// `a / b` as a ratio: `1.84x`, or `1/205` when `a` is under a tenth of `b`.
pub fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() || a.is_zero() {
        return "-".to_owned();
    }
    let r = a.as_secs_f64() / b.as_secs_f64();
    if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("1/{:.0}", 1.0 / r)
    }
}

/// Mebibytes with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

/// Today's date (UTC) for the header line.
pub fn today() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}
