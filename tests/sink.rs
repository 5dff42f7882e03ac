//! The SMTP sink, driven over real TCP by a tiny raw client. Every wait is bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blast::sink::{self, Action, Rule, SinkConfig, SinkHandle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn start(config: SinkConfig) -> SinkHandle {
    sink::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("start sink")
}

fn with_rules(rules: &[&str]) -> SinkConfig {
    SinkConfig {
        rules: rules.iter().map(|r| r.parse().unwrap()).collect(),
        ..Default::default()
    }
}

/// A raw SMTP client: writes exactly what it is told, reads replies.
struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Client {
    /// Connects and reads the 220 greeting.
    async fn connect(addr: SocketAddr) -> Client {
        let s = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        s.set_nodelay(true).unwrap();
        let (rd, wr) = s.into_split();
        let mut c = Client {
            rd: BufReader::new(rd),
            wr,
        };
        assert_eq!(c.code().await, 220);
        c
    }

    async fn send(&mut self, raw: &str) {
        self.send_bytes(raw.as_bytes()).await;
    }

    async fn send_bytes(&mut self, raw: &[u8]) {
        timeout(WAIT, self.wr.write_all(raw))
            .await
            .expect("write timeout")
            .expect("write");
    }

    /// One (possibly multi-line) reply: code and the text of all lines, or `None` if
    /// the server closed the connection (EOF or reset).
    async fn reply(&mut self) -> Option<(u16, String)> {
        let mut text = String::new();
        for _ in 0..100 {
            let mut line = String::new();
            match timeout(WAIT, self.rd.read_line(&mut line))
                .await
                .expect("reply timeout")
            {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            assert!(line.len() >= 4, "short reply line {line:?}");
            text.push_str(&line[4..]);
            if line.as_bytes()[3] == b' ' {
                return Some((line[..3].parse().unwrap(), text));
            }
        }
        panic!("endless multi-line reply");
    }

    async fn code(&mut self) -> u16 {
        self.reply().await.expect("connection closed").0
    }

    async fn cmd(&mut self, line: &str) -> u16 {
        self.send(&format!("{line}\r\n")).await;
        self.code().await
    }

    /// EHLO, MAIL, RCPT…, DATA, body, dot in lock-step; returns the reply to the dot.
    async fn transaction(&mut self, from: &str, to: &[&str], body: &str) -> Option<u16> {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).await, 250);
        for t in to {
            self.cmd(&format!("RCPT TO:<{t}>")).await;
        }
        assert_eq!(self.cmd("DATA").await, 354);
        self.send(body).await;
        self.send(".\r\n").await;
        self.reply().await.map(|r| r.0)
    }

    /// Reads replies until the server closes; returns their codes.
    async fn codes_until_close(&mut self) -> Vec<u16> {
        let mut codes = Vec::new();
        while let Some((c, _)) = self.reply().await {
            codes.push(c);
            assert!(codes.len() < 1000, "server never closed");
        }
        codes
    }
}

#[tokio::test]
async fn normal_transaction_is_recorded_dot_unstuffed() {
    let sink = start(SinkConfig::default()).await;
    let mut c = Client::connect(sink.addr).await;
    c.send("EHLO client.test\r\n").await;
    let (code, ehlo) = c.reply().await.unwrap();
    assert_eq!(code, 250);
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 10485760",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing from {ehlo:?}");
    }
    assert_eq!(
        c.cmd("MAIL FROM:<from@blast.test> BODY=8BITMIME SMTPUTF8 SIZE=100")
            .await,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<To@Example.com>").await, 250);
    assert_eq!(c.cmd("DATA").await, 354);
    c.send("Subject: hi\r\n\r\n..leading dot\r\nplain\r\n.\r\n")
        .await;
    let (code, text) = c.reply().await.unwrap();
    assert_eq!(code, 250);
    assert!(text.starts_with("2.0.0"), "{text}");
    assert_eq!(c.cmd("QUIT").await, 221);
    assert!(c.reply().await.is_none(), "closed after QUIT");

    let got = sink.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "from@blast.test");
    assert_eq!(m.rcpt_to, vec!["To@Example.com".to_string()]);
    assert_eq!(m.data, b"Subject: hi\r\n\r\n.leading dot\r\nplain\r\n");
    assert!(m.violations.is_empty(), "{:?}", m.violations);
    assert!(m.smtputf8 && m.body_8bitmime);
    assert_eq!(m.reply, Some(250));
    assert_eq!(sink.count(), 1);
    assert_eq!(sink.connections(), 1);
    assert_eq!(sink.attempts("to@example.com"), 1);
    sink.shutdown().await;
}

#[tokio::test]
async fn ehlo_honours_disabled_extensions() {
    let sink = start(SinkConfig {
        pipelining: false,
        smtputf8: false,
        max_size: 1000,
        ..Default::default()
    })
    .await;
    let mut c = Client::connect(sink.addr).await;
    c.send("EHLO client.test\r\n").await;
    let (_, ehlo) = c.reply().await.unwrap();
    assert!(
        !ehlo.contains("PIPELINING") && !ehlo.contains("SMTPUTF8"),
        "{ehlo}"
    );
    assert!(ehlo.contains("SIZE 1000") && ehlo.contains("8BITMIME"));
    assert_eq!(c.cmd("MAIL FROM:<a@x> SMTPUTF8").await, 555);
    assert_eq!(c.cmd("MAIL FROM:<a@x> SIZE=1001").await, 552);
    assert_eq!(c.cmd("MAIL FROM:<ü@x>").await, 553);
    sink.shutdown().await;
}

#[tokio::test]
async fn pipelined_transactions_in_one_write_are_answered_in_order() {
    let sink = start(SinkConfig::default()).await;
    let mut c = Client::connect(sink.addr).await;
    c.send(concat!(
        "EHLO client.test\r\n",
        "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n",
        "Subject: one\r\n\r\nbody one\r\n.\r\n",
        "MAIL FROM:<a@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n",
        "Subject: two\r\n\r\nbody two\r\n.\r\n",
        "QUIT\r\n",
    ))
    .await;
    assert_eq!(
        c.codes_until_close().await,
        vec![250, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    );
    let got = sink.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].rcpt_to, vec!["b@y", "c@y"]);
    assert_eq!(got[0].data, b"Subject: one\r\n\r\nbody one\r\n");
    assert_eq!(got[1].data, b"Subject: two\r\n\r\nbody two\r\n");
    sink.shutdown().await;
}

#[tokio::test]
async fn pipelined_body_after_failed_data_is_read_as_commands() {
    let sink = start(with_rules(&["rcpt:*@bad.example=550 5.1.1 no such user"])).await;
    let mut c = Client::connect(sink.addr).await;
    c.send(concat!(
        "EHLO client.test\r\n",
        "MAIL FROM:<a@x>\r\nRCPT TO:<u@bad.example>\r\nDATA\r\n",
        "Subject: lost\r\n.\r\n",
        "RSET\r\nQUIT\r\n",
    ))
    .await;
    assert_eq!(
        c.codes_until_close().await,
        vec![250, 250, 550, 554, 500, 500, 250, 221]
    );
    assert_eq!(sink.count(), 0);
    sink.shutdown().await;
}

#[tokio::test]
async fn commands_out_of_order_and_malformed() {
    let sink = start(SinkConfig {
        max_size: 100,
        ..Default::default()
    })
    .await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 503, "MAIL before EHLO");
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.cmd("RCPT TO:<b@y>").await, 503, "RCPT before MAIL");
    assert_eq!(c.cmd("DATA").await, 503, "DATA before MAIL");
    assert_eq!(c.cmd("FROB").await, 500);
    assert_eq!(c.cmd(&format!("NOOP {}", "x".repeat(2000))).await, 500);
    assert_eq!(c.cmd("MAIL FROM:a@x").await, 501, "no angle brackets");
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 503, "nested MAIL");
    assert_eq!(c.cmd("RCPT TO:<>").await, 501);
    assert_eq!(c.cmd("DATA").await, 554, "no valid recipients");
    assert_eq!(c.cmd("NOOP").await, 250);
    // Over max_size: the body is read to the end, then refused; also when one line
    // is longer than the sink buffers, split across TCP reads.
    for len in [150, 100_000] {
        assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
        assert_eq!(c.cmd("RCPT TO:<b@y>").await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.send(&format!("{}\r\n.\r\n", "y".repeat(len))).await;
        assert_eq!(c.code().await, 552, "{len}-octet line");
    }
    assert_eq!(c.cmd("RSET").await, 250);
    assert_eq!(c.cmd("QUIT").await, 221);
    assert_eq!(sink.count(), 0);
    sink.shutdown().await;
}

#[tokio::test]
async fn rcpt_reply_rejects_only_matching_recipients() {
    let sink = start(with_rules(&["rcpt:*@bad.example=550 5.1.1 no such user"])).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    c.send("RCPT TO:<U@BAD.example>\r\n").await;
    let (code, text) = c.reply().await.unwrap();
    assert_eq!((code, text.as_str()), (550, "5.1.1 no such user\r\n"));
    assert_eq!(c.cmd("RCPT TO:<ok@good.example>").await, 250);
    assert_eq!(c.cmd("DATA").await, 354);
    c.send("x\r\n.\r\n").await;
    assert_eq!(c.code().await, 250);
    let got = sink.received();
    assert_eq!(got[0].rcpt_to, vec!["ok@good.example"]);
    assert_eq!(sink.attempts("u@bad.example"), 1);
    sink.shutdown().await;
}

#[tokio::test]
async fn data_reply_with_times_1_lets_the_second_attempt_through() {
    let sink = start(with_rules(&[
        "data:*@x.example=451 4.3.0 try later;times=1",
    ]))
    .await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(
        c.transaction("a@s", &["r@x.example"], "m\r\n").await,
        Some(451)
    );
    assert_eq!(sink.count(), 0, "a rejected message is not recorded");
    assert_eq!(
        c.transaction("a@s", &["r@x.example"], "m\r\n").await,
        Some(250)
    );
    assert_eq!(sink.count(), 1);
    assert_eq!(sink.attempts("r@x.example"), 2);
    sink.shutdown().await;
}

#[tokio::test]
async fn rcpt_greylisting_with_times_1() {
    let sink = start(with_rules(&["rcpt:*=450 4.2.0 greylisted;times=1"])).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<g@y>").await, 450);
    assert_eq!(c.cmd("RCPT TO:<g@y>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<h@y>").await, 450, "budget is per recipient");
    sink.shutdown().await;
}

#[tokio::test]
async fn drop_mid_data_closes_without_reply_then_times_1_recovers() {
    let sink = start(with_rules(&["drop-mid-data:*@y.example;times=1"])).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<r@y.example>").await, 250);
    assert_eq!(c.cmd("DATA").await, 354);
    c.send("Subject: first line\r\n").await;
    assert!(c.reply().await.is_none(), "expected a silent close");
    assert_eq!(sink.count(), 0);

    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(
        c.transaction("a@x", &["r@y.example"], "m\r\n").await,
        Some(250)
    );
    assert_eq!(sink.count(), 1);
    assert_eq!(sink.connections(), 2);
    sink.shutdown().await;
}

#[tokio::test]
async fn drop_after_data_records_but_never_replies() {
    let sink = start(with_rules(&["drop-after-data:*"])).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.transaction("a@x", &["r@y"], "body\r\n").await, None);
    let got = sink.received();
    assert_eq!(got.len(), 1, "the ambiguous case: delivered, reply lost");
    assert_eq!(got[0].reply, None);
    assert_eq!(got[0].data, b"body\r\n");
    sink.shutdown().await;
}

#[tokio::test]
async fn delay_holds_the_final_reply() {
    let sink = start(with_rules(&["delay:*=200ms"])).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<r@y>").await, 250);
    assert_eq!(c.cmd("DATA").await, 354);
    let t0 = Instant::now();
    assert_eq!(c.cmd("body\r\n.").await, 250);
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(sink.count(), 1);
    sink.shutdown().await;
}

#[tokio::test]
async fn reply_421_at_rcpt_closes_the_connection() {
    let sink = start(with_rules(&["421:*@slow.example"])).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<fast@fast.example>").await, 250);
    c.send("RCPT TO:<r@slow.example>\r\n").await;
    let (code, text) = c.reply().await.unwrap();
    assert_eq!(code, 421);
    assert!(text.starts_with("4.7.0"), "{text}");
    assert!(c.reply().await.is_none(), "closed after 421");
    assert_eq!(sink.count(), 0);
    sink.shutdown().await;
}

#[tokio::test]
async fn fraction_is_deterministic_per_recipient_and_attempt() {
    let rule: Rule = "rcpt:*=450 4.7.1 sometimes;fraction=0.5".parse().unwrap();
    let sink = start(SinkConfig {
        rules: vec![rule.clone()],
        ..Default::default()
    })
    .await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    let mut hits = 0;
    for i in 0..40 {
        let rcpt = format!("user{i}@y");
        for attempt in 1..=2 {
            let want = if rule.fraction_hit(&rcpt, attempt) {
                450
            } else {
                250
            };
            hits += usize::from(want == 450);
            assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).await, want);
        }
    }
    assert!((10..70).contains(&hits), "{hits} of 80");
    sink.shutdown().await;
}

#[tokio::test]
async fn wire_violations_are_recorded() {
    let sink = start(SinkConfig::default()).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<r@y>").await, 250);
    assert_eq!(c.cmd("DATA").await, 354);
    let mut body = Vec::new();
    body.extend_from_slice(b"Subject: v\r\n"); // 1
    body.extend_from_slice(b"bare lf\n"); // 2
    body.extend_from_slice(b".\r\n"); // 3: after a bare LF, not the end
    body.extend_from_slice(b"bare\rcr\r\n"); // 4
    body.extend_from_slice(&[b'x'; 1200]); // 5
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(b"nul\0\r\n"); // 6
    body.extend_from_slice("caf\u{e9}\r\n".as_bytes()); // 7: 8bit, no BODY=8BITMIME
    body.extend_from_slice(b".\r\n");
    c.send_bytes(&body).await;
    assert_eq!(c.code().await, 250, "the sink notices, it does not refuse");
    let got = sink.received();
    let v = &got[0].violations;
    for want in [
        "bare LF at line 2",
        "line 3: \".\" after a bare LF is not end of data",
        "bare CR at line 4",
        "line 5 longer than 998 octets",
        "NUL byte at line 6",
        "8bit data without BODY=8BITMIME",
    ] {
        assert!(v.iter().any(|x| x == want), "{want:?} not in {v:?}");
    }
    assert_eq!(v.len(), 6, "{v:?}");
    assert!(got[0]
        .data
        .starts_with(b"Subject: v\r\nbare lf\n.\r\nbare\rcr\r\n"));
    sink.shutdown().await;
}

#[tokio::test]
async fn crlf_split_across_writes_and_bare_lf_commands() {
    let sink = start(SinkConfig::default()).await;
    let mut c = Client::connect(sink.addr).await;
    c.send("EHLO client.test\n").await;
    assert_eq!(c.code().await, 250, "tolerated");
    assert_eq!(c.cmd("MAIL FROM:<a@x>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<r@y>").await, 250);
    assert_eq!(c.cmd("DATA").await, 354);
    // CR and LF in separate segments: still one clean CRLF, and the dot still ends it.
    for part in ["line one\r", "\nline two\r", "\n.", "\r", "\n"] {
        c.send(part).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.code().await, 250);
    let got = sink.received();
    assert_eq!(got[0].data, b"line one\r\nline two\r\n");
    assert_eq!(got[0].violations, vec!["bare LF in command"]);
    sink.shutdown().await;
}

#[tokio::test]
async fn rule_from_str_parses_the_cli_forms() {
    let p = |s: &str| s.parse::<Rule>().unwrap_or_else(|e| panic!("{e}"));
    let r = p("rcpt:*@bad.example=550 5.1.1 no such user");
    assert_eq!(r.pattern, "*@bad.example");
    assert_eq!(
        r.action,
        Action::RcptReply(550, "5.1.1 no such user".into())
    );
    assert_eq!((r.times, r.fraction), (None, 1.0));

    let r = p("data:*@x.example=451 4.3.0 try later;times=1");
    assert_eq!(r.action, Action::DataReply(451, "4.3.0 try later".into()));
    assert_eq!(r.times, Some(1));

    let r = p("drop-mid-data:*@y.example;times=1");
    assert_eq!((r.action, r.times), (Action::DropMidData, Some(1)));
    assert_eq!(p("drop-after-data:*").action, Action::DropAfterData);
    assert_eq!(
        p("delay:*=200ms").action,
        Action::Delay(Duration::from_millis(200))
    );
    assert_eq!(
        p("delay:*=1.5s").action,
        Action::Delay(Duration::from_millis(1500))
    );
    let r = p("421:*@slow.example;fraction=0.5");
    assert_eq!((r.action, r.fraction), (Action::Reply421AtRcpt, 0.5));

    // '=' in an address (VERP) and ';' in reply text survive.
    let r = p("rcpt:b+a=c@x.example=550 5.1.1 gone; really;times=2");
    assert_eq!(r.pattern, "b+a=c@x.example");
    assert_eq!(
        r.action,
        Action::RcptReply(550, "5.1.1 gone; really".into())
    );
    assert_eq!(r.times, Some(2));

    for s in [
        "rcpt:*@bad.example=550 5.1.1 no such user",
        "data:*=451 4.3.0 try later;times=1",
        "drop-mid-data:*@y.example;times=1",
        "delay:*=200ms",
        "421:*@slow.example;fraction=0.5",
    ] {
        assert_eq!(p(s).to_string(), s, "Display round-trips");
    }

    for bad in [
        "",
        "rcpt:*",
        "rcpt:*=55 short",
        "data:*=650 6.0.0 nope",
        "delay:*=soon",
        "frob:*",
        "drop-mid-data:",
        "421:*;fraction=2",
        "421:*;times=-1",
    ] {
        assert!(bad.parse::<Rule>().is_err(), "{bad:?} should not parse");
    }
    assert!(Rule::new("*@X.example", Action::DropMidData).matches("a@x.EXAMPLE"));
}

#[tokio::test]
async fn maildir_gets_one_eml_file_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = SinkConfig {
        maildir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let sink = start(config.clone()).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.transaction("a@x", &["r@y"], "one\r\n").await, Some(250));
    assert_eq!(c.transaction("a@x", &["r@y"], "two\r\n").await, Some(250));
    sink.shutdown().await;

    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["000001.eml", "000002.eml"],
        "no temp files left"
    );
    assert_eq!(
        std::fs::read(dir.path().join("000002.eml")).unwrap(),
        b"two\r\n"
    );

    // A restarted sink continues the numbering instead of overwriting.
    let sink = start(config).await;
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    assert_eq!(c.transaction("a@x", &["r@y"], "three\r\n").await, Some(250));
    assert_eq!(sink.received()[0].seq, 3);
    assert!(dir.path().join("000003.eml").exists());
    sink.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_open_connections_and_the_listener() {
    let sink = start(SinkConfig::default()).await;
    let addr = sink.addr;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd("EHLO client.test").await, 250);
    timeout(WAIT, sink.shutdown())
        .await
        .expect("shutdown hangs");
    assert!(c.reply().await.is_none());
    let again = timeout(WAIT, TcpStream::connect(addr)).await.unwrap();
    assert!(again.is_err(), "still accepting after shutdown");
}

/// `cargo test --release --test tests sink::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release"]
async fn throughput() {
    const CONNS: usize = 16;
    const PER_CONN: usize = 5_000;
    let sink = start(SinkConfig {
        record: false,
        ..Default::default()
    })
    .await;
    let body = format!("Subject: t\r\n\r\n{}\r\n", "0123456789abcdef".repeat(120));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..CONNS {
        let body = body.clone();
        let addr = sink.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            assert_eq!(c.cmd("EHLO client.test").await, 250);
            let envelope = format!("MAIL FROM:<a@x>\r\nRCPT TO:<r{n}@y>\r\nDATA\r\n");
            // One write per message: the previous body and dot plus the next envelope.
            c.send(&envelope).await;
            for i in 0..PER_CONN {
                assert_eq!(c.code().await, 250);
                assert_eq!(c.code().await, 250);
                assert_eq!(c.code().await, 354);
                let next = if i + 1 < PER_CONN {
                    envelope.as_str()
                } else {
                    "QUIT\r\n"
                };
                c.send(&format!("{body}.\r\n{next}")).await;
                assert_eq!(c.code().await, 250);
            }
            assert_eq!(c.code().await, 221);
        }));
    }
    for t in tasks {
        timeout(Duration::from_secs(120), t).await.unwrap().unwrap();
    }
    let n = CONNS * PER_CONN;
    let secs = t0.elapsed().as_secs_f64();
    println!("{n} messages in {secs:.2}s: {:.0} msg/s", n as f64 / secs);
    assert_eq!(sink.count(), n);
    sink.shutdown().await;
}

/// Issue 11 item 14: `blast sink --maildir out/` names the files as `out/<n>.eml` (it printed
/// `out//<n>.eml`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_command_prints_the_maildir_path_without_a_double_slash() {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("{}/", dir.path().join("out").display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["sink", "--listen", "127.0.0.1:0", "--maildir", &out])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn blast sink");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let line = loop {
        let l = timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("blast sink prints its settings")
            .unwrap()
            .unwrap_or_else(|| panic!("blast sink ended; printed {seen:?}"));
        if l.starts_with("writing messages to") {
            break l;
        }
        seen.push(l);
    };
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert_eq!(
        line,
        format!("writing messages to {}<n>.eml", out),
        "{seen:?}"
    );
    assert!(!line.contains("//"), "{line}");
}
