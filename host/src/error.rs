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
            Error::Decision { .. } => ExitClass::Failure,
            Error::UnpackedSizeMismatch { .. } => ExitClass::Security,
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

/// An error's message with its chain of causes, each cause added only if it says something new.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
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

/// The errno of an `io::Error` that caused a failure: what automation can act on (`ENOSPC`,
/// `EIO`, ...), kept from the system call to the final message and the JSON error object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsError {
    pub errno: i32,
}

impl OsError {
    /// The symbolic name (`"ENOSPC"`), or `"errno N"` for one without a name here.
    pub fn name(self) -> String {
        errno_name(self.errno).map_or_else(|| format!("errno {}", self.errno), str::to_owned)
    }
}

/// The first `io::Error` with an errno in `err` and its causes.
pub(crate) fn os_error_of(err: &(dyn std::error::Error + 'static)) -> Option<OsError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(errno) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(OsError { errno });
        }
        current = e.source();
    }
    None
}

fn errno_name(errno: i32) -> Option<&'static str> {
    const NAMES: &[(i32, &str)] = &[
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EINTR, "EINTR"),
        (libc::EIO, "EIO"),
        (libc::ENXIO, "ENXIO"),
        (libc::E2BIG, "E2BIG"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EFAULT, "EFAULT"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENODEV, "ENODEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENFILE, "ENFILE"),
        (libc::EMFILE, "EMFILE"),
        (libc::ETXTBSY, "ETXTBSY"),
        (libc::EFBIG, "EFBIG"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::ESPIPE, "ESPIPE"),
        (libc::EROFS, "EROFS"),
        (libc::EMLINK, "EMLINK"),
        (libc::EPIPE, "EPIPE"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ELOOP, "ELOOP"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::EADDRINUSE, "EADDRINUSE"),
        (libc::ENETUNREACH, "ENETUNREACH"),
        (libc::ECONNABORTED, "ECONNABORTED"),
        (libc::ECONNRESET, "ECONNRESET"),
        (libc::ENOTCONN, "ENOTCONN"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
        (libc::ECONNREFUSED, "ECONNREFUSED"),
        (libc::EHOSTUNREACH, "EHOSTUNREACH"),
        (libc::ESTALE, "ESTALE"),
        (libc::EDQUOT, "EDQUOT"),
        (libc::ECANCELED, "ECANCELED"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == errno)
        .map(|(_, name)| *name)
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
