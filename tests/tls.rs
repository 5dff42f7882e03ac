//! The lane's STARTTLS and AUTH policy against a real TLS-capable sink on 127.0.0.1:0
//! (self-signed certificate made with rcgen): opportunistic TLS encrypts, `required` refuses a
//! relay without STARTTLS and really verifies the certificate, AUTH PLAIN succeeds, fails
//! loudly on a wrong password (never echoing it), and is allowed without TLS only to loopback.
//! Also the sink's own STARTTLS/AUTH protocol handling, spoken by hand.

use std::sync::Arc;
use std::time::Duration;

use blast::report::summary::Summary;
use blast::send::SendOptions;
use blast::sink::{self, AuthAttempt, SinkConfig, SinkHandle};
use blast::store::record::State;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::pipeline::{
    addrs, assert_exactly_once, by_rcpt, campaign_toml, csv_list, records, send_within, violations,
    Fixture,
};

/// Upper bound for one `send` here (each is a handful of messages on loopback).
const LIMIT: Duration = Duration::from_secs(60);
/// Upper bound for one read in the hand-spoken sessions.
const READ: Duration = Duration::from_secs(10);

/// A self-signed certificate for 127.0.0.1 / localhost, as a sink TLS config.
pub(crate) fn self_signed() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("rcgen makes a self-signed certificate");
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    blast::transport::tls::server_config(vec![cert], key).expect("sink TLS config")
}

async fn start(config: SinkConfig) -> SinkHandle {
    sink::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("start sink")
}

/// Sets a per-test environment variable for `password_env` and returns its name.
fn password_env(test: &str, password: &str) -> String {
    let var = format!("BLAST_TLS_TEST_PW_{}_{}", test, std::process::id());
    std::env::set_var(&var, password);
    var
}

/// Runs the campaign; `Ok(summary)` or the error text.
async fn run(f: &Fixture, id: &str, relay: std::net::SocketAddr, lane: &str) -> SendResult {
    let s = f.campaign(id, &campaign_toml(id, relay, &["list.csv"], lane));
    let r = send_within(&s, SendOptions::default(), LIMIT).await;
    SendResult {
        settings: s,
        result: r.map_err(|e| e.to_string()),
    }
}

struct SendResult {
    settings: blast::config::Settings,
    result: Result<Summary, String>,
}

impl SendResult {
    /// The campaign stopped early: the fatal message (or the error), with a check that
    /// nothing was marked sent.
    fn expect_fatal(&self) -> String {
        let text = match &self.result {
            Ok(sum) => {
                assert_ne!(sum.exit_code(), 0, "{sum:?}");
                assert_eq!(sum.counts.get(State::Sent), 0, "{sum:?}");
                assert_eq!(sum.sent_this_run, 0, "{sum:?}");
                sum.fatal
                    .clone()
                    .unwrap_or_else(|| panic!("expected a fatal stop, got {sum:?}"))
            }
            Err(e) => e.clone(),
        };
        eprintln!("{}: stopped: {text}", self.settings.id);
        let recs = records(&self.settings);
        assert!(
            recs.values().all(|r| r.state != State::Sent),
            "marked sent although the lane could not use the relay: {recs:?}"
        );
        text
    }

    fn expect_ok(&self, n: usize) -> &Summary {
        let sum = match &self.result {
            Ok(s) => s,
            Err(e) => panic!("send failed: {e}"),
        };
        assert!(sum.fatal.is_none(), "{sum:?}");
        assert_eq!(sum.exit_code(), 0, "{sum:?}");
        assert_eq!(sum.counts.get(State::Sent), n as u64, "{sum:?}");
        sum
    }

    /// Everything the run said, for checking that a secret is not in it.
    fn all_text(&self) -> String {
        let mut t = match &self.result {
            Ok(s) => format!("{s:?} {:?}", s.fatal),
            Err(e) => e.clone(),
        };
        for r in records(&self.settings).values() {
            t.push_str(&r.last_reply);
            t.push('\n');
        }
        t
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_starttls_encrypts_every_message() {
    let sink = start(SinkConfig {
        tls: Some(self_signed()),
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let list = addrs("u", "tls.example", 12);
    f.write("list.csv", csv_list(&list));
    let r = run(&f, "opp", sink.addr, "starttls = \"opportunistic\"\n").await;
    r.expect_ok(list.len());
    assert_exactly_once(&sink, &list);
    let got = sink.received();
    assert!(
        got.iter().all(|m| m.tls),
        "cleartext messages: {:?}",
        got.iter()
            .filter(|m| !m.tls)
            .map(|m| &m.rcpt_to)
            .collect::<Vec<_>>()
    );
    assert!(got.iter().all(|m| m.authenticated.is_none()));
    assert!(sink.tls_handshakes() >= 1);
    assert_eq!(sink.tls_failures(), 0);
    assert_eq!(violations(&sink), Vec::<String>::new());
}

/// Without `starttls`, a loopback relay defaults to cleartext; the sink records that too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_off_sends_in_the_clear_even_when_offered() {
    let sink = start(SinkConfig {
        tls: Some(self_signed()),
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let list = addrs("u", "plain.example", 3);
    f.write("list.csv", csv_list(&list));
    let r = run(&f, "off", sink.addr, "starttls = \"off\"\n").await;
    r.expect_ok(list.len());
    assert_exactly_once(&sink, &list);
    assert!(sink.received().iter().all(|m| !m.tls));
    assert_eq!(sink.tls_handshakes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_starttls_stops_when_the_relay_does_not_offer_it() {
    let plain = start(SinkConfig::default()).await;
    let f = Fixture::new();
    let list = addrs("u", "req.example", 5);
    f.write("list.csv", csv_list(&list));
    let r = run(&f, "req", plain.addr, "starttls = \"required\"\n").await;
    let fatal = r.expect_fatal();
    assert!(fatal.contains("STARTTLS"), "{fatal}");
    assert_eq!(
        plain.count(),
        0,
        "delivered in the clear: {:?}",
        plain.received()
    );
    plain.shutdown().await;

    // The same campaign against a relay that offers STARTTLS: the recipients were left
    // unsent, so the rerun delivers them (opportunistic, since the cert is self-signed).
    let tls = start(SinkConfig {
        tls: Some(self_signed()),
        ..Default::default()
    })
    .await;
    let r2 = run(&f, "req", tls.addr, "starttls = \"opportunistic\"\n").await;
    let sum = match &r2.result {
        Ok(s) => s,
        Err(e) => panic!("rerun failed: {e}"),
    };
    assert!(sum.fatal.is_none(), "{sum:?}");
    let got = by_rcpt(&tls);
    assert!(got.values().all(|v| v.len() == 1 && v[0].tls), "{got:?}");
    // Nobody was lost as sent-but-not-delivered.
    for (a, rec) in records(&r2.settings) {
        if rec.state == State::Sent {
            assert!(
                got.contains_key(&a.to_ascii_lowercase()),
                "{a} sent but not received"
            );
        }
    }
    assert_eq!(
        sum.counts.get(State::Sent),
        list.len() as u64,
        "rerun after the STARTTLS failure: {:?}",
        sum.counts
    );
}

/// `required` verifies the certificate against the Mozilla roots: a self-signed one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_starttls_verifies_the_certificate() {
    let sink = start(SinkConfig {
        tls: Some(self_signed()),
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let list = addrs("u", "verify.example", 5);
    f.write("list.csv", csv_list(&list));
    let r = run(&f, "verify", sink.addr, "starttls = \"required\"\n").await;
    let fatal = r.expect_fatal();
    assert!(
        fatal.contains("TLS") && fatal.to_ascii_lowercase().contains("certificate"),
        "{fatal}"
    );
    assert_eq!(sink.count(), 0, "delivered: {:?}", sink.received());
    assert_eq!(sink.tls_handshakes(), 0);
    assert!(sink.tls_failures() >= 1, "no handshake attempted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_plain_over_opportunistic_tls() {
    let (user, pw) = ("blaster", "s3cret-Opp-7f1c");
    let sink = start(SinkConfig {
        tls: Some(self_signed()),
        auth: Some((user.into(), pw.into())),
        ..Default::default()
    })
    .await;
    let var = password_env("auth_ok", pw);
    let f = Fixture::new();
    let list = addrs("u", "auth.example", 8);
    f.write("list.csv", csv_list(&list));
    let lane =
        format!("starttls = \"opportunistic\"\nusername = \"{user}\"\npassword_env = \"{var}\"\n");
    let r = run(&f, "auth", sink.addr, &lane).await;
    r.expect_ok(list.len());
    assert_exactly_once(&sink, &list);
    for m in sink.received() {
        assert!(m.tls, "{:?} not over TLS", m.rcpt_to);
        assert_eq!(m.authenticated.as_deref(), Some(user), "{:?}", m.rcpt_to);
    }
    let attempts = sink.auth_attempts();
    assert!(!attempts.is_empty());
    assert!(
        attempts.iter().all(|a| *a
            == AuthAttempt {
                user: user.into(),
                tls: true,
                ok: true
            }),
        "{attempts:?}"
    );
    assert!(!r.all_text().contains(pw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_stops_the_run_without_revealing_it() {
    let (user, good, bad) = ("blaster", "right-Pw-91a2", "wrong-Pw-Zq8x3");
    let sink = start(SinkConfig {
        tls: Some(self_signed()),
        auth: Some((user.into(), good.into())),
        ..Default::default()
    })
    .await;
    let var = password_env("auth_bad", bad);
    let f = Fixture::new();
    let list = addrs("u", "badpw.example", 5);
    f.write("list.csv", csv_list(&list));
    let lane =
        format!("starttls = \"opportunistic\"\nusername = \"{user}\"\npassword_env = \"{var}\"\n");
    let r = run(&f, "badpw", sink.addr, &lane).await;
    let fatal = r.expect_fatal();
    assert!(fatal.contains("AUTH"), "{fatal}");
    assert!(fatal.contains("535"), "{fatal}");
    assert!(!fatal.contains(bad), "password in the error: {fatal}");
    let all = r.all_text();
    assert!(
        !all.contains(bad),
        "password in the summary or records: {all}"
    );
    assert_eq!(sink.count(), 0, "delivered: {:?}", sink.received());
    let attempts = sink.auth_attempts();
    assert!(!attempts.is_empty());
    assert!(
        attempts.iter().all(|a| !a.ok && a.tls && a.user == user),
        "{attempts:?}"
    );
}

/// AUTH without TLS is allowed to a loopback relay (and only there: config.rs refuses it
/// for any other host, see `config` tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_tls_to_loopback_works() {
    let (user, pw) = ("local", "loopback-Pw-c0ffee");
    let sink = start(SinkConfig {
        auth: Some((user.into(), pw.into())),
        ..Default::default()
    })
    .await;
    let var = password_env("auth_lo", pw);
    let f = Fixture::new();
    let list = addrs("u", "lo.example", 4);
    f.write("list.csv", csv_list(&list));
    let lane = format!("starttls = \"off\"\nusername = \"{user}\"\npassword_env = \"{var}\"\n");
    let r = run(&f, "lo", sink.addr, &lane).await;
    r.expect_ok(list.len());
    assert_exactly_once(&sink, &list);
    for m in sink.received() {
        assert!(!m.tls);
        assert_eq!(m.authenticated.as_deref(), Some(user));
    }
    assert!(sink.auth_attempts().iter().all(|a| a.ok && !a.tls));
    assert!(!r.all_text().contains(pw));
}

/// `smtps://` verifies the certificate too: a self-signed one stops the run before any
/// SMTP is spoken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_verifies_the_certificate() {
    let sink = start(SinkConfig {
        tls: Some(self_signed()),
        implicit_tls: true,
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let list = addrs("u", "smtps.example", 3);
    f.write("list.csv", csv_list(&list));
    let toml =
        campaign_toml("smtps", sink.addr, &["list.csv"], "").replace("\"smtp://", "\"smtps://");
    assert!(toml.contains("smtps://"), "{toml}");
    let s = f.campaign("smtps", &toml);
    let r = SendResult {
        result: send_within(&s, SendOptions::default(), LIMIT)
            .await
            .map_err(|e| e.to_string()),
        settings: s,
    };
    let fatal = r.expect_fatal();
    assert!(
        fatal.contains("TLS") && fatal.to_ascii_lowercase().contains("certificate"),
        "{fatal}"
    );
    assert_eq!(sink.count(), 0);
    assert_eq!(sink.tls_handshakes(), 0);
    assert!(sink.tls_failures() >= 1, "no handshake attempted");
}

/// The sink's smtps mode, by hand: TLS first, then the greeting; no STARTTLS offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_implicit_tls_by_hand() {
    let sink = start(SinkConfig {
        tls: Some(self_signed()),
        implicit_tls: true,
        ..Default::default()
    })
    .await;
    let tcp = TcpStream::connect(sink.addr).await.unwrap();
    let mut c = Client {
        rd: BufReader::new(upgrade(tcp).await),
    };
    assert!(c.reply().await.starts_with("220 "));
    let ehlo = c.cmd("EHLO me").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(c.cmd("STARTTLS").await.starts_with("503 "));
    assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("250 "));
    assert!(c.cmd("RCPT TO:<r@c.example>").await.starts_with("250 "));
    assert!(c.cmd("DATA").await.starts_with("354 "));
    assert!(c.cmd("Subject: x\r\n\r\nhi\r\n.").await.starts_with("250 "));
    assert!(sink.received()[0].tls);
}

/// AUTH to a non-loopback relay without TLS is refused before anything is sent.
#[test]
fn auth_without_tls_to_a_remote_relay_is_a_config_error() {
    let f = Fixture::new();
    f.write("list.csv", csv_list(&addrs("u", "x.example", 1)));
    let var = password_env("auth_remote", "remote-Pw-4242");
    let lane =
        format!("starttls = \"opportunistic\"\nusername = \"u\"\npassword_env = \"{var}\"\n");
    let toml = campaign_toml(
        "remote",
        "192.0.2.1:25".parse().unwrap(),
        &["list.csv"],
        &lane,
    );
    let p = f.write("remote.toml", &toml);
    let err = blast::config::load(&p).expect_err("AUTH over opportunistic TLS to a remote relay");
    let msg = err.to_string();
    assert!(msg.contains("starttls"), "{msg}");
    assert!(!msg.contains("remote-Pw-4242"), "{msg}");
}

// ---- the sink's STARTTLS / AUTH, spoken by hand ----

/// A hand-spoken SMTP client (also used by the submission tests).
pub(crate) struct Client<S> {
    pub(crate) rd: BufReader<S>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Client<S> {
    pub(crate) async fn send(&mut self, s: &str) {
        let w = self.rd.get_mut();
        w.write_all(s.as_bytes()).await.expect("write");
        w.flush().await.expect("flush");
    }

    /// One reply (all lines), joined with '\n'.
    pub(crate) async fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(READ, self.rd.read_line(&mut line))
                .await
                .expect("reply within the timeout")
                .expect("read");
            assert!(n > 0, "connection closed; so far: {out:?}");
            out.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
            out.push('\n');
        }
    }

    pub(crate) async fn cmd(&mut self, s: &str) -> String {
        self.send(&format!("{s}\r\n")).await;
        self.reply().await
    }
}

pub(crate) fn plain_token(user: &str, pw: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

/// What the real client does after STARTTLS, with an accept-anything verifier.
pub(crate) async fn upgrade(tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let p = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(p)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(
        READ,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("handshake within the timeout")
    .expect("handshake")
}

/// STARTTLS resets the session, drops commands pipelined in the clear after it, and AUTH
/// is checked (535 on mismatch, 530 for MAIL before AUTH, 235 then MAIL OK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_starttls_and_auth_by_hand() {
    let sink = start(SinkConfig {
        tls: Some(self_signed()),
        auth: Some(("u".into(), "p".into())),
        ..Default::default()
    })
    .await;
    let tcp = TcpStream::connect(sink.addr).await.unwrap();
    let mut c = Client {
        rd: BufReader::new(tcp),
    };
    assert!(c.reply().await.starts_with("220 "));
    let ehlo = c.cmd("EHLO me").await;
    assert!(
        ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN"),
        "{ehlo}"
    );
    assert!(c
        .cmd("MAIL FROM:<a@b.example>")
        .await
        .starts_with("530 5.7.0"));
    // Injection attempt: a command pipelined in the clear right after STARTTLS.
    c.send("STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n").await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.rd.buffer().is_empty(), "the sink sent more than the 220");
    let tcp = c.rd.into_inner();
    let mut c = Client {
        rd: BufReader::new(upgrade(tcp).await),
    };
    // The session starts over: EHLO needed, and the injected MAIL was not acted on.
    assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("503 "));
    let ehlo = c.cmd("EHLO me").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN"), "{ehlo}");
    assert!(c.cmd("STARTTLS").await.starts_with("503 "));
    let bad = c
        .cmd(&format!("AUTH PLAIN {}", plain_token("u", "nope")))
        .await;
    assert!(bad.starts_with("535 5.7.8"), "{bad}");
    assert!(!bad.contains("nope"));
    assert!(c.cmd("AUTH LOGIN").await.starts_with("504 "));
    // PLAIN without an initial response: 334, then the token.
    assert!(c.cmd("AUTH PLAIN").await.starts_with("334"));
    assert!(c.cmd(&plain_token("u", "p")).await.starts_with("235 "));
    assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("250 "));
    assert!(c.cmd("RCPT TO:<r@c.example>").await.starts_with("250 "));
    assert!(c.cmd("DATA").await.starts_with("354 "));
    assert!(c.cmd("Subject: x\r\n\r\nhi\r\n.").await.starts_with("250 "));
    assert!(c.cmd("QUIT").await.starts_with("221 "));

    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls);
    assert_eq!(got[0].authenticated.as_deref(), Some("u"));
    assert_eq!(got[0].mail_from, "a@b.example");
    assert!(
        got[0]
            .violations
            .iter()
            .any(|v| v.contains("after STARTTLS")),
        "{:?}",
        got[0].violations
    );
    let attempts = sink.auth_attempts();
    assert_eq!(
        attempts,
        vec![
            AuthAttempt {
                user: "u".into(),
                tls: true,
                ok: false
            },
            AuthAttempt {
                user: "u".into(),
                tls: true,
                ok: true
            },
        ]
    );
    assert_eq!(sink.tls_handshakes(), 1);
}

/// Without `tls` / `auth` configured the sink behaves as before: neither is offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_without_tls_or_auth_offers_neither() {
    let sink = start(SinkConfig::default()).await;
    let tcp = TcpStream::connect(sink.addr).await.unwrap();
    let mut c = Client {
        rd: BufReader::new(tcp),
    };
    c.reply().await;
    let ehlo = c.cmd("EHLO me").await;
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(c.cmd("STARTTLS").await.starts_with("502 "));
    assert!(c.cmd("AUTH PLAIN AHUAcA==").await.starts_with("502 "));
    assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("250 "));
}
