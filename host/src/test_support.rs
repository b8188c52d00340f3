//! Unit-test helpers that build molt's own values, one place for the whole crate (`cfg(test)`;
//! the scaffolding that needs none of molt's types — the HTTP server, tree snapshots, the
//! reference releases — is the `molt-test-support` crate, shared with `tests/` and the SDK).

use crate::relpath::RelPath;
use crate::version::Version;

/// `s` as an install-relative path (panics if it is not one: a test's own typo).
pub(crate) fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// `s` as a version.
pub(crate) fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}
