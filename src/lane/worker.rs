//! Connection workers. Each owns at most one session (so `connections` workers = the total
//! connection cap), renders the messages it takes and submits them through the transport's
//! one transaction ([`crate::transport::Session`]). With PIPELINING the next waiting message
//! is submitted before the previous result is read, so its MAIL, RCPT and DATA ride in the
//! same write as the previous body: one round trip per message.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use super::{Done, Job, LaneCtx, Outcome};
use crate::classify::Class;
use crate::transport::smtp::SmtpError;
use crate::transport::{outbox, Broken, Connector, Envelope, RcptOutcome, Session};

pub(super) type Jobs = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Idle connections are closed after this long without work.
pub(super) const IDLE: Duration = Duration::from_secs(5);

pub(super) async fn next_blocking(jobs: &Jobs, idle: Duration) -> Result<Option<Job>, ()> {
    let mut rx = jobs.lock().await;
    match tokio::time::timeout(idle, rx.recv()).await {
        Ok(Some(j)) => Ok(Some(j)),
        Ok(None) => Err(()),
        Err(_) => Ok(None),
    }
}

/// The next waiting job, if one is waiting and no stop is asked.
pub(super) fn next_now(jobs: &Jobs, ctx: &LaneCtx) -> Option<Job> {
    if ctx.shutdown.stopping() {
        return None;
    }
    jobs.try_lock().ok()?.try_recv().ok()
}

pub(super) async fn report(ctx: &LaneCtx, done: &mpsc::Sender<Done>, job: Job, outcome: Outcome) {
    // The rules first: a hold must be in force before the site's slot is free again, or the
    // dispatcher could send the next recipient into the reply that asked it to stop.
    let outcome = response_rules(ctx, &job, outcome);
    if let Some(s) = &job.site {
        ctx.sites.finished(s);
        ctx.unqueue(s.ip);
    }
    watch_first_attempt(ctx, &job, &outcome);
    let _ = done.send(Done { job, outcome }).await;
}

/// Feeds the circuit breaker as each reply comes in, not when the writer commits it: the
/// writer's groups can hold hundreds of results, and a stale list must stop within a few
/// recipients of the breaker's sample, not a group later.
fn watch_first_attempt(ctx: &LaneCtx, job: &Job, outcome: &Outcome) {
    if job.rec.attempts != 0 {
        return;
    }
    let bad = match outcome {
        Outcome::Sent(_) => 0,
        Outcome::Failed { class, .. } => u64::from(*class == Class::AddressPermanent),
        _ => return,
    };
    let policy = ctx
        .settings
        .breaker
        .map(|(share, window)| super::breaker::Policy { share, window });
    if let Some(why) = ctx.breaker.record(policy, 1, bad) {
        // Like a stalled relay: stop dispatching, finish what is in flight, exit 75.
        ctx.set_stalled(why);
    }
}

/// Runs one worker until the job channel closes.
pub(crate) async fn run(ctx: Arc<LaneCtx>, jobs: Jobs, done: mpsc::Sender<Done>) {
    let mut session: Option<Session<Job>> = None;
    let mut failures: u32 = 0;
    let s = &ctx.settings;
    loop {
        let job = match next_blocking(&jobs, IDLE).await {
            Err(()) => break,
            Ok(None) => {
                if let Some(c) = session.take() {
                    c.close().await;
                }
                continue;
            }
            Ok(Some(j)) => j,
        };
        if ctx.shutdown.stopping() {
            report(&ctx, &done, job, Outcome::Unclaimed).await;
            continue;
        }
        if ctx.blocked().is_some() {
            // Claimed before the destination backed off: back to the dispatcher, which holds
            // it until the backoff ends. Nothing was attempted, nothing is spent.
            report(
                &ctx,
                &done,
                job,
                Outcome::Postponed("destination backing off".into()),
            )
            .await;
            continue;
        }
        if session.is_none() {
            match ctx.connector.open().await {
                Ok(c) => {
                    failures = 0;
                    ctx.connect_failures.store(0, Ordering::SeqCst);
                    ctx.health.connected();
                    session = Some(c);
                }
                Err(e) => {
                    failures += 1;
                    connect_failed(&ctx, &done, job, e, failures).await;
                    continue;
                }
            }
        }
        let sess = session.as_mut().expect("connected");
        submit(&ctx, &done, sess, job).await;
        drain(&ctx, &jobs, &done, sess, |_| {}).await;
        match sess.broken() {
            Some(Broken::Closing(r)) => {
                ctx.health.closing(s.backoff, r);
                ctx.stats.live.relay_trouble(r);
            }
            Some(Broken::Fatal(w)) => ctx.set_fatal(w.clone()),
            _ => {}
        }
        if !sess.reusable(s.max_messages_per_connection, s.max_connection_age) {
            if let Some(c) = session.take() {
                c.close().await;
            }
        }
    }
    if let Some(c) = session.take() {
        c.close().await;
    }
}

/// Takes every result of `sess` until nothing is in flight, pipelining the jobs that arrive
/// meanwhile, and reports each; `seen` sees every outcome first (a pool counts its relay's
/// deliveries and losses with it).
pub(super) async fn drain(
    ctx: &Arc<LaneCtx>,
    jobs: &Jobs,
    done: &mpsc::Sender<Done>,
    sess: &mut Session<Job>,
    mut seen: impl FnMut(&RcptOutcome),
) {
    let s = &ctx.settings;
    loop {
        if sess.pipelining() && sess.reusable(s.max_messages_per_connection, s.max_connection_age) {
            // Read what has arrived first (the previous final reply and this envelope's
            // replies come in one packet); only then look for the next job, whose commands
            // can then ride with this body — a round trip later than looking right away,
            // so the dispatcher has had that long to hand one over.
            if !sess.read_ahead().await {
                if let Some(next) = next_now(jobs, ctx) {
                    submit(ctx, done, sess, next).await;
                }
            }
        }
        let Some((job, mut res)) = sess.next_result().await else {
            break;
        };
        let o = res
            .pop()
            .unwrap_or_else(|| Broken::Lost("no result".into()).not_sent());
        seen(&o);
        report(ctx, done, job, outcome(ctx, o)).await;
    }
}

/// Renders (and signs) `job`'s message and submits it; a render error skips the recipient.
/// With DKIM the build runs on the lane's CPU pool: an RSA signature takes the best part of a
/// millisecond, which on the reactor would stall every other connection's replies.
pub(super) async fn submit(
    ctx: &Arc<LaneCtx>,
    done: &mpsc::Sender<Done>,
    sess: &mut Session<Job>,
    job: Job,
) {
    let built = match &ctx.pool {
        Some(pool) => {
            let (c, key, rec) = (ctx.clone(), job.key.clone(), job.rec.clone());
            pool.run(move || c.spec.build(&key, &rec))
                .await
                .and_then(|r| r)
        }
        None => ctx.spec.build(&job.key, &job.rec),
    };
    let built = match built {
        Ok(b) => b,
        Err(e) => return report(ctx, done, job, Outcome::Skipped(e)).await,
    };
    let env = Envelope {
        mail_from: built.mail_from,
        rcpts: vec![job.rec.address.clone()],
        eight_bit: false,
        smtputf8: false,
        envid: Some(built.envid),
        // Only the outbox names its files; SMTP needs no label.
        label: match ctx.connector {
            Connector::Outbox(_) => outbox::file_name(&ctx.spec.campaign, &job.key),
            _ => String::new(),
        },
    };
    sess.submit(job, &env, built.msg).await;
}

/// What the lane does with a recipient's transport outcome.
pub(super) fn outcome(ctx: &LaneCtx, o: RcptOutcome) -> Outcome {
    match o {
        RcptOutcome::Delivered(r) => {
            ctx.health.delivered();
            Outcome::Sent(r)
        }
        RcptOutcome::Refused { class, reply } => Outcome::Failed { class, reply },
        // A 421: the destination is busy, not the recipient — no retry is spent.
        RcptOutcome::NotSent {
            why,
            throttled: true,
        } => Outcome::Postponed(why),
        RcptOutcome::NotSent { why, .. } => Outcome::Requeue(why),
        RcptOutcome::Unknown(why) => {
            // The final dot went out and the reply was lost: sent again, so maybe twice.
            ctx.stats.ambiguous_resends.fetch_add(1, Ordering::Relaxed);
            Outcome::Requeue(why)
        }
    }
}

async fn connect_failed(
    ctx: &LaneCtx,
    done: &mpsc::Sender<Done>,
    job: Job,
    e: SmtpError,
    failures: u32,
) {
    let what = format!("{}: {e}", ctx.connector.describe());
    if e.is_fatal() {
        ctx.set_fatal(format!("lane cannot use {what}"));
        report(ctx, done, job, Outcome::Unclaimed).await;
        return;
    }
    // Never delivered anything and the relay keeps refusing: a config problem, not a blip.
    // A 421 greeting is the relay saying "later", not a wrong address: it is backed off like
    // any 421, and a relay that keeps saying it ends the run as stalled (exit 75).
    let throttled = e.class() == Class::Throttling;
    let nothing_sent = ctx.stats.sent.load(Ordering::Relaxed) == 0;
    let all = ctx.connect_failures.fetch_add(1, Ordering::SeqCst) + 1;
    if nothing_sent && !throttled && (failures >= 3 || all >= 8) {
        ctx.set_fatal(format!("cannot connect to {what}"));
        report(ctx, done, job, Outcome::Unclaimed).await;
        return;
    }
    if throttled {
        ctx.health.closing(ctx.settings.backoff, &what);
        ctx.stats.live.relay_trouble(&what);
    } else {
        ctx.health.connect_failed(&what);
        ctx.stats.live.relay_trouble(&what);
    }
    // The recipient did nothing wrong: back to pending, no retry spent. The dispatcher holds
    // it while the destination is backed off, and the run ends (exit 75) if the relay stays
    // unreachable for longer than `wait_for_retries`.
    report(
        ctx,
        done,
        job,
        Outcome::Postponed(format!("connection failed: {what}")),
    )
    .await;
}

/// Runs the lane's response rules over a failed reply: a hold on the job's site (made durable
/// through the global state's owner in the background: the hold in memory already binds this
/// run), or a changed outcome (`bounce`).
fn response_rules(ctx: &LaneCtx, job: &Job, outcome: Outcome) -> Outcome {
    // A 421 comes back as `Postponed` (no retry spent), a lost session as `Requeue`: their
    // text is the reply the rules read all the same.
    let (class, reply) = match &outcome {
        Outcome::Failed { class, reply } => (*class, reply.as_str()),
        Outcome::Postponed(why) => (Class::Throttling, why.as_str()),
        Outcome::Requeue(why) => (Class::Transient, why.as_str()),
        _ => return outcome,
    };
    let Some(site) = &job.site else {
        return outcome;
    };
    let Some(e) = ctx
        .sites
        .apply_rules(site, class, reply, &ctx.spec.campaign)
    else {
        return outcome;
    };
    if let Some(h) = e.hold {
        super::sites::publish_holds(ctx);
        let g = ctx.global.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(err) = g.put_hold(&h) {
                eprintln!(
                    "blast: warning: cannot record the hold on {}: {err}",
                    h.site
                );
            }
        });
    }
    match outcome {
        // A suspended site's recipient goes back to the dispatcher, which defers it to the
        // suspension's end.
        Outcome::Postponed(_) | Outcome::Requeue(_) if e.class != Class::OtherPermanent => {
            Outcome::Postponed(e.reply)
        }
        _ => Outcome::Failed {
            class: e.class,
            reply: e.reply,
        },
    }
}
