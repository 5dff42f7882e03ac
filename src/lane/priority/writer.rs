//! The priority queue's one writer: stages a group of accepts and attempt results (in sled,
//! and as journal records), commits the group with one journal write and sync (sled itself
//! is flushed only at the journal's checkpoints: its flush has a bad tail under a bulk
//! send's writeback),
//! then answers the waiting sessions (a 250 is never sent for a message that is not on
//! disk) and tells the scheduler what is due. Group commit across concurrent sessions keeps
//! the sync count low under load without adding latency when idle (no pacing here: a lone
//! password reset is committed at once).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::sched::Event;
use super::{Cmd, Log, Stats};
use crate::store::now_ms;
use crate::store::queue::{format_id, QueueStore};

/// Most commands folded into one flush.
const GROUP: usize = 512;

/// A group of attempt results alone is not synced at once: it rides the next accept's sync,
/// or is synced after this long without one. An accept then never waits behind a sync of
/// results (under a bulk send's writeback a sync can take tens of milliseconds), and a crash
/// in the window costs at most a repeated delivery of a message whose result was not on
/// disk — the same as a crash during any delivery.
const RESULTS_QUIET: std::time::Duration = std::time::Duration::from_millis(100);

/// A message whose state could not be read or written is tried again after this long.
pub(super) const RETRY_AFTER_ERROR_MS: u64 = 60_000;

/// Runs until every sender of `rx` is gone.
pub async fn run(
    store: Arc<QueueStore>,
    mut rx: mpsc::Receiver<Cmd>,
    sched: mpsc::UnboundedSender<Event>,
    stats: Arc<Stats>,
    log: Log,
) {
    let mut batch = Vec::with_capacity(GROUP);
    // Attempt results staged but not yet synced.
    let mut unsynced = false;
    loop {
        batch.clear();
        let got = if unsynced {
            match tokio::time::timeout(RESULTS_QUIET, rx.recv_many(&mut batch, GROUP)).await {
                Ok(n) => n,
                Err(_) => {
                    if let Err(e) = store.flush().await {
                        // Still staged (what workers read); a later sync takes them along.
                        log(format!("priority: queue flush failed: {e}"));
                    } else {
                        unsynced = false;
                    }
                    Stats::add(&stats.flushes, 1);
                    continue;
                }
            }
        } else {
            rx.recv_many(&mut batch, GROUP).await
        };
        if got == 0 {
            if unsynced {
                let _ = store.flush().await;
            }
            return;
        }
        let mut answers: Vec<(oneshot::Sender<Result<u64, String>>, u64)> = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        let mut failed: Option<String> = None;
        // Whether anything in this group makes a promise (a 250, a drop) that needs the sync
        // before it is answered.
        let mut promises = false;
        for cmd in batch.drain(..) {
            promises |= matches!(cmd, Cmd::Accept { .. } | Cmd::Drop(..));
            match cmd {
                Cmd::Accept { msg, reply } => match store.insert(msg) {
                    Ok(e) => {
                        events.push(Event::Due(e.id, e.received_ms));
                        answers.push((reply, e.id));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("queue write failed: {e}")));
                    }
                },
                Cmd::Update { entry, dsns } => {
                    // A message dropped while a worker had it stays dropped.
                    if !matches!(store.contains(entry.id), Ok(true)) {
                        continue;
                    }
                    if let Err(e) = store.update(&entry) {
                        // Only this message's result is lost: it is tried again later (at
                        // most a duplicate); the group's accepts are unaffected.
                        log(format!(
                            "priority: cannot record the attempt of {}: {e}",
                            format_id(entry.id)
                        ));
                        events.push(Event::Due(entry.id, now_ms() + RETRY_AFTER_ERROR_MS));
                        continue;
                    }
                    events.push(match entry.due_ms() {
                        Some(t) if !entry.is_done() => Event::Due(entry.id, t),
                        _ => Event::Gone(entry.id),
                    });
                    for d in dsns {
                        match store.insert(d) {
                            Ok(e) => {
                                Stats::add(&stats.dsns, 1);
                                log(format!(
                                    "priority: DSN {} queued for message {}",
                                    format_id(e.id),
                                    format_id(entry.id)
                                ));
                                events.push(Event::Due(e.id, e.received_ms));
                            }
                            Err(e) => log(format!("priority: cannot queue a DSN: {e}")),
                        }
                    }
                }
                Cmd::RetryNow(id) => events.push(Event::Now(id)),
                Cmd::RetryLater(id) => {
                    events.push(Event::Due(id, now_ms() + RETRY_AFTER_ERROR_MS));
                }
                Cmd::Drop(id, reply) => {
                    let removed = store.remove(id).map_err(|e| e.to_string());
                    if removed == Ok(true) {
                        events.push(Event::Gone(id));
                    }
                    let _ = reply.send(removed);
                }
            }
        }
        if !promises {
            unsynced = true;
            for ev in events {
                let _ = sched.send(ev);
            }
            continue;
        }
        // The group commit: the journal's one write + sync for everything staged above (and
        // any results left unsynced before).
        unsynced = false;
        if let Err(e) = store.flush().await {
            failed = Some(e.to_string());
        }
        Stats::add(&stats.flushes, 1);
        if let Some(e) = &failed {
            // Nothing staged in this group is promised: sessions get a 4xx and retry; attempt
            // results not on disk mean those recipients are tried again (at most a duplicate).
            log(format!("priority: queue flush failed: {e}"));
            for (reply, id) in answers {
                // Unstage it too, so a later checkpoint (sled flush) cannot deliver a message the
                // client was told to submit again (the store checkpoints before its next
                // journal write, so the failed group's records are never replayed).
                let _ = store.remove(id);
                events.retain(|ev| !matches!(ev, Event::Due(d, _) if *d == id));
                let _ = reply.send(Err(format!("queue write failed: {e}")));
            }
            // Attempt results stay staged (what workers read): reschedule them, or those
            // messages would stay "out with a worker" until a restart.
            for ev in events {
                let _ = sched.send(ev);
            }
            continue;
        }
        for (reply, id) in answers {
            Stats::add(&stats.accepted, 1);
            let _ = reply.send(Ok(id));
        }
        for ev in events {
            let _ = sched.send(ev);
        }
    }
}
