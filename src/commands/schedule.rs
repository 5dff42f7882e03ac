//! `blast schedule list|runs|pause|resume`: what `blast serve` will run and has run.
//!
//! `list` reads the campaign files (no store). `runs` opens the schedule store, or, while
//! `blast serve` holds it, reads the snapshot serve keeps current. `pause`/`resume` write a
//! flag file serve checks on every pass, so they work whether serve runs or not.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cli::ScheduleAction;
use crate::config;
use crate::error::{Error, Result};
use crate::schedule::campaigns::{CampaignDir, Change};
use crate::schedule::claims::{self, Claims, RunRecord, Snapshot};
use crate::schedule::scheduler::locked_hint;

/// Slots shown per campaign by `list`.
const LIST_SLOTS: usize = 5;

/// The serve config to take directories from: `--config`, else `./blast.toml` if present.
pub(crate) fn serve_settings(
    config: Option<&Path>,
) -> Result<Option<crate::serve::config::ServeSettings>> {
    match config {
        Some(p) => crate::serve::config::load(p).map(Some),
        None if Path::new("blast.toml").exists() => {
            crate::serve::config::load(Path::new("blast.toml")).map(Some)
        }
        None => Ok(None),
    }
}

/// A directory from its flag, else from the serve config, else a clear error.
fn dir_or(
    flag: Option<PathBuf>,
    from_config: impl FnOnce() -> Result<Option<PathBuf>>,
    what: &str,
) -> Result<PathBuf> {
    match flag {
        Some(d) => Ok(d),
        None => from_config()?.ok_or_else(|| {
            Error::Config(format!(
                "no {what}: give --config blast.toml (its [serve] table) or --{}",
                what.replace('_', "-")
            ))
        }),
    }
}

/// Runs `blast schedule ACTION`; returns the exit code. Directories come from the flags or
/// from the serve config (`config`, or `./blast.toml`).
pub fn run(config: Option<&Path>, action: ScheduleAction) -> Result<i32> {
    let state = |flag: Option<PathBuf>| {
        dir_or(
            flag,
            || Ok(serve_settings(config)?.map(|s| s.state_dir)),
            "state_dir",
        )
    };
    match action {
        ScheduleAction::List {
            campaigns_dir,
            state_dir,
        } => {
            let campaigns_dir = dir_or(
                campaigns_dir,
                || Ok(serve_settings(config)?.and_then(|s| s.campaigns_dir)),
                "campaigns_dir",
            )?;
            let state_dir = match state_dir {
                Some(d) => Some(d),
                None => serve_settings(config)?.map(|s| s.state_dir),
            };
            print!(
                "{}",
                list(&campaigns_dir, state_dir.as_deref(), Utc::now())?
            );
            Ok(0)
        }
        ScheduleAction::Runs {
            campaign,
            state_dir,
            json,
        } => {
            let state_dir = state(state_dir)?;
            let (runs, from_snapshot) = runs(&state_dir, &campaign)?;
            if json {
                let v =
                    serde_json::to_string_pretty(&runs).map_err(|e| Error::io("json", e.into()))?;
                println!("{v}");
            } else {
                if let Some(at) = from_snapshot {
                    eprintln!("(blast serve is running: its snapshot of {at})");
                }
                print!("{}", runs_table(&runs));
            }
            Ok(0)
        }
        ScheduleAction::Pause {
            campaign,
            state_dir,
        } => {
            let state_dir = state(state_dir)?;
            claims::set_paused(&state_dir, &campaign, true)?;
            eprintln!("{campaign}: paused (its slots are recorded as skipped; a run in progress continues)");
            Ok(0)
        }
        ScheduleAction::Resume {
            campaign,
            state_dir,
        } => {
            let state_dir = state(state_dir)?;
            claims::set_paused(&state_dir, &campaign, false)?;
            eprintln!("{campaign}: resumed (from its next slot)");
            Ok(0)
        }
    }
}

/// The next 5 slots of every scheduled campaign in `dir` after `now`, in the
/// campaign's zone and in UTC. Files that do not validate are listed with their error.
pub fn list(dir: &Path, state_dir: Option<&Path>, now: DateTime<Utc>) -> Result<String> {
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{}: campaigns dir not found",
            dir.display()
        )));
    }
    let mut cd = CampaignDir::once(dir);
    let mut out = String::new();
    for change in cd.rescan() {
        if let Change::Invalid(p, e) = change {
            let _ = writeln!(out, "{}: invalid, not scheduled: {e}", p.display());
        }
    }
    let mut scheduled = 0;
    for (id, s) in cd.campaigns() {
        let Some(sch) = &s.schedule else { continue };
        scheduled += 1;
        let paused = state_dir.is_some_and(|d| claims::is_paused(d, &id));
        let _ = writeln!(
            out,
            "{id}  \"{}\"  {}{}  ({})",
            sch.expr,
            sch.tz.name(),
            if paused { "  PAUSED" } else { "" },
            s.file.display()
        );
        let slots = sch.next_slots(now, LIST_SLOTS);
        if slots.is_empty() {
            let _ = writeln!(out, "  no more slots");
        }
        for t in slots {
            let _ = writeln!(
                out,
                "  {}   {}",
                t.with_timezone(&sch.tz).format("%a %Y-%m-%d %H:%M:%S %Z"),
                t.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
    }
    // An empty answer looked like a hang or a wrong directory: say what was found.
    if scheduled == 0 {
        let _ = writeln!(
            out,
            "no scheduled campaigns in {} (a campaign file is scheduled by its [schedule] table)",
            dir.display()
        );
    }
    Ok(out)
}

/// A campaign's past runs: from the store, or from serve's snapshot while serve holds the
/// store (then with the snapshot's time).
pub fn runs(state_dir: &Path, campaign: &str) -> Result<(Vec<RunRecord>, Option<DateTime<Utc>>)> {
    if !claims::dir_in(state_dir).join("db").exists() {
        return Ok((Vec::new(), None));
    }
    match Claims::open(state_dir, Duration::from_millis(500)) {
        Ok(c) => Ok((c.runs(Some(campaign))?, None)),
        Err(e @ Error::Locked(_)) => match Snapshot::read(state_dir)? {
            Some(s) => Ok((
                s.runs
                    .into_iter()
                    .filter(|r| r.campaign == campaign)
                    .collect(),
                Some(claims::ms_to_time(s.written_ms)),
            )),
            None => Err(locked_hint(e)),
        },
        Err(e) => Err(e),
    }
}

/// The `runs` table.
pub fn runs_table(runs: &[RunRecord]) -> String {
    let mut out = String::from(
        "slot (UTC)            status    sent  bounced  failed  deferred  skipped  other  note\n",
    );
    for r in runs {
        let c = |k: &str| r.counts.get(k).copied().unwrap_or(0);
        let known = ["sent", "bounced", "failed", "deferred", "skipped"];
        let other: u64 = r
            .counts
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum();
        let _ = writeln!(
            out,
            "{}  {:<8} {:>5} {:>8} {:>7} {:>9} {:>8} {:>6}  {}",
            r.slot().format("%Y-%m-%d %H:%M:%S"),
            r.status.name(),
            c("sent"),
            c("bounced"),
            c("failed"),
            c("deferred"),
            c("skipped"),
            other,
            r.note
        );
    }
    out
}

/// `blast send` of a scheduled campaign needs `--now`: the refusal, naming the schedule.
pub fn refuse_send(s: &config::Settings) -> Result<()> {
    match &s.schedule {
        Some(sch) => Err(Error::Config(format!(
            "{}: campaign {} is scheduled (\"{}\" in {}); blast serve runs it. To send one run now, add --now",
            s.file.display(),
            s.id,
            sch.expr,
            sch.tz.name()
        ))),
        None => Ok(()),
    }
}

/// Parses the slot part of a run id (`20260105T080000Z`).
pub fn parse_slot_id(s: &str) -> Result<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y%m%dT%H%M%SZ")
        .map(|n| n.and_utc())
        .map_err(|_| {
            Error::Config(format!(
                "--run: expected the slot of a run id, like 20260105T080000Z, got {s:?}"
            ))
        })
}
