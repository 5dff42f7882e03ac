//! Scheduled campaigns (issue 6, "Must show"): `blast::schedule::run` over a campaigns dir in
//! a temp dir, a real SMTP sink on 127.0.0.1:0, real sled stores, and a test clock the tests
//! move (no test sleeps through a slot).
//!
//! - `mod.rs`      the harness: a scheduler on a test clock, its events, its runs
//! - `clocked.rs`  DST spring-forward / fall-back, restart mid-run, catch-up, reload, invalid
//!   file, pause, overlap
//! - `realtime.rs` a 6-field cron every 2 s on the system clock: N slots → N runs
//! - `state.rs`    a claim left by a crash, global suppression, config errors, the commands

mod clocked;
mod realtime;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blast::error::Result;
use blast::schedule::claims::{Claims, RunRecord, RunStatus};
use blast::schedule::{Clock, Event, SchedulerConfig, SendLauncher};
use blast::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::pipeline::{campaign_toml, csv_list, Fixture};

/// Real-time bound on waiting for one scheduler event.
pub const EVENT_LIMIT: Duration = Duration::from_secs(60);

/// A scheduled campaign file `<id>.toml` in the fixture (the campaigns dir), sending to
/// `relay`, with its own list `<id>.csv` of `addrs` and `schedule` as the `[schedule]` body.
pub fn scheduled(
    f: &Fixture,
    id: &str,
    relay: std::net::SocketAddr,
    addrs: &[String],
    lane_extra: &str,
    schedule: &str,
) -> PathBuf {
    f.write(&format!("{id}.csv"), csv_list(addrs));
    let toml = campaign_toml(id, relay, &[&format!("{id}.csv")], lane_extra);
    f.write(
        &format!("{id}.toml"),
        format!("{toml}\n[schedule]\n{schedule}\n"),
    )
}

pub fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("RFC 3339 time")
}

/// A running scheduler and what it reported.
pub struct Serve {
    pub shutdown: Arc<Shutdown>,
    task: JoinHandle<Result<()>>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Every event received so far.
    pub seen: Vec<Event>,
}

impl Serve {
    /// Starts `blast::schedule::run` on `clock` with the real launcher (`blast send`).
    pub fn start(campaigns: &Path, state: &Path, clock: Arc<dyn Clock>, poll: Duration) -> Serve {
        Serve::start_with(campaigns, state, clock, poll, None)
    }

    /// [`Serve::start`] with serve's token keys (`[serve] secret_file`).
    pub fn start_with(
        campaigns: &Path,
        state: &Path,
        clock: Arc<dyn Clock>,
        poll: Duration,
        tokens: Option<Arc<blast::token::TokenSettings>>,
    ) -> Serve {
        let (tx, events) = mpsc::unbounded_channel();
        let mut cfg = SchedulerConfig::new(campaigns.to_path_buf(), state.to_path_buf());
        cfg.poll = poll;
        cfg.tokens = tokens;
        cfg.events = Some(tx);
        let shutdown = Arc::new(Shutdown::default());
        let task = tokio::spawn(blast::schedule::run(
            cfg,
            clock,
            Arc::new(SendLauncher),
            shutdown.clone(),
        ));
        Serve {
            shutdown,
            task,
            events,
            seen: Vec::new(),
        }
    }

    /// The first event matching `pred`, already seen or waited for (bounded).
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let deadline = tokio::time::Instant::now() + EVENT_LIMIT;
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no {what} within {EVENT_LIMIT:?}; saw {:#?}", self.seen)
                })
                .unwrap_or_else(|| panic!("scheduler ended before {what}; saw {:#?}", self.seen));
            self.seen.push(e.clone());
            if pred(&e) {
                return e;
            }
        }
    }

    /// Waits until the scheduler has made a pass at clock time `t` or later.
    pub async fn pass_at(&mut self, t: DateTime<Utc>) {
        self.until(
            &format!("a pass at {t}"),
            |e| matches!(e, Event::Tick(n) if *n >= t),
        )
        .await;
    }

    /// Waits for the run `id` to end a launch with `status`.
    pub async fn finished(&mut self, id: &str, status: RunStatus) -> RunRecord {
        match self
            .until(
                &format!("run {id} {}", status.name()),
                |e| matches!(e, Event::Finished(r) if r.id == id && r.status == status),
            )
            .await
        {
            Event::Finished(r) => r,
            _ => unreachable!(),
        }
    }

    /// Stops the scheduler (launched runs stop after their open transactions) and waits.
    pub async fn stop(mut self) -> Vec<Event> {
        self.shutdown.stop();
        let r = tokio::time::timeout(EVENT_LIMIT, &mut self.task)
            .await
            .expect("scheduler stops in time")
            .expect("scheduler task");
        r.expect("scheduler ends without error");
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        self.seen
    }
}

/// The stored runs of a campaign (open the store when no scheduler holds it).
pub fn runs(state: &Path, campaign: &str) -> Vec<RunRecord> {
    Claims::open(state, Duration::from_secs(10))
        .expect("open claims")
        .runs(Some(campaign))
        .expect("read runs")
}
