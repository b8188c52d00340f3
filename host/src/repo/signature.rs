//! `manifest.json.sig`: the file format and signing. The file is JSON
//! `{"signatures": [{"keyid": "<hex>", "sig": "<base64>"}]}`. Checking a threshold of trusted
//! signatures is trust's first step ([`crate::repo::trust::verify_signatures`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::keys::key_id;

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
