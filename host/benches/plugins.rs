//! `cargo bench -p molt --bench plugins`: what the `builtin:default` strategy costs.
//!
//! In process: the first load (compile into an empty cache), a second runtime loading it from
//! the cache, and the warm per-call time of `decide` (fresh store, instantiate, call), set
//! against fetching and verifying a realistic signed manifest in the same run, so the plugin's
//! cost reads relative to the rest of a check. Then, as an end-to-end reference, `molt check`
//! of the real binary on a tiny repository: once with an empty plugin cache, then warm.
//! Nothing is asserted about the timings: this prints tables.
//!
//! Overrides: `MOLT_BENCH_RELEASES` (releases in the repository, each with patches from every
//! earlier one; default 10), `MOLT_BENCH_LOADS` (compiles and cached loads; default 5),
//! `MOLT_BENCH_CALLS` (timed `decide` and manifest verifications; default 200),
//! `MOLT_BENCH_CHECKS` (warm `molt check` runs; default 5), `MOLT_BENCH_DIR`, `MOLT_BENCH_KEEP`.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{BenchError, Child, Measured, Table, env_count, mib, molt_binary, ratio};
use molt::config::Config;
use molt::fetch::{MANIFEST_CAP, SIGNATURE_CAP, Source};
use molt::keys::{generate_keypair, load_verifying_key};
use molt::plugins::{PluginLimits, PluginRef, PluginRuntime, StrategyPlugin};
use molt::repo::manifest::Manifest;
use molt::repo::publish::{PublishRequest, publish};
use molt::repo::trust::{TrustPolicy, verify_manifest};
use molt::state::InstallState;
use molt::strategy::{Request, strategy_context};
use molt::version::Version;
use time::OffsetDateTime;

const PRODUCT: &str = "bench-app";
const STRATEGY: &str = "builtin:default";

/// Median and mean of a set of timings.
struct Summary {
    n: usize,
    median: Duration,
    mean: Duration,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort();
        let n = samples.len();
        let total: Duration = samples.iter().sum();
        Summary {
            n,
            median: samples.get(n / 2).copied().unwrap_or_default(),
            mean: total / u32::try_from(n.max(1)).unwrap_or(u32::MAX),
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Times `f` `n` times, each call on its own.
fn sample<T>(
    n: u64,
    mut f: impl FnMut(u64) -> Result<T, BenchError>,
) -> Result<Summary, BenchError> {
    let mut samples = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        f(i)?;
        samples.push(started.elapsed());
    }
    Ok(Summary::of(samples))
}

/// A small release tree: a binary, a config and a data file; `release` changes two of them.
fn write_tree(dir: &Path, release: u64) -> Result<(), BenchError> {
    let files = [
        (
            "bin/app",
            format!("#!/bin/sh\necho app release {release}\n"),
        ),
        (
            "conf/app.toml",
            format!("release = {release}\nlevel = \"info\"\n"),
        ),
        (
            "share/readme.txt",
            "A tiny release tree for the plugin bench.\n".repeat(20),
        ),
    ];
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(BenchError::io("cannot create", parent))?;
        }
        fs::write(&path, text).map_err(BenchError::io("cannot write", &path))?;
    }
    Ok(())
}

/// Publishes `releases` releases (1.0.0, 1.1.0, …) into `root/repo`; returns the public key.
fn build_repository(root: &Path, releases: u64) -> Result<PathBuf, BenchError> {
    let (secret, public) =
        generate_keypair(&root.join("keys"), "release").map_err(molt::Error::from)?;
    for release in 0..releases {
        let tree = root.join(format!("trees/{release}"));
        write_tree(&tree, release)?;
        let version = Version::parse(&format!("1.{release}.0")).map_err(molt::Error::from)?;
        let request = PublishRequest::new(&root.join("repo"), &secret, PRODUCT, version, &tree);
        publish(&request).map_err(molt::Error::from)?;
    }
    Ok(public)
}

fn load(runtime: &PluginRuntime) -> Result<StrategyPlugin, BenchError> {
    let plugin = PluginRef::parse(STRATEGY).map_err(molt::Error::from)?;
    Ok(runtime.load_strategy(&plugin).map_err(molt::Error::from)?)
}

fn check_loads(
    runtime: &PluginRuntime,
    compiled: usize,
    from_cache: usize,
) -> Result<(), BenchError> {
    let stats = runtime.load_stats();
    if stats.compiled != compiled || stats.from_cache != from_cache {
        return Err(BenchError::Unexpected {
            command: format!("loading {STRATEGY}"),
            reason: format!("expected {compiled} compiled and {from_cache} cached, got {stats:?}"),
        });
    }
    Ok(())
}

fn main() -> Result<(), BenchError> {
    common::serve_as_measuring_helper();
    let releases = env_count("MOLT_BENCH_RELEASES", 10)?;
    let loads = env_count("MOLT_BENCH_LOADS", 5)?;
    let calls = env_count("MOLT_BENCH_CALLS", 200)?;
    let checks = env_count("MOLT_BENCH_CHECKS", 5)?;
    let scratch = common::scratch_dir("molt-bench-plugins-")?;
    let root = scratch.path();
    let logs = root.join("logs");
    fs::create_dir_all(&logs).map_err(BenchError::io("cannot create", &logs))?;

    let public = build_repository(root, releases)?;
    let config_path = root.join("molt.toml");
    let config_text = format!(
        "product = \"{PRODUCT}\"\ninstall_dir = \"install\"\ndevice_id = \"bench\"\n\n\
         [strategy]\nplugin = \"{STRATEGY}\"\n\n\
         [source]\nurl = \"file://{}\"\nkeys = [\"keys/release.pub.pem\"]\n",
        root.join("repo").display()
    );
    fs::write(&config_path, config_text).map_err(BenchError::io("cannot write", &config_path))?;
    let config = Config::load(&config_path).map_err(molt::Error::from)?;
    let manifest_path = root.join("repo/manifest.json");
    let manifest_size = fs::metadata(&manifest_path)
        .map_err(BenchError::io("cannot stat", &manifest_path))?
        .len();
    println!(
        "molt plugins bench ({}), strategy {STRATEGY}; repository of {releases} releases \
         (manifest {manifest_size} bytes); in {}",
        common::today(),
        root.display()
    );

    // The process-wide engine is created by the first runtime; time it apart from the loads.
    let started = Instant::now();
    PluginRuntime::new(None, PluginLimits::default()).map_err(molt::Error::from)?;
    let engine = started.elapsed();

    let cache = |i: u64| root.join(format!("caches/{i}"));
    let compile = sample(loads, |i| {
        let runtime = PluginRuntime::new(Some(&cache(i)), PluginLimits::default())
            .map_err(molt::Error::from)?;
        load(&runtime)?;
        check_loads(&runtime, 1, 0)
    })?;
    let mut strategy = None;
    let cached = sample(loads, |_| {
        let runtime = PluginRuntime::new(Some(&cache(0)), PluginLimits::default())
            .map_err(molt::Error::from)?;
        strategy = Some(load(&runtime)?);
        check_loads(&runtime, 0, 1)
    })?;
    let strategy = strategy.ok_or_else(|| BenchError::Unexpected {
        command: format!("loading {STRATEGY}"),
        reason: "no load was run".into(),
    })?;

    // The pipeline's own manifest step: fetch both files, verify the signature, parse, check.
    let source = Source::parse(&config.source_url, &config.base_dir).map_err(molt::Error::from)?;
    let policy = TrustPolicy {
        product: PRODUCT.into(),
        keys: vec![load_verifying_key(&public).map_err(molt::Error::from)?],
        threshold: 1,
        min_serial: 0,
        now: OffsetDateTime::now_utc(),
    };
    let fetch_and_verify = || -> Result<Manifest, BenchError> {
        let manifest = source
            .fetch_small("manifest.json", MANIFEST_CAP)
            .map_err(molt::Error::from)?;
        let signature = source
            .fetch_small("manifest.json.sig", SIGNATURE_CAP)
            .map_err(molt::Error::from)?;
        let url = source.display_url("manifest.json");
        Ok(verify_manifest(&manifest, &signature, &policy, &url).map_err(molt::Error::from)?)
    };
    let manifest = fetch_and_verify()?;
    let verify = sample(calls, |_| fetch_and_verify())?;

    // What `molt check` asks on an install at the first release.
    let state = InstallState {
        version: Some(Version::parse("1.0.0").map_err(molt::Error::from)?),
        ..InstallState::default()
    };
    let input = strategy_context(
        &config,
        &manifest,
        &state,
        &Request::default(),
        "bench".into(),
    );
    let decide_once = || -> Result<(), BenchError> {
        strategy
            .decide(&input, &config.strategy.config_json)
            .map_err(molt::Error::from)?;
        Ok(())
    };
    for _ in 0..5 {
        decide_once()?;
    }
    let decision = strategy
        .decide(&input, &config.strategy.config_json)
        .map_err(molt::Error::from)?;
    let decide = sample(calls, |_| decide_once())?;

    // End to end: the binary, first with no state dir (so no plugin cache), then warm.
    let run_check = |label: &str| -> Result<Measured, BenchError> {
        let measured = Child {
            label,
            program: molt_binary().as_os_str(),
            args: ["check", "--config", "molt.toml", "--json"]
                .map(OsStr::new)
                .to_vec(),
            cwd: root,
            logs: &logs,
        }
        .run()?;
        let last = measured.final_object()?;
        if last["result"] != "ok" || last["kind"] != "full" {
            return Err(BenchError::Unexpected {
                command: "molt check".into(),
                reason: format!("expected a full install on offer, got {last}"),
            });
        }
        Ok(measured)
    };
    let floor = Child {
        label: "floor",
        program: OsStr::new("true"),
        args: Vec::new(),
        cwd: root,
        logs: &logs,
    }
    .run()?;
    let cold_check = run_check("check-cold")?;
    let mut warm_checks = Vec::new();
    for i in 0..checks {
        warm_checks.push(run_check(&format!("check-warm-{i}"))?);
    }
    warm_checks.sort_by_key(|m| m.wall);
    let warm_check = warm_checks.swap_remove(warm_checks.len() / 2);

    let mut table = Table::new(&["step", "n", "median ms", "mean ms", "ratio", "against"]);
    let mut row = |step: &str, s: &Summary, against: Option<(&str, &Summary)>| {
        let (r, name) = match against {
            Some((name, base)) => (ratio(s.median, base.median), name.to_owned()),
            None => ("-".to_owned(), String::new()),
        };
        table.row(vec![
            step.to_owned(),
            s.n.to_string(),
            millis(s.median),
            millis(s.mean),
            r,
            name,
        ]);
    };
    let engine = Summary::of(vec![engine]);
    row("engine start (first runtime)", &engine, None);
    row("first load: compile", &compile, None);
    row(
        "second load: from the cache",
        &cached,
        Some(("compile", &compile)),
    );
    row(
        &format!("fetch + verify manifest ({releases} releases)"),
        &verify,
        None,
    );
    row(
        "decide, warm (store + instantiate + call)",
        &decide,
        Some(("fetch + verify", &verify)),
    );
    println!();
    table.print();
    println!("decision for an install at 1.0.0: {decision:?}");

    let mut processes = Table::new(&[
        "molt check (process)",
        "wall ms",
        "CPU ms",
        "peak RSS MiB",
        "vs warm",
    ]);
    for (step, m) in [
        ("empty plugin cache (compiles)", &cold_check),
        ("warm cache (median)", &warm_check),
        ("measurement floor: true", &floor),
    ] {
        processes.row(vec![
            step.to_owned(),
            millis(m.wall),
            millis(m.cpu),
            mib(m.peak_rss_bytes),
            ratio(m.wall, warm_check.wall),
        ]);
    }
    println!();
    processes.print();
    println!(
        "warm decide is {:.1} % of a warm `molt check`; the cached load is {:.1} %",
        100.0 * decide.median.as_secs_f64() / warm_check.wall.as_secs_f64(),
        100.0 * cached.median.as_secs_f64() / warm_check.wall.as_secs_f64()
    );
    Ok(())
}
