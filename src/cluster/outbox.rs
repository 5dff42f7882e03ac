//! The suppression changes of this state dir that the fleet has not heard of yet, and what
//! this state dir has applied of the fleet's: small files under `STATE_DIR/cluster/`.
//!
//! The owner of the suppression list ([`crate::owner`]) appends each change here after it
//! is durable in the list, so a change made while Redis is down (or by a process that does
//! not talk to Redis at all, such as `blast suppress add`) is published by the next process
//! of this state dir that does. The directory exists only once a process of the state dir
//! has joined a fleet: without it nothing is written (a machine joining later publishes its
//! whole list first). Appends are one `write` of whole lines with `O_APPEND`, so processes
//! sharing the state dir do not interleave; applying a change twice is harmless.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::suppression::Entry;

/// One change of the suppression list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    /// Listed (kept as it is when already listed).
    Add {
        /// Normalised key.
        k: String,
        /// The entry.
        e: Entry,
    },
    /// No longer listed.
    Del {
        /// Normalised key.
        k: String,
    },
}

/// `STATE_DIR/cluster`.
pub fn dir(state: &Path) -> PathBuf {
    state.join("cluster")
}

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", p.display());
    move |e| Error::io(what, e)
}

fn append(state: &Path, changes: impl Iterator<Item = Change>) -> Result<()> {
    let d = dir(state);
    if !d.is_dir() {
        return Ok(());
    }
    let mut buf = Vec::new();
    for c in changes {
        serde_json::to_writer(&mut buf, &c).map_err(|e| Error::Lane(e.to_string()))?;
        buf.push(b'\n');
    }
    if buf.is_empty() {
        return Ok(());
    }
    let p = d.join("outbox.jsonl");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(io("cannot open", &p))?;
    f.write_all(&buf).map_err(io("cannot write", &p))?;
    f.sync_data().map_err(io("cannot flush", &p))
}

/// Records added entries for the fleet (a no-op outside one). Blocking.
pub fn add(state: &Path, entries: &[(String, Entry)]) -> Result<()> {
    append(
        state,
        entries.iter().map(|(k, e)| Change::Add {
            k: k.clone(),
            e: e.clone(),
        }),
    )
}

/// Records removed keys for the fleet (a no-op outside one). Blocking.
pub fn remove(state: &Path, keys: &[String]) -> Result<()> {
    append(state, keys.iter().map(|k| Change::Del { k: k.clone() }))
}

/// Changes waiting to be published, taken out of the outbox: the caller deletes the files
/// (the second value) once Redis has them. Leftovers of a process that died mid-publish are
/// taken too. Blocking.
pub fn take(state: &Path) -> Result<(Vec<Change>, Vec<PathBuf>)> {
    let d = dir(state);
    let live = d.join("outbox.jsonl");
    if live.exists() {
        let mine = d.join(format!(
            "outbox.{}.{}.sending",
            std::process::id(),
            crate::store::now_ms()
        ));
        // A rename: appenders that open after it start a new outbox.
        fs::rename(&live, &mine).map_err(io("cannot take", &live))?;
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&d)
        .map_err(io("cannot read", &d))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sending"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).map_err(io("cannot read", f))?;
        // A torn last line (a crash mid-append) is skipped: its change was durable in the
        // list before, and the next republish carries it.
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    Ok((out, files))
}

/// Reads a small state file (`applied`, `epoch`); `None` when absent.
pub fn read_state(state: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir(state).join(name))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Writes a small state file durably (write, fsync, rename). Blocking.
pub fn write_state(state: &Path, name: &str, value: &str) -> Result<()> {
    let d = dir(state);
    fs::create_dir_all(&d).map_err(io("cannot create", &d))?;
    let tmp = d.join(format!("{name}.{}.tmp", std::process::id()));
    let p = d.join(name);
    let mut f = fs::File::create(&tmp).map_err(io("cannot create", &tmp))?;
    f.write_all(value.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io("cannot write", &tmp))?;
    fs::rename(&tmp, &p).map_err(io("cannot replace", &p))
}
