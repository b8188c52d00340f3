//! The error of a molt command: one variant per module's typed error (each says its
//! [`ExitClass`]), plus the few the pipeline itself raises. It sits at the top of the module graph,
//! above every module whose error it wraps; those modules import only the leaf `error`.

use crate::error::{ExitClass, OsError, chain, os_error_of};

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
    /// The host refused what the strategy decided (not on offer, a downgrade not allowed, …).
    #[error("strategy {plugin} {reason}; nothing was changed")]
    DecisionRefused { plugin: String, reason: String },
    #[error("cannot keep the device id in {path}: {source}")]
    DeviceId {
        path: std::path::PathBuf,
        source: std::io::Error,
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
            Error::DecisionRefused { .. } => ExitClass::Failure,
            Error::DeviceId { .. } => ExitClass::Failure,
            Error::VerifyMismatch { .. } => ExitClass::Failure,
        }
    }

    /// The message with its chain of causes, each cause added only if it says something new.
    pub fn report(&self) -> String {
        chain(self)
    }

    /// The operating-system error at the root of this failure, if one caused it (the first
    /// `io::Error` with an errno in the chain of causes).
    pub fn os_error(&self) -> Option<OsError> {
        os_error_of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errno_survives_the_chain_of_causes() {
        let err = Error::Txn(crate::txn::TxnError::Remove {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        assert_eq!(err.os_error().map(OsError::name).as_deref(), Some("ENOSPC"));
        assert_eq!(OsError { errno: 4095 }.name(), "errno 4095");
        let plain = Error::Version(crate::version::Version::parse("x").unwrap_err());
        assert_eq!(plain.os_error(), None);
    }
}
