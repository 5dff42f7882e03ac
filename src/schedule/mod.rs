//! Scheduled campaigns (newsletters): cron slots in a time zone, claimed durably exactly once
//! and run by `blast serve` as runs `<campaign>@<slot>` with their own state and the global
//! suppression list.
//!
//! - the `[schedule]` table itself (cron, zone, start/end, catch_up, overlap; next/latest slot
//!   as UTC instants) is part of the campaign file: [`crate::config::schedule`], re-exported here
//! - `clock.rs`     [`Clock`]: the system clock, and a test clock that moves when told
//! - `claims.rs`    the sled store of cursors and run records, the snapshot file, pause flags
//! - `campaigns.rs` the watched campaigns directory (reload on change, keep the last valid)
//! - `launch.rs`    a run's settings and the [`Launch`] trait ([`SendLauncher`] = `blast send`)
//! - `scheduler.rs` the loop: [`run`]
//! - `events.rs`    what it reports: [`Event`]

pub mod campaigns;
pub mod claims;
pub mod clock;
pub mod events;
pub mod launch;
pub mod scheduler;

pub use crate::config::schedule::{run_id, slot_id, CatchUp, Overlap, ScheduleSettings};
pub use clock::{Clock, SystemClock, TestClock};
pub use launch::{run_settings, Launch, RunResult, SendLauncher};
pub use scheduler::{run, Event, SchedulerConfig};
