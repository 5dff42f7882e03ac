//! One SMTP connection: the command loop, the wire violations it records and the injected
//! faults, on the server pieces in [`crate::smtp_server`].
//!
//! Pipelining: commands are read from a buffered reader and answered in order into an
//! output buffer, which is written only when the input buffer is empty, i.e. just
//! before we would wait on the socket. A client that pipelines a whole transaction
//! therefore gets all its replies in one write, which is what makes it fast.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{lock, Action, AuthAttempt, Notice, RcptDecision, Received, Shared};
use crate::smtp_server::{
    auth_challenge, decode_auth_response, other_command, parse_command, parse_mail, parse_rcpt,
    read_data, split_plain, starttls, take_data_txn, AuthResponse, Conn, DataEnd, Ehlo, Flow,
    MailParams,
};

/// Every read and write waits at most this long, so a stuck client never pins a task.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest command line accepted, CRLF included.
const MAX_COMMAND_LINE: usize = 1000;
const MAX_RECIPIENTS: usize = 1000;
/// Violations kept per transaction: a body of bare LFs must not grow memory unbounded.
const MAX_VIOLATIONS: usize = 100;
/// A client still sending after this many times `max_size` is cut off.
const OVERSIZE_FACTOR: usize = 4;

/// An open mail transaction (after MAIL FROM).
struct Txn {
    from: String,
    rcpts: Vec<String>,
    /// Lowercased accepted recipients whose first applicable rule is a DATA-stage rule.
    data_rules: Vec<(usize, String)>,
    smtputf8: bool,
    body_8bitmime: bool,
    violations: Vec<String>,
    /// The session was TLS-protected at MAIL.
    tls: bool,
    /// The session's authenticated user at MAIL.
    authenticated: Option<String>,
}

fn add_violation(v: &mut Vec<String>, what: impl FnOnce() -> String) {
    match v.len() {
        n if n < MAX_VIOLATIONS => v.push(what()),
        MAX_VIOLATIONS => v.push("more violations not listed".to_string()),
        _ => {}
    }
}

struct Session {
    shared: Arc<Shared>,
    greeted: bool,
    txn: Option<Txn>,
    /// Command-level problems seen outside a transaction; moved into the next one.
    pending_violations: Vec<String>,
    /// Reused line buffer for DATA bodies.
    dline: Vec<u8>,
    /// STARTTLS has completed on this connection.
    tls: bool,
    /// The user of a successful AUTH in this session (reset by STARTTLS).
    authenticated: Option<String>,
    /// The client's address.
    peer: Option<std::net::SocketAddr>,
}

/// Serves one connection until QUIT, EOF, an injected fault or the idle timeout.
/// `busy`: too many connections already; say so and close.
pub(super) async fn serve(stream: TcpStream, shared: Arc<Shared>, busy: bool) {
    let peer = stream.peer_addr().ok();
    let mut conn = Conn::new(stream, IDLE_TIMEOUT);
    // smtps: TLS from the first byte (RFC 8314), before the greeting and the busy check.
    let mut tls = false;
    if let (true, Some(cfg)) = (shared.config.implicit_tls, shared.config.tls.clone()) {
        if conn.start_tls(cfg).await.is_err() {
            shared.tls_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.tls_handshakes.fetch_add(1, Ordering::Relaxed);
        tls = true;
    }
    if busy {
        conn.reply("421 4.7.0 too many connections, try later");
        conn.close_gracefully().await;
        return;
    }
    let mut s = Session {
        shared,
        greeted: false,
        txn: None,
        pending_violations: Vec::new(),
        dline: Vec::new(),
        tls,
        authenticated: None,
        peer,
    };
    let greeting = format!("220 {} ESMTP blast sink", s.shared.config.hostname);
    conn.reply(&greeting);
    let end = s.run(&mut conn).await;
    conn.finish(end).await;
}

impl Session {
    async fn run(&mut self, conn: &mut Conn) -> io::Result<Flow> {
        let mut line = Vec::with_capacity(MAX_COMMAND_LINE);
        loop {
            let Some(crlf) = conn.read_command(&mut line, MAX_COMMAND_LINE).await? else {
                // EOF (possibly mid-line): nothing sensible to answer.
                return Ok(Flow::Abort);
            };
            if !crlf {
                let v = match &mut self.txn {
                    Some(t) => &mut t.violations,
                    None => &mut self.pending_violations,
                };
                add_violation(v, || "bare LF in command".to_string());
            }
            match self.command(conn, &line).await? {
                Flow::Continue => {}
                other => return Ok(other),
            }
        }
    }

    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> io::Result<Flow> {
        let Some((verb, arg)) = parse_command(conn, line) else {
            return Ok(Flow::Continue);
        };
        let config = &self.shared.config;
        match verb.as_str() {
            "MAIL" => self.mail(conn, arg),
            "RCPT" => return Ok(self.rcpt(conn, arg)),
            "DATA" => return self.data(conn).await,
            "EHLO" | "HELO" => self.ehlo(conn, arg, verb == "EHLO"),
            "RSET" => {
                self.txn = None;
                conn.reply("250 2.0.0 OK");
            }
            "STARTTLS" => return self.starttls(conn, arg).await,
            "AUTH" if config.auth.is_some() => return self.auth(conn, arg).await,
            "AUTH" => conn.reply("502 5.5.1 command not implemented"),
            other => return Ok(other_command(conn, other)),
        }
        Ok(Flow::Continue)
    }

    fn ehlo(&mut self, conn: &mut Conn, arg: &str, esmtp: bool) {
        if arg.trim().is_empty() {
            return conn.reply("501 5.5.4 EHLO/HELO needs a domain");
        }
        self.greeted = true;
        self.txn = None;
        let c = &self.shared.config;
        if !esmtp {
            return conn.reply(&format!("250 {}", c.hostname));
        }
        Ehlo {
            hostname: &c.hostname,
            client: arg.trim(),
            size: c.max_size,
            pipelining: c.pipelining,
            smtputf8: c.smtputf8,
            starttls: c.tls.is_some() && !self.tls,
            auth: c.auth.as_ref().map(|_| "PLAIN"),
        }
        .reply(conn);
    }

    /// RFC 3207: `220`, handshake, then the session starts over (new EHLO needed).
    async fn starttls(&mut self, conn: &mut Conn, arg: &str) -> io::Result<Flow> {
        let cfg = self.shared.config.tls.clone();
        match starttls(conn, cfg, self.tls, arg).await {
            Ok(None) => Ok(Flow::Continue),
            Ok(Some(dropped)) => {
                self.shared.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                self.tls = true;
                self.greeted = false;
                self.txn = None;
                self.authenticated = None;
                if dropped > 0 {
                    add_violation(&mut self.pending_violations, || {
                        format!("{dropped} bytes pipelined after STARTTLS (discarded)")
                    });
                }
                Ok(Flow::Continue)
            }
            Err(e) => {
                self.shared.tls_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// RFC 4954 AUTH, PLAIN mechanism only (initial response or after a `334`).
    async fn auth(&mut self, conn: &mut Conn, arg: &str) -> io::Result<Flow> {
        let Some((user, password)) = self.shared.config.auth.clone() else {
            conn.reply("502 5.5.1 command not implemented");
            return Ok(Flow::Continue);
        };
        if !self.greeted {
            conn.reply("503 5.5.1 send EHLO first");
            return Ok(Flow::Continue);
        }
        if self.authenticated.is_some() {
            conn.reply("503 5.5.1 already authenticated");
            return Ok(Flow::Continue);
        }
        if self.txn.is_some() {
            conn.reply("503 5.5.1 AUTH not permitted during a mail transaction");
            return Ok(Flow::Continue);
        }
        let mut words = arg.split_ascii_whitespace();
        let mech = words.next().unwrap_or("");
        if !mech.eq_ignore_ascii_case("PLAIN") {
            conn.reply("504 5.5.4 unrecognized authentication type");
            return Ok(Flow::Continue);
        }
        let response = match words.next() {
            Some(r) => decode_auth_response(r),
            None => match auth_challenge(conn, "", MAX_COMMAND_LINE).await? {
                Some(r) => r,
                None => return Ok(Flow::Abort),
            },
        };
        let decoded = match response {
            AuthResponse::Cancelled => {
                conn.reply("501 5.7.0 authentication cancelled");
                return Ok(Flow::Continue);
            }
            AuthResponse::Data(d) => Some(d),
            AuthResponse::Invalid => None,
        };
        let parts = decoded
            .as_deref()
            .and_then(split_plain)
            .map(|(_, authc, pass)| (authc, pass));
        let Some((authc, pass)) = parts else {
            self.record_auth(String::new(), false);
            conn.reply("501 5.5.2 cannot decode AUTH PLAIN response");
            return Ok(Flow::Continue);
        };
        let authc = String::from_utf8_lossy(authc).into_owned();
        let ok = authc == user && pass == password.as_bytes();
        self.record_auth(authc.clone(), ok);
        if ok {
            self.authenticated = Some(authc);
            conn.reply("235 2.7.0 authentication successful");
        } else {
            conn.reply("535 5.7.8 authentication credentials invalid");
        }
        Ok(Flow::Continue)
    }

    fn record_auth(&self, user: String, ok: bool) {
        if self.shared.config.record {
            lock(&self.shared.auth_attempts).push(AuthAttempt {
                user,
                tls: self.tls,
                ok,
            });
        }
    }

    fn mail(&mut self, conn: &mut Conn, arg: &str) {
        if !self.greeted {
            return conn.reply("503 5.5.1 send EHLO/HELO first");
        }
        if self.txn.is_some() {
            return conn.reply("503 5.5.1 nested MAIL command");
        }
        if self.shared.config.auth.is_some() && self.authenticated.is_none() {
            return conn.reply("530 5.7.0 authentication required");
        }
        let config = &self.shared.config;
        let (
            addr,
            MailParams {
                smtputf8,
                body_8bitmime,
            },
        ) = match parse_mail(arg, config.max_size, config.smtputf8) {
            Ok(v) => v,
            Err(reply) => return conn.reply(reply),
        };
        self.txn = Some(Txn {
            from: addr.to_string(),
            rcpts: Vec::new(),
            data_rules: Vec::new(),
            smtputf8,
            body_8bitmime,
            violations: std::mem::take(&mut self.pending_violations),
            tls: self.tls,
            authenticated: self.authenticated.clone(),
        });
        conn.reply("250 2.1.0 sender OK");
    }

    fn rcpt(&mut self, conn: &mut Conn, arg: &str) -> Flow {
        let Some(txn) = &mut self.txn else {
            conn.reply("503 5.5.1 need MAIL before RCPT");
            return Flow::Continue;
        };
        let addr = match parse_rcpt(arg, txn.smtputf8) {
            Ok(a) => a,
            Err(reply) => {
                conn.reply(reply);
                return Flow::Continue;
            }
        };
        if txn.rcpts.len() >= MAX_RECIPIENTS {
            conn.reply("452 4.5.3 too many recipients");
            return Flow::Continue;
        }
        let lower = addr.to_ascii_lowercase();
        let rules = &self.shared.config.rules;
        match self.shared.on_rcpt(&lower) {
            RcptDecision::Rcpt(i) => match &rules[i].action {
                Action::Reply421AtRcpt => {
                    conn.reply("421 4.7.0 too many messages, closing");
                    return Flow::Close;
                }
                Action::RcptReply(code, text) => {
                    conn.reply(&format!("{code} {text}"));
                    if (200..300).contains(code) {
                        txn.rcpts.push(addr.to_string());
                    }
                    return Flow::Continue;
                }
                _ => unreachable!("at_rcpt() covers only these"),
            },
            RcptDecision::Data(i) => txn.data_rules.push((i, lower)),
            RcptDecision::Normal => {}
        }
        txn.rcpts.push(addr.to_string());
        conn.reply("250 2.1.5 recipient OK");
        Flow::Continue
    }

    async fn data(&mut self, conn: &mut Conn) -> io::Result<Flow> {
        let Some(txn) = take_data_txn(conn, &mut self.txn, |t| !t.rcpts.is_empty()) else {
            return Ok(Flow::Continue);
        };
        // Of the candidate DATA-stage rules, the earliest configured one applies, and
        // only the recipients that picked it spend their `times` budget.
        let action = match txn.data_rules.iter().map(|(i, _)| *i).min() {
            Some(idx) => {
                let who: Vec<&str> = txn
                    .data_rules
                    .iter()
                    .filter(|(i, _)| *i == idx)
                    .map(|(_, r)| r.as_str())
                    .collect();
                self.shared.use_data_rule(idx, &who);
                Some(self.shared.config.rules[idx].action.clone())
            }
            None => None,
        };
        conn.reply("354 end data with <CR><LF>.<CR><LF>");
        if action == Some(Action::DropMidData) {
            let mut first = Vec::new();
            conn.read_line(&mut first, 4096).await?;
            return Ok(Flow::Abort);
        }
        let Some(body) = self.read_body(conn, &txn).await? else {
            return Ok(Flow::Abort);
        };
        let at = Instant::now();
        if action == Some(Action::DropAfterData) {
            if !body.too_big {
                self.accept(txn, body, at, None).await?;
            }
            conn.flush().await?;
            return Ok(Flow::Abort);
        }
        if body.too_big {
            conn.reply("552 5.3.4 message too big");
            return Ok(if body.cut_off {
                Flow::Close
            } else {
                Flow::Continue
            });
        }
        match action {
            Some(Action::DataReply(code, text)) => {
                if (200..300).contains(&code)
                    && self.accept(txn, body, at, Some(code)).await?.is_none()
                {
                    conn.reply("451 4.3.0 local error writing message");
                } else {
                    conn.reply(&format!("{code} {text}"));
                }
            }
            other => {
                if let Some(Action::Delay(d)) = other {
                    // Earlier replies are not held back by the delay.
                    conn.flush().await?;
                    tokio::time::sleep(d).await;
                }
                match self.accept(txn, body, at, Some(250)).await? {
                    Some(seq) => conn.reply(&format!("250 2.0.0 OK queued as {seq}")),
                    None => conn.reply("451 4.3.0 local error writing message"),
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Reads the DATA body up to CRLF.CRLF. `None`: the client closed first.
    async fn read_body(&mut self, conn: &mut Conn, txn: &Txn) -> io::Result<Option<Body>> {
        let config = &self.shared.config;
        let keep = config.record || config.maildir.is_some();
        let limit = config.max_size.max(MAX_COMMAND_LINE) + 8;
        let cut_off_at = config.max_size.saturating_mul(OVERSIZE_FACTOR).max(1 << 20);
        let mut body = Body {
            data: Vec::new(),
            size: 0,
            too_big: false,
            cut_off: false,
            violations: Vec::new(),
        };
        let mut eight_bit = false;
        let end = read_data(conn, &mut self.dline, limit, |l| {
            let (n, v) = (l.number, &mut body.violations);
            // The reader never ends on these; the sink reports them (SMTP smuggling probes).
            if l.false_end && l.crlf {
                add_violation(v, || {
                    format!("line {n}: \".\" after a bare LF is not end of data")
                });
            } else if l.false_end {
                add_violation(v, || {
                    format!("line {n}: \".\" with bare LF is not end of data")
                });
            }
            if !l.crlf {
                add_violation(v, || format!("bare LF at line {n}"));
            }
            if l.content_len > 998 {
                add_violation(v, || format!("line {n} longer than 998 octets"));
            }
            if l.nul {
                add_violation(v, || format!("NUL byte at line {n}"));
            }
            if l.bare_cr {
                add_violation(v, || format!("bare CR at line {n}"));
            }
            eight_bit |= l.eight_bit;
            body.size += l.size;
            if body.size > config.max_size {
                body.too_big = true;
                body.data = Vec::new();
                if body.size > cut_off_at {
                    body.cut_off = true;
                    return false;
                }
            } else if keep {
                body.data.extend_from_slice(l.bytes);
            }
            true
        })
        .await?;
        if end == DataEnd::Eof {
            return Ok(None);
        }
        if eight_bit && !txn.body_8bitmime && !txn.smtputf8 {
            add_violation(&mut body.violations, || {
                "8bit data without BODY=8BITMIME".to_string()
            });
        }
        Ok(Some(body))
    }

    /// Stores an accepted message. Returns its sequence number, or `None` if the
    /// maildir write failed (then nothing is recorded and the client gets a 451).
    async fn accept(
        &self,
        txn: Txn,
        body: Body,
        at: Instant,
        reply: Option<u16>,
    ) -> io::Result<Option<u64>> {
        let shared = &self.shared;
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut data = body.data;
        if let Some(dir) = &shared.config.maildir {
            // Off the reactor: file I/O blocks. Written before we answer 250, so a test
            // that saw the 250 finds the file.
            let dir = dir.clone();
            let (res, d) = tokio::task::spawn_blocking(move || {
                let tmp = dir.join(format!(".{seq:06}.eml.tmp"));
                let res = std::fs::write(&tmp, &data)
                    .and_then(|_| std::fs::rename(&tmp, dir.join(format!("{seq:06}.eml"))));
                (res, data)
            })
            .await
            .map_err(io::Error::other)?;
            if res.is_err() {
                return Ok(None);
            }
            data = d;
        }
        let mut violations = txn.violations;
        violations.extend(body.violations);
        if let Some(tx) = &shared.notify {
            // Best effort: a slow terminal must not slow the sink down.
            let _ = tx.try_send(Notice {
                seq,
                from: txn.from.clone(),
                rcpts: txn.rcpts.clone(),
                size: body.size,
                violations: violations.len(),
            });
        }
        if shared.config.record {
            let r = Received {
                at,
                mail_from: txn.from,
                rcpt_to: txn.rcpts,
                data,
                violations,
                smtputf8: txn.smtputf8,
                body_8bitmime: txn.body_8bitmime,
                reply,
                seq,
                tls: txn.tls,
                authenticated: txn.authenticated,
                peer: self.peer,
            };
            // Count under the same lock so count() never runs ahead of received().
            let mut rec = lock(&shared.received);
            rec.push(r);
            shared.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(seq))
    }
}

/// A DATA body as read.
struct Body {
    data: Vec<u8>,
    /// Dot-unstuffed size, line endings included.
    size: usize,
    too_big: bool,
    /// So far over the limit that the connection is closed.
    cut_off: bool,
    violations: Vec<String>,
}
