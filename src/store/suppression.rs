//! The global suppression list: addresses (and whole domains) never to be mailed again by any
//! campaign sharing the state directory. Opened briefly, so concurrent campaigns share it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::holds::SiteHold;
use super::{check_version, open_db, store_err, SUPPRESSION_FORMAT};
use crate::error::{Error, Result};

/// Why an address is suppressed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// `bounce`, `complaint`, `unsubscribe` or `manual`.
    pub reason: String,
    /// When (ms since epoch).
    pub at_ms: u64,
    /// Where it came from: campaign id, file, or `cli`.
    pub source: String,
    /// The SMTP reply or note.
    pub detail: String,
}

impl Entry {
    /// An address-level bounce (`5.1.1` and the like) that `campaign` met at `at_ms`.
    pub fn bounce(campaign: &str, reply: String, at_ms: u64) -> Entry {
        Entry {
            reason: "bounce".into(),
            at_ms,
            source: campaign.to_string(),
            detail: reply,
        }
    }
}

/// When a mailbox's own soft failures (full, inactive) add up to a suppression: on
/// `campaigns` different campaigns in a row, the first and the last at least `min_days`
/// apart. A success in between starts the count again ([`Suppression::soft_reset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftPolicy {
    /// Consecutive campaigns (`[bounces] soft_limit`, default 3).
    pub campaigns: u32,
    /// Days from the first to the last of them (`[bounces] soft_days`, default 15).
    pub min_days: u32,
}

impl Default for SoftPolicy {
    fn default() -> Self {
        SoftPolicy {
            campaigns: 3,
            min_days: 15,
        }
    }
}

/// One soft failure of a mailbox that can add up ([`crate::classify::Category::counts_as_soft`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftHit {
    /// The suppression key it counts for (a normalised address, or `id:<hex>`).
    pub key: String,
    /// The campaign (run name) whose mail failed.
    pub campaign: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The reply or the bounce's reason.
    pub detail: String,
}

/// A mailbox's soft failures so far: each campaign once, with its first failure's time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftCount {
    /// (campaign, ms since the epoch), oldest first.
    pub campaigns: Vec<(String, u64)>,
}

/// Where a run keeps its campaign store, and when it last started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDir {
    /// The campaign store's directory.
    pub dir: PathBuf,
    /// When the run last started (ms since the epoch).
    pub at_ms: u64,
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// An open suppression store.
pub struct Suppression {
    tree: sled::Tree,
    /// (source, reason) → how many entries were ever added: the per-campaign bounce,
    /// complaint and unsubscribe counts (`blast status`, the complaint breaker).
    counts: sled::Tree,
    /// Suppression key → [`SoftCount`].
    soft: sled::Tree,
    /// Run id ([`crate::token::run_id`]) → run name, for runs that issued tokens: a one-click
    /// names its run by id, and the list records the name.
    runs: sled::Tree,
    /// Run name → [`RunDir`]: where each run's campaign store is, so a bounce that carries
    /// no token can still be matched to a message blast sent.
    run_dirs: sled::Tree,
    db: sled::Db,
    path: PathBuf,
}

/// The suppression store's directory inside a state dir.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("suppression")
}

/// Whether a suppression store was ever created in `state_dir` (read-only commands need not
/// create one).
pub fn exists_in(state_dir: &Path) -> bool {
    path_in(state_dir).exists()
}

impl Suppression {
    /// Opens the store, waiting up to `wait` for another process to release it.
    pub fn open(state_dir: &Path, wait: Duration) -> Result<Self> {
        let path = path_in(state_dir);
        let db = open_db(&path, 16 << 20, wait)?.ok_or_else(|| {
            Error::Locked(format!(
                "suppression list {} stayed locked by another blast process for {wait:?}",
                path.display()
            ))
        })?;
        let meta = db.open_tree("meta").map_err(|e| store_err(&path, e))?;
        check_version(&meta, &path, SUPPRESSION_FORMAT)?;
        let tree = db.open_tree("entries").map_err(|e| store_err(&path, e))?;
        let runs = db.open_tree("runs").map_err(|e| store_err(&path, e))?;
        let run_dirs = db.open_tree("run_dirs").map_err(|e| store_err(&path, e))?;
        let counts = db.open_tree("counts").map_err(|e| store_err(&path, e))?;
        let soft = db.open_tree("soft").map_err(|e| store_err(&path, e))?;
        let sp = Suppression {
            tree,
            counts,
            soft,
            runs,
            run_dirs,
            db,
            path,
        };
        // Lists from before the counts existed: count what is there once.
        if meta
            .get(b"counted")
            .map_err(|e| store_err(&sp.path, e))?
            .is_none()
        {
            for (_, e) in sp.list()? {
                sp.count(&e)?;
            }
            meta.insert(b"counted", &[1u8])
                .map_err(|e| store_err(&sp.path, e))?;
            sp.flush()?;
        }
        Ok(sp)
    }

    fn count(&self, e: &Entry) -> Result<()> {
        self.bump(&e.source, &e.reason)
    }

    /// Counts one event of `source` that is not a list entry (a click: `click` and
    /// `click:URL`), beside the entries' counts (not flushed).
    pub fn bump(&self, source: &str, reason: &str) -> Result<()> {
        let key = format!("{source}\0{reason}");
        self.counts
            .update_and_fetch(key.as_bytes(), |old| {
                let n = old
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map_or(0, u64::from_be_bytes);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(|e| store_err(&self.path, e))?;
        Ok(())
    }

    /// How many entries `source` (a run name) ever added, per reason (`bounce`, `complaint`,
    /// `unsubscribe`…). Removing an entry later does not take it back: it happened.
    pub fn source_counts(&self, source: &str) -> Result<Vec<(String, u64)>> {
        let prefix = format!("{source}\0");
        let mut out = Vec::new();
        for kv in self.counts.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(|e| store_err(&self.path, e))?;
            let reason = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Ok(b) = <[u8; 8]>::try_from(&v[..]) {
                out.push((reason, u64::from_be_bytes(b)));
            }
        }
        Ok(out)
    }

    /// Counts one soft failure; returns the entry it suppressed when this one completes
    /// `policy` (not flushed). A campaign already counted for this mailbox counts once.
    pub fn soft_hit(&self, hit: &SoftHit, policy: SoftPolicy) -> Result<Option<Entry>> {
        let mut c: SoftCount = match self
            .soft
            .get(hit.key.as_bytes())
            .map_err(|e| store_err(&self.path, e))?
        {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => SoftCount::default(),
        };
        if !c.campaigns.iter().any(|(name, _)| *name == hit.campaign) {
            c.campaigns.push((hit.campaign.clone(), hit.at_ms));
        }
        let first = c.campaigns.iter().map(|x| x.1).min().unwrap_or(hit.at_ms);
        let last = c.campaigns.iter().map(|x| x.1).max().unwrap_or(hit.at_ms);
        let days = last.saturating_sub(first) / DAY_MS;
        if c.campaigns.len() as u32 >= policy.campaigns.max(1) && days >= u64::from(policy.min_days)
        {
            let entry = Entry {
                reason: "bounce".into(),
                at_ms: hit.at_ms,
                source: hit.campaign.clone(),
                detail: format!(
                    "soft bounces on {} campaigns in a row over {days} days; last: {}",
                    c.campaigns.len(),
                    hit.detail
                ),
            };
            self.soft
                .remove(hit.key.as_bytes())
                .map_err(|e| store_err(&self.path, e))?;
            return Ok(self.add_if_absent(&hit.key, &entry)?.then_some(entry));
        }
        let v = serde_json::to_vec(&c).map_err(|e| store_err(&self.path, e))?;
        self.soft
            .insert(hit.key.as_bytes(), v)
            .map_err(|e| store_err(&self.path, e))?;
        Ok(None)
    }

    /// Forgets the soft failures of mailboxes that accepted mail again (not flushed).
    pub fn soft_reset(&self, keys: &[String]) -> Result<()> {
        for k in keys {
            self.soft
                .remove(k.as_bytes())
                .map_err(|e| store_err(&self.path, e))?;
        }
        Ok(())
    }

    /// Every mailbox with soft failures counted, and its count.
    pub fn soft_counts(&self) -> Result<Vec<(String, SoftCount)>> {
        let mut out = Vec::new();
        for kv in self.soft.iter() {
            let (k, v) = kv.map_err(|e| store_err(&self.path, e))?;
            if let Ok(c) = serde_json::from_slice(&v) {
                out.push((String::from_utf8_lossy(&k).into_owned(), c));
            }
        }
        Ok(out)
    }

    /// Whether an address (normalised key) or its domain is suppressed.
    pub fn lookup(&self, key: &str) -> Result<Option<Entry>> {
        let domain_key = key.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        for k in std::iter::once(key.to_string()).chain(domain_key) {
            if let Some(v) = self
                .tree
                .get(k.as_bytes())
                .map_err(|e| store_err(&self.path, e))?
            {
                return Ok(serde_json::from_slice(&v).ok());
            }
        }
        Ok(None)
    }

    /// The entry stored under exactly `key` (no domain fallback, unlike [`Suppression::lookup`]).
    pub fn get(&self, key: &str) -> Result<Option<Entry>> {
        match self
            .tree
            .get(key.as_bytes())
            .map_err(|e| store_err(&self.path, e))?
        {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| store_err(&self.path, format!("corrupt entry for {key:?}: {e}"))),
        }
    }

    /// Adds an entry unless `key` is already listed (an existing entry, e.g. a bounce with its
    /// reply text, is kept as it is). Returns whether it was added. Atomic per key.
    pub fn add_if_absent(&self, key: &str, entry: &Entry) -> Result<bool> {
        let v = serde_json::to_vec(entry).map_err(|e| store_err(&self.path, e))?;
        let swapped = self
            .tree
            .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(v))
            .map_err(|e| store_err(&self.path, e))?;
        if swapped.is_ok() {
            self.count(entry)?;
        }
        Ok(swapped.is_ok())
    }

    /// Lists `entry` under `to` in place of `from` (a recipient id met as an address): the
    /// same event under a better key, so not counted again. `to` first: a crash in between
    /// leaves both, never neither. Returns whether `to` was new (not flushed).
    pub fn move_entry(&self, from: &str, to: &str, entry: &Entry) -> Result<bool> {
        let v = serde_json::to_vec(entry).map_err(|e| store_err(&self.path, e))?;
        let swapped = self
            .tree
            .compare_and_swap(to.as_bytes(), None as Option<&[u8]>, Some(v))
            .map_err(|e| store_err(&self.path, e))?;
        self.remove(from)?;
        Ok(swapped.is_ok())
    }

    /// Adds (or replaces) an entry. `key` is a normalised address or `@domain`.
    pub fn add(&self, key: &str, entry: &Entry) -> Result<()> {
        let v = serde_json::to_vec(entry).map_err(|e| store_err(&self.path, e))?;
        let old = self
            .tree
            .insert(key.as_bytes(), v)
            .map_err(|e| store_err(&self.path, e))?;
        if old.is_none() {
            self.count(entry)?;
        }
        Ok(())
    }

    /// Removes an entry; returns whether it existed.
    pub fn remove(&self, key: &str) -> Result<bool> {
        Ok(self
            .tree
            .remove(key.as_bytes())
            .map_err(|e| store_err(&self.path, e))?
            .is_some())
    }

    /// All entries in key order.
    pub fn list(&self) -> Result<Vec<(String, Entry)>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(|e| store_err(&self.path, e))?;
            if let Ok(e) = serde_json::from_slice(&v) {
                out.push((String::from_utf8_lossy(&k).into_owned(), e));
            }
        }
        Ok(out)
    }

    /// Records a run's name under its run id (not flushed: see [`Suppression::flush`]).
    pub fn register_run(&self, name: &str) -> Result<()> {
        let id = crate::token::run_id(name).to_be_bytes();
        self.runs
            .insert(id, name.as_bytes())
            .map_err(|e| store_err(&self.path, e))?;
        Ok(())
    }

    /// Records where run `name` keeps its campaign store (not flushed).
    pub fn register_run_dir(&self, name: &str, dir: &Path, at_ms: u64) -> Result<()> {
        let v = serde_json::to_vec(&RunDir {
            dir: dir.to_path_buf(),
            at_ms,
        })
        .map_err(|e| store_err(&self.path, e))?;
        self.run_dirs
            .insert(name.as_bytes(), v)
            .map_err(|e| store_err(&self.path, e))?;
        Ok(())
    }

    /// Every run's store dir, most recently started first.
    pub fn run_dirs(&self) -> Result<Vec<(String, RunDir)>> {
        let mut out = Vec::new();
        for kv in self.run_dirs.iter() {
            let (k, v) = kv.map_err(|e| store_err(&self.path, e))?;
            if let Ok(d) = serde_json::from_slice::<RunDir>(&v) {
                out.push((String::from_utf8_lossy(&k).into_owned(), d));
            }
        }
        out.sort_by_key(|(_, d)| std::cmp::Reverse(d.at_ms));
        Ok(out)
    }

    /// The name of a registered run.
    pub fn run_name(&self, id: u32) -> Result<Option<String>> {
        Ok(self
            .runs
            .get(id.to_be_bytes())
            .map_err(|e| store_err(&self.path, e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Another tree of the global store (for state kept beside the list, such as
    /// [`super::holds`]), and the store's path for errors.
    pub(crate) fn tree(&self, name: &str) -> Result<(sled::Tree, &Path)> {
        let t = self
            .db
            .open_tree(name)
            .map_err(|e| store_err(&self.path, e))?;
        Ok((t, &self.path))
    }

    /// Durably writes pending changes.
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| store_err(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(key: &str, campaign: &str, day: u64) -> SoftHit {
        SoftHit {
            key: key.into(),
            campaign: campaign.into(),
            at_ms: day * DAY_MS,
            detail: "552 5.2.2 mailbox full".into(),
        }
    }

    #[test]
    fn soft_failures_suppress_after_three_campaigns_over_fifteen_days_only() {
        let dir = tempfile::tempdir().unwrap();
        let sp = Suppression::open(dir.path(), Duration::from_secs(5)).unwrap();
        let p = SoftPolicy::default();
        let k = "full@x.example";
        assert_eq!(sp.soft_hit(&hit(k, "a", 0), p).unwrap(), None);
        // The same campaign again (a retry, a second DSN) counts once.
        assert_eq!(sp.soft_hit(&hit(k, "a", 1), p).unwrap(), None);
        assert_eq!(sp.soft_hit(&hit(k, "b", 7), p).unwrap(), None);
        // Three campaigns, but only 14 days: not yet.
        assert_eq!(sp.soft_hit(&hit(k, "c", 14), p).unwrap(), None);
        assert!(sp.get(k).unwrap().is_none());
        let e = sp
            .soft_hit(&hit(k, "d", 15), p)
            .unwrap()
            .expect("suppressed");
        assert_eq!((e.reason.as_str(), e.source.as_str()), ("bounce", "d"));
        assert!(
            e.detail.contains("4 campaigns") && e.detail.contains("15 days"),
            "{}",
            e.detail
        );
        assert_eq!(sp.get(k).unwrap(), Some(e));
        assert!(
            sp.soft_counts().unwrap().is_empty(),
            "count cleared once suppressed"
        );
        assert_eq!(
            sp.source_counts("d").unwrap(),
            vec![("bounce".to_string(), 1)]
        );
    }

    #[test]
    fn a_success_starts_the_count_again() {
        let dir = tempfile::tempdir().unwrap();
        let sp = Suppression::open(dir.path(), Duration::from_secs(5)).unwrap();
        let p = SoftPolicy::default();
        let k = "id:0123456789abcdef";
        sp.soft_hit(&hit(k, "a", 0), p).unwrap();
        sp.soft_hit(&hit(k, "b", 10), p).unwrap();
        sp.soft_reset(&[k.to_string()]).unwrap();
        assert_eq!(sp.soft_hit(&hit(k, "c", 20), p).unwrap(), None);
        assert_eq!(sp.soft_hit(&hit(k, "d", 30), p).unwrap(), None);
        assert_eq!(
            sp.soft_counts().unwrap(),
            vec![(
                k.to_string(),
                SoftCount {
                    campaigns: vec![("c".into(), 20 * DAY_MS), ("d".into(), 30 * DAY_MS)]
                }
            )]
        );
        assert!(sp.soft_hit(&hit(k, "e", 40), p).unwrap().is_some());
    }

    #[test]
    fn counts_per_source_and_reason_survive_a_reopen_and_count_old_lists_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = |reason: &str, source: &str| Entry {
            reason: reason.into(),
            at_ms: 1,
            source: source.into(),
            detail: String::new(),
        };
        {
            let sp = Suppression::open(dir.path(), Duration::from_secs(5)).unwrap();
            assert!(sp
                .add_if_absent("a@x.example", &e("complaint", "spring"))
                .unwrap());
            assert!(!sp
                .add_if_absent("a@x.example", &e("complaint", "spring"))
                .unwrap());
            sp.add("b@x.example", &e("unsubscribe", "spring")).unwrap();
            sp.add("b@x.example", &e("manual", "cli")).unwrap(); // a replacement: no count
            sp.add("c@x.example", &e("complaint", "autumn")).unwrap();
            sp.flush().unwrap();
        }
        let sp = Suppression::open(dir.path(), Duration::from_secs(5)).unwrap();
        assert_eq!(
            sp.source_counts("spring").unwrap(),
            vec![("complaint".to_string(), 1), ("unsubscribe".to_string(), 1)]
        );
        assert_eq!(
            sp.source_counts("spr").unwrap(),
            vec![],
            "a name, not a prefix"
        );
        assert!(sp.source_counts("cli").unwrap().is_empty());
    }
}
