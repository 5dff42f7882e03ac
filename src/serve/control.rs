//! The control socket: while `blast serve` owns the priority queue (sled lets one process
//! open it), `blast queue` reaches it through a Unix socket in the state dir. One JSON request
//! line in, one JSON reply line out. The socket file is created with mode 0600: only the
//! user running serve may drop or retry mail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::lane::priority::{Cmd, Stats};
use crate::store::queue::{format_id, Entry, QueueStore};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

/// A request from `blast queue`.
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
}

/// The reply.
#[derive(Debug, Serialize, Deserialize)]
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
}

/// The socket path inside a state dir.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// What a control connection may use.
struct Ctx {
    lane: mpsc::Sender<Cmd>,
    stats: Arc<Stats>,
    /// For `list`: read directly (sled reads run beside the writer), so a long queue never
    /// holds up accepts in the writer loop.
    store: Arc<QueueStore>,
}

/// At most this many control connections are answered at once; more wait.
const MAX_CONNECTIONS: usize = 16;

/// Serves requests until the returned task is aborted (its connections with it). A stale
/// socket file (serve was killed) is replaced: the caller already holds the queue lock, so no
/// other serve is alive.
pub fn start(
    state_dir: &Path,
    lane: mpsc::Sender<Cmd>,
    stats: Arc<Stats>,
    store: Arc<QueueStore>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = path_in(state_dir);
    let _ = std::fs::remove_file(&path);
    // Bound in a private (0700) directory, made 0600, then renamed into place: the socket is
    // never reachable with the umask's looser permissions.
    let private = state_dir.join(".control.tmp");
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("sock");
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    let _ = std::fs::remove_dir(&private);
    let ctx = Arc::new(Ctx { lane, stats, store });
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                // e.g. EMFILE: back off instead of spinning on the error.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            while conns.try_join_next().is_some() {}
            let ctx = ctx.clone();
            conns.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(30), answer(stream, &ctx)).await;
                drop(permit);
            });
        }
    }))
}

async fn answer(stream: UnixStream, ctx: &Ctx) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(64 * 1024))
        .read_line(&mut line)
        .await?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Err(e) => error(format!("bad request: {e}")),
        Ok(req) => handle(req, ctx).await,
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await
}

fn error(msg: String) -> Response {
    Response {
        error: Some(msg),
        entries: Vec::new(),
        dropped: false,
        queued: false,
        stats: Vec::new(),
    }
}

async fn handle(req: Request, ctx: &Ctx) -> Response {
    let (lane, stats) = (&ctx.lane, &*ctx.stats);
    let mut resp = error(String::new());
    resp.error = None;
    let gone = || error("serve is stopping".into());
    match req {
        Request::List => {
            let store = ctx.store.clone();
            match tokio::task::spawn_blocking(move || store.list()).await {
                Ok(Ok(e)) => resp.entries = e,
                Ok(Err(e)) => return error(format!("cannot read the queue: {e}")),
                Err(_) => return gone(),
            }
        }
        Request::Retry { id } => {
            if let Some(id) = id {
                match ctx.store.contains(id) {
                    Ok(true) => resp.queued = true,
                    // Nothing to make due: say so instead of "due now".
                    Ok(false) => return resp,
                    Err(e) => return error(format!("cannot read the queue: {e}")),
                }
            }
            if lane.send(Cmd::RetryNow(id)).await.is_err() {
                return gone();
            }
        }
        Request::Drop { id } => {
            let (tx, rx) = oneshot::channel();
            if lane.send(Cmd::Drop(id, tx)).await.is_err() {
                return gone();
            }
            match rx.await {
                Ok(Ok(d)) => resp.dropped = d,
                Ok(Err(e)) => return error(format!("cannot drop {}: {e}", format_id(id))),
                Err(_) => return gone(),
            }
        }
        Request::Stats => {
            let g = Stats::get;
            resp.stats = vec![
                ("accepted".into(), g(&stats.accepted)),
                ("delivered".into(), g(&stats.delivered)),
                ("deferred".into(), g(&stats.deferred)),
                ("bounced".into(), g(&stats.bounced)),
                ("dsns".into(), g(&stats.dsns)),
                ("flushes".into(), g(&stats.flushes)),
                ("waited_for_worker".into(), g(&stats.waited_for_worker)),
                ("max_pickup_us".into(), g(&stats.max_pickup_us)),
            ];
        }
    }
    resp
}

/// Sends one request to a running serve. `Ok(None)` when no serve listens on this state dir.
pub async fn request(state_dir: &Path, req: &Request) -> std::io::Result<Option<Response>> {
    let path = path_in(state_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let (r, mut w) = stream.into_split();
    let mut out = serde_json::to_vec(req)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(r).read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "serve did not answer"))??;
    Ok(Some(serde_json::from_str(&line)?))
}
