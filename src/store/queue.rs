//! The priority queue: transactional messages accepted by `blast serve`, in their own sled
//! database (never the blast lane's), so a password reset's durability never waits behind
//! newsletter writes. Two trees: `data` (id → message bytes, written once) and `entries`
//! (id → envelope and per-recipient state, rewritten after each attempt). A message leaves
//! the queue when every recipient is final.
//!
//! Durability comes from a write-ahead journal ([`super::journal`]), not a sled flush: each
//! change is staged in sled (what readers see) and queued as a journal record; a group
//! commit writes and syncs the records; sled is flushed only at checkpoints. A checkpoint
//! (sled flush + replay start in sled's `meta`) happens when a journal segment is full, on
//! open after replay, and for commands that change the queue while serve is stopped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::journal::{self, Appended, Journal, Position};
use super::{check_version, now_ms, open_db_with, store_err};
use crate::error::{Error, Result};

/// Record kinds in the journal.
const ACCEPT: u8 = 1;
const UPDATE: u8 = 2;
const REMOVE: u8 = 3;
/// Journal segments used round robin.
const SEGMENTS: u32 = 2;
/// Sequence numbers skipped at each checkpoint: records of a group that was torn or failed
/// (past the replay end) then can never carry a number a later lap expects.
const SEQ_GAP: u64 = 1 << 32;
/// sled meta key of the journal checkpoint (where replay starts).
const CHECKPOINT_KEY: &str = "journal";

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
    /// The name `--json` uses too (`deferred`), for text output.
    pub fn name(self) -> &'static str {
        match self {
            RcptStatus::Pending => "pending",
            RcptStatus::Deferred => "deferred",
            RcptStatus::Sent => "sent",
            RcptStatus::Bounced => "bounced",
            RcptStatus::Failed => "failed",
        }
    }

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

/// How [`QueueStore::open_with`] opens the queue (the defaults are production's; tests turn
/// knobs to reach the paths a crash or tmpfs would).
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// sled's background flush period; `None` (the default) leaves sled unflushed until a
    /// checkpoint. The journal carries durability, and sled's own periodic fsyncs (file
    /// growth → ext4 journal commits) stalled the journal's syncs: under a bulk send the
    /// isolation bench's accept max fell from 78–167 ms to 28 ms without them.
    pub sled_flush_every_ms: Option<u64>,
    /// Try `O_DIRECT|O_DSYNC` for the journal (false: buffered `pwrite` + `fdatasync`).
    pub direct: bool,
    /// Journal segment size in bytes.
    pub segment_bytes: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            sled_flush_every_ms: None,
            direct: true,
            segment_bytes: journal::SEGMENT_BYTES,
        }
    }
}

/// The priority queue database, owned by one process (`blast serve`).
pub struct QueueStore {
    db: sled::Db,
    data: sled::Tree,
    entries: sled::Tree,
    path: PathBuf,
    /// Records staged since the last commit, in staging order.
    pending: Mutex<Vec<(u8, Vec<u8>)>>,
    durable: Arc<Mutex<Durable>>,
}

/// The journal with what a checkpoint needs.
struct Durable {
    journal: Journal,
    db: sled::Db,
    meta: sled::Tree,
    /// A journal write failed (part of it may be on disk): checkpoint before writing again.
    poisoned: bool,
}

impl Durable {
    /// Flushes sled (covering everything staged) with the replay start moved to `pos`.
    fn checkpoint(&mut self, pos: Position) -> std::io::Result<()> {
        self.poisoned = true; // until the flush below succeeds
        self.journal.reset(pos)?;
        self.meta
            .insert(CHECKPOINT_KEY, &pos.encode())
            .map_err(std::io::Error::other)?;
        self.db.flush().map_err(std::io::Error::other)?;
        self.poisoned = false;
        Ok(())
    }

    /// The start of the next lap: the next segment, from its beginning.
    fn next_lap(&self) -> Position {
        let p = self.journal.position();
        Position {
            segment: (p.segment + 1) % SEGMENTS,
            offset: 0,
            seq: p.seq + SEQ_GAP,
        }
    }

    /// Makes `records` (already staged in sled) durable: one journal write and sync, or a
    /// checkpoint when the segment is full or a previous write failed.
    fn commit(&mut self, records: &[(u8, Vec<u8>)]) -> std::io::Result<()> {
        if self.poisoned {
            let p = self.next_lap();
            return self.checkpoint(p);
        }
        match self.journal.append(records) {
            Ok(Appended::Synced) => Ok(()),
            Ok(Appended::Full) => {
                let p = self.next_lap();
                self.checkpoint(p)
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }
}

/// The queue's directory inside a state dir.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("queue")
}

impl QueueStore {
    /// Opens (or creates) the queue in `state_dir`, waiting up to `wait` for another process's
    /// lock; `Error::Locked` if it is still held (another `blast serve` owns it).
    pub fn open(state_dir: &Path, wait: Duration) -> Result<Self> {
        Self::open_with(state_dir, wait, QueueOptions::default())
    }

    /// [`QueueStore::open`] with explicit options. Replays the journal past the last
    /// checkpoint into sled, then checkpoints, so the store is whole before anyone reads it.
    pub fn open_with(state_dir: &Path, wait: Duration, opts: QueueOptions) -> Result<Self> {
        let path = path_in(state_dir);
        let db = open_db_with(&path, 64 << 20, wait, opts.sled_flush_every_ms)?.ok_or_else(|| {
            Error::Locked(format!(
                "{}: the priority queue is in use by another process (is `blast serve` running on this state dir?)",
                path.display()
            ))
        })?;
        let meta = db.open_tree("meta").map_err(|e| store_err(&path, e))?;
        check_version(&meta, &path, super::QUEUE_FORMAT)?;
        let data = db.open_tree("data").map_err(|e| store_err(&path, e))?;
        let entries = db.open_tree("entries").map_err(|e| store_err(&path, e))?;
        let start = meta
            .get(CHECKPOINT_KEY)
            .map_err(|e| store_err(&path, e))?
            .and_then(|v| Position::decode(&v))
            .unwrap_or(Position {
                segment: 0,
                offset: 0,
                seq: 1,
            });
        let store = QueueStore {
            durable: Arc::new(Mutex::new(Durable {
                journal: Journal::new(&path, opts.segment_bytes, start, opts.direct),
                db: db.clone(),
                meta,
                poisoned: false,
            })),
            db,
            data,
            entries,
            path,
            pending: Mutex::new(Vec::new()),
        };
        store.recover(start, opts.segment_bytes)?;
        Ok(store)
    }

    /// Applies journal records after `start` to sled, then starts a fresh lap after them.
    fn recover(&self, start: Position, segment_bytes: u64) -> Result<()> {
        let mut failed = None;
        let end = journal::replay(&self.path, start, |kind, payload| {
            if failed.is_none() {
                failed = self.apply(kind, payload).err();
            }
        })
        .map_err(|e| self.err(format!("cannot read the journal: {e}")))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let mut next = Position {
            seq: end.seq + SEQ_GAP,
            ..end
        };
        if next.offset >= segment_bytes {
            next = Position {
                segment: (next.segment + 1) % SEGMENTS,
                offset: 0,
                ..next
            };
        }
        let mut d = self.durable.lock().expect("journal lock");
        d.checkpoint(next)
            .map_err(|e| self.err(format!("journal checkpoint failed: {e}")))
    }

    /// Replays one record (idempotent: puts and removes of whole values).
    fn apply(&self, kind: u8, payload: &[u8]) -> Result<()> {
        match kind {
            ACCEPT => {
                let n = payload
                    .get(..4)
                    .ok_or_else(|| self.err("short journal record"))?;
                let n = 4 + u32::from_le_bytes(n.try_into().unwrap()) as usize;
                let json = payload
                    .get(4..n)
                    .ok_or_else(|| self.err("short journal record"))?;
                let e = self.decode(json)?;
                self.data
                    .insert(e.id.to_be_bytes(), &payload[n..])
                    .map_err(|x| self.err(x))?;
                self.entries
                    .insert(e.id.to_be_bytes(), json)
                    .map_err(|x| self.err(x))?;
            }
            UPDATE => {
                let e = self.decode(payload)?;
                self.entries
                    .insert(e.id.to_be_bytes(), payload)
                    .map_err(|x| self.err(x))?;
            }
            REMOVE => {
                let id: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| self.err("short journal record"))?;
                self.data.remove(id).map_err(|x| self.err(x))?;
                self.entries.remove(id).map_err(|x| self.err(x))?;
            }
            k => return Err(self.err(format!("unknown journal record kind {k}"))),
        }
        Ok(())
    }

    fn log(&self, kind: u8, payload: Vec<u8>) {
        self.pending
            .lock()
            .expect("pending lock")
            .push((kind, payload));
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
        let json = serde_json::to_vec(&entry).map_err(|x| self.err(x))?;
        let mut rec = Vec::with_capacity(4 + json.len() + m.data.len());
        rec.extend_from_slice(&(json.len() as u32).to_le_bytes());
        rec.extend_from_slice(&json);
        rec.extend_from_slice(&m.data);
        self.data
            .insert(id.to_be_bytes(), m.data)
            .map_err(|e| self.err(e))?;
        self.entries
            .insert(id.to_be_bytes(), json)
            .map_err(|x| self.err(x))?;
        self.log(ACCEPT, rec);
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
        let was = self.entries.remove(k).map_err(|e| self.err(e))?.is_some();
        self.log(REMOVE, k.to_vec());
        Ok(was)
    }

    fn put(&self, e: &Entry) -> Result<()> {
        let v = serde_json::to_vec(e).map_err(|x| self.err(x))?;
        self.entries
            .insert(e.id.to_be_bytes(), v.clone())
            .map_err(|x| self.err(x))?;
        self.log(UPDATE, v);
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

    /// Whether a message is queued (no decode).
    pub fn contains(&self, id: u64) -> Result<bool> {
        self.entries
            .contains_key(id.to_be_bytes())
            .map_err(|e| self.err(e))
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

    /// Makes everything staged so far durable: one group commit to the journal (a write and
    /// a sync off the runtime's threads), never a sled flush unless a segment is full.
    pub async fn flush(&self) -> Result<()> {
        let records = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        let durable = self.durable.clone();
        tokio::task::spawn_blocking(move || durable.lock().expect("journal lock").commit(&records))
            .await
            .map_err(|e| self.err(e))?
            .map_err(|e| self.err(format!("journal write failed: {e}")))
    }

    /// Blocking checkpoint (for commands outside the runtime, e.g. `blast queue drop` while
    /// serve is stopped): sled flushed, the journal restarted after it.
    pub fn flush_now(&self) -> Result<()> {
        self.pending.lock().expect("pending lock").clear();
        let mut d = self.durable.lock().expect("journal lock");
        let p = d.journal.position();
        let p = Position {
            seq: p.seq + SEQ_GAP,
            ..p
        };
        d.checkpoint(p)
            .map_err(|e| self.err(format!("journal checkpoint failed: {e}")))
    }

    fn decode(&self, v: &[u8]) -> Result<Entry> {
        serde_json::from_slice(v).map_err(|e| self.err(format!("corrupt queue entry: {e}")))
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_err(&self.path, e)
    }
}

/// Formats a queue id the one way it is ever shown: in the 250 reply, `blast queue list`
/// (text and `--json`), logs and DSNs — 16 upper-case hex digits.
pub fn format_id(id: u64) -> String {
    format!("{id:016X}")
}

/// Parses a queue id as printed by [`format_id`]: exactly 16 hex digits (either case). A
/// shorter string is refused rather than read as hex, so a decimal number such as `10` can
/// never silently name another message (it would be id 16).
pub fn parse_id(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
