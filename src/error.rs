//! Typed errors. The library returns these; `main` maps them to exit codes with
//! [`Error::exit_code`] (through [`RunStatus`], the one place exit codes are written).

use std::path::PathBuf;

use crate::run_status::RunStatus;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid campaign/config file, template or list structure: nothing was sent.
    #[error("{0}")]
    Config(String),
    /// The state store could not be opened or written.
    #[error("{}", store_message(path, message))]
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
    #[error("{}", io_message(context, source))]
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
            RunStatus::Config.exit_code()
        } else {
            RunStatus::Failed.exit_code()
        }
    }

    /// A write failed because the file system is full (the message says so, and how to resume).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Store { message, .. } => is_disk_full_text(message),
            Error::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(28)
            }
            _ => false,
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

/// What to tell the user when a write ran out of space. The store commits results in groups
/// and every group is durable before it is reported, so what was recorded before the failed
/// write survives; the rerun resumes from it.
const DISK_FULL_ADVICE: &str = "nothing already recorded is lost (every result reported \
     before this point is in the store); free space on that file system, then run the same \
     `blast send` again to resume: it never resends a recipient recorded as sent";

/// sled reports I/O errors as `IO error: {io::Error:?}`, so a full disk reaches us as text
/// (`Os { code: 28, kind: StorageFull, message: "No space left on device" }`).
fn is_disk_full_text(message: &str) -> bool {
    message.contains("StorageFull")
        || message.contains("No space left on device")
        || message.contains("code: 28,")
        || message.contains("os error 28")
}

fn store_message(path: &std::path::Path, message: &str) -> String {
    if is_disk_full_text(message) {
        return format!(
            "the disk is full: writing the state store {} failed (No space left on device); {DISK_FULL_ADVICE}",
            path.display()
        );
    }
    format!("state store {}: {message}", path.display())
}

fn io_message(context: &str, source: &std::io::Error) -> String {
    if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
        return format!(
            "the disk is full (No space left on device): {context}; {DISK_FULL_ADVICE}"
        );
    }
    format!("{context}: {source}")
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_says_what_happened_where_and_how_to_resume() {
        // The text sled gives for ENOSPC.
        let e = Error::Store {
            path: "/srv/state/spring/store".into(),
            message:
                "IO error: Os { code: 28, kind: StorageFull, message: \"No space left on device\" }"
                    .into(),
        };
        assert!(e.is_disk_full());
        let m = e.to_string();
        assert!(
            m.starts_with(
                "the disk is full: writing the state store /srv/state/spring/store failed"
            ),
            "{m}"
        );
        assert!(
            m.contains("nothing already recorded is lost") && m.contains("blast send"),
            "{m}"
        );
        assert!(!m.contains("Os {"), "{m}");
        let e = Error::io(
            "writing prune report p.csv",
            std::io::Error::from_raw_os_error(28),
        );
        assert!(e.is_disk_full());
        assert!(
            e.to_string().starts_with(
                "the disk is full (No space left on device): writing prune report p.csv; nothing"
            ),
            "{e}"
        );
        // Other errors are as they were.
        let e = Error::Store {
            path: "s".into(),
            message: "corrupt".into(),
        };
        assert!(!e.is_disk_full());
        assert_eq!(e.to_string(), "state store s: corrupt");
    }
}
