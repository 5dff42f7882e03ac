//! The import's store writer: applies key-sorted batches on a thread of its own, so reading and
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

/// Handle to the writer thread; see the module doc.
pub struct BulkWriter<'scope> {
    tx: Option<mpsc::SyncSender<Batch>>,
    applied: mpsc::Receiver<()>,
    /// Key sets of the batches sent and not yet applied, oldest first.
    unapplied: VecDeque<HashSet<String>>,
    /// `None` once joined.
    thread: Option<ScopedJoinHandle<'scope, Result<()>>>,
    path: PathBuf,
}

impl<'scope> BulkWriter<'scope> {
    /// Starts the writer in `scope`. `after` runs on the writer thread for each batch once it
    /// is in the store (handing new recipients to a lane must wait until they are stored).
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        store: &'env CampaignStore,
        mut after: impl FnMut(&Batch) + Send + 'env,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUED);
        let (done_tx, applied) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("import-writer".into())
            .spawn_scoped(scope, move || -> Result<()> {
                for batch in rx {
                    store.put_batch(batch.iter().map(|(k, r)| (k.as_str(), r)))?;
                    after(&batch);
                    // The importer may be gone already (it failed): nothing left to tell.
                    let _ = done_tx.send(());
                }
                Ok(())
            })
            .expect("spawn the import writer thread");
        BulkWriter {
            tx: Some(tx),
            applied,
            unapplied: VecDeque::new(),
            thread: Some(thread),
            path: store.path().to_path_buf(),
        }
    }

    /// Queues `batch` (sorted by key; `keys` are its keys), blocking while the writer is
    /// [`QUEUED`] batches behind.
    pub fn write(&mut self, batch: Batch, keys: HashSet<String>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.unapplied.push_back(keys);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        if !sent {
            // The writer stopped on an error: that error is the one to report.
            self.join()?;
            return Err(store_err(&self.path, "the import writer stopped"));
        }
        Ok(())
    }

    /// Whether `key` is in a batch sent but not yet applied.
    pub fn is_unapplied(&mut self, key: &str) -> bool {
        while self.applied.try_recv().is_ok() {
            self.unapplied.pop_front();
        }
        self.unapplied.iter().any(|keys| keys.contains(key))
    }

    /// Waits until every batch sent is applied; the writer's error if it failed.
    pub fn finish(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(store_err(&self.path, "the import writer thread panicked")),
        }
    }
}
