//! `molt publish`: add a release to a repository (see `repo::publish`).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use time::OffsetDateTime;

use crate::Error;
use crate::output::Output;
use crate::package::archive::Compression;
use crate::repo::publish::{PublishRequest, publish};
use crate::version::Version;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The repository directory (created if absent).
    #[arg(long)]
    pub repo: PathBuf,
    /// The publisher's secret key (PKCS#8 PEM).
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long)]
    pub product: String,
    #[arg(long)]
    pub version: String,
    /// The release tree to publish.
    #[arg(long)]
    pub tree: PathBuf,
    /// Architecture (default: this machine's); `amd64`/`arm64` are accepted.
    #[arg(long)]
    pub arch: Option<String>,
    /// Channel (default: stable).
    #[arg(long)]
    pub channel: Option<String>,
    #[arg(long)]
    pub notes: Option<String>,
    /// Days until the manifest expires (default: 90).
    #[arg(long)]
    pub expires_days: Option<u32>,
    /// Package compression: `zstd` (default) or `gzip` (for clients older than zstd support,
    /// which refuse a zstd package as corrupt).
    #[arg(long, value_parser = ["zstd", "gzip"], default_value = "zstd")]
    pub compression: String,
    /// Patches are made from this many of the newest earlier releases of the line (default 5;
    /// 0: none). Installs of older releases take the full package.
    #[arg(long, default_value_t = crate::repo::publish::DEFAULT_PATCHES)]
    pub patches: usize,
    /// A patch whose metadata (its operations and delta tables, as JSON) is larger than this
    /// many bytes is written as a document of its own, which the manifest names by size and
    /// SHA-256, instead of inline in the manifest (default 262144). Clients older than patch
    /// documents install the full package instead.
    #[arg(long, default_value_t = crate::repo::publish::DEFAULT_INLINE_PATCH_BYTES)]
    pub inline_patch_bytes: u64,
}

pub(super) fn run(args: &PublishArgs, out: &Output) -> Result<(), Error> {
    let request = PublishRequest {
        repo: args.repo.clone(),
        key: args.key.clone(),
        product: args.product.clone(),
        version: Version::parse(&args.version)?,
        tree: args.tree.clone(),
        arch: args.arch.clone(),
        channel: args.channel.clone(),
        notes: args.notes.clone(),
        expires_days: args.expires_days,
        patches: args.patches,
        inline_patch_bytes: args.inline_patch_bytes,
        compression: if args.compression == "gzip" {
            Compression::Gzip
        } else {
            Compression::Zstd
        },
        now: OffsetDateTime::now_utc(),
    };
    let report = publish(&request)?;
    let mut lines = vec![format!(
        "published {} {} ({}, {}) as manifest serial {}: full package {} ({} bytes)",
        args.product,
        report.version,
        report.arch,
        report.channel,
        report.serial,
        report.full.url,
        report.full.size
    )];
    for p in &report.patches {
        lines.push(format!(
            "  patch {} → {}: {} ({} bytes)",
            p.from, p.to, p.package.url, p.package.size
        ));
    }
    let mut fields = json!({
        "serial": report.serial,
        "version": report.version,
        "full": report.full,
        "patches": report.patches.iter().map(|p| json!({"from": p.from, "url": p.package.url, "size": p.package.size})).collect::<Vec<_>>(),
    });
    if !report.warnings.is_empty() {
        fields["warnings"] = json!(report.warnings);
    }
    out.success(&lines.join("\n"), fields);
    Ok(())
}
