//! The submission listener of `blast serve` against real clients on 127.0.0.1:0, with a
//! real users file in a temp dir and a tiny in-test queue that records each message: lettre
//! over STARTTLS + AUTH, and hand-written SMTP for the attacks (open relay, password
//! guessing, SMTP smuggling, STARTTLS command injection) and the limits.

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

/// Authenticated submission through lettre (STARTTLS required, self-signed certificate),
/// with PLAIN and LOGIN: queued with the right envelope and data, 250 carrying the queue id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_submits_over_starttls_with_auth() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let fx = start(tls_settings(), Queue::Ok).await;
    for (i, mech) in [Mechanism::Plain, Mechanism::Login].into_iter().enumerate() {
        let tls = TlsParameters::builder("127.0.0.1".into())
            .dangerous_accept_invalid_certs(true)
            .build_rustls()
            .unwrap();
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(fx.h.local_addr.port())
            .tls(Tls::Required(tls))
            .credentials(Credentials::new("ann".into(), "pw-ann".into()))
            .authentication(vec![mech])
            .timeout(Some(READ))
            .build();
        let email = Message::builder()
            .from("Ann <ann@mail.a.test>".parse().unwrap())
            .to("Bob <bob@rcpt.test>".parse().unwrap())
            .subject(format!("receipt {i}"))
            .body(String::from("Thanks!\r\n.leading dot\r\n"))
            .unwrap();
        let resp = tokio::time::timeout(READ, mailer.send(email))
            .await
            .expect("lettre within the timeout")
            .expect("lettre send");
        let text: Vec<&str> = resp.message().collect();
        assert!(
            text.concat().contains(&format!("queued as Q{}", i + 1)),
            "{text:?}"
        );
    }
    let got = fx.got();
    assert_eq!(got.len(), 2);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.mail_from, "ann@mail.a.test");
        assert_eq!(m.rcpt_to, vec!["bob@rcpt.test".to_string()]);
        assert_eq!(m.user.as_deref(), Some("ann"));
        assert!(m.client.ip().is_loopback());
        let data = String::from_utf8(m.data.clone()).unwrap();
        assert!(
            data.contains(&format!("Subject: receipt {i}\r\n")),
            "{data}"
        );
        assert!(data.contains("\r\n.leading dot\r\n"), "{data}");
        assert!(data.ends_with("\r\n") && !data.ends_with(".\r\n"), "{data}");
        assert!(data.contains("Date: ") && data.to_lowercase().contains("message-id: "));
    }
    assert_eq!(fx.stat(|s| &s.accepted), 2);
    fx.h.shutdown().await;
}

/// Not an open relay: without AUTH, MAIL and RCPT get 530, even from loopback; nothing is
/// queued. A client in `allow_networks` relays without AUTH (null sender allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_relay_is_refused_unless_allowed_network() {
    let fx = start(settings(), Queue::Ok).await;
    let mut c = fx.connect().await;
    let ehlo = c.cmd("EHLO client.test").await;
    for ext in [
        "SIZE 26214400",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing: {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"), "no TLS configured: {ehlo}");
    c.send("MAIL FROM:<ann@a.test>\r\nRCPT TO:<victim@elsewhere.test>\r\nDATA\r\n")
        .await;
    assert!(c.reply().await.starts_with("530 5.7.0"));
    assert!(c.reply().await.starts_with("530 5.7.0"));
    assert!(c.reply().await.starts_with("503"));
    assert!(fx.got().is_empty());
    assert_eq!(fx.stat(|s| &s.rejected_relay), 2);
    fx.h.shutdown().await;

    let fx = start(
        SubmissionSettings {
            allow_networks: vec![("127.0.0.0".parse().unwrap(), 8)],
            ..settings()
        },
        Queue::Ok,
    )
    .await;
    let mut c = fx.connect().await;
    c.send("EHLO app.test\r\nMAIL FROM:<>\r\nRCPT TO:<x@rcpt.test>\r\nDATA\r\n")
        .await;
    for want in ["250", "250 2.1.0", "250 2.1.5", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{want}: {r}");
    }
    let r = send_body(&mut c, &message("someone@any.test", "relay")).await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as Q1"), "{r}");
    let got = fx.got();
    assert_eq!(
        (got[0].mail_from.as_str(), got[0].user.as_deref()),
        ("", None)
    );
    fx.h.shutdown().await;
}

/// Wrong passwords get 535 5.7.8; after `auth_fail_limit` failures from one IP (across
/// connections) AUTH from it gets 421 4.7.0 and the connection closes — even with the right
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_auth_535_then_the_ip_is_blocked() {
    let fx = start(
        SubmissionSettings {
            auth_fail_limit: 3,
            ..settings()
        },
        Queue::Ok,
    )
    .await;
    let mut c = fx.connect().await;
    c.cmd("EHLO client.test").await;
    for pw in ["wrong1", "wrong2"] {
        let r = c
            .cmd(&format!("AUTH PLAIN {}", plain_token("ann", pw)))
            .await;
        assert!(r.starts_with("535 5.7.8"), "{r}");
    }
    let mut c2 = fx.connect().await;
    c2.cmd("EHLO client.test").await;
    // Unknown user, by LOGIN: the third failure.
    assert!(c2.cmd("AUTH LOGIN").await.starts_with("334 VXNlcm5hbWU6"));
    assert!(c2.cmd("bm9ib2R5").await.starts_with("334 UGFzc3dvcmQ6"));
    assert!(c2.cmd("eA==").await.starts_with("535 5.7.8"));
    let r = c
        .cmd(&format!("AUTH PLAIN {}", plain_token("ann", "pw-ann")))
        .await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert_closed(&mut c).await;
    assert_eq!(fx.stat(|s| &s.auth_failures), 3);
    assert_eq!(fx.stat(|s| &s.auth_blocked), 1);
    fx.h.shutdown().await;
}

/// SIZE= over the limit: 552 at MAIL. A body over the limit: read to its end, then 552, and
/// the session goes on. More recipients than allowed: 452 4.5.3. A long command: 500 5.5.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_recipient_and_line_limits() {
    let fx = start(
        SubmissionSettings {
            max_message_size: 1000,
            max_recipients: 2,
            ..settings()
        },
        Queue::Ok,
    )
    .await;
    let mut c = fx.login().await;
    let r = c.cmd("MAIL FROM:<ann@a.test> SIZE=1001").await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(c
        .cmd("MAIL FROM:<ann@a.test> SIZE=900")
        .await
        .starts_with("250"));
    for i in 0..2 {
        let r = c.cmd(&format!("RCPT TO:<r{i}@rcpt.test>")).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let r = c.cmd("RCPT TO:<r2@rcpt.test>").await;
    assert!(r.starts_with("452 4.5.3"), "{r}");
    assert!(c.cmd("DATA").await.starts_with("354"));
    let big = format!(
        "From: ann@a.test\r\n\r\n{}.\r\n",
        "0123456789012345678901234567890123456789\r\n".repeat(40)
    );
    let r = send_body(&mut c, &big).await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    let r = c.cmd(&format!("NOOP {}", "x".repeat(1200))).await;
    assert!(r.starts_with("500 5.5.2"), "{r}");
    // Still in sync: a small message goes through.
    let r = transaction(&mut c, "ann@a.test", &message("ann@a.test", "small")).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(fx.got().len(), 1);
    fx.h.shutdown().await;
}

/// SMTP smuggling: `\n.\n`, `\r.\r`, `\n.\r\n` and `\r\n.\n` never end DATA. The message
/// with the smuggled second one inside is rejected 550 5.5.2 at the real end of data, the
/// smuggled MAIL/RCPT/DATA are never run, and the session stays in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_end_of_data_variants_are_rejected() {
    let fx = start(settings(), Queue::Ok).await;
    for fake in ["\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n"] {
        let mut c = fx.login().await;
        let body = format!(
            "From: ann@a.test\r\nSubject: first\r\n\r\nhello{fake}MAIL FROM:<ann@a.test>\r\n\
             RCPT TO:<victim@rcpt.test>\r\nDATA\r\nFrom: ann@a.test\r\nSubject: smuggled\r\n\
             \r\nevil\r\n.\r\n"
        );
        let r = transaction(&mut c, "ann@a.test", &body).await;
        assert!(r.starts_with("550 5.5.2"), "{fake:?}: {r}");
        assert!(c.cmd("NOOP").await.starts_with("250"), "{fake:?}");
        assert!(c.cmd("QUIT").await.starts_with("221"));
    }
    assert!(fx.got().is_empty(), "{:?}", fx.got());
    assert_eq!(fx.stat(|s| &s.rejected_messages), 4);
    fx.h.shutdown().await;
}

/// Commands pipelined after STARTTLS in the clear are discarded; after the handshake the
/// session is new: no EHLO, no AUTH, no transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_discards_pipelined_commands_and_resets() {
    let fx = start(tls_settings(), Queue::Ok).await;
    let mut c = fx.connect().await;
    assert!(c.cmd("EHLO client.test").await.contains("STARTTLS"));
    let auth = format!("AUTH PLAIN {}", plain_token("ann", "pw-ann"));
    c.send(&format!(
        "STARTTLS\r\n{auth}\r\nMAIL FROM:<ann@a.test>\r\nRCPT TO:<victim@rcpt.test>\r\n"
    ))
    .await;
    assert!(c.reply().await.starts_with("220 2.0.0"));
    let tls = upgrade(c.rd.into_inner()).await;
    let mut c = Client {
        rd: BufReader::new(tls),
    };
    // Had the injected commands run, this would be a 250 (and the AUTH a 235 before it).
    let r = c.cmd("RCPT TO:<victim@rcpt.test>").await;
    assert!(r.starts_with("530") || r.starts_with("503"), "{r}");
    let r = c.cmd("MAIL FROM:<ann@a.test>").await;
    assert!(r.starts_with("503 5.5.1"), "no EHLO yet: {r}");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    assert!(c
        .cmd("MAIL FROM:<ann@a.test>")
        .await
        .starts_with("530 5.7.0"));
    assert!(c.cmd(&auth).await.starts_with("235"));
    assert!(c.cmd("MAIL FROM:<ann@a.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<r@rcpt.test>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let r = send_body(&mut c, &message("ann@a.test", "tls")).await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as Q1"), "{r}");
    assert!(fx.stat(|s| &s.discarded_after_starttls) > 0);
    let got = fx.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, vec!["r@rcpt.test".to_string()]);
    fx.h.shutdown().await;
}

/// From a non-loopback address without TLS, AUTH is not advertised and is refused with
/// 538 5.7.11. Needs a non-loopback local address; skipped (with a note) without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_in_clear_from_non_loopback_is_refused() {
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let local = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.254:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip());
    let ip = match local {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip,
        _ => {
            eprintln!("note: no non-loopback address here; covered by the policy unit test");
            return;
        }
    };
    let fx = start(
        SubmissionSettings {
            listen: SocketAddr::new(ip, 0),
            ..settings()
        },
        Queue::Ok,
    )
    .await;
    let mut c = fx.connect().await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let r = c
        .cmd(&format!("AUTH PLAIN {}", plain_token("ann", "pw-ann")))
        .await;
    assert!(r.starts_with("538 5.7.11"), "{r}");
    assert!(c.cmd("MAIL FROM:<ann@a.test>").await.starts_with("530"));
    fx.h.shutdown().await;
}

/// An authenticated user sends only as its domains: MAIL FROM outside → 553 5.7.1, the null
/// sender → 553 5.7.1, a From: header outside (or two From: headers) → 550 5.7.1 after DATA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_domains_are_enforced() {
    let fx = start(settings(), Queue::Ok).await;
    let mut c = fx.login().await;
    for from in ["<bob@b.test>", "<>", "<ann@a.test.evil>", "<ann@xa.test>"] {
        let r = c.cmd(&format!("MAIL FROM:{from}")).await;
        assert!(r.starts_with("553 5.7.1"), "{from}: {r}");
    }
    for from in [
        "Bob <bob@b.test>",
        "Ann <ann@a.test>, bob@b.test",
        "ann@a.test\r\nFrom: bob@b.test",
        "\"ann@a.test\" <bob@b.test>",
    ] {
        let r = transaction(&mut c, "ann@a.test", &message(from, "x")).await;
        assert!(r.starts_with("550 5.7.1"), "{from}: {r}");
    }
    assert!(fx.got().is_empty());
    // A subdomain entry (.a.test) and the exact domain both pass.
    let r = transaction(
        &mut c,
        "ann@mail.a.test",
        &message("Ann <ann@A.TEST>", "ok"),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    fx.h.shutdown().await;
}

/// Date: and Message-ID: are added at the top when missing; a message that has them is
/// passed on byte for byte (no header is rewritten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_and_message_id_added_only_when_missing() {
    let fx = start(settings(), Queue::Ok).await;
    let mut c = fx.login().await;
    let bare = "From: ann@a.test\r\nSubject: no date\r\nX-Odd:  kept  as is \r\n\r\nhi\r\n";
    let full = message("ann@a.test", "full");
    for body in [bare.to_string() + ".\r\n", full.clone()] {
        assert!(transaction(&mut c, "ann@a.test", &body)
            .await
            .starts_with("250"));
    }
    let got = fx.got();
    let first = String::from_utf8(got[0].data.clone()).unwrap();
    let mut lines = first.lines();
    assert!(lines.next().unwrap().starts_with("Date: "), "{first}");
    let mid = lines.next().unwrap();
    assert!(
        mid.starts_with("Message-ID: <") && mid.ends_with(&format!("@{HOST}>")),
        "{first}"
    );
    assert!(first.ends_with(bare), "{first}");
    let unstuffed = full.replace("\r\n..dot", "\r\n.dot");
    assert_eq!(
        got[1].data,
        unstuffed.strip_suffix(".\r\n").unwrap().as_bytes()
    );
    fx.h.shutdown().await;
}

/// A queue that answers Err, or drops the reply, gives 451 4.3.0 — never 250 — and the
/// queue's reason cannot inject a reply line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_failure_gives_451() {
    for mode in [Queue::Err, Queue::Drop] {
        let fx = start(settings(), mode).await;
        let mut c = fx.login().await;
        let r = transaction(&mut c, "ann@a.test", &message("ann@a.test", "q")).await;
        assert!(r.starts_with("451 4.3.0") && !r.contains('\n'), "{r}");
        assert!(c.cmd("NOOP").await.starts_with("250 2.0.0"));
        assert_eq!(fx.got().len(), 1);
        assert_eq!(fx.stat(|s| &s.accepted), 0);
        fx.h.shutdown().await;
    }
}

/// Several transactions pipelined in one write are answered in order, each queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_transactions_are_answered_in_order() {
    let fx = start(settings(), Queue::Ok).await;
    let mut c = fx.connect().await;
    let mut all = format!(
        "EHLO client.test\r\nAUTH PLAIN {}\r\n",
        plain_token("ann", "pw-ann")
    );
    for i in 0..3 {
        all += &format!(
            "MAIL FROM:<ann@a.test>\r\nRCPT TO:<r{i}@rcpt.test>\r\nDATA\r\n{}RSET\r\n",
            message("ann@a.test", &format!("p{i}"))
        );
    }
    all += "QUIT\r\n";
    c.send(&all).await;
    assert!(c.reply().await.starts_with("250"));
    assert!(c.reply().await.starts_with("235"));
    for i in 0..3 {
        for want in ["250 2.1.0", "250 2.1.5", "354"] {
            assert!(c.reply().await.starts_with(want));
        }
        let r = c.reply().await;
        assert_eq!(r, format!("250 2.0.0 Ok: queued as Q{}", i + 1));
        assert!(c.reply().await.starts_with("250 2.0.0"));
    }
    assert!(c.reply().await.starts_with("221"));
    let rcpts: Vec<String> = fx.got().iter().map(|m| m.rcpt_to[0].clone()).collect();
    assert_eq!(rcpts, ["r0@rcpt.test", "r1@rcpt.test", "r2@rcpt.test"]);
    fx.h.shutdown().await;
}

/// Connections over the per-IP limit get 421 4.7.0 and are closed; an idle client gets 421
/// and is closed; shutdown tells an idle session 421 4.3.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_idle_timeout_and_shutdown() {
    let fx = start(
        SubmissionSettings {
            max_connections_per_ip: 1,
            idle_timeout: Duration::from_millis(500),
            ..settings()
        },
        Queue::Ok,
    )
    .await;
    let mut first = fx.connect().await;
    let tcp = TcpStream::connect(fx.h.local_addr).await.unwrap();
    let mut second = Client {
        rd: BufReader::new(tcp),
    };
    let r = second.reply().await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert_closed(&mut second).await;
    assert_eq!(fx.stat(|s| &s.connections_refused), 1);
    // The first connection just waits: the idle timeout closes it.
    let r = first.reply().await;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert_closed(&mut first).await;
    fx.h.shutdown().await;

    let fx = start(settings(), Queue::Ok).await;
    let mut c = fx.connect().await;
    assert!(c.cmd("NOOP").await.starts_with("250"));
    let shut = tokio::spawn(fx.h.shutdown());
    let r = c.reply().await;
    assert!(r.starts_with("421 4.3.2"), "{r}");
    assert_closed(&mut c).await;
    tokio::time::timeout(READ, shut).await.unwrap().unwrap();
    drop(fx.dir);
}

/// swaks as a second real client (AUTH LOGIN over STARTTLS). Skipped with a note when swaks
/// is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits() {
    if std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: swaks not installed; skipping (apt-get install swaks)");
        return;
    }
    let fx = start(tls_settings(), Queue::Ok).await;
    let server = fx.h.local_addr.to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("swaks")
            .args(["--server", &server, "--tls", "--auth", "LOGIN"])
            .args(["--auth-user", "bob", "--auth-password", "pw-bob"])
            .args(["--from", "bob@b.test", "--to", "x@rcpt.test"])
            .args(["--h-Subject", "via swaks", "--timeout", "20"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("swaks within the timeout")
    .expect("run swaks");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("queued as Q1"), "{log}");
    let got = fx.got();
    assert_eq!(got[0].user.as_deref(), Some("bob"));
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: via swaks"));
    fx.h.shutdown().await;
}

/// `blast user add` takes the password from --password-file, $BLAST_PASSWORD or a stdin
/// line — never from arguments — writes the file 0600 and replaces a user in place. (Run
/// through the library entry `main` calls, with its environment and stdin passed in.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_command() {
    use blast::cli::{Cli, Command};
    use clap::Parser;

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "from-file-secret\n").unwrap();
    let run = |name: &str, extra: &[&str], env: Option<&str>, stdin: &str| {
        let args = [
            "blast",
            "user",
            "add",
            name,
            "--users",
            users.to_str().unwrap(),
        ];
        let cli = Cli::try_parse_from(args.iter().chain(extra)).map_err(|e| e.to_string())?;
        let Command::User { action } = cli.command else {
            panic!("not a user command")
        };
        let env = env.map(String::from);
        blast::commands::user::run_with(action, env, &mut stdin.as_bytes())
            .map_err(|e| e.to_string())
    };
    let pf = [
        "--domain",
        "a.test",
        "--password-file",
        pw_file.to_str().unwrap(),
    ];
    run("ann", &pf, None, "").unwrap();
    run("bob", &["--domain", "b.test"], Some("env-secret"), "").unwrap();
    let cat = ["--domain", "c.test", "--domain", ".c.test"];
    run("cat", &cat, None, "stdin-secret\r\n").unwrap();
    run("ann", &["--domain", "a2.test"], None, "new-ann-secret\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&users).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let u = Users::load(&users).unwrap();
    assert_eq!(u.len(), 3);
    assert!(u.verify("ann", "new-ann-secret").await);
    assert!(!u.verify("ann", "from-file-secret").await);
    assert!(u.verify("bob", "env-secret").await);
    assert!(u.verify("cat", "stdin-secret").await);
    assert!(u.may_send_as("ann", "a2.test") && !u.may_send_as("ann", "a.test"));
    assert!(u.may_send_as("cat", "x.c.test"));
    // No password, no domain, or a password on the command line: refused, file unchanged.
    let before = std::fs::read(&users).unwrap();
    let e = run("dan", &["--domain", "d.test"], None, "").unwrap_err();
    assert!(e.contains("no password"), "{e}");
    assert!(run("dan", &[], Some("pw"), "").is_err());
    assert!(run("dan", &["--domain", "d.test", "--password", "pw"], None, "").is_err());
    assert_eq!(std::fs::read(&users).unwrap(), before);
    let text = String::from_utf8(before).unwrap();
    assert!(!text.contains("secret"), "{text}");
}
