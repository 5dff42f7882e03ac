//! A local SMTP sink with fault injection: `blast sink`, and the server the tests and
//! benches send to.
//!
//! It accepts everything (it is a test instrument, not an MTA), optionally writes each
//! message to `<maildir>/<seq>.eml`, keeps messages in memory for tests, records wire
//! problems it sees (bare LF, long lines…) instead of hiding them, and can misbehave on
//! purpose per recipient ([`Rule`]) so a sender's retry logic can be tested.
//!
//! - `mod.rs`     config, handle, accept loop, `blast sink` command
//! - `rule.rs`    [`Rule`] / [`Action`] and their CLI form
//! - `session.rs` one connection: commands, faults, violations, STARTTLS, AUTH (the connection,
//!   DATA reader and parsing are [`crate::smtp_server`], shared with the submission listener)
//!
//! Optional STARTTLS ([`SinkConfig::tls`], RFC 3207) and AUTH PLAIN ([`SinkConfig::auth`],
//! RFC 4954) let tests check a client's TLS and authentication policy against a real
//! server: each [`Received`] says whether it came over TLS and as which user, and
//! [`SinkHandle::auth_attempts`] lists every AUTH the sink saw.

mod rule;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

pub use rule::{Action, Rule, RuleParseError};

/// Connections beyond this many at once get `421` and are closed: bounds tasks and
/// buffers (64 KiB each) if a client leaks connections.
const MAX_CONNECTIONS: usize = 1024;

/// How the sink behaves. Build with `SinkConfig { .., ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Write each accepted message as `<dir>/<seq>.eml` (temp file + rename, so a
    /// reader never sees half a file). Numbering continues after existing files.
    pub maildir: Option<PathBuf>,
    /// Keep accepted messages in memory ([`SinkHandle::received`]) and count RCPT
    /// attempts per recipient. Off for long-running `blast sink` to bound memory.
    pub record: bool,
    /// Advertise PIPELINING. (Pipelined input is handled either way, as real servers do.)
    pub pipelining: bool,
    /// Advertise SMTPUTF8 and accept the `SMTPUTF8` MAIL parameter.
    pub smtputf8: bool,
    /// SIZE limit in octets (dot-unstuffed message); larger messages get 552.
    pub max_size: usize,
    /// Fault-injection rules, first match wins.
    pub rules: Vec<Rule>,
    /// Name used in the greeting and EHLO reply.
    pub hostname: String,
    /// Offer STARTTLS with this server config. After the handshake the session starts
    /// over (a new EHLO is required) and bytes the client pipelined after `STARTTLS`
    /// are discarded (RFC 3207 §4.2).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With `tls`: speak TLS from the first byte (`smtps`, RFC 8314) instead of offering
    /// STARTTLS.
    pub implicit_tls: bool,
    /// `(user, password)`: advertise `AUTH PLAIN` (with or without TLS: the sink is a test
    /// instrument; [`AuthAttempt::tls`] and [`Received::tls`] record what happened), check
    /// credentials (`535 5.7.8` on mismatch) and refuse MAIL before a successful AUTH
    /// (`530 5.7.0`).
    pub auth: Option<(String, String)>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            maildir: None,
            record: true,
            pipelining: true,
            smtputf8: true,
            max_size: 10 * 1024 * 1024,
            rules: Vec::new(),
            hostname: "sink.blast.test".to_string(),
            tls: None,
            implicit_tls: false,
            auth: None,
        }
    }
}

/// One `AUTH` command the sink answered (recorded when `record` is on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthAttempt {
    /// The authentication identity the client gave (empty if the response did not decode).
    pub user: String,
    /// The session was TLS-protected when the AUTH came.
    pub tls: bool,
    /// The credentials matched (`235`).
    pub ok: bool,
}

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Received {
    /// When the final dot was received.
    pub at: Instant,
    /// The MAIL FROM address (without angle brackets; empty for the null sender).
    pub mail_from: String,
    /// Accepted recipients only, as the client spelled them.
    pub rcpt_to: Vec<String>,
    /// The message as the client sent it: dot-unstuffed, line endings kept as sent,
    /// without the final `.\r\n`.
    pub data: Vec<u8>,
    /// Wire problems seen in this transaction: `bare LF at line N`, `bare CR at line N`,
    /// `line N longer than 998 octets`, `NUL byte at line N`,
    /// `8bit data without BODY=8BITMIME`, `bare LF in command`, and lone dots that are
    /// not a valid end of data. Line numbers count body lines from 1.
    pub violations: Vec<String>,
    /// MAIL FROM carried `SMTPUTF8`.
    pub smtputf8: bool,
    /// MAIL FROM carried `BODY=8BITMIME`.
    pub body_8bitmime: bool,
    /// The reply the sink gave to the final dot: `Some(250)` normally, the rule's 2xx
    /// code for a `DataReply` rule, `None` for `DropAfterData` (no reply was sent).
    pub reply: Option<u16>,
    /// Sequence number: the `queued as` id and the `.eml` file name.
    pub seq: u64,
    /// The transaction ran over TLS (after STARTTLS).
    pub tls: bool,
    /// The user the session authenticated as (AUTH PLAIN), if any.
    pub authenticated: Option<String>,
    /// The client's address (the source IP a sender bound shows here).
    pub peer: Option<SocketAddr>,
}

/// A short line about each accepted message, for `blast sink`'s output.
struct Notice {
    seq: u64,
    from: String,
    rcpts: Vec<String>,
    size: usize,
    violations: usize,
}

/// Per-recipient counters behind one lock: RCPT attempts and how often each rule with
/// a `times` budget has been applied.
#[derive(Default)]
struct Counters {
    attempts: HashMap<String, u32>,
    /// recipient (lowercase) → uses per rule index.
    used: HashMap<String, Vec<u32>>,
}

/// What the rules decided for one RCPT TO.
enum RcptDecision {
    Normal,
    /// An RCPT-stage rule (index) applies now.
    Rcpt(usize),
    /// A DATA-stage rule (index) is a candidate for this transaction.
    Data(usize),
}

/// State shared by the accept loop, all connections and the handle.
struct Shared {
    config: SinkConfig,
    received: Mutex<Vec<Received>>,
    accepted: AtomicUsize,
    connections: AtomicUsize,
    /// Connections open now, and the most ever open at once.
    open: AtomicUsize,
    peak: AtomicUsize,
    seq: AtomicU64,
    counters: Mutex<Counters>,
    auth_attempts: Mutex<Vec<AuthAttempt>>,
    tls_handshakes: AtomicUsize,
    tls_failures: AtomicUsize,
    notify: Option<mpsc::Sender<Notice>>,
}

/// A poisoned lock only means another connection panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Counts the RCPT attempt and picks the first applicable rule.
    fn on_rcpt(&self, rcpt_lower: &str) -> RcptDecision {
        let rules = &self.config.rules;
        if rules.is_empty() && !self.config.record {
            return RcptDecision::Normal;
        }
        let mut c = lock(&self.counters);
        let attempt = match c.attempts.get_mut(rcpt_lower) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                c.attempts.insert(rcpt_lower.to_string(), 1);
                1
            }
        };
        for (i, rule) in rules.iter().enumerate() {
            if !rule.matches(rcpt_lower) {
                continue;
            }
            if let Some(t) = rule.times {
                let used = c.used.get(rcpt_lower).map_or(0, |v| v[i]);
                if used >= t {
                    continue;
                }
            }
            if !rule.fraction_hit(rcpt_lower, attempt) {
                continue;
            }
            if rule.action.at_rcpt() {
                Self::use_rule(&mut c, rules, i, rcpt_lower);
                return RcptDecision::Rcpt(i);
            }
            return RcptDecision::Data(i);
        }
        RcptDecision::Normal
    }

    /// A DATA-stage rule was applied to these recipients: spend their `times` budget.
    fn use_data_rule(&self, idx: usize, rcpts_lower: &[&str]) {
        let mut c = lock(&self.counters);
        for r in rcpts_lower {
            Self::use_rule(&mut c, &self.config.rules, idx, r);
        }
    }

    fn use_rule(c: &mut Counters, rules: &[Rule], idx: usize, rcpt_lower: &str) {
        if rules[idx].times.is_none() {
            return;
        }
        let v = c
            .used
            .entry(rcpt_lower.to_string())
            .or_insert_with(|| vec![0; rules.len()]);
        v[idx] += 1;
    }
}

/// A running sink. Dropping it also stops the sink (without waiting).
pub struct SinkHandle {
    /// The address the sink listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SinkHandle {
    /// Snapshot of accepted messages, in order of acceptance (empty unless `record`).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Number of accepted messages (counted even when `record` is off).
    pub fn count(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// The most connections that were open at once so far (a connection counts until the
    /// sink has finished with it, so a client's close is seen a moment late).
    pub fn peak_connections(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Total connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// How many RCPT TO commands named this recipient (case-insensitive), accepted or
    /// not. Counted only when `record` is on or rules are configured.
    pub fn attempts(&self, rcpt: &str) -> u32 {
        let key = rcpt.to_ascii_lowercase();
        lock(&self.shared.counters)
            .attempts
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// Every AUTH command answered so far, in order (empty unless `record`).
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        lock(&self.shared.auth_attempts).clone()
    }

    /// STARTTLS handshakes that completed.
    pub fn tls_handshakes(&self) -> usize {
        self.shared.tls_handshakes.load(Ordering::Relaxed)
    }

    /// STARTTLS handshakes that failed (e.g. the client rejected the certificate).
    pub fn tls_failures(&self) -> usize {
        self.shared.tls_failures.load(Ordering::Relaxed)
    }

    /// Kills the sink at once, as a relay that crashed: it stops listening and every open
    /// connection is dropped wherever its transaction is. What it received stays readable.
    pub fn kill(&self) {
        self.task.abort();
    }

    /// Stops accepting, closes every open connection and waits for the accept loop.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts a sink on `listen` (use port 0 for an ephemeral port; see [`SinkHandle::addr`]).
pub async fn start(listen: SocketAddr, config: SinkConfig) -> std::io::Result<SinkHandle> {
    start_with(listen, config, None).await
}

async fn start_with(
    listen: SocketAddr,
    config: SinkConfig,
    notify: Option<mpsc::Sender<Notice>>,
) -> std::io::Result<SinkHandle> {
    let seq = match &config.maildir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            last_seq(dir)?
        }
        None => 0,
    };
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        config,
        received: Mutex::new(Vec::new()),
        accepted: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        open: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        seq: AtomicU64::new(seq),
        counters: Mutex::new(Counters::default()),
        auth_attempts: Mutex::new(Vec::new()),
        tls_handshakes: AtomicUsize::new(0),
        tls_failures: AtomicUsize::new(0),
        notify,
    });
    let (stop, stop_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
    Ok(SinkHandle {
        addr,
        shared,
        stop,
        task,
    })
}

/// Highest `<n>.eml` already in the maildir, so a restarted sink never overwrites.
fn last_seq(dir: &Path) -> std::io::Result<u64> {
    let mut max = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let n = name
            .to_str()
            .and_then(|n| n.strip_suffix(".eml"))
            .and_then(|n| n.parse::<u64>().ok());
        max = max.max(n.unwrap_or(0));
    }
    Ok(max)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    // Owning the connection tasks here means shutdown (dropping the set) aborts them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // Err too: the handle was dropped without shutdown().
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
                    shared.peak.fetch_max(open, Ordering::SeqCst);
                    let busy = conns.len() >= MAX_CONNECTIONS;
                    let sh = shared.clone();
                    conns.spawn(async move {
                        session::serve(stream, sh.clone(), busy).await;
                        sh.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
    conns.shutdown().await;
}

/// `blast sink`: a local SMTP server that accepts everything, for trying blast out.
#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub listen: SocketAddr,
    /// Write each accepted message to DIR/<seq>.eml.
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,
    /// Fault injection, repeatable, first match wins. KIND:PATTERN[=ARG][;times=N][;fraction=F]
    /// e.g. "rcpt:*@bad.example=550 5.1.1 no such user", "data:*=451 4.3.0 try later;times=1",
    /// "drop-mid-data:*", "drop-after-data:*", "delay:*=200ms", "421:*@slow.example;fraction=0.5".
    #[arg(long = "rule", value_name = "RULE")]
    pub rules: Vec<Rule>,
    /// Do not advertise PIPELINING.
    #[arg(long)]
    pub no_pipelining: bool,
    /// Do not advertise SMTPUTF8.
    #[arg(long)]
    pub no_smtputf8: bool,
    /// Largest accepted message (bytes; k/M/G suffixes allowed).
    #[arg(long, default_value = "10M", value_parser = parse_size)]
    pub max_size: usize,
    /// Host name in the greeting and EHLO reply.
    #[arg(long, default_value = "sink.blast.test")]
    pub hostname: String,
    /// Offer STARTTLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require AUTH PLAIN as this user (needs --auth-password-env).
    #[arg(long, value_name = "USER", requires = "auth_password_env")]
    pub auth_user: Option<String>,
    /// Environment variable holding the AUTH password for --auth-user.
    #[arg(long, value_name = "VAR", requires = "auth_user")]
    pub auth_password_env: Option<String>,
}

impl SinkArgs {
    /// The [`SinkConfig`] these arguments describe, without TLS and AUTH (which need
    /// files and the environment: see [`SinkArgs::load_config`]). `record` is off: a
    /// long-running sink must not keep every message in memory.
    pub fn to_config(&self) -> SinkConfig {
        SinkConfig {
            maildir: self.maildir.clone(),
            record: false,
            pipelining: !self.no_pipelining,
            smtputf8: !self.no_smtputf8,
            max_size: self.max_size,
            rules: self.rules.clone(),
            hostname: self.hostname.clone(),
            tls: None,
            implicit_tls: false,
            auth: None,
        }
    }

    /// [`SinkArgs::to_config`] plus the certificate (read from its files) and the AUTH
    /// credentials (password from the environment).
    pub fn load_config(&self) -> std::io::Result<SinkConfig> {
        let mut config = self.to_config();
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(crate::transport::tls::server_config_from_pem(cert, key)?);
        }
        if let (Some(user), Some(var)) = (&self.auth_user, &self.auth_password_env) {
            let password = std::env::var(var).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("--auth-password-env: environment variable {var} is not set"),
                )
            })?;
            config.auth = Some((user.clone(), password));
        }
        Ok(config)
    }
}

/// `10M` → 10 MiB; plain numbers are bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1usize << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size {s:?} (e.g. 10M, 512k, 1000000)"))
}

/// Runs `blast sink` until Ctrl-C / SIGTERM: prints the listen address, then a line
/// per received message, or a count every few seconds when messages arrive too fast
/// to read.
pub async fn run(args: SinkArgs) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel(1024);
    let config = args.load_config()?;
    let (tls, auth) = (config.tls.is_some(), config.auth.is_some());
    let handle = start_with(args.listen, config, Some(tx)).await?;
    println!("blast sink listening on {}", handle.addr);
    if tls {
        println!("offering STARTTLS");
    }
    if let Some(user) = &args.auth_user.as_ref().filter(|_| auth) {
        println!("requiring AUTH PLAIN as {user}");
    }
    if let Some(dir) = &args.maildir {
        // join, not "{dir}/…": `--maildir out/` printed `out//<n>.eml`.
        println!("writing messages to {}", dir.join("<n>.eml").display());
    }
    for r in &args.rules {
        println!("rule: {r}");
    }
    if !handle.addr.ip().is_loopback() {
        eprintln!(
            "warning: the sink accepts mail from anyone who can reach {}",
            handle.addr
        );
    }

    // More than this many lines per tick is unreadable: switch to a periodic count.
    const LINES_PER_TICK: usize = 20;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut lines = 0;
    let mut last_count = 0;
    let mut quiet = false;
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(n) = rx.recv() => {
                lines += 1;
                if lines <= LINES_PER_TICK && !quiet {
                    let viol = if n.violations > 0 { format!(" ({} wire violations)", n.violations) } else { String::new() };
                    println!("#{} <{}> -> {} ({} bytes){viol}",
                        n.seq, n.from, n.rcpts.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(", "), n.size);
                }
            }
            _ = tick.tick() => {
                let count = handle.count();
                if lines > LINES_PER_TICK || (quiet && count > last_count) {
                    println!("{} messages received ({}/s)", count, (count - last_count) / 2);
                }
                quiet = lines > LINES_PER_TICK;
                lines = 0;
                last_count = count;
            }
        }
    }
    println!(
        "{} messages received over {} connections",
        handle.count(),
        handle.connections()
    );
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("x").is_err());
    }
}
