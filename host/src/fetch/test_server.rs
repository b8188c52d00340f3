//! The fetch tests' HTTP server: the one of `molt-test-support` (`test-support/src/http.rs`),
//! shared with the end-to-end tests, under the names these tests use.

pub(crate) use molt_test_support::http::{Reply, Seen, TestServer};
