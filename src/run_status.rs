//! How a command ended, and the one place that maps it to the process exit code
//! (DESIGN.md: 0 complete, 75 deferred, 2 bad config or input, 130 interrupted, 1 other).
//! Commands return a [`RunStatus`]; errors have one too ([`crate::error::Error::status`]);
//! `main` turns either into an exit code with [`RunStatus::exit_code`].

/// How a command (a `blast send` run, or any other command) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Done: for a send, every recipient is in a final state. Exit 0.
    Complete,
    /// Stopped with recipients still deferred or pending: rerun later to resume. Exit 75
    /// (sysexits EX_TEMPFAIL).
    Deferred,
    /// Bad config or input; nothing was sent. Exit 2.
    Config,
    /// Interrupted (Ctrl-C, SIGTERM); state saved, a rerun resumes. Exit 130.
    Interrupted,
    /// Any other failure (lane could not deliver, store, I/O). Exit 1.
    Failed,
}

impl RunStatus {
    /// The process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            RunStatus::Complete => 0,
            RunStatus::Failed => 1,
            RunStatus::Config => 2,
            RunStatus::Deferred => 75,
            RunStatus::Interrupted => 130,
        }
    }

    /// A rerun of the same command picks up where this one stopped (deferred or interrupted).
    pub fn is_resumable(self) -> bool {
        matches!(self, RunStatus::Deferred | RunStatus::Interrupted)
    }
}

impl From<RunStatus> for std::process::ExitCode {
    fn from(s: RunStatus) -> Self {
        // Every code is below 256.
        std::process::ExitCode::from(s.exit_code() as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(RunStatus::Complete.exit_code(), 0);
        assert_eq!(RunStatus::Failed.exit_code(), 1);
        assert_eq!(RunStatus::Config.exit_code(), 2);
        assert_eq!(RunStatus::Deferred.exit_code(), 75);
        assert_eq!(RunStatus::Interrupted.exit_code(), 130);
    }
}
