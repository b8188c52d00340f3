//! `molt keygen`: a new ed25519 signing key pair in the contract's PEM formats.

use std::path::Path;

use serde_json::json;

use crate::Error;
use crate::keys::generate_keypair;
use crate::output::Output;

pub(super) fn run(out_dir: &Path, name: &str, out: &Output) -> Result<(), Error> {
    let (secret, public) = generate_keypair(out_dir, name)?;
    out.success(
        &format!(
            "wrote secret key {} (mode 0600; keep it offline)\nwrote public key {} (list it in [source].keys)",
            secret.display(),
            public.display()
        ),
        json!({"secret_key": secret, "public_key": public}),
    );
    Ok(())
}
