//! Command-line and configuration contract: exit codes, key files, config errors reported
//! before anything is fetched.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::craft::reference_releases;
use crate::util::Env;

#[test]
fn keygen_writes_a_private_pkcs8_key_and_a_public_spki_key() {
    let env = Env::new();
    let (secret, public) = env.keygen("release");
    let s = fs::read_to_string(&secret).unwrap();
    let p = fs::read_to_string(&public).unwrap();
    assert!(s.starts_with("-----BEGIN PRIVATE KEY-----"), "{s}");
    assert!(p.starts_with("-----BEGIN PUBLIC KEY-----"), "{p}");
    assert_eq!(
        fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second keygen must not overwrite the key.
    env.molt(&["keygen", "--out-dir", "keys"])
        .code(2)
        .error_contains(&["refusing to overwrite"]);
    assert_eq!(fs::read_to_string(&secret).unwrap(), s);
}

#[test]
fn unknown_config_key_is_a_usage_error_naming_key_and_line() {
    let env = Env::new();
    reference_releases(&env);
    env.config(
        &format!("file://{}", env.repo().display()),
        "[apply]\nkeep_backup = 1\n",
    );
    env.apply(&[])
        .code(2)
        .error_contains(&["keep_backup", "line"]);
}

#[test]
fn unreadable_key_is_reported_before_fetching() {
    let env = Env::new();
    reference_releases(&env);
    // The repository URL would fail too; the key error must come first.
    env.config("http://127.0.0.1:9/", "");
    fs::remove_file(env.path("keys/release.pub.pem")).unwrap();
    env.apply(&[]).code(2).error_contains(&["release.pub.pem"]);
}

#[test]
fn a_private_key_in_place_of_a_public_one_is_explained() {
    let env = Env::new();
    reference_releases(&env);
    env.file_config();
    fs::copy(
        env.path("keys/release.key.pem"),
        env.path("keys/release.pub.pem"),
    )
    .unwrap();
    env.apply(&[])
        .code(2)
        .error_contains(&["release.pub.pem", "public key"]);
}

#[test]
fn missing_config_file_is_a_usage_error() {
    let env = Env::new();
    env.molt(&["status", "--config", "nope.toml"])
        .code(2)
        .error_contains(&["nope.toml"]);
}

#[test]
fn bad_arguments_exit_2() {
    let env = Env::new();
    env.molt(&["apply"]).code(2);
    env.molt(&["frobnicate"]).code(2);
}

#[test]
fn status_of_a_fresh_install_reports_nothing_installed() {
    let env = Env::new();
    reference_releases(&env);
    env.file_config();
    let s = env
        .molt(&["status", "--config", "molt.toml", "--json"])
        .success()
        .json_lines()
        .pop()
        .unwrap();
    assert!(s["version"].is_null(), "{s}");
    assert_eq!(s["serial"], 0);
}

#[test]
fn a_closed_stdout_ends_the_command_quietly_with_its_own_exit_code() {
    let env = Env::new();
    reference_releases(&env);
    env.file_config();
    env.apply(&["--version", "1.0.0"]).success();
    // The reading end is closed before molt starts: its first line meets EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_molt"))
        .args(["status", "--config", "molt.toml"])
        .current_dir(&env.root)
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let env = Env::new();
    reference_releases(&env);
    env.file_config();
    let run = env
        .molt(&["-vv", "check", "--config", "molt.toml"])
        .success();
    assert!(run.stderr.contains("DEBUG"), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
}
