//! Fetch and verify the manifest: `manifest.json` and its signature (both capped), signatures
//! checked over the exact bytes, then parsed and checked for product, expiry and serial
//! (`repo::trust`). The serial is persisted only once the update it allowed is committed (or
//! the strategy chose nothing). A patch the manifest keeps in a document of its own is read
//! here too, once the strategy has chosen it ([`fetch_patch_document`]).

use std::io::Read;

use ed25519_dalek::VerifyingKey;
use serde_json::json;
use time::OffsetDateTime;

use crate::Error;
use crate::config::Config;
use crate::fetch::{FetchOptions, MANIFEST_CAP, SIGNATURE_CAP, Source};
use crate::hashing::VerifyingReader;
use crate::install::Install;
use crate::output::Output;
use crate::package::archive::MAX_ZSTD_WINDOW_LOG;
use crate::repo::manifest::{MAX_PATCH_DOCUMENT_BYTES, Manifest, Package, Patch, PatchDocument};
use crate::repo::trust::{TrustError, TrustPolicy, verify_manifest};
use crate::state::TrustState;

/// The configured repository, with the configured fetch deadline and minimum rate.
pub(crate) fn source(config: &Config) -> Result<Source, Error> {
    Ok(
        Source::parse(&config.source_url, &config.base_dir)?.with_options(FetchOptions {
            deadline: config.fetch_deadline,
            min_rate: config.fetch_min_rate,
            ..FetchOptions::default()
        }),
    )
}

/// A manifest whose signatures, product, expiry and serial passed, with the trust state it was
/// checked against.
pub(crate) struct VerifiedManifest {
    pub(crate) manifest: Manifest,
    trust: TrustState,
}

impl VerifiedManifest {
    /// Persists the manifest's serial as the highest accepted (only ever raises it).
    pub(crate) fn persist_serial(self, install: &Install) -> Result<(), Error> {
        let mut trust = self.trust;
        if self.manifest.serial > trust.highest_serial {
            trust.highest_serial = self.manifest.serial;
            install.state_dir.save_trust(&trust)?;
        }
        Ok(())
    }
}

/// Fetches and verifies the manifest against the configured keys and the persisted serial, and
/// reports it as the `manifest` event.
pub(crate) fn fetch_verified(
    config: &Config,
    source: &Source,
    keys: &[VerifyingKey],
    trust: TrustState,
    out: &Output,
) -> Result<VerifiedManifest, Error> {
    let manifest = fetch_and_verify(config, source, keys, &trust)?;
    out.event(
        "manifest",
        &format!(
            "verified manifest serial {} from {} ({} releases)",
            manifest.serial,
            source.display_url("manifest.json"),
            manifest.releases.len()
        ),
        json!({"serial": manifest.serial, "url": source.display_url("manifest.json")}),
    );
    Ok(VerifiedManifest { manifest, trust })
}

fn fetch_and_verify(
    config: &Config,
    source: &Source,
    keys: &[VerifyingKey],
    trust: &TrustState,
) -> Result<Manifest, Error> {
    let policy = TrustPolicy {
        product: config.product.clone(),
        keys: keys.to_vec(),
        threshold: config.threshold,
        min_serial: trust.highest_serial,
        now: OffsetDateTime::now_utc(),
    };
    let url = source.display_url("manifest.json");
    let fetch_pair = || -> Result<(Vec<u8>, Vec<u8>), Error> {
        let manifest = source.fetch_small("manifest.json", MANIFEST_CAP)?;
        let sig = match source.fetch_small("manifest.json.sig", SIGNATURE_CAP) {
            Ok(sig) => sig,
            // An unsigned manifest is a security rejection, whatever the source.
            Err(e) if e.is_not_found() => {
                return Err(TrustError::Unsigned { url: url.clone() }.into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok((manifest, sig))
    };
    let (manifest_bytes, sig_bytes) = fetch_pair()?;
    match verify_manifest(&manifest_bytes, &sig_bytes, &policy, &url) {
        // A publisher renames the manifest, then its signature: a read between the two renames
        // sees a mismatched pair (molt's own publisher first writes a signature file valid for
        // both manifests, but other publishers and older ones do not). Read once more; only
        // changed bytes get a second verification.
        Err(mismatch @ TrustError::SignatureThresholdNotMet { .. }) => {
            let (again_manifest, again_sig) = fetch_pair()?;
            if (&again_manifest, &again_sig) == (&manifest_bytes, &sig_bytes) {
                return Err(mismatch.into());
            }
            tracing::info!(%url, "the repository changed while it was read; verifying the new pair");
            Ok(verify_manifest(&again_manifest, &again_sig, &policy, &url)?)
        }
        other => Ok(other?),
    }
}

/// Reads the patch `document` names: fetched into `downloads` like a package (cut at its signed
/// size, hashed as it is written), parsed while its bytes are checked again in band, and held
/// to what the manifest says of it (its `from` and package size). Any failure is a security
/// refusal: the manifest signed this document.
pub(crate) fn fetch_patch_document(
    source: &Source,
    document: &PatchDocument,
    downloads: &std::path::Path,
) -> Result<Patch, Error> {
    let signed = &document.document;
    let url = source.display_url(signed.url.as_str());
    let refuse = |reason: String| TrustError::PatchDocument {
        url: url.clone(),
        reason,
    };
    if signed.size > MAX_PATCH_DOCUMENT_BYTES {
        return Err(refuse(format!(
            "declares {} bytes, more than the {MAX_PATCH_DOCUMENT_BYTES} a client reads",
            signed.size
        ))
        .into());
    }
    let as_package = Package {
        url: signed.url.clone(),
        size: signed.size,
        sha256: signed.sha256.clone(),
        unpacked_size: 0,
    };
    let fetched = source.fetch_verified(&as_package, downloads, &mut |_, _| {})?;
    let verdict = std::rc::Rc::new(std::cell::RefCell::new(None));
    let parsed = std::fs::File::open(&fetched.path).and_then(|file| {
        let verified = VerifyingReader::new(file, signed.size, &signed.sha256, verdict.clone());
        let mut json = zstd::stream::read::Decoder::new(verified)?.single_frame();
        json.window_log_max(MAX_ZSTD_WINDOW_LOG)?;
        let json = std::io::BufReader::new(json.take(MAX_PATCH_DOCUMENT_BYTES));
        serde_json::from_reader::<_, Patch>(json).map_err(std::io::Error::from)
    });
    let _ = std::fs::remove_file(&fetched.path);
    let patch = match (parsed, verdict.borrow_mut().take()) {
        (_, Some(mismatch)) => {
            return Err(refuse(format!("is not the signed file: {mismatch}")).into());
        }
        (Err(e), None) => {
            return Err(refuse(format!(
                "is not the zstd-compressed JSON of a patch within {MAX_PATCH_DOCUMENT_BYTES} \
                 bytes: {e}"
            ))
            .into());
        }
        (Ok(patch), None) => patch,
    };
    if patch.from != document.from || patch.package.size != document.size {
        return Err(refuse(format!(
            "describes the patch from {} ({} bytes), but the manifest names it for the patch \
             from {} ({} bytes)",
            patch.from, patch.package.size, document.from, document.size
        ))
        .into());
    }
    Ok(patch)
}
