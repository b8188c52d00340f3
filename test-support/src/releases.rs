//! The release set that the strategy tests of the host (`plugins/tests.rs`) and of the SDK
//! (`policy.rs`) decide over, as plain data each side turns into its own types.

/// One release on offer: version, channel, and the versions it has patches from.
pub type Release = (&'static str, &'static str, &'static [&'static str]);

/// Stable 1.0.0 → 1.1.0 → 1.2.0 with a patch from each predecessor, a prerelease after them
/// and a newer major on another channel.
pub const REFERENCE: &[Release] = &[
    ("1.0.0", "stable", &[]),
    ("1.1.0", "stable", &["1.0.0"]),
    ("1.2.0", "stable", &["1.1.0"]),
    ("1.3.0-rc.1", "stable", &["1.2.0"]),
    ("2.0.0", "beta", &["1.2.0"]),
];
