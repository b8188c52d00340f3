//! `manifest.json` + `manifest.json.sig` through the whole verify-then-parse path, with a fixed
//! trusted key.
//!
//! Input: one byte, then data. Bit 0 clear: the data is the manifest and the target signs it
//! with the trusted key (so mutated manifests reach the parser and every check after it). Bit 0
//! set: the data is `manifest` + `\n--sig--\n` + a signature file, both as given (the signature
//! file parser and the threshold logic).
//!
//! Invariants: an accepted manifest meets the policy (product, format, expiry, serial), passes
//! the structural check, and stays accepted when re-serialized and re-signed; flipping any bit of
//! the accepted bytes makes the signature check refuse it; a properly signed manifest is never
//! refused as badly signed.

use super::{SOURCE_URL, policy, signing_key};
use molt::error::ExitClass;
use molt::repo::manifest::{FORMAT, Operations};
use molt::repo::signature::{self, SignatureFile};
use molt::repo::trust::{TrustError, check_structure, verify_manifest};

const SEPARATOR: &[u8] = b"\n--sig--\n";

fn signed(bytes: &[u8]) -> Vec<u8> {
    SignatureFile {
        signatures: vec![signature::sign(bytes, &signing_key())],
    }
    .to_bytes()
}

/// One input: see the module doc for its layout and the invariants it asserts.
pub fn check(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let (manifest, sig) = if mode & 1 == 0 {
        (body.to_vec(), signed(body))
    } else {
        match body.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => (body[..i].to_vec(), body[i + SEPARATOR.len()..].to_vec()),
            None => (body.to_vec(), Vec::new()),
        }
    };
    let policy = policy();
    match verify_manifest(&manifest, &sig, &policy, SOURCE_URL) {
        Ok(m) => {
            assert_eq!(m.format, FORMAT);
            assert_eq!(m.product, policy.product);
            assert!(m.expires > policy.now);
            assert!(m.serial >= policy.min_serial);
            check_structure(&m, SOURCE_URL).expect("accepted but structurally invalid");
            for r in &m.releases {
                for a in r.artifacts.values() {
                    for p in &a.patches {
                        // Parsed operations are checked by their type; the same rules again.
                        let ops = &p.operations;
                        Operations::new(ops.replace.clone(), ops.delete.clone())
                            .expect("accepted bad operations");
                    }
                }
            }
            // Verify before parse: any change to the signed bytes is refused at the signature.
            let i = (mode as usize).wrapping_mul(131) % manifest.len();
            let mut tampered = manifest.clone();
            tampered[i] ^= 1 << (mode % 8);
            match verify_manifest(&tampered, &sig, &policy, SOURCE_URL) {
                Err(TrustError::SignatureThresholdNotMet { .. }) => {}
                other => panic!("a tampered manifest was not refused at the signature: {other:?}"),
            }
            // What was accepted re-serializes to a manifest that is accepted the same way.
            let again = serde_json::to_vec(&m).unwrap();
            let m2 = verify_manifest(&again, &signed(&again), &policy, SOURCE_URL)
                .expect("the re-serialized manifest was refused");
            assert_eq!(
                serde_json::to_vec(&m2).unwrap(),
                again,
                "serialization is not stable"
            );
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(e.exit_class(), ExitClass::Security, "{e}");
            if mode & 1 == 0 {
                assert!(
                    !matches!(
                        e,
                        TrustError::SignatureThresholdNotMet { .. }
                            | TrustError::MalformedSignatureFile { .. }
                    ),
                    "a properly signed manifest was refused as badly signed: {e}"
                );
            }
        }
    }
}
