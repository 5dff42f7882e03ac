//! The blast lane: a dispatcher that picks eligible recipients under global and per-domain
//! rate limits ([`throttle`], [`dispatch`]), connection workers that render and pipeline
//! messages ([`worker`]), and one writer that records results with group commit ([`writer`]).
//!
//! Direct delivery (`transport = "mx"`) has its own workers ([`worker_mx`]: sessions per MX
//! host); the dispatcher looks each domain's MX up before dispatching it.
//!
//! Data flows one way: store → dispatcher → (bounded channel) → workers → (bounded channel) →
//! writer → store. A domain out of tokens or in backoff never blocks the others: the
//! dispatcher simply picks another domain's recipient.

pub mod breaker;
pub mod complaints;
pub mod dispatch;
pub mod health;
pub mod job;
pub mod live;
pub mod pool;
pub mod priority;
pub(crate) mod ready;
pub mod retry;
pub mod sites;
pub mod throttle;
pub mod warmup;
pub mod worker;
pub mod worker_mx;
pub mod worker_pool;
pub mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::LaneSettings;
use crate::error::{Error, Result};
use crate::owner::Global;
use crate::shutdown::Shutdown;
use crate::store::campaign::CampaignStore;
use crate::transport::Connector;
pub use job::{Done, Job, MessageSpec, Outcome, Proof};

/// Live counters for progress display (updated after results are durably committed).
/// `sent`…`skipped` count this run's results; `deferred_now` is a gauge.
#[derive(Default, Debug)]
pub struct Stats {
    /// Accepted by the server.
    pub sent: AtomicU64,
    /// Deferral attempts in this run (one recipient deferred twice counts twice; the display
    /// shows [`Stats::deferred_now`]).
    pub deferred: AtomicU64,
    /// Recipients deferred right now: the store's deferred count at the start of the run,
    /// raised when a recipient is deferred, lowered when a deferred one gets a final result.
    pub deferred_now: AtomicU64,
    /// New recipients the import stored as skipped (suppressed) in this run.
    pub skipped_import: AtomicU64,
    /// The import is still reading the lists (so `eligible` is still growing).
    pub importing: AtomicBool,
    /// Per-domain activity, relay trouble, waiting time.
    pub live: live::Live,
    /// Bounced (address or sender/message).
    pub bounced: AtomicU64,
    /// Retries exhausted.
    pub failed: AtomicU64,
    /// Skipped at send time (render errors).
    pub skipped: AtomicU64,
    /// Requeued after a lost connection.
    pub requeued: AtomicU64,
    /// Transactions whose final `.` went out and whose reply never came (the connection was
    /// lost): resent, so each may be a duplicate — the only way blast ever sends one twice.
    pub ambiguous_resends: AtomicU64,
    /// Eligible when the run started.
    pub eligible: AtomicU64,
    /// The campaign's unsubscribes and complaints so far (from the global state, read every
    /// few seconds by [`complaints`]); shown once `feedback_known` is set.
    pub unsubscribed: AtomicU64,
    /// See `unsubscribed`.
    pub complaints: AtomicU64,
    /// The counts above have been read at least once.
    pub feedback_known: AtomicBool,
}

impl Stats {
    /// Results recorded so far.
    pub fn done(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
            + self.bounced.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.skipped.load(Ordering::Relaxed)
    }
}

/// What a lane run produced besides the store updates.
#[derive(Debug, Default)]
pub struct LaneReport {
    /// Addresses this run added to the global suppression list (address-level bounces).
    pub suppressed: u64,
    /// Per-domain warnings (sender/message-level permanent failures): domain → (count, last reply).
    pub warnings: std::collections::BTreeMap<String, (u64, String)>,
    /// The run stopped because the lane could not work (relay unreachable, TLS/AUTH refused).
    pub fatal: Option<String>,
    /// The run stopped early because the destination stayed unreachable or kept answering
    /// 421 for longer than `wait_for_retries`; every unsent recipient is still pending or
    /// deferred, and a rerun resumes.
    pub stalled: Option<String>,
    /// Recipients a warm-up cap deferred in this run, and the latest day start (ms) they wait
    /// for.
    pub warmup_deferred: Option<(u64, u64)>,
}

/// Shared by the lane's tasks.
pub(crate) struct LaneCtx {
    pub settings: LaneSettings,
    pub spec: Arc<MessageSpec>,
    pub store: Arc<CampaignStore>,
    pub shutdown: Arc<Shutdown>,
    pub stats: Arc<Stats>,
    /// Per-site state: in flight, backoff, holds ([`sites`]).
    pub sites: sites::Sites,
    /// Where sessions go.
    pub connector: Connector,
    /// The owner of the global suppression list.
    pub global: Global,
    /// The destination's backoff and trouble clock.
    pub health: health::Health,
    pub fatal: Mutex<Option<String>>,
    pub stalled: Mutex<Option<String>>,
    /// Claim marker id → its recipients whose results are not committed yet.
    pub claims: Mutex<std::collections::HashMap<u64, usize>>,
    /// Consecutive failed connection attempts across workers (reset on success).
    pub connect_failures: std::sync::atomic::AtomicU32,
    /// Where messages are built when they are signed (`None`: on the worker).
    pub pool: Option<Arc<crate::pool::CpuPool>>,
    /// First-attempt bad-address share ([`breaker`]).
    pub breaker: breaker::Breaker,
    /// Mailboxes with soft failures counted ([`crate::token::mailbox_key`]): a success to
    /// one of them resets its count.
    pub soft_keys: std::collections::HashSet<String>,
    /// When soft failures add up ([`Inputs::soft_policy`]).
    pub soft_policy: crate::store::suppression::SoftPolicy,
    /// Direct delivery: idle sessions per MX host, under the `connections` cap.
    pub mx_pool: crate::transport::mx::Pool<Job>,
    /// The IP's daily caps ([`warmup`]), when the lane warms up.
    pub warmup: Option<warmup::Runtime>,
    /// In a fleet: the rates and per-site caps shared through Redis ([`crate::cluster`]).
    pub fleet: Option<Arc<crate::cluster::LaneFleet>>,
    /// `source_ips` / `relays`: the lane's pool ([`pool`]); `None` without one.
    pub pools: Option<pool::Pool>,
}

impl LaneCtx {
    /// How long to hold every recipient, if the destination is backed off (with a pool:
    /// while every relay is out).
    pub(crate) fn blocked(&self) -> Option<Duration> {
        match &self.pools {
            Some(p) => p.all_out(),
            None => self.health.blocked(),
        }
    }

    /// A job dispatched to pool IP `ip` finished (or was never sent).
    pub(crate) fn unqueue(&self, ip: usize) {
        if let Some(p) = &self.pools {
            let _ = p.ips[ip]
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// What the lane sends to, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.pools {
            Some(p) => p.describe(),
            None => self.connector.describe(),
        }
    }

    pub(crate) fn set_fatal(&self, msg: String) {
        self.stop_because(&self.fatal, msg);
    }

    /// Ends the run early without an error: the destination has been unavailable too long.
    pub(crate) fn set_stalled(&self, msg: String) {
        self.stop_because(&self.stalled, msg);
    }

    /// Records the first reason of its kind and stops the lane.
    fn stop_because(&self, slot: &Mutex<Option<String>>, msg: String) {
        slot.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(msg);
        self.shutdown.stop();
    }
}

/// What a lane run works on.
pub struct Inputs {
    /// The owner of the global suppression list.
    pub global: Global,
    /// How to build each message.
    pub spec: Arc<MessageSpec>,
    /// The campaign's store.
    pub store: Arc<CampaignStore>,
    /// The caller's stop (Ctrl-C, SIGTERM, serve stopping).
    pub shutdown: Arc<Shutdown>,
    /// Live counters.
    pub stats: Arc<Stats>,
    /// With `feed`, an import into an empty store hands over its new recipients as it writes
    /// them, and the store is scanned only once the feed has closed.
    pub feed: Option<mpsc::Receiver<Job>>,
    /// When soft failures add up to a suppression (blast.toml's `[bounces]`).
    pub soft_policy: crate::store::suppression::SoftPolicy,
    /// In a fleet (`[cluster]`): the shared rates and connection caps; `None`: this
    /// machine's own.
    pub fleet: Option<Arc<crate::cluster::LaneFleet>>,
}

/// Sends every eligible recipient of the store through the lane until all are final, the
/// remaining ones are deferred beyond `wait_for_retries`, or a stop is requested.
pub async fn run(settings: &LaneSettings, inputs: Inputs) -> Result<LaneReport> {
    run_with(Connector::for_lane(settings)?, settings, inputs).await
}

/// [`run`] through a given transport (tests and benches pass [`Connector::Stub`]).
pub async fn run_with(
    connector: Connector,
    settings: &LaneSettings,
    inputs: Inputs,
) -> Result<LaneReport> {
    let Inputs {
        global,
        spec,
        store,
        shutdown,
        stats,
        feed,
        soft_policy,
        fleet,
    } = inputs;
    // The lane's own stop: the caller's (Ctrl-C, SIGTERM) or the lane's (a fatal error, a
    // stalled destination), so the caller can tell an interrupt from a lane that gave up.
    let lane_stop = Arc::new(Shutdown::default());
    let watcher = {
        let (outer, inner) = (shutdown.clone(), lane_stop.clone());
        tokio::spawn(async move {
            outer.wait().await;
            inner.stop();
        })
    };
    let workers = connector.max_sessions(settings.connections);
    // Made here, on the lane's runtime, so its threads inherit that runtime's priority.
    let pool = match spec.signer {
        Some(_) => Some(
            crate::pool::CpuPool::new("blast-sign", crate::pool::cores())
                .map_err(|e| Error::io("cannot start the signing threads", e))?,
        ),
        None => None,
    };
    // Small (only mailboxes with soft failures in their last campaigns); without it, a
    // success could not reset a count. A list that cannot be read only costs the resets.
    let soft_keys = {
        let g = global.clone();
        match tokio::task::spawn_blocking(move || g.soft_counts()).await {
            Ok(Ok(v)) => v.into_iter().map(|(k, _)| k).collect(),
            Ok(Err(e)) => {
                eprintln!("blast: warning: cannot read the soft-bounce counts: {e}");
                Default::default()
            }
            Err(_) => Default::default(),
        }
    };
    let pools = match &connector {
        Connector::Smtp(ep) => pool::Pool::for_lane(settings, ep),
        _ => None,
    };
    let ip_names = pools
        .as_ref()
        .map_or_else(|| vec![sites::ip_key(settings.source_ip)], |p| p.ip_names());
    // Direct delivery: workers serve sites from ready queues, so the connection caps count
    // sessions there and the dispatcher lets recipients queue behind each one.
    let direct = connector.mx().is_some() && pools.is_none();
    let depth = if direct { ready::DEPTH } else { 1 };
    let ctx = Arc::new(LaneCtx {
        settings: settings.clone(),
        spec,
        store,
        shutdown: lane_stop,
        stats,
        sites: sites::Sites::new(
            settings.shaping.clone(),
            ip_names,
            settings.per_domain_connections,
            depth,
        ),
        connector,
        global: global.clone(),
        health: health::Health::default(),
        fatal: Mutex::new(None),
        stalled: Mutex::new(None),
        claims: Default::default(),
        connect_failures: Default::default(),
        pool,
        breaker: Default::default(),
        soft_keys,
        soft_policy,
        mx_pool: crate::transport::mx::Pool::new(workers),
        warmup: warmup::Runtime::new(settings, global.clone()),
        fleet,
        pools,
    });
    let lease_keeper = ctx.fleet.as_ref().map(|f| {
        ctx.sites.share_caps(f.leases.clone());
        tokio::spawn(f.leases.clone().keep(ctx.shutdown.clone()))
    });
    // Small channels: tokens are taken at dispatch, so a deep queue would let messages bunch
    // up and leave in bursts that break the per-domain rate at the receiver.
    // With a pool, each IP has its own workers and channel, sized to what the dispatcher lets
    // it have queued ([`pool::Pool::queue_cap`]), so one busy IP never blocks the claimer.
    let groups: Vec<(Option<usize>, usize, usize)> = match &ctx.pools {
        Some(p) => p
            .ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (Some(i), ip.workers, pool::Pool::queue_cap(ip.workers)))
            .collect(),
        None => vec![(None, workers, workers * 2)],
    };
    let (done_tx, done_rx) = mpsc::channel::<Done>(8192);
    let (requeue_tx, requeue_rx) = mpsc::unbounded_channel::<Job>();
    let mut job_txs = Vec::new();
    let mut job_rxs = Vec::new();
    for (ip, n, cap) in &groups {
        let (tx, rx) = mpsc::channel::<Job>(*cap);
        job_txs.push(tx);
        job_rxs.push((*ip, *n, Arc::new(tokio::sync::Mutex::new(rx))));
    }

    let mut complaint = complaints::Watch::default();
    complaint.check(&ctx).await;
    let complaint_watch = tokio::spawn(complaint.watch(ctx.clone()));
    sites::load_holds(&ctx).await;
    let holds_watch = tokio::spawn(sites::watch_holds(ctx.clone()));
    let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = tokio::spawn(writer::run(
        ctx.clone(),
        done_rx,
        requeue_tx,
        outstanding.clone(),
    ));
    let mut handles = Vec::new();
    let handoff = if direct {
        let caps = settings
            .shaping
            .providers
            .iter()
            .map(|p| p.connections.unwrap_or(usize::MAX))
            .collect();
        let ready = Arc::new(ready::Ready::new(
            workers * ready::QUEUED_PER_WORKER,
            settings.per_domain_connections,
            caps,
        ));
        for _ in 0..workers {
            let (c, r, tx) = (ctx.clone(), ready.clone(), done_tx.clone());
            handles.push(tokio::spawn(worker_mx::run(c, r, tx)));
        }
        dispatch::Handoff::Ready(ready)
    } else {
        for (ip, n, job_rx) in job_rxs {
            for _ in 0..n {
                let (c, rx, tx) = (ctx.clone(), job_rx.clone(), done_tx.clone());
                handles.push(tokio::spawn(async move {
                    match ip {
                        Some(ip) => worker_pool::run(c, ip, rx, tx).await,
                        None => worker::run(c, rx, tx).await,
                    }
                }));
            }
        }
        dispatch::Handoff::Workers(job_txs)
    };
    drop(done_tx);
    // Few queued claim batches: while a commit is slow (a busy disk), the dispatcher blocks
    // instead of taking more rate tokens, so a slow fsync can't release a second's worth of
    // one domain's messages at once.
    let (claim_tx, claim_rx) = mpsc::channel::<Vec<Job>>(4);
    let claimer = tokio::spawn(dispatch::claimer(
        ctx.clone(),
        claim_rx,
        handoff,
        outstanding.clone(),
    ));
    let dispatched = dispatch::run(ctx.clone(), claim_tx, requeue_rx, outstanding, feed).await;
    let _ = claimer.await;
    for h in handles {
        let _ = h.await;
    }
    let report = writer
        .await
        .map_err(|e| Error::Lane(format!("writer task failed: {e}")))??;
    // Unspent reservations go back, so the next run (or another campaign) may send them today.
    if let Some(w) = &ctx.warmup {
        if let Err(e) = w.settle(true).await {
            eprintln!("blast: warning: cannot give back this run's unused warm-up allowance: {e}");
        }
    }
    dispatched?;
    if let Some(k) = lease_keeper {
        // Gives the leases back now rather than letting them expire.
        ctx.shutdown.stop();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), k).await;
    }
    watcher.abort();
    complaint_watch.abort();
    holds_watch.abort();
    let mut report = report;
    report.fatal = ctx.fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
    report.stalled = ctx.stalled.lock().unwrap_or_else(|p| p.into_inner()).take();
    report.warmup_deferred = ctx.warmup.as_ref().and_then(|w| {
        let n = w.deferred.load(std::sync::atomic::Ordering::Relaxed);
        (n > 0).then(|| {
            (
                n,
                w.deferred_until_ms
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    });
    Ok(report)
}
