//! The global suppression list: addresses (and whole domains) never to be mailed again by any
//! campaign sharing the state directory. Opened briefly, so concurrent campaigns share it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// An open suppression store.
pub struct Suppression {
    tree: sled::Tree,
    /// Run id ([`crate::token::run_id`]) → run name, for runs that issued tokens: a one-click
    /// names its run by id, and the list records the name.
    runs: sled::Tree,
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
        Ok(Suppression {
            tree,
            runs,
            db,
            path,
        })
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
        Ok(swapped.is_ok())
    }

    /// Adds (or replaces) an entry. `key` is a normalised address or `@domain`.
    pub fn add(&self, key: &str, entry: &Entry) -> Result<()> {
        let v = serde_json::to_vec(entry).map_err(|e| store_err(&self.path, e))?;
        self.tree
            .insert(key.as_bytes(), v)
            .map_err(|e| store_err(&self.path, e))?;
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

    /// The name of a registered run.
    pub fn run_name(&self, id: u32) -> Result<Option<String>> {
        Ok(self
            .runs
            .get(id.to_be_bytes())
            .map_err(|e| store_err(&self.path, e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Durably writes pending changes.
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| store_err(&self.path, e))
    }
}
