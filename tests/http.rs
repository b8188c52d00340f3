//! Updates over a real HTTP server on 127.0.0.1: the happy path, a connection dropped
//! mid-package (resumed with `Range`), an endless body (cut at size + 1), transient 5xx.

use serde_json::json;

use crate::craft::reference_releases;
use crate::server::{Fault, Server};
use crate::util::{Env, assert_same_tree, snapshot, tree_snapshot};

fn full_url(env: &Env, version: &str) -> String {
    let m = env.manifest();
    let r = m["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == version)
        .unwrap();
    r["artifacts"]["x86_64"]["full"]["url"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn install_and_patch_over_http() {
    let env = Env::new();
    let [t1, _, t3] = reference_releases(&env);
    let server = Server::start(env.repo());
    env.config(&server.url(), "");
    env.apply(&["--version", "1.0.0"]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t1),
        "1.0.0 over http",
    );
    let r = env.apply(&[]).success().result();
    assert_eq!(
        (r["kind"].clone(), r["to"].clone()),
        (json!("patch"), json!("1.2.0"))
    );
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t3),
        "1.2.0 over http",
    );
}

#[test]
fn dropped_connection_resumes_with_a_range_request() {
    let env = Env::new();
    let [_, _, t3] = reference_releases(&env);
    let server = Server::start(env.repo());
    let url = full_url(&env, "1.2.0");
    server.fault(&url, Fault::DropAfterOnce(100));
    env.config(&server.url(), "");
    env.apply(&[]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t3),
        "after resumed download",
    );
    let ranges: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.path == url)
        .map(|s| s.range)
        .collect();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    assert_eq!(ranges[1].as_deref(), Some("bytes=100-"));
}

#[test]
fn endless_package_stream_is_cut_at_size_plus_one() {
    let env = Env::new();
    reference_releases(&env);
    let server = Server::start(env.repo());
    let url = full_url(&env, "1.2.0");
    server.fault(&url, Fault::Endless);
    env.config(&server.url(), "");
    env.apply(&[]).code(3).error_contains(&[&url]);
    assert!(snapshot(&env.install()).is_empty());
    let leftovers: Vec<_> = walkdir::WalkDir::new(env.install().join(".molt/downloads"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_owned(), e.metadata().unwrap().len()))
        .collect();
    assert!(
        leftovers.iter().all(|(_, len)| *len < 1 << 20),
        "download not cut: {leftovers:?}"
    );
}

#[test]
fn transient_server_errors_are_retried() {
    let env = Env::new();
    let [_, _, t3] = reference_releases(&env);
    let server = Server::start(env.repo());
    server.fault("manifest.json", Fault::StatusTimes(503, 2));
    env.config(&server.url(), "");
    env.apply(&[]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t3),
        "after retries",
    );
}

#[test]
fn missing_repository_names_the_url_and_changes_nothing() {
    let env = Env::new();
    reference_releases(&env);
    let server = Server::start(env.path("nowhere"));
    env.config(&server.url(), "");
    env.apply(&[])
        .code(1)
        .error_contains(&["not found", "manifest.json"]);
    assert!(snapshot(&env.install()).is_empty());
}

#[test]
fn a_manifest_read_between_the_publishers_two_renames_is_read_again() {
    let env = Env::new();
    let [_, _, t3] = reference_releases(&env);
    let older = std::fs::read(env.repo().join("manifest.json")).unwrap();
    crate::craft::edit_manifest(&env, |_| {});
    let server = Server::start(env.repo());
    // The first read sees the old manifest next to the new signature.
    server.fault("manifest.json", Fault::BodyOnce(older));
    env.config(&server.url(), "");
    env.apply(&[]).success();
    assert_same_tree(
        &snapshot(&env.install()),
        &tree_snapshot(&t3),
        "after a torn read",
    );
    let reads = server
        .seen()
        .iter()
        .filter(|s| s.path == "manifest.json")
        .count();
    assert_eq!(reads, 2);
}

#[test]
fn a_trickling_server_is_stopped_at_the_configured_deadline() {
    let env = Env::new();
    reference_releases(&env);
    let server = Server::start(env.repo());
    server.fault("manifest.json", Fault::Trickle);
    let config = env.config(&server.url(), "");
    // [source] is the last table of the file.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("timeout_secs = 3\n");
    std::fs::write(&config, text).unwrap();
    env.molt(&["check", "--config", "molt.toml"])
        .code(1)
        .error_contains(&["manifest.json", "longer than 3s", "timeout_secs"]);
    assert!(snapshot(&env.install()).is_empty());
}
