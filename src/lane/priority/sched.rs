//! The priority lane's scheduler: the one place that knows where each queued message is —
//! waiting for its retry time, or out with a worker. So a message is never attempted by two
//! workers at once, and `blast queue retry` cannot double it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Stats;
use crate::store::now_ms;
use crate::store::queue::Entry;

/// What the writer tells the scheduler.
#[derive(Debug)]
pub enum Event {
    /// Durable and not done: due at this time (ms since the epoch).
    Due(u64, u64),
    /// Left the queue (done or dropped).
    Gone(u64),
    /// Make this message (or all) due now.
    Now(Option<u64>),
}

/// A message handed to a worker, with when it was dispatched (for the pickup counter).
pub struct Dispatch {
    /// Queue id.
    pub id: u64,
    /// When the scheduler sent it.
    pub at: Instant,
}

/// Runs until the writer goes away. `idle` counts workers waiting for a job.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Event>,
    jobs: mpsc::UnboundedSender<Dispatch>,
    queued: Vec<Entry>,
    idle: Arc<AtomicU64>,
    stats: Arc<Stats>,
) {
    let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut due: HashMap<u64, u64> = HashMap::new();
    let mut out: HashSet<u64> = HashSet::new();
    let now = now_ms();
    for e in queued {
        // A restart is a retry: everything queued is due now.
        due.insert(e.id, now);
        heap.push(Reverse((now, e.id)));
    }
    loop {
        // Hand out everything due.
        let now = now_ms();
        while let Some(Reverse((t, id))) = heap.peek().copied() {
            if t > now {
                break;
            }
            heap.pop();
            if due.get(&id) != Some(&t) {
                continue; // superseded
            }
            due.remove(&id);
            out.insert(id);
            if idle.load(Ordering::SeqCst) == 0 {
                Stats::add(&stats.waited_for_worker, 1);
            }
            if jobs
                .send(Dispatch {
                    id,
                    at: Instant::now(),
                })
                .is_err()
            {
                return;
            }
        }
        let wait = heap
            .peek()
            .map(|Reverse((t, _))| Duration::from_millis(t.saturating_sub(now)))
            .unwrap_or(Duration::from_secs(3600));
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = tokio::time::sleep(wait) => continue,
        };
        let Some(ev) = ev else { return };
        match ev {
            Event::Due(id, t) => {
                out.remove(&id);
                due.insert(id, t);
                heap.push(Reverse((t, id)));
            }
            Event::Gone(id) => {
                out.remove(&id);
                due.remove(&id);
            }
            Event::Now(which) => {
                let now = now_ms();
                let ids: Vec<u64> = match which {
                    Some(id) if due.contains_key(&id) => vec![id],
                    Some(_) => vec![], // out with a worker, or not queued
                    None => due.keys().copied().collect(),
                };
                for id in ids {
                    due.insert(id, now);
                    heap.push(Reverse((now, id)));
                }
            }
        }
    }
}
