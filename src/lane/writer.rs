//! The one writer of results: applies outcomes to records and commits them in groups (one
//! fsync per batch of up to 1,024 results or whatever arrived meanwhile), and only then counts
//! them in the progress stats — a reported 250 is a durable 250.
//!
//! A group's address-level bounces go on the global suppression list (durably, through its
//! one owner) before the group's results are committed: once a 5.1.1 is recorded, the
//! address is suppressed, whatever happens next. If the owner cannot be reached, the writer
//! waits (and with it the lane, through the bounded channels) instead of committing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::live::DomainDelta;
use super::warmup::Counted;
use super::{retry, Done, Job, LaneCtx, LaneReport, Outcome};
use crate::classify::Class;
use crate::error::{Error, Result};
use crate::store::now_ms;
use crate::store::record::{Record, State};
use crate::store::suppression::{Entry as SuppressionEntry, SoftHit};

/// While the suppression list's owner cannot be reached, try again this often.
const OWNER_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

const GROUP: usize = 8192;
/// Requeues after lost connections before a recipient counts as a transient failure.
const MAX_REQUEUES: u8 = 3;

/// Consumes outcomes until every worker is gone.
pub(crate) async fn run(
    ctx: Arc<LaneCtx>,
    mut rx: mpsc::Receiver<Done>,
    requeue: mpsc::UnboundedSender<Job>,
    outstanding: Arc<AtomicUsize>,
) -> Result<LaneReport> {
    let mut report = LaneReport::default();
    let mut group: Vec<Done> = Vec::with_capacity(GROUP);
    let mut last_commit = std::time::Instant::now();
    loop {
        group.clear();
        match rx.recv().await {
            Some(d) => group.push(d),
            None => break,
        }
        crate::store::pace_commit(last_commit).await;
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(d) => group.push(d),
                Err(_) => break,
            }
        }
        let group_len = group.len();
        let settled = settle_claims(&ctx, &group);
        let mut writes: Vec<(String, Record)> = Vec::with_capacity(group.len());
        let mut counted = [0u64; 5]; // sent, deferred, bounced, failed, skipped
        let mut requeued = Vec::new();
        let mut soft = SoftNotes::default();
        let mut suppress: Vec<(String, SuppressionEntry)> = Vec::new();
        let mut live: HashMap<String, DomainDelta> = HashMap::new();
        let mut deferred_delta: i64 = 0;
        let now = now_ms();
        for d in group.drain(..) {
            let Done { mut job, outcome } = d;
            let domain = job.rec.domain().to_string();
            // Shared, not copied: the site key is as long as its MX host list.
            let ip = job.site.as_ref().map_or(0, |s| s.ip);
            let site: Arc<str> = job
                .site
                .as_ref()
                .map_or_else(|| job.rec.domain().into(), |s| s.key.clone());
            // The state the store holds for it (pending or deferred): requeues keep it, so a
            // deferred recipient that gets a final result leaves the deferred gauge.
            let was_deferred = job.rec.state == State::Deferred;
            let rec = &mut job.rec;
            // Never earlier than its claim: a record written at or after the claim's time
            // carries that claim's result (what a rerun tells from "in flight").
            rec.updated_ms = now.max(job.claim_ms);
            match outcome {
                Outcome::Sent(reply) => {
                    count(&ctx, &job.site, Counted::Sent);
                    rec.state = State::Sent;
                    rec.attempts += 1;
                    rec.last_reply = reply;
                    rec.class = Some(Class::Success);
                    ctx.sites.healthy(ip, &site);
                    counted[0] += 1;
                }
                Outcome::Failed { class, reply } => {
                    let how = if class.is_permanent() || class == Class::Success {
                        Counted::Bounced
                    } else {
                        Counted::Deferred
                    };
                    count(&ctx, &job.site, how);
                    rec.attempts += 1;
                    rec.last_reply = reply.clone();
                    rec.class = Some(class);
                    match class {
                        Class::AddressPermanent => {
                            rec.state = State::Bounced;
                            suppress.push((
                                job.key.clone(),
                                SuppressionEntry::bounce(&ctx.spec.campaign, reply, now),
                            ));
                            counted[2] += 1;
                        }
                        Class::OtherPermanent | Class::Success => {
                            rec.state = State::Bounced;
                            let w = report
                                .warnings
                                .entry(domain.clone())
                                .or_insert((0, String::new()));
                            w.0 += 1;
                            w.1 = reply;
                            counted[2] += 1;
                        }
                        Class::Transient | Class::Throttling => {
                            let at = if class == Class::Throttling {
                                let until = ctx.sites.throttled(ip, &site, ctx.settings.backoff);
                                live.entry(domain.clone()).or_default().throttled =
                                    Some((until, reply.clone()));
                                let wait =
                                    until.saturating_duration_since(std::time::Instant::now());
                                // A throttled recipient still has to respect the retry budget.
                                let within = (rec.attempts as usize) <= ctx.settings.retry.len()
                                    && now.saturating_sub(rec.first_attempt_ms)
                                        <= ctx.settings.max_retry_age.as_millis() as u64;
                                within.then_some(now + wait.as_millis() as u64)
                            } else {
                                next_retry(&ctx, rec, now)
                            };
                            defer_or_fail(rec, at, &mut counted);
                        }
                    }
                }
                Outcome::Requeue(why) => {
                    if job.requeues < MAX_REQUEUES {
                        // Dispatched (and reserved) again.
                        count(&ctx, &job.site, Counted::Released);
                        // Sent again (never delivered, or the ambiguous lost-reply case,
                        // which is resent by design); its state stays the store's, pending
                        // or deferred. The record on disk was never rewritten
                        // for the claim, so once its claim marker goes it is what the next run
                        // sends; a re-claim puts it under a new marker before its next MAIL.
                        job.requeues += 1;
                        requeued.push(job);
                        continue;
                    }
                    count(&ctx, &job.site, Counted::Deferred);
                    rec.attempts += 1;
                    rec.last_reply = why;
                    let at = next_retry(&ctx, rec, now);
                    defer_or_fail(rec, at, &mut counted);
                }
                Outcome::Postponed(why) => {
                    count(&ctx, &job.site, Counted::Released);
                    // As a requeue, but without spending anything: the destination was the
                    // problem, not the recipient.
                    job.rec.last_reply = why;
                    requeued.push(job);
                    continue;
                }
                // Never started: the record on disk is still the one before the claim.
                Outcome::Unclaimed => {
                    count(&ctx, &job.site, Counted::Released);
                    continue;
                }
                Outcome::Skipped(why) => {
                    count(&ctx, &job.site, Counted::Released);
                    rec.state = State::Skipped;
                    rec.last_reply = why;
                    counted[4] += 1;
                }
            }
            let now_deferred = job.rec.state == State::Deferred;
            deferred_delta += i64::from(now_deferred) - i64::from(was_deferred);
            let e = live.entry(domain).or_default();
            e.deferred += i64::from(now_deferred) - i64::from(was_deferred);
            match job.rec.state {
                State::Sent => e.sent += 1,
                State::Bounced => e.bounced += 1,
                State::Failed => e.failed += 1,
                _ => {}
            }
            soft.note(&ctx, &job.key, &job.rec, now);
            writes.push((job.key, job.rec));
        }
        let n_done = group_len;
        report.suppressed += suppress_durably(&ctx, suppress).await;
        if !writes.is_empty() || !settled.is_empty() {
            let store = ctx.store.clone();
            let res = tokio::task::spawn_blocking(move || -> Result<()> {
                store.put_each(writes.iter().map(|(k, r)| (k.as_str(), r)))?;
                // After the results in the same flush: a marker outliving its results is
                // harmless (the records are final), the reverse would lose the in-flight mark.
                store.remove_claims(&settled)?;
                store.flush()
            })
            .await
            .map_err(|e| Error::Lane(format!("store writer panicked: {e}")))?;
            last_commit = std::time::Instant::now();
            if let Err(e) = res {
                // Disk full / read-only: stop the run; everything not committed is still
                // `in_flight` in the store and is handled by the in-flight policy next time.
                ctx.set_fatal(format!("cannot record results: {e}"));
                outstanding.fetch_sub(n_done, Ordering::SeqCst);
                continue;
            }
        }
        soft.apply(&ctx).await;
        if let Some(w) = &ctx.warmup {
            // Only the brake and `blast status` read these; the caps are already reserved.
            if let Err(e) = w.settle(false).await {
                eprintln!("blast: warning: cannot record warm-up outcomes: {e}");
            }
        }
        let s = &ctx.stats;
        s.sent.fetch_add(counted[0], Ordering::Relaxed);
        s.deferred.fetch_add(counted[1], Ordering::Relaxed);
        s.bounced.fetch_add(counted[2], Ordering::Relaxed);
        s.failed.fetch_add(counted[3], Ordering::Relaxed);
        s.skipped.fetch_add(counted[4], Ordering::Relaxed);
        s.requeued
            .fetch_add(requeued.len() as u64, Ordering::Relaxed);
        add_signed(&s.deferred_now, deferred_delta);
        s.live.apply(live);
        for j in requeued {
            // Back to the dispatcher before `outstanding` drops, so it never sees an empty
            // lane while a requeued job is in transit.
            let _ = requeue.send(j);
        }
        outstanding.fetch_sub(n_done, Ordering::SeqCst);
    }
    Ok(report)
}

/// `gauge += delta`, never below zero.
fn add_signed(gauge: &std::sync::atomic::AtomicU64, delta: i64) {
    let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_add_signed(delta))
    });
}

/// The retry time from the lane's schedule, or `None` when the budget is spent.
fn next_retry(ctx: &LaneCtx, rec: &Record, now: u64) -> Option<u64> {
    retry::next_retry_ms(
        &ctx.settings.retry,
        ctx.settings.max_retry_age,
        rec.attempts,
        rec.first_attempt_ms,
        now,
    )
}

/// Deferred until `at`, or failed when there is no retry left; counted either way.
/// A group's soft failures that can add up (full, inactive mailboxes that ran out of
/// retries or were refused permanently) and its successes to mailboxes with a count.
#[derive(Default)]
struct SoftNotes {
    hits: Vec<SoftHit>,
    resets: Vec<String>,
}

impl SoftNotes {
    fn note(&mut self, ctx: &LaneCtx, key: &str, rec: &Record, now: u64) {
        let tokens = ctx.spec.tokens.as_deref();
        match rec.state {
            State::Sent if !ctx.soft_keys.is_empty() => {
                let k = crate::token::mailbox_key(tokens, key);
                if ctx.soft_keys.contains(&k) {
                    self.resets.push(k);
                }
            }
            State::Failed | State::Bounced
                if !rec.is_address_bounce()
                    && crate::classify::reply_category(&rec.last_reply).counts_as_soft() =>
            {
                self.hits.push(SoftHit {
                    key: crate::token::mailbox_key(tokens, key),
                    campaign: ctx.spec.campaign.clone(),
                    at_ms: now,
                    detail: rec.last_reply.clone(),
                });
            }
            _ => {}
        }
    }

    /// Best effort, after the group is committed: a count that misses one campaign only
    /// delays a suppression, and a missed reset only makes one more campaign count.
    async fn apply(&mut self, ctx: &LaneCtx) {
        if self.hits.is_empty() && self.resets.is_empty() {
            return;
        }
        let (g, hits, resets) = (
            ctx.global.clone(),
            std::mem::take(&mut self.hits),
            std::mem::take(&mut self.resets),
        );
        let policy = ctx.soft_policy;
        let res = tokio::task::spawn_blocking(move || -> Result<u64> {
            g.soft_reset(&resets)?;
            g.soft_hits(&hits, policy)
        })
        .await;
        match res {
            Ok(Ok(n)) if n > 0 => eprintln!(
                "blast: {n} mailboxes suppressed: full or inactive on {} campaigns in a row",
                policy.campaigns
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("blast: warning: soft-bounce counts not updated: {e}"),
            Err(e) => eprintln!("blast: warning: soft-bounce counts not updated: {e}"),
        }
    }
}

fn defer_or_fail(rec: &mut Record, at: Option<u64>, counted: &mut [u64; 5]) {
    match at {
        Some(t) => {
            rec.state = State::Deferred;
            rec.retry_at_ms = t;
            counted[1] += 1;
        }
        None => {
            rec.state = State::Failed;
            counted[3] += 1;
        }
    }
}

/// Puts `entries` on the global suppression list and returns once they are durable (how
/// many were new). While that fails the lane waits; only a stop ends the wait, and then the
/// group is committed anyway: its records keep the class, and the next run's reconcile adds
/// them to the list (said on stderr).
async fn suppress_durably(ctx: &LaneCtx, entries: Vec<(String, SuppressionEntry)>) -> u64 {
    if entries.is_empty() {
        return 0;
    }
    let entries = Arc::new(entries);
    let mut said = false;
    loop {
        let (g, list) = (ctx.global.clone(), entries.clone());
        let res = tokio::task::spawn_blocking(move || g.suppress(&list, false)).await;
        let e = match res {
            Ok(Ok(n)) => {
                if said {
                    eprintln!("blast: suppression list reachable again; the lane continues");
                }
                return n;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("suppression task failed: {e}"),
        };
        if ctx.shutdown.stopping() {
            eprintln!(
                "blast: {} address-level bounces could not be added to the suppression list \
                 ({e}); they are recorded with the campaign and added when it is next run",
                entries.len()
            );
            return 0;
        }
        if !said {
            eprintln!(
                "blast: lane paused: cannot add {} bounced addresses to the suppression list \
                 in {}: {e}; retrying every {OWNER_RETRY:?}",
                entries.len(),
                ctx.global.dir().display()
            );
            said = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(OWNER_RETRY) => {}
            _ = ctx.shutdown.wait() => {}
        }
    }
}

/// Counts the group's results against their claim markers; returns the markers whose
/// recipients are all settled by this group (to drop once its results are written).
fn settle_claims(ctx: &LaneCtx, group: &[Done]) -> Vec<u64> {
    let mut claims = ctx.claims.lock().unwrap_or_else(|p| p.into_inner());
    let mut settled = Vec::new();
    for d in group {
        if let Some(n) = claims.get_mut(&d.job.claim) {
            *n -= 1;
            if *n == 0 {
                claims.remove(&d.job.claim);
                settled.push(d.job.claim);
            }
        }
    }
    settled
}

/// Counts an attempt against the warm-up, when the lane warms up.
fn count(ctx: &LaneCtx, site: &Option<super::sites::Site>, how: Counted) {
    if let Some(w) = &ctx.warmup {
        w.count(site.as_ref(), how);
    }
}
