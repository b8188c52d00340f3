//! The exit-code classes of the CLI contract, and the crate-level error that wraps each
//! module's typed error.
//!
//! Every module owns an error enum whose variants are named for the failed operation and carry
//! the path or URL involved; each can say which [`ExitClass`] it belongs to. `main` maps the class
//! to the process exit code, so the contract's codes are decided in exactly one place per error.

/// Exit codes of the CLI contract (0 is success and never an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitClass {
    /// The operation failed; the install is unchanged or rolled back to the old release.
    Failure = 1,
    /// Bad command line or configuration.
    Usage = 2,
    /// Rejected for security: signature, hash, size, serial, expiry, product, unsafe archive.
    Security = 3,
    /// Rolling back failed: the install needs manual attention.
    RollbackFailed = 4,
}

impl ExitClass {
    pub fn code(self) -> i32 {
        self as i32
    }
}
