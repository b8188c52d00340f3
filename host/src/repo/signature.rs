//! `manifest.json.sig`: signing a manifest and checking that enough distinct trusted keys signed
//! its exact bytes.
//!
//! The file is JSON `{"signatures": [{"keyid": "<hex>", "sig": "<base64>"}]}`. Verification never
//! parses or re-serializes the manifest: it runs `verify_strict` over the bytes as fetched. Each
//! trusted key counts at most once however often it appears (in the trusted list or in the file),
//! so one key cannot meet a threshold of two by signing twice; signatures by keys that are not
//! trusted are ignored (they are named in the error if the threshold is not met).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SIGNATURE_LENGTH, Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys::key_id;
use crate::repo::trust::TrustError;

/// The whole `manifest.json.sig` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureFile {
    pub signatures: Vec<SignatureEntry>,
}

/// One signature: which key made it and the 64 signature bytes in standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    pub keyid: String,
    pub sig: String,
}

impl SignatureFile {
    /// The file's bytes as written to the repository (pretty JSON, trailing newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<serde_json::Value> = self
            .signatures
            .iter()
            .map(|e| serde_json::json!({ "keyid": e.keyid, "sig": e.sig }))
            .collect();
        let value = serde_json::json!({ "signatures": entries });
        format!("{value:#}\n").into_bytes()
    }
}

/// Signs the exact `bytes` with `key`.
pub fn sign(bytes: &[u8], key: &SigningKey) -> SignatureEntry {
    let signature = key.sign(bytes);
    SignatureEntry {
        keyid: key_id(&key.verifying_key()),
        sig: BASE64.encode(signature.to_bytes()),
    }
}

/// Checks that at least `threshold` distinct keys of `trusted` made a valid strict signature in
/// `sig_file_bytes` over exactly `bytes`. `source` (the repository URL) is named in errors.
pub fn verify(
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
    use super::*;
    use crate::error::ExitClass;

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
        verify(b"manifest", &bytes, &[k.verifying_key()], 1, URL).unwrap();
    }

    #[test]
    fn a_changed_byte_fails() {
        let k = key(1);
        let sig = file_of(vec![sign(b"manifest", &k)]);
        let err = verify(b"manifesT", &sig, &[k.verifying_key()], 1, URL).unwrap_err();
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
        let err = verify(b"m", &sig, &[trusted.verifying_key()], 1, URL)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown keys"), "{err}");
        assert!(err.contains(&key_id(&stranger.verifying_key())), "{err}");
        assert!(err.contains("[source].keys"), "{err}");

        let sig = file_of(vec![sign(b"m", &stranger), sign(b"m", &trusted)]);
        verify(b"m", &sig, &[trusted.verifying_key()], 1, URL).unwrap();
    }

    #[test]
    fn one_key_counts_once_toward_a_threshold() {
        let (a, b) = (key(1), key(2));
        let trusted = [a.verifying_key(), b.verifying_key(), a.verifying_key()];
        let twice = file_of(vec![sign(b"m", &a), sign(b"m", &a)]);
        let err = verify(b"m", &twice, &trusted, 2, URL).unwrap_err();
        assert!(err.to_string().contains("1 of 2"), "{err}");
        let both = file_of(vec![sign(b"m", &a), sign(b"m", &b)]);
        verify(b"m", &both, &trusted, 2, URL).unwrap();
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
            let err = verify(b"m", &bytes, &[k.verifying_key()], 1, URL).unwrap_err();
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
        assert!(verify(b"m", &bytes, &[k.verifying_key()], 1, URL).is_err());
    }

    #[test]
    fn malformed_files_and_thresholds_are_refused() {
        let k = key(1);
        let err = verify(b"m", b"{not json", &[k.verifying_key()], 1, URL).unwrap_err();
        assert!(matches!(err, TrustError::MalformedSignatureFile { .. }));
        let empty = file_of(vec![]);
        let err = verify(b"m", &empty, &[k.verifying_key()], 1, URL).unwrap_err();
        assert!(matches!(err, TrustError::Unsigned { .. }), "{err}");
        assert_eq!(err.exit_class(), ExitClass::Security);
        let err = verify(b"m", b" \n", &[k.verifying_key()], 1, URL).unwrap_err();
        assert!(err.to_string().contains("is not signed"), "{err}");
        let sig = file_of(vec![sign(b"m", &k)]);
        for threshold in [0, 2] {
            let err = verify(b"m", &sig, &[k.verifying_key()], threshold, URL).unwrap_err();
            assert_eq!(err.exit_class(), ExitClass::Usage);
        }
    }
}
