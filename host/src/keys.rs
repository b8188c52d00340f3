//! ed25519 publisher keys in the formats the key contract fixes, so that keys made by molt and by
//! `openssl` are interchangeable.
//!
//! Secret keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey -algorithm
//! ed25519` writes: the version-1 form without an embedded public key); public keys are SPKI PEM
//! (`-----BEGIN PUBLIC KEY-----`, what `openssl pkey -pubout` writes). A key id is the lowercase
//! hex SHA-256 of the 32 raw public-key bytes, the `keyid` of `manifest.json.sig`.
//!
//! Loading refuses weak (small-order) public keys: a signature under such a key proves nothing.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::ExitClass;
use crate::fsutil::{self, Existing};
use crate::hashing::sha256_hex;

/// Key files are a few hundred bytes; anything much larger is not a key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Why a key could not be generated, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "invalid key name {name:?}: use a plain file name without `/` (it becomes NAME.key.pem and NAME.pub.pem)"
    )]
    InvalidName { name: String },
    #[error(
        "refusing to overwrite the existing key file {path}; choose another --name or --out-dir"
    )]
    KeyExists { path: PathBuf },
    #[error("failed to create the key directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("failed to write the key file {path}: {source}")]
    WriteKey { path: PathBuf, source: io::Error },
    #[error("failed to read the key file {path}: {source}")]
    ReadKey { path: PathBuf, source: io::Error },
    #[error("{path} is larger than {MAX_KEY_FILE_BYTES} bytes; expected a small PEM key file")]
    KeyFileTooLarge { path: PathBuf },
    #[error("no randomness available to generate a key: {reason}")]
    Randomness { reason: String },
    #[error("failed to encode the key for {path}: {reason}")]
    EncodeKey { path: PathBuf, reason: String },
    #[error("{path}: expected {expected}; {found}")]
    WrongKeyKind {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: not a valid ed25519 {expected}: {reason}")]
    ParseKey {
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    #[error(
        "{path}: the public key is weak (a small-order point); signatures under it prove nothing, refusing it"
    )]
    WeakKey { path: PathBuf },
}

impl KeyError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            KeyError::InvalidName { .. }
            | KeyError::KeyExists { .. }
            | KeyError::ReadKey { .. }
            | KeyError::KeyFileTooLarge { .. }
            | KeyError::WrongKeyKind { .. }
            | KeyError::ParseKey { .. } => ExitClass::Usage,
            KeyError::WeakKey { .. } => ExitClass::Security,
            KeyError::CreateDir { .. }
            | KeyError::WriteKey { .. }
            | KeyError::Randomness { .. }
            | KeyError::EncodeKey { .. } => ExitClass::Failure,
        }
    }
}

const EXPECTED_SECRET: &str = "a PEM ed25519 private key (-----BEGIN PRIVATE KEY-----, PKCS#8, as `openssl genpkey -algorithm ed25519` writes)";
const EXPECTED_PUBLIC: &str =
    "a PEM public key (-----BEGIN PUBLIC KEY-----, SPKI, as `openssl pkey -pubout` writes)";

/// The lowercase hex SHA-256 of the key's 32 raw bytes: the `keyid` in `manifest.json.sig`.
pub(crate) fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())
}

/// The file names `generate_keypair` writes for `name`: `NAME.key.pem` and `NAME.pub.pem`.
pub(crate) fn keypair_paths(out_dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(KeyError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok((
        out_dir.join(format!("{name}.key.pem")),
        out_dir.join(format!("{name}.pub.pem")),
    ))
}

/// Generates a fresh key pair and writes `out_dir/NAME.key.pem` (mode 0600) and
/// `out_dir/NAME.pub.pem`. Neither file may exist already; `out_dir` is created if needed.
/// Returns the paths of the secret and the public key.
pub fn generate_keypair(out_dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
    let (secret_path, public_path) = keypair_paths(out_dir, name)?;
    for path in [&secret_path, &public_path] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::KeyExists { path: path.clone() });
        }
    }
    fs::create_dir_all(out_dir).map_err(|source| KeyError::CreateDir {
        path: out_dir.to_owned(),
        source,
    })?;

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Randomness {
        reason: e.to_string(),
    })?;
    let signing_key = SigningKey::from_bytes(&seed);
    seed.fill(0);

    let secret_pem = secret_key_pem(&signing_key).map_err(|reason| KeyError::EncodeKey {
        path: secret_path.clone(),
        reason,
    })?;
    let public_pem =
        public_key_pem(&signing_key.verifying_key()).map_err(|reason| KeyError::EncodeKey {
            path: public_path.clone(),
            reason,
        })?;

    write_new_file(&secret_path, secret_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new_file(&public_path, public_pem.as_bytes(), 0o644) {
        // Do not leave half a key pair behind: the secret we just created is useless without it.
        let _ = fs::remove_file(&secret_path);
        return Err(e);
    }
    tracing::info!(
        secret = %secret_path.display(),
        public = %public_path.display(),
        key_id = %key_id(&signing_key.verifying_key()),
        "generated an ed25519 key pair"
    );
    Ok((secret_path, public_path))
}

/// PKCS#8 v1 PEM of the secret key (no embedded public key, byte-compatible with openssl).
pub fn secret_key_pem(key: &SigningKey) -> Result<String, String> {
    let bytes = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    bytes
        .to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.as_str().to_owned())
        .map_err(|e| e.to_string())
}

/// SPKI PEM of the public key.
pub(crate) fn public_key_pem(key: &VerifyingKey) -> Result<String, String> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| e.to_string())
}

/// Reads a PKCS#8 PEM ed25519 secret key.
pub(crate) fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read_key_file(path)?;
    expect_label(
        path,
        &text,
        "PRIVATE KEY",
        EXPECTED_SECRET,
        &[
            ("PUBLIC KEY", "this looks like a public key"),
            (
                "ENCRYPTED PRIVATE KEY",
                "this key is encrypted; decrypt it with `openssl pkey -in KEY -out PLAIN.pem`",
            ),
        ],
    )?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::ParseKey {
        path: path.to_owned(),
        expected: "PKCS#8 private key",
        reason: e.to_string(),
    })
}

/// Checks that the file's PEM block is labelled `label`; for a label of `hints` the error says
/// that hint, for any other (or none) what was found.
fn expect_label(
    path: &Path,
    text: &str,
    label: &str,
    expected: &'static str,
    hints: &[(&str, &str)],
) -> Result<(), KeyError> {
    match pem_label(text).as_deref() {
        Some(found) if found == label => Ok(()),
        Some(found) => match hints.iter().find(|(l, _)| *l == found) {
            Some((_, hint)) => Err(wrong_kind(path, expected, hint)),
            None => Err(wrong_kind(
                path,
                expected,
                &format!("found a PEM block labelled {found:?}"),
            )),
        },
        None => Err(wrong_kind(path, expected, "no PEM block found")),
    }
}

/// Reads an SPKI PEM ed25519 public key, refusing weak (small-order) keys.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = read_key_file(path)?;
    let private = "this looks like a private key (keep it secret; derive the public key with \
                   `openssl pkey -in KEY -pubout`)";
    expect_label(
        path,
        &text,
        "PUBLIC KEY",
        EXPECTED_PUBLIC,
        &[("PRIVATE KEY", private), ("ENCRYPTED PRIVATE KEY", private)],
    )?;
    let key = VerifyingKey::from_public_key_pem(&text).map_err(|e| KeyError::ParseKey {
        path: path.to_owned(),
        expected: "SPKI public key",
        reason: e.to_string(),
    })?;
    if key.is_weak() {
        return Err(KeyError::WeakKey {
            path: path.to_owned(),
        });
    }
    Ok(key)
}

fn wrong_kind(path: &Path, expected: &'static str, found: &str) -> KeyError {
    KeyError::WrongKeyKind {
        path: path.to_owned(),
        expected,
        found: found.to_owned(),
    }
}

/// The label of the first `-----BEGIN LABEL-----` line, if any.
fn pem_label(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .map(str::to_owned)
    })
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let read_err = |source| KeyError::ReadKey {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let bytes = match crate::hashing::read_capped(file, MAX_KEY_FILE_BYTES) {
        Ok((bytes, _)) => bytes,
        Err(e) if crate::hashing::is_cap_exceeded(&e) => {
            return Err(KeyError::KeyFileTooLarge {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(read_err(e)),
    };
    String::from_utf8(bytes).map_err(|_| KeyError::WrongKeyKind {
        path: path.to_owned(),
        expected: "a PEM text file",
        found: "the file is binary (not UTF-8); DER keys must be converted to PEM".to_owned(),
    })
}

/// Writes `path` durably with `mode`, refusing to replace anything already there.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    fsutil::write_file(path, contents, mode, Existing::Refuse).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::KeyExists {
                path: path.to_owned(),
            }
        } else {
            KeyError::WriteKey {
                path: path.to_owned(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use ed25519_dalek::{Signer, Verifier};

    use super::*;

    #[test]
    fn generated_pair_round_trips_with_restrictive_secret_mode() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys/nested");
        let (secret, public) = generate_keypair(&out, "release").unwrap();
        assert_eq!(secret, out.join("release.key.pem"));
        assert_eq!(public, out.join("release.pub.pem"));
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&secret).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        let pub_text = fs::read_to_string(&public).unwrap();
        assert!(
            pub_text.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{pub_text}"
        );

        let sk = load_signing_key(&secret).unwrap();
        let vk = load_verifying_key(&public).unwrap();
        assert_eq!(sk.verifying_key(), vk);
        let sig = sk.sign(b"hello");
        vk.verify_strict(b"hello", &sig).unwrap();
        assert_eq!(key_id(&vk), sha256_hex(vk.as_bytes()));
        assert_eq!(key_id(&vk).len(), 64);
    }

    #[test]
    fn two_generated_keys_differ() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = generate_keypair(dir.path(), "a").unwrap();
        let (_, b) = generate_keypair(dir.path(), "b").unwrap();
        let a = load_verifying_key(&a).unwrap();
        let b = load_verifying_key(&b).unwrap();
        assert_ne!(key_id(&a), key_id(&b));
    }

    #[test]
    fn refuses_to_overwrite_either_file() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = generate_keypair(dir.path(), "release").unwrap();
        let before = fs::read(&secret).unwrap();
        assert!(matches!(
            generate_keypair(dir.path(), "release"),
            Err(KeyError::KeyExists { .. })
        ));
        assert_eq!(fs::read(&secret).unwrap(), before);

        fs::remove_file(&secret).unwrap();
        let err = generate_keypair(dir.path(), "release").unwrap_err();
        assert!(matches!(&err, KeyError::KeyExists { path } if path == &public));
        assert!(!secret.exists(), "a half pair was written");
    }

    #[test]
    fn refuses_names_with_separators() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "..", "a/b"] {
            let err = generate_keypair(dir.path(), bad).unwrap_err();
            assert_eq!(err.exit_class(), ExitClass::Usage, "{bad:?}");
        }
    }

    #[test]
    fn swapped_key_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = generate_keypair(dir.path(), "release").unwrap();
        let err = load_verifying_key(&secret).unwrap_err().to_string();
        assert!(err.contains("expected a PEM public key"), "{err}");
        assert!(err.contains("looks like a private key"), "{err}");
        assert!(err.contains(&secret.display().to_string()), "{err}");
        let err = load_signing_key(&public).unwrap_err().to_string();
        assert!(err.contains("looks like a public key"), "{err}");

        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello").unwrap();
        let err = load_verifying_key(&junk).unwrap_err();
        assert!(err.to_string().contains("no PEM block"), "{err}");
        assert!(matches!(
            load_signing_key(&dir.path().join("missing.pem")),
            Err(KeyError::ReadKey { .. })
        ));
    }

    #[test]
    fn refuses_a_weak_public_key() {
        // The identity point (y = 1) has small order: every "signature" check is meaningless.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        assert!(weak.is_weak());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weak.pub.pem");
        fs::write(&path, public_key_pem(&weak).unwrap()).unwrap();
        let err = load_verifying_key(&path).unwrap_err();
        assert!(matches!(err, KeyError::WeakKey { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Security);
    }

    fn openssl_available() -> bool {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("note: `openssl` not found on this machine; skipping the interop test");
        }
        found
    }

    #[test]
    fn interoperates_with_the_openssl_cli() {
        if !openssl_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();

        // An openssl-made secret key loads, signs, and its openssl-derived public key verifies.
        let ossl_secret = dir.path().join("ossl.key.pem");
        let ossl_public = dir.path().join("ossl.pub.pem");
        let status = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&ossl_secret)
            .status()
            .unwrap();
        assert!(status.success());
        let status = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&ossl_secret)
            .arg("-out")
            .arg(&ossl_public)
            .status()
            .unwrap();
        assert!(status.success());
        let sk = load_signing_key(&ossl_secret).unwrap();
        let vk = load_verifying_key(&ossl_public).unwrap();
        assert_eq!(sk.verifying_key(), vk);
        let sig = sk.sign(b"manifest bytes");
        vk.verify(b"manifest bytes", &sig).unwrap();
        // Our PEM writers produce exactly what openssl wrote.
        assert_eq!(
            secret_key_pem(&sk).unwrap(),
            fs::read_to_string(&ossl_secret).unwrap()
        );
        assert_eq!(
            public_key_pem(&vk).unwrap(),
            fs::read_to_string(&ossl_public).unwrap()
        );

        // molt's keys are accepted by openssl, and openssl derives the same public key.
        let (secret, public) = generate_keypair(&dir.path().join("molt"), "release").unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-pubin", "-noout", "-in"])
            .arg(&public)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&secret)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, fs::read(&public).unwrap());
    }
}
