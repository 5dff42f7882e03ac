//! Typed errors. The library returns these; `main` maps them to exit codes with
//! [`Error::exit_code`], so the policy lives in one place.

use std::path::PathBuf;

/// Exit code: campaign complete (every recipient in a final state).
pub const EXIT_OK: i32 = 0;
/// Exit code: any other failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad config or input; nothing was sent.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code: stopped with recipients still deferred (rerun later to resume). sysexits EX_TEMPFAIL.
pub const EXIT_DEFERRED: i32 = 75;
/// Exit code: interrupted by the user; state saved.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid campaign/config file, template or list structure: nothing was sent.
    #[error("{0}")]
    Config(String),
    /// The state store could not be opened or written.
    #[error("state store {path}: {message}")]
    Store {
        /// The store directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Another process holds the campaign (a second `blast send` of the same campaign).
    #[error("{0}")]
    Locked(String),
    /// The lane could not deliver at all (relay unreachable, TLS required but unavailable…).
    #[error("{0}")]
    Lane(String),
    /// File-system or other I/O failure, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing (names the file).
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// A config/input error: exit 2, nothing sent.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config(_))
    }

    /// Worth retrying later without changing anything (lock held, relay down).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Locked(_) | Error::Lane(_))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        if self.is_config() {
            EXIT_CONFIG
        } else {
            EXIT_FAILURE
        }
    }

    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
