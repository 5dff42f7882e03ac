//! What the scheduler reports: [`Event`]s (stderr lines for `blast serve`, a channel for
//! tests), and the hint `blast schedule` gives when serve holds the store.

use std::fmt;

use chrono::{DateTime, Utc};

use super::campaigns::Change;
use super::claims::RunRecord;
use crate::error::Error;

/// What the scheduler did (logged to stderr and sent to [`super::SchedulerConfig::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A campaign file was loaded, changed or removed.
    Campaign(Change),
    /// A slot was claimed; its run starts.
    Claimed(String),
    /// An unfinished run was launched again (attempt n).
    Resumed(String, u32),
    /// A launch ended; the record's status says whether the run is done.
    Finished(RunRecord),
    /// A slot was recorded `skipped` or `missed`.
    Passed(RunRecord),
    /// A pass over all campaigns at this clock time is complete.
    Tick(DateTime<Utc>),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Campaign(Change::Added(c)) => write!(f, "campaign {c} scheduled"),
            Event::Campaign(Change::Changed(c)) => write!(f, "campaign {c} reloaded"),
            Event::Campaign(Change::Removed(c)) => write!(f, "campaign {c} removed"),
            Event::Campaign(Change::Invalid(p, e)) => {
                write!(
                    f,
                    "ignoring {} (previous valid version, if any, keeps running): {e}",
                    p.display()
                )
            }
            Event::Claimed(r) => write!(f, "run {r} claimed, starting"),
            Event::Resumed(r, n) => write!(f, "run {r} resumed (attempt {n})"),
            Event::Finished(r) | Event::Passed(r) => {
                write!(f, "run {} {}", r.id, r.status.name())?;
                if !r.note.is_empty() {
                    write!(f, ": {}", r.note)?;
                }
                Ok(())
            }
            Event::Tick(t) => write!(f, "tick {t}"),
        }
    }
}

/// The error `blast schedule` gives when serve holds the store and no snapshot exists.
pub fn locked_hint(e: Error) -> Error {
    match e {
        Error::Locked(m) => Error::Locked(format!(
            "{m}; blast serve is running: stop it, or wait for its snapshot ({})",
            "schedule/snapshot.json"
        )),
        other => other,
    }
}
