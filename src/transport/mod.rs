//! Transports: the seam both lanes send through. A [`Connector`] opens a [`Session`]; a session
//! carries transactions ([`Session::submit`], then [`Session::next_result`] in order) and says
//! per recipient how each ended ([`RcptOutcome`]). Lanes only schedule: which recipient, when,
//! on which session; every SMTP detail lives here.
//!
//! - [`smtp`]: our own client connection (a socket we create: TCP_NODELAY, the lane's source
//!   IP; STARTTLS, AUTH)
//! - [`session`]: one SMTP transaction, pipelined across messages
//! - [`mx`]: `transport = "mx"`, direct delivery: MX host order, per-host session pool,
//!   opportunistic TLS with a plaintext retry; [`accounting`]: its one-line-per-attempt file
//! - [`outbox`]: `outbox:DIR`, one .eml file per message
//! - [`stub`]: an in-memory transport for tests and benches
//! - [`wire`]: the wire encoding every transport relies on

pub mod accounting;
pub mod mx;
pub mod outbox;
pub mod session;
pub mod smtp;
pub mod stream;
pub mod stub;
pub mod tls;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::classify::Class;
use crate::config::{LaneSettings, TransportSpec};
use session::SmtpSession;
use smtp::{Connection, Endpoint, SmtpError};

/// Who a transaction is from and to.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// MAIL FROM (empty: the null sender of a bounce).
    pub mail_from: String,
    /// RCPT TO, in order; results come back in this order.
    pub rcpts: Vec<String>,
    /// The body is 8-bit (`BODY=8BITMIME` when offered).
    pub eight_bit: bool,
    /// The message itself needs SMTPUTF8 (non-ASCII headers), whatever the addresses say.
    pub smtputf8: bool,
    /// A stable name of this message: the outbox file name (a resend overwrites it).
    pub label: String,
    /// RFC 3461 ENVID. `Some`: when the server offers DSN, ask for failure reports only
    /// (`NOTIFY=FAILURE`), headers only (`RET=HDRS`), with this id and each recipient's
    /// ORCPT, so a bounce names the recipient and the message whatever a forwarder did.
    pub envid: Option<String>,
}

impl Envelope {
    /// SMTPUTF8 is needed (RFC 6531): a non-ASCII address or message.
    pub fn needs_smtputf8(&self) -> bool {
        self.smtputf8 || !self.mail_from.is_ascii() || self.rcpts.iter().any(|r| !r.is_ascii())
    }

    /// Every path is safe inside a command line.
    pub fn paths_safe(&self) -> bool {
        (self.mail_from.is_empty() || wire::safe_path(&self.mail_from))
            && !self.rcpts.is_empty()
            && self.rcpts.iter().all(|r| wire::safe_path(r))
    }
}

/// How one recipient's part of a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// Accepted: 250 after the final dot (or written to the outbox).
    Delivered(String),
    /// Refused by the server, or by a local check before anything was sent, classified.
    Refused {
        /// What the reply says about the address, the sender or the moment.
        class: Class,
        /// The reply (code and text).
        reply: String,
    },
    /// Not delivered and nothing learned about the recipient: the connection was lost before
    /// the final dot, or the server closed it. `throttled`: the destination said 421, so it
    /// must be backed off and the attempt does not count against the recipient's retries.
    NotSent {
        /// What happened.
        why: String,
        /// The destination answered 421.
        throttled: bool,
    },
    /// The final dot went out and no reply came: it may have been delivered.
    Unknown(String),
}

impl RcptOutcome {
    /// The reply, or why there was none (what records, logs and the accounting file say).
    pub fn text(&self) -> &str {
        match self {
            RcptOutcome::Delivered(r) | RcptOutcome::Refused { reply: r, .. } => r,
            RcptOutcome::NotSent { why, .. } | RcptOutcome::Unknown(why) => why,
        }
    }
}

/// Why a session can carry no more transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// The connection was lost (reset, EOF, timeout).
    Lost(String),
    /// The server said 421 (closing): the destination is throttling us.
    Closing(String),
    /// Nothing will work through this transport (outbox unwritable, disk full).
    Fatal(String),
}

impl Broken {
    /// The outcome of a transaction that had not reached its final dot.
    pub fn not_sent(&self) -> RcptOutcome {
        match self {
            Broken::Lost(w) => RcptOutcome::NotSent {
                why: format!("connection lost: {w}"),
                throttled: false,
            },
            Broken::Closing(r) => RcptOutcome::NotSent {
                why: format!("server closing: {r}"),
                throttled: true,
            },
            Broken::Fatal(w) => RcptOutcome::NotSent {
                why: w.clone(),
                throttled: false,
            },
        }
    }
}

/// Which server a session talks to (for the accounting file and the per-host pool).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The host name connected to (an MX host, or the relay).
    pub host: Arc<str>,
    /// Its address.
    pub addr: Option<std::net::SocketAddr>,
    /// Our side's address: the source IP the server sees.
    pub local: Option<std::net::IpAddr>,
    /// STARTTLS (or implicit TLS) is on.
    pub tls: bool,
}

/// Where a lane's sessions go.
#[derive(Clone)]
pub enum Connector {
    /// An SMTP relay.
    Smtp(Endpoint),
    /// Each recipient domain's MX hosts.
    Mx(Arc<mx::Mx>),
    /// `outbox:DIR`.
    Outbox(PathBuf),
    /// In memory (tests, benches).
    Stub(Arc<stub::Stub>),
}

impl Connector {
    /// The transport a lane's settings name (direct delivery starts its resolver and opens
    /// its accounting file here, so a bad one stops the lane before anything is claimed).
    pub fn for_lane(s: &LaneSettings) -> crate::error::Result<Connector> {
        Ok(match &s.transport {
            TransportSpec::Smtp { .. } => {
                Connector::Smtp(Endpoint::for_lane(s).expect("an smtp transport has an endpoint"))
            }
            TransportSpec::Outbox(dir) => Connector::Outbox(dir.clone()),
            TransportSpec::Mx => Connector::Mx(Arc::new(
                mx::Mx::for_lane(s).map_err(crate::error::Error::Lane)?,
            )),
        })
    }

    /// The direct-delivery transport, if that is what this is.
    pub fn mx(&self) -> Option<&Arc<mx::Mx>> {
        match self {
            Connector::Mx(m) => Some(m),
            _ => None,
        }
    }

    /// Human-readable destination (`relay host:port`, `outbox DIR`).
    pub fn describe(&self) -> String {
        match self {
            Connector::Smtp(ep) => format!("relay {}:{}", ep.host, ep.port),
            Connector::Mx(m) => format!("MX hosts (port {})", m.port()),
            Connector::Outbox(d) => format!("outbox {}", d.display()),
            Connector::Stub(_) => "stub".into(),
        }
    }

    /// Connections worth opening at most: writing files gains nothing past a few.
    pub fn max_sessions(&self, configured: usize) -> usize {
        match self {
            Connector::Smtp(_) | Connector::Mx(_) | Connector::Stub(_) => configured,
            Connector::Outbox(_) => configured.min(4),
        }
    }

    /// Opens a session (connect, greet, EHLO, STARTTLS, AUTH for SMTP). Direct delivery
    /// opens its sessions per MX host set instead ([`mx::Pool::open`]).
    pub async fn open<T>(&self) -> Result<Session<T>, SmtpError> {
        let kind = match self {
            Connector::Smtp(ep) => {
                let conn = Connection::open(ep).await?;
                let peer = Peer {
                    host: Arc::from(ep.host.as_str()),
                    addr: conn.peer(),
                    local: conn.local().map(|a| a.ip()),
                    tls: conn.tls,
                };
                return Ok(Session::smtp(conn, ep.timeouts, Some(peer)));
            }
            Connector::Mx(_) => {
                return Err(SmtpError::Policy(
                    "direct delivery opens sessions per MX host set".into(),
                ))
            }
            Connector::Outbox(dir) => Kind::Outbox {
                dir: dir.clone(),
                done: Default::default(),
                broken: None,
            },
            Connector::Stub(s) => Kind::Stub {
                stub: s.clone(),
                done: Default::default(),
            },
        };
        Ok(Session {
            kind,
            opened: Instant::now(),
            used: 0,
            peer: None,
            permit: None,
        })
    }
}

type Results<T> = std::collections::VecDeque<(T, Vec<RcptOutcome>)>;

enum Kind<T> {
    // Boxed: the SMTP session is an order of magnitude bigger than the others.
    Smtp(Box<SmtpSession<T>>),
    Outbox {
        dir: PathBuf,
        done: Results<T>,
        broken: Option<Broken>,
    },
    Stub {
        stub: Arc<stub::Stub>,
        done: Results<T>,
    },
}

/// An open session of any transport, with the use counters a pool needs.
pub struct Session<T> {
    kind: Kind<T>,
    opened: Instant,
    used: u32,
    peer: Option<Peer>,
    /// A place under the pool's connection cap ([`mx::Pool`]), freed when the session goes.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<T> Session<T> {
    /// A session on an open SMTP connection.
    pub fn smtp(conn: Connection, t: crate::config::Timeouts, peer: Option<Peer>) -> Session<T> {
        Session {
            kind: Kind::Smtp(Box::new(SmtpSession::new(conn, t))),
            opened: Instant::now(),
            used: 0,
            peer,
            permit: None,
        }
    }

    /// The server this session talks to (`None` for an outbox or the stub).
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Queues a transaction (see [`SmtpSession::submit`]); `tag` comes back with its result.
    pub async fn submit(&mut self, tag: T, env: &Envelope, msg: Vec<u8>) {
        self.used += 1;
        match &mut self.kind {
            Kind::Smtp(s) => s.submit(tag, env, &msg).await,
            Kind::Outbox { dir, done, broken } => {
                let n = env.rcpts.len();
                if let Some(b) = broken {
                    done.push_back((tag, vec![b.not_sent(); n]));
                    return;
                }
                let (d, name) = (dir.clone(), env.label.clone());
                let res = tokio::task::spawn_blocking(move || outbox::write(&d, &name, &msg)).await;
                let written = match res {
                    Ok(Ok(path)) => Ok(path),
                    Ok(Err(e)) => Err(format!("cannot write to outbox {}: {e}", dir.display())),
                    Err(e) => Err(format!("outbox writer failed: {e}")),
                };
                let o = match written {
                    Ok(path) => {
                        RcptOutcome::Delivered(format!("250 written to {}", path.display()))
                    }
                    Err(why) => {
                        // Disk full, unwritable: nothing else will get through either.
                        let b = Broken::Fatal(why);
                        let o = b.not_sent();
                        *broken = Some(b);
                        o
                    }
                };
                done.push_back((tag, vec![o; n]));
            }
            Kind::Stub { stub, done } => {
                let res = stub.accept(env, &msg);
                done.push_back((tag, res));
            }
        }
    }

    /// The next result in submission order; `None` when nothing is outstanding.
    pub async fn next_result(&mut self) -> Option<(T, Vec<RcptOutcome>)> {
        match &mut self.kind {
            Kind::Smtp(s) => s.next_result().await,
            Kind::Outbox { done, .. } | Kind::Stub { done, .. } => done.pop_front(),
        }
    }

    /// Reads replies that have arrived without sending (see [`SmtpSession::read_ahead`]);
    /// whether a result is ready to hand out.
    pub async fn read_ahead(&mut self) -> bool {
        match &mut self.kind {
            Kind::Smtp(s) => s.read_ahead().await,
            Kind::Outbox { done, .. } | Kind::Stub { done, .. } => !done.is_empty(),
        }
    }

    /// Whether submitting the next message before reading this one's result saves a round
    /// trip.
    pub fn pipelining(&self) -> bool {
        match &self.kind {
            Kind::Smtp(s) => s.pipelining(),
            _ => false,
        }
    }

    /// Why this session can carry no more transactions, if so.
    pub fn broken(&self) -> Option<&Broken> {
        match &self.kind {
            Kind::Smtp(s) => s.broken(),
            Kind::Outbox { broken, .. } => broken.as_ref(),
            Kind::Stub { .. } => None,
        }
    }

    /// May carry another message under the pool limits (and is not broken).
    pub fn reusable(&self, max_messages: u32, max_age: Duration) -> bool {
        self.broken().is_none() && self.used < max_messages && self.opened.elapsed() < max_age
    }

    /// Transactions submitted so far.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Ends the session (QUIT for SMTP).
    pub async fn close(self) {
        if let Kind::Smtp(s) = self.kind {
            s.close().await;
        }
    }
}
