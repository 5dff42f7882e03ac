//! Connection workers of a pool lane (`source_ips` and/or `relays`). Like [`super::worker`]
//! (same rendering, the same pipelined transaction), except that each worker belongs to one
//! source IP of the pool — its jobs are the recipients that IP's hash gives it — and each
//! session it opens goes to a relay the pool chooses ([`super::pool::Pool::choose_relay`]).
//! A relay that fails is taken out of the pool and the job goes back to the dispatcher
//! without spending an attempt; the next session goes to another relay.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::pool::Failure;
use super::worker::{drain, next_blocking, report, submit, Jobs, IDLE};
use super::{Done, Job, LaneCtx, Outcome};
use crate::classify::Class;
use crate::transport::smtp::{Connection, SmtpError};
use crate::transport::{Broken, Peer, RcptOutcome, Session};

/// Runs one worker of pool IP `ip` until its job channel closes.
pub(crate) async fn run(ctx: Arc<LaneCtx>, ip: usize, jobs: Jobs, done: mpsc::Sender<Done>) {
    let pool = ctx.pools.as_ref().expect("a pool lane");
    let s = &ctx.settings;
    // The session in hand and the relay it goes to.
    let mut session: Option<(Session<Job>, usize)> = None;
    loop {
        let job = match next_blocking(&jobs, IDLE).await {
            Err(()) => break,
            Ok(None) => {
                close(pool, &mut session).await;
                continue;
            }
            Ok(Some(j)) => j,
        };
        if ctx.shutdown.stopping() {
            report(&ctx, &done, job, Outcome::Unclaimed).await;
            continue;
        }
        if session.is_none() {
            let relay = match pool.choose_relay() {
                Ok(r) => r,
                Err(_) => {
                    // Every relay went out since this job was dispatched: the dispatcher
                    // holds it until one is back. Nothing attempted, nothing spent.
                    let why = "every relay of the pool is out; waiting for one to come back";
                    report(&ctx, &done, job, Outcome::Postponed(why.into())).await;
                    continue;
                }
            };
            match open(pool, ip, relay).await {
                Ok(c) => {
                    pool.opened(relay);
                    ctx.health.connected();
                    session = Some((c, relay));
                }
                Err(e) => {
                    pool.closed(relay);
                    connect_failed(&ctx, ip, relay, &done, job, e).await;
                    continue;
                }
            }
        }
        let (sess, relay) = session.as_mut().expect("connected");
        let relay = *relay;
        submit(&ctx, &done, sess, job).await;
        // Something went out and did not come back with a reply: the relay is in trouble.
        let mut lost = false;
        // A 421 from a relay comes back `Postponed`: no attempt spent, and no hold on the
        // recipient's site (the relay said it, not the receiver); another relay takes it.
        drain(&ctx, &jobs, &done, sess, |o| match o {
            RcptOutcome::Delivered(_) => pool.delivered(relay),
            RcptOutcome::NotSent { .. } | RcptOutcome::Unknown(_) => lost = true,
            RcptOutcome::Refused { .. } => {}
        })
        .await;
        let broken = sess.broken().cloned();
        match broken {
            Some(Broken::Closing(r)) => {
                let line = pool.relay_failed(relay, Failure::Throttled, &r);
                ctx.stats.live.relay_trouble(&line);
                lane_waits(&ctx, &line);
            }
            Some(Broken::Lost(w)) if lost => {
                let line =
                    pool.relay_failed(relay, Failure::Down, &format!("connection lost: {w}"));
                ctx.stats.live.relay_trouble(&line);
                lane_waits(&ctx, &line);
            }
            Some(Broken::Fatal(w)) => ctx.set_fatal(w),
            _ => {}
        }
        if !sess.reusable(s.max_messages_per_connection, s.max_connection_age) {
            close(pool, &mut session).await;
        }
    }
    close(pool, &mut session).await;
}

async fn close(pool: &super::pool::Pool, session: &mut Option<(Session<Job>, usize)>) {
    if let Some((c, relay)) = session.take() {
        c.close().await;
        pool.closed(relay);
    }
}

async fn open(
    pool: &super::pool::Pool,
    ip: usize,
    relay: usize,
) -> Result<Session<Job>, SmtpError> {
    let ep = pool.endpoint(ip, relay);
    let conn = Connection::open(&ep).await?;
    let peer = Peer {
        host: Arc::from(ep.host.as_str()),
        addr: conn.peer(),
        local: conn.local().map(|a| a.ip()),
        tls: conn.tls,
    };
    Ok(Session::smtp(conn, ep.timeouts, Some(peer)))
}

/// When the pool has no relay left in, the lane's own clock starts, so a pool that stays
/// out ends the run (exit 75) after `wait_for_retries` instead of waiting for ever.
fn lane_waits(ctx: &LaneCtx, line: &str) {
    if let Some(p) = &ctx.pools {
        if p.all_out().is_some() {
            ctx.health
                .connect_failed(&format!("every relay of the pool is out; last: {line}"));
        }
    }
}

async fn connect_failed(
    ctx: &LaneCtx,
    ip: usize,
    relay: usize,
    done: &mpsc::Sender<Done>,
    job: Job,
    e: SmtpError,
) {
    let pool = ctx.pools.as_ref().expect("a pool lane");
    if matches!(&e, SmtpError::Io(io) if io.kind() == std::io::ErrorKind::AddrNotAvailable) {
        // Our side: this IP cannot be used here. The relay did nothing wrong.
        pool.ip_unavailable(ip, &e);
        let why = format!("source IP {} not available here: {e}", pool.ips[ip].name);
        ctx.stats.live.relay_trouble(&why);
        // The lane's trouble clock: once the other IPs have nothing left to deliver, a run
        // whose IP never comes back ends (exit 75) after `wait_for_retries`, its recipients
        // still pending, instead of waiting for ever.
        ctx.health.connect_failed(&why);
        report(ctx, done, job, Outcome::Postponed(why)).await;
        return;
    }
    let how = if e.is_fatal() {
        Failure::Refusing
    } else if e.class() == Class::Throttling {
        Failure::Throttled
    } else {
        Failure::Down
    };
    let line = pool.relay_failed(relay, how, &e.to_string());
    ctx.stats.live.relay_trouble(&line);
    lane_waits(ctx, &line);
    if ctx.stats.sent.load(Ordering::Relaxed) == 0 {
        if let Some(why) = pool.hopeless() {
            ctx.set_fatal(format!("cannot use any relay of the pool: {why}"));
            report(ctx, done, job, Outcome::Unclaimed).await;
            return;
        }
    }
    report(
        ctx,
        done,
        job,
        Outcome::Postponed(format!("connection failed: {line}")),
    )
    .await;
}
