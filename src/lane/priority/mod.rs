//! The priority lane: delivers transactional mail from the priority queue
//! ([`crate::store::queue`]) through its own relay, source IP and connection pool, with no
//! rate limiter. Nothing here is shared with the blast lane: its own writer task, its own
//! scheduler, its own workers, its own channels — and `blast serve` runs it on its own
//! runtime threads, so a blast running in the same process cannot queue in front of it.
//!
//! Flow: accept → [`writer`] (stage + one flush per group, then answer) → [`sched`] (due
//! now or at a retry time) → workers ([`deliver`]) → writer (new state, DSNs built by [`dsn`])
//! → sched.

pub mod deliver;
pub mod direct;
pub mod dsn;
pub mod sched;
pub mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::config::LaneSettings;
use crate::store::queue::{Entry, NewMessage, QueueStore};

/// A request to the queue writer.
pub enum Cmd {
    /// Store a new message durably, then answer with its id.
    Accept {
        /// The message.
        msg: NewMessage,
        /// Answered after the flush.
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// An attempt ended: the entry's new state (and DSNs to enqueue).
    Update {
        /// The entry after the attempt.
        entry: Entry,
        /// Bounce messages to enqueue (null sender).
        dsns: Vec<NewMessage>,
    },
    /// `blast queue retry`: make deferred recipients due now (`None` = every message).
    RetryNow(Option<u64>),
    /// A worker could not read this message's state: try it again later.
    RetryLater(u64),
    /// `blast queue drop`: remove a message; answers whether it was queued.
    Drop(u64, oneshot::Sender<Result<bool, String>>),
}

/// Live counters of the priority lane (what `blast queue`, tests and benches read).
#[derive(Default, Debug)]
pub struct Stats {
    /// Messages accepted durably.
    pub accepted: AtomicU64,
    /// Recipients delivered (250 after the dot).
    pub delivered: AtomicU64,
    /// Recipient attempts deferred (4xx or connection trouble).
    pub deferred: AtomicU64,
    /// Recipients bounced (5xx) or failed after the retry schedule.
    pub bounced: AtomicU64,
    /// DSNs enqueued.
    pub dsns: AtomicU64,
    /// Group commits of the queue.
    pub flushes: AtomicU64,
    /// Dispatches that found no idle worker and waited in the job channel. Each worker owns
    /// one connection, so this is "waited for a connection of the priority pool".
    pub waited_for_worker: AtomicU64,
    /// The longest time a due message waited between dispatch and a worker taking it (µs).
    pub max_pickup_us: AtomicU64,
}

impl Stats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A running priority lane.
pub struct PriorityLane {
    /// Send requests (accept, queue commands) here.
    pub tx: mpsc::Sender<Cmd>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The queue (reads; every write goes through [`PriorityLane::tx`]).
    pub store: Arc<QueueStore>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<crate::shutdown::Shutdown>,
}

/// How a lane reports what it does (stderr in `serve`; tests can capture it).
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

/// Starts the lane on the current runtime: every queued message is due at once (a restart is
/// a retry), new ones arrive through [`PriorityLane::tx`].
pub fn start(
    settings: LaneSettings,
    store: Arc<QueueStore>,
    hostname: String,
    log: Log,
    signers: Arc<crate::sign::Signers>,
) -> crate::error::Result<PriorityLane> {
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(crate::shutdown::Shutdown::default());
    let settings = Arc::new(settings);
    let (tx, rx) = mpsc::channel(4096);
    let (sched_tx, sched_rx) = mpsc::unbounded_channel();
    let (job_tx, job_rx) = mpsc::unbounded_channel();
    let jobs = Arc::new(Mutex::new(job_rx));
    let idle = Arc::new(AtomicU64::new(0));

    let queued = store.list()?;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(sched::run(
        sched_rx,
        job_tx,
        queued,
        idle.clone(),
        stats.clone(),
    )));
    tasks.push(tokio::spawn(writer::run(
        store.clone(),
        rx,
        sched_tx,
        stats.clone(),
        log.clone(),
    )));
    let settings_for_connector = settings.clone();
    let connections = settings.connections;
    let ctx = Arc::new(deliver::Ctx {
        settings,
        store: store.clone(),
        writer: tx.clone(),
        stats: stats.clone(),
        hostname,
        log,
        idle,
        stop: stop.clone(),
        pool: if signers.is_empty() {
            None
        } else {
            Some(
                crate::pool::CpuPool::new("priority-sign", crate::pool::cores())
                    .map_err(|e| crate::error::Error::io("cannot start the signing threads", e))?,
            )
        },
        signers,
        unsigned_warned: Default::default(),
        connector: crate::transport::Connector::for_lane(&settings_for_connector)?,
        mx_pool: crate::transport::mx::Pool::new(connections),
    });
    for _ in 0..ctx.settings.connections {
        tasks.push(tokio::spawn(deliver::run(ctx.clone(), jobs.clone())));
    }
    Ok(PriorityLane {
        tx,
        stats,
        store,
        tasks,
        stop,
    })
}

impl PriorityLane {
    /// Stops: no new attempts start; attempts in progress get up to `grace` to finish and
    /// be recorded; then everything is flushed.
    pub async fn shutdown(self, grace: std::time::Duration) {
        self.stop.stop();
        drop(self.tx);
        let all = futures_join(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            // Still-open attempts stay in the queue: they are tried again on the next start.
        }
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
