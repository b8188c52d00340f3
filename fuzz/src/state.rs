//! `state.json` and `trust.json` readers on any bytes, then opening the install the way every
//! command does (lock, recover). Never a panic; a file that parses round-trips exactly through
//! the writer; a refused one is a typed error that names the file.
//!
//! Input: one byte (bit 0: the bytes are `state.json`, else `trust.json`), then the file.

use std::fs;
use std::sync::OnceLock;

use super::{open_state, scratch};
use molt::state::StateDir;

fn root() -> &'static std::path::Path {
    static R: OnceLock<std::path::PathBuf> = OnceLock::new();
    R.get_or_init(|| scratch("state"))
}

/// One input: see the module doc for its layout and the invariants it asserts.
pub fn check(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let state: StateDir = open_state(root());
    let (path, other) = if which & 1 == 0 {
        (state.state_path(), state.trust_path())
    } else {
        (state.trust_path(), state.state_path())
    };
    let _ = fs::remove_file(&other);
    fs::write(&path, bytes).unwrap();

    if which & 1 == 0 {
        match state.load_state() {
            Ok(s) => {
                state.save_state(&s).unwrap();
                assert_eq!(
                    state.load_state().unwrap(),
                    s,
                    "state.json does not round-trip"
                );
            }
            Err(e) => assert!(e.to_string().contains("state.json"), "{e}"),
        }
    } else {
        match state.load_trust() {
            Ok(t) => {
                state.save_trust(&t).unwrap();
                assert_eq!(
                    state.load_trust().unwrap(),
                    t,
                    "trust.json does not round-trip"
                );
            }
            Err(e) => assert!(e.to_string().contains("trust.json"), "{e}"),
        }
    }
    // The start of every command: lock, then recover (nothing is pending here).
    let _lock = state.lock().unwrap();
    let recovered = molt::txn::recover(&state);
    assert!(matches!(recovered, Ok(None)), "{recovered:?}");
}
