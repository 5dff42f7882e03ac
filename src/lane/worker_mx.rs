//! Connection workers of direct delivery (`transport = "mx"`). Like [`super::worker`] (same
//! rendering, the same one transaction, pipelined), except that a session goes to one MX
//! host: a job rides on the session in hand only when its domain's MX set includes that
//! host; otherwise the session is parked in the lane's per-host pool and one to the job's
//! hosts is taken from it or opened. The DNS answer was looked up before dispatch; a domain
//! whose answer is final without a connection (null MX, confirmed NXDOMAIN, a temporary DNS
//! failure) is settled here without one. Every attempt goes to the accounting file.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::worker::{next_blocking, next_now, outcome, report, submit, Jobs, IDLE};
use super::{Done, Job, LaneCtx, Outcome};
use crate::classify::Class;
use crate::dns::MxSet;
use crate::transport::mx::{Mx, Route};
use crate::transport::smtp::SmtpError;
use crate::transport::{Broken, RcptOutcome, Session};

/// Idle sessions in the per-host pool are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(10);

fn fits(s: &Session<Job>, set: &MxSet) -> bool {
    s.peer().is_some_and(|p| set.contains(&p.host))
}

/// Runs one worker until the job channel closes.
pub(crate) async fn run(ctx: Arc<LaneCtx>, jobs: Jobs, done: mpsc::Sender<Done>) {
    let mx = ctx.connector.mx().expect("an mx lane").clone();
    let s = &ctx.settings;
    let mut session: Option<Session<Job>> = None;
    // A job taken while pipelining that belongs on another host: handled next.
    let mut carry: Option<Job> = None;
    // Messages the session in hand may carry: the lane's limit, or its site's provider's.
    let mut mpc = s.max_messages_per_connection;
    loop {
        let job = match carry.take() {
            Some(j) => j,
            None => match next_blocking(&jobs, IDLE).await {
                Err(()) => break,
                Ok(None) => {
                    park(&ctx, &mut session, mpc).await;
                    close_all(ctx.mx_pool.expired(POOL_IDLE)).await;
                    // Quiet now: what was buffered reaches the file.
                    if let Some(a) = &mx.accounting {
                        a.flush();
                    }
                    continue;
                }
                Ok(Some(j)) => j,
            },
        };
        if ctx.shutdown.stopping() {
            report(&ctx, &done, job, Outcome::Unclaimed).await;
            continue;
        }
        let set = match mx.route(job.rec.domain()) {
            Route::Hosts(set) => set,
            Route::Refuse { class, reply } => {
                mx.account(&job.rec.address, None, &reply);
                report(&ctx, &done, job, Outcome::Failed { class, reply }).await;
                continue;
            }
            // The answer expired or is unconfirmed since dispatch: the dispatcher holds it.
            Route::Wait(why) => {
                report(&ctx, &done, job, Outcome::Postponed(why)).await;
                continue;
            }
        };
        let job_mpc = job
            .site
            .as_ref()
            .map_or(s.max_messages_per_connection, |site| {
                ctx.sites
                    .messages_per_connection(site, s.max_messages_per_connection)
            });
        if !session.as_ref().is_some_and(|c| fits(c, &set)) {
            park(&ctx, &mut session, mpc).await;
            session = match ctx.mx_pool.take(&set) {
                Some(c) => Some(c),
                None => match ctx.mx_pool.open(&mx, &set).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        unreachable(&ctx, &mx, &done, job, &set, e).await;
                        continue;
                    }
                },
            };
        }
        mpc = job_mpc;
        let sess = session.as_mut().expect("connected");
        submit(&ctx, &done, sess, job).await;
        let mut throttled: Vec<String> = Vec::new();
        loop {
            if carry.is_none()
                && sess.pipelining()
                && sess.reusable(mpc, s.max_connection_age)
                && !sess.read_ahead().await
            {
                if let Some(next) = next_now(&jobs, &ctx) {
                    match mx.route(next.rec.domain()) {
                        Route::Hosts(other) if fits(sess, &other) => {
                            submit(&ctx, &done, sess, next).await
                        }
                        _ => carry = Some(next),
                    }
                }
            }
            let Some((job, mut res)) = sess.next_result().await else {
                break;
            };
            let o = res
                .pop()
                .unwrap_or_else(|| Broken::Lost("no result".into()).not_sent());
            mx.account(&job.rec.address, sess.peer(), o.text());
            if matches!(
                o,
                RcptOutcome::NotSent {
                    throttled: true,
                    ..
                }
            ) && !throttled.iter().any(|d| d == job.site_key())
            {
                // A host saying 421 slows down the sites it was carrying, never the whole
                // lane: other sites are other receivers. Once per site (each call doubles
                // the backoff), and before the job goes back to the dispatcher.
                ctx.sites.throttled(
                    job.site.as_ref().map_or(0, |s| s.ip),
                    job.site_key(),
                    s.backoff,
                );
                throttled.push(job.site_key().to_string());
            }
            report(&ctx, &done, job, outcome(&ctx, o)).await;
        }
        if !sess.reusable(mpc, s.max_connection_age) {
            if let Some(c) = session.take() {
                c.close().await;
            }
        }
    }
    if let Some(c) = session.take() {
        c.close().await;
    }
    close_all(ctx.mx_pool.expired(Duration::ZERO)).await;
    if let Some(a) = &mx.accounting {
        a.flush();
    }
}

/// Hands the session in hand to the pool (or closes it when it cannot carry more).
async fn park(ctx: &LaneCtx, session: &mut Option<Session<Job>>, mpc: u32) {
    let Some(c) = session.take() else { return };
    if c.reusable(mpc, ctx.settings.max_connection_age) {
        close_all(ctx.mx_pool.put(c, POOL_IDLE)).await;
    } else {
        c.close().await;
    }
}

async fn close_all(sessions: Vec<Session<Job>>) {
    for c in sessions {
        c.close().await;
    }
}

/// No host of the set took a session: the recipient is deferred (or, when every host said
/// 5xx in its greeting, refused as the last one said). The lane goes on with other domains.
async fn unreachable(
    ctx: &LaneCtx,
    mx: &Mx,
    done: &mpsc::Sender<Done>,
    job: Job,
    set: &MxSet,
    e: SmtpError,
) {
    let hosts: Vec<&str> = set.hosts.iter().map(|h| h.name.as_str()).collect();
    let (class, reply) = match &e {
        SmtpError::Refused { reply, .. } if reply.code >= 500 => (e.class(), reply.to_string()),
        _ if e.class() == Class::Throttling => (Class::Throttling, e.to_string()),
        _ => (
            Class::Transient,
            format!(
                "451 4.4.1 no MX host of {} ({}) took a connection: {e}",
                job.rec.domain(),
                hosts.join(", ")
            ),
        ),
    };
    mx.account(&job.rec.address, None, &reply);
    report(ctx, done, job, Outcome::Failed { class, reply }).await;
}
