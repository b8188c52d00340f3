//! The fuzz targets' seeds as regression tests: every file of `fuzz/corpus/<target>/` and of
//! `fuzz/regressions/<target>/` (inputs a fuzzing run once crashed on, kept after the fix) goes
//! through the target's own `check`, the same code the libFuzzer binaries run. This runs on the
//! stable toolchain without libFuzzer, so a change that breaks an invariant on a known input
//! fails `cargo test` even where no one fuzzes.

use std::fs;
use std::path::Path;

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod molt_fuzz;

/// Runs every seed and saved regression of `target`; fails when there is no seed at all.
fn run(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz.join(kind).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            inputs.push(e.unwrap().path());
        }
    }
    inputs.sort();
    assert!(!inputs.is_empty(), "no seeds for fuzz target {target}");
    for input in &inputs {
        // Named before it runs, so a failing assertion's output says which input it was.
        eprintln!("fuzz seed {}", input.display());
        check(&fs::read(input).unwrap());
    }
}

#[test]
fn config_seeds_hold_the_invariants() {
    run("config", molt_fuzz::config::check);
}

#[test]
fn delta_seeds_hold_the_invariants() {
    run("delta", molt_fuzz::delta::check);
}

#[test]
fn extract_seeds_hold_the_invariants() {
    run("extract", molt_fuzz::extract::check);
}

#[test]
fn manifest_seeds_hold_the_invariants() {
    run("manifest", molt_fuzz::manifest::check);
}

#[test]
fn plugin_answer_seeds_hold_the_invariants() {
    run("plugin_answer", molt_fuzz::plugin_answer::check);
}

#[test]
fn recovery_seeds_hold_the_invariants() {
    run("recovery", molt_fuzz::recovery::check);
}

#[test]
fn state_seeds_hold_the_invariants() {
    run("state", molt_fuzz::state::check);
}

/// The recovery seeds hold the real journal with placeholders, each line checksummed over that
/// text; made concrete again for the scenario's own root they must be the journal molt wrote,
/// byte for byte, or every seed would only exercise the checksum refusal.
#[test]
fn recovery_seeds_become_the_real_journal_again() {
    let s = molt_fuzz::RecoveryScenario::build();
    let written = fs::read(s.root.join("state/history").join(&s.txn_id).join("journal")).unwrap();
    assert_eq!(s.concrete(&s.journal, &s.root), written);
    let seed = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/recovery/applied-4-records"),
    )
    .unwrap();
    assert_eq!(
        s.concrete(&seed[1..], &s.root)
            .iter()
            .filter(|b| **b == b'\n')
            .count(),
        4
    );
}
