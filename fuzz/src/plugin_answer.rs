//! The host's handling of what a plugin answers: the decision (full / patch / none / refusal)
//! with its version and reason strings, a validator's error string, and `info()`, then the
//! strategy decision resolved against a fixed signed manifest, install state and request.
//!
//! Input: `[kind, cap, flags, text…]`, the text split at the first 0xFF byte into two strings.
//!
//! Invariants: every string the host keeps is capped (at `cap` bytes plus the cut notice) and
//! printable; a version it accepts is the one the (capped) text spells; and a resolved choice is
//! always something the manifest signed for this arch, starting at the installed version for a
//! patch, honouring `--version` and `--force-full`, and never a downgrade the operator did not
//! allow.

use std::path::Path;
use std::sync::OnceLock;

use molt::config::Config;
use molt::plugins::fuzzing::{StrategyAnswer, info_answer, strategy_answer, validator_answer};
use molt::plugins::{Decision, PluginError};
use molt::repo::manifest::Manifest;
use molt::state::InstallState;
use molt::strategy::{Choice, Request, resolve};
use molt::version::Version;

const PLUGIN: &str = "/opt/plugins/strategy.wasm";
const CAPS: [usize; 4] = [0, 8, 64, 4096];

fn sha(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn manifest() -> &'static Manifest {
    static M: OnceLock<Manifest> = OnceLock::new();
    M.get_or_init(|| {
        let pkg = |url: &str, c: char| {
            serde_json::json!({"url": url, "size": 10, "sha256": sha(c), "unpacked_size": 20})
        };
        let patch = |from: &str, url: &str, c: char| {
            let mut p = pkg(url, c);
            p["from"] = from.into();
            p["operations"] = serde_json::json!({"replace": {"files": ["bin/app"]}});
            p
        };
        let release = |v: &str, channel: &str, full: bool, patches: Vec<serde_json::Value>| {
            let mut a = serde_json::json!({ "patches": patches });
            if full {
                a["full"] = pkg(&format!("packages/{channel}-{v}.tar.gz"), 'a');
            }
            serde_json::json!({"version": v, "channel": channel,
                "published": "2026-11-01T00:00:00Z", "artifacts": {"amd64": a}})
        };
        let m = serde_json::json!({
            "format": 1, "product": "demo-app", "serial": 7, "expires": "2027-01-01T00:00:00Z",
            "releases": [
                release("1.0.0", "stable", true, vec![]),
                release("1.1.0", "stable", true, vec![patch("1.0.0", "packages/p10-11.tar.gz", 'b')]),
                release("1.2.0", "stable", false, vec![patch("1.1.0", "packages/p11-12.tar.gz", 'c')]),
                release("2.0.0-rc.1", "stable", true, vec![
                    patch("1.1.0", "packages/p11-20.tar.gz", 'd'),
                    patch("1.2.0", "packages/p12-20.tar.gz", 'e')]),
                release("1.1.0", "beta", true, vec![]),
                release("3.0.0", "beta", true, vec![]),
            ]
        });
        serde_json::from_value(m).unwrap()
    })
}

fn config(allow_downgrade: bool) -> Config {
    let text = format!(
        "product = \"demo-app\"\ninstall_dir = \"app\"\narch = \"x86_64\"\n\
         [source]\nurl = \"file:///srv/repo\"\nkeys = [\"k.pem\"]\n\
         [strategy]\nplugin = \"{PLUGIN}\"\n[strategy.config]\nallow_downgrade = {allow_downgrade}\n"
    );
    Config::parse(&text, Path::new("/etc/molt/molt.toml")).unwrap()
}

/// At most `cap` bytes of the guest's text, plus the notice of how much was cut.
fn assert_safe(kept: &str, given_len: usize, cap: usize) {
    assert!(
        kept.chars().all(|c| !c.is_control() || c == '\t'),
        "control character kept: {kept:?}"
    );
    let notice = format!("… ({given_len} more bytes cut)").len();
    assert!(
        kept.len() <= cap.saturating_mul(3) + notice,
        "{} bytes kept",
        kept.len()
    );
}

fn version(choice: u8) -> Option<Version> {
    ["", "1.0.0", "1.1.0", "1.2.0", "3.0.0", "2.0.0-rc.1"]
        .get(usize::from(choice) % 6)
        .filter(|v| !v.is_empty())
        .map(|v| Version::parse(v).unwrap())
}

/// One input: see the module doc for its layout and the invariants it asserts.
pub fn check(data: &[u8]) {
    let [kind, cap, flags, text @ ..] = data else {
        return;
    };
    let cap = CAPS[usize::from(*cap) % 4];
    let (a, b) = match text.iter().position(|&x| x == 0xFF) {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &[][..]),
    };
    let (a, b) = (
        String::from_utf8_lossy(a).into_owned(),
        String::from_utf8_lossy(b).into_owned(),
    );

    // A validator's refusal and info() strings.
    match validator_answer(PLUGIN, Err(a.clone()), cap) {
        Err(PluginError::Rejected { reason, .. }) => assert_safe(&reason, a.len(), cap),
        other => panic!("a validator's error became {other:?}"),
    }
    let info = info_answer(a.clone(), b.clone(), a.clone(), cap);
    assert_safe(&info.name, a.len(), cap);
    assert_safe(&info.version, b.len(), cap);

    let answer = match kind % 4 {
        0 => StrategyAnswer::Full(a.clone()),
        1 => StrategyAnswer::Patch {
            from: a.clone(),
            to: b.clone(),
        },
        2 => StrategyAnswer::None(a.clone()),
        _ => StrategyAnswer::Refused(a.clone()),
    };
    let decision = match strategy_answer(PLUGIN, answer, cap) {
        Ok(d) => d,
        Err(PluginError::Rejected { reason, plugin }) => {
            assert_eq!(kind % 4, 3);
            assert_eq!(plugin, PLUGIN);
            return assert_safe(&reason, a.len(), cap);
        }
        Err(PluginError::Malformed { what, .. }) => {
            assert!(
                what.chars().all(|c| !c.is_control() || c == '\t'),
                "{what:?}"
            );
            assert!(
                what.len() <= 3 * cap + 256 + 3 * cap,
                "{} bytes",
                what.len()
            );
            return;
        }
        Err(e) => panic!("unexpected error {e}"),
    };
    let capped = |s: &str| -> String {
        let mut end = s.len().min(cap);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    match &decision {
        Decision::Full { version } => {
            assert_eq!(kind % 4, 0);
            assert_eq!(Version::parse(&capped(&a)).ok().as_ref(), Some(version));
        }
        Decision::Patch { from, to } => {
            assert_eq!(kind % 4, 1);
            assert_eq!(Version::parse(&capped(&a)).ok().as_ref(), Some(from));
            assert_eq!(Version::parse(&capped(&b)).ok().as_ref(), Some(to));
        }
        Decision::None { reason } => {
            assert_eq!(kind % 4, 2);
            assert_safe(reason, a.len(), cap);
        }
    }

    // The decision against the signed manifest and the operator's rules.
    let allow_downgrade = flags & 1 == 1;
    let config = config(allow_downgrade);
    let request = Request {
        version: if flags & 2 == 2 {
            version(flags >> 5)
        } else {
            None
        },
        force_full: flags & 4 == 4,
        adopt: false,
    };
    let state = InstallState {
        version: version(flags >> 3),
        ..InstallState::default()
    };
    let m = manifest();
    let installed = state.version.clone();
    // The fuzzed manifest keeps every patch inline: no document is ever loaded.
    let mut no_documents = |_: &_| unreachable!("a patch document in the fuzzed manifest");
    let Ok(choice) = resolve(
        PLUGIN,
        decision.clone(),
        (m, &mut no_documents),
        &state,
        &config,
        &request,
    ) else {
        return;
    };
    let signed = |to: &Version| {
        m.release(to, &config.channel)
            .and_then(|r| r.artifacts_for(&config.arch))
            .expect("the choice is not in the signed manifest")
    };
    if let Some(to) = choice.to() {
        if let Some(wanted) = &request.version {
            assert_eq!(wanted, to, "--version was not honoured");
        }
        if let Some(current) = &installed
            && to < current
        {
            assert!(
                allow_downgrade || request.version.as_ref() == Some(to),
                "an unallowed downgrade {current} → {to}"
            );
        }
    }
    match &choice {
        Choice::None { .. } => {
            assert!(matches!(
                decision,
                Decision::None { .. } | Decision::Full { .. }
            ));
            if let Decision::Full { version } = &decision {
                assert_eq!(installed.as_ref(), Some(version));
                assert!(!request.force_full);
            }
        }
        Choice::Full { from, to, package } => {
            assert_eq!(from, &installed);
            assert_eq!(Some(package), signed(to).full.as_ref());
            assert!(matches!(&decision, Decision::Full { version } if version == to));
        }
        Choice::Patch {
            from,
            to,
            package,
            operations,
            delta,
        } => {
            assert!(!request.force_full, "a patch despite --force-full");
            assert_eq!(
                Some(from),
                installed.as_ref(),
                "a patch not from the installed version"
            );
            let p = signed(to).patch_from(from).expect("an unsigned patch");
            assert_eq!(&p.package, package);
            assert_eq!(&p.operations, operations);
            assert_eq!(&p.delta, delta);
        }
    }
}
