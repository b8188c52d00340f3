//! Recovery from any journal bytes: the install is copied from one of two moments of a real
//! update (staged: nothing moved yet; applied: every op done, before validation), the fuzz input
//! is written as that transaction's journal, and recovery runs. It must not panic, and whatever
//! it does or refuses, the install must be exactly the old tree or exactly the new one; a second
//! recovery must change nothing.
//!
//! Input: one byte (bit 0 picks the moment), then the journal. `@ROOT@` and `@TXN@` in it are
//! replaced by the scratch root and the transaction id, so seeds made from the real journal
//! (see `examples/seeds.rs`) name real paths.

use std::fs;
use std::sync::OnceLock;

use super::{RecoveryScenario, copy_tree, open_state, scratch, snapshot};

struct World {
    scenario: RecoveryScenario,
    work: std::path::PathBuf,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World {
        scenario: RecoveryScenario::build(),
        work: scratch("recovery").join("w"),
    })
}

/// One input: see the module doc for its layout and the invariants it asserts.
pub fn check(data: &[u8]) {
    let Some((&moment, journal)) = data.split_first() else {
        return;
    };
    let w = world();
    let s = &w.scenario;
    let _ = fs::remove_dir_all(&w.work);
    let from = if moment & 1 == 0 {
        &s.staged
    } else {
        &s.applied
    };
    copy_tree(from, &w.work);
    let txn_dir = w.work.join("state/txn").join(&s.txn_id);
    fs::write(txn_dir.join("journal"), s.concrete(journal, &w.work)).unwrap();

    let state = open_state(&w.work);
    let first = molt::txn::recover(&state);
    let after = snapshot(&w.work.join("install"), &[]);
    assert!(
        after == s.old || after == s.new,
        "recovery ({first:?}) left a tree that is neither 1.0.0 nor 2.0.0: {after:#?}"
    );
    if let Err(e) = &first {
        assert!(!e.to_string().is_empty());
        return;
    }
    // What recovery finished is finished: running it again changes nothing.
    let second = molt::txn::recover(&state);
    assert!(
        second.is_ok(),
        "second recovery failed: {second:?} (first: {first:?})"
    );
    assert_eq!(
        snapshot(&w.work.join("install"), &[]),
        after,
        "a second recovery changed the tree"
    );
    // Whatever recovery left in state.json is readable.
    let _ = state.load_state();
}
