//! The commands other than `send` (which lives in [`crate::send`]): what `main` calls
//! after parsing, each returning the process exit code.
//!
//! - [`check`]     `blast check`: every row validated ([`check::check`]), then the lane comparison below
//! - [`lanes`]     what a campaign's lane shares with serve's priority lane (warnings)
//! - [`status`]    `blast status`: counts, per-domain table, last errors, sender-level warnings
//! - [`shards`]    `blast status` of a sharded campaign: per shard rows and their sum
//! - [`rates`]     bounce, unsubscribe and complaint rates and their warning lines
//! - [`report`]    `blast report`: the campaign's report as HTML, CSV or JSON
//! - [`suppress`]  `blast suppress add|remove|list|import|export` (CSV in and out)
//! - [`schedule`]  `blast schedule list|runs|pause|resume`: scheduled campaigns and their runs
//! - [`preview`]   `blast preview`: the first sendable message as it will go out
//! - [`queue`]     `blast queue list|retry|drop|stats`: the priority queue of `blast serve`
//! - [`dkim`]      `blast dkim keygen`: a DKIM key (0600) and the TXT record to publish
//! - [`bounces`]   `blast bounces parse|import|list|show`: bounce results, imports, the stored messages
//! - [`user`]      `blast user add`: submission users (argon2 hashes) in the users file

pub mod bounces;
pub mod check;
pub mod dkim;
pub mod holds;
pub mod lanes;
pub mod preview;
pub mod queue;
pub mod rates;
pub mod report;
pub mod schedule;
pub mod shards;
pub mod status;
pub mod suppress;
pub mod user;
