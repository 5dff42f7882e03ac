//! One submission connection: greeting and limits, EHLO, STARTTLS (session reset, pipelined
//! cleartext dropped), AUTH PLAIN/LOGIN with per-IP failure blocking, and MAIL/RCPT/DATA
//! under the relay and sender-domain rules. Replies to pipelined commands are queued and
//! flushed when the input buffer runs dry ([`Conn`]).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::policy::{auth_permitted, in_networks};
use super::Shared;
use crate::smtp_server::{
    auth_challenge, decode_auth_response, other_command, parse_command, parse_mail, parse_rcpt,
    split_plain, starttls, AuthResponse, Conn, Ehlo, Flow,
};

/// Counts the connection as open until dropped.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open mail transaction (after MAIL FROM).
pub(super) struct Txn {
    pub(super) from: String,
    pub(super) rcpts: Vec<String>,
    pub(super) smtputf8: bool,
    pub(super) body_8bitmime: bool,
}

/// One connection's SMTP state.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: SocketAddr,
    /// EHLO (or HELO) was given since the start or the last STARTTLS.
    greeted: bool,
    /// The greeting was EHLO: AUTH is an extension and needs it.
    esmtp: bool,
    tls: bool,
    pub(super) user: Option<String>,
    pub(super) txn: Option<Txn>,
    /// Reused line buffer (commands and DATA).
    pub(super) line: Vec<u8>,
}

/// Serves one connection until QUIT, EOF, the idle timeout or shutdown.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let settings = &shared.settings;
    let mut conn = Conn::new(stream, settings.idle_timeout);
    let total = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
    let _open = Open(shared.clone());
    let slot = (total <= settings.max_connections)
        .then(|| {
            shared
                .per_ip
                .try_take(peer.ip(), settings.max_connections_per_ip)
        })
        .flatten();
    let Some(_slot) = slot else {
        shared
            .stats
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        conn.reply("421 4.7.0 too many connections, try later");
        conn.close_gracefully().await;
        return;
    };
    let role = if settings.inbox.is_some() {
        "inbox"
    } else {
        "submission"
    };
    conn.reply(&format!("220 {} ESMTP blast {role}", settings.hostname));
    let mut s = Session {
        shared: shared.clone(),
        peer,
        greeted: false,
        esmtp: false,
        tls: false,
        user: None,
        txn: None,
        line: Vec::new(),
    };
    let end = s.run(&mut conn).await;
    conn.finish(end).await;
}

impl Session {
    async fn run(&mut self, conn: &mut Conn) -> io::Result<Flow> {
        let max_line = self.shared.settings.max_line;
        loop {
            if !conn.has_input() {
                conn.flush().await?;
                // Between commands a shutdown ends the session; a transaction under way
                // is let finish (its client is waiting for our 250).
                let stop = async {
                    if self.txn.is_none() {
                        self.shared.shutdown.wait().await
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    more = conn.wait_input() => if !more? { return Ok(Flow::Abort) },
                    _ = stop => {
                        conn.reply("421 4.3.2 shutting down, try later");
                        return Ok(Flow::Close);
                    }
                }
            }
            let mut line = std::mem::take(&mut self.line);
            let flow = match conn.read_command(&mut line, max_line).await {
                Ok(Some(true)) => self.command(conn, &line).await,
                // Lenient LF-only commands are how SMTP smuggling starts; refuse them.
                Ok(Some(false)) => {
                    conn.reply("500 5.5.2 command lines must end with CRLF");
                    Ok(Flow::Continue)
                }
                Ok(None) => Ok(Flow::Abort),
                Err(e) => Err(e),
            };
            self.line = line;
            match flow? {
                Flow::Continue => {}
                other => return Ok(other),
            }
        }
    }

    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> io::Result<Flow> {
        let Some((verb, arg)) = parse_command(conn, line) else {
            return Ok(Flow::Continue);
        };
        match verb.as_str() {
            "MAIL" => self.mail(conn, arg),
            "RCPT" => self.rcpt(conn, arg),
            "DATA" => return self.data(conn, arg).await,
            "EHLO" | "HELO" => self.ehlo(conn, arg, verb == "EHLO"),
            "STARTTLS" => return self.starttls(conn, arg).await,
            "AUTH" => return self.auth(conn, arg).await,
            "RSET" => {
                self.txn = None;
                conn.reply("250 2.0.0 OK");
            }
            other => return Ok(other_command(conn, other)),
        }
        Ok(Flow::Continue)
    }

    fn ehlo(&mut self, conn: &mut Conn, arg: &str, esmtp: bool) {
        if arg.trim().is_empty() {
            return conn.reply("501 5.5.4 EHLO/HELO needs a domain");
        }
        (self.greeted, self.esmtp, self.txn) = (true, esmtp, None);
        let s = &self.shared.settings;
        if !esmtp {
            return conn.reply(&format!("250 {}", s.hostname));
        }
        Ehlo {
            hostname: &s.hostname,
            client: arg.trim(),
            size: s.max_message_size,
            pipelining: true,
            smtputf8: true,
            starttls: s.tls.is_some() && !self.tls,
            auth: (s.inbox.is_none() && auth_permitted(self.tls, self.peer.ip()))
                .then_some("PLAIN LOGIN"),
        }
        .reply(conn);
    }

    /// RFC 3207: `220`, handshake, then the session starts over: no EHLO, no AUTH, no
    /// transaction, and nothing the client pipelined after STARTTLS is acted on.
    async fn starttls(&mut self, conn: &mut Conn, arg: &str) -> io::Result<Flow> {
        let cfg = self.shared.settings.tls.clone();
        let Some(dropped) = starttls(conn, cfg, self.tls, arg).await? else {
            return Ok(Flow::Continue);
        };
        let stats = &self.shared.stats;
        stats
            .discarded_after_starttls
            .fetch_add(dropped as u64, Ordering::Relaxed);
        self.tls = true;
        (self.greeted, self.esmtp, self.user, self.txn) = (false, false, None, None);
        Ok(Flow::Continue)
    }

    /// RFC 4954 AUTH with PLAIN (RFC 4616) or LOGIN.
    async fn auth(&mut self, conn: &mut Conn, arg: &str) -> io::Result<Flow> {
        let ip = self.peer.ip();
        let shared = self.shared.clone();
        let refuse = if shared.settings.inbox.is_some() {
            Some("503 5.5.1 AUTH not available here")
        } else if !self.esmtp {
            Some("503 5.5.1 send EHLO first")
        } else if self.user.is_some() {
            Some("503 5.5.1 already authenticated")
        } else if self.txn.is_some() {
            Some("503 5.5.1 AUTH not permitted during a mail transaction")
        } else if !auth_permitted(self.tls, ip) {
            Some("538 5.7.11 Encryption required for requested authentication mechanism")
        } else {
            None
        };
        if let Some(reply) = refuse {
            conn.reply(reply);
            return Ok(Flow::Continue);
        }
        if shared.auth_failures.blocked(ip) {
            shared.stats.auth_blocked.fetch_add(1, Ordering::Relaxed);
            conn.reply("421 4.7.0 too many failed authentications, try again later");
            return Ok(Flow::Close);
        }
        let mut words = arg.split_ascii_whitespace();
        let mech = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next();
        let limit = shared.settings.max_line;
        let (user, pass) = match mech.as_str() {
            "PLAIN" => {
                let r = match respond(conn, initial, "", limit).await? {
                    Ok(r) => r,
                    Err(flow) => return Ok(flow),
                };
                match split_plain(&r) {
                    // An authorization identity other than the user's own is not supported.
                    Some((authz, authc, pass)) if authz.is_empty() || authz == authc => {
                        (authc.to_vec(), pass.to_vec())
                    }
                    Some((_, authc, _)) => (authc.to_vec(), Vec::new()),
                    None => {
                        conn.reply("501 5.5.2 cannot decode AUTH PLAIN response");
                        return Ok(Flow::Continue);
                    }
                }
            }
            "LOGIN" => {
                let user = match respond(conn, initial, "VXNlcm5hbWU6", limit).await? {
                    Ok(u) => u,
                    Err(flow) => return Ok(flow),
                };
                match respond(conn, None, "UGFzc3dvcmQ6", limit).await? {
                    Ok(p) => (user, p),
                    Err(flow) => return Ok(flow),
                }
            }
            _ => {
                conn.reply("504 5.5.4 unrecognized authentication type");
                return Ok(Flow::Continue);
            }
        };
        let ok = match (String::from_utf8(user), std::str::from_utf8(&pass)) {
            (Ok(u), Ok(p)) if !p.is_empty() && shared.users.verify(&u, p).await => Some(u),
            _ => None,
        };
        match ok {
            Some(u) => {
                self.user = Some(u);
                conn.reply("235 2.7.0 Authentication successful");
            }
            None => {
                shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                shared.auth_failures.fail(ip);
                conn.reply("535 5.7.8 Authentication credentials invalid");
            }
        }
        Ok(Flow::Continue)
    }

    /// May this session relay: authenticated, or from an `allow_networks` client.
    fn may_relay(&self) -> bool {
        // The inbox takes mail from anyone, for its own addresses only (checked at RCPT).
        self.shared.settings.inbox.is_some()
            || self.user.is_some()
            || in_networks(self.peer.ip(), &self.shared.settings.allow_networks)
    }

    fn refuse_relay(&self, conn: &mut Conn) {
        let stats = &self.shared.stats;
        stats.rejected_relay.fetch_add(1, Ordering::Relaxed);
        conn.reply("530 5.7.0 Authentication required");
    }

    fn mail(&mut self, conn: &mut Conn, arg: &str) {
        if !self.greeted {
            return conn.reply("503 5.5.1 send EHLO/HELO first");
        }
        if self.txn.is_some() {
            return conn.reply("503 5.5.1 nested MAIL command");
        }
        if !self.may_relay() {
            return self.refuse_relay(conn);
        }
        let (addr, p) = match parse_mail(arg, self.shared.settings.max_message_size, true) {
            Ok(v) => v,
            Err(reply) => return conn.reply(reply),
        };
        let domain = addr.rsplit_once('@').map(|(_, d)| d);
        if !addr.is_empty() && domain.is_none_or(str::is_empty) {
            return conn.reply("553 5.1.7 bad sender address syntax");
        }
        if let Some(user) = &self.user {
            let Some(domain) = domain else {
                return conn.reply("553 5.7.1 null sender not allowed for submission");
            };
            if !self.shared.users.may_send_as(user, domain) {
                return conn.reply(&format!(
                    "553 5.7.1 sender domain not permitted for user {user}"
                ));
            }
        }
        self.txn = Some(Txn {
            from: addr.to_string(),
            rcpts: Vec::new(),
            smtputf8: p.smtputf8,
            body_8bitmime: p.body_8bitmime,
        });
        conn.reply("250 2.1.0 Ok");
    }

    fn rcpt(&mut self, conn: &mut Conn, arg: &str) {
        if !self.may_relay() {
            // MAIL was refused already; this is for clients that pipeline on regardless.
            return self.refuse_relay(conn);
        }
        let Some(txn) = &mut self.txn else {
            return conn.reply("503 5.5.1 need MAIL before RCPT");
        };
        let addr = match parse_rcpt(arg, txn.smtputf8) {
            Ok(a) => a,
            Err(reply) => return conn.reply(reply),
        };
        if txn.rcpts.len() >= self.shared.settings.max_recipients {
            return conn.reply("452 4.5.3 too many recipients");
        }
        if let Some(rules) = &self.shared.settings.inbox {
            // Never a relay, and a forged or altered token is nobody here.
            if rules.mailbox(addr).is_none() {
                return conn.reply("550 5.1.1 no such mailbox here");
            }
        }
        txn.rcpts.push(addr.to_string());
        conn.reply("250 2.1.5 Ok");
    }
}

/// An AUTH response: the initial one if given, else after a `334 prompt`. `Err` is how the
/// session goes on when there is no usable response (a reply has been queued).
async fn respond(
    conn: &mut Conn,
    initial: Option<&str>,
    prompt: &str,
    limit: usize,
) -> io::Result<Result<Vec<u8>, Flow>> {
    let r = match initial {
        Some(r) => decode_auth_response(r),
        None => match auth_challenge(conn, prompt, limit).await? {
            Some(r) => r,
            None => return Ok(Err(Flow::Abort)),
        },
    };
    Ok(match r {
        AuthResponse::Data(d) => Ok(d),
        AuthResponse::Cancelled => {
            conn.reply("501 5.7.0 authentication cancelled");
            Err(Flow::Continue)
        }
        AuthResponse::Invalid => {
            conn.reply("501 5.5.2 cannot decode AUTH response");
            Err(Flow::Continue)
        }
    })
}
