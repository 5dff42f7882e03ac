//! The priority queue: transactional messages accepted by `blast serve`, in their own sled
//! database (never the blast lane's), so a password reset's durability never waits behind
//! newsletter writes. Two trees: `data` (id → message bytes, written once) and `entries`
//! (id → envelope and per-recipient state, rewritten after each attempt). A message leaves
//! the queue when every recipient is final.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{check_version, now_ms, open_db, store_err};
use crate::error::{Error, Result};

/// Where a recipient of a queued message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RcptStatus {
    /// Not tried yet (or tried and due again).
    Pending,
    /// A 4xx: tried again at `next_ms`.
    Deferred,
    /// 250 after the final dot.
    Sent,
    /// A 5xx: a DSN went back to the sender.
    Bounced,
    /// Gave up after the retry schedule (a DSN went back to the sender).
    Failed,
}

impl RcptStatus {
    /// Final: never tried again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RcptStatus::Sent | RcptStatus::Bounced | RcptStatus::Failed
        )
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rcpt {
    /// The address as given in RCPT TO.
    pub addr: String,
    /// State.
    pub status: RcptStatus,
    /// Attempts that got a reply.
    pub attempts: u32,
    /// When a deferred recipient is due (ms since the epoch).
    pub next_ms: u64,
    /// The last reply (or connection error).
    pub last_reply: String,
}

/// A queued message's envelope and state (the bytes live in the `data` tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Queue id.
    pub id: u64,
    /// Envelope sender; empty for the null sender (a DSN).
    pub mail_from: String,
    /// Recipients.
    pub rcpts: Vec<Rcpt>,
    /// When it was accepted (ms since the epoch).
    pub received_ms: u64,
    /// The authenticated user who submitted it.
    pub user: Option<String>,
    /// Needs SMTPUTF8 on the way out.
    pub smtputf8: bool,
    /// Declared BODY=8BITMIME.
    pub eight_bit: bool,
    /// Size in bytes.
    pub size: u64,
}

impl Entry {
    /// Every recipient is final: the message can leave the queue.
    pub fn is_done(&self) -> bool {
        self.rcpts.iter().all(|r| r.status.is_final())
    }

    /// Earliest time a non-final recipient is due (ms), if any.
    pub fn due_ms(&self) -> Option<u64> {
        self.rcpts
            .iter()
            .filter(|r| !r.status.is_final())
            .map(|r| r.next_ms)
            .min()
    }
}

/// A message to enqueue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Envelope sender ("" = null sender).
    pub mail_from: String,
    /// Recipients.
    pub rcpt_to: Vec<String>,
    /// The message (CRLF lines, not dot-stuffed).
    pub data: Vec<u8>,
    /// Authenticated user.
    pub user: Option<String>,
    /// Needs SMTPUTF8.
    pub smtputf8: bool,
    /// BODY=8BITMIME.
    pub eight_bit: bool,
}

/// The priority queue database, owned by one process (`blast serve`).
pub struct QueueStore {
    db: sled::Db,
    data: sled::Tree,
    entries: sled::Tree,
    path: PathBuf,
}

/// The queue's directory inside a state dir.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("queue")
}

impl QueueStore {
    /// Opens (or creates) the queue in `state_dir`, waiting up to `wait` for another process's
    /// lock; `Error::Locked` if it is still held (another `blast serve` owns it).
    pub fn open(state_dir: &Path, wait: Duration) -> Result<Self> {
        let path = path_in(state_dir);
        let db = open_db(&path, 64 << 20, wait)?.ok_or_else(|| {
            Error::Locked(format!(
                "{}: the priority queue is in use by another process (is `blast serve` running on this state dir?)",
                path.display()
            ))
        })?;
        let meta = db.open_tree("meta").map_err(|e| store_err(&path, e))?;
        check_version(&meta, &path, super::QUEUE_FORMAT)?;
        let data = db.open_tree("data").map_err(|e| store_err(&path, e))?;
        let entries = db.open_tree("entries").map_err(|e| store_err(&path, e))?;
        Ok(QueueStore {
            db,
            data,
            entries,
            path,
        })
    }

    /// Stages a new message (not durable until [`QueueStore::flush`]); returns its entry.
    pub fn insert(&self, m: NewMessage) -> Result<Entry> {
        let id = self.db.generate_id().map_err(|e| self.err(e))?;
        let now = now_ms();
        let entry = Entry {
            id,
            mail_from: m.mail_from,
            rcpts: m
                .rcpt_to
                .into_iter()
                .map(|addr| Rcpt {
                    addr,
                    status: RcptStatus::Pending,
                    attempts: 0,
                    next_ms: now,
                    last_reply: String::new(),
                })
                .collect(),
            received_ms: now,
            user: m.user,
            smtputf8: m.smtputf8,
            eight_bit: m.eight_bit,
            size: m.data.len() as u64,
        };
        self.data
            .insert(id.to_be_bytes(), m.data)
            .map_err(|e| self.err(e))?;
        self.put(&entry)?;
        Ok(entry)
    }

    /// Stages an entry's new state; a finished message is removed with its bytes.
    pub fn update(&self, e: &Entry) -> Result<()> {
        if e.is_done() {
            self.remove(e.id)?;
            Ok(())
        } else {
            self.put(e)
        }
    }

    /// Removes a message (`blast queue drop`); false if it was not queued.
    pub fn remove(&self, id: u64) -> Result<bool> {
        let k = id.to_be_bytes();
        self.data.remove(k).map_err(|e| self.err(e))?;
        Ok(self.entries.remove(k).map_err(|e| self.err(e))?.is_some())
    }

    fn put(&self, e: &Entry) -> Result<()> {
        let v = serde_json::to_vec(e).map_err(|x| self.err(x))?;
        self.entries
            .insert(e.id.to_be_bytes(), v)
            .map_err(|x| self.err(x))?;
        Ok(())
    }

    /// One entry.
    pub fn get(&self, id: u64) -> Result<Option<Entry>> {
        match self
            .entries
            .get(id.to_be_bytes())
            .map_err(|e| self.err(e))?
        {
            None => Ok(None),
            Some(v) => Ok(Some(self.decode(&v)?)),
        }
    }

    /// A message's bytes.
    pub fn data(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .data
            .get(id.to_be_bytes())
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    /// Every queued entry, oldest first.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for kv in self.entries.iter() {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            out.push(self.decode(&v)?);
        }
        Ok(out)
    }

    /// Makes everything staged so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Blocking flush (for commands outside the runtime).
    pub fn flush_now(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn decode(&self, v: &[u8]) -> Result<Entry> {
        serde_json::from_slice(v).map_err(|e| self.err(format!("corrupt queue entry: {e}")))
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_err(&self.path, e)
    }
}

/// Formats a queue id the way `blast queue` and the 250 reply show it.
pub fn format_id(id: u64) -> String {
    format!("{id:016X}")
}

/// Parses a queue id as printed by [`format_id`].
pub fn parse_id(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: &[&str]) -> NewMessage {
        NewMessage {
            mail_from: "app@acme.example".into(),
            rcpt_to: to.iter().map(|s| s.to_string()).collect(),
            data: b"Subject: hi\r\n\r\nbody\r\n".to_vec(),
            user: Some("app".into()),
            smtputf8: false,
            eight_bit: false,
        }
    }

    #[test]
    fn survives_reopen_and_leaves_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let q = QueueStore::open(dir.path(), Duration::ZERO).unwrap();
            let e = q.insert(msg(&["a@x.example", "b@y.example"])).unwrap();
            q.flush_now().unwrap();
            e.id
        };
        let q = QueueStore::open(dir.path(), Duration::ZERO).unwrap();
        let mut e = q.get(id).unwrap().expect("durable");
        assert_eq!(e.rcpts.len(), 2);
        assert_eq!(q.data(id).unwrap().unwrap(), b"Subject: hi\r\n\r\nbody\r\n");
        e.rcpts[0].status = RcptStatus::Sent;
        q.update(&e).unwrap();
        assert_eq!(q.list().unwrap().len(), 1);
        e.rcpts[1].status = RcptStatus::Bounced;
        q.update(&e).unwrap();
        assert!(q.list().unwrap().is_empty());
        assert!(q.data(id).unwrap().is_none());
        assert_eq!(parse_id(&format_id(id)), Some(id));
    }

    #[test]
    fn second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _q = QueueStore::open(dir.path(), Duration::ZERO).unwrap();
        // sled's lock is per process (flock); a second handle in the same process gets the
        // same error a second `blast serve` would.
        match QueueStore::open(dir.path(), Duration::from_millis(100)) {
            Err(Error::Locked(m)) => assert!(m.contains("blast serve"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened twice"),
        }
    }
}
