//! The priority lane delivering directly: one queued message to recipients in three domains
//! goes out as one transaction per domain to that domain's MX host; a null MX domain gets
//! a DSN, itself delivered to the sender domain's MX.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blast::lane::priority::{self, Cmd, Stats};
use blast::serve::config as serve_config;
use blast::sink::SinkConfig;
use blast::store::queue::{NewMessage, QueueStore};

use super::{a, mx, two_sinks, Dns};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_lane_delivers_per_domain_to_its_mx_and_bounces_a_null_mx() {
    let dns = Dns::start(&[
        mx("a.test", "mx.a.test", 10),
        a("mx.a.test", "127.0.0.2"),
        mx("b.test", "mx.b.test", 10),
        a("mx.b.test", "127.0.0.3"),
        mx("acme.test", "mx.a.test", 10),
        mx("null.test", ".", 0),
    ]);
    let (s2, s3, port) = two_sinks(SinkConfig::default).await;
    let dir = tempfile::tempdir().unwrap();
    let acct = dir.path().join("accounting.jsonl");
    let src = format!(
        "[serve]\n[priority]\ntransport = \"mx\"\nmx_port = {port}\nsource_ip = \"127.0.0.1\"\n\
         helo = \"mail.acme.test\"\nconnections = 4\nconnect_timeout = \"2s\"\n\
         accounting = \"{}\"\n[dns]\nnameservers = [\"{}\"]\n",
        acct.display(),
        dns.addr
    );
    let settings = serve_config::parse(Path::new("blast.toml"), &src)
        .expect("valid config")
        .priority;
    let store = Arc::new(QueueStore::open(dir.path(), Duration::from_secs(5)).expect("queue"));
    let lane = priority::start(
        settings,
        store,
        "mail.acme.test".into(),
        Arc::new(|_| {}),
        Default::default(),
    )
    .expect("start lane");
    let msg = NewMessage {
        mail_from: "app@acme.test".into(),
        rcpt_to: vec![
            "u@a.test".into(),
            "v@b.test".into(),
            "w@a.test".into(),
            "x@null.test".into(),
        ],
        data: b"From: <app@acme.test>\r\nTo: <u@a.test>\r\nSubject: code\r\nMessage-ID: <c1@acme.test>\r\n\r\nYour code is 123456.\r\n".to_vec(),
        user: Some("app".into()),
        smtputf8: false,
        eight_bit: false,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    lane.tx.send(Cmd::Accept { msg, reply: tx }).await.unwrap();
    rx.await.unwrap().expect("accepted");
    // Three recipients and the DSN (to app@acme.test, on a.test's host).
    let t0 = Instant::now();
    while Stats::get(&lane.stats.delivered) < 4 {
        assert!(t0.elapsed() < WAIT, "not delivered: {:?}", lane.stats);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bounced = Stats::get(&lane.stats.bounced);
    lane.shutdown(Duration::from_secs(5)).await;

    let at2 = s2.received();
    let at3 = s3.received();
    let mail: Vec<_> = at2.iter().filter(|r| !r.mail_from.is_empty()).collect();
    assert_eq!(mail.len(), 1, "one transaction for a.test: {at2:#?}");
    assert_eq!(mail[0].rcpt_to, vec!["u@a.test", "w@a.test"]);
    assert_eq!(at3.len(), 1);
    assert_eq!(at3[0].rcpt_to, vec!["v@b.test"]);
    let dsn: Vec<_> = at2.iter().filter(|r| r.mail_from.is_empty()).collect();
    assert_eq!(dsn.len(), 1, "one DSN");
    assert_eq!(dsn[0].rcpt_to, vec!["app@acme.test"]);
    let text = String::from_utf8_lossy(&dsn[0].data);
    assert!(
        text.contains("x@null.test") && text.contains("5.1.10"),
        "{text}"
    );
    assert_eq!(bounced, 1);

    let lines = std::fs::read_to_string(&acct).expect("accounting file");
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "four recipients and the DSN: {lines:#?}");
    let v = lines.iter().find(|l| l["rcpt"] == "v@b.test").unwrap();
    assert_eq!(v["mx_host"], "mx.b.test");
    let x = lines.iter().find(|l| l["rcpt"] == "x@null.test").unwrap();
    assert!(x["mx_host"].is_null());
}
