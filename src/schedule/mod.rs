//! Scheduled campaigns (newsletters): cron slots in a time zone, claimed durably exactly once
//! and run by `blast serve` as runs `<campaign>@<slot>` with their own state and the global
//! suppression list.
//!
//! - `slots.rs`     the `[schedule]` table: cron (croner), zone (chrono-tz), start/end,
//!   catch_up, overlap; next/latest slot as UTC instants
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
pub mod slots;

pub use clock::{Clock, SystemClock, TestClock};
pub use launch::{run_settings, Launch, RunResult, SendLauncher};
pub use scheduler::{run, Event, SchedulerConfig};
pub use slots::{CatchUp, Overlap, ScheduleSettings};
