//! The bounce inbox of a real `blast serve` process (`[serve] bounce_inbox`): raw SMTP on
//! 127.0.0.1. It takes mail for valid VERP and `unsub+` addresses, postmaster@ and abuse@,
//! from the null sender, without AUTH; refuses forged tokens, unknown local parts and any
//! other domain (never a relay); a mailto: unsubscribe suppresses the recipient, and the
//! next campaign skips the address.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use blast::token::Purpose;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::serve::{free_port, term, wait_until, Setup, WAIT};
use crate::unsubscribe::{keys, listed, send_process, setup, signed_campaign, token};

fn inbox_setup(relay: SocketAddr) -> Setup {
    let s = setup(relay);
    let text = std::fs::read_to_string(s.config())
        .unwrap()
        .replace("[serve]\n", "[serve]\nbounce_inbox = \"127.0.0.1:0\"\n");
    std::fs::write(s.config(), text).unwrap();
    s
}

/// Starts serve; returns the inbox's address from its first line.
fn spawn(setup: &Setup) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["serve", "--config"])
        .arg(setup.config())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("bounce inbox on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no inbox address in {line:?}"));
    (child, addr)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_takes_its_own_addresses_only_and_a_mailto_unsubscribe_suppresses() {
    let setup = inbox_setup(free_port());
    let (child, inbox) = spawn(&setup);
    let k = keys();
    let list: Vec<String> = ["mailto@x.example", "bounced@x.example", "keep@x.example"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sink = crate::pipeline::start_sink(Vec::new()).await;
    let f = crate::pipeline::Fixture::new();
    let c = signed_campaign(&f, "spring", sink.addr, &list, "");
    let out = tokio::task::block_in_place(|| send_process(&setup, &c).output().unwrap());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let got = sink.received();
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
    let sink2 = crate::pipeline::start_sink(Vec::new()).await;
    let c2 = signed_campaign(&f, "summer", sink2.addr, &list, "");
    let out = tokio::task::block_in_place(|| send_process(&setup, &c2).output().unwrap());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let to: Vec<String> = sink2
        .received()
        .iter()
        .map(|r| r.rcpt_to[0].clone())
        .collect();
    assert!(!to.contains(&"mailto@x.example".to_string()), "{to:?}");
    assert_eq!(to.len(), 2, "{to:?}");
    term(child);
}
