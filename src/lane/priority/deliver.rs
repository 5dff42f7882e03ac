//! Priority lane workers. Each owns at most one connection to the lane's relay (its own
//! source IP, never the blast lane's pool) and delivers one queued message at a time, all
//! of its recipients in one transaction, pipelined when the relay offers PIPELINING.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use super::sched::Dispatch;
use super::{Cmd, Log, Stats};
use crate::classify::Class;
use crate::config::LaneSettings;
use crate::lane::retry::next_retry_ms;
use crate::pool::CpuPool;
use crate::shutdown::Shutdown;
use crate::sign::{Signed, Signers};
use crate::store::now_ms;
use crate::store::queue::{format_id, Entry, NewMessage, QueueStore, RcptStatus};
use crate::transport::smtp::SmtpError;
use crate::transport::{Broken, Connector, Envelope, RcptOutcome, Session};

/// An idle worker closes its connection after this long (relays drop idle sessions anyway).
pub(super) const IDLE: Duration = Duration::from_secs(30);

/// What every worker shares.
pub struct Ctx {
    /// Lane settings.
    pub settings: Arc<LaneSettings>,
    /// The queue (read side; writes go through the writer).
    pub store: Arc<QueueStore>,
    /// The queue writer.
    pub writer: mpsc::Sender<Cmd>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Reporting MTA name for DSNs.
    pub hostname: String,
    /// Where failures are reported.
    pub log: Log,
    /// Workers waiting for a job (the scheduler reads it).
    pub idle: Arc<AtomicU64>,
    /// Stop request.
    pub stop: Arc<Shutdown>,
    /// DKIM keys by From domain (`[priority.dkim."domain"]`).
    pub signers: Arc<Signers>,
    /// Where signing runs (`None` when no key is configured).
    pub pool: Option<Arc<CpuPool>>,
    /// From domains already warned about (no key): one log line each, not one per message.
    pub unsigned_warned: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Where sessions go (one for all workers: direct delivery shares its resolver, cache
    /// and accounting file).
    pub connector: Connector,
    /// Direct delivery: idle sessions per MX host, under the `connections` cap.
    pub mx_pool: crate::transport::mx::Pool<()>,
}

impl Ctx {
    /// `data` with a DKIM signature of its From domain in front; `None` to send it as
    /// submitted (already signed for that domain, or no key: then a warning, once per
    /// domain).
    async fn signed(&self, id: u64, data: &[u8]) -> Option<Vec<u8>> {
        let pool = self.pool.as_ref()?;
        let signers = self.signers.clone();
        let copy: Arc<[u8]> = Arc::from(data);
        let res = pool.run(move || signers.sign(&copy)).await.and_then(|r| r);
        match res {
            Ok(Signed::Yes(mut out)) => {
                out.extend_from_slice(data);
                Some(out)
            }
            Ok(Signed::AlreadySigned) => None,
            Ok(Signed::NoKey(domain)) => {
                let d = domain.unwrap_or_else(|| "(no From)".into());
                let first = self
                    .unsigned_warned
                    .lock()
                    .map(|mut w| w.len() < 10_000 && w.insert(d.clone()))
                    .unwrap_or(false);
                if first {
                    (self.log)(format!(
                        "priority: warning: no DKIM key for From domain {d}; its mail goes out unsigned (add [priority.dkim.\"{d}\"] to blast.toml)"
                    ));
                }
                None
            }
            Err(e) => {
                (self.log)(format!(
                    "priority: message {}: DKIM signing failed ({e}); sent unsigned",
                    format_id(id)
                ));
                None
            }
        }
    }
}

/// A recipient's outcome, as the priority lane treats it: delivered, try again, or final.
fn is_temp(o: &RcptOutcome) -> bool {
    match o {
        RcptOutcome::Delivered(_) => false,
        RcptOutcome::Refused { class, .. } => class.is_transient(),
        RcptOutcome::NotSent { .. } | RcptOutcome::Unknown(_) => true,
    }
}

/// Runs one worker until the lane stops.
pub async fn run(ctx: Arc<Ctx>, jobs: Arc<Mutex<mpsc::UnboundedReceiver<Dispatch>>>) {
    let connector = ctx.connector.clone();
    let mut pooled: Option<Session<()>> = None;
    loop {
        ctx.idle.fetch_add(1, Ordering::SeqCst);
        let next = tokio::select! {
            n = tokio::time::timeout(IDLE, async { jobs.lock().await.recv().await }) => n,
            _ = ctx.stop.wait() => Ok(None),
        };
        ctx.idle.fetch_sub(1, Ordering::SeqCst);
        let d = match next {
            Err(_) => {
                if let Some(p) = pooled.take() {
                    p.close().await;
                }
                for p in ctx.mx_pool.expired(IDLE) {
                    p.close().await;
                }
                continue;
            }
            Ok(None) => break,
            Ok(Some(d)) => d,
        };
        ctx.stats
            .max_pickup_us
            .fetch_max(d.at.elapsed().as_micros() as u64, Ordering::Relaxed);
        let (mut entry, data) = match (ctx.store.get(d.id), ctx.store.data(d.id)) {
            (Ok(Some(e)), Ok(Some(data))) => (e, data),
            (Ok(None), _) => continue, // dropped meanwhile
            (e, data) => {
                // Unreadable (I/O error, or the bytes are missing): never leave it "out with
                // a worker" for good; the writer schedules it again.
                (ctx.log)(format!(
                    "priority: cannot read message {}: {:?} / {:?}",
                    format_id(d.id),
                    e.err().map(|x| x.to_string()),
                    data.err().map(|x| x.to_string())
                ));
                if ctx.writer.send(Cmd::RetryLater(d.id)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        // Every recipient still open goes in this transaction, even one deferred until later
        // than the message's earliest due time: they share the relay, and a forced retry
        // (restart, `blast queue retry`) means all of them.
        let todo: Vec<usize> = (0..entry.rcpts.len())
            .filter(|&i| !entry.rcpts[i].status.is_final())
            .collect();
        let env = Envelope {
            mail_from: entry.mail_from.clone(),
            rcpts: todo.iter().map(|&i| entry.rcpts[i].addr.clone()).collect(),
            eight_bit: entry.eight_bit,
            smtputf8: entry.smtputf8,
            label: format!("priority-{}.eml", format_id(entry.id)),
            // The submitter's mail: its DSN requests are its own business.
            envid: None,
        };
        let signed = ctx.signed(entry.id, &data).await;
        let wire = signed.as_deref().unwrap_or(&data);
        let results = match connector.mx() {
            Some(mx) => super::direct::attempt(&ctx, mx, &env, wire).await,
            None => attempt(&ctx, &connector, &mut pooled, &env, wire).await,
        };
        let dsns = apply(&ctx, &mut entry, &todo, results, &data);
        if ctx.writer.send(Cmd::Update { entry, dsns }).await.is_err() {
            break;
        }
    }
    if let Some(p) = pooled.take() {
        p.close().await;
    }
    for p in ctx.mx_pool.expired(Duration::ZERO) {
        p.close().await;
    }
}

/// Records the results in the entry; returns the DSNs to send for recipients that became
/// bounced or failed.
fn apply(
    ctx: &Ctx,
    entry: &mut Entry,
    todo: &[usize],
    results: Vec<RcptOutcome>,
    data: &[u8],
) -> Vec<NewMessage> {
    let now = now_ms();
    let s = &ctx.settings;
    let mut failed = Vec::new();
    for (&i, res) in todo.iter().zip(results) {
        let r = &mut entry.rcpts[i];
        r.attempts += 1;
        r.last_reply = res.text().to_string();
        if matches!(res, RcptOutcome::Delivered(_)) {
            r.status = RcptStatus::Sent;
            Stats::add(&ctx.stats.delivered, 1);
        } else if is_temp(&res) {
            let attempts = r.attempts.min(u16::MAX as u32) as u16;
            match next_retry_ms(&s.retry, s.max_retry_age, attempts, entry.received_ms, now) {
                Some(t) => {
                    r.status = RcptStatus::Deferred;
                    r.next_ms = t;
                    Stats::add(&ctx.stats.deferred, 1);
                }
                None => {
                    r.status = RcptStatus::Failed;
                    failed.push(i);
                }
            }
        } else {
            r.status = RcptStatus::Bounced;
            failed.push(i);
        }
    }
    if failed.is_empty() {
        return Vec::new();
    }
    Stats::add(&ctx.stats.bounced, failed.len() as u64);
    for &i in &failed {
        let r = &entry.rcpts[i];
        (ctx.log)(format!(
            "priority: message {} to <{}> undeliverable: {}",
            format_id(entry.id),
            r.addr,
            r.last_reply
        ));
    }
    if entry.mail_from.is_empty() {
        // Never bounce a bounce (RFC 5321 §6.1): the failure is only logged.
        (ctx.log)(format!(
            "priority: message {} has the null sender; no DSN sent",
            format_id(entry.id)
        ));
        return Vec::new();
    }
    vec![crate::lane::priority::dsn::build(
        &ctx.hostname,
        entry,
        &failed,
        data,
    )]
}

/// One transaction for `env` on the pooled session (opened, or reopened under the pool's
/// limits, as needed). A pooled session the relay closed while idle is retried once on a new
/// connection.
async fn attempt(
    ctx: &Ctx,
    connector: &Connector,
    pooled: &mut Option<Session<()>>,
    env: &Envelope,
    data: &[u8],
) -> Vec<RcptOutcome> {
    let s = &ctx.settings;
    let n = env.rcpts.len();
    for round in 0..2 {
        if !pooled
            .as_ref()
            .is_some_and(|p| p.reusable(s.max_messages_per_connection, s.max_connection_age))
        {
            if let Some(p) = pooled.take() {
                p.close().await;
            }
            match connector.open().await {
                Ok(c) => *pooled = Some(c),
                Err(e) => return vec![connect_failure(&e); n],
            }
        }
        let p = pooled.as_mut().expect("connected");
        let fresh = p.used() == 0;
        p.submit((), env, data.to_vec()).await;
        let res = p
            .next_result()
            .await
            .map(|(_, r)| r)
            .unwrap_or_else(|| vec![Broken::Lost("no result".into()).not_sent(); n]);
        let lost_idle = matches!(p.broken(), Some(Broken::Lost(_)))
            && res.iter().all(|r| {
                matches!(
                    r,
                    RcptOutcome::NotSent {
                        throttled: false,
                        ..
                    }
                )
            });
        if p.broken().is_some() {
            if let Some(p) = pooled.take() {
                p.close().await;
            }
        }
        if lost_idle && !fresh && round == 0 {
            continue;
        }
        return res;
    }
    vec![Broken::Lost("connection lost twice".into()).not_sent(); n]
}

fn connect_failure(e: &SmtpError) -> RcptOutcome {
    let reply = format!("cannot deliver via relay: {e}");
    match e {
        SmtpError::Refused { reply: r, .. } if r.code >= 500 => RcptOutcome::Refused {
            class: Class::OtherPermanent,
            reply,
        },
        _ => RcptOutcome::NotSent {
            why: reply,
            throttled: e.class() == Class::Throttling,
        },
    }
}
