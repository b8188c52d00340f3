//! The data model of `manifest.json` (repository contract, format 1).
//!
//! Unknown fields are kept in `extra` maps so that a publisher built from this code re-writes a
//! manifest produced by a newer publisher without dropping what it does not understand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::relpath::RelPath;
use crate::version::{Version, normalize_arch};

/// The only manifest format this build understands.
pub const FORMAT: u32 = 1;

type Extra = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub product: String,
    pub serial: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    #[serde(default)]
    pub releases: Vec<Release>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub version: Version,
    pub channel: String,
    #[serde(with = "time::serde::rfc3339")]
    pub published: OffsetDateTime,
    #[serde(default)]
    pub notes: String,
    /// Keyed by architecture name (Rust spelling; aliases are accepted on lookup).
    #[serde(default)]
    pub artifacts: BTreeMap<String, Artifacts>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Artifacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<Package>,
    #[serde(default)]
    pub patches: Vec<Patch>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A package file: where it is (relative to the repository root) and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub url: String,
    pub size: u64,
    pub sha256: String,
    pub unpacked_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Patch {
    pub from: Version,
    #[serde(flatten)]
    pub package: Package,
    pub operations: Operations,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operations {
    #[serde(default)]
    pub replace: PathSet,
    #[serde(default)]
    pub delete: PathSet,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSet {
    #[serde(default)]
    pub files: Vec<RelPath>,
    #[serde(default)]
    pub directories: Vec<RelPath>,
}

impl PathSet {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.directories.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RelPath> {
        self.files.iter().chain(&self.directories)
    }
}

impl Manifest {
    /// Releases on `channel` that carry artifacts for `arch`, newest first.
    pub fn releases_for<'a>(
        &'a self,
        channel: &'a str,
        arch: &'a str,
    ) -> impl Iterator<Item = (&'a Release, &'a Artifacts)> + 'a {
        let mut found: Vec<_> = self
            .releases
            .iter()
            .filter(move |r| r.channel == channel)
            .filter_map(move |r| r.artifacts_for(arch).map(|a| (r, a)))
            .collect();
        found.sort_by(|a, b| b.0.version.cmp(&a.0.version));
        found.into_iter()
    }

    /// The release `version`; when it is published on several channels, the one on
    /// `preferred_channel` (the install's own).
    pub fn release(&self, version: &Version, preferred_channel: &str) -> Option<&Release> {
        self.releases
            .iter()
            .filter(|r| &r.version == version)
            .min_by_key(|r| r.channel != preferred_channel)
    }
}

impl Release {
    /// The artifacts for `arch`, accepting `amd64`/`arm64` spellings on either side.
    pub fn artifacts_for(&self, arch: &str) -> Option<&Artifacts> {
        let wanted = normalize_arch(arch);
        self.artifacts
            .iter()
            .find(|(k, _)| normalize_arch(k) == wanted)
            .map(|(_, a)| a)
    }
}

impl Artifacts {
    pub fn patch_from(&self, from: &Version) -> Option<&Patch> {
        self.patches.iter().find(|p| &p.from == from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "format": 1, "product": "demo-app", "serial": 7, "expires": "2027-03-01T00:00:00Z",
      "mirror_hint": "kept",
      "releases": [{
        "version": "1.2.0", "channel": "stable", "published": "2026-11-30T10:00:00Z",
        "notes": "Fix login",
        "artifacts": { "amd64": {
          "full": { "url": "packages/a.tar.gz", "size": 1, "sha256": "ab", "unpacked_size": 2 },
          "patches": [{ "from": "v1.1.0", "url": "packages/p.tar.gz", "size": 3, "sha256": "cd",
            "unpacked_size": 4,
            "operations": { "replace": { "files": ["bin/app"], "directories": ["web"] },
                            "delete": { "files": ["conf/legacy.yml"] } } }]
        }}
      }]
    }"#;

    #[test]
    fn parses_the_contract_example_and_keeps_unknown_fields() {
        let m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(m.serial, 7);
        let (r, a) = m.releases_for("stable", "x86_64").next().unwrap();
        assert_eq!(r.version.to_string(), "1.2.0");
        let p = a.patch_from(&Version::parse("1.1.0").unwrap()).unwrap();
        assert_eq!(p.operations.replace.directories[0].as_str(), "web");
        let v = Version::parse("1.2.0").unwrap();
        assert_eq!(m.release(&v, "beta").unwrap().channel, "stable");
        let mut two = m.clone();
        let mut beta = two.releases[0].clone();
        beta.channel = "beta".into();
        two.releases.push(beta);
        assert_eq!(two.release(&v, "beta").unwrap().channel, "beta");
        assert_eq!(two.release(&v, "stable").unwrap().channel, "stable");
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["mirror_hint"], "kept");
    }

    #[test]
    fn refuses_unsafe_operation_paths() {
        let bad = EXAMPLE.replace("conf/legacy.yml", "../etc/passwd");
        assert!(serde_json::from_str::<Manifest>(&bad).is_err());
    }
}
