//! The SMTP submission listener of `blast serve` (RFC 6409): authenticated clients hand in
//! transactional mail, each message goes to the priority queue through [`AcceptRequest`],
//! and the client gets `250` only once the queue says the message is durable. The same code
//! in inbox mode ([`SubmissionSettings::inbox`]) is the bounce inbox: the internet-facing
//! defences below are the ones an inbox needs too.
//!
//! - `mod.rs`     settings, the accept loop (connection limits), handle, counters
//! - `session.rs` one connection: EHLO, STARTTLS, AUTH, MAIL/RCPT
//! - `data.rs`    DATA: body checks, added headers, hand-off to the queue
//! - `policy.rs`  relay networks, where AUTH is allowed, per-IP counts, failed-AUTH blocks
//! - `headers.rs` `From:` domains, adding `Date:` / `Message-ID:`
//!
//! Decisions (beyond the RFCs):
//! - Not an open relay: MAIL and RCPT get `530 5.7.0` unless the session authenticated or
//!   the client is in `allow_networks`. Loopback is not exempt.
//! - AUTH (PLAIN, LOGIN) only over TLS or from loopback; elsewhere `538 5.7.11`.
//! - An authenticated user sends only as its domains: envelope sender (`553 5.7.1` at MAIL)
//!   and every `From:` address (`550 5.7.1` after DATA; exactly one `From:` is required).
//!   The null sender `<>` is refused for authenticated users (`553 5.7.1`): a submission
//!   client originates mail, a bounce from it could not be attributed to a domain. Clients
//!   in `allow_networks` are trusted relays: no domain checks, `<>` allowed.
//! - SMTP smuggling: a bare CR or LF anywhere in DATA rejects the message with `550 5.5.2`
//!   after the body was read to the real end (CRLF "." CRLF); nothing else ends DATA, so a
//!   smuggled second message is just part of the rejected body. Reading on (rather than
//!   closing) keeps the session in sync and cannot accept anything early.
//! - A body over `max_message_size` is read to its end without being stored, then `552`;
//!   one over four times the limit is cut off (`552` and close) so it cannot stream forever.

mod data;
mod headers;
mod policy;
mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::users::Users;
use crate::shutdown::Shutdown;
use crate::store::queue::NewMessage;
pub use policy::{auth_permitted, in_networks};

/// How long [`SubmissionHandle::shutdown`] lets open sessions finish before closing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the listener behaves. Build with `SubmissionSettings { .., ..Default::default() }`.
#[derive(Clone)]
pub struct SubmissionSettings {
    /// Address to listen on (default `127.0.0.1:2587`).
    pub listen: SocketAddr,
    /// Name in the greeting and EHLO reply, and the domain of added `Message-ID`s.
    pub hostname: String,
    /// STARTTLS is offered iff this is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest message (dot-unstuffed octets; default 25 MiB), advertised as SIZE; larger
    /// gets `552 5.3.4`.
    pub max_message_size: usize,
    /// Recipients per message (default 100); more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Open connections in total (default 200); more get `421 4.7.0` and are closed.
    pub max_connections: usize,
    /// Open connections per client IP (default 20); more get `421 4.7.0`.
    pub max_connections_per_ip: usize,
    /// Longest command line, CRLF included (default 1000; RFC 5321 needs at least 512);
    /// longer gets `500 5.5.2`.
    pub max_line: usize,
    /// A client silent this long gets `421` and is closed (default 300 s).
    pub idle_timeout: Duration,
    /// CIDRs `(network, prefix length)` whose clients may relay without AUTH (default none).
    pub allow_networks: Vec<(IpAddr, u8)>,
    /// Failed AUTHs per client IP within `auth_block` before AUTH from it is refused
    /// (default 5).
    pub auth_fail_limit: u32,
    /// How long a client IP stays blocked (`421 4.7.0` to AUTH), and the window in which
    /// its failures are counted (default 300 s).
    pub auth_block: Duration,
    /// Inbox mode (the bounce inbox, [`crate::serve::inbox`]): no AUTH, anyone may send,
    /// only the addresses these rules accept are recipients, the message is kept as
    /// received. `None`: submission.
    pub inbox: Option<Arc<crate::serve::inbox::Rules>>,
}

impl Default for SubmissionSettings {
    fn default() -> Self {
        SubmissionSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 2587)),
            hostname: "localhost".to_string(),
            tls: None,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 200,
            max_connections_per_ip: 20,
            max_line: 1000,
            idle_timeout: Duration::from_secs(300),
            allow_networks: Vec::new(),
            auth_fail_limit: 5,
            auth_block: Duration::from_secs(300),
            inbox: None,
        }
    }
}

impl std::fmt::Debug for SubmissionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmissionSettings")
            .field("listen", &self.listen)
            .field("hostname", &self.hostname)
            .field("tls", &self.tls.is_some())
            .field("max_message_size", &self.max_message_size)
            .field("max_recipients", &self.max_recipients)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_line", &self.max_line)
            .field("idle_timeout", &self.idle_timeout)
            .field("allow_networks", &self.allow_networks)
            .field("auth_fail_limit", &self.auth_fail_limit)
            .field("auth_block", &self.auth_block)
            .field("inbox", &self.inbox.is_some())
            .finish()
    }
}

/// One accepted message: what the queue stores, plus the client it came from.
///
/// `msg.data` is CRLF lines, dot-unstuffed, without the final ".", with `Date:` and
/// `Message-ID:` added at the top if they were missing; `msg.user` is `None` when relayed
/// from an `allow_networks` client; `msg.eight_bit` is MAIL FROM's `BODY=8BITMIME` or a
/// body with octets >= 0x80.
#[derive(Clone, Debug)]
pub struct Submission {
    /// The message and its envelope, as the queue store receives it.
    pub msg: NewMessage,
    /// The client's address.
    pub client: SocketAddr,
}

/// A message for the queue: the listener answers `250` only after `reply` says the message
/// is durable (`Ok(queue id)`); `Err(reason)` or a dropped reply gives the client `451 4.3.0`.
pub struct AcceptRequest {
    /// The message.
    pub msg: Submission,
    /// Where the queue answers.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Counters since start (all `Relaxed`: for display and tests, not for synchronisation).
#[derive(Debug, Default)]
pub struct SubmissionStats {
    /// Connections accepted (including those refused with 421 for limits).
    pub connections: AtomicU64,
    /// Connections refused for the total or per-IP limit.
    pub connections_refused: AtomicU64,
    /// Messages the queue accepted (answered 250).
    pub accepted: AtomicU64,
    /// MAIL/RCPT refused because the client was neither authenticated nor allowed to relay.
    pub rejected_relay: AtomicU64,
    /// Messages rejected after DATA (bare CR/LF, size, `From:` domain, queue error).
    pub rejected_messages: AtomicU64,
    /// Failed AUTH attempts (535).
    pub auth_failures: AtomicU64,
    /// AUTH refused because the client IP is blocked.
    pub auth_blocked: AtomicU64,
    /// Bytes a client pipelined after STARTTLS, discarded unread.
    pub discarded_after_starttls: AtomicU64,
}

impl SubmissionStats {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// State shared by the accept loop and all sessions.
struct Shared {
    settings: SubmissionSettings,
    users: Arc<Users>,
    accept: mpsc::Sender<AcceptRequest>,
    stats: Arc<SubmissionStats>,
    per_ip: policy::ConnCounts,
    auth_failures: policy::AuthFailures,
    open: AtomicUsize,
    shutdown: Shutdown,
}

/// A running listener. Dropping it stops accepting (without waiting for sessions).
pub struct SubmissionHandle {
    /// The address the listener is bound to (the real port when started on port 0).
    pub local_addr: SocketAddr,
    /// Live counters.
    pub stats: Arc<SubmissionStats>,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SubmissionHandle {
    /// Stops accepting connections, tells idle sessions `421 4.3.2` (a session in the middle
    /// of a transaction finishes it first), and closes whatever is still open after a
    /// grace period.
    pub async fn shutdown(self) {
        self.shared.shutdown.stop();
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Binds the listener and starts accepting. Each message goes to `accept`.
pub async fn start(
    settings: SubmissionSettings,
    users: Arc<Users>,
    accept: mpsc::Sender<AcceptRequest>,
) -> std::io::Result<SubmissionHandle> {
    let listener = TcpListener::bind(settings.listen).await?;
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(SubmissionStats::default());
    let shared = Arc::new(Shared {
        auth_failures: policy::AuthFailures::new(settings.auth_fail_limit, settings.auth_block),
        settings,
        users,
        accept,
        stats: stats.clone(),
        per_ip: policy::ConnCounts::default(),
        open: AtomicUsize::new(0),
        shutdown: Shutdown::default(),
    });
    let (stop, stop_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
    Ok(SubmissionHandle {
        local_addr,
        stats,
        shared,
        stop,
        task,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    // Owning the session tasks here means dropping the set aborts whatever is left.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            // Err too: the handle was dropped without shutdown().
            _ = &mut stop => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    sessions.spawn(session::serve(stream, peer, shared.clone()));
                }
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
    drop(listener);
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        sessions.shutdown().await;
    }
}
