//! One SMTP client transaction, shared by both lanes: envelope checks against what the server
//! offers, MAIL/RCPT/DATA with and without PIPELINING, a result per recipient, RSET after a
//! transaction that went no further than MAIL, and 421 recognised wherever it comes.
//!
//! [`SmtpSession::submit`] queues a transaction and may be called again before the previous
//! one's result is read with [`SmtpSession::next_result`]: with PIPELINING the body and final
//! dot of one message travel in the same write as the next message's MAIL, RCPT and DATA, so
//! a steady stream costs one round trip per message (RFC 2920 §3.1). Results come back in
//! submission order, each with the caller's tag — except that a transaction refused locally
//! (SIZE, SMTPUTF8, an unsafe path or line) is answered at once, ahead of ones still on the
//! wire; callers match results by tag.

use std::collections::VecDeque;
use std::time::Duration;

use super::smtp::{Connection, Reply, SmtpError};
use super::wire;
use super::{Broken, Envelope, RcptOutcome};
use crate::classify::{classify, Class, Stage};
use crate::config::Timeouts;

/// A transaction on its way through the session.
struct Tx<T> {
    tag: T,
    rcpts: usize,
    /// Dot-stuffed body with the final `.`.
    data: Vec<u8>,
    /// Per recipient: `None` while accepted so far, or its final outcome.
    res: Vec<Option<RcptOutcome>>,
}

impl<T> Tx<T> {
    /// Every recipient still open gets `o`.
    fn settle(mut self, o: impl Fn() -> RcptOutcome) -> (T, Vec<RcptOutcome>) {
        let res = self.res.drain(..).map(|r| r.unwrap_or_else(&o)).collect();
        (self.tag, res)
    }
}

/// An SMTP connection carrying a stream of transactions.
pub struct SmtpSession<T> {
    conn: Connection,
    t: Timeouts,
    /// Commands written, their replies not read yet.
    envelope: Option<Tx<T>>,
    /// 354 received, body not written yet.
    ready: Option<Tx<T>>,
    /// Body written, final reply not read yet (in wire order).
    finals: VecDeque<Tx<T>>,
    /// Results not handed out yet (in submission order).
    done: VecDeque<(T, Vec<RcptOutcome>)>,
    broken: Option<Broken>,
}

impl<T> SmtpSession<T> {
    /// Wraps an open, greeted connection.
    pub fn new(conn: Connection, t: Timeouts) -> Self {
        SmtpSession {
            conn,
            t,
            envelope: None,
            ready: None,
            finals: VecDeque::new(),
            done: VecDeque::new(),
            broken: None,
        }
    }

    /// Whether the server pipelines (so a caller should submit the next message before
    /// reading the previous result).
    pub fn pipelining(&self) -> bool {
        self.conn.caps.pipelining
    }

    /// Why the connection can carry no more transactions, if it can't.
    pub fn broken(&self) -> Option<&Broken> {
        self.broken.as_ref()
    }

    /// Queues a transaction for `env` with `msg` (CRLF, not dot-stuffed). Checks that cannot
    /// pass (SIZE, SMTPUTF8, unsafe paths, lines over 998 octets, NUL) settle it at once
    /// without a word on the wire.
    pub async fn submit(&mut self, tag: T, env: &Envelope, msg: &[u8]) {
        let n = env.rcpts.len();
        if let Some(b) = &self.broken {
            let o = b.not_sent();
            self.done.push_back((tag, vec![o; n]));
            return;
        }
        let mut data = Vec::with_capacity(msg.len() + msg.len() / 64 + 8);
        let utf8 = env.needs_smtputf8();
        let refused = if let Err(e) = wire::encode_data(msg, &mut data) {
            Some(format!("554 5.6.0 not sent: {e}"))
        } else if !env.paths_safe() {
            Some("553 5.1.3 not sent: address unsafe on the wire".into())
        } else if utf8 && !self.conn.caps.smtputf8 {
            Some("553 5.6.7 not sent: non-ASCII address and the relay has no SMTPUTF8".into())
        } else if self.conn.caps.size > 0 && msg.len() as u64 > self.conn.caps.size {
            // RFC 1870 counts the message as it is, not its dot-stuffed wire form.
            Some(format!(
                "552 5.3.4 not sent: message of {} octets exceeds the relay's SIZE {}",
                msg.len(),
                self.conn.caps.size
            ))
        } else {
            None
        };
        if let Some(reply) = refused {
            let o = RcptOutcome::Refused {
                class: Class::OtherPermanent,
                reply,
            };
            self.done.push_back((tag, vec![o; n]));
            return;
        }
        let mut cmds = format!("MAIL FROM:<{}>", env.mail_from);
        if env.eight_bit && self.conn.caps.eightbitmime {
            cmds.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            cmds.push_str(" SMTPUTF8");
        }
        let dsn = env.envid.as_deref().filter(|_| self.conn.caps.dsn);
        if let Some(id) = dsn {
            cmds.push_str(" RET=HDRS ENVID=");
            xtext(&mut cmds, id);
        }
        cmds.push_str("\r\n");
        for r in &env.rcpts {
            cmds.push_str("RCPT TO:<");
            cmds.push_str(r);
            cmds.push('>');
            if dsn.is_some() {
                // RFC 3461 §4.2: ORCPT's address is xtext; a UTF-8 address is utf-8 type
                // (RFC 6533), which needs SMTPUTF8.
                cmds.push_str(" NOTIFY=FAILURE ORCPT=");
                cmds.push_str(if r.is_ascii() { "rfc822;" } else { "utf-8;" });
                xtext(&mut cmds, r);
            }
            cmds.push_str("\r\n");
        }
        cmds.push_str("DATA\r\n");
        let tx = Tx {
            tag,
            rcpts: n,
            data,
            res: vec![None; n],
        };
        if !self.pipelining() {
            self.drain().await;
            self.lockstep(tx, cmds).await;
            return;
        }
        // The previous transaction's envelope replies decide whether its body goes out with
        // these commands.
        self.read_envelope().await;
        if let Some(b) = &self.broken {
            let o = b.not_sent();
            self.done.push_back(tx.settle(|| o.clone()));
            return;
        }
        let mut buf =
            Vec::with_capacity(cmds.len() + self.ready.as_ref().map_or(0, |r| r.data.len()));
        if let Some(r) = &self.ready {
            buf.extend_from_slice(&r.data);
        }
        buf.extend_from_slice(cmds.as_bytes());
        if let Err(e) = self.conn.send(&buf).await {
            let why = format!("connection lost while sending: {e}");
            if let Some(r) = self.ready.take() {
                // The body may have reached the server whole: ambiguous.
                self.finals.push_back(r);
            }
            self.fail(Broken::Lost(why.clone()));
            self.done.push_back(tx.settle(|| RcptOutcome::NotSent {
                why: why.clone(),
                throttled: false,
            }));
            return;
        }
        if let Some(r) = self.ready.take() {
            self.finals.push_back(r);
        }
        self.envelope = Some(tx);
    }

    /// The next result in submission order, reading from the server as needed; `None` when
    /// nothing is outstanding.
    pub async fn next_result(&mut self) -> Option<(T, Vec<RcptOutcome>)> {
        loop {
            if let Some(d) = self.done.pop_front() {
                return Some(d);
            }
            if !self.finals.is_empty() {
                self.read_final().await;
                continue;
            }
            if self.envelope.is_some() {
                self.read_envelope().await;
                continue;
            }
            if let Some(r) = self.ready.take() {
                // Nothing to pipeline with: the body goes alone.
                match self.conn.send(&r.data).await {
                    Ok(()) => self.finals.push_back(r),
                    Err(e) => {
                        let why = format!("connection lost while sending the body: {e}");
                        self.finals.push_back(r);
                        self.fail(Broken::Lost(why));
                    }
                }
                continue;
            }
            return None;
        }
    }

    /// Reads what the server has answered so far without sending anything: the final reply
    /// owed first, then the pipelined envelope's replies (its body then waits for the next
    /// [`Self::submit`], so it can still travel with the next message's commands). Returns
    /// whether there is a result to hand out now.
    pub async fn read_ahead(&mut self) -> bool {
        if self.done.is_empty() {
            if !self.finals.is_empty() {
                self.read_final().await;
            } else if self.envelope.is_some() {
                self.read_envelope().await;
            }
        }
        !self.done.is_empty()
    }

    /// Ends the session politely (QUIT) unless it is broken.
    pub async fn close(self) {
        if self.broken.is_none() {
            self.conn.quit().await;
        }
    }

    /// Reads every final reply that is due before anything else on the wire.
    async fn drain(&mut self) {
        while !self.finals.is_empty() {
            self.read_final().await;
        }
    }

    /// Marks the connection unusable: every transaction not yet answered is settled.
    fn fail(&mut self, b: Broken) {
        let not_sent = b.not_sent();
        // Body out, no final reply: the message may have been delivered.
        let unknown = match &b {
            Broken::Lost(w) => RcptOutcome::Unknown(format!("no reply after end of data: {w}")),
            other => other.not_sent(),
        };
        for tx in std::mem::take(&mut self.finals) {
            let u = unknown.clone();
            self.done.push_back(tx.settle(move || u.clone()));
        }
        for tx in [self.ready.take(), self.envelope.take()]
            .into_iter()
            .flatten()
        {
            let o = not_sent.clone();
            self.done.push_back(tx.settle(move || o.clone()));
        }
        self.broken = Some(b);
    }

    async fn read(&mut self, t: Duration, what: &'static str) -> Result<Reply, SmtpError> {
        self.conn.read_reply(t, what).await
    }

    async fn read_final(&mut self) {
        let Some(tx) = self.finals.pop_front() else {
            return;
        };
        match self.read(self.t.data_end, "reply to end of data").await {
            Ok(r) if r.code == 421 => {
                self.finals.push_front(tx);
                self.fail(Broken::Closing(r.to_string()));
            }
            Ok(r) => {
                let o = outcome(Stage::DataEnd, &r);
                self.done.push_back(tx.settle(|| o.clone()));
            }
            Err(e) => {
                self.finals.push_front(tx);
                self.fail(Broken::Lost(e.to_string()));
            }
        }
    }

    /// Reads the MAIL, RCPT and DATA replies of the pipelined transaction (after the final
    /// replies that precede them on the wire).
    async fn read_envelope(&mut self) {
        self.drain().await;
        let Some(mut tx) = self.envelope.take() else {
            return;
        };
        if let Some(b) = &self.broken {
            let o = b.not_sent();
            self.done.push_back(tx.settle(|| o.clone()));
            return;
        }
        let t = self.t.command;
        let mut replies = Vec::with_capacity(tx.rcpts + 2);
        for _ in 0..tx.rcpts + 2 {
            match self.read(t, "envelope reply").await {
                Ok(r) if r.code == 421 => {
                    // The server is closing: nothing of this transaction was accepted, and
                    // the destination asks us to slow down.
                    self.envelope = Some(tx);
                    self.fail(Broken::Closing(r.to_string()));
                    return;
                }
                Ok(r) => replies.push(r),
                Err(e) => {
                    self.envelope = Some(tx);
                    self.fail(Broken::Lost(e.to_string()));
                    return;
                }
            }
        }
        let mail = &replies[0];
        let data = &replies[tx.rcpts + 1];
        if !mail.is_ok() {
            let o = outcome(Stage::Mail, mail);
            tx.res.iter_mut().for_each(|r| *r = Some(o.clone()));
        } else {
            for (i, r) in replies[1..=tx.rcpts].iter().enumerate() {
                if !r.is_ok() {
                    tx.res[i] = Some(outcome(Stage::Rcpt, r));
                }
            }
        }
        let any_open = tx.res.iter().any(Option::is_none);
        if data.code == 354 && any_open {
            self.ready = Some(tx);
            return;
        }
        if data.code == 354 {
            // RFC 2920 §3.1: 354 although no RCPT succeeded; an empty message ends it (and
            // is refused for lack of recipients).
            let r = match self.conn.send(b".\r\n").await {
                Ok(()) => self.read(self.t.data_end, "empty data").await,
                Err(e) => Err(e),
            };
            self.done.push_back(tx.settle(unreachable_open));
            match r {
                Ok(r) if r.code == 421 => self.fail(Broken::Closing(r.to_string())),
                Ok(_) => {}
                Err(e) => self.fail(Broken::Lost(format!(
                    "connection lost after an empty message: {e}"
                ))),
            }
            return;
        }
        let o = outcome(Stage::Data, data);
        let mail_ok = mail.is_ok();
        self.done.push_back(tx.settle(|| o.clone()));
        if mail_ok {
            // MAIL was accepted but the transaction went no further: it is still open on the
            // server, and the next MAIL would be nested (503). RSET closes it (RFC 5321
            // §4.1.1.5).
            self.rset().await;
        }
    }

    async fn rset(&mut self) {
        let r = match self.conn.send(b"RSET\r\n").await {
            Ok(()) => self.read(self.t.command, "reply to RSET").await,
            Err(e) => Err(e),
        };
        match r {
            Ok(r) if r.is_ok() => {}
            // A relay that closes here (e.g. "too many errors") is throttling like a 421
            // anywhere else: what is queued behind is postponed, not retried.
            Ok(r) if r.code == 421 => self.fail(Broken::Closing(r.to_string())),
            Ok(r) => self.fail(Broken::Lost(format!("RSET refused: {r}"))),
            Err(e) => self.fail(Broken::Lost(format!("no reply to RSET: {e}"))),
        }
    }

    /// One command, one reply (servers without PIPELINING).
    async fn lockstep(&mut self, mut tx: Tx<T>, cmds: String) {
        let lines: Vec<&str> = cmds.split_inclusive("\r\n").collect();
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let stage = match i {
                0 => Stage::Mail,
                i if i == last => Stage::Data,
                _ => Stage::Rcpt,
            };
            let r = match self.conn.send(line.as_bytes()).await {
                Ok(()) => self.read(self.t.command, "reply").await,
                Err(e) => Err(e),
            };
            let r = match r {
                Ok(r) if r.code == 421 => {
                    self.envelope = Some(tx);
                    self.fail(Broken::Closing(r.to_string()));
                    return;
                }
                Ok(r) => r,
                Err(e) => {
                    self.envelope = Some(tx);
                    self.fail(Broken::Lost(e.to_string()));
                    return;
                }
            };
            match stage {
                Stage::Mail if !r.is_ok() => {
                    let o = outcome(Stage::Mail, &r);
                    self.done.push_back(tx.settle(|| o.clone()));
                    return;
                }
                Stage::Rcpt if !r.is_ok() => tx.res[i - 1] = Some(outcome(Stage::Rcpt, &r)),
                Stage::Rcpt | Stage::Mail => {}
                _ if r.code == 354 => {
                    self.ready = Some(tx);
                    return self.flush_ready().await;
                }
                _ => {
                    let o = outcome(Stage::Data, &r);
                    self.done.push_back(tx.settle(|| o.clone()));
                    self.rset().await;
                    return;
                }
            }
            // In lock-step mode the DATA command is skipped when no recipient is open.
            if i + 1 == last && tx.res.iter().all(Option::is_some) {
                self.done.push_back(tx.settle(unreachable_open));
                self.rset().await;
                return;
            }
        }
    }

    async fn flush_ready(&mut self) {
        if let Some(r) = self.ready.take() {
            match self.conn.send(&r.data).await {
                Ok(()) => self.finals.push_back(r),
                Err(e) => {
                    self.finals.push_back(r);
                    self.fail(Broken::Lost(format!(
                        "connection lost while sending the body: {e}"
                    )));
                }
            }
            self.drain().await;
        }
    }
}

/// Every recipient was settled before this is asked for.
fn unreachable_open() -> RcptOutcome {
    RcptOutcome::NotSent {
        why: "no recipient accepted".into(),
        throttled: false,
    }
}

/// A server reply as a recipient's outcome.
pub fn outcome(stage: Stage, r: &Reply) -> RcptOutcome {
    match classify(stage, r.code, &r.text) {
        Class::Success => RcptOutcome::Delivered(r.to_string()),
        class => RcptOutcome::Refused {
            class,
            reply: r.to_string(),
        },
    }
}

/// RFC 3461 §4: xtext — printable ASCII except `+` and `=` as is, everything else `+HH`.
/// (For a UTF-8 ORCPT, RFC 6533's utf-8-addr-xtext keeps UTF-8 as is; `\x{…}` only for
/// controls, which a validated address has none of.)
fn xtext(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    for c in s.chars() {
        match c {
            '!'..='~' if c != '+' && c != '=' => out.push(c),
            c if !c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "+{:02X}", c as u32);
            }
        }
    }
}
