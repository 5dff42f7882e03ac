//! Wiring of `blast serve`: the submission listener hands messages to the priority queue
//! writer; the priority lane delivers them; the control socket answers `blast queue`.
//!
//! Isolation inside one process: [`main`] runs the priority side on its own tokio runtime
//! (its own OS threads) and blast work — scheduled campaigns — on a second runtime with
//! `blast_threads` workers at the lowest CPU priority (nice 19), so a newsletter can neither
//! queue in front of a password reset nor take its CPU.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::config::{self as serve_config, ServeSettings};
use super::control;
use super::submission::{self, AcceptRequest, SubmissionHandle, SubmissionSettings};
use super::users::Users;
use crate::config::TransportSpec;
use crate::error::{Error, Result};
use crate::lane::priority::{self, Cmd, PriorityLane};
use crate::store::queue::{format_id, QueueStore};
use crate::token::TokenSettings;

/// A running server (in-process: tests and benches use this directly).
pub struct Serve {
    /// The submission listener.
    pub submission: SubmissionHandle,
    /// The one-click unsubscribe endpoint (`[serve] http`).
    pub http: Option<super::http::HttpHandle>,
    /// The bounce inbox (`[serve] bounce_inbox`).
    pub inbox: Option<submission::SubmissionHandle>,
    /// The token keys (`[serve] secret_file`), for the endpoint and scheduled runs.
    pub tokens: Option<Arc<TokenSettings>>,
    /// The priority lane.
    pub lane: PriorityLane,
    control: tokio::task::JoinHandle<()>,
    bridge: tokio::task::JoinHandle<()>,
    state_dir: PathBuf,
}

/// The listener settings from the config (TLS files read here).
fn listener_settings(s: &ServeSettings) -> Result<SubmissionSettings> {
    let l = &s.listener;
    let tls = match &l.tls {
        None => None,
        Some((cert, key)) => Some(
            crate::transport::tls::server_config_from_pem(cert, key)
                .map_err(|e| Error::Config(format!("{}: serve.tls_cert: {e}", s.file.display())))?,
        ),
    };
    Ok(SubmissionSettings {
        listen: l.listen,
        hostname: l.hostname.clone(),
        tls,
        max_message_size: l.max_message_size,
        max_recipients: l.max_recipients,
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        idle_timeout: l.idle_timeout,
        allow_networks: l.allow_networks.clone(),
        auth_fail_limit: l.auth_fail_limit,
        auth_block: l.auth_block,
        ..SubmissionSettings::default()
    })
}

fn load_users(s: &ServeSettings) -> Result<Users> {
    if !s.users.exists() && !s.listener.allow_networks.is_empty() {
        // Relay-only set-up: clients are trusted by network, nobody authenticates.
        return Users::parse(&s.users, "").map_err(|e| Error::Config(e.to_string()));
    }
    Users::load(&s.users).map_err(|e| {
        Error::Config(format!(
            "{e} (create users with `blast user add NAME --domain DOMAIN --users {}`)",
            s.users.display()
        ))
    })
}

/// Starts every part of the server on the current runtime. Holds the priority queue's lock:
/// a second serve on the same state dir fails here with [`Error::Locked`].
pub async fn start(s: &ServeSettings) -> Result<Serve> {
    // First: a key file others can read is refused before anything listens.
    let tokens = s.token_settings()?.map(Arc::new);
    let users = Arc::new(load_users(s)?);
    let listener = listener_settings(s)?;
    let store = Arc::new(QueueStore::open(&s.state_dir, Duration::ZERO)?);
    let log: priority::Log = Arc::new(|m| eprintln!("blast serve: {m}"));
    let signers = crate::sign::Signers::from_settings(&s.priority_dkim);
    for (_, d) in &s.priority_dkim {
        if let Some(w) = &d.warning {
            eprintln!("warning: {w}");
        }
    }
    let lane = priority::start(
        s.priority.clone(),
        store,
        s.listener.hostname.clone(),
        log,
        Arc::new(signers),
    )?;
    // Opened before the control socket, which hands `blast bounces` requests to it.
    let inbox_parts = match (s.bounce_inbox, &tokens, &s.bounce_domain) {
        (Some(listen), Some(t), Some(domain)) => {
            let rules = Arc::new(super::inbox::Rules::new(
                Some(t.clone()),
                domain,
                &s.feedback_addresses,
                s.bounce_policy.clone(),
            ));
            // An import running without serve holds it, and lets go every few seconds (it
            // needs the global state meanwhile: taken after this).
            let store = super::inbox::InboxStore::open_wait(
                &s.state_dir,
                std::time::Duration::from_secs(60),
            )?;
            Some((listen, Arc::new(store), rules))
        }
        // The config requires [bounces] domain (and so a secret file) beside bounce_inbox.
        _ => None,
    };
    // serve owns the global state while it runs; everyone else asks it.
    let global = crate::owner::Global::held(&s.state_dir)?;
    // In a fleet, serve keeps the state dir's suppression list in sync with the others'
    // (its unsubscribes and bounces out, theirs in) for as long as it runs.
    if let Some(cs) = &s.cluster {
        let cluster = crate::cluster::Cluster::new(cs)?;
        cluster.check_policy().await?;
        let sync = crate::cluster::suppression_sync::SuppressionSync::new(cluster, global.clone());
        // Ends with the process (each round is durable on its own).
        tokio::spawn(sync.run(Arc::new(crate::shutdown::Shutdown::default())));
    }
    let control = control::start(
        &s.state_dir,
        lane.tx.clone(),
        lane.stats.clone(),
        lane.store.clone(),
        global.clone(),
        inbox_parts
            .as_ref()
            .map(|(_, st, r)| (st.clone(), r.clone())),
    )
    .map_err(|e| Error::io(format!("{}", control::path_in(&s.state_dir).display()), e))?;
    let (accept_tx, accept_rx) = mpsc::channel(1024);
    let bridge = tokio::spawn(bridge(accept_rx, lane.tx.clone()));
    let submission = submission::start(listener, users.clone(), accept_tx)
        .await
        .map_err(|e| Error::io(format!("serve.submission {}", s.listener.listen), e))?;
    let inbox = match inbox_parts {
        Some((listen, store, rules)) => {
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(super::inbox::run(store, global.clone(), rules.clone(), rx));
            let settings = SubmissionSettings {
                listen,
                inbox: Some(rules),
                ..listener_settings(s)?
            };
            Some(
                submission::start(settings, users.clone(), tx)
                    .await
                    .map_err(|e| {
                        Error::io(
                            format!(
                                "{}: serve.bounce_inbox: cannot listen on {listen}",
                                s.file.display()
                            ),
                            e,
                        )
                    })?,
            )
        }
        None => None,
    };
    let http = match (s.http, &tokens, s.unsubscribe_path()) {
        (Some(listen), Some(t), Some(path)) => Some(
            super::http::start(
                listen,
                &path,
                s.click_path().as_deref(),
                t.clone(),
                global,
                Arc::default(),
            )
            .await
            .map_err(|e| {
                Error::io(
                    format!(
                        "{}: serve.http: cannot listen on {listen}",
                        s.file.display()
                    ),
                    e,
                )
            })?,
        ),
        // The config requires a secret file and an [unsubscribe] url beside `http`.
        _ => None,
    };
    Ok(Serve {
        submission,
        inbox,
        http,
        tokens,
        lane,
        control,
        bridge,
        state_dir: s.state_dir.clone(),
    })
}

/// Hands each submitted message to the queue writer, in order; a small task per message
/// waits for its durable id so the writer can group-commit many sessions at once.
async fn bridge(mut rx: mpsc::Receiver<AcceptRequest>, lane: mpsc::Sender<Cmd>) {
    while let Some(req) = rx.recv().await {
        let msg = req.msg.msg;
        let (tx, done) = oneshot::channel();
        if lane.send(Cmd::Accept { msg, reply: tx }).await.is_err() {
            let _ = req.reply.send(Err("server is stopping".into()));
            continue;
        }
        let reply = req.reply;
        tokio::spawn(async move {
            let r = match done.await {
                Ok(r) => r.map(format_id),
                Err(_) => Err("server is stopping".into()),
            };
            let _ = reply.send(r);
        });
    }
}

impl Serve {
    /// Graceful stop: no new sessions or messages; deliveries in progress get `grace`; the
    /// queue is flushed; the control socket is removed.
    pub async fn shutdown(self, grace: Duration) {
        if let Some(h) = self.inbox {
            h.shutdown().await;
        }
        if let Some(h) = self.http {
            h.shutdown().await;
        }
        self.submission.shutdown().await;
        let _ = self.bridge.await;
        self.control.abort();
        self.lane.shutdown(grace).await;
        let _ = std::fs::remove_file(control::path_in(&self.state_dir));
    }
}

/// Lowers the calling thread's CPU priority (Linux: `setpriority` on a thread id affects
/// only that thread). Best effort: without permission it stays as it is.
fn nice_this_thread(n: i32) {
    // SAFETY: setpriority has no memory-safety preconditions; 0 = the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, n);
    }
}

/// The priority lane's threads run this much ahead of the default when the process may
/// raise priorities (root, CAP_SYS_NICE): a bulk send beside serve (nice 10 by default) then
/// never competes with a password reset for a core.
const PRIORITY_NICE: i32 = -5;

/// Raises the calling thread to [`PRIORITY_NICE`] if it is allowed to; without the right
/// (`EPERM`), or when it already runs higher, it stays as it is — never lower.
fn raise_this_thread() {
    // SAFETY: getpriority/setpriority take plain integers; 0 = the calling thread.
    unsafe {
        *libc::__errno_location() = 0;
        let cur = libc::getpriority(libc::PRIO_PROCESS, 0);
        if cur > PRIORITY_NICE {
            libc::setpriority(libc::PRIO_PROCESS, 0, PRIORITY_NICE);
        }
    }
    // After the nice value: the slice request keeps whatever nice the thread has now.
    crate::sched::short_slice_this_thread();
}

/// A scheduled run's thread: nice 19 (what `blast status` and `ps` show) and `SCHED_IDLE`,
/// so it runs only on a core nothing else wants (see [`crate::sched`]).
fn idle_this_thread() {
    nice_this_thread(19);
    crate::sched::idle_this_thread();
}

/// `blast serve --config FILE`: runs until SIGTERM or Ctrl-C; returns the exit code.
pub fn main(config: &Path) -> Result<i32> {
    let s = serve_config::load(config)?;
    // The main thread first: the stores it opens start their flusher threads from it.
    raise_this_thread();
    // Every thread of this runtime (workers, its blocking pool, the journal thread they
    // start) is the priority lane's.
    let priority_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("blast-priority")
        .on_thread_start(raise_this_thread)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start a runtime", e))?;
    let blast_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.blast_threads)
        .thread_name("blast-lane")
        .on_thread_start(idle_this_thread)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start a runtime", e))?;
    let code = priority_rt.block_on(async {
        let serve = start(&s).await?;
        let relay = match &s.priority.transport {
            TransportSpec::Smtp { host, port, .. } => format!("smtp://{host}:{port}"),
            TransportSpec::Outbox(d) => format!("outbox:{}", d.display()),
            TransportSpec::Mx => "mx (direct)".to_string(),
        };
        let http = match (&serve.http, s.unsubscribe_path()) {
            (Some(h), Some(path)) => format!(" · one-click unsubscribe on http://{}{path}", h.local_addr),
            _ => String::new(),
        };
        let http = match &serve.inbox {
            Some(i) => format!("{http} · bounce inbox on {}", i.local_addr),
            None => http,
        };
        println!(
            "blast serve: submission on {}{http} · priority lane via {relay} ({} connections) · state in {}",
            serve.submission.local_addr,
            s.priority.connections,
            s.state_dir.display()
        );
        let scheduler = super::scheduler::start(&s, serve.tokens.clone(), blast_rt.handle())?;
        crate::shutdown::signal().await;
        eprintln!("blast serve: stopping (deliveries in progress get {:?})", s.shutdown_timeout);
        scheduler.stop().await;
        serve.shutdown(s.shutdown_timeout).await;
        Ok::<i32, Error>(0)
    })?;
    blast_rt.shutdown_timeout(Duration::from_secs(5));
    Ok(code)
}
