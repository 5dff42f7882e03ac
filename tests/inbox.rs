//! The bounce inbox of a real `blast serve` process (`[serve] bounce_inbox`): raw SMTP on
//! 127.0.0.1. It takes mail for valid VERP and `unsub+` addresses, postmaster@ and abuse@,
//! from the null sender, without AUTH; refuses forged tokens, unknown local parts and any
//! other domain (never a relay); a mailto: unsubscribe suppresses the recipient, and the
//! next campaign skips the address.

use std::net::SocketAddr;
use std::process::Child;

use blast::token::Purpose;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::serve::{free_port, term, wait_until, Setup, WAIT};
use crate::unsubscribe::{
    keys, listed, reasons, send_process, setup, signed_campaign, suppress_rows, token,
};

pub(crate) fn inbox_setup(relay: SocketAddr) -> Setup {
    let s = setup(relay);
    let text = std::fs::read_to_string(s.config())
        .unwrap()
        .replace("[serve]\n", "[serve]\nbounce_inbox = \"127.0.0.1:0\"\n")
        .replace(
            "domain = \"bounces.acme.example\"\n",
            "domain = \"bounces.acme.example\"\nfeedback_addresses = [\"fbl@acme.example\"]\n",
        );
    std::fs::write(s.config(), text).unwrap();
    s
}

/// Starts serve; returns the inbox's address from its first line.
pub(crate) fn spawn(setup: &Setup) -> (Child, SocketAddr) {
    let (child, line) = setup.spawn_first_line();
    let addr = line
        .split("bounce inbox on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no inbox address in {line:?}"));
    (child, addr)
}

/// Sends signed campaign `id` of `list` with `blast send --config` into a fresh sink;
/// expects exit 0 and returns what the sink received.
pub(crate) async fn send_campaign(
    setup: &Setup,
    f: &crate::pipeline::Fixture,
    id: &str,
    list: &[String],
) -> Vec<blast::sink::Received> {
    let sink = crate::pipeline::start_sink(Vec::new()).await;
    let c = signed_campaign(f, id, sink.addr, list, "");
    let out = tokio::task::block_in_place(|| send_process(setup, &c).output().unwrap());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    sink.received()
}

/// The VERP return path the message to `a` went out with.
pub(crate) fn verp_of(got: &[blast::sink::Received], a: &str) -> String {
    let r = got.iter().find(|r| r.rcpt_to[0] == a);
    r.unwrap_or_else(|| panic!("nothing sent to {a}"))
        .mail_from
        .clone()
}

/// The Message-ID of the message to `a`.
pub(crate) fn message_id_of(got: &[blast::sink::Received], a: &str) -> String {
    let r = got.iter().find(|r| r.rcpt_to[0] == a);
    let r = r.unwrap_or_else(|| panic!("nothing sent to {a}"));
    crate::pipeline::header(&r.data, "Message-ID")
        .unwrap()
        .trim()
        .to_string()
}

/// A raw SMTP client: one command, its (possibly multi-line) reply.
struct Smtp {
    rd: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Smtp {
    async fn connect(addr: SocketAddr) -> (Smtp, String) {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (rd, wr) = s.into_split();
        let mut c = Smtp {
            rd: tokio::io::BufReader::new(rd),
            wr,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            tokio::time::timeout(WAIT, self.rd.read_line(&mut line))
                .await
                .expect("a reply in time")
                .unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    async fn cmd(&mut self, c: &str) -> String {
        self.wr
            .write_all(format!("{c}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }
}

/// An RFC 3464 DSN for `final_rcpt`, sent to `to`.
pub(crate) fn dsn(to: &str, final_rcpt: &str, status: &str, diag: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.net\r\nTo: <{to}>\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n\
         Final-Recipient: rfc822; {final_rcpt}\r\nAction: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {diag}\r\n\
         --b--\r\n"
    )
}

/// An RFC 5965 abuse report about the message whose Message-ID was `mid` (the recipient
/// redacted, as feedback loops do).
pub(crate) fn arf(mid: &str) -> String {
    format!(
        "From: fbl@provider.example\r\nTo: fbl@acme.example\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"a\"\r\n\r\n\
         --a\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n\
         --a\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: test/1.0\r\nVersion: 1\r\n\r\n\
         --a\r\nContent-Type: message/rfc822\r\n\r\nFrom: news@acme.example\r\nTo: redacted@provider.example\r\n\
         Message-ID: {mid}\r\nSubject: Hi\r\n\r\nbody\r\n--a--\r\n"
    )
}

/// One transaction from the null sender; returns the reply to the final dot.
async fn deliver(inbox: SocketAddr, rcpt: &str, body: &str) -> String {
    let (mut s, _) = Smtp::connect(inbox).await;
    assert!(s.cmd("EHLO mta.example").await.starts_with("250"));
    assert!(s.cmd("MAIL FROM:<>").await.starts_with("250"));
    let r = s.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    assert!(r.starts_with("250"), "{rcpt}: {r}");
    assert!(s.cmd("DATA").await.starts_with("354"));
    let r = s.cmd(&format!("{body}.")).await;
    let _ = s.cmd("QUIT").await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_and_complaints_suppress_exactly_their_recipients() {
    let setup = inbox_setup(free_port());
    let (child, inbox) = spawn(&setup);
    let k = keys();
    let list: Vec<String> = [
        "hard@x.example",
        "forged@x.example",
        "soft@x.example",
        "complainer@x.example",
        "keep@x.example",
        "blocked@x.example",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let f = crate::pipeline::Fixture::new();
    let got = send_campaign(&setup, &f, "spring", &list).await;
    let verp = |a: &str| verp_of(&got, a);
    let mid = |a: &str| message_id_of(&got, a);
    for (rcpt, body) in [
        (
            verp("hard@x.example"),
            dsn(
                &verp("hard@x.example"),
                "hard@x.example",
                "5.1.1",
                "550 5.1.1 <hard@x.example>: user unknown",
            ),
        ),
        // The body names keep@: only the token's recipient may be suppressed.
        (
            verp("forged@x.example"),
            dsn(
                &verp("forged@x.example"),
                "keep@x.example",
                "5.1.1",
                "550 5.1.1 user unknown",
            ),
        ),
        (
            verp("soft@x.example"),
            dsn(
                &verp("soft@x.example"),
                "soft@x.example",
                "4.2.2",
                "452 4.2.2 mailbox full",
            ),
        ),
        (
            verp("blocked@x.example"),
            dsn(
                &verp("blocked@x.example"),
                "blocked@x.example",
                "5.7.1",
                "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
            ),
        ),
        (
            "fbl@acme.example".to_string(),
            arf(&mid("complainer@x.example")),
        ),
    ] {
        let r = deliver(inbox, &rcpt, &body).await;
        assert!(r.starts_with("250"), "{rcpt}: {r}");
    }
    let rid = |a: &str| blast::token::rid_key(k.recipient_id(a));
    let reasons = || reasons(&suppress_rows(&setup).1);
    wait_until("three suppressions", || reasons().len() >= 3).await;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let l = reasons();
    assert_eq!(
        l.get(&rid("hard@x.example")).map(String::as_str),
        Some("bounce"),
        "{l:?}"
    );
    assert_eq!(
        l.get(&rid("forged@x.example")).map(String::as_str),
        Some("bounce"),
        "{l:?}"
    );
    assert_eq!(
        l.get(&rid("complainer@x.example")).map(String::as_str),
        Some("complaint"),
        "{l:?}"
    );
    assert_eq!(l.len(), 3, "soft, blocklisted and keep@ untouched: {l:?}");

    // The next campaign skips exactly them.
    let got2 = send_campaign(&setup, &f, "summer", &list).await;
    let mut to: Vec<String> = got2.iter().map(|r| r.rcpt_to[0].clone()).collect();
    to.sort();
    assert_eq!(
        to,
        ["blocked@x.example", "keep@x.example", "soft@x.example"]
    );
    term(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_takes_its_own_addresses_only_and_a_mailto_unsubscribe_suppresses() {
    let setup = inbox_setup(free_port());
    let (child, inbox) = spawn(&setup);
    let k = keys();
    let list: Vec<String> = ["mailto@x.example", "bounced@x.example", "keep@x.example"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let f = crate::pipeline::Fixture::new();
    let got = send_campaign(&setup, &f, "spring", &list).await;
    let by = |a: &str| got.iter().find(|r| r.rcpt_to[0] == a).unwrap().clone();
    // The mailto: of the List-Unsubscribe header and the VERP return path, as sent.
    let lu = crate::pipeline::header(&by("mailto@x.example").data, "List-Unsubscribe").unwrap();
    let mailto = lu
        .split("<mailto:")
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap()
        .to_string();
    let verp = by("bounced@x.example").mail_from;
    assert!(
        verp.starts_with("bounces+") && verp.ends_with("@bounces.acme.example"),
        "{verp}"
    );

    let (mut s, greeting) = Smtp::connect(inbox).await;
    assert!(
        greeting.starts_with("220 ") && greeting.contains("inbox"),
        "{greeting}"
    );
    let ehlo = s.cmd("EHLO mta.example").await;
    assert!(
        ehlo.starts_with("250") && !ehlo.contains("AUTH"),
        "no AUTH offered: {ehlo}"
    );
    assert!(s
        .cmd("AUTH PLAIN AGFwcABzM2NyZXQ=")
        .await
        .starts_with("503"));
    // The null sender, as bounces have; a mailto: unsubscribe (a client's own address).
    assert!(s.cmd("MAIL FROM:<>").await.starts_with("250"));
    let forged = format!(
        "bounces+{}@bounces.acme.example",
        "a".repeat(blast::token::TOKEN_LEN)
    );
    let wrong_purpose = format!(
        "unsub+{}@bounces.acme.example",
        token(&k, Purpose::Bounce, "keep@x.example", "spring")
    );
    for (rcpt, want) in [
        (mailto.as_str(), "250"),
        (verp.as_str(), "250"),
        ("postmaster@bounces.acme.example", "250"),
        ("abuse@bounces.acme.example", "250"),
        ("nobody@bounces.acme.example", "550"),
        (forged.as_str(), "550"),
        (wrong_purpose.as_str(), "550"),
        ("someone@gmail.example", "550"),
        ("postmaster@acme.example", "550"),
    ] {
        let r = s.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert!(r.starts_with(want), "{rcpt}: {r}");
    }
    assert!(s.cmd("DATA").await.starts_with("354"));
    let r = s
        .cmd("From: someone@x.example\r\nSubject: unsubscribe\r\n\r\nplease\r\n.")
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert!(s.cmd("QUIT").await.starts_with("221"));

    // The mailto: recipient is suppressed (by recipient id, source = the campaign); the VERP
    // bounce is kept (its class needs the parser), nobody else is touched.
    let rid = blast::token::rid_key(k.recipient_id("mailto@x.example"));
    let entry = |l: &std::collections::BTreeMap<String, String>| {
        l.iter()
            .find(|(k, _)| k.starts_with(&rid))
            .map(|(_, v)| v.clone())
    };
    wait_until("the mailto unsubscribe on the list", || {
        entry(&listed(&setup)).is_some()
    })
    .await;
    let l = listed(&setup);
    assert_eq!(entry(&l).as_deref(), Some("spring"), "{l:?}");
    assert_eq!(l.len(), 1, "{l:?}");

    // The next campaign skips the address.
    let got2 = send_campaign(&setup, &f, "summer", &list).await;
    let to: Vec<String> = got2.iter().map(|r| r.rcpt_to[0].clone()).collect();
    assert!(!to.contains(&"mailto@x.example".to_string()), "{to:?}");
    assert_eq!(to.len(), 2, "{to:?}");
    term(child);
}
