//! The durable record of which slots were claimed and what their runs did: one sled database
//! at `<state>/schedule/db`, owned by `blast serve` (sled lets one process open it).
//!
//! - `c/<campaign>` → the campaign's cursor: every slot at or before it is decided (claimed,
//!   skipped or missed). A campaign seen for the first time gets the time it was first seen,
//!   so adding a file never runs a slot from the past.
//! - `r/<campaign>/<slot ms, 20 digits>` → [`RunRecord`].
//!
//! A claim writes the cursor and a `running` record in one atomic batch and flushes before the
//! run starts: after a crash the slot is found claimed and its run is resumed, never started
//! again and never forgotten.
//!
//! While serve holds the database, `blast schedule runs` reads `snapshot.json`, which the
//! scheduler rewrites after every change. Pausing needs no database: it is a flag file
//! `<state>/schedule/paused/<campaign>` the scheduler checks on every tick.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{check_version, open_db, store_err};

/// The scheduler's directory inside the serve state dir.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join("schedule")
}

/// The snapshot file the running scheduler keeps current.
pub fn snapshot_path(state_dir: &Path) -> PathBuf {
    dir_in(state_dir).join("snapshot.json")
}

fn pause_path(state_dir: &Path, campaign: &str) -> PathBuf {
    dir_in(state_dir).join("paused").join(campaign)
}

/// Whether a campaign is paused.
pub fn is_paused(state_dir: &Path, campaign: &str) -> bool {
    pause_path(state_dir, campaign).exists()
}

/// Pauses or resumes a campaign (a flag file, so it works whether serve runs or not).
pub fn set_paused(state_dir: &Path, campaign: &str, paused: bool) -> Result<()> {
    let p = pause_path(state_dir, campaign);
    let io = |e| Error::io(format!("pause flag {}", p.display()), e);
    if paused {
        std::fs::create_dir_all(p.parent().expect("has parent")).map_err(io)?;
        std::fs::write(&p, b"paused\n").map_err(io)?;
    } else if p.exists() {
        std::fs::remove_file(&p).map_err(io)?;
    }
    Ok(())
}

/// What became of a claimed (or passed-over) slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Claimed; sending, or to be resumed (after a restart, or when deferred recipients are due).
    Running,
    /// Every recipient reached a final state.
    Done,
    /// Gave up (config error, or the resume attempts ran out); see the note.
    Failed,
    /// Not run: passed while paused, or while the previous run was still going (`overlap = "skip"`).
    Skipped,
    /// Not run: passed while serve was down and not caught up (see the note).
    Missed,
}

impl RunStatus {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Missed => "missed",
        }
    }
}

/// One slot of one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `<campaign>@<slot>`.
    pub id: String,
    /// Campaign id.
    pub campaign: String,
    /// The slot (ms since the epoch, UTC).
    pub slot_ms: i64,
    /// When the slot was claimed or decided (scheduler clock, ms).
    pub claimed_ms: i64,
    /// When the run finished (done or failed).
    pub finished_ms: Option<i64>,
    /// Status.
    pub status: RunStatus,
    /// Recipients per state after the last attempt (`sent`, `bounced`, …).
    pub counts: BTreeMap<String, u64>,
    /// Launches so far (1 + resumes).
    pub attempts: u32,
    /// Why it is not done, or what was skipped.
    pub note: String,
}

impl RunRecord {
    /// The slot as a time.
    pub fn slot(&self) -> DateTime<Utc> {
        ms_to_time(self.slot_ms)
    }
}

/// Milliseconds since the epoch to a UTC time.
pub fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The open claims database.
pub struct Claims {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
}

fn run_key(campaign: &str, slot_ms: i64) -> String {
    format!("r/{campaign}/{slot_ms:020}")
}

impl Claims {
    /// Opens the database, waiting up to `wait` for another process to release it.
    pub fn open(state_dir: &Path, wait: Duration) -> Result<Claims> {
        let path = dir_in(state_dir).join("db");
        let db = open_db(&path, 8 << 20, wait)?.ok_or_else(|| {
            Error::Locked(format!(
                "schedule store {} is held by another blast process (blast serve?)",
                path.display()
            ))
        })?;
        let meta = db.open_tree("meta").map_err(|e| store_err(&path, e))?;
        check_version(&meta, &path, crate::store::SCHEDULE_FORMAT)?;
        let tree = db.open_tree("claims").map_err(|e| store_err(&path, e))?;
        Ok(Claims { db, tree, path })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_err(&self.path, e)
    }

    /// The campaign's cursor (ms): every slot at or before it is decided.
    pub fn cursor(&self, campaign: &str) -> Result<Option<i64>> {
        let v = self
            .tree
            .get(format!("c/{campaign}"))
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(i64::from_be_bytes)))
    }

    /// Sets the cursor (and optionally writes a record) atomically, then flushes.
    pub fn commit(&self, campaign: &str, cursor_ms: i64, rec: Option<&RunRecord>) -> Result<()> {
        let mut b = sled::Batch::default();
        b.insert(format!("c/{campaign}").as_bytes(), &cursor_ms.to_be_bytes());
        if let Some(r) = rec {
            b.insert(
                run_key(campaign, r.slot_ms).as_bytes(),
                serde_json::to_vec(r).map_err(|e| self.err(e))?,
            );
        }
        self.tree.apply_batch(b).map_err(|e| self.err(e))?;
        self.flush()
    }

    /// Rewrites a run record (progress, finish) and flushes.
    pub fn update(&self, r: &RunRecord) -> Result<()> {
        self.tree
            .insert(
                run_key(&r.campaign, r.slot_ms).as_bytes(),
                serde_json::to_vec(r).map_err(|e| self.err(e))?,
            )
            .map_err(|e| self.err(e))?;
        self.flush()
    }

    /// One campaign's runs in slot order (all campaigns with `None`).
    pub fn runs(&self, campaign: Option<&str>) -> Result<Vec<RunRecord>> {
        let prefix = match campaign {
            Some(c) => format!("r/{c}/"),
            None => "r/".to_string(),
        };
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix.as_bytes()) {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            let r: RunRecord = serde_json::from_slice(&v).map_err(|e| self.err(e))?;
            out.push(r);
        }
        Ok(out)
    }

    /// Runs claimed and not finished (to resume), across campaigns.
    pub fn unfinished(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .runs(None)?
            .into_iter()
            .filter(|r| r.status == RunStatus::Running)
            .collect())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }
}

/// What the scheduler writes to `snapshot.json` for commands run while it holds the database.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was written (ms).
    pub written_ms: i64,
    /// The most recent runs of each campaign (at most [`SNAPSHOT_RUNS`] per campaign).
    pub runs: Vec<RunRecord>,
    /// Campaign files that failed to load, with the error (the previous valid version, if any,
    /// keeps running).
    pub invalid: BTreeMap<String, String>,
}

/// Runs per campaign kept in the snapshot.
pub const SNAPSHOT_RUNS: usize = 100;

impl Snapshot {
    /// Writes the snapshot atomically (temp file + rename).
    pub fn write(&self, state_dir: &Path) -> Result<()> {
        let p = snapshot_path(state_dir);
        let tmp = p.with_extension("json.tmp");
        let io = |e| Error::io(format!("writing {}", p.display()), e);
        let v = serde_json::to_vec_pretty(self).map_err(|e| Error::io("snapshot", e.into()))?;
        std::fs::write(&tmp, v).map_err(io)?;
        std::fs::rename(&tmp, &p).map_err(io)
    }

    /// Reads the snapshot, if serve ever wrote one.
    pub fn read(state_dir: &Path) -> Result<Option<Snapshot>> {
        let p = snapshot_path(state_dir);
        match std::fs::read(&p) {
            Ok(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| Error::io(format!("reading {}", p.display()), e.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        }
    }
}
