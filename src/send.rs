//! `blast send`: load and validate, import the lists into the store and reconcile what a
//! previous run left ([`crate::import`]), send through the lane, summarise
//! ([`crate::report::summary::Summary`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Settings, TransportSpec};
use crate::error::{Error, Result};
use crate::import::{
    import, reconcile, register_files, restore_suppressions, settle_id_hits, ImportSource,
};
use crate::lane::{self, Job, MessageSpec, Stats};
use crate::list::prune::PruneReport;
use crate::owner::Global;
use crate::report::frame::Baseline;
use crate::report::progress::ProgressOptions;
use crate::report::summary::Summary;
use crate::shutdown::Shutdown;
use crate::store::campaign::CampaignStore;

/// Options of `blast send`.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Where to write the prune report (default: in the campaign's state dir).
    pub pruned: Option<PathBuf>,
    /// Retry deferred recipients now instead of at their retry time.
    pub retry_now: bool,
    /// No progress display on stderr.
    pub quiet: bool,
    /// One JSON progress object per second on stdout ([`crate::report::json`]).
    pub json_progress: bool,
    /// Send even when the circuit breaker would stop the run (a list known to be good).
    pub override_breaker: bool,
}

/// The campaign's own directory inside the state dir (a shard's: `shard-K-of-N` inside it,
/// so each shard resumes on its own).
pub fn campaign_dir(s: &Settings) -> PathBuf {
    let dir = s.state_dir.join(&s.id);
    match &s.shard {
        Some(sh) => dir.join(sh.dir_name()),
        None => dir,
    }
}

/// The sled store directory of a campaign.
pub fn store_dir(s: &Settings) -> PathBuf {
    campaign_dir(s).join("store")
}

pub use crate::import::load_inputs;

pub(crate) fn prune_path(s: &Settings, opt: &Option<PathBuf>) -> PathBuf {
    opt.clone()
        .unwrap_or_else(|| campaign_dir(s).join("pruned.csv"))
}

pub(crate) fn io(ctx: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let c = format!("{ctx} {}", p.display());
    move |e| Error::io(c, e)
}

/// The lane's limits as the display shows them: the global rate, and the default per-domain
/// rate when there is one (`2000/s, 20/s per domain`).
fn limit(l: &crate::config::LaneSettings) -> String {
    let global = l
        .rate
        .map_or_else(|| "unlimited".to_string(), |r| r.to_string());
    match l.per_domain_default {
        Some(d) => format!("{global}, {d} per domain"),
        None => global,
    }
}

/// Runs `blast send`.
pub async fn send(s: &Settings, opts: &SendOptions, shutdown: Arc<Shutdown>) -> Result<Summary> {
    let started = Instant::now();
    let overridden;
    let s = if opts.override_breaker {
        let mut c = s.clone();
        c.lane.breaker = None;
        c.lane.complaint_share = None;
        overridden = c;
        &overridden
    } else {
        s
    };
    let verdict = crate::sender_rules::judge(s);
    if !verdict.errors.is_empty() {
        return Err(Error::Config(verdict.errors.join("\n")));
    }
    for w in &verdict.warnings {
        eprintln!("warning: {w}");
    }
    let (templates, reader, fields) = load_inputs(s)?;
    let dir = store_dir(s);
    let store = Arc::new(CampaignStore::open(&dir, Duration::from_millis(500))?);
    let ppath = prune_path(s, &opts.pruned);
    let mut prune =
        PruneReport::create(&ppath).map_err(io("cannot create prune report", &ppath))?;

    // Import (blocking work: CSV, hygiene, sled) off the reactor. Into an empty store it runs
    // beside the lane: the dispatcher picks up rows as they are written, so the CPU the
    // import needs overlaps with the network wait of sending. An existing store is imported
    // and reconciled first: rows a crashed run left in flight must be settled before anything
    // is sent.
    let fresh = store.is_empty();
    let stats = Arc::new(Stats::default());
    stats.importing.store(fresh, Ordering::Relaxed);
    let (feed_tx, feed_rx) = if fresh {
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(10_000);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let file_map = register_files(&store, &reader)?;
    let global = Global::shared(s.suppression_state_dir());
    let fleet = join_fleet(s, &global).await?;
    let import_started = Instant::now();
    let import_task = {
        let (s2, st, stats, global) = (s.clone(), store.clone(), stats.clone(), global.clone());
        let retry_now = opts.retry_now;
        tokio::task::spawn_blocking(move || -> Result<_> {
            // Its tokens name the run by a 32-bit id (serve's endpoint records the name), and
            // a bounce without a token is matched against the store it names.
            global.register_run(&s2.id, Some(&store_dir(&s2)))?;
            // A copy, so the import does not hold the list (or serve) while it reads.
            let supp = global.snapshot()?;
            let mut imported = import(
                &s2,
                &st,
                ImportSource {
                    reader,
                    file_map: &file_map,
                    fields: &fields,
                    feed: feed_tx,
                },
                &mut prune,
                Some(&supp),
                &stats,
            )?;
            stats.importing.store(false, Ordering::Relaxed);
            drop(supp);
            settle_id_hits(&global, std::mem::take(&mut imported.id_hits))?;
            let (removed, recovered, restored) = if imported.fresh {
                (0, 0, 0)
            } else {
                let r = reconcile(&st, s2.in_flight, retry_now, &imported.seen)?;
                stats.eligible.store(r.eligible, Ordering::Relaxed);
                let restored = restore_suppressions(&global, &s2.id, r.bounced)?;
                (r.removed, r.recovered, restored)
            };
            Ok((
                prune,
                imported,
                (removed, recovered, restored),
                import_started.elapsed(),
            ))
        })
    };
    let finish_import = {
        let shutdown = shutdown.clone();
        async move {
            let r = import_task
                .await
                .map_err(|e| Error::Lane(format!("import task failed: {e}")))
                .and_then(|r| r);
            if r.is_err() {
                shutdown.stop();
            }
            r
        }
    };
    let mut finish_import = Some(Box::pin(finish_import));
    let mut imported_early = None;
    let mut base = Baseline::default();
    let mut waiting = None;
    if !fresh {
        imported_early = Some(finish_import.take().expect("not yet awaited").await?);
        // A resumed run: the display's campaign-wide figures start from the store's.
        let st = store.clone();
        let counts = tokio::task::spawn_blocking(move || st.counts())
            .await
            .map_err(|e| Error::Lane(format!("count task failed: {e}")))??;
        base = Baseline::from_counts(&counts);
        waiting = Some(
            counts.get(crate::store::record::State::Pending)
                + counts.get(crate::store::record::State::Deferred),
        );
        stats.deferred_now.store(base.deferred, Ordering::Relaxed);
        stats.skipped_import.store(0, Ordering::Relaxed);
    }

    let spec = Arc::new(MessageSpec::new(s, templates, store.files()?));
    // Before the progress display rewrites the snapshot: the campaign's total so far.
    let prior_ambiguous =
        crate::report::summary::snapshot_ambiguous(&campaign_dir(s).join("status.json"));
    let progress = crate::report::progress::spawn(ProgressOptions {
        campaign: s.id.clone(),
        stats: stats.clone(),
        quiet: opts.quiet,
        json: opts.json_progress,
        snapshot: campaign_dir(s).join("status.json"),
        store: store.clone(),
        base,
        limit: limit(&s.lane),
    });
    // Direct delivery's accounting file defaults to the campaign's own directory (beside its
    // store), so each run of a scheduled campaign has its own.
    let mut lane_settings = s.lane.clone();
    if lane_settings.accounting.is_none() && lane_settings.transport == TransportSpec::Mx {
        lane_settings.accounting = Some(campaign_dir(s).join("accounting.jsonl"));
    }
    if lane_settings.warmup.is_some() {
        warmup_up_front(&lane_settings, &global, waiting).await;
    }
    let lane_run = lane::run(
        &lane_settings,
        lane::Inputs {
            global,
            spec,
            store: store.clone(),
            shutdown: shutdown.clone(),
            stats: stats.clone(),
            feed: feed_rx,
            soft_policy: s.bounce_policy.soft,
            fleet: fleet.as_ref().map(|(f, _, _)| f.clone()),
        },
    );
    let (report, import_out) = match (imported_early, finish_import) {
        (Some(done), _) => (lane_run.await, done),
        (None, Some(fut)) => {
            let (report, done) = tokio::join!(lane_run, fut);
            (report, done?)
        }
        (None, None) => unreachable!("the import is either awaited or run beside the lane"),
    };
    if let Some((_, stop, task)) = fleet {
        // Its last round publishes what this run suppressed.
        stop.stop();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let report = report?;
    let (prune, imported, (removed, recovered, restored), import_time) = import_out;
    let pruned = prune
        .finish()
        .map_err(io("cannot write prune report", &ppath))?;
    let suppressed = report.suppressed + restored;
    let counts = store.counts()?;
    progress.finish(Some(&counts)).await;
    let interrupted = shutdown.stopping();
    let summary = Summary {
        campaign: s.id.clone(),
        counts,
        elapsed: started.elapsed(),
        imported,
        import_time,
        sent_this_run: stats.sent.load(std::sync::atomic::Ordering::Relaxed),
        ambiguous_resends: stats
            .ambiguous_resends
            .load(std::sync::atomic::Ordering::Relaxed),
        pruned,
        removed,
        recovered_in_flight: (recovered, s.in_flight),
        warnings: report.warnings,
        suppressed,
        fatal: report.fatal,
        stalled: report.stalled,
        warmup_deferred: report.warmup_deferred,
        interrupted,
        shard: s.shard,
    };
    crate::report::summary::write_snapshot(
        &campaign_dir(s).join("status.json"),
        &summary.campaign,
        &summary.counts,
        false,
        prior_ambiguous + summary.ambiguous_resends,
    );
    Ok(summary)
}

/// Says before sending how much today's warm-up caps allow, so a list larger than that is no
/// surprise (`blast check` prints the expected finish date).
async fn warmup_up_front(l: &crate::config::LaneSettings, global: &Global, waiting: Option<u64>) {
    let g = global.clone();
    // Every IP's days (a pool's IPs each warm on their own); `today` picks out the lane's.
    let records = match tokio::task::spawn_blocking(move || g.warmup_days(None)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("blast: warning: cannot read the warm-up counts: {e}");
            return;
        }
        Err(_) => return,
    };
    let today = crate::clock::today();
    for t in lane::warmup::today(l, &records, today) {
        let left = t.plan.cap.map_or_else(
            || "no cap".to_string(),
            |c| format!("{} left today", c.saturating_sub(t.used)),
        );
        eprintln!(
            "warm-up: {} — {left}{}",
            t.line(),
            if let Some(n) = waiting.filter(|n| *n > 0) {
                format!("; {n} recipients waiting: what is over the cap is deferred to the next sending day")
            } else {
                "; what is over the cap is deferred to the next sending day".to_string()
            }
        );
    }
}

/// A fleet's lane handle, the stop of its suppression sync, and the sync task.
type Fleet = (
    Arc<crate::cluster::LaneFleet>,
    Arc<Shutdown>,
    tokio::task::JoinHandle<()>,
);

/// In a fleet (`[cluster]`): refuses a Redis that may evict keys, brings the suppression list
/// up to date with the fleet's before the lists are read (so what another machine suppressed
/// is skipped here), and keeps it in sync while the run lasts. Redis being down is no error:
/// the list works locally and the lane waits for the shared limits.
async fn join_fleet(s: &Settings, global: &Global) -> Result<Option<Fleet>> {
    let Some(cs) = &s.cluster else {
        return Ok(None);
    };
    let cluster = crate::cluster::Cluster::new(cs)?;
    cluster.check_policy().await?;
    let sync =
        crate::cluster::suppression_sync::SuppressionSync::new(cluster.clone(), global.clone());
    if let Err(e) = sync.round().await {
        eprintln!(
            "blast: warning: Redis ({}) unreachable: the suppression list is this machine's \
             until it answers; sending waits for the shared limits: {e}",
            cs.redis
        );
    }
    let stop = Arc::new(Shutdown::default());
    let task = tokio::spawn(sync.run(stop.clone()));
    let lane = crate::cluster::LaneFleet::new(cluster, &s.id, &s.lane);
    Ok(Some((Arc::new(lane), stop, task)))
}
