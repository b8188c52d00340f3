//! Tests of the plugin host against the real components built by `host/build.rs`
//! (`MOLT_TEST_PLUGIN_DIR`): molt's own plugins and the hostile `test-*` ones.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use time::macros::datetime;

use molt_test_support::releases::REFERENCE;
use molt_test_support::tree::snapshot;

use super::bindings::WIT_VERSION;
use super::*;
use crate::relpath::RelPath;
use crate::test_support::v;

fn wasm(name: &str) -> PathBuf {
    Path::new(env!("MOLT_TEST_PLUGIN_DIR")).join(format!("{name}.wasm"))
}

fn file(name: &str) -> PluginRef {
    PluginRef::File(wasm(name))
}

/// One cache for the whole test binary, so each plugin is compiled once.
fn shared_cache() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn runtime_with(limits: PluginLimits) -> PluginRuntime {
    PluginRuntime::new(Some(&shared_cache().join("cache")), limits).unwrap()
}

fn runtime() -> PluginRuntime {
    runtime_with(PluginLimits::default())
}

fn short_limits() -> PluginLimits {
    PluginLimits {
        timeout: Duration::from_millis(400),
        ..PluginLimits::default()
    }
}

fn release(version: &str, channel: &str, patches_from: &[&str]) -> ReleaseOffer {
    ReleaseOffer {
        version: v(version),
        channel: channel.into(),
        notes: format!("notes of {version}"),
        published: datetime!(2026-11-30 10:00 UTC),
        full_size: Some(1000),
        patches: patches_from
            .iter()
            .map(|f| PatchOffer {
                from: v(f),
                size: 10,
            })
            .collect(),
    }
}

fn input(installed: Option<&str>) -> StrategyContext {
    StrategyContext {
        installed_version: installed.map(v),
        arch: "x86_64".into(),
        channel: "stable".into(),
        force_full: false,
        requested_version: None,
        releases: REFERENCE
            .iter()
            .map(|(version, channel, from)| release(version, channel, from))
            .collect(),
        rolled_back_from: vec![],
        failed_validation: vec![],
        device_id: "device-0".into(),
        now: datetime!(2026-11-30 03:00 UTC),
    }
}

fn full(version: &str) -> Decision {
    Decision::Full {
        version: v(version),
    }
}

fn patch(from: &str, to: &str) -> Decision {
    Decision::Patch {
        from: v(from),
        to: v(to),
    }
}

fn is_none(decision: &Decision, containing: &str) -> bool {
    matches!(decision, Decision::None { reason } if reason.contains(containing))
}

#[test]
fn default_strategy_follows_each_rule() {
    let plugin = runtime()
        .load_strategy(&PluginRef::parse("builtin:default").unwrap())
        .unwrap();
    let decide = |input: &StrategyContext, config: &str| plugin.decide(input, config).unwrap();

    assert_eq!(
        decide(&input(None), "{}"),
        full("1.2.0"),
        "nothing installed: full newest"
    );
    assert_eq!(
        decide(&input(Some("1.1.0")), "{}"),
        patch("1.1.0", "1.2.0"),
        "newer: patch"
    );
    assert_eq!(
        decide(&input(Some("1.0.0")), "{}"),
        full("1.2.0"),
        "newer, no patch: full"
    );
    assert!(is_none(&decide(&input(Some("1.2.0")), "{}"), "up to date"));

    let mut forced = input(Some("1.1.0"));
    forced.force_full = true;
    assert_eq!(
        decide(&forced, "{}"),
        full("1.2.0"),
        "force-full: full newest"
    );
    forced.requested_version = Some(v("1.0.0"));
    assert_eq!(
        decide(&forced, "{}"),
        full("1.0.0"),
        "force-full + requested"
    );

    let mut skipped = input(Some("1.1.0"));
    skipped.rolled_back_from = vec![v("1.2.0")];
    assert!(
        is_none(&decide(&skipped, "{}"), "up to date"),
        "rolled-back release skipped"
    );
    skipped.rolled_back_from = vec![];
    skipped.failed_validation = vec![v("1.2.0")];
    assert!(
        is_none(&decide(&skipped, "{}"), ""),
        "failed-validation release skipped"
    );
    skipped.requested_version = Some(v("1.2.0"));
    assert_eq!(
        decide(&skipped, "{}"),
        patch("1.1.0", "1.2.0"),
        "requested overrides the skip"
    );

    let mut requested = input(Some("1.2.0"));
    requested.requested_version = Some(v("1.2.0"));
    assert!(is_none(&decide(&requested, "{}"), "already installed"));
    requested.requested_version = Some(v("2.0.0"));
    assert_eq!(decide(&requested, "{}"), patch("1.2.0", "2.0.0"));

    assert_eq!(
        decide(&input(Some("1.2.0")), r#"{"pin": "1.1.0"}"#),
        full("1.1.0"),
        "pin may downgrade"
    );
    assert!(
        is_none(&decide(&input(Some("1.1.0")), r#"{"pin": "1.1.0"}"#), ""),
        "pin holds"
    );
    assert_eq!(
        decide(&input(Some("1.2.0")), r#"{"allow_prerelease": true}"#),
        patch("1.2.0", "1.3.0-rc.1")
    );
    assert!(
        is_none(&decide(&input(Some("9.0.0")), "{}"), ""),
        "never an automatic downgrade"
    );
}

#[test]
fn strategy_errors_are_rejections_naming_the_field() {
    let plugin = runtime()
        .load_strategy(&PluginRef::Builtin(Builtin::Default))
        .unwrap();
    let err = plugin
        .decide(&input(None), r#"{"allow_prerelease": "yes"}"#)
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::Rejected { reason, .. } if reason.contains("allow_prerelease")),
        "{err}"
    );
    assert!(err.to_string().contains("builtin:default"), "{err}");
    assert_eq!(err.exit_class(), crate::error::ExitClass::Failure);

    let mut missing = input(Some("1.0.0"));
    missing.requested_version = Some(v("7.0.0"));
    let err = plugin.decide(&missing, "{}").unwrap_err();
    assert!(err.to_string().contains("7.0.0"), "{err}");
}

/// `allow_downgrade` is molt's own key of `[strategy.config]` (README): every strategy must
/// accept it next to its own keys, even one that denies unknown fields.
#[test]
fn every_strategy_accepts_the_host_key_allow_downgrade() {
    let runtime = runtime();
    for (plugin, config) in [
        (
            PluginRef::Builtin(Builtin::Default),
            r#"{"pin": "1.0.0", "allow_downgrade": true}"#,
        ),
        (
            file("staged_rollout"),
            r#"{"percent": 100, "pin": "1.0.0", "allow_downgrade": true}"#,
        ),
        (
            file("maintenance_window"),
            r#"{"start": "00:00", "end": "23:59", "pin": "1.0.0", "allow_downgrade": true}"#,
        ),
    ] {
        let strategy = runtime.load_strategy(&plugin).unwrap();
        let ctx = input(Some("1.2.0"));
        assert_eq!(
            strategy.decide(&ctx, config).unwrap(),
            full("1.0.0"),
            "{plugin}"
        );
    }
}

#[test]
fn staged_rollout_is_stable_per_device_and_close_to_percent() {
    let plugin = runtime().load_strategy(&file("staged_rollout")).unwrap();
    let config = r#"{"percent": 30}"#;
    let mut reached = 0;
    let devices = 300;
    for n in 0..devices {
        let mut ctx = input(Some("1.1.0"));
        ctx.device_id = format!("device-{n:04}");
        let first = plugin.decide(&ctx, config).unwrap();
        assert_eq!(
            first,
            plugin.decide(&ctx, config).unwrap(),
            "stable for {}",
            ctx.device_id
        );
        match first {
            Decision::Patch { .. } => reached += 1,
            Decision::None { reason } => assert!(
                reason.contains("not rolled out to this device yet (30 %)"),
                "{reason}"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    let share = reached * 100 / devices;
    assert!(
        (20..=40).contains(&share),
        "{share} % of devices got the release, expected about 30 %"
    );

    let everyone = plugin
        .decide(&input(Some("1.1.0")), r#"{"percent": 100}"#)
        .unwrap();
    assert_eq!(everyone, patch("1.1.0", "1.2.0"));
    assert!(is_none(
        &plugin
            .decide(&input(Some("1.1.0")), r#"{"percent": 0}"#)
            .unwrap(),
        "not rolled out"
    ));
    assert_eq!(
        plugin.decide(&input(None), r#"{"percent": 0}"#).unwrap(),
        full("1.2.0"),
        "fresh installs are not gated"
    );
    let err = plugin.decide(&input(None), "{}").unwrap_err();
    assert!(err.to_string().contains("percent"), "{err}");
}

#[test]
fn maintenance_window_inside_outside_and_wrapping() {
    let plugin = runtime()
        .load_strategy(&file("maintenance_window"))
        .unwrap();
    let at = |now: time::OffsetDateTime, config: &str| {
        let mut ctx = input(Some("1.1.0"));
        ctx.now = now;
        plugin.decide(&ctx, config).unwrap()
    };
    let night = r#"{"start": "02:00", "end": "04:00"}"#;
    assert_eq!(
        at(datetime!(2026-11-30 03:00 UTC), night),
        patch("1.1.0", "1.2.0")
    );
    let outside = at(datetime!(2026-11-30 05:00 UTC), night);
    assert!(
        is_none(&outside, "outside maintenance window 02:00–04:00"),
        "{outside:?}"
    );
    assert!(
        is_none(&at(datetime!(2026-11-30 04:00 UTC), night), "outside"),
        "end is exclusive"
    );

    let wrapping = r#"{"start": "22:00", "end": "02:00"}"#;
    assert_eq!(
        at(datetime!(2026-11-30 23:30 UTC), wrapping),
        patch("1.1.0", "1.2.0")
    );
    assert_eq!(
        at(datetime!(2026-11-30 01:59 UTC), wrapping),
        patch("1.1.0", "1.2.0")
    );
    assert!(is_none(
        &at(datetime!(2026-11-30 12:00 UTC), wrapping),
        "outside"
    ));
    // A local time is converted to UTC before the plugin sees it.
    assert_eq!(
        at(datetime!(2026-11-30 05:00 +02:00), night),
        patch("1.1.0", "1.2.0")
    );

    let err = plugin
        .decide(&input(None), r#"{"start": "25:00", "end": "02:00"}"#)
        .unwrap_err();
    assert!(err.to_string().contains("start"), "{err}");
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("bin/app"), b"#!/bin/sh\necho app\n").unwrap();
    std::fs::write(dir.path().join("VERSION"), b"1.2.0\n").unwrap();
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    dir
}

fn validation() -> ValidationContext {
    ValidationContext {
        old_version: Some(v("1.1.0")),
        new_version: v("1.2.0"),
        changed: vec![
            RelPath::new("bin/app").unwrap(),
            RelPath::new("VERSION").unwrap(),
        ],
        removed: vec![],
    }
}

#[test]
fn require_files_passes_and_fails() {
    let tree = tree();
    let plugin = runtime()
        .load_validator(&PluginRef::parse("builtin:require-files").unwrap())
        .unwrap();
    let app_sha = crate::hashing::sha256_file(&tree.path().join("bin/app")).unwrap();
    let ok = |config: &str| plugin.validate(&validation(), config, tree.path());

    ok(r#"{"paths": ["bin/app", "VERSION"]}"#).unwrap();
    ok(&format!(
        r#"{{"files": [{{"path": "bin/app", "sha256": "{app_sha}"}}]}}"#
    ))
    .unwrap();

    let reason = |config: &str| match ok(config).unwrap_err() {
        PluginError::Rejected { reason, .. } => reason,
        other => panic!("expected a rejection, got {other}"),
    };
    assert!(reason(r#"{"paths": ["bin/missing"]}"#).contains("bin/missing"));
    assert!(reason(r#"{"paths": ["empty"]}"#).contains("empty"));
    assert!(reason(r#"{"paths": ["bin"]}"#).contains("not a regular file"));
    assert!(
        reason(&format!(
            r#"{{"files": [{{"path": "VERSION", "sha256": "{app_sha}"}}]}}"#
        ))
        .contains("SHA-256")
    );
    assert!(reason(r#"{"paths": ["../etc/passwd"]}"#).contains("install-relative"));
    assert!(reason("{}").contains("nothing to check"));
}

#[test]
fn version_file_passes_and_fails() {
    let tree = tree();
    let plugin = runtime().load_validator(&file("version_file")).unwrap();
    plugin
        .validate(&validation(), r#"{"path": "VERSION"}"#, tree.path())
        .unwrap();
    let mut newer = validation();
    newer.new_version = v("1.3.0");
    let err = plugin
        .validate(&newer, r#"{"path": "VERSION"}"#, tree.path())
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::Rejected { reason, .. } if reason.contains("1.3.0")),
        "{err}"
    );
    assert!(
        plugin
            .validate(&validation(), r#"{"path": "nope"}"#, tree.path())
            .is_err()
    );
}

fn hostile(mode: &str, limits: PluginLimits) -> (Result<Decision, PluginError>, Duration) {
    let plugin = runtime_with(limits)
        .load_strategy(&file("test_hostile_strategy"))
        .unwrap();
    let started = Instant::now();
    let result = plugin.decide(&input(None), &format!(r#"{{"mode": "{mode}"}}"#));
    (result, started.elapsed())
}

#[test]
fn hostile_loop_is_stopped_at_the_deadline() {
    let limits = short_limits();
    let (result, took) = hostile("loop", limits);
    assert!(
        matches!(result, Err(PluginError::Timeout { .. })),
        "{result:?}"
    );
    assert!(took < limits.timeout * 2, "took {took:?}");
}

#[test]
fn hostile_sleep_in_a_host_call_is_stopped_at_the_deadline() {
    let limits = short_limits();
    let (result, took) = hostile("sleep", limits);
    assert!(
        matches!(result, Err(PluginError::Timeout { .. })),
        "{result:?}"
    );
    assert!(took < limits.timeout * 2, "took {took:?}");
}

#[test]
fn hostile_memory_is_capped() {
    let limits = PluginLimits {
        memory_bytes: 16 << 20,
        ..short_limits()
    };
    let (result, _) = hostile("memory", limits);
    let err = result.unwrap_err();
    assert!(
        matches!(err, PluginError::MemoryLimit { limit_bytes, .. } if limit_bytes == 16 << 20),
        "{err}"
    );
    assert!(
        err.to_string().contains("test_hostile_strategy.wasm"),
        "{err}"
    );
}

#[test]
fn hostile_panic_and_stack_overflow_trap_with_a_message() {
    let (result, _) = hostile("panic", short_limits());
    let err = result.unwrap_err();
    assert!(matches!(&err, PluginError::Trap { .. }), "{err}");
    assert!(
        err.to_string().contains("panicked on purpose"),
        "guest stderr missing: {err}"
    );

    let (result, _) = hostile("stack", short_limits());
    let err = result.unwrap_err();
    // Deep recursion ends either in wasm's call-stack limit or, first, in Rust's shadow stack
    // running below linear memory: both are reported as a stack overflow.
    assert!(
        matches!(&err, PluginError::Trap { message, .. } if message.starts_with("stack overflow")),
        "{err}"
    );
}

#[test]
fn hostile_bogus_version_is_returned_for_the_pipeline_to_refuse() {
    let (result, _) = hostile("bogus-version", short_limits());
    assert_eq!(result.unwrap(), full("9.9.9"));
}

#[test]
fn hostile_huge_answers_are_capped_and_made_printable() {
    let cap = PluginLimits::default().output_bytes;
    let (result, _) = hostile("huge-error", short_limits());
    match result {
        Err(PluginError::Rejected { reason, .. }) => {
            assert!(reason.len() < cap + 100, "{} bytes kept", reason.len());
            assert!(!reason.contains('\u{1b}'), "terminal escape passed through");
            assert!(reason.ends_with("more bytes cut)"), "cut not noted");
        }
        other => panic!("expected a capped rejection, got {other:?}"),
    }
    let (result, _) = hostile("huge-version", short_limits());
    match result {
        Err(err @ PluginError::Malformed { .. }) => {
            assert!(
                err.to_string().len() < cap + 1000,
                "{} bytes",
                err.to_string().len()
            )
        }
        other => panic!("expected a malformed answer, got {:?}", other.map(|_| ())),
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn hostile_log_flood_is_capped() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let limits = PluginLimits {
        timeout: Duration::from_secs(5),
        output_bytes: 16 << 10,
        ..PluginLimits::default()
    };
    let (result, _) = tracing::subscriber::with_default(subscriber, || {
        // Tests on other threads may have registered the log callsite while no subscriber
        // wanted it; recompute its interest now that this one is in scope.
        tracing::callsite::rebuild_interest_cache();
        hostile("log-flood", limits)
    });
    assert!(
        matches!(
            &result,
            Ok(Decision::None { .. }) | Err(PluginError::Timeout { .. })
        ),
        "{result:?}"
    );
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("attempting log-flood"),
        "the plugin's own log line is forwarded"
    );
    assert!(
        log.len() < 32 << 10,
        "{} bytes of log got through",
        log.len()
    );
    if result.is_ok() {
        assert!(log.contains("bytes of log dropped"), "{log}");
    }
}

fn hostile_validation(mode: &str, tree: &Path) -> (Result<(), PluginError>, Duration) {
    let plugin = runtime_with(short_limits())
        .load_validator(&file("test_hostile_validator"))
        .unwrap();
    let started = Instant::now();
    let result = plugin.validate(
        &validation(),
        &format!(r#"{{"mode": "{mode}", "reason": "bad tree"}}"#),
        tree,
    );
    (result, started.elapsed())
}

#[test]
fn hostile_validator_cannot_write_the_tree() {
    let tree = tree();
    let before = snapshot(tree.path(), &[]);
    let (result, _) = hostile_validation("write", tree.path());
    let reason = match result {
        Err(PluginError::Rejected { reason, .. }) => reason,
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("create evil: refused"), "{reason}");
    assert!(reason.contains("append bin/app: refused"), "{reason}");
    assert!(!reason.contains("SUCCEEDED"), "{reason}");
    assert_eq!(snapshot(tree.path(), &[]), before, "the tree changed");
}

#[test]
fn hostile_validator_cannot_escape_the_tree() {
    let tree = tree();
    let (result, _) = hostile_validation("escape", tree.path());
    let reason = match result {
        Err(PluginError::Rejected { reason, .. }) => reason,
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("read /etc/passwd: refused"), "{reason}");
    assert!(!reason.contains("SUCCEEDED"), "{reason}");
}

#[test]
fn hostile_validator_failure_and_loop() {
    let tree = tree();
    let (result, _) = hostile_validation("fail", tree.path());
    assert!(
        matches!(&result, Err(PluginError::Rejected { reason, .. }) if reason == "bad tree"),
        "{result:?}"
    );
    let (result, took) = hostile_validation("loop", tree.path());
    assert!(
        matches!(result, Err(PluginError::Timeout { .. })),
        "{result:?}"
    );
    assert!(took < short_limits().timeout * 2, "took {took:?}");
}

/// Descriptors of this process open on files under `dir` (from `/proc/self/fd`).
fn open_fds_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn a_timed_out_validator_sleeping_in_the_host_is_dropped_with_its_files() {
    let tree = tree();
    let root = tree.path().canonicalize().unwrap();
    let plugin = runtime_with(short_limits())
        .load_validator(&file("test_hostile_validator"))
        .unwrap();
    // Sample the descriptors the guest holds while it sleeps.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, root) = (done.clone(), root.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(open_fds_under(&root));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let started = Instant::now();
    let result = plugin.validate(
        &validation(),
        r#"{"mode": "hoard", "count": 100, "sleep": true}"#,
        tree.path(),
    );
    let took = started.elapsed();
    let after = open_fds_under(&root);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = watcher.join().unwrap();
    assert!(
        matches!(result, Err(PluginError::Timeout { .. })),
        "{result:?}"
    );
    eprintln!("sleeping validator stopped after {took:?}; held {most} descriptors, {after} left");
    assert!(most >= 100, "the guest never held its files: {most}");
    assert_eq!(after, 0, "descriptors outlived the call");
}

#[test]
fn a_call_holding_more_resources_than_allowed_is_stopped() {
    let tree = tree();
    let limits = PluginLimits {
        resources: 64,
        ..short_limits()
    };
    let plugin = runtime_with(limits)
        .load_validator(&file("test_hostile_validator"))
        .unwrap();
    let result = plugin.validate(
        &validation(),
        r#"{"mode": "hoard", "count": 1000}"#,
        tree.path(),
    );
    assert!(
        matches!(result, Err(PluginError::ResourceLimit { limit: 64, .. })),
        "{result:?}"
    );
    assert_eq!(open_fds_under(&tree.path().canonicalize().unwrap()), 0);
}

#[test]
fn hostile_validator_sleep_is_stopped_and_output_floods_are_dropped() {
    let tree = tree();
    let (result, _) = hostile_validation("sleep", tree.path());
    assert!(
        matches!(result, Err(PluginError::Timeout { .. })),
        "{result:?}"
    );
    // 2 MiB of output, far past the 64 KiB kept: dropped and counted, not a crash.
    let plugin = runtime_with(PluginLimits {
        timeout: Duration::from_secs(20),
        ..PluginLimits::default()
    })
    .load_validator(&file("test_hostile_validator"))
    .unwrap();
    let result = plugin.validate(&validation(), r#"{"mode": "stdout-flood"}"#, tree.path());
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn wrong_world_is_refused_before_instantiation() {
    let rt = runtime();
    let err = rt.load_strategy(&file("require_files")).err().unwrap();
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err}");
    assert!(
        err.to_string().ends_with(
            "require_files.wasm is a validator plugin, but [strategy] needs a strategy plugin"
        ),
        "{err}"
    );
    assert_eq!(err.exit_class(), crate::error::ExitClass::Usage);
    let err = rt
        .load_validator(&PluginRef::Builtin(Builtin::Default))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "builtin:default is a strategy plugin, but [[validators]] needs a validator plugin"
    );
}

#[test]
fn non_components_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let random = dir.path().join("random.wasm");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let rt = runtime();
    for (path, what) in [(&random, "no WebAssembly header"), (&core, "core module")] {
        let err = rt
            .load_strategy(&PluginRef::File(path.clone()))
            .err()
            .unwrap();
        assert!(
            matches!(&err, PluginError::NotAComponent { what: w, .. } if w.contains(what)),
            "{err}"
        );
    }
    let missing = rt
        .load_strategy(&PluginRef::File(dir.path().join("missing.wasm")))
        .err()
        .unwrap();
    assert!(matches!(missing, PluginError::Load { .. }), "{missing}");
}

#[test]
fn unknown_builtin_lists_the_available_ones() {
    let err = PluginRef::parse("builtin:nope").unwrap_err();
    assert_eq!(err.exit_class(), crate::error::ExitClass::Usage);
    let text = err.to_string();
    assert!(
        text.contains("builtin:default, builtin:require-files"),
        "{text}"
    );
    assert_eq!(
        PluginRef::parse("/x/y.wasm").unwrap(),
        PluginRef::File("/x/y.wasm".into())
    );
}

#[test]
fn second_load_comes_from_the_cache_and_a_corrupt_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plugin = PluginRef::Builtin(Builtin::Default);

    let first = PluginRuntime::new(Some(&cache), PluginLimits::default()).unwrap();
    first.load_strategy(&plugin).unwrap();
    assert_eq!(
        first.load_stats(),
        LoadStats {
            compiled: 1,
            from_cache: 0
        }
    );
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&cache), 0o700);
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].extension().is_some_and(|e| e == "cwasm"));
    assert_eq!(mode(&entries[0]), 0o600);

    let second = PluginRuntime::new(Some(&cache), PluginLimits::default()).unwrap();
    let loaded = second.load_strategy(&plugin).unwrap();
    assert_eq!(
        second.load_stats(),
        LoadStats {
            compiled: 0,
            from_cache: 1
        }
    );
    assert_eq!(loaded.decide(&input(None), "{}").unwrap(), full("1.2.0"));

    // Replace, never rewrite in place: the second runtime still maps the entry (a truncated
    // mapping is SIGBUS, which is why the cache only ever renames new entries into place).
    let corrupt = dir.path().join("corrupt");
    std::fs::write(&corrupt, b"not a compiled component").unwrap();
    std::fs::rename(&corrupt, &entries[0]).unwrap();
    let third = PluginRuntime::new(Some(&cache), PluginLimits::default()).unwrap();
    let recompiled = third.load_strategy(&plugin).unwrap();
    assert_eq!(
        third.load_stats(),
        LoadStats {
            compiled: 1,
            from_cache: 0
        }
    );
    assert_eq!(
        recompiled.decide(&input(None), "{}").unwrap(),
        full("1.2.0")
    );

    // A well-formed entry with damaged machine code (every byte of its second half flipped):
    // without the checksum, wasmtime would map and run it.
    let mut damaged = std::fs::read(&entries[0]).unwrap();
    let half = damaged.len() / 2;
    for byte in &mut damaged[half..] {
        *byte = !*byte;
    }
    std::fs::write(&corrupt, &damaged).unwrap();
    std::fs::rename(&corrupt, &entries[0]).unwrap();
    let fourth = PluginRuntime::new(Some(&cache), PluginLimits::default()).unwrap();
    let recompiled = fourth.load_strategy(&plugin).unwrap();
    assert_eq!(fourth.load_stats().compiled, 1);
    assert_eq!(
        recompiled.decide(&input(None), "{}").unwrap(),
        full("1.2.0")
    );
    assert_ne!(
        std::fs::read(&entries[0]).unwrap(),
        damaged,
        "entry rewritten"
    );
}

#[test]
fn a_strategy_built_before_config_check_still_loads_and_runs() {
    let plugin = runtime()
        .load_strategy(&file("test_before_config_check"))
        .unwrap();
    assert!(!plugin.check_config(r#"{"anything": 1}"#).unwrap());
    assert!(is_none(
        &plugin.decide(&input(None), "{}").unwrap(),
        "old plugin"
    ));
}

#[test]
fn a_plugin_rejecting_its_config_names_the_key() {
    let plugin = runtime()
        .load_validator(&PluginRef::parse("builtin:require-files").unwrap())
        .unwrap();
    assert!(plugin.check_config(r#"{"paths": ["bin/app"]}"#).unwrap());
    let err = plugin
        .check_config(r#"{"pahts": ["bin/app"]}"#)
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::BadConfig { key, .. } if key == "pahts"),
        "{err}"
    );
    assert_eq!(err.exit_class(), crate::error::ExitClass::Usage);
}

#[test]
fn inspect_reports_one_world_per_plugin() {
    let rt = runtime();
    let before = rt.load_stats();
    let report = rt.inspect(&wasm("default")).unwrap();
    let after = rt.load_stats();
    assert_eq!(
        after.compiled + after.from_cache,
        before.compiled + before.from_cache + 1,
        "inspect reads and compiles the component once, also for calling its info()"
    );
    assert_eq!(report.world, Some(PluginKind::Strategy));
    assert_eq!(report.package_version.as_deref(), Some(WIT_VERSION));
    assert_eq!(report.info.as_ref().unwrap().name, "default");
    let ours: Vec<_> = report
        .exports
        .iter()
        .filter(|e| e.starts_with("molt:plugin/"))
        .collect();
    assert_eq!(
        ours,
        [
            "molt:plugin/strategy-plugin@0.1.0",
            "molt:plugin/config-check@0.1.0"
        ],
        "a strategy exports exactly its world"
    );
    assert!(report.compatible && report.incompatible_reason.is_none());
    assert!(
        report.imports.iter().any(|i| i == "molt:plugin/host@0.1.0"),
        "{:?}",
        report.imports
    );
    assert!(
        report
            .to_string()
            .contains("world:      strategy (molt:plugin@0.1.0)"),
        "{report}"
    );
    serde_json::to_string(&report).unwrap();

    let report = rt.inspect(&wasm("test_hostile_validator")).unwrap();
    assert_eq!(report.world, Some(PluginKind::Validator));
    let ours: Vec<_> = report
        .exports
        .iter()
        .filter(|e| e.starts_with("molt:plugin/"))
        .collect();
    assert_eq!(
        ours,
        [
            "molt:plugin/validator-plugin@0.1.0",
            "molt:plugin/config-check@0.1.0"
        ]
    );
    assert_eq!(report.info.unwrap().name, "test-hostile-validator");
}

/// Figures for the benchmark (printed, not asserted): `cargo test -p molt --lib
/// plugins::tests::measure -- --nocapture`.
#[test]
fn measure_load_and_call_costs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plugin = PluginRef::Builtin(Builtin::Default);

    let started = Instant::now();
    let rt = PluginRuntime::new(Some(&cache), PluginLimits::default()).unwrap();
    rt.load_strategy(&plugin).unwrap();
    let compile = started.elapsed();

    let started = Instant::now();
    let rt = PluginRuntime::new(Some(&cache), PluginLimits::default()).unwrap();
    let loaded = rt.load_strategy(&plugin).unwrap();
    let cached = started.elapsed();

    let ctx = input(Some("1.1.0"));
    loaded.decide(&ctx, "{}").unwrap();
    let calls = 50;
    let started = Instant::now();
    for _ in 0..calls {
        loaded.decide(&ctx, "{}").unwrap();
    }
    let per_call = started.elapsed() / calls;
    println!(
        "plugin costs ({} build): first load (compile) {compile:?}, cached load {cached:?}, \
         decide (fresh store + instantiate + call) {per_call:?}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}
