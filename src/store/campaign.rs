//! The per-campaign store: one record per recipient, keyed by normalised address, plus a
//! file table (path + columns) and the import generation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::{Record, State};
use super::{check_version, open_db, store_err, CAMPAIGN_FORMAT};
use crate::error::{Error, Result};

/// A list file known to the store: templates need its columns at send time, so a resume
/// needs nothing but the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListFile {
    /// Path as resolved when imported.
    pub path: PathBuf,
    /// Header names.
    pub columns: Vec<String>,
}

/// Counts of recipients per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// All recipients.
    pub total: u64,
    /// Per state name.
    pub by_state: BTreeMap<&'static str, u64>,
    /// Earliest retry time (ms) among deferred recipients, 0 if none.
    #[serde(skip)]
    pub next_retry_ms: u64,
}

impl Counts {
    /// Count for one state.
    pub fn get(&self, s: State) -> u64 {
        self.by_state.get(s.name()).copied().unwrap_or(0)
    }
}

/// One chunk of a scan: matching (key, record) pairs, the last key looked at (the cursor for
/// the next call), and whether the end of the tree was reached.
pub type Scan = (Vec<(String, Record)>, Option<String>, bool);

/// sled's page cache for a campaign store. Import keys arrive in list order, i.e. at random
/// places in the tree: with a cache much smaller than the tree (~220 B per recipient) every
/// insert re-reads pages from disk — 64 MB gave ~34k rows/s at 1M rows.
const CACHE_BYTES: u64 = 256 << 20;

/// The campaign's sled database, held by this process.
pub struct CampaignStore {
    db: sled::Db,
    rcpt: sled::Tree,
    meta: sled::Tree,
    path: PathBuf,
}

impl CampaignStore {
    /// Opens (creating) the store at `dir`. If another process holds it, waits up to `wait`,
    /// then fails with [`Error::Locked`].
    pub fn open(dir: &Path, wait: Duration) -> Result<Self> {
        let db = open_db(dir, CACHE_BYTES, wait)?.ok_or_else(|| {
            Error::Locked(format!(
                "{} is in use by another blast process (a send of this campaign is running?); wait for it to finish",
                dir.display()
            ))
        })?;
        let err = |e: sled::Error| store_err(dir, e);
        let rcpt = db.open_tree("recipients").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        check_version(&meta, dir, CAMPAIGN_FORMAT)?;
        Ok(CampaignStore {
            db,
            rcpt,
            meta,
            path: dir.to_path_buf(),
        })
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_err(&self.path, e)
    }

    /// The file table.
    pub fn files(&self) -> Result<Vec<ListFile>> {
        match self.meta.get("files").map_err(|e| self.err(e))? {
            None => Ok(Vec::new()),
            Some(v) => {
                serde_json::from_slice(&v).map_err(|e| self.err(format!("corrupt file table: {e}")))
            }
        }
    }

    /// Registers (or refreshes the columns of) a list file; returns its index.
    pub fn register_file(&self, path: &Path, columns: &[String]) -> Result<u16> {
        let mut files = self.files()?;
        let idx = match files.iter().position(|f| f.path == path) {
            Some(i) => {
                files[i].columns = columns.to_vec();
                i
            }
            None => {
                files.push(ListFile {
                    path: path.to_path_buf(),
                    columns: columns.to_vec(),
                });
                files.len() - 1
            }
        };
        let idx = u16::try_from(idx).map_err(|_| self.err("too many list files"))?;
        let json = serde_json::to_vec(&files).map_err(|e| self.err(e))?;
        self.meta.insert("files", json).map_err(|e| self.err(e))?;
        Ok(idx)
    }

    /// The latest import generation (0 before any import).
    pub fn current_import_gen(&self) -> Result<u32> {
        Ok(self
            .meta
            .get("import_gen")
            .map_err(|e| self.err(e))?
            .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes))
            .unwrap_or(0))
    }

    /// Starts a new import generation and returns it.
    pub fn next_import_gen(&self) -> Result<u32> {
        let next = self.current_import_gen()? + 1;
        self.meta
            .insert("import_gen", &next.to_be_bytes())
            .map_err(|e| self.err(e))?;
        Ok(next)
    }

    /// One record.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        match self.rcpt.get(key).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => Record::decode(key, &v)
                .map(Some)
                .ok_or_else(|| self.err(format!("corrupt record for {key:?}"))),
        }
    }

    /// Writes records in one atomic batch (not flushed).
    pub fn put_batch<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, &'a Record)>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut buf = Vec::new();
        for (k, r) in records {
            r.encode_into(k, &mut buf);
            batch.insert(k.as_bytes(), buf.as_slice());
        }
        self.rcpt.apply_batch(batch).map_err(|e| self.err(e))
    }

    /// Writes records one by one, not atomically (not flushed): unlike [`Self::put_batch`],
    /// several threads can do this at once (sled's batches take a global lock).
    pub fn put_each<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, &'a Record)>,
    ) -> Result<()> {
        let mut buf = Vec::new();
        for (k, r) in records {
            r.encode_into(k, &mut buf);
            self.rcpt
                .insert(k.as_bytes(), buf.as_slice())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Writes raw pre-encoded records in one batch (not flushed).
    pub fn put_encoded(&self, batch: sled::Batch) -> Result<()> {
        self.rcpt.apply_batch(batch).map_err(|e| self.err(e))
    }

    /// Makes everything written so far durable (fsync).
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// Iterates all records in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(String, Record)>> + '_ {
        self.rcpt.iter().map(move |kv| {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let rec = Record::decode(&key, &v)
                .ok_or_else(|| self.err(format!("corrupt record for {key:?}")))?;
            Ok((key, rec))
        })
    }

    /// Records from `after` (exclusive) in key order, at most `limit`, whose state passes `want`
    /// (checked on the state byte before decoding, so scans skip finished rows cheaply).
    pub fn scan_from(
        &self,
        after: Option<&str>,
        limit: usize,
        mut want: impl FnMut(State, &[u8]) -> bool,
    ) -> Result<Scan> {
        use std::ops::Bound;
        let lower = match after {
            Some(k) => Bound::Excluded(k.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut last = after.map(str::to_string);
        let mut scanned = 0usize;
        for kv in self.rcpt.range::<Vec<u8>, _>((lower, Bound::Unbounded)) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            scanned += 1;
            let key = String::from_utf8_lossy(&k).into_owned();
            last = Some(key.clone());
            if Record::peek_state(&v).is_some_and(|st| want(st, &v)) {
                let rec = Record::decode(&key, &v)
                    .ok_or_else(|| self.err(format!("corrupt record for {key:?}")))?;
                out.push((key, rec));
                if out.len() >= limit {
                    return Ok((out, last, false));
                }
            }
            // Bound the work of one call even when few rows match.
            if scanned >= limit * 20 {
                return Ok((out, last, false));
            }
        }
        Ok((out, last, true))
    }

    /// Counts per state.
    pub fn counts(&self) -> Result<Counts> {
        let mut c = Counts::default();
        let mut per = [0u64; 8];
        for kv in self.rcpt.iter() {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            if let Some(s) = Record::peek_state(&v) {
                per[s as usize] += 1;
                c.total += 1;
                if s == State::Deferred {
                    if let Some(at) = Record::peek_retry_at(&v) {
                        if c.next_retry_ms == 0 || at < c.next_retry_ms {
                            c.next_retry_ms = at;
                        }
                    }
                }
            }
        }
        for s in State::ALL {
            c.by_state.insert(s.name(), per[s as usize]);
        }
        Ok(c)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.rcpt.len()
    }

    /// No records yet.
    pub fn is_empty(&self) -> bool {
        self.rcpt.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store written in another format is refused with the format error, not misread.
    #[test]
    fn other_format_versions_are_refused() {
        // sled's background threads may hold a closed database's lock for a moment.
        let wait = Duration::from_secs(10);
        for (v, says) in [(1u32, "is older"), (CAMPAIGN_FORMAT + 1, "is newer")] {
            let dir = tempfile::tempdir().unwrap();
            {
                let db = sled::open(dir.path()).unwrap();
                let meta = db.open_tree("meta").unwrap();
                meta.insert("format", &v.to_be_bytes()).unwrap();
                db.flush().unwrap();
            }
            let e = CampaignStore::open(dir.path(), wait)
                .err()
                .expect("refused")
                .to_string();
            assert!(e.contains(&format!("format version {v} {says}")), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        drop(CampaignStore::open(dir.path(), wait).unwrap());
        let reopened = CampaignStore::open(dir.path(), wait).unwrap();
        assert!(reopened.is_empty());
    }
}
