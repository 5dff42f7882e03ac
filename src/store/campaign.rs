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
    /// Claim markers: one record per claimed group (id → the keys), so claiming a group is
    /// one small write instead of a rewrite of every recipient's record.
    claims: sled::Tree,
    next_claim: std::sync::atomic::AtomicU64,
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
        let claims = db.open_tree("claims").map_err(err)?;
        let next_claim = claims
            .last()
            .map_err(err)?
            .and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes))
            .map_or(1, |last| last + 1);
        Ok(CampaignStore {
            db,
            rcpt,
            meta,
            claims,
            next_claim: next_claim.into(),
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

    /// Writes records one by one, not atomically (not flushed). Never a sled batch: sled's
    /// batches take a process-wide write lock, so inside `blast serve` a scheduled run's
    /// batch would hold up the priority queue's writes (and several writer threads could not
    /// write at once). Nothing needs the atomicity: each record is its own recipient's
    /// state, and a crash between two is what the claim markers are for.
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

    /// Makes everything written so far durable (fsync). Concurrent callers (the claimer and
    /// the writer) already share sled's log flush: both wait for the same stable position,
    /// so a second flush of the same moment costs no second write.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// Records a claim marker for `keys` made at `at_ms` (not flushed); returns its id. A
    /// recipient under it is in flight from the flush that follows until its result is
    /// committed (a record written at or after `at_ms`) or [`Self::remove_claims`] drops the
    /// marker. `at_ms` must be later than any write of these records before the claim.
    pub fn put_claim<'a>(
        &self,
        at_ms: u64,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<u64> {
        let id = self
            .next_claim
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // First line `@<ms>`: no address key starts with '@'.
        let mut v = format!("@{at_ms}\n").into_bytes();
        for k in keys {
            v.extend_from_slice(k.as_bytes());
            v.push(b'\n');
        }
        self.claims
            .insert(id.to_be_bytes(), v)
            .map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// Drops claim markers whose recipients all have their results committed (not flushed:
    /// a marker outliving its results is harmless, the records are final).
    pub fn remove_claims(&self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // One by one, not a batch: see [`Self::put_each`].
        for id in ids {
            self.claims
                .remove(id.to_be_bytes())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Every key under a claim marker, with the time of its newest claim: a record of such
    /// a key written before that time was in flight when the run stopped (one written at
    /// or after it carries the claim's result).
    pub fn claimed_keys(&self) -> Result<std::collections::HashMap<String, u64>> {
        let mut out = std::collections::HashMap::new();
        for kv in self.claims.iter() {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            let mut at = 0u64;
            for k in v.split(|&b| b == b'\n').filter(|k| !k.is_empty()) {
                if let Some(ms) = k.strip_prefix(b"@") {
                    at = std::str::from_utf8(ms)
                        .ok()
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(u64::MAX);
                    continue;
                }
                let e = out
                    .entry(String::from_utf8_lossy(k).into_owned())
                    .or_insert(at);
                *e = (*e).max(at);
            }
        }
        Ok(out)
    }

    /// Whether `rec` (stored under `key`) is in flight under one of `claimed`'s markers.
    pub fn in_flight_under(
        claimed: &std::collections::HashMap<String, u64>,
        key: &str,
        rec: &Record,
    ) -> bool {
        matches!(rec.state, State::Pending | State::Deferred)
            && claimed.get(key).is_some_and(|&at| rec.updated_ms < at)
    }

    /// Drops every claim marker (after a reconcile has settled them; not flushed).
    pub fn clear_claims(&self) -> Result<()> {
        self.claims.clear().map_err(|e| self.err(e))
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

    /// Counts per state. A pending or deferred recipient under a claim marker counts as
    /// `in_flight` (its transaction may be open, or was when a run died).
    pub fn counts(&self) -> Result<Counts> {
        let mut c = Counts::default();
        let mut per = [0u64; 8];
        let claimed = self.claimed_keys()?;
        for kv in self.rcpt.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if let Some(mut s) = Record::peek_state(&v) {
                if matches!(s, State::Pending | State::Deferred) && !claimed.is_empty() {
                    let key = String::from_utf8_lossy(&k);
                    if claimed.contains_key(key.as_ref())
                        && Record::decode(&key, &v)
                            .is_some_and(|r| Self::in_flight_under(&claimed, &key, &r))
                    {
                        s = State::InFlight;
                    }
                }
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

    /// A claim marker makes its recipients count as in flight (for status and the next run's
    /// reconcile) until it is dropped; ids keep growing across reopenings.
    #[test]
    fn claim_markers_mark_in_flight_until_removed() {
        use crate::store::record::{Record, State};
        let dir = tempfile::tempdir().unwrap();
        let wait = Duration::from_secs(10);
        let rec = Record::pending;
        let first;
        {
            let st = CampaignStore::open(dir.path(), wait).unwrap();
            let (a, b) = (rec("a@x.example"), rec("b@x.example"));
            st.put_each([("a@x.example", &a), ("b@x.example", &b)])
                .unwrap();
            first = st.put_claim(5, ["a@x.example"]).unwrap();
            st.flush().unwrap();
            let c = st.counts().unwrap();
            assert_eq!((c.get(State::InFlight), c.get(State::Pending)), (1, 1));
        }
        let st = CampaignStore::open(dir.path(), wait).unwrap();
        assert_eq!(
            st.claimed_keys().unwrap().into_iter().collect::<Vec<_>>(),
            vec![("a@x.example".to_string(), 5)]
        );
        // A result committed after the claim (deferred, say) is not in flight any more,
        // though the marker is still there.
        let mut b = rec("b@x.example");
        b.state = State::Deferred;
        b.updated_ms = 7;
        st.put_each([("b@x.example", &b)]).unwrap();
        let second = st.put_claim(7, ["b@x.example"]).unwrap();
        assert_eq!(st.counts().unwrap().get(State::InFlight), 1);
        assert!(second > first, "{second} > {first}");
        st.remove_claims(&[first, second]).unwrap();
        assert!(st.claimed_keys().unwrap().is_empty());
        let c = st.counts().unwrap();
        assert_eq!((c.get(State::Pending), c.get(State::Deferred)), (1, 1));
    }
}
