//! Durable state in sled. One database per campaign ([`campaign`]), one global suppression
//! list ([`suppression`]). sled lets one process open a database at a time: the campaign store
//! is held by the process sending it; the suppression store is opened briefly (waiting on the
//! lock) so two campaigns can share it.

pub mod bulk;
pub mod campaign;
pub mod holds;
pub mod journal;
pub mod queue;
pub mod record;
pub mod suppression;
pub mod warmup;

use std::path::Path;
use std::time::Duration;

use crate::error::Error;

/// On-disk format of a campaign store, written into it when created. A store of another
/// format is refused with a clear error, never reset or misread. 2: compact record layout
/// (varints, address and email cell not stored twice; see `record::Record::encode_into`).
pub const CAMPAIGN_FORMAT: u32 = 2;

/// On-disk format of the suppression store (unchanged since the first release).
pub const SUPPRESSION_FORMAT: u32 = 1;

/// On-disk format of the priority queue (`queue.rs`).
pub const QUEUE_FORMAT: u32 = 1;

/// On-disk format of the schedule claims (`schedule::claims`).
pub const SCHEDULE_FORMAT: u32 = 1;

/// Milliseconds since the unix epoch, the store's clock ([`crate::clock`], so a test's
/// `BLAST_NOW` moves retry times and warm-up days together).
pub fn now_ms() -> u64 {
    crate::clock::now_ms()
}

pub(crate) fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("lock"))
}

/// Opens a sled database, retrying while another process holds its lock for up to `wait`.
/// `Ok(None)` when the lock is still held after `wait`.
pub(crate) fn open_db(path: &Path, cache: u64, wait: Duration) -> Result<Option<sled::Db>, Error> {
    open_db_with(path, cache, wait, Some(500))
}

/// [`open_db`] with sled's background flush period (`None`: only explicit flushes).
pub(crate) fn open_db_with(
    path: &Path,
    cache: u64,
    wait: Duration,
    flush_every_ms: Option<u64>,
) -> Result<Option<sled::Db>, Error> {
    std::fs::create_dir_all(path).map_err(|e| Error::Store {
        path: path.to_path_buf(),
        message: format!("cannot create directory: {e}"),
    })?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache)
            .mode(sled::Mode::HighThroughput)
            // We flush explicitly where the durability promise needs it (or journal, for
            // the priority queue); the background flush is a backstop.
            .flush_every_ms(flush_every_ms)
            .open()
        {
            Ok(db) => return Ok(Some(db)),
            Err(e) if is_lock_error(&e) => {
                if std::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(Error::Store {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        }
    }
}

/// Checks (or writes, for a new store) the format version in `meta` against `expected`.
pub(crate) fn check_version(meta: &sled::Tree, path: &Path, expected: u32) -> Result<(), Error> {
    let err = |m: String| Error::Store {
        path: path.to_path_buf(),
        message: m,
    };
    match meta.get("format").map_err(|e| err(e.to_string()))? {
        None => {
            meta.insert("format", &expected.to_be_bytes())
                .map_err(|e| err(e.to_string()))?;
            Ok(())
        }
        Some(v) => {
            let v: [u8; 4] = v
                .as_ref()
                .try_into()
                .map_err(|_| err("corrupt format version".into()))?;
            let v = u32::from_be_bytes(v);
            match v.cmp(&expected) {
                std::cmp::Ordering::Equal => Ok(()),
                std::cmp::Ordering::Greater => Err(err(format!("store format version {v} is newer than this blast understands ({expected}); upgrade blast"))),
                // Reading it would fail on every record ("corrupt record"): say what it is.
                std::cmp::Ordering::Less => Err(err(format!("store format version {v} is older than this blast reads ({expected}); finish the campaign with the blast that started it, or remove this state directory to start it afresh"))),
            }
        }
    }
}

/// Maps a sled error on `path` into our error type (disk full, read-only, corruption).
pub(crate) fn store_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Group commits are at least this far apart. Each sled flush costs a write and a
/// `sync_file_range` (~250 µs of system time here); at bulk rates, flushing whatever arrived
/// the instant the last flush ended made ~1 flush per 6 messages and half the CPU of a send.
/// Waiting out the rest of this gap gathers bigger groups; at low rates the gap has long
/// passed and nothing waits. 12 ms (~150 messages a group at 12k msg/s) took ~8% off the
/// CPU of a whole `blast send` against 4 ms (e2e: 7.4 → 6.9 s for 100k messages) with the
/// same throughput; the crash bound (one commit group) is capped by the group size anyway.
pub const MIN_COMMIT_GAP: std::time::Duration = std::time::Duration::from_millis(12);

/// Sleeps out what is left of [`MIN_COMMIT_GAP`] since `last` (the previous commit).
pub async fn pace_commit(last: std::time::Instant) {
    let since = last.elapsed();
    if since < MIN_COMMIT_GAP {
        tokio::time::sleep(MIN_COMMIT_GAP - since).await;
    }
}
