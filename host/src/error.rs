//! The exit-code classes of the CLI contract, and how an error is rendered (its chain of causes,
//! its errno). A leaf: every module's error says its [`ExitClass`] through this module, which
//! imports nothing of the crate; the crate-level [`crate::Error`] that wraps them all lives in
//! `command_error`, at the top.
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
