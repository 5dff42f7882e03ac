//! The one-click unsubscribe endpoint of `blast serve` (RFC 8058), plain HTTP behind a
//! TLS-terminating proxy.
//!
//! - `POST PATH/TOKEN` with `List-Unsubscribe=One-Click` (multipart/form-data or urlencoded,
//!   or an empty body): the token is checked for [`Purpose::Unsubscribe`] and its recipient id
//!   goes on the global suppression list, durably, before the 200. No redirect.
//! - `GET PATH/TOKEN`: a page with one button that makes that POST. It changes nothing: link
//!   scanners and previews follow GETs.
//!
//! The endpoint never opens a campaign store: a token carries the recipient id (a keyed hash
//! of the address) and the list holds the id until an import meets the address
//! ([`crate::import::settle_id_hits`]). So it works while a send holds its store, and for a
//! campaign whose store is gone.
//!
//! Invalid tokens and GETs are rate-limited per client IP (a bounded map); a valid POST never
//! is: mailbox providers send one-clicks for millions of users from a few addresses.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::owner::Global;
use crate::shutdown::Shutdown;
use crate::store::suppression::Entry;
use crate::token::{Purpose, TokenSettings};

/// Largest request body read (the RFC 8058 body is 26 bytes; a multipart one a few hundred).
pub const MAX_BODY: usize = 16 << 10;
/// Connections at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// A connection lives at most this long (a slow client cannot hold a slot).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// GETs plus refused tokens per client per [`WINDOW`].
const PER_WINDOW: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);
/// Clients tracked at once; when every one is active, new ones are refused (GETs and bad
/// tokens only) until a window passes.
const MAX_CLIENTS: usize = 10_000;

/// The running endpoint.
pub struct HttpHandle {
    /// Where it listens (the configured address, with the port when it was 0).
    pub local_addr: SocketAddr,
    stop: Arc<Shutdown>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpHandle {
    /// Stops accepting, lets requests in progress finish (a few seconds at most).
    pub async fn shutdown(self) {
        self.stop.stop();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

struct App {
    tokens: Arc<TokenSettings>,
    global: Global,
    limiter: Mutex<Limiter>,
}

/// Binds `listen` and serves tokens under `path` (starts and ends with `/`) until `stop`.
pub async fn start(
    listen: SocketAddr,
    path: &str,
    click_path: Option<&str>,
    tokens: Arc<TokenSettings>,
    global: Global,
    stop: Arc<Shutdown>,
) -> std::io::Result<HttpHandle> {
    let inner = TcpListener::bind(listen).await?;
    let local_addr = inner.local_addr()?;
    let app = Arc::new(App {
        tokens,
        global,
        limiter: Mutex::new(Limiter::new(PER_WINDOW, WINDOW, MAX_CLIENTS)),
    });
    let mut router = Router::new().route(&format!("{path}{{token}}"), get(page).post(unsubscribe));
    if let Some(c) = click_path {
        router = router.route(&format!("{c}{{token}}"), get(click));
    }
    let router = router
        .fallback(|| async { not_found() })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app);
    let listener = Limited {
        inner,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<Peer>(),
        )
        .with_graceful_shutdown(async move { s.wait().await });
        if let Err(e) = served.await {
            eprintln!("blast serve: unsubscribe endpoint stopped: {e}");
        }
    });
    Ok(HttpHandle {
        local_addr,
        stop,
        task,
    })
}

/// The client: the TCP peer, or — when the peer is a proxy on this machine — the address
/// the proxy put last in `X-Forwarded-For` (the one it saw; earlier ones are the client's
/// word).
fn client_ip(peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let ip = peer.ip();
    if !ip.is_loopback() {
        return ip;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(ip)
}

/// A tracked link: `GET CLICK_PATH/TOKEN?u=URL` → `302` to the URL when the token is a click
/// token bound to exactly that URL ([`crate::clicks`]), else `404` (never an open redirect).
/// The click is counted after the answer, per run and per link.
async fn click(
    State(app): State<Arc<App>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(token): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    let u = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("u="))
        .unwrap_or("");
    let Some((t, url)) = crate::clicks::verify(&app.tokens.keys, &token, u) else {
        if !app.allow(client_ip(peer, &headers)) {
            return too_many();
        }
        return not_found();
    };
    let Ok(location) = HeaderValue::from_str(&url) else {
        return not_found();
    };
    let global = app.global.clone();
    tokio::task::spawn_blocking(move || {
        let source = global.run_label(t.run);
        let events = [
            (source.clone(), "click".to_string()),
            (source, format!("click:{url}")),
        ];
        if let Err(e) = global.count_events(&events) {
            eprintln!("blast serve: click not counted: {e}");
        }
    });
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    private(r.headers_mut());
    r
}

async fn page(
    State(app): State<Arc<App>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    if !app.allow(client_ip(peer, &headers)) {
        return too_many();
    }
    if app
        .tokens
        .keys
        .verify(Purpose::Unsubscribe, &token)
        .is_err()
    {
        return not_found();
    }
    // Only a verified token (34 base32 characters) is echoed: nothing to escape.
    let token = token.to_ascii_lowercase();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>Unsubscribe</title></head>\n\
         <body style=\"font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em\">\n\
         <h1>Unsubscribe</h1>\n<p>Stop receiving these emails? One click, no login.</p>\n\
         <form method=\"post\" action=\"{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>\n</body></html>\n"
    );
    let mut r = (StatusCode::OK, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    private(h);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    r
}

async fn unsubscribe(
    State(app): State<Arc<App>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    let client = client_ip(peer, req.headers());
    let Ok(t) = app.tokens.keys.verify(Purpose::Unsubscribe, &token) else {
        if !app.allow(client) {
            return too_many();
        }
        return not_found();
    };
    match one_click_body(req).await {
        Ok(true) => {}
        Ok(false) => {
            if !app.allow(client) {
                return too_many();
            }
            return text(
                StatusCode::BAD_REQUEST,
                "expected the body List-Unsubscribe=One-Click (RFC 8058)\n",
            );
        }
        Err(r) => return r,
    }
    let key = t.rid_key();
    let global = app.global.clone();
    // Durable (flushed) before the 200: an answered one-click is never lost to a crash. An
    // entry already there (a bounce, an earlier click) is kept.
    let record = move || {
        // The token names its run by a 32-bit hash of the run's name: runs sent with serve's
        // keys registered theirs on the list (no campaign store is opened to find it).
        let source = global.run_label(t.run);
        let entry = Entry {
            reason: "unsubscribe".into(),
            at_ms: crate::store::now_ms(),
            source,
            detail: "one-click".into(),
        };
        global.suppress(&[(key, entry)], false)
    };
    match tokio::task::spawn_blocking(record).await {
        Ok(Ok(_)) => {
            let mut r = text(
                StatusCode::OK,
                "You are unsubscribed. You will not receive these emails again.\n",
            );
            private(r.headers_mut());
            r
        }
        Ok(Err(e)) => {
            eprintln!("blast serve: one-click unsubscribe not recorded: {e}");
            // 503: the provider retries later.
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not recorded, please try again later\n",
            )
        }
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "server is stopping\n"),
    }
}

/// Whether the body is a one-click: empty, or `List-Unsubscribe=One-Click` urlencoded or as
/// a multipart field. `Err`: the body could not be read (too large, broken multipart).
async fn one_click_body(req: Request) -> Result<bool, Response> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if multipart {
        let mut m = Multipart::from_request(req, &())
            .await
            .map_err(IntoResponse::into_response)?;
        loop {
            match m.next_field().await {
                Ok(None) => return Ok(false),
                Ok(Some(f)) => {
                    let named = f.name() == Some("List-Unsubscribe");
                    let v = f.text().await.map_err(IntoResponse::into_response)?;
                    if named && v.trim() == "One-Click" {
                        return Ok(true);
                    }
                }
                Err(e) => return Err(e.into_response()),
            }
        }
    }
    let body = Bytes::from_request(req, &())
        .await
        .map_err(IntoResponse::into_response)?;
    let body = String::from_utf8_lossy(&body);
    let body = body.trim();
    Ok(body.is_empty()
        || body
            .split('&')
            .any(|p| p.trim() == "List-Unsubscribe=One-Click"))
}

fn text(code: StatusCode, body: &'static str) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Never cached, never indexed, and the token never leaks as a referrer.
fn private(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "unknown link\n")
}

fn too_many() -> Response {
    let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

impl App {
    fn allow(&self, ip: IpAddr) -> bool {
        self.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(ip, Instant::now())
    }
}

/// Fixed-window counts per client, bounded: IPv6 clients count per /64 (one host has them
/// all), and when `cap` clients are active a new one is refused rather than grow the map.
struct Limiter {
    counts: HashMap<IpAddr, (Instant, u32)>,
    per_window: u32,
    window: Duration,
    cap: usize,
}

impl Limiter {
    fn new(per_window: u32, window: Duration, cap: usize) -> Limiter {
        Limiter {
            counts: HashMap::new(),
            per_window,
            window,
            cap,
        }
    }

    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 => v4,
        };
        if !self.counts.contains_key(&ip) && self.counts.len() >= self.cap {
            let window = self.window;
            self.counts
                .retain(|_, (since, _)| now.duration_since(*since) < window);
            if self.counts.len() >= self.cap {
                return false;
            }
        }
        let c = self.counts.entry(ip).or_insert((now, 0));
        if now.duration_since(c.0) >= self.window {
            *c = (now, 0);
        }
        c.1 = c.1.saturating_add(1);
        c.1 <= self.per_window
    }
}

/// The TCP peer of a request.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, Limited>> for Peer {
    fn connect_info(s: IncomingStream<'_, Limited>) -> Peer {
        Peer(*s.remote_addr())
    }
}

/// A TCP listener with a connection cap; each connection has a lifetime.
struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl Listener for Limited {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                // Never closed; wait instead of spinning if it were.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    let _ = io.set_nodelay(true);
                    let conn = Conn {
                        io,
                        _slot: slot,
                        deadline: Box::pin(tokio::time::sleep(CONNECTION_LIFETIME)),
                    };
                    return (conn, addr);
                }
                // e.g. EMFILE: back off instead of spinning on the error.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection holding its slot; reads and writes fail once its lifetime is over.
struct Conn {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection lifetime over")
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_per_client_and_stays_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3, Duration::from_secs(60), 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::ffff".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert!((0..3).all(|_| l.allow(a, t0)));
        assert!(!l.allow(a, t0), "a fourth in the window");
        assert!(l.allow(b, t0));
        assert!(l.allow(b2, t0) && l.allow(b2, t0), "one /64");
        assert!(!l.allow(b, t0), "the /64 shares one count");
        assert!(!l.allow(c, t0), "map full of active clients");
        assert_eq!(l.counts.len(), 2);
        let later = t0 + Duration::from_secs(61);
        assert!(l.allow(c, later), "expired clients make room");
        assert!(l.allow(a, later), "a new window");
        assert!(l.counts.len() <= 2);
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_a_local_proxy() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.9".parse().unwrap(),
        );
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(
            client_ip(local, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(remote, &h), remote.ip());
        assert_eq!(client_ip(local, &HeaderMap::new()), local.ip());
    }
}
