//! Release versions and architecture names as the repository contract spells them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A semantic version; a leading `v` is accepted on input and never written.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub semver::Version);

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "invalid version {input:?}: {reason} (expected a semantic version like 1.2.0 or 1.2.0-rc.1)"
)]
pub struct VersionError {
    pub input: String,
    pub reason: String,
}

impl Version {
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        let trimmed = s.strip_prefix('v').unwrap_or(s);
        semver::Version::parse(trimmed)
            .map(Version)
            .map_err(|e| VersionError {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }

    pub(crate) fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Normalizes an architecture name to Rust's spelling (`amd64` → `x86_64`, `arm64` → `aarch64`).
pub(crate) fn normalize_arch(arch: &str) -> String {
    match arch {
        "amd64" | "x64" => "x86_64".to_owned(),
        "arm64" => "aarch64".to_owned(),
        other => other.to_owned(),
    }
}

/// The architecture of the running machine, in Rust's spelling.
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_v_is_accepted_and_dropped() {
        assert_eq!(Version::parse("v1.2.0").unwrap().to_string(), "1.2.0");
        assert!(Version::parse("1.2.0-rc.1").unwrap().is_prerelease());
        assert!(Version::parse("1.2").is_err());
        assert!(Version::parse("1.2.0-rc.1").unwrap() < Version::parse("1.2.0").unwrap());
    }

    #[test]
    fn arch_aliases() {
        assert_eq!(normalize_arch("amd64"), "x86_64");
        assert_eq!(normalize_arch("arm64"), "aarch64");
        assert_eq!(normalize_arch("riscv64"), "riscv64");
    }
}
