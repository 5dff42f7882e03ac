//! The dispatcher: reads eligible recipients from the store in key order (which interleaves
//! domains), keeps a bounded buffer per domain, and hands out jobs round-robin across domains
//! that have a free connection slot, are not in backoff and have a token — so a throttled
//! domain never blocks the others. Claims are made durable (`in_flight`, one fsync per batch)
//! before any MAIL FROM is sent.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::throttle::Throttle;
use super::{Job, LaneCtx};
use crate::error::{Error, Result};
use crate::store::now_ms;
use crate::store::record::{Record, State};

/// Recipients held in memory at most (bounds memory for any list size).
const BUFFER: usize = 20_000;
/// Scan chunk.
const CHUNK: usize = 2_000;
/// Claims per durable commit.
const CLAIM_BATCH: usize = 256;

/// A queue's key: the domain and the source IP (pool index) its recipients leave from. One
/// queue per pair, so a pair that must wait (its per-IP rate, a hold on that IP) never holds
/// up the same domain's recipients on another IP.
type QueueKey = (String, usize);

#[derive(Default)]
struct Buffer {
    queues: HashMap<QueueKey, VecDeque<Job>>,
    /// The round: each queue with the site it went to when last looked at (`None`: not yet).
    rr: VecDeque<(QueueKey, Option<Arc<str>>)>,
    len: usize,
}

impl Buffer {
    fn push(&mut self, ctx: &LaneCtx, job: Job) {
        let ip = ctx.pools.as_ref().map_or(0, |p| p.ip_of(&job.key));
        let k = (job.rec.domain().to_string(), ip);
        let q = self.queues.entry(k.clone()).or_default();
        if q.is_empty() {
            self.rr.push_back((k, None));
        }
        q.push_back(job);
        self.len += 1;
    }
}

/// Runs until all eligible recipients are dispatched and finished, or a stop.
pub(crate) async fn run(
    ctx: Arc<LaneCtx>,
    jobs: mpsc::Sender<Vec<Job>>,
    mut requeue: mpsc::UnboundedReceiver<Job>,
    outstanding: Arc<AtomicUsize>,
    mut feed: Option<mpsc::Receiver<Job>>,
) -> Result<()> {
    let throttle = Throttle::new(&ctx.settings, ctx.pools.as_ref().map_or(1, |p| p.ips.len()));
    let mut buf = Buffer::default();
    let mut cursor: Option<String> = None;
    // Fed by an import into an empty store: nothing to scan until the feed closes.
    let mut scan_done = feed.is_some();
    let mut claimed: Vec<Job> = Vec::with_capacity(CLAIM_BATCH);
    let mut last_shrink = Instant::now();
    let mut pass_started_ms = now_ms();

    while !ctx.shutdown.stopping() {
        while let Ok(j) = requeue.try_recv() {
            buf.push(&ctx, j);
        }
        while buf.len < BUFFER {
            match feed.as_mut().map(|f| f.try_recv()) {
                Some(Ok(j)) => buf.push(&ctx, j),
                Some(Err(mpsc::error::TryRecvError::Disconnected)) => feed = None,
                Some(Err(mpsc::error::TryRecvError::Empty)) | None => break,
            }
        }
        if !scan_done && buf.len < BUFFER / 2 {
            let store = ctx.store.clone();
            let after = cursor.clone();
            let due = pass_started_ms;
            let (rows, last, done) = tokio::task::spawn_blocking(move || {
                store.scan_from(after.as_deref(), CHUNK, |st, bytes| match st {
                    State::Pending => true,
                    State::Deferred => Record::peek_retry_at(bytes).is_some_and(|at| at <= due),
                    _ => false,
                })
            })
            .await
            .map_err(|e| Error::Lane(format!("scan task failed: {e}")))??;
            for (key, rec) in rows {
                buf.push(
                    &ctx,
                    Job {
                        key,
                        rec,
                        requeues: 0,
                        claim: 0,
                        claim_ms: 0,
                        site: None,
                    },
                );
            }
            cursor = last;
            scan_done = done;
        }

        // A destination that stays unreachable (or keeps answering 421) ends the run rather
        // than a reconnect loop that never ends: every unsent recipient is still pending or
        // deferred, and a rerun resumes.
        if let Some((since, last)) = ctx.health.stalled(ctx.settings.wait_for_retries) {
            let since: chrono::DateTime<chrono::Local> = since.into();
            ctx.set_stalled(format!(
                "{} unavailable since {} (longer than wait_for_retries = {:?}); last: {last}",
                ctx.describe(),
                since.format("%Y-%m-%d %H:%M:%S %z"),
                ctx.settings.wait_for_retries,
            ));
            break;
        }
        // A resolver answering NXDOMAIN for many domains is broken, not the list: pause
        // (exit 75) before any of them is bounced.
        if let Some(why) = ctx.connector.mx().and_then(|m| m.resolver.fault()) {
            ctx.set_stalled(why);
            break;
        }
        if let Some(f) = &ctx.fleet {
            if !fleet_ready(&ctx, f).await? {
                let t0 = Instant::now();
                wait_for(&ctx, &mut requeue, &mut buf, Duration::from_millis(200)).await;
                ctx.stats.live.add_idle(t0.elapsed());
                continue;
            }
        }
        if let Some(w) = ctx.blocked() {
            // The destination asked us to back off (421) or cannot be reached (with a pool:
            // every relay is out): hold every recipient; nothing is claimed meanwhile.
            let w = w.min(Duration::from_millis(50));
            let t0 = Instant::now();
            wait_for(&ctx, &mut requeue, &mut buf, w).await;
            // Not sending time: the average rate on the display leaves it out.
            ctx.stats.live.add_idle(t0.elapsed());
            continue;
        }

        // One round over the domains with queued work.
        let mut min_wait: Option<Duration> = None;
        // A site held back only by its in-flight cap: wake when a transaction ends.
        let mut site_full = false;
        // The sites found full in this round (by their interned key): the other domains of
        // such a site are passed over without a DNS or site look.
        let mut full_now: Vec<(usize, Arc<str>)> = Vec::new();
        let rounds = buf.rr.len();
        let now = Instant::now();
        for _ in 0..rounds {
            let Some((qk, last)) = buf.rr.pop_front() else {
                break;
            };
            if last
                .as_ref()
                .is_some_and(|k| full_now.iter().any(|f| f.0 == qk.1 && Arc::ptr_eq(&f.1, k)))
            {
                buf.rr.push_back((qk, last));
                continue;
            }
            let (domain, ip) = (qk.0.as_str(), qk.1);
            if let Some(Err((w, out))) = ctx.pools.as_ref().map(|p| p.ip_ready(ip)) {
                // This IP's workers have enough queued, or its address is out: then its
                // recipients wait (never moved to another IP), and a wait that outlasts the
                // other IPs' deliveries by `wait_for_retries` ends the run (exit 75).
                if out {
                    let name = &ctx.pools.as_ref().expect("a pool").ips[ip].name;
                    ctx.health.waiting_on(&format!(
                        "source IP {name} is not available on this machine"
                    ));
                }
                min_wait = Some(min_wait.map_or(w, |m| m.min(w)));
                buf.rr.push_back((qk, last));
                continue;
            }
            let mut site = match site_or_dns_wait(&ctx, domain, now) {
                Ok(site) => site,
                Err(w) => {
                    min_wait = Some(min_wait.map_or(w, |m| m.min(w)));
                    buf.rr.push_back((qk, last));
                    continue;
                }
            };
            site.ip = ip;
            let last = Some(site.key.clone());
            if let Some((until_ms, why)) = ctx.sites.suspended(&site) {
                // The receiver asked this IP to stop: its waiting recipients are deferred to
                // the end of the suspension (no attempt spent), so the run neither spins on
                // them nor holds the others up, and ends once only they are left. Only this
                // IP's: moving them to another IP would be snowshoeing.
                defer_held(&ctx, &mut buf, &qk, until_ms, &why).await?;
                continue;
            }
            if let Err(w) = ctx.sites.admit(&site, now) {
                if w == super::sites::Wait::Full {
                    site_full = true;
                    if full_now.len() < 64 {
                        full_now.push((ip, site.key.clone()));
                    }
                }
                let w = w.at_most();
                min_wait = Some(min_wait.map_or(w, |m| m.min(w)));
                buf.rr.push_back((qk, last));
                continue;
            }
            let shaped = match &ctx.fleet {
                Some(f) => f.check_domain(domain, &site.key, ctx.sites.ip(ip)),
                None => throttle.check_domain(domain, ip, &site.key),
            };
            if let Err(w) = shaped {
                min_wait = Some(min_wait.map_or(w, |m| m.min(w)));
                buf.rr.push_back((qk, last));
                continue;
            }
            if let Some(w) = &ctx.warmup {
                if let super::warmup::Take::Defer { until_ms, why } = w.take(&site).await? {
                    // Today's cap is spent: this domain's recipients wait for the next
                    // sending day without spending an attempt, and the others go on.
                    let n = buf.queues.get(&qk).map_or(0, |q| q.len() as u64);
                    w.note_deferred(n, until_ms);
                    defer_held(&ctx, &mut buf, &qk, until_ms, &why).await?;
                    continue;
                }
            }
            if let Some(f) = &ctx.fleet {
                if f.try_global().is_err() {
                    commit(&ctx, &jobs, &mut claimed, &outstanding).await?;
                    if !fleet_global(&ctx, f).await {
                        // Stopping, or Redis went away: the recipient stays queued.
                        buf.rr.push_front((qk, last));
                        break;
                    }
                }
            } else if !throttle.try_global() {
                // Commit what we have before waiting, so a slow global rate never holds
                // claimed jobs back.
                commit(&ctx, &jobs, &mut claimed, &outstanding).await?;
                throttle.wait_global().await;
            }
            let q = buf.queues.get_mut(&qk).expect("rr domain has a queue");
            let mut job = q.pop_front().expect("rr domain queue not empty");
            buf.len -= 1;
            if q.is_empty() {
                buf.queues.remove(&qk);
            } else {
                buf.rr.push_back((qk, last));
            }
            ctx.sites.start(&site);
            if let Some(p) = &ctx.pools {
                p.ips[ip].queued.fetch_add(1, Ordering::Relaxed);
            }
            job.site = Some(site);
            claimed.push(job);
            if claimed.len() >= CLAIM_BATCH {
                commit(&ctx, &jobs, &mut claimed, &outstanding).await?;
            }
            if ctx.shutdown.stopping() {
                break;
            }
        }
        let progressed = !claimed.is_empty();
        commit(&ctx, &jobs, &mut claimed, &outstanding).await?;

        if last_shrink.elapsed() > Duration::from_secs(60) {
            throttle.shrink();
            if let Some(f) = &ctx.fleet {
                f.rates.shrink();
            }
            last_shrink = Instant::now();
        }
        if progressed {
            continue;
        }
        if buf.len == 0 && scan_done {
            if outstanding.load(Ordering::SeqCst) > 0 {
                wait_for(&ctx, &mut requeue, &mut buf, Duration::from_millis(10)).await;
                continue;
            }
            if let Some(f) = feed.as_mut() {
                // The import is still writing: wait for its next recipients.
                match tokio::time::timeout(Duration::from_millis(20), f.recv()).await {
                    Ok(Some(j)) => buf.push(&ctx, j),
                    Ok(None) => feed = None,
                    Err(_) => {}
                }
                continue;
            }
            // A pass is complete. Deferred recipients due within the wait window: sleep until
            // the first is due, then scan again.
            let store = ctx.store.clone();
            let counts = tokio::task::spawn_blocking(move || store.counts())
                .await
                .map_err(|e| Error::Lane(format!("count task failed: {e}")))??;
            let deferred = counts.get(State::Deferred);
            if deferred == 0 && counts.get(State::Pending) == 0 {
                break;
            }
            let now = now_ms();
            let wait_ms = counts.next_retry_ms.saturating_sub(now);
            if counts.get(State::Pending) == 0
                && wait_ms > ctx.settings.wait_for_retries.as_millis() as u64
            {
                break;
            }
            if wait_ms > 0 {
                let live = &ctx.stats.live;
                live.waiting_until_ms
                    .store(now + wait_ms, Ordering::Relaxed);
                live.waiting_since_ms.store(now_ms(), Ordering::Relaxed);
                let t0 = Instant::now();
                let stop = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => false,
                    _ = ctx.shutdown.wait() => true,
                };
                // Ended before it is added: a frame in between undercounts the wait for a
                // moment instead of counting it twice.
                live.waiting_since_ms.store(0, Ordering::Relaxed);
                live.waiting_until_ms.store(0, Ordering::Relaxed);
                live.add_idle(t0.elapsed());
                if stop {
                    break;
                }
            }
            cursor = None;
            scan_done = false;
            pass_started_ms = now_ms();
            continue;
        }
        let w = min_wait
            .unwrap_or(Duration::from_millis(5))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        if site_full {
            tokio::select! {
                _ = ctx.sites.freed() => {}
                _ = wait_for(&ctx, &mut requeue, &mut buf, w) => {}
            }
        } else {
            wait_for(&ctx, &mut requeue, &mut buf, w).await;
        }
    }
    Ok(())
}

/// Takes `domain`'s buffered recipients out of the round and stores them deferred until
/// `until_ms` (their attempts untouched: the site's suspension is not theirs). They are not
/// claimed, so nothing else writes them meanwhile.
async fn defer_held(
    ctx: &Arc<LaneCtx>,
    buf: &mut Buffer,
    qk: &QueueKey,
    until_ms: u64,
    why: &str,
) -> Result<()> {
    let domain = qk.0.as_str();
    let Some(q) = buf.queues.remove(qk) else {
        return Ok(());
    };
    buf.len -= q.len();
    let now = now_ms();
    let mut newly = 0i64;
    let recs: Vec<(String, Record)> = q
        .into_iter()
        .map(|mut j| {
            newly += i64::from(j.rec.state != State::Deferred);
            j.rec.state = State::Deferred;
            j.rec.retry_at_ms = until_ms;
            j.rec.updated_ms = now;
            j.rec.last_reply = format!("held: {why}");
            (j.key, j.rec)
        })
        .collect();
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || store.put_each(recs.iter().map(|(k, r)| (k.as_str(), r))))
        .await
        .map_err(|e| Error::Lane(format!("store task failed: {e}")))??;
    ctx.stats
        .deferred_now
        .fetch_add(newly as u64, Ordering::Relaxed);
    let left = Duration::from_millis(until_ms.saturating_sub(now));
    ctx.stats.live.apply(HashMap::from([(
        domain.to_string(),
        super::live::DomainDelta {
            deferred: newly,
            throttled: Some((Instant::now() + left, format!("held: {why}"))),
            ..Default::default()
        },
    )]));
    Ok(())
}

/// The site `domain` goes to, from one look at its DNS answer: its MX host set (direct
/// delivery), else the domain. `Err`: how long it must wait for DNS first — while its MX
/// lookup runs (in the background, so other domains go on), and while an NXDOMAIN waits for
/// its confirming lookup. Any other answer is dispatched (the worker acts on it).
fn site_or_dns_wait(
    ctx: &LaneCtx,
    domain: &str,
    now: Instant,
) -> std::result::Result<super::sites::Site, Duration> {
    let Some(mx) = ctx.connector.mx() else {
        return Ok(ctx.sites.site_of_domain(domain));
    };
    match mx.resolver.poll(domain) {
        None => Err(Duration::from_millis(2)),
        Some(crate::dns::Answer::NoSuchDomain {
            confirmed: false,
            retry_at,
            ..
        }) => Err(retry_at
            .saturating_duration_since(now)
            .max(Duration::from_millis(1))),
        Some(crate::dns::Answer::Hosts(set)) => {
            Ok(ctx.sites.site_of(domain, Arc::as_ptr(&set) as usize, || {
                set.hosts.iter().map(|h| h.name.clone()).collect()
            }))
        }
        Some(_) => Ok(ctx.sites.site_of_domain(domain)),
    }
}

/// Whether the fleet's shared limits can be used now. While Redis does not answer nothing
/// is claimed (every recipient stays pending: none can go over a shared limit) and the
/// display says so; past `wait_for_retries` the run ends as stalled (exit 75, resumable).
/// `Err`: a Redis blast refuses (it may evict keys).
async fn fleet_ready(ctx: &Arc<LaneCtx>, f: &crate::cluster::LaneFleet) -> Result<bool> {
    let ready = f
        .ready()
        .await
        .inspect_err(|e| ctx.set_fatal(e.to_string()))?;
    match f.cluster.down() {
        None if ready => Ok(true),
        None => Ok(false),
        Some((since, _)) => {
            if let Some(line) = f.cluster.waiting_line() {
                ctx.stats.live.relay_trouble(&line);
            }
            let down_for = Duration::from_millis(now_ms().saturating_sub(since));
            if down_for > ctx.settings.wait_for_retries {
                let since: chrono::DateTime<chrono::Local> =
                    (std::time::UNIX_EPOCH + Duration::from_millis(since)).into();
                ctx.set_stalled(format!(
                    "Redis ({}) unreachable since {} (longer than wait_for_retries = {:?}); \
                     every unsent recipient is still pending",
                    f.cluster.settings().redis,
                    since.format("%Y-%m-%d %H:%M:%S %z"),
                    ctx.settings.wait_for_retries,
                ));
                return Ok(false);
            }
            // Probe: any call that gets through clears the down mark.
            Ok(f.ready().await? && f.cluster.down().is_none() && probe(f).await)
        }
    }
}

async fn probe(f: &crate::cluster::LaneFleet) -> bool {
    f.cluster
        .call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
        .await
        .is_ok()
}

/// Waits for a global token of the fleet's bucket; false when the lane stops or Redis
/// stops answering first (the caller keeps its recipient).
async fn fleet_global(ctx: &Arc<LaneCtx>, f: &crate::cluster::LaneFleet) -> bool {
    // Bounded: each pass sleeps at least 1 ms and ends on a token, a stop or Redis down.
    loop {
        match f.try_global() {
            Ok(()) => return true,
            Err(w) => {
                if ctx.shutdown.stopping() || f.cluster.down().is_some() {
                    return false;
                }
                tokio::select! {
                    _ = tokio::time::sleep(w.clamp(Duration::from_millis(1), Duration::from_millis(20))) => {}
                    _ = ctx.shutdown.wait() => return false,
                }
            }
        }
    }
}

async fn wait_for(
    ctx: &LaneCtx,
    requeue: &mut mpsc::UnboundedReceiver<Job>,
    buf: &mut Buffer,
    d: Duration,
) {
    if let Ok(Some(j)) = tokio::time::timeout(d, requeue.recv()).await {
        buf.push(ctx, j);
    }
}

/// Hands a batch of claims to the claimer (which makes them durable, then releases them to
/// the workers). Counted as outstanding from here, so the lane never looks idle while a
/// batch is being committed.
async fn commit(
    ctx: &Arc<LaneCtx>,
    claims: &mpsc::Sender<Vec<Job>>,
    claimed: &mut Vec<Job>,
    outstanding: &AtomicUsize,
) -> Result<()> {
    if claimed.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(claimed);
    let n = batch.len();
    outstanding.fetch_add(n, Ordering::SeqCst);
    if claims.send(batch).await.is_err() {
        outstanding.fetch_sub(n, Ordering::SeqCst);
        ctx.set_fatal("claim committer stopped".into());
    }
    Ok(())
}

/// Where the claimer hands durable claims.
pub(crate) enum Handoff {
    /// A channel per pool IP (one without a pool), read by that IP's workers.
    Workers(Vec<mpsc::Sender<Job>>),
    /// Direct delivery's ready queues, per site.
    Ready(Arc<super::ready::Ready>),
}

/// The claimer: group commit of claims. While one fsync runs, the dispatcher keeps claiming;
/// everything that queued up meanwhile goes into the next single write + fsync. A recipient is
/// durably `in_flight` before any worker sees it (so before its MAIL FROM).
pub(crate) async fn claimer(
    ctx: Arc<LaneCtx>,
    mut rx: mpsc::Receiver<Vec<Job>>,
    jobs: Handoff,
    outstanding: Arc<AtomicUsize>,
) {
    let mut last_commit = Instant::now();
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        crate::store::pace_commit(last_commit).await;
        while batch.len() < 16 * CLAIM_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let now = now_ms();
        // Later than any write of these records so far (the import's, a previous result's):
        // a record written before it was in flight if the run dies now.
        let claim_ms = now + 1;
        for j in &mut batch {
            // Kept in memory, written with the result: the record itself is not rewritten
            // for the claim.
            if j.rec.first_attempt_ms == 0 {
                j.rec.first_attempt_ms = now;
            }
        }
        let store = ctx.store.clone();
        let joined = tokio::task::spawn_blocking(move || {
            // One marker for the group instead of a rewrite of each record: the recipients
            // are durably in flight once it is flushed (the flush is shared with the
            // writer's when both commit at once).
            let r = store
                .put_claim(claim_ms, batch.iter().map(|j| j.key.as_str()))
                .and_then(|id| store.flush().map(|_| id));
            (batch, r)
        })
        .await;
        let (batch, res) = match joined {
            Ok(v) => v,
            Err(e) => {
                ctx.set_fatal(format!("claim task failed: {e}"));
                continue;
            }
        };
        last_commit = Instant::now();
        let id = match res {
            Ok(id) => id,
            Err(e) => {
                // Not durable, so never sent: release the domain slots; the rows stay pending.
                for j in &batch {
                    if let Some(s) = &j.site {
                        ctx.sites.finished(s);
                        ctx.unqueue(s.ip);
                    }
                }
                outstanding.fetch_sub(batch.len(), Ordering::SeqCst);
                ctx.set_fatal(format!("cannot record claims: {e}"));
                continue;
            }
        };
        ctx.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, batch.len());
        for mut j in batch {
            j.claim = id;
            j.claim_ms = claim_ms;
            match &jobs {
                Handoff::Workers(txs) => {
                    // Each IP has its own workers; without a pool there is one channel.
                    let ip = j.site.as_ref().map_or(0, |s| s.ip).min(txs.len() - 1);
                    if txs[ip].send(j).await.is_err() {
                        // Workers are gone (fatal error); the claim stays `in_flight` for
                        // the next run's policy.
                        outstanding.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Handoff::Ready(r) => r.push(j).await,
            }
        }
    }
    if let Handoff::Ready(r) = &jobs {
        r.close();
    }
}
