//! Deciding whether a fetched manifest may be believed: verify before parse.
//!
//! The order is fixed and matters: the signature over the exact fetched bytes first (nothing of an
//! unsigned manifest is even parsed), then the JSON, then the checks that stop replay and freeze
//! attacks (format, product, expiry, serial not lower than the last accepted one), then the
//! structural rules a client relies on when it plans an update (unique versions per channel, sane
//! architecture keys). Package URLs, SHA-256 digests and patch operations are checked once, when
//! the manifest is parsed, by their types in `repo::manifest` and `hashing`.
//!
//! Nothing here persists anything: the caller records the new serial only after every check passed.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SIGNATURE_LENGTH, Signature, VerifyingKey};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ExitClass;
use crate::keys::key_id;
use crate::repo::manifest::{FORMAT, Manifest};
use crate::repo::signature::SignatureFile;
use crate::version::normalize_arch;

/// What a client trusts: the configured product, its keys, and what it accepted before.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    pub product: String,
    pub keys: Vec<VerifyingKey>,
    /// How many distinct trusted keys must have signed (at least 1).
    pub threshold: usize,
    /// The highest serial accepted so far (0 when none); a lower one is a rollback.
    pub min_serial: u64,
    pub now: OffsetDateTime,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "signature threshold {threshold} cannot be met by {distinct_keys} distinct trusted keys; set [source].threshold between 1 and the number of keys in [source].keys"
    )]
    InvalidThreshold {
        threshold: usize,
        distinct_keys: usize,
    },
    #[error(
        "the manifest at {url} is not signed (no manifest.json.sig, or one without signatures); \
         refusing it: the publisher must sign it (molt publish does)"
    )]
    Unsigned { url: String },
    #[error(
        "manifest signature file for {url} is not valid JSON of the form {{\"signatures\": [{{\"keyid\", \"sig\"}}]}}: {reason}"
    )]
    MalformedSignatureFile { url: String, reason: String },
    #[error(
        "manifest signature check failed for {url}: {valid} of {threshold} required trusted keys signed it ({detail}); is the repository signed with a key in [source].keys?"
    )]
    SignatureThresholdNotMet {
        url: String,
        valid: usize,
        threshold: usize,
        detail: String,
    },
    #[error("manifest from {url} is signed but is not a valid format-1 manifest: {reason}")]
    ParseManifest { url: String, reason: String },
    #[error(
        "patch document {url}, named by the signed manifest, {reason}; refusing the patch (the \
         publisher must re-publish it; molt apply --force-full installs the full package)"
    )]
    PatchDocument { url: String, reason: String },
    #[error(
        "manifest from {url} has format {found}; this molt understands format {supported} only (upgrade molt)"
    )]
    UnsupportedFormat {
        url: String,
        found: u32,
        supported: u32,
    },
    #[error(
        "manifest from {url} is for product {found:?}, but this install is {expected:?}; check [source].url and product in the config"
    )]
    WrongProduct {
        url: String,
        found: String,
        expected: String,
    },
    #[error(
        "manifest from {url} expired at {expires} (now {now}): refusing a possibly frozen repository; the publisher must re-sign it"
    )]
    Expired {
        url: String,
        expires: String,
        now: String,
    },
    #[error(
        "manifest serial {serial} from {url} is lower than the last accepted serial {last_accepted}: refusing a rollback"
    )]
    SerialRollback {
        url: String,
        serial: u64,
        last_accepted: u64,
    },
    #[error("manifest from {url} lists release {version} on channel {channel:?} more than once")]
    DuplicateRelease {
        url: String,
        version: String,
        channel: String,
    },
    #[error("manifest from {url}, release {version}: {reason}")]
    InvalidRelease {
        url: String,
        version: String,
        reason: String,
    },
    #[error(
        "manifest from {url}, release {version} ({arch}), patch from {from}: invalid operations: {reason}"
    )]
    InvalidOperations {
        url: String,
        version: String,
        arch: String,
        from: String,
        reason: String,
    },
}

impl TrustError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            TrustError::InvalidThreshold { .. } => ExitClass::Usage,
            _ => ExitClass::Security,
        }
    }
}

/// Verifies `manifest_bytes` against `sig_bytes` and `policy` and returns the parsed manifest.
pub fn verify_manifest(
    manifest_bytes: &[u8],
    sig_bytes: &[u8],
    policy: &TrustPolicy,
    source_url: &str,
) -> Result<Manifest, TrustError> {
    verify_signatures(
        manifest_bytes,
        sig_bytes,
        &policy.keys,
        policy.threshold,
        source_url,
    )?;
    let url = || source_url.to_owned();
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| TrustError::ParseManifest {
            url: url(),
            reason: e.to_string(),
        })?;
    if manifest.format != FORMAT {
        return Err(TrustError::UnsupportedFormat {
            url: url(),
            found: manifest.format,
            supported: FORMAT,
        });
    }
    if manifest.product != policy.product {
        return Err(TrustError::WrongProduct {
            url: url(),
            found: manifest.product,
            expected: policy.product.clone(),
        });
    }
    if manifest.expires <= policy.now {
        return Err(TrustError::Expired {
            url: url(),
            expires: rfc3339(manifest.expires),
            now: rfc3339(policy.now),
        });
    }
    if manifest.serial < policy.min_serial {
        return Err(TrustError::SerialRollback {
            url: url(),
            serial: manifest.serial,
            last_accepted: policy.min_serial,
        });
    }
    check_structure(&manifest, source_url)?;
    Ok(manifest)
}

/// The structural rules every consumer of a manifest relies on.
pub fn check_structure(manifest: &Manifest, url: &str) -> Result<(), TrustError> {
    let mut seen = BTreeSet::new();
    for release in &manifest.releases {
        let version = release.version.to_string();
        let invalid = |reason: String| TrustError::InvalidRelease {
            url: url.to_owned(),
            version: version.clone(),
            reason,
        };
        if !seen.insert((release.channel.clone(), release.version.clone())) {
            return Err(TrustError::DuplicateRelease {
                url: url.to_owned(),
                version,
                channel: release.channel.clone(),
            });
        }
        if !is_plain_name(&release.channel) {
            return Err(invalid(format!(
                "channel {:?} is not a plain name (letters, digits, `.`, `_`, `-`)",
                release.channel
            )));
        }
        let mut arches = BTreeSet::new();
        for (arch, artifacts) in &release.artifacts {
            if !is_plain_name(arch) {
                return Err(invalid(format!(
                    "architecture key {arch:?} is not a plain name"
                )));
            }
            if !arches.insert(normalize_arch(arch)) {
                return Err(invalid(format!(
                    "architecture {arch:?} is listed twice (under an alias)"
                )));
            }
            let mut froms = BTreeSet::new();
            for patch in &artifacts.patches {
                let from = patch.from.to_string();
                let invalid_ops = |reason: String| TrustError::InvalidOperations {
                    url: url.to_owned(),
                    version: version.clone(),
                    arch: arch.clone(),
                    from: from.clone(),
                    reason,
                };
                if patch.from == release.version {
                    return Err(invalid_ops(
                        "a patch cannot start at its own release".into(),
                    ));
                }
                if !froms.insert(patch.from.clone()) {
                    return Err(invalid_ops("listed twice for the same release".into()));
                }
            }
        }
    }
    Ok(())
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Verification never parses or re-serializes the manifest: it runs `verify_strict` over the
/// bytes as fetched. Each trusted key counts at most once however often it appears (in the
/// trusted list or in the file), so one key cannot meet a threshold of two by signing twice;
/// signatures by keys that are not trusted are ignored (they are named in the error if the
/// threshold is not met).
/// The signature step: checks that at least `threshold` distinct keys of `trusted` made a valid strict signature in
/// `sig_file_bytes` over exactly `bytes`. `source` (the repository URL) is named in errors.
pub fn verify_signatures(
    bytes: &[u8],
    sig_file_bytes: &[u8],
    trusted: &[VerifyingKey],
    threshold: usize,
    source: &str,
) -> Result<(), TrustError> {
    let trusted_by_id: BTreeMap<String, &VerifyingKey> =
        trusted.iter().map(|k| (key_id(k), k)).collect();
    if threshold == 0 || threshold > trusted_by_id.len() {
        return Err(TrustError::InvalidThreshold {
            threshold,
            distinct_keys: trusted_by_id.len(),
        });
    }
    let unsigned = || TrustError::Unsigned {
        url: source.to_owned(),
    };
    if sig_file_bytes.trim_ascii().is_empty() {
        return Err(unsigned());
    }
    let file: SignatureFile =
        serde_json::from_slice(sig_file_bytes).map_err(|e| TrustError::MalformedSignatureFile {
            url: source.to_owned(),
            reason: e.to_string(),
        })?;
    if file.signatures.is_empty() {
        return Err(unsigned());
    }

    let mut signed_by = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    let mut invalid = BTreeSet::new();
    let mut malformed = BTreeSet::new();
    for entry in &file.signatures {
        let Some(key) = trusted_by_id.get(&entry.keyid) else {
            unknown.insert(entry.keyid.clone());
            continue;
        };
        if signed_by.contains(&entry.keyid) {
            continue;
        }
        let Some(signature) = decode_signature(&entry.sig) else {
            malformed.insert(entry.keyid.clone());
            continue;
        };
        match key.verify_strict(bytes, &signature) {
            Ok(()) => {
                signed_by.insert(entry.keyid.clone());
            }
            Err(_) => {
                invalid.insert(entry.keyid.clone());
            }
        }
    }
    // A key that also made one valid signature is not reported as a failure.
    invalid.retain(|id| !signed_by.contains(id));
    malformed.retain(|id| !signed_by.contains(id));

    if signed_by.len() >= threshold {
        tracing::debug!(url = source, keys = ?signed_by, "manifest signature verified");
        return Ok(());
    }
    let mut detail = Vec::new();
    if !invalid.is_empty() {
        detail.push(format!(
            "signatures that do not verify over these bytes from trusted keys: {}",
            join(&invalid)
        ));
    }
    if !malformed.is_empty() {
        detail.push(format!(
            "signatures that are not {SIGNATURE_LENGTH} bytes of base64 from trusted keys: {}",
            join(&malformed)
        ));
    }
    if !unknown.is_empty() {
        detail.push(format!("signatures from unknown keys: {}", join(&unknown)));
    }
    if file.signatures.is_empty() {
        detail.push("the signature file lists no signatures".to_owned());
    }
    Err(TrustError::SignatureThresholdNotMet {
        url: source.to_owned(),
        valid: signed_by.len(),
        threshold,
        detail: detail.join("; "),
    })
}

/// Standard base64 of exactly 64 bytes, or `None`.
fn decode_signature(text: &str) -> Option<Signature> {
    let bytes = BASE64.decode(text).ok()?;
    let array: [u8; SIGNATURE_LENGTH] = bytes.try_into().ok()?;
    Some(Signature::from_bytes(&array))
}

fn join(ids: &BTreeSet<String>) -> String {
    ids.iter().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use time::macros::datetime;

    use super::*;
    use crate::keys::key_id;
    use crate::repo::signature::{SignatureFile, sign};

    const URL: &str = "https://updates.example.com/demo-app/";
    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn manifest_json(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v = serde_json::json!({
            "format": 1, "product": "demo-app", "serial": 7, "expires": "2027-03-01T00:00:00Z",
            "releases": [
              { "version": "1.1.0", "channel": "stable", "published": "2026-10-01T10:00:00Z",
                "artifacts": { "x86_64": { "full": {
                  "url": "packages/demo-app-1.1.0-x86_64.tar.gz", "size": 10, "sha256": SHA,
                  "unpacked_size": 20 } } } },
              { "version": "1.2.0", "channel": "stable", "published": "2026-11-30T10:00:00Z",
                "notes": "Fix login",
                "artifacts": { "x86_64": {
                  "full": { "url": "packages/demo-app-1.2.0-x86_64.tar.gz", "size": 10,
                            "sha256": SHA, "unpacked_size": 20 },
                  "patches": [{ "from": "1.1.0",
                    "url": "packages/demo-app-1.1.0-to-1.2.0-x86_64.tar.gz", "size": 5,
                    "sha256": SHA, "unpacked_size": 8,
                    "operations": {
                      "replace": { "files": ["bin/app"], "directories": ["web"] },
                      "delete": { "files": ["conf/legacy.yml"], "directories": ["plugins/legacy"] }
                    } }]
                } } }
            ]
        });
        edit(&mut v);
        serde_json::to_vec_pretty(&v).unwrap()
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sig_file(bytes: &[u8], keys: &[&SigningKey]) -> Vec<u8> {
        SignatureFile {
            signatures: keys.iter().map(|k| sign(bytes, k)).collect(),
        }
        .to_bytes()
    }

    fn policy(keys: &[&SigningKey]) -> TrustPolicy {
        TrustPolicy {
            product: "demo-app".into(),
            keys: keys.iter().map(|k| k.verifying_key()).collect(),
            threshold: 1,
            min_serial: 0,
            now: datetime!(2026-12-01 00:00 UTC),
        }
    }

    /// Signs `bytes` with `signer` and checks it against `policy`.
    fn check(
        bytes: &[u8],
        signer: &SigningKey,
        policy: &TrustPolicy,
    ) -> Result<Manifest, TrustError> {
        verify_manifest(bytes, &sig_file(bytes, &[signer]), policy, URL)
    }

    fn expect_security(err: TrustError, needles: &[&str]) {
        assert_eq!(err.exit_class(), ExitClass::Security, "{err}");
        let text = err.to_string();
        for needle in needles {
            assert!(text.contains(needle), "{needle:?} not in: {text}");
        }
    }

    #[test]
    fn accepts_a_signed_current_manifest() {
        let k = key(1);
        let m = check(&manifest_json(|_| {}), &k, &policy(&[&k])).unwrap();
        assert_eq!((m.serial, m.releases.len()), (7, 2));
    }

    #[test]
    fn accepts_the_same_serial_again_and_a_higher_one() {
        let k = key(1);
        let mut p = policy(&[&k]);
        p.min_serial = 7;
        check(&manifest_json(|_| {}), &k, &p).unwrap();
        p.min_serial = 3;
        check(&manifest_json(|_| {}), &k, &p).unwrap();
    }

    #[test]
    fn accepts_a_threshold_of_two_distinct_keys() {
        let (a, b) = (key(1), key(2));
        let bytes = manifest_json(|_| {});
        let mut p = policy(&[&a, &b]);
        p.threshold = 2;
        verify_manifest(&bytes, &sig_file(&bytes, &[&a, &b]), &p, URL).unwrap();
    }

    #[test]
    fn rejects_a_signature_by_the_wrong_key() {
        let (trusted, other) = (key(1), key(2));
        let err = check(&manifest_json(|_| {}), &other, &policy(&[&trusted])).unwrap_err();
        expect_security(err, &[URL, "0 of 1", &key_id(&other.verifying_key())]);
    }

    #[test]
    fn rejects_a_tampered_byte_before_parsing() {
        let k = key(1);
        let bytes = manifest_json(|_| {});
        let sig = sig_file(&bytes, &[&k]);
        let mut tampered = bytes.clone();
        let at = tampered.iter().position(|&b| b == b'7').unwrap();
        tampered[at] = b'9';
        let err = verify_manifest(&tampered, &sig, &policy(&[&k]), URL).unwrap_err();
        assert!(
            matches!(err, TrustError::SignatureThresholdNotMet { .. }),
            "{err}"
        );

        // Even garbage is not parsed when unsigned: the signature error comes first.
        let err = verify_manifest(b"not json", &sig, &policy(&[&k]), URL).unwrap_err();
        assert!(
            matches!(err, TrustError::SignatureThresholdNotMet { .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_one_key_signing_twice_for_a_threshold_of_two() {
        let (a, b) = (key(1), key(2));
        let bytes = manifest_json(|_| {});
        let mut p = policy(&[&a, &b]);
        p.threshold = 2;
        let err = verify_manifest(&bytes, &sig_file(&bytes, &[&a, &a]), &p, URL).unwrap_err();
        expect_security(err, &["1 of 2"]);
    }

    #[test]
    fn rejects_a_signature_that_is_not_64_bytes() {
        let k = key(1);
        let bytes = manifest_json(|_| {});
        let mut sig: serde_json::Value = serde_json::from_slice(&sig_file(&bytes, &[&k])).unwrap();
        let good = sig["signatures"][0]["sig"].as_str().unwrap().to_owned();
        sig["signatures"][0]["sig"] = format!("{good}AAAA").into();
        let sig = serde_json::to_vec(&sig).unwrap();
        let err = verify_manifest(&bytes, &sig, &policy(&[&k]), URL).unwrap_err();
        expect_security(err, &["not 64 bytes"]);
    }

    #[test]
    fn rejects_an_expired_manifest() {
        let k = key(1);
        let mut p = policy(&[&k]);
        p.now = datetime!(2027-03-01 00:00 UTC);
        let err = check(&manifest_json(|_| {}), &k, &p).unwrap_err();
        expect_security(err, &[URL, "expired at 2027-03-01T00:00:00Z"]);
    }

    #[test]
    fn rejects_a_replayed_lower_serial() {
        let k = key(1);
        let mut p = policy(&[&k]);
        p.min_serial = 8;
        let err = check(&manifest_json(|_| {}), &k, &p).unwrap_err();
        expect_security(
            err,
            &[
                "manifest serial 7 from",
                URL,
                "last accepted serial 8",
                "rollback",
            ],
        );
    }

    #[test]
    fn rejects_another_product() {
        let k = key(1);
        let bytes = manifest_json(|v| v["product"] = "other-app".into());
        let err = check(&bytes, &k, &policy(&[&k])).unwrap_err();
        expect_security(err, &["\"other-app\"", "\"demo-app\""]);
    }

    #[test]
    fn rejects_an_unknown_format() {
        let k = key(1);
        let bytes = manifest_json(|v| v["format"] = 2.into());
        let err = check(&bytes, &k, &policy(&[&k])).unwrap_err();
        expect_security(err, &["format 2", "format 1"]);
    }

    #[test]
    fn rejects_signed_but_unparsable_manifests() {
        let k = key(1);
        let bytes = manifest_json(|v| {
            v["releases"][1]["artifacts"]["x86_64"]["patches"][0]["operations"]["delete"]["files"]
                [0] = "../../etc/passwd".into();
        });
        let err = check(&bytes, &k, &policy(&[&k])).unwrap_err();
        assert!(matches!(err, TrustError::ParseManifest { .. }), "{err}");
        expect_security(err, &["..` component"]);
    }

    type ManifestEdit = Box<dyn FnOnce(&mut serde_json::Value)>;

    #[test]
    fn rejects_structural_errors() {
        let k = key(1);
        let p = policy(&[&k]);
        let cases: Vec<(ManifestEdit, &str)> = vec![
            (
                Box::new(|v| v["releases"][1]["version"] = "1.1.0".into()),
                "more than once",
            ),
            (
                Box::new(|v| {
                    let arts = v["releases"][0]["artifacts"].as_object_mut().unwrap();
                    let x = arts["x86_64"].clone();
                    arts.insert("amd64".into(), x);
                }),
                "listed twice",
            ),
            (
                Box::new(|v| {
                    v["releases"][0]["artifacts"]["x86_64"]["full"]["url"] =
                        "https://evil.example/x.tar.gz".into()
                }),
                "relative path inside the repository",
            ),
            (
                Box::new(|v| {
                    v["releases"][0]["artifacts"]["x86_64"]["full"]["url"] =
                        "evil.example:x.tar.gz".into()
                }),
                "plain relative path",
            ),
            (
                Box::new(|v| {
                    v["releases"][0]["artifacts"]["x86_64"]["full"]["sha256"] = "ABC".into()
                }),
                "64 lowercase hex",
            ),
            (
                Box::new(|v| {
                    v["releases"][1]["artifacts"]["x86_64"]["patches"][0]["operations"]["delete"]
                        ["files"][0] = "bin/app".into()
                }),
                "more than once",
            ),
            (
                Box::new(|v| {
                    v["releases"][1]["artifacts"]["x86_64"]["patches"][0]["operations"]["delete"]
                        ["files"][0] = "web/old.css".into()
                }),
                "inside a replaced path",
            ),
            (
                Box::new(|v| {
                    v["releases"][1]["artifacts"]["x86_64"]["patches"][0]["operations"]["delete"]
                        ["directories"][0] = "bin".into()
                }),
                "also deleted",
            ),
            (
                Box::new(|v| {
                    v["releases"][1]["artifacts"]["x86_64"]["patches"][0]["operations"]["replace"]
                        ["files"][0] = "web/index.html".into()
                }),
                "inside a replaced directory",
            ),
            (
                Box::new(|v| {
                    v["releases"][1]["artifacts"]["x86_64"]["patches"][0]["from"] = "1.2.0".into()
                }),
                "its own release",
            ),
        ];
        for (edit, needle) in cases {
            let err = check(&manifest_json(edit), &k, &p).unwrap_err();
            expect_security(err, &[URL, needle]);
        }
    }

    #[test]
    fn refuses_package_urls_the_fetcher_would_refuse() {
        // A URL parser or server could turn these into `..` or another file: the manifest is
        // refused at verification, not later when one of them happens to be fetched.
        let k = key(1);
        for url in [
            "packages/%2e%2e/x.tar.gz",
            "packages/.\t./x.tar.gz",
            "pa\nckages/x",
        ] {
            let bytes = manifest_json(|v| {
                v["releases"][0]["artifacts"]["x86_64"]["full"]["url"] = url.into()
            });
            let err = check(&bytes, &k, &policy(&[&k])).unwrap_err();
            expect_security(err, &[URL, "relative path inside the repository"]);
        }
    }

    #[test]
    fn the_same_version_on_two_channels_is_fine() {
        let k = key(1);
        let bytes = manifest_json(|v| {
            v["releases"][1]["version"] = "1.1.0".into();
            v["releases"][1]["channel"] = "beta".into();
            v["releases"][1]["artifacts"]["x86_64"]["patches"] = serde_json::json!([]);
        });
        check(&bytes, &k, &policy(&[&k])).unwrap();
    }
}

#[cfg(test)]
mod signature_tests {
    use super::*;
    use crate::error::ExitClass;
    use crate::repo::signature::{SignatureEntry, sign};
    use ed25519_dalek::SigningKey;

    const URL: &str = "https://updates.example.com/demo/";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn file_of(entries: Vec<SignatureEntry>) -> Vec<u8> {
        SignatureFile {
            signatures: entries,
        }
        .to_bytes()
    }

    #[test]
    fn a_trusted_signature_verifies_and_the_file_round_trips() {
        let k = key(1);
        let entry = sign(b"manifest", &k);
        assert_eq!(entry.keyid, key_id(&k.verifying_key()));
        let bytes = file_of(vec![entry.clone()]);
        let parsed: SignatureFile = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed.signatures, vec![entry]);
        verify_signatures(b"manifest", &bytes, &[k.verifying_key()], 1, URL).unwrap();
    }

    #[test]
    fn a_changed_byte_fails() {
        let k = key(1);
        let sig = file_of(vec![sign(b"manifest", &k)]);
        let err = verify_signatures(b"manifesT", &sig, &[k.verifying_key()], 1, URL).unwrap_err();
        assert_eq!(err.exit_class(), ExitClass::Security);
        let text = err.to_string();
        assert!(text.contains(URL), "{text}");
        assert!(text.contains("0 of 1"), "{text}");
        assert!(text.contains("do not verify"), "{text}");
    }

    #[test]
    fn unknown_keys_are_ignored_and_named() {
        let (trusted, stranger) = (key(1), key(2));
        let sig = file_of(vec![sign(b"m", &stranger)]);
        let err = verify_signatures(b"m", &sig, &[trusted.verifying_key()], 1, URL)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown keys"), "{err}");
        assert!(err.contains(&key_id(&stranger.verifying_key())), "{err}");
        assert!(err.contains("[source].keys"), "{err}");

        let sig = file_of(vec![sign(b"m", &stranger), sign(b"m", &trusted)]);
        verify_signatures(b"m", &sig, &[trusted.verifying_key()], 1, URL).unwrap();
    }

    #[test]
    fn one_key_counts_once_toward_a_threshold() {
        let (a, b) = (key(1), key(2));
        let trusted = [a.verifying_key(), b.verifying_key(), a.verifying_key()];
        let twice = file_of(vec![sign(b"m", &a), sign(b"m", &a)]);
        let err = verify_signatures(b"m", &twice, &trusted, 2, URL).unwrap_err();
        assert!(err.to_string().contains("1 of 2"), "{err}");
        let both = file_of(vec![sign(b"m", &a), sign(b"m", &b)]);
        verify_signatures(b"m", &both, &trusted, 2, URL).unwrap();
    }

    #[test]
    fn signatures_must_be_exactly_64_canonical_bytes() {
        let k = key(1);
        let good = sign(b"m", &k);
        let raw = BASE64.decode(&good.sig).unwrap();

        let mut long = raw.clone();
        long.push(0);
        let short = &raw[..63];
        for sig in [
            BASE64.encode(&long),
            BASE64.encode(short),
            "not base64!".to_owned(),
        ] {
            let bytes = file_of(vec![SignatureEntry {
                keyid: good.keyid.clone(),
                sig,
            }]);
            let err = verify_signatures(b"m", &bytes, &[k.verifying_key()], 1, URL).unwrap_err();
            assert!(err.to_string().contains("not 64 bytes"), "{err}");
        }

        // S + L (the group order) is the same signature in a non-canonical encoding.
        const ORDER: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut malleated = raw.clone();
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(malleated[32 + i]) + u16::from(ORDER[i]) + carry;
            malleated[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_ne!(malleated, raw);
        let bytes = file_of(vec![SignatureEntry {
            keyid: good.keyid.clone(),
            sig: BASE64.encode(&malleated),
        }]);
        assert!(verify_signatures(b"m", &bytes, &[k.verifying_key()], 1, URL).is_err());
    }

    #[test]
    fn malformed_files_and_thresholds_are_refused() {
        let k = key(1);
        let err = verify_signatures(b"m", b"{not json", &[k.verifying_key()], 1, URL).unwrap_err();
        assert!(matches!(err, TrustError::MalformedSignatureFile { .. }));
        let empty = file_of(vec![]);
        let err = verify_signatures(b"m", &empty, &[k.verifying_key()], 1, URL).unwrap_err();
        assert!(matches!(err, TrustError::Unsigned { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Security);
        let err = verify_signatures(b"m", b" \n", &[k.verifying_key()], 1, URL).unwrap_err();
        assert!(err.to_string().contains("is not signed"), "{err}");
        let sig = file_of(vec![sign(b"m", &k)]);
        for threshold in [0, 2] {
            let err =
                verify_signatures(b"m", &sig, &[k.verifying_key()], threshold, URL).unwrap_err();
            assert_eq!(err.exit_class(), ExitClass::Usage);
        }
    }
}
