//! The control socket's server side: while `blast serve` owns the priority queue and the
//! global state (sled lets one process open a store), `blast queue`, `blast suppress`,
//! `blast send --config` and scheduled runs reach them through a Unix socket in the state dir
//! (protocol and clients: [`crate::control`]). The socket file is created with mode 0600:
//! only the user running serve may drop or retry mail or change the suppression list.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

pub use crate::control::{path_in, request, Request, Response};
use crate::lane::priority::{Cmd, Stats};
use crate::owner::Global;
use crate::serve::inbox::{InboxStore, Rules};
use crate::store::queue::{format_id, QueueStore};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

/// What a control connection may use.
struct Ctx {
    lane: mpsc::Sender<Cmd>,
    stats: Arc<Stats>,
    /// For `list`: read directly (sled reads run beside the writer), so a long queue never
    /// holds up accepts in the writer loop.
    store: Arc<QueueStore>,
    /// The global state serve owns.
    global: Global,
    /// The bounce inbox's store and rules, when serve runs one.
    inbox: Option<Inbox>,
}

/// The bounce inbox, for `blast bounces import|list|show` while serve holds its store.
pub type Inbox = (Arc<InboxStore>, Arc<Rules>);

/// A request line is at most this long (a lane's suppressions for one commit group; an
/// imported message of up to [`crate::serve::inbox_import::MAX_MESSAGE`] bytes in base64).
const MAX_REQUEST: u64 =
    (crate::serve::inbox_import::MAX_MESSAGE as u64).div_ceil(3) * 4 + (1 << 20);

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
    global: Global,
    inbox: Option<Inbox>,
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
    let ctx = Arc::new(Ctx {
        lane,
        stats,
        store,
        global,
        inbox,
    });
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
    BufReader::new(r.take(MAX_REQUEST))
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
    Response::error(msg)
}

/// Runs a global-state operation off the reactor (sled writes and a flush).
async fn global_op(
    ctx: &Ctx,
    f: impl FnOnce(&Global, &mut Response) -> crate::error::Result<()> + Send + 'static,
) -> Response {
    let g = ctx.global.clone();
    match tokio::task::spawn_blocking(move || {
        let mut resp = Response::default();
        f(&g, &mut resp).map(|_| resp)
    })
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error(format!("suppression list: {e}")),
        Err(_) => error("serve is stopping".into()),
    }
}

/// What serve answers an inbox request with when it runs no inbox (the caller then opens the
/// inbox store itself).
pub const NO_INBOX: &str = "this serve runs no bounce inbox";

fn inbox_op(
    store: &InboxStore,
    rules: &Rules,
    global: &Global,
    req: Request,
) -> Result<Response, String> {
    use base64::Engine;
    let mut r = Response::default();
    match req {
        Request::InboxPut { name, data_b64 } => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(data_b64)
                .map_err(|e| format!("{name}: not base64: {e}"))?;
            r.import = Some(crate::serve::inbox_import::import_one(
                store, global, rules, &name, raw,
            ));
        }
        Request::InboxList => r.inbox = store.list()?,
        Request::InboxProbe => {}
        Request::InboxShow { id } => {
            r.inbox = store.get(id)?.into_iter().collect();
            r.raw_b64 = store
                .raw(id)?
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b));
        }
        _ => unreachable!("inbox requests only"),
    }
    Ok(r)
}

async fn handle(req: Request, ctx: &Ctx) -> Response {
    let (lane, stats) = (&ctx.lane, &*ctx.stats);
    let mut resp = Response::default();
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
        Request::SuppressAdd {
            entries,
            replace,
            from_fleet,
        } => {
            return global_op(ctx, move |g, r| {
                r.added = g.suppress_as(&entries, replace, from_fleet)?;
                Ok(())
            })
            .await
        }
        Request::SuppressRemove { keys, from_fleet } => {
            return global_op(ctx, move |g, r| {
                r.removed = g.unsuppress_as(&keys, from_fleet)?;
                Ok(())
            })
            .await
        }
        Request::SuppressMove { moves } => {
            return global_op(ctx, move |g, r| {
                r.added = g.move_entries(&moves)?;
                Ok(())
            })
            .await
        }
        Request::SuppressList => {
            return global_op(ctx, |g, r| {
                r.suppressed = g.list()?;
                Ok(())
            })
            .await
        }
        Request::RegisterRun { name, dir } => {
            return global_op(ctx, move |g, _| g.register_run(&name, dir.as_deref())).await
        }
        Request::CountEvents { events } => {
            return global_op(ctx, move |g, _| g.count_events(&events)).await
        }
        Request::RunDirs => {
            return global_op(ctx, |g, r| {
                r.run_dirs = g.run_dirs()?;
                Ok(())
            })
            .await
        }
        Request::RunName { id } => {
            return global_op(ctx, move |g, r| {
                r.run_name = g.run_name(id)?;
                Ok(())
            })
            .await
        }
        Request::SourceCounts { source } => {
            return global_op(ctx, move |g, r| {
                r.counts = g.source_counts(&source)?;
                Ok(())
            })
            .await
        }
        Request::SoftHits { hits, policy } => {
            return global_op(ctx, move |g, r| {
                r.added = g.soft_hits(&hits, policy)?;
                Ok(())
            })
            .await
        }
        Request::SoftReset { keys } => {
            return global_op(ctx, move |g, _| g.soft_reset(&keys)).await
        }
        Request::SoftCounts => {
            return global_op(ctx, |g, r| {
                r.soft = g.soft_counts()?;
                Ok(())
            })
            .await
        }
        Request::HoldPut { hold } => return global_op(ctx, move |g, _| g.put_hold(&hold)).await,
        Request::Holds => {
            return global_op(ctx, |g, r| {
                r.holds = g.holds()?;
                Ok(())
            })
            .await
        }
        Request::HoldLift { site, ip } => {
            return global_op(ctx, move |g, r| {
                r.added = g.lift_holds(&site, ip.as_deref())?;
                Ok(())
            })
            .await
        }
        Request::WarmupReserve {
            ip,
            scope,
            day,
            want,
            cap,
        } => {
            return global_op(ctx, move |g, r| {
                r.added = g.warmup_reserve(&ip, &scope, &day, want, cap)?;
                Ok(())
            })
            .await
        }
        Request::WarmupSettle { settles } => {
            return global_op(ctx, move |g, _| g.warmup_settle(&settles)).await
        }
        Request::WarmupDays { ip } => {
            return global_op(ctx, move |g, r| {
                r.warmup = g.warmup_days(ip.as_deref())?;
                Ok(())
            })
            .await
        }
        Request::InboxPut { .. }
        | Request::InboxList
        | Request::InboxProbe
        | Request::InboxShow { .. } => {
            let Some((store, rules)) = ctx.inbox.clone() else {
                return error(NO_INBOX.into());
            };
            let (g, req) = (ctx.global.clone(), req);
            return match tokio::task::spawn_blocking(move || inbox_op(&store, &rules, &g, req))
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => error(format!("bounce inbox: {e}")),
                Err(_) => gone(),
            };
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
