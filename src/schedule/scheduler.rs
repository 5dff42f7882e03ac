//! The scheduler loop `blast serve` runs: rescan the campaigns directory, decide each
//! campaign's due slots (claim durably, then launch; or record them skipped/missed), resume
//! unfinished runs, sleep until the next slot or poll on the injected [`Clock`].
//!
//! Decisions per campaign, with its cursor (every slot at or before it is decided):
//! - slots in (cursor, now]: only the latest can run — never a burst; earlier ones are
//!   recorded as one `missed` entry that counts them;
//! - paused: the latest is recorded `skipped`, once per pause: later slots of the same pause
//!   update that record's note (how many, up to when) instead of adding one per slot;
//! - a run of the campaign still going (or waiting to resume): `overlap = "skip"` records the
//!   slot `skipped` with a warning; `"wait"` leaves it due and runs it when the run ends;
//! - noticed within `on_time` of its time: claimed and run; later than that it was missed
//!   while serve was down: run if `catch_up = "latest"` and younger than `catch_up_max_age`,
//!   else recorded `missed`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::campaigns::{CampaignDir, Change};
use super::claims::{self, Claims, RunRecord, RunStatus, Snapshot, SNAPSHOT_RUNS};
use super::clock::Clock;
pub use super::events::{locked_hint, Event};
use super::launch::{run_settings, Launch, RunResult};
use crate::config::schedule::{run_id, CatchUp, Overlap, ScheduleSettings};
use crate::config::Settings;
use crate::error::Result;
use crate::shutdown::Shutdown;

/// Where the scheduler works and how eagerly.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Campaign files (`*.toml` with a `[schedule]` table), rescanned every `poll`.
    pub campaigns_dir: PathBuf,
    /// Serve state dir: `schedule/` (claims, snapshot, pause flags), `runs/`, `suppression/`.
    pub state_dir: PathBuf,
    /// Rescan (and re-read the clock) at least this often. Default 5 s.
    pub poll: Duration,
    /// A slot noticed later than this after its time was missed (serve was down). Default 60 s.
    pub on_time: Duration,
    /// An unfinished run (deferred recipients left, relay down) is relaunched after this.
    /// Default 5 min.
    pub resume_after: Duration,
    /// Launches of one run before it is recorded `failed`. Default 10.
    pub max_attempts: u32,
    /// Every decision is also sent here (tests; a status endpoint).
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// serve's token keys (`[serve] secret_file`): every run issues its tokens with them.
    pub tokens: Option<std::sync::Arc<crate::token::TokenSettings>>,
    /// serve's `[bounces]` policy, for every run.
    pub bounce_policy: crate::bounce::policy::BouncePolicy,
    /// serve's `[cluster]`: every run shares the fleet's rates, caps and suppressions.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

impl SchedulerConfig {
    /// Defaults for a campaigns dir and a serve state dir.
    pub fn new(campaigns_dir: PathBuf, state_dir: PathBuf) -> SchedulerConfig {
        SchedulerConfig {
            campaigns_dir,
            state_dir,
            poll: Duration::from_secs(5),
            on_time: Duration::from_secs(60),
            resume_after: Duration::from_secs(300),
            max_attempts: 10,
            events: None,
            tokens: None,
            bounce_policy: Default::default(),
            cluster: None,
        }
    }
}

type Done = (RunRecord, Result<RunResult>);

struct Scheduler {
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    launcher: Arc<dyn Launch>,
    shutdown: Arc<Shutdown>,
    claims: Claims,
    dir: CampaignDir,
    /// Launched runs by campaign.
    active: HashMap<String, RunRecord>,
    /// Unfinished runs to launch again at a time, by campaign.
    resume: HashMap<String, (RunRecord, DateTime<Utc>)>,
    /// `overlap = "wait"`: a slot came while the campaign's run was going.
    waited: HashSet<String>,
    /// The `skipped` record of each campaign's current pause and the slots it covers. In
    /// memory only: after a restart a pause that goes on gets one new record.
    pauses: HashMap<String, (RunRecord, u64)>,
    done_tx: mpsc::UnboundedSender<Done>,
    dirty: bool,
}

/// Runs the scheduler until `shutdown`; then waits for launched runs to stop (their state
/// is saved; they resume on the next start). Fails at once if another process holds the
/// schedule store.
pub async fn run(
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    launcher: Arc<dyn Launch>,
    shutdown: Arc<Shutdown>,
) -> Result<()> {
    let claims = Claims::open(&cfg.state_dir, Duration::from_secs(1))?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut s = Scheduler {
        dir: CampaignDir::new(&cfg.campaigns_dir),
        cfg,
        clock,
        launcher,
        shutdown,
        claims,
        active: HashMap::new(),
        resume: HashMap::new(),
        waited: HashSet::new(),
        pauses: HashMap::new(),
        done_tx,
        dirty: true,
    };
    let start = s.clock.now();
    for rec in s.claims.unfinished()? {
        s.resume.insert(rec.campaign.clone(), (rec, start));
    }
    while !s.shutdown.stopping() {
        let now = s.clock.now();
        s.step(now)?;
        let poll = chrono::Duration::from_std(s.cfg.poll).unwrap_or(chrono::Duration::seconds(5));
        let wake = s.next_wake(now).unwrap_or(now + poll).min(now + poll);
        tokio::select! {
            _ = s.clock.sleep_until(wake, now) => {}
            _ = s.shutdown.wait() => {}
            Some((rec, res)) = done_rx.recv() => s.finish(rec, res)?,
        }
    }
    // Launched runs share the shutdown: they finish their open transactions and return.
    while !s.active.is_empty() {
        match done_rx.recv().await {
            Some((rec, res)) => s.finish(rec, res)?,
            None => break,
        }
    }
    s.snapshot();
    Ok(())
}

/// Slots in (after, before), counted up to a bound (only for notes), with the last one.
fn between(
    sch: &ScheduleSettings,
    after: DateTime<Utc>,
    before: DateTime<Utc>,
) -> (u64, Option<DateTime<Utc>>) {
    let (mut n, mut last, mut t) = (0, None, after);
    while n < 100_000 {
        match sch.next_after(t) {
            Some(x) if x < before => {
                n += 1;
                last = Some(x);
                t = x;
            }
            _ => break,
        }
    }
    (n, last)
}

impl Scheduler {
    fn emit(&self, e: Event) {
        if !matches!(e, Event::Tick(_)) {
            eprintln!("blast serve: schedule: {e}");
        }
        if let Some(tx) = &self.cfg.events {
            let _ = tx.send(e);
        }
    }

    fn cursor(&self, campaign: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.claims.cursor(campaign)?.map(claims::ms_to_time))
    }

    fn step(&mut self, now: DateTime<Utc>) -> Result<()> {
        let before = self.dir.campaigns();
        for change in self.dir.rescan() {
            if let Change::Changed(id) = &change {
                let old = before.get(id).and_then(|s| s.schedule.as_ref());
                let new = self
                    .dir
                    .campaigns()
                    .get(id)
                    .and_then(|s| s.schedule.clone());
                let moved = match (old, &new) {
                    (Some(o), Some(n)) => o.expr != n.expr || o.tz != n.tz || o.start != n.start,
                    _ => true,
                };
                // A new schedule applies from now on: slots it would have placed in the past
                // were never due.
                if moved && self.cursor(id)?.is_some_and(|c| c < now) {
                    self.claims.commit(id, now.timestamp_millis(), None)?;
                }
            }
            self.dirty = true;
            self.emit(Event::Campaign(change));
        }
        for (id, settings) in self.dir.campaigns() {
            self.tick(&id, &settings, now)?;
        }
        let due: Vec<String> = self
            .resume
            .iter()
            .filter(|(c, (_, at))| *at <= now && !self.active.contains_key(*c))
            .map(|(c, _)| c.clone())
            .collect();
        for c in due {
            // A run whose campaign file is gone waits until the file is back.
            if self.dir.fresh(&c).is_some() {
                let (mut rec, _) = self.resume.remove(&c).expect("listed above");
                rec.attempts += 1;
                self.claims.update(&rec)?;
                self.emit(Event::Resumed(rec.id.clone(), rec.attempts));
                self.launch(rec);
            }
        }
        if self.dirty {
            self.snapshot();
        }
        self.emit(Event::Tick(now));
        Ok(())
    }

    fn tick(&mut self, id: &str, base: &Settings, now: DateTime<Utc>) -> Result<()> {
        let Some(sch) = &base.schedule else {
            return Ok(());
        };
        // Checked on every pass, so a resume ends the pause even when no slot is due.
        let paused = claims::is_paused(&self.cfg.state_dir, id);
        if !paused {
            self.pauses.remove(id);
        }
        let cursor = match self.cursor(id)? {
            Some(c) => c,
            None => {
                // First seen: only slots from now on are due.
                self.claims.commit(id, now.timestamp_millis(), None)?;
                now
            }
        };
        let Some(next) = sch.next_after(cursor) else {
            return Ok(());
        };
        if next > now {
            return Ok(());
        }
        let latest = sch
            .latest_at_or_before(now)
            .filter(|l| *l >= next)
            .unwrap_or(next);
        let busy = self
            .active
            .get(id)
            .or(self.resume.get(id).map(|(r, _)| r))
            .map(|r| r.id.clone());
        let (earlier, last_earlier) = between(sch, cursor, latest);
        if paused {
            return self.paused(id, latest, earlier + 1, now);
        }
        if let Some(running) = busy {
            return match sch.overlap {
                Overlap::Skip => {
                    let note = format!(
                        "previous run {running} still going (overlap = \"skip\"){}",
                        count_note(earlier)
                    );
                    self.pass(id, latest, RunStatus::Skipped, note, now)
                }
                Overlap::Wait => {
                    self.waited.insert(id.to_string());
                    Ok(())
                }
            };
        }
        let waited = self.waited.remove(id);
        if let Some(last) = last_earlier {
            let note = format!(
                "{earlier} slot(s) from {} to {last} passed over; only the latest, {latest}, is considered",
                next
            );
            self.pass(id, last, RunStatus::Missed, note, now)?;
        }
        let age = now - latest;
        let on_time = waited || age.to_std().unwrap_or_default() <= self.cfg.on_time;
        if on_time {
            return self.claim(id, latest, String::new(), now);
        }
        let young = age.to_std().unwrap_or_default() <= sch.catch_up_max_age;
        match sch.catch_up {
            CatchUp::Latest if young => {
                let note = format!(
                    "caught up {}s late (serve was not running at its time)",
                    age.num_seconds()
                );
                self.claim(id, latest, note, now)
            }
            CatchUp::Latest => {
                let note = format!(
                    "serve was not running at its time; {}s old is past catch_up_max_age",
                    age.num_seconds()
                );
                self.pass(id, latest, RunStatus::Missed, note, now)
            }
            CatchUp::None => {
                let note = "serve was not running at its time (catch_up = \"none\")".to_string();
                self.pass(id, latest, RunStatus::Missed, note, now)
            }
        }
    }

    fn record(
        id: &str,
        slot: DateTime<Utc>,
        status: RunStatus,
        note: String,
        now: DateTime<Utc>,
    ) -> RunRecord {
        RunRecord {
            id: run_id(id, slot),
            campaign: id.to_string(),
            slot_ms: slot.timestamp_millis(),
            claimed_ms: now.timestamp_millis(),
            finished_ms: (status != RunStatus::Running).then_some(now.timestamp_millis()),
            status,
            counts: Default::default(),
            attempts: u32::from(status == RunStatus::Running),
            note,
        }
    }

    fn pass(
        &mut self,
        id: &str,
        slot: DateTime<Utc>,
        status: RunStatus,
        note: String,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let rec = Self::record(id, slot, status, note, now);
        self.claims.commit(id, rec.slot_ms, Some(&rec))?;
        self.dirty = true;
        self.emit(Event::Passed(rec));
        Ok(())
    }

    /// Records `slots` more slots (the latest at `slot`) passed over while `id` is paused: the
    /// first time as a `skipped` run, then by updating that run's note, so a 20-second cron
    /// paused for a day is one entry, not 4,320.
    fn paused(
        &mut self,
        id: &str,
        slot: DateTime<Utc>,
        slots: u64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some((rec, count)) = self.pauses.get_mut(id) else {
            let note = format!("campaign paused{}", count_note(slots - 1));
            let rec = Self::record(id, slot, RunStatus::Skipped, note, now);
            self.pauses.insert(id.to_string(), (rec.clone(), slots));
            self.claims.commit(id, rec.slot_ms, Some(&rec))?;
            self.dirty = true;
            self.emit(Event::Passed(rec));
            return Ok(());
        };
        *count += slots;
        rec.note = format!(
            "campaign paused; {count} slot(s) skipped, the last at {}",
            slot.format("%Y-%m-%d %H:%M:%S UTC")
        );
        rec.finished_ms = Some(now.timestamp_millis());
        // The cursor moves on; the record stays the one of the pause's first slot.
        self.claims
            .commit(id, slot.timestamp_millis(), Some(&*rec))?;
        self.dirty = true;
        Ok(())
    }

    /// The claim is durable (flushed) before the run starts.
    fn claim(
        &mut self,
        id: &str,
        slot: DateTime<Utc>,
        note: String,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let rec = Self::record(id, slot, RunStatus::Running, note, now);
        self.claims.commit(id, rec.slot_ms, Some(&rec))?;
        self.dirty = true;
        self.emit(Event::Claimed(rec.id.clone()));
        self.launch(rec);
        Ok(())
    }

    fn launch(&mut self, rec: RunRecord) {
        let Some(base) = self.dir.fresh(&rec.campaign) else {
            return; // Callers check the campaign is loaded.
        };
        let mut run = run_settings(
            &base,
            &self.cfg.state_dir,
            rec.slot(),
            self.cfg.tokens.as_ref(),
        );
        run.bounce_policy = self.cfg.bounce_policy.clone();
        run.cluster = self.cfg.cluster.clone();
        let fut = self.launcher.launch(run, self.shutdown.clone());
        let tx = self.done_tx.clone();
        let r = rec.clone();
        tokio::spawn(async move {
            let res = fut.await;
            let _ = tx.send((r, res));
        });
        self.active.insert(rec.campaign.clone(), rec);
    }

    fn finish(&mut self, mut rec: RunRecord, res: Result<RunResult>) -> Result<()> {
        self.active.remove(&rec.campaign);
        let now = self.clock.now();
        let retry = |rec: &mut RunRecord, why: String, attempts_left: bool| {
            if attempts_left {
                rec.status = RunStatus::Running;
                rec.note = format!("{why}; resumes later");
            } else {
                rec.status = RunStatus::Failed;
                rec.note = format!("{why}; gave up after {} attempts", rec.attempts);
                rec.finished_ms = Some(now.timestamp_millis());
            }
        };
        let left = rec.attempts < self.cfg.max_attempts;
        match res {
            Ok(r) => {
                rec.counts = r.counts;
                if r.complete {
                    rec.status = RunStatus::Done;
                    rec.finished_ms = Some(now.timestamp_millis());
                } else if r.interrupted {
                    rec.note = "interrupted; resumes when serve starts again".into();
                } else {
                    let why = r
                        .problem
                        .unwrap_or_else(|| "deferred recipients left".into());
                    retry(&mut rec, why, left);
                }
            }
            Err(e) if e.is_config() => retry(&mut rec, e.to_string(), false),
            Err(e) => retry(&mut rec, e.to_string(), left),
        }
        self.claims.update(&rec)?;
        self.dirty = true;
        if rec.status == RunStatus::Running && !self.shutdown.stopping() {
            let at = now + chrono::Duration::from_std(self.cfg.resume_after).unwrap_or_default();
            self.resume.insert(rec.campaign.clone(), (rec.clone(), at));
        }
        self.emit(Event::Finished(rec));
        Ok(())
    }

    fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let slots = self.dir.campaigns().into_iter().filter_map(|(id, s)| {
            let sch = s.schedule.as_ref()?;
            let cursor = self.cursor(&id).ok().flatten().unwrap_or(now);
            sch.next_after(cursor).filter(|t| *t > now)
        });
        let resumes = self.resume.values().map(|(_, at)| *at).filter(|t| *t > now);
        slots.chain(resumes).min()
    }

    /// Best effort: a failed snapshot only makes `blast schedule runs` stale while serve runs.
    fn snapshot(&mut self) {
        let mut runs: Vec<RunRecord> = Vec::new();
        if let Ok(all) = self.claims.runs(None) {
            let mut per: HashMap<String, Vec<RunRecord>> = HashMap::new();
            for r in all {
                per.entry(r.campaign.clone()).or_default().push(r);
            }
            for (_, v) in per {
                let skip = v.len().saturating_sub(SNAPSHOT_RUNS);
                runs.extend(v.into_iter().skip(skip));
            }
        }
        runs.sort_by(|a, b| (&a.campaign, a.slot_ms).cmp(&(&b.campaign, b.slot_ms)));
        let snap = Snapshot {
            written_ms: self.clock.now().timestamp_millis(),
            runs,
            invalid: self.dir.errors(),
        };
        match snap.write(&self.cfg.state_dir) {
            Ok(()) => self.dirty = false,
            Err(e) => eprintln!("blast serve: schedule: {e}"),
        }
    }
}

fn count_note(earlier: u64) -> String {
    if earlier == 0 {
        String::new()
    } else {
        format!("; {earlier} earlier slot(s) passed over with it")
    }
}
