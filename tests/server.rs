//! The end-to-end tests' HTTP repository server: `molt-test-support`'s (`test-support/src/http.rs`,
//! shared with the fetch unit tests), serving a repository directory.

use std::path::PathBuf;

use molt_test_support::http::TestServer;
pub use molt_test_support::http::{Fault, Seen};

/// A real HTTP server on 127.0.0.1 serving a directory with `Range` and strong `ETag` support,
/// recording every request and misbehaving on demand.
pub struct Server(TestServer);

impl Server {
    /// Serves `root` at `http://127.0.0.1:<port>/`.
    pub fn start(root: PathBuf) -> Server {
        Server(TestServer::serve_dir(root))
    }

    pub fn url(&self) -> String {
        self.0.url()
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.0.fault(path, fault)
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.all_seen()
    }
}
