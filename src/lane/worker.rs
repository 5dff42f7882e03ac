//! Connection workers. Each owns at most one connection (so `connections` workers = the
//! total connection cap), renders the messages it takes, and drives MAIL/RCPT/DATA itself so
//! every recipient gets its own result. With PIPELINING (RFC 2920) one write carries a
//! message's body and final dot together with the next message's MAIL, RCPT and DATA: one
//! round trip per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Mutex};

use super::{Done, Job, LaneCtx, Outcome};
use crate::classify::{classify, Class, Stage};
use crate::config::TransportSpec;
use crate::transport::smtp::{Connection, Endpoint, Reply, SmtpError};
use crate::transport::{outbox, wire};

type Jobs = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Idle connections are closed after this long without work.
const IDLE: Duration = Duration::from_secs(5);

/// Runs one worker until the job channel closes.
pub(crate) async fn run(ctx: Arc<LaneCtx>, jobs: Jobs, done: mpsc::Sender<Done>) {
    match (
        ctx.settings.transport.clone(),
        Endpoint::for_lane(&ctx.settings),
    ) {
        (_, Some(ep)) => {
            SmtpWorker {
                ctx: ctx.clone(),
                jobs,
                done,
                ep,
                conn: None,
            }
            .run()
            .await
        }
        (TransportSpec::Outbox(dir), None) => outbox_worker(ctx, jobs, done, dir).await,
        (TransportSpec::Smtp { .. }, None) => unreachable!("an smtp transport has an endpoint"),
    }
}

async fn next_blocking(jobs: &Jobs, idle: Duration) -> Result<Option<Job>, ()> {
    let mut rx = jobs.lock().await;
    match tokio::time::timeout(idle, rx.recv()).await {
        Ok(Some(j)) => Ok(Some(j)),
        Ok(None) => Err(()),
        Err(_) => Ok(None),
    }
}

/// The next waiting job, if this connection may carry another message and no stop is asked.
fn next_if_room(jobs: &Jobs, ctx: &LaneCtx, count: u32, max: u32) -> Option<Job> {
    if count < max && !ctx.shutdown.stopping() {
        next_now(jobs)
    } else {
        None
    }
}

fn next_now(jobs: &Jobs) -> Option<Job> {
    jobs.try_lock().ok()?.try_recv().ok()
}

async fn report(ctx: &LaneCtx, done: &mpsc::Sender<Done>, job: Job, outcome: Outcome) {
    ctx.domains.finished(job.rec.domain());
    let _ = done.send(Done { job, outcome }).await;
}

async fn outbox_worker(
    ctx: Arc<LaneCtx>,
    jobs: Jobs,
    done: mpsc::Sender<Done>,
    dir: std::path::PathBuf,
) {
    while let Ok(job) = next_blocking(&jobs, Duration::from_secs(3600)).await {
        let Some(job) = job else { continue };
        if ctx.shutdown.stopping() {
            report(&ctx, &done, job, Outcome::Unclaimed).await;
            continue;
        }
        let msg = match ctx.spec.build(&job.rec) {
            Ok(m) => m,
            Err(e) => {
                report(&ctx, &done, job, Outcome::Skipped(e)).await;
                continue;
            }
        };
        let name = outbox::file_name(&ctx.spec.campaign, &job.key);
        let d = dir.clone();
        let res = tokio::task::spawn_blocking(move || outbox::write(&d, &name, &msg)).await;
        match res {
            Ok(Ok(path)) => {
                report(
                    &ctx,
                    &done,
                    job,
                    Outcome::Sent(format!("250 written to {}", path.display())),
                )
                .await
            }
            Ok(Err(e)) => {
                // Disk full or unwritable outbox: nothing else will work either.
                ctx.set_fatal(format!("cannot write to outbox {}: {e}", dir.display()));
                report(&ctx, &done, job, Outcome::Unclaimed).await;
            }
            Err(e) => {
                ctx.set_fatal(format!("outbox writer failed: {e}"));
                report(&ctx, &done, job, Outcome::Unclaimed).await;
            }
        }
    }
}

/// A message accepted for DATA (354 received), waiting for its body to be sent.
struct Ready {
    job: Job,
    data: Vec<u8>,
}

struct SmtpWorker {
    ctx: Arc<LaneCtx>,
    jobs: Jobs,
    done: mpsc::Sender<Done>,
    ep: Endpoint,
    conn: Option<(Connection, Instant, u32)>,
}

/// A transaction prepared for the wire.
struct Prepared {
    job: Job,
    commands: Vec<u8>,
    data: Vec<u8>,
}

impl SmtpWorker {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            let job = match next_blocking(&self.jobs, IDLE).await {
                Err(()) => break,
                Ok(None) => {
                    if let Some((c, _, _)) = self.conn.take() {
                        c.quit().await;
                    }
                    continue;
                }
                Ok(Some(j)) => j,
            };
            if self.ctx.shutdown.stopping() {
                report(&self.ctx, &self.done, job, Outcome::Unclaimed).await;
                continue;
            }
            if self.conn.is_none() {
                match Connection::open(&self.ep).await {
                    Ok(c) => {
                        failures = 0;
                        self.ctx
                            .connect_failures
                            .store(0, std::sync::atomic::Ordering::SeqCst);
                        self.conn = Some((c, Instant::now(), 0));
                    }
                    Err(e) => {
                        failures += 1;
                        self.connect_failed(job, e, failures).await;
                        continue;
                    }
                }
            }
            let keep = self.session(job).await;
            let (age, count) = self
                .conn
                .as_ref()
                .map(|(_, t, n)| (t.elapsed(), *n))
                .unwrap_or_default();
            if !keep
                || age >= self.ctx.settings.max_connection_age
                || count >= self.ctx.settings.max_messages_per_connection
            {
                if let Some((c, _, _)) = self.conn.take() {
                    if keep {
                        c.quit().await;
                    }
                }
            }
        }
        if let Some((c, _, _)) = self.conn.take() {
            c.quit().await;
        }
    }

    async fn connect_failed(&mut self, job: Job, e: SmtpError, failures: u32) {
        let what = format!("{}:{}: {e}", self.ep.host, self.ep.port);
        if e.is_fatal() {
            self.ctx.set_fatal(format!("lane cannot use relay {what}"));
            report(&self.ctx, &self.done, job, Outcome::Unclaimed).await;
            return;
        }
        // Never delivered anything and the relay keeps refusing: a config problem, not a blip.
        let nothing_sent = self
            .ctx
            .stats
            .sent
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0;
        let all = self
            .ctx
            .connect_failures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if nothing_sent && (failures >= 3 || all >= 8) {
            self.ctx
                .set_fatal(format!("cannot connect to relay {what}"));
            report(&self.ctx, &self.done, job, Outcome::Unclaimed).await;
            return;
        }
        if e.class() == Class::Throttling {
            self.ctx
                .domains
                .throttled(job.rec.domain(), self.ctx.settings.backoff);
        }
        report(
            &self.ctx,
            &self.done,
            job,
            Outcome::Requeue(format!("connection failed: {what}")),
        )
        .await;
        let backoff = Duration::from_millis(200u64 << failures.min(7));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = self.ctx.shutdown.wait() => {}
        }
    }

    /// Runs transactions starting with `first`, pipelining further jobs that are already
    /// waiting. Returns whether the connection is still usable.
    async fn session(&mut self, first: Job) -> bool {
        let ctx = self.ctx.clone();
        let t = self.ctx.settings.timeouts;
        let max = self.ctx.settings.max_messages_per_connection;
        let (conn, _, count) = self.conn.as_mut().expect("connected");
        let pipelining = conn.caps.pipelining;
        let (utf8, size) = (conn.caps.smtputf8, conn.caps.size);
        let mut next = Some(first);
        let mut ready: Option<Ready> = None;
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            let mut sent_next: Option<Ready> = None;
            if let Some(r) = &ready {
                buf.extend_from_slice(&r.data);
            }
            if let Some(job) = next.take() {
                match prepare_job(&ctx, job, utf8, size) {
                    Ok(p) => {
                        *count += 1;
                        if pipelining {
                            buf.extend_from_slice(&p.commands);
                            sent_next = Some(Ready {
                                job: p.job,
                                data: p.data,
                            });
                        } else {
                            // No PIPELINING: one command, one reply.
                            match lockstep(conn, p, &ctx, &self.done, t.command).await {
                                Ok(Some(r)) => {
                                    if !finish(conn, r, &ctx, &self.done, t.data_end).await {
                                        return false;
                                    }
                                }
                                Ok(None) => {}
                                Err(()) => return false,
                            }
                            next = next_if_room(&self.jobs, &ctx, *count, max);
                            if next.is_none() {
                                return true;
                            }
                            continue;
                        }
                    }
                    Err(b) => {
                        let (job, outcome) = *b;
                        report(&ctx, &self.done, job, outcome).await
                    }
                }
            }
            if buf.is_empty() {
                next = next_if_room(&self.jobs, &ctx, *count, max);
                if next.is_none() {
                    return true;
                }
                continue;
            }
            if let Err(e) = conn.send(&buf).await {
                let why = format!("connection lost while sending: {e}");
                if let Some(r) = ready.take() {
                    report(&ctx, &self.done, r.job, Outcome::Requeue(why.clone())).await;
                }
                if let Some(r) = sent_next {
                    report(&ctx, &self.done, r.job, Outcome::Requeue(why)).await;
                }
                return false;
            }
            let mut alive = true;
            if let Some(r) = ready.take() {
                match conn.read_reply(t.data_end, "reply to end of data").await {
                    Ok(rep) => {
                        alive &= rep.code != 421;
                        report(&ctx, &self.done, r.job, outcome(Stage::DataEnd, &rep)).await;
                    }
                    Err(e) => {
                        // The final dot went out and no reply came: the message may have been
                        // delivered. It is resent on a new connection (documented: at most one
                        // duplicate per lost connection).
                        report(
                            &ctx,
                            &self.done,
                            r.job,
                            Outcome::Requeue(format!("no reply after end of data: {e}")),
                        )
                        .await;
                        if let Some(n) = sent_next {
                            report(
                                &ctx,
                                &self.done,
                                n.job,
                                Outcome::Requeue("connection lost".into()),
                            )
                            .await;
                        }
                        return false;
                    }
                }
            }
            if let Some(n) = sent_next {
                match read_envelope_replies(conn, t.command).await {
                    Ok((mail, rcpt, data)) => {
                        alive &= mail.code != 421 && rcpt.code != 421 && data.code != 421;
                        if data.code == 354 && !(mail.is_ok() && rcpt.is_ok()) {
                            // RFC 2920: after a failed RCPT a server may still say 354; an empty
                            // message ends it (and is rejected for lack of recipients).
                            if conn.send(b".\r\n").await.is_err()
                                || conn.read_reply(t.data_end, "empty data").await.is_err()
                            {
                                alive = false;
                            }
                        }
                        if alive && mail.is_ok() && data.code != 354 {
                            // MAIL was accepted but the transaction went no further: it is
                            // still open on the server, and the next MAIL would be a nested
                            // one (503). RSET closes it (RFC 5321 §4.1.1.5).
                            if conn.send(b"RSET\r\n").await.is_err()
                                || !conn
                                    .read_reply(t.command, "reply to RSET")
                                    .await
                                    .is_ok_and(|r| r.is_ok())
                            {
                                alive = false;
                            }
                        }
                        if !mail.is_ok() {
                            report(&ctx, &self.done, n.job, outcome(Stage::Mail, &mail)).await;
                        } else if !rcpt.is_ok() {
                            report(&ctx, &self.done, n.job, outcome(Stage::Rcpt, &rcpt)).await;
                        } else if data.code != 354 {
                            report(&ctx, &self.done, n.job, outcome(Stage::Data, &data)).await;
                        } else if alive {
                            ready = Some(n);
                        } else {
                            report(
                                &ctx,
                                &self.done,
                                n.job,
                                Outcome::Requeue("server closing (421)".into()),
                            )
                            .await;
                        }
                    }
                    Err(e) => {
                        report(
                            &ctx,
                            &self.done,
                            n.job,
                            Outcome::Requeue(format!("connection lost: {e}")),
                        )
                        .await;
                        return false;
                    }
                }
            }
            if !alive {
                if let Some(r) = ready.take() {
                    report(
                        &ctx,
                        &self.done,
                        r.job,
                        Outcome::Requeue("server closing (421)".into()),
                    )
                    .await;
                }
                return false;
            }
            next = next_if_room(&self.jobs, &ctx, *count, max);
            if next.is_none() && ready.is_none() {
                return true;
            }
        }
    }
}

fn prepare_job(
    ctx: &LaneCtx,
    job: Job,
    caps_utf8: bool,
    size: u64,
) -> Result<Prepared, Box<(Job, Outcome)>> {
    let msg = match ctx.spec.build(&job.rec) {
        Ok(m) => m,
        Err(e) => return Err(Box::new((job, Outcome::Skipped(e)))),
    };
    let mut data = Vec::with_capacity(msg.len() + 64);
    if let Err(e) = wire::encode_data(&msg, &mut data) {
        return Err(Box::new((
            job,
            Outcome::Failed {
                class: Class::OtherPermanent,
                reply: format!("not sent: {e}"),
            },
        )));
    }
    if size > 0 && data.len() as u64 > size {
        return Err(Box::new((
            job,
            Outcome::Failed {
                class: Class::OtherPermanent,
                reply: format!(
                    "not sent: message of {} octets exceeds the relay's SIZE {size}",
                    data.len()
                ),
            },
        )));
    }
    let from = &ctx.spec.from.address;
    let to = &job.rec.address;
    if !wire::safe_path(from) || !wire::safe_path(to) {
        return Err(Box::new((
            job,
            Outcome::Failed {
                class: Class::OtherPermanent,
                reply: "not sent: address unsafe on the wire".into(),
            },
        )));
    }
    let utf8 = !to.is_ascii() || !from.is_ascii();
    if utf8 && !caps_utf8 {
        return Err(Box::new((
            job,
            Outcome::Failed {
                class: Class::OtherPermanent,
                reply: "not sent: non-ASCII address and the relay has no SMTPUTF8".into(),
            },
        )));
    }
    let commands = format!(
        "MAIL FROM:<{from}>{}\r\nRCPT TO:<{to}>\r\nDATA\r\n",
        if utf8 { " SMTPUTF8" } else { "" }
    )
    .into_bytes();
    Ok(Prepared {
        job,
        commands,
        data,
    })
}

fn outcome(stage: Stage, r: &Reply) -> Outcome {
    let class = classify(stage, r.code, &r.text);
    if class == Class::Success {
        Outcome::Sent(r.to_string())
    } else {
        Outcome::Failed {
            class,
            reply: r.to_string(),
        }
    }
}

async fn read_envelope_replies(
    conn: &mut Connection,
    t: Duration,
) -> Result<(Reply, Reply, Reply), SmtpError> {
    let mail = conn.read_reply(t, "reply to MAIL").await?;
    let rcpt = conn.read_reply(t, "reply to RCPT").await?;
    let data = conn.read_reply(t, "reply to DATA").await?;
    Ok((mail, rcpt, data))
}

/// Lock-step transaction up to the 354 (servers without PIPELINING).
async fn lockstep(
    conn: &mut Connection,
    p: Prepared,
    ctx: &LaneCtx,
    done: &mpsc::Sender<Done>,
    t: Duration,
) -> Result<Option<Ready>, ()> {
    let text = String::from_utf8_lossy(&p.commands).into_owned();
    let mut lines = text.split_inclusive("\r\n");
    let stages = [Stage::Mail, Stage::Rcpt, Stage::Data];
    for stage in stages {
        let line = lines.next().unwrap_or_default();
        let r = match conn.send(line.as_bytes()).await {
            Ok(()) => conn.read_reply(t, "reply").await,
            Err(e) => Err(e),
        };
        match r {
            Ok(rep) if stage == Stage::Data && rep.code == 354 => {
                return Ok(Some(Ready {
                    job: p.job,
                    data: p.data,
                }))
            }
            Ok(rep) if rep.is_ok() && stage != Stage::Data => continue,
            Ok(rep) => {
                let alive = rep.code != 421;
                report(ctx, done, p.job, outcome(stage, &rep)).await;
                if alive && stage != Stage::Mail {
                    let _ = conn.send(b"RSET\r\n").await;
                    if conn.read_reply(t, "RSET").await.is_err() {
                        return Err(());
                    }
                }
                return if alive { Ok(None) } else { Err(()) };
            }
            Err(e) => {
                report(
                    ctx,
                    done,
                    p.job,
                    Outcome::Requeue(format!("connection lost: {e}")),
                )
                .await;
                return Err(());
            }
        }
    }
    Ok(None)
}

/// Sends a body (already in `data`) and reads its final reply (lock-step mode).
async fn finish(
    conn: &mut Connection,
    r: Ready,
    ctx: &LaneCtx,
    done: &mpsc::Sender<Done>,
    t: Duration,
) -> bool {
    if let Err(e) = conn.send(&r.data).await {
        report(
            ctx,
            done,
            r.job,
            Outcome::Requeue(format!("connection lost: {e}")),
        )
        .await;
        return false;
    }
    match conn.read_reply(t, "reply to end of data").await {
        Ok(rep) => {
            let alive = rep.code != 421;
            report(ctx, done, r.job, outcome(Stage::DataEnd, &rep)).await;
            alive
        }
        Err(e) => {
            report(
                ctx,
                done,
                r.job,
                Outcome::Requeue(format!("no reply after end of data: {e}")),
            )
            .await;
            false
        }
    }
}
