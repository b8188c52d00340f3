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

/// Any failure of a molt command: a module's typed error, or one of the few the pipeline itself
/// raises. `main` prints [`Error::report`] and exits with [`Error::exit_class`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Trust(#[from] crate::repo::trust::TrustError),
    #[error(transparent)]
    Publish(#[from] crate::repo::publish::PublishError),
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error(transparent)]
    Extract(#[from] crate::package::extract::ExtractError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Plan(#[from] crate::txn::PlanError),
    #[error(transparent)]
    Txn(#[from] crate::txn::TxnError),
    #[error(transparent)]
    Plugin(#[from] crate::plugins::PluginError),
    #[error(transparent)]
    Scan(#[from] crate::tree::ScanError),
    #[error("invalid --version: {0}")]
    Version(#[from] crate::version::VersionError),
    #[error("strategy {plugin} {reason}; nothing was changed")]
    Decision { plugin: String, reason: String },
    #[error(
        "package {url} unpacks to {actual} bytes, but the signed manifest says {expected}; \
         the package does not match its release — nothing was changed"
    )]
    UnpackedSizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("cannot keep the device id in {path}: {reason}")]
    DeviceId {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{count} installed file(s) differ from what molt recorded:\n{details}")]
    VerifyMismatch { count: usize, details: String },
}

impl Error {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Error::Config(e) => e.exit_class(),
            Error::Key(e) => e.exit_class(),
            Error::Trust(e) => e.exit_class(),
            Error::Publish(e) => e.exit_class(),
            Error::Fetch(e) => e.exit_class(),
            Error::Extract(e) => e.exit_class(),
            Error::State(e) => e.exit_class(),
            Error::Plan(e) => e.exit_class(),
            Error::Txn(e) => e.exit_class(),
            Error::Plugin(e) => e.exit_class(),
            Error::Scan(_) => ExitClass::Failure,
            Error::Version(_) => ExitClass::Usage,
            Error::Decision { .. } => ExitClass::Failure,
            Error::UnpackedSizeMismatch { .. } => ExitClass::Security,
            Error::DeviceId { .. } => ExitClass::Failure,
            Error::VerifyMismatch { .. } => ExitClass::Failure,
        }
    }

    /// The message with its chain of causes, each cause added only if it says something new.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let more = s.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = s.source();
        }
        text
    }
}
