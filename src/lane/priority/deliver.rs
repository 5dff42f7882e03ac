//! Priority lane workers. Each owns at most one connection to the lane's relay (its own
//! source IP, never the blast lane's pool) and delivers one queued message at a time, all
//! of its recipients in one transaction, pipelined when the relay offers PIPELINING.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Mutex};

use super::sched::Dispatch;
use super::{Cmd, Log, Stats};
use crate::classify::{classify, Class, Stage};
use crate::config::{LaneSettings, TransportSpec};
use crate::lane::retry::next_retry_ms;
use crate::shutdown::Shutdown;
use crate::store::now_ms;
use crate::store::queue::{format_id, Entry, NewMessage, QueueStore, RcptStatus};
use crate::transport::smtp::{Connection, Endpoint, Reply, SmtpError};
use crate::transport::{outbox, wire};

/// An idle worker closes its connection after this long (relays drop idle sessions anyway).
const IDLE: Duration = Duration::from_secs(30);

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
}

/// One recipient's result of an attempt.
#[derive(Debug, Clone)]
enum Res {
    Sent(String),
    Temp(String),
    Perm(String),
}

impl Res {
    fn of(stage: Stage, r: &Reply) -> Res {
        match classify(stage, r.code, &r.text) {
            Class::Success => Res::Sent(r.to_string()),
            c if c.is_transient() => Res::Temp(r.to_string()),
            _ => Res::Perm(r.to_string()),
        }
    }
}

struct Pooled {
    conn: Connection,
    opened: Instant,
    used: u32,
}

/// Runs one worker until the lane stops.
pub async fn run(ctx: Arc<Ctx>, jobs: Arc<Mutex<mpsc::UnboundedReceiver<Dispatch>>>) {
    let ep = Endpoint::for_lane(&ctx.settings);
    let mut pooled: Option<Pooled> = None;
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
                    p.conn.quit().await;
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
        let results = match (&ep, &ctx.settings.transport) {
            (Some(ep), _) => smtp_attempt(&ctx, ep, &mut pooled, &entry, &todo, &data).await,
            (None, TransportSpec::Outbox(dir)) => {
                let name = format!("priority-{}.eml", format_id(entry.id));
                let r = match outbox::write(dir, &name, &data) {
                    Ok(p) => Res::Sent(format!("written to {}", p.display())),
                    Err(e) => Res::Temp(format!("outbox write failed: {e}")),
                };
                vec![r; todo.len()]
            }
            (None, TransportSpec::Smtp { .. }) => unreachable!("smtp transports have endpoints"),
        };
        let dsns = apply(&ctx, &mut entry, &todo, results, &data);
        if ctx.writer.send(Cmd::Update { entry, dsns }).await.is_err() {
            break;
        }
    }
    if let Some(p) = pooled.take() {
        p.conn.quit().await;
    }
}

/// Records the results in the entry; returns the DSNs to send for recipients that became
/// bounced or failed.
fn apply(
    ctx: &Ctx,
    entry: &mut Entry,
    todo: &[usize],
    results: Vec<Res>,
    data: &[u8],
) -> Vec<NewMessage> {
    let now = now_ms();
    let s = &ctx.settings;
    let mut failed = Vec::new();
    for (&i, res) in todo.iter().zip(results) {
        let r = &mut entry.rcpts[i];
        r.attempts += 1;
        match res {
            Res::Sent(reply) => {
                r.status = RcptStatus::Sent;
                r.last_reply = reply;
                Stats::add(&ctx.stats.delivered, 1);
            }
            Res::Temp(reply) => {
                r.last_reply = reply;
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
            }
            Res::Perm(reply) => {
                r.status = RcptStatus::Bounced;
                r.last_reply = reply;
                failed.push(i);
            }
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

/// A connection problem before any reply that says something about the recipients.
struct Lost(String);

async fn smtp_attempt(
    ctx: &Ctx,
    ep: &Endpoint,
    pooled: &mut Option<Pooled>,
    entry: &Entry,
    todo: &[usize],
    data: &[u8],
) -> Vec<Res> {
    let s = &ctx.settings;
    let mut wire_data = Vec::with_capacity(data.len() + 64);
    if let Err(e) = wire::encode_data(data, &mut wire_data) {
        return vec![Res::Perm(format!("554 5.6.0 not sent: {e}")); todo.len()];
    }
    let rcpts: Vec<&str> = todo.iter().map(|&i| entry.rcpts[i].addr.as_str()).collect();
    for round in 0..2 {
        let fresh = match pooled {
            Some(p)
                if p.used < s.max_messages_per_connection
                    && p.opened.elapsed() < s.max_connection_age =>
            {
                false
            }
            _ => {
                if let Some(p) = pooled.take() {
                    p.conn.quit().await;
                }
                match Connection::open(ep).await {
                    Ok(conn) => {
                        *pooled = Some(Pooled {
                            conn,
                            opened: Instant::now(),
                            used: 0,
                        });
                        true
                    }
                    Err(e) => return vec![connect_failure(&e); todo.len()],
                }
            }
        };
        let p = pooled.as_mut().expect("connected");
        p.used += 1;
        match transaction(&mut p.conn, s, entry, &rcpts, &wire_data).await {
            Ok((res, alive)) => {
                if !alive {
                    if let Some(p) = pooled.take() {
                        p.conn.quit().await;
                    }
                }
                return res;
            }
            Err(Lost(why)) => {
                *pooled = None;
                // A pooled connection the relay closed while idle: try once on a new one.
                if !fresh && round == 0 {
                    continue;
                }
                return vec![Res::Temp(format!("connection lost: {why}")); todo.len()];
            }
        }
    }
    vec![Res::Temp("connection lost twice".into()); todo.len()]
}

fn connect_failure(e: &SmtpError) -> Res {
    let why = format!("cannot deliver via relay: {e}");
    match e {
        SmtpError::Refused { reply, .. } if reply.code >= 500 => Res::Perm(why),
        _ => Res::Temp(why),
    }
}

/// One transaction for `rcpts`; returns per-recipient results and whether the connection
/// may be reused.
async fn transaction(
    conn: &mut Connection,
    s: &LaneSettings,
    entry: &Entry,
    rcpts: &[&str],
    wire_data: &[u8],
) -> Result<(Vec<Res>, bool), Lost> {
    let t = s.timeouts;
    let utf8 = entry.smtputf8 || !entry.mail_from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
    if utf8 && !conn.caps.smtputf8 {
        let why = "553 5.6.7 not sent: non-ASCII address and the relay has no SMTPUTF8";
        return Ok((vec![Res::Perm(why.into()); rcpts.len()], true));
    }
    if (!entry.mail_from.is_empty() && !wire::safe_path(&entry.mail_from))
        || !rcpts.iter().all(|r| wire::safe_path(r))
    {
        let why = "553 5.1.3 not sent: address unsafe on the wire";
        return Ok((vec![Res::Perm(why.into()); rcpts.len()], true));
    }
    if conn.caps.size > 0 && wire_data.len() as u64 > conn.caps.size {
        let why = format!(
            "552 5.3.4 not sent: {} octets exceed the relay's SIZE {}",
            wire_data.len(),
            conn.caps.size
        );
        return Ok((vec![Res::Perm(why); rcpts.len()], true));
    }
    let mut mail = format!("MAIL FROM:<{}>", entry.mail_from);
    if entry.eight_bit && conn.caps.eightbitmime {
        mail.push_str(" BODY=8BITMIME");
    }
    if utf8 {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str("\r\n");
    let mut cmds = vec![mail];
    cmds.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
    cmds.push("DATA\r\n".into());
    let lost = |e: SmtpError| Lost(e.to_string());

    // Replies to MAIL, each RCPT and DATA, in order. Pipelined: one write, one round trip.
    let mut replies = Vec::with_capacity(cmds.len());
    if conn.caps.pipelining {
        conn.send(cmds.concat().as_bytes()).await.map_err(lost)?;
        for _ in 0..cmds.len() {
            replies.push(
                conn.read_reply(t.command, "envelope reply")
                    .await
                    .map_err(lost)?,
            );
        }
    } else {
        for c in &cmds {
            conn.send(c.as_bytes()).await.map_err(lost)?;
            let r = conn
                .read_reply(t.command, "envelope reply")
                .await
                .map_err(lost)?;
            let stop = !r.is_ok() && (replies.is_empty() || c == "DATA\r\n");
            replies.push(r);
            if stop {
                break;
            }
        }
    }
    let alive = !replies.iter().any(|r| r.code == 421);
    let mail_r = &replies[0];
    if !mail_r.is_ok() {
        let res = Res::of(Stage::Mail, mail_r);
        return Ok((vec![res; rcpts.len()], alive));
    }
    let rcpt_res: Vec<Option<Res>> = (0..rcpts.len())
        .map(|i| match replies.get(1 + i) {
            Some(r) if r.is_ok() => None,
            Some(r) => Some(Res::of(Stage::Rcpt, r)),
            None => Some(Res::Temp("no reply to RCPT".into())),
        })
        .collect();
    let data_r = replies.get(1 + rcpts.len());
    let any_ok = rcpt_res.iter().any(Option::is_none);
    let go = any_ok && data_r.is_some_and(|r| r.code == 354);
    if !go {
        if data_r.is_some_and(|r| r.code == 354) {
            // RFC 2920: 354 after every RCPT failed; an empty message ends the transaction.
            conn.send(b".\r\n").await.map_err(lost)?;
            conn.read_reply(t.data_end, "empty data")
                .await
                .map_err(lost)?;
        }
        let data_fail = data_r.map(|r| Res::of(Stage::Data, r));
        let res = rcpt_res
            .into_iter()
            .map(|r| {
                r.or_else(|| data_fail.clone())
                    .unwrap_or_else(|| Res::Temp("no reply to DATA".into()))
            })
            .collect();
        let alive = alive && rset(conn, t.command).await;
        return Ok((res, alive));
    }
    conn.send(wire_data).await.map_err(lost)?;
    let end = conn
        .read_reply(t.data_end, "reply to end of data")
        .await
        .map_err(lost)?;
    let final_res = Res::of(Stage::DataEnd, &end);
    let res = rcpt_res
        .into_iter()
        .map(|r| r.unwrap_or_else(|| final_res.clone()))
        .collect();
    Ok((res, alive && end.code != 421))
}

/// Closes an open transaction so the next MAIL is not nested (RFC 5321 §4.1.1.5).
async fn rset(conn: &mut Connection, t: Duration) -> bool {
    conn.send(b"RSET\r\n").await.is_ok()
        && conn
            .read_reply(t, "reply to RSET")
            .await
            .is_ok_and(|r| r.is_ok())
}
