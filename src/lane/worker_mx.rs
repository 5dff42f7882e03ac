//! Connection workers of direct delivery (`transport = "mx"`). Like [`super::worker`] (same
//! rendering, the same one transaction, pipelined), except that a worker serves one *site*
//! at a time from the lane's ready queues ([`super::ready`]): it takes a session to the
//! site's MX hosts (an idle one from the lane's per-host pool, or a new one) and carries the
//! site's waiting recipients on it one after another, pipelined, then lets the site go. The
//! DNS answer was looked up before dispatch; a domain whose answer is final without a
//! connection (null MX, confirmed NXDOMAIN, a temporary DNS failure) is settled here without
//! one. Every attempt goes to the accounting file.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ready::{Ready, SiteId, Take, QUANTUM};
use super::worker::{outcome, report, submit, IDLE};
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

/// A worker's session while it serves one site, and the messages it may carry (the lane's
/// limit, or its site's provider's).
struct Conn {
    session: Option<Session<Job>>,
    mpc: u32,
}

/// Runs one worker until the ready queues close and are empty.
pub(crate) async fn run(ctx: Arc<LaneCtx>, ready: Arc<Ready>, done: mpsc::Sender<Done>) {
    let mx = ctx.connector.mx().expect("an mx lane").clone();
    loop {
        match ready.take(IDLE).await {
            Take::Closed => break,
            Take::Idle => {
                close_all(ctx.mx_pool.expired(POOL_IDLE)).await;
                // Quiet now: what was buffered reaches the file.
                if let Some(a) = &mx.accounting {
                    a.flush();
                }
            }
            Take::Site(id, job) => {
                let mut conn = Conn {
                    session: None,
                    mpc: ctx.settings.max_messages_per_connection,
                };
                serve(&ctx, &mx, &ready, &done, &id, *job, &mut conn).await;
                // Parked before the site is free again: the next worker to serve it takes
                // this session rather than opening one more (receivers count the idle ones
                // too, so a site's open sessions stay within its cap).
                park(&ctx, &mut conn).await;
                ready.leave(&id);
            }
        }
    }
    close_all(ctx.mx_pool.expired(Duration::ZERO)).await;
    if let Some(a) = &mx.accounting {
        a.flush();
    }
}

/// Carries site `id`'s recipients, starting with `first`, until its queue is empty, it must
/// back off, or (after a quantum) another site waits for a worker.
async fn serve(
    ctx: &Arc<LaneCtx>,
    mx: &Mx,
    ready: &Ready,
    done: &mpsc::Sender<Done>,
    id: &SiteId,
    first: Job,
    conn: &mut Conn,
) {
    let s = &ctx.settings;
    let mut served = 0usize;
    // Take more of the site's recipients only while the lane goes on and the site may be
    // sent to (a 421 on a sibling session, a rule's hold, a stop or the breaker end it), and
    // yield the worker once a quantum is carried and another site waits.
    let site = first.site.clone();
    let more = |served: usize| {
        !ctx.shutdown.stopping()
            && site
                .as_ref()
                .is_none_or(|st| ctx.sites.held_back(st).is_none())
            && (served < QUANTUM || !ready.others_waiting())
    };
    let mut next = Some(first);
    while let Some(job) = next.take() {
        if ctx.shutdown.stopping() {
            return settle_all(ctx, done, ready, id, job, || Outcome::Unclaimed).await;
        }
        if let Some(why) = job.site.as_ref().and_then(|site| ctx.sites.held_back(site)) {
            // The site said 421 (or a rule suspended it) after these were dispatched: back to
            // the dispatcher, which holds them until it may go again. Nothing is spent.
            return settle_all(ctx, done, ready, id, job, || {
                Outcome::Postponed(why.clone())
            })
            .await;
        }
        let set = match mx.route(job.rec.domain()) {
            Route::Hosts(set) => set,
            Route::Refuse { class, reply } => {
                mx.account(&job.rec.address, None, &reply);
                report(ctx, done, job, Outcome::Failed { class, reply }).await;
                next = ready.next(id);
                continue;
            }
            // The answer expired or is unconfirmed since dispatch: the dispatcher holds it.
            Route::Wait(why) => {
                report(ctx, done, job, Outcome::Postponed(why)).await;
                next = ready.next(id);
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
        if !conn.session.as_ref().is_some_and(|c| fits(c, &set)) {
            park(ctx, conn).await;
            conn.session = match ctx.mx_pool.take(&set) {
                Some(c) => Some(c),
                None => match ctx.mx_pool.open(mx, &set).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        return connect_failed(ctx, mx, ready, done, id, job, &set, e).await;
                    }
                },
            };
        }
        conn.mpc = job_mpc;
        let sess = conn.session.as_mut().expect("connected");
        submit(ctx, done, sess, job).await;
        served += 1;
        let mut carry: Option<Job> = None;
        let mut throttled = false;
        loop {
            if carry.is_none()
                && !throttled
                && more(served)
                && sess.pipelining()
                && sess.reusable(conn.mpc, s.max_connection_age)
                && !sess.read_ahead().await
            {
                if let Some(n) = ready.next(id) {
                    match mx.route(n.rec.domain()) {
                        Route::Hosts(other) if fits(sess, &other) => {
                            submit(ctx, done, sess, n).await;
                            served += 1;
                        }
                        _ => carry = Some(n),
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
            ) && !throttled
            {
                // A host saying 421 slows down the site it was carrying, never the whole
                // lane: other sites are other receivers. Once (each call doubles the
                // backoff), and before the job goes back to the dispatcher.
                ctx.sites.throttled(id.0, job.site_key(), s.backoff);
                throttled = true;
            }
            report(ctx, done, job, outcome(ctx, o)).await;
        }
        if !sess.reusable(conn.mpc, s.max_connection_age) {
            if let Some(c) = conn.session.take() {
                c.close().await;
            }
        }
        next = carry.or_else(|| more(served).then(|| ready.next(id)).flatten());
    }
}

/// No host of site `id` took a session for `job`. A 421 greeting backs the site off once and
/// sends what waits for it back unsent (no attempt spent). Any other failure is the same for
/// everything waiting, which is then not tried one connection each — unless another worker
/// holds a session to the site, which shows the host takes connections.
#[allow(clippy::too_many_arguments)]
async fn connect_failed(
    ctx: &Arc<LaneCtx>,
    mx: &Mx,
    ready: &Ready,
    done: &mpsc::Sender<Done>,
    id: &SiteId,
    job: Job,
    set: &MxSet,
    e: SmtpError,
) {
    let (class, reply) = unreachable(&job, set, &e);
    mx.account(&job.rec.address, None, &reply);
    if class == Class::Throttling {
        ctx.sites
            .throttled(id.0, job.site_key(), ctx.settings.backoff);
        let why = format!("{} backing off: {reply}", id.1);
        report(ctx, done, job, Outcome::Postponed(reply)).await;
        for j in ready.drain(id) {
            report(ctx, done, j, Outcome::Postponed(why.clone())).await;
        }
        return;
    }
    report(ctx, done, job, Outcome::Failed { class, reply }).await;
    if ready.sessions(id) > 1 {
        return;
    }
    for j in ready.drain(id) {
        let (class, reply) = unreachable(&j, set, &e);
        mx.account(&j.rec.address, None, &reply);
        report(ctx, done, j, Outcome::Failed { class, reply }).await;
    }
}

/// Reports `job` and everything still waiting for site `id` with the same outcome.
async fn settle_all(
    ctx: &Arc<LaneCtx>,
    done: &mpsc::Sender<Done>,
    ready: &Ready,
    id: &SiteId,
    job: Job,
    outcome: impl Fn() -> Outcome,
) {
    report(ctx, done, job, outcome()).await;
    for j in ready.drain(id) {
        report(ctx, done, j, outcome()).await;
    }
}

/// Hands the session in hand to the pool (or closes it when it cannot carry more).
async fn park(ctx: &LaneCtx, conn: &mut Conn) {
    let Some(c) = conn.session.take() else { return };
    if c.reusable(conn.mpc, ctx.settings.max_connection_age) {
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

/// What a recipient gets when no host of its site's set took a session: deferred (or, when
/// every host said 5xx in its greeting, refused as the last one said).
fn unreachable(job: &Job, set: &MxSet, e: &SmtpError) -> (Class, String) {
    let hosts: Vec<&str> = set.hosts.iter().map(|h| h.name.as_str()).collect();
    match e {
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
    }
}
