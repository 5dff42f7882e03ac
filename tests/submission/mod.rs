//! The submission listener of `blast serve` against real clients on 127.0.0.1:0, with a
//! real users file in a temp dir and a tiny in-test queue that records each message: lettre
//! over STARTTLS + AUTH, and hand-written SMTP for the attacks (open relay, password
//! guessing, SMTP smuggling, STARTTLS command injection) and the limits.

mod clients;
mod defences;
mod limits;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blast::serve::submission::{
    self, AcceptRequest, Submission, SubmissionHandle, SubmissionSettings, SubmissionStats,
};
use blast::serve::users::{add_user, Users};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::tls::{plain_token, self_signed, upgrade, Client};

/// Upper bound for one read or connect.
const READ: Duration = Duration::from_secs(10);
const HOST: &str = "submit.blast.test";

/// How the in-test queue answers.
#[derive(Clone, Copy)]
enum Queue {
    Ok,
    Err,
    /// Drops the reply sender without a word.
    Drop,
}

/// A running listener, what its queue received, and the users file's directory.
struct Fx {
    h: SubmissionHandle,
    got: Arc<Mutex<Vec<Submission>>>,
    dir: tempfile::TempDir,
}

impl Fx {
    fn got(&self) -> Vec<Submission> {
        self.got.lock().unwrap().clone()
    }

    fn stat(&self, f: impl Fn(&SubmissionStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        SubmissionStats::get(f(&self.h.stats))
    }

    async fn connect(&self) -> Client<TcpStream> {
        connect(self.h.local_addr).await
    }

    /// Connected, EHLO'd and authenticated as `ann` (AUTH is allowed in clear on loopback).
    async fn login(&self) -> Client<TcpStream> {
        let mut c = self.connect().await;
        assert!(c.cmd("EHLO client.test").await.starts_with("250"));
        let r = c
            .cmd(&format!("AUTH PLAIN {}", plain_token("ann", "pw-ann")))
            .await;
        assert!(r.starts_with("235 2.7.0"), "{r}");
        c
    }
}

/// `ann` may send as a.test and its subdomains; `bob` as b.test.
fn users(dir: &std::path::Path) -> Arc<Users> {
    let path = dir.join("users");
    add_user(&path, "ann", "pw-ann", &["a.test".into(), ".a.test".into()]).unwrap();
    add_user(&path, "bob", "pw-bob", &["b.test".into()]).unwrap();
    Arc::new(Users::load(&path).unwrap())
}

fn settings() -> SubmissionSettings {
    SubmissionSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        hostname: HOST.into(),
        ..Default::default()
    }
}

/// [`settings`] with STARTTLS offered (self-signed certificate).
fn tls_settings() -> SubmissionSettings {
    SubmissionSettings {
        tls: Some(self_signed()),
        ..settings()
    }
}

async fn start(settings: SubmissionSettings, mode: Queue) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel::<AcceptRequest>(16);
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(req) = rx.recv().await {
            n += 1;
            g.lock().unwrap().push(req.msg);
            match mode {
                Queue::Ok => drop(req.reply.send(Ok(format!("Q{n}")))),
                Queue::Err => drop(req.reply.send(Err("disk full\r\n550 injected".into()))),
                Queue::Drop => drop(req.reply),
            }
        }
    });
    let h = submission::start(settings, users(dir.path()), tx)
        .await
        .expect("start listener");
    Fx { h, got, dir }
}

async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    let tcp = tokio::time::timeout(READ, TcpStream::connect(addr))
        .await
        .expect("connect within the timeout")
        .expect("connect");
    let mut c = Client {
        rd: BufReader::new(tcp),
    };
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    c
}

/// The server closed the connection (EOF or reset) within the timeout.
async fn assert_closed<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(c: &mut Client<S>) {
    let mut line = String::new();
    let n = tokio::time::timeout(READ, c.rd.read_line(&mut line))
        .await
        .expect("close within the timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected close, got {line:?}");
}

/// Sends a DATA body (it carries its own final dot) and returns the reply to it.
async fn send_body<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    c: &mut Client<S>,
    body: &str,
) -> String {
    c.send(body).await;
    c.reply().await
}

/// MAIL FROM:<from>, RCPT TO:<r@rcpt.test> and DATA pipelined (each must succeed), then the
/// body; returns the reply to the body.
async fn transaction<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    c: &mut Client<S>,
    from: &str,
    body: &str,
) -> String {
    c.send(&format!(
        "MAIL FROM:<{from}>\r\nRCPT TO:<r@rcpt.test>\r\nDATA\r\n"
    ))
    .await;
    for want in ["250 2.1.0", "250 2.1.5", "354 "] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{want}: {r}");
    }
    send_body(c, body).await
}

/// A message whose From: is `from`, with Date and Message-ID so nothing is added.
fn message(from: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: x@rcpt.test\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{subject}@a.test>\r\nSubject: {subject}\r\n\r\nbody\r\n..dot\r\n.\r\n"
    )
}
