//! The import's store writers: apply key-sorted batches on threads of their own, so reading and
//! checking the list (~5 µs a row) overlaps sled's inserts (the larger cost) instead of
//! alternating with them. Batches not yet applied are remembered, so a duplicate check sees a
//! key whether it is still on its way or already in the store.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};

use super::campaign::CampaignStore;
use super::record::Record;
use super::store_err;
use crate::error::Result;

/// Batches queued behind the one being applied: enough to ride out a slow insert, few enough
/// to bound memory (a batch is ~1,000 records).
const QUEUED: usize = 2;

/// A batch of (key, record), sorted by key: in key order it touches neighbouring tree nodes.
pub type Batch = Vec<(String, Record)>;

/// Writer threads. sled inserts of different keys run in parallel (apply_batch would take
/// its global batch lock, so each thread inserts its share one by one: an import needs no
/// atomic batch, it is idempotent and a rerun reconciles), and one thread could not keep up
/// with the reading side.
const WRITERS: usize = 2;

/// Handle to the writer threads; see the module doc.
pub struct BulkWriter<'scope> {
    /// One channel per writer thread; `None` once joined.
    txs: Option<Vec<mpsc::SyncSender<Batch>>>,
    /// Each writer thread says "applied" per share it stored, in order.
    applied: mpsc::Receiver<usize>,
    /// Shares applied so far, per writer thread.
    acks: [usize; WRITERS],
    /// Batches known to be fully applied (popped from `unapplied`).
    popped: usize,
    /// Key sets of the batches sent and not yet applied, oldest first.
    unapplied: VecDeque<HashSet<String>>,
    threads: Vec<ScopedJoinHandle<'scope, Result<()>>>,
    path: PathBuf,
}

impl<'scope> BulkWriter<'scope> {
    /// Starts the writers in `scope`. `after` runs on a writer thread for each share of a
    /// batch once it is in the store (handing new recipients to a lane must wait until they
    /// are stored).
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        store: &'env CampaignStore,
        after: &'env (impl Fn(&Batch) + Sync + 'env),
    ) -> Self {
        let (done_tx, applied) = mpsc::channel();
        let mut txs = Vec::with_capacity(WRITERS);
        let mut threads = Vec::with_capacity(WRITERS);
        for i in 0..WRITERS {
            let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUED);
            let done_tx = done_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("import-writer-{i}"))
                .spawn_scoped(scope, move || -> Result<()> {
                    for share in rx {
                        store.put_each(share.iter().map(|(k, r)| (k.as_str(), r)))?;
                        after(&share);
                        // The importer may be gone already (it failed): nothing left to tell.
                        let _ = done_tx.send(i);
                    }
                    Ok(())
                })
                .expect("spawn an import writer thread");
            txs.push(tx);
            threads.push(thread);
        }
        BulkWriter {
            txs: Some(txs),
            applied,
            acks: [0; WRITERS],
            popped: 0,
            unapplied: VecDeque::new(),
            threads,
            path: store.path().to_path_buf(),
        }
    }

    /// Queues `batch` (sorted by key; `keys` are its keys), split into one share of
    /// neighbouring keys per writer thread, blocking while a writer is [`QUEUED`] batches
    /// behind.
    pub fn write(&mut self, mut batch: Batch, keys: HashSet<String>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.unapplied.push_back(keys);
        let per = batch.len().div_ceil(WRITERS);
        let mut shares = Vec::with_capacity(WRITERS);
        for _ in 1..WRITERS {
            let rest = batch.split_off(per.min(batch.len()));
            shares.push(std::mem::replace(&mut batch, rest));
        }
        shares.push(batch);
        let sent = self.txs.as_ref().is_some_and(|txs| {
            txs.iter()
                .zip(shares)
                .all(|(tx, share)| tx.send(share).is_ok())
        });
        if !sent {
            // A writer stopped on an error: that error is the one to report.
            self.join()?;
            return Err(store_err(&self.path, "the import writer stopped"));
        }
        Ok(())
    }

    /// Whether `key` is in a batch sent but not yet applied.
    pub fn is_unapplied(&mut self, key: &str) -> bool {
        while let Ok(i) = self.applied.try_recv() {
            self.acks[i] += 1;
        }
        // A batch is in the store when every writer has applied its share of it.
        let done = self.acks.iter().copied().min().unwrap_or(0);
        while self.popped < done {
            self.unapplied.pop_front();
            self.popped += 1;
        }
        self.unapplied.iter().any(|keys| keys.contains(key))
    }

    /// Waits until every batch sent is applied; the writer's error if it failed.
    pub fn finish(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        self.txs = None;
        let mut first = Ok(());
        for t in self.threads.drain(..) {
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(store_err(&self.path, "an import writer thread panicked")),
            };
            first = first.and(r);
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str) -> Record {
        Record {
            updated_ms: 1,
            values: vec![key.into()],
            ..Record::pending(key)
        }
    }

    /// The fresh-import duplicate check relies on this: a key sent to the writer is always
    /// either still unapplied or already in the store, never neither.
    #[test]
    fn a_written_key_is_unapplied_or_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = CampaignStore::open(dir.path(), std::time::Duration::from_secs(10)).unwrap();
        let handed = std::sync::atomic::AtomicUsize::new(0);
        let after = |b: &Batch| {
            handed.fetch_add(b.len(), std::sync::atomic::Ordering::Relaxed);
        };
        std::thread::scope(|scope| {
            let mut w = BulkWriter::start(scope, &store, &after);
            for b in 0..50 {
                let keys: Vec<String> = (0..101)
                    .map(|i| format!("u{b:03}{i:04}@x.example"))
                    .collect();
                let batch: Batch = keys.iter().map(|k| (k.clone(), rec(k))).collect();
                w.write(batch, keys.iter().cloned().collect()).unwrap();
                for k in keys.iter().chain([&"u0000000@x.example".to_string()]) {
                    // Unapplied first: once that says no, the batch was acknowledged as stored.
                    assert!(w.is_unapplied(k) || store.get(k).unwrap().is_some(), "{k}");
                }
                assert!(!w.is_unapplied("nobody@x.example"));
            }
            w.finish().unwrap();
        });
        assert_eq!(store.len(), 50 * 101);
        assert_eq!(handed.into_inner(), 50 * 101);
    }
}
