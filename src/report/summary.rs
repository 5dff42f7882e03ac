//! The end-of-run summary and the status snapshot file (`status.json`) that lets
//! `blast status` answer while a send holds the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::InFlightPolicy;
use crate::import::ImportStats;
use std::sync::atomic::Ordering;

use crate::lane::Stats;
use crate::run_status::RunStatus;
use crate::store::campaign::Counts;
use crate::store::record::State;

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    /// Campaign id.
    pub campaign: String,
    /// Counts per state after the run.
    pub counts: Counts,
    /// Wall time of the whole command.
    pub elapsed: Duration,
    /// What the import phase read and added.
    pub imported: ImportStats,
    /// Wall time of the import phase (lists → store, reconcile).
    pub import_time: Duration,
    /// Messages accepted in this run.
    pub sent_this_run: u64,
    /// Transactions of this run whose reply was lost after the final `.` and which were sent
    /// again (each possibly a duplicate).
    pub ambiguous_resends: u64,
    /// The prune report and its counts per reason.
    pub pruned: (PathBuf, BTreeMap<String, u64>),
    /// Rows previously imported that are no longer in the lists (not sent).
    pub removed: u64,
    /// Recipients found in flight from a crashed run, and what was done with them.
    pub recovered_in_flight: (u64, InFlightPolicy),
    /// Domains with sender/message-level permanent failures.
    pub warnings: BTreeMap<String, (u64, String)>,
    /// Addresses newly added to the suppression list.
    pub suppressed: u64,
    /// Why the lane stopped early, if it did.
    pub fatal: Option<String>,
    /// The destination stayed unavailable longer than `wait_for_retries`: the run ended
    /// early with everyone unsent still pending or deferred (exit 75; a rerun resumes).
    pub stalled: Option<String>,
    /// Recipients a warm-up cap deferred in this run, and the day start (ms) they wait for.
    pub warmup_deferred: Option<(u64, u64)>,
    /// Ctrl-C.
    pub interrupted: bool,
    /// `--shard K/N`: the shard this run sent.
    pub shard: Option<crate::shard::Shard>,
}

impl Summary {
    /// How the run ended (exit codes per DESIGN.md: 0 complete, 75 deferred left, 130 interrupted, 1 lane failure,
    /// 2 when nobody could be sent (every recipient skipped, or no recipient at all: a run
    /// that sends nobody is not a success).
    pub fn status(&self) -> RunStatus {
        if self.interrupted {
            RunStatus::Interrupted
        } else if self.fatal.is_some() {
            RunStatus::Failed
        } else if self.counts.get(State::Deferred)
            + self.counts.get(State::Pending)
            + self.counts.get(State::InFlight)
            > 0
        {
            RunStatus::Deferred
        } else if self.counts.total == 0 && self.imported.other_shard > 0 {
            // A shard that holds none of a small list's addresses has nothing to do.
            RunStatus::Complete
        } else if self.counts.total == self.counts.get(State::Skipped) {
            RunStatus::Config
        } else {
            RunStatus::Complete
        }
    }

    /// The process exit code of [`Summary::status`].
    pub fn exit_code(&self) -> i32 {
        self.status().exit_code()
    }
}

/// Prints the summary table to stderr.
pub fn print(s: &Summary) {
    let secs = s.elapsed.as_secs_f64().max(0.001);
    eprintln!();
    eprintln!("campaign {}: {} recipients", s.campaign, s.counts.total);
    for st in State::ALL {
        let n = s.counts.get(st);
        if n > 0 || matches!(st, State::Sent | State::Deferred | State::Bounced) {
            eprintln!("  {:<10} {n:>10}", st.name());
        }
    }
    eprintln!(
        "  sent this run {} in {:.1}s ({:.0} msg/s)",
        s.sent_this_run,
        secs,
        s.sent_this_run as f64 / secs
    );
    eprintln!(
        "  import: {} rows read, {} new, {} already known, in {:.1}s",
        s.imported.rows,
        s.imported.added,
        s.imported.kept,
        s.import_time.as_secs_f64()
    );
    if s.imported.other_shard > 0 {
        eprintln!(
            "  shard {}: {} rows belong to other shards (not imported, not pruned)",
            s.shard.map_or_else(String::new, |sh| sh.to_string()),
            s.imported.other_shard
        );
    }
    for line in crate::list::prune::summary_lines(&s.pruned.1, &s.pruned.0) {
        eprintln!("{line}");
    }
    if s.removed > 0 {
        eprintln!(
            "  {} recipients are no longer in the lists and were not sent",
            s.removed
        );
    }
    if s.recovered_in_flight.0 > 0 {
        eprintln!(
            "  {} recipients were in flight when the last run stopped: {}",
            s.recovered_in_flight.0,
            match s.recovered_in_flight.1 {
                crate::config::InFlightPolicy::Skip =>
                    "marked unknown, not resent (in_flight = \"skip\")",
                crate::config::InFlightPolicy::Resend => "resent (in_flight = \"resend\")",
            }
        );
    }
    if s.ambiguous_resends > 0 {
        eprintln!(
            "  {} messages resent after their reply was lost past the final dot (each may have \
             arrived twice)",
            s.ambiguous_resends
        );
    }
    if s.suppressed > 0 {
        eprintln!(
            "  {} addresses added to the suppression list (address-level bounces)",
            s.suppressed
        );
    }
    for (domain, (n, last)) in &s.warnings {
        eprintln!("  warning: {domain}: {n} sender/message-level rejections (not suppressed); last: {last}");
    }
    if let Some(f) = &s.fatal {
        eprintln!("  error: {f}");
    }
    if let Some(w) = &s.stalled {
        eprintln!("  stopped early: {w}");
    }
    if let Some((n, until)) = s.warmup_deferred {
        eprintln!(
            "  warm-up: today's cap is reached; {n} recipients deferred to the next sending day ({} UTC): run `blast send` again then",
            utc_time(until)
        );
    }
    match s.status() {
        RunStatus::Config if s.counts.total == 0 => eprintln!(
            "  error: nobody could be sent: every list row was pruned (reasons above, rows in {})",
            s.pruned.0.display()
        ),
        RunStatus::Config => eprintln!(
            "  error: nobody could be sent: all {} recipients are skipped (suppressed, \
             unsubscribed or not renderable; `blast status` and the prune report say why)",
            s.counts.total
        ),
        RunStatus::Deferred => eprintln!(
            "  recipients remain pending or deferred: run `blast send` again later to resume"
        ),
        RunStatus::Interrupted => {
            eprintln!("  interrupted: state saved; run `blast send` again to resume")
        }
        _ => {}
    }
}

/// A time (ms since the epoch) as `2026-12-02 04:12:40`, UTC; empty when out of range.
pub fn utc_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The `--json` form of counts (the keys `blast status --json` promises).
pub fn counts_json(campaign: &str, c: &Counts, running: bool) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("campaign".into(), campaign.into());
    m.insert("total".into(), c.total.into());
    for st in State::ALL {
        m.insert(st.name().into(), c.get(st).into());
    }
    m.insert("running".into(), running.into());
    serde_json::Value::Object(m)
}

/// Writes the final counts as the snapshot (best effort: a status file is a convenience),
/// with `ambiguous_resends`, the campaign's lost-reply resends over all its runs.
pub fn write_snapshot(path: &Path, campaign: &str, c: &Counts, running: bool, ambiguous: u64) {
    let mut v = counts_json(campaign, c, running);
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("ambiguous_resends".into(), ambiguous.into());
    }
    let _ = write_atomic(path, v.to_string().as_bytes());
}

/// The `ambiguous_resends` of the snapshot at `path` (0 when there is none).
pub fn snapshot_ambiguous(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("ambiguous_resends")
                .and_then(serde_json::Value::as_u64)
        })
        .unwrap_or(0)
}

/// Writes the snapshot while a send runs: the store's counts (the keys of
/// [`counts_json`], `running: true`), when it could count them, and this run's counters.
pub fn write_live_snapshot(path: &Path, campaign: &str, s: &Stats, counts: Option<&Counts>) {
    let mut v = match counts {
        Some(c) => counts_json(campaign, c, true),
        None => serde_json::json!({"campaign": campaign, "running": true}),
    };
    if let serde_json::Value::Object(m) = &mut v {
        for (k, n) in [
            ("pid", u64::from(std::process::id())),
            ("at_ms", crate::store::now_ms()),
            ("eligible_at_start", s.eligible.load(Ordering::Relaxed)),
            ("sent_this_run", s.sent.load(Ordering::Relaxed)),
            ("deferred_this_run", s.deferred.load(Ordering::Relaxed)),
            ("bounced_this_run", s.bounced.load(Ordering::Relaxed)),
            ("failed_this_run", s.failed.load(Ordering::Relaxed)),
            (
                "ambiguous_resends_this_run",
                s.ambiguous_resends.load(Ordering::Relaxed),
            ),
        ] {
            m.insert(k.into(), n.into());
        }
    }
    let _ = write_atomic(path, v.to_string().as_bytes());
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}
