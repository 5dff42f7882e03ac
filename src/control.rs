//! The control socket's protocol and clients. While `blast serve` runs it owns the priority
//! queue and the global state ([`crate::owner`]); every other command reaches them through a
//! Unix socket in the state dir: one JSON request line in, one JSON reply line out. The
//! server side is `serve::control`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::store::queue::Entry;
use crate::store::suppression::Entry as Suppressed;

/// A request to a running serve.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Every queued message.
    List,
    /// Make deferred messages due now (`id: None` = all).
    Retry {
        /// Queue id.
        id: Option<u64>,
    },
    /// Remove a message.
    Drop {
        /// Queue id.
        id: u64,
    },
    /// Lane counters.
    Stats,
    /// Add to the suppression list, durably before the answer.
    SuppressAdd {
        /// (normalised key, entry).
        entries: Vec<(String, Suppressed)>,
        /// Replace existing entries (`blast suppress add`) instead of keeping them.
        replace: bool,
        /// Changes another machine of the fleet made ([`crate::cluster`]): applied but not
        /// published again.
        #[serde(default)]
        from_fleet: bool,
    },
    /// Remove keys from the suppression list.
    SuppressRemove {
        /// Normalised keys.
        keys: Vec<String>,
        /// See `SuppressAdd`.
        #[serde(default)]
        from_fleet: bool,
    },
    /// Every suppression entry.
    SuppressList,
    /// List entries under new keys (recipient ids met as addresses), durably.
    SuppressMove {
        /// (from key, to key, entry).
        moves: Vec<(String, String, Suppressed)>,
    },
    /// Record a run that issues tokens (run id → name), durably.
    RegisterRun {
        /// The run's name (campaign id, or `campaign@slot`).
        name: String,
        /// Its campaign store's directory.
        #[serde(default)]
        dir: Option<PathBuf>,
    },
    /// Every run's store dir, most recent first.
    RunDirs,
    /// Count events (clicks) per (source, what).
    CountEvents {
        /// (run name, event).
        events: Vec<(String, String)>,
    },
    /// The name of a registered run id.
    RunName {
        /// [`crate::token::run_id`].
        id: u32,
    },
    /// Per-reason counts of what a run added to the list.
    SourceCounts {
        /// The run's name.
        source: String,
    },
    /// Count soft failures (durably); suppress those that complete the policy.
    SoftHits {
        /// The failures.
        hits: Vec<crate::store::suppression::SoftHit>,
        /// When they add up.
        policy: crate::store::suppression::SoftPolicy,
    },
    /// Forget the soft failures of mailboxes that accepted mail.
    SoftReset {
        /// Suppression keys.
        keys: Vec<String>,
    },
    /// Every mailbox's soft failure count.
    SoftCounts,
    /// Record a response rule's hold on a (source IP, site), durably.
    HoldPut {
        /// The hold.
        hold: crate::store::suppression::SiteHold,
    },
    /// The holds in force.
    Holds,
    /// Lift the holds of a site (every IP's without `ip`).
    HoldLift {
        /// The site key.
        site: String,
        /// Only this IP's.
        ip: Option<String>,
    },
    /// Take up to `want` of a warm-up day's cap, durably.
    WarmupReserve {
        /// The IP key.
        ip: String,
        /// `*` or a provider.
        scope: String,
        /// `YYYY-MM-DD`.
        day: String,
        /// How many.
        want: u64,
        /// The day's cap (`None`: past the schedule, counted only).
        cap: Option<u64>,
    },
    /// Give back warm-up reservations, add outcomes, durably.
    WarmupSettle {
        /// Per (IP, scope, day).
        settles: Vec<crate::store::warmup::Settle>,
    },
    /// The warm-up days recorded (for one IP).
    WarmupDays {
        /// Only this IP's.
        ip: Option<String>,
    },
    /// Store and process one message in the bounce inbox (`blast bounces import`).
    InboxPut {
        /// Where it came from (a file name).
        name: String,
        /// The raw message, base64.
        data_b64: String,
    },
    /// The bounce inbox's stored envelopes, oldest first.
    InboxList,
    /// Whether serve runs an inbox (an error answer when it does not); cheap.
    InboxProbe,
    /// One stored message.
    InboxShow {
        /// Its id.
        id: u64,
    },
}

/// The reply.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    /// Error text, if the request failed.
    pub error: Option<String>,
    /// `list`: the entries.
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// `drop`: whether it was queued.
    #[serde(default)]
    pub dropped: bool,
    /// `retry` with an id: whether that id is queued (an unknown id is an error, not
    /// "due now").
    #[serde(default)]
    pub queued: bool,
    /// `stats`: counter name → value.
    #[serde(default)]
    pub stats: Vec<(String, u64)>,
    /// `suppress_add`: how many were new; `warmup_reserve`: how many were granted.
    #[serde(default)]
    pub added: u64,
    /// `suppress_remove`: per key, whether it was listed.
    #[serde(default)]
    pub removed: Vec<bool>,
    /// `suppress_list`: the entries.
    #[serde(default)]
    pub suppressed: Vec<(String, Suppressed)>,
    /// `run_name`: the name, if registered.
    #[serde(default)]
    pub run_name: Option<String>,
    /// `source_counts`: reason → count.
    #[serde(default)]
    pub counts: Vec<(String, u64)>,
    /// `holds`: the holds in force.
    #[serde(default)]
    pub holds: Vec<crate::store::suppression::SiteHold>,
    /// `soft_counts`: key → its count.
    #[serde(default)]
    pub soft: Vec<(String, crate::store::suppression::SoftCount)>,
    /// `run_dirs`: (name, where).
    #[serde(default)]
    pub run_dirs: Vec<(String, crate::store::suppression::RunDir)>,
    /// `warmup_days`: the days.
    #[serde(default)]
    pub warmup: Vec<crate::store::warmup::WarmupDay>,
    /// `inbox_put`: what it did.
    #[serde(default)]
    pub import: Option<crate::serve::inbox_import::Summary>,
    /// `inbox_list`, `inbox_show`: envelopes.
    #[serde(default)]
    pub inbox: Vec<crate::serve::inbox::Stored>,
    /// `inbox_show`: the raw message, base64.
    #[serde(default)]
    pub raw_b64: Option<String>,
}

impl Response {
    /// A failed request.
    pub fn error(msg: String) -> Response {
        Response {
            error: Some(msg),
            ..Default::default()
        }
    }
}

/// The socket path inside a state dir.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// No serve listens on this state dir (no socket, or a stale one).
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// A serve that does not answer within this is treated as an error, not as absent.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Sends one request to a running serve. `Ok(None)` when no serve listens on this state dir.
pub async fn request(state_dir: &Path, req: &Request) -> std::io::Result<Option<Response>> {
    let path = path_in(state_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (r, mut w) = stream.into_split();
    let mut out = serde_json::to_vec(req)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    let mut line = String::new();
    tokio::time::timeout(ANSWER_WITHIN, BufReader::new(r).read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "serve did not answer"))??;
    Ok(Some(serde_json::from_str(&line)?))
}

/// [`request`] for blocking callers (store writers on their own threads, short commands).
pub fn request_blocking(state_dir: &Path, req: &Request) -> std::io::Result<Option<Response>> {
    let path = path_in(state_dir);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(ANSWER_WITHIN))?;
    stream.set_write_timeout(Some(ANSWER_WITHIN))?;
    let mut out = serde_json::to_vec(req)?;
    out.push(b'\n');
    stream.write_all(&out)?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "serve closed the control connection without answering",
        ));
    }
    Ok(Some(serde_json::from_str(&line)?))
}
