//! The priority lane on its own: durable accept, delivery to a real sink, DSNs for 5xx,
//! retries for 4xx, a queue that survives a restart, `queue drop`/`retry` semantics.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blast::lane::priority::{self, Cmd, PriorityLane, Stats};
use blast::serve::config as serve_config;
use blast::sink::{Action, Rule, SinkConfig, SinkHandle};
use blast::store::queue::{NewMessage, QueueStore};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

fn settings(relay: std::net::SocketAddr, extra: &str) -> blast::config::LaneSettings {
    let src = format!(
        "[serve]\n[priority]\ntransport = \"smtp://{relay}\"\nhelo = \"mx.acme.example\"\nconnections = 4\n{extra}"
    );
    serve_config::parse(Path::new("blast.toml"), &src)
        .expect("valid config")
        .priority
}

fn start(
    dir: &Path,
    relay: std::net::SocketAddr,
    extra: &str,
) -> (PriorityLane, Arc<Mutex<Vec<String>>>) {
    let store = Arc::new(QueueStore::open(dir, Duration::from_secs(5)).expect("open queue"));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let l2 = logs.clone();
    let lane = priority::start(
        settings(relay, extra),
        store,
        "mx.acme.example".into(),
        Arc::new(move |m| l2.lock().unwrap().push(m)),
        Default::default(),
    )
    .expect("start lane");
    (lane, logs)
}

fn message(from: &str, to: &[&str], subject: &str) -> NewMessage {
    NewMessage {
        mail_from: from.into(),
        rcpt_to: to.iter().map(|s| s.to_string()).collect(),
        data: format!(
            "From: <{from}>\r\nTo: <{}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@acme.example>\r\n\r\nYour code is 123456.\r\n.leading dot\r\n",
            to[0]
        )
        .into_bytes(),
        user: Some("app".into()),
        smtputf8: false,
        eight_bit: false,
    }
}

async fn accept(lane: &PriorityLane, m: NewMessage) -> u64 {
    let (tx, rx) = oneshot::channel();
    lane.tx
        .send(Cmd::Accept { msg: m, reply: tx })
        .await
        .unwrap();
    rx.await.unwrap().expect("accepted")
}

async fn sink(rules: Vec<Rule>) -> SinkHandle {
    blast::sink::start(
        "127.0.0.1:0".parse().unwrap(),
        SinkConfig {
            rules,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_are_delivered_once_with_every_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(vec![]).await;
    let (lane, _) = start(dir.path(), sink.addr, "");
    for i in 0..20 {
        accept(
            &lane,
            message(
                "app@acme.example",
                &[&format!("u{i}@x.example"), &format!("v{i}@y.example")],
                &format!("reset{i}"),
            ),
        )
        .await;
    }
    wait_until("40 deliveries", || Stats::get(&lane.stats.delivered) == 40).await;
    let got = sink.received();
    assert_eq!(got.len(), 20, "one transaction per message");
    for r in &got {
        assert_eq!(r.mail_from, "app@acme.example");
        assert_eq!(r.rcpt_to.len(), 2);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let text = String::from_utf8_lossy(&r.data);
        assert!(
            text.contains("\r\n.leading dot\r\n"),
            "dot-stuffing round trip"
        );
    }
    assert_eq!(Stats::get(&lane.stats.accepted), 20);
    lane.shutdown(Duration::from_secs(5)).await;
    // Delivered messages leave the queue.
    let q = QueueStore::open(dir.path(), Duration::from_secs(5)).unwrap();
    assert!(q.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_sends_a_dsn_to_the_sender_and_never_bounces_a_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(vec![
        Rule::new(
            "gone@x.example",
            Action::RcptReply(550, "5.1.1 no such user".into()),
        ),
        Rule::new(
            "nobody@acme.example",
            Action::RcptReply(550, "5.1.1 no such user".into()),
        ),
    ])
    .await;
    let (lane, logs) = start(dir.path(), sink.addr, "");
    accept(
        &lane,
        message(
            "app@acme.example",
            &["gone@x.example", "ok@x.example"],
            "r1",
        ),
    )
    .await;
    // Its sender does not exist either: the DSN to it fails and is only logged.
    accept(
        &lane,
        message("nobody@acme.example", &["gone@x.example"], "r2"),
    )
    .await;
    wait_until("DSN delivered", || {
        sink.received().iter().any(|r| r.mail_from.is_empty())
    })
    .await;
    wait_until("second DSN attempted", || {
        Stats::get(&lane.stats.bounced) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = sink.received();
    let dsns: Vec<_> = got.iter().filter(|r| r.mail_from.is_empty()).collect();
    assert_eq!(
        dsns.len(),
        1,
        "one DSN delivered (the other's sender bounces)"
    );
    assert_eq!(dsns[0].rcpt_to, vec!["app@acme.example"]);
    let text = String::from_utf8_lossy(&dsns[0].data);
    assert!(text.contains("report-type=delivery-status"));
    assert!(text.contains("Final-Recipient: rfc822; gone@x.example"));
    assert!(text.contains("Status: 5.1.1"));
    assert!(!text.contains("Final-Recipient: rfc822; ok@x.example"));
    let delivered: Vec<_> = got
        .iter()
        .filter(|r| r.mail_from == "app@acme.example")
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].rcpt_to, vec!["ok@x.example"]);
    assert_eq!(Stats::get(&lane.stats.dsns), 2);
    let logs = logs.lock().unwrap().join("\n");
    assert!(logs.contains("null sender; no DSN sent"), "{logs}");
    lane.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_retried_on_the_lane_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(vec![Rule {
        times: Some(2),
        ..Rule::new(
            "grey@x.example",
            Action::RcptReply(451, "4.7.1 greylisted".into()),
        )
    }])
    .await;
    let (lane, _) = start(
        dir.path(),
        sink.addr,
        "retry = [\"200ms\", \"200ms\", \"200ms\"]\n",
    );
    accept(&lane, message("app@acme.example", &["grey@x.example"], "g")).await;
    wait_until("delivered after retries", || {
        Stats::get(&lane.stats.delivered) == 1
    })
    .await;
    assert_eq!(sink.attempts("grey@x.example"), 3);
    assert_eq!(Stats::get(&lane.stats.deferred), 2);
    assert_eq!(sink.received().len(), 1);
    lane.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_survives_a_restart_and_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here yet: the relay is down while the message is accepted.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (lane, _) = start(dir.path(), port, "connect_timeout = \"1s\"\n");
    let id = accept(
        &lane,
        message("app@acme.example", &["late@x.example"], "late"),
    )
    .await;
    wait_until("first attempt failed", || {
        Stats::get(&lane.stats.deferred) == 1
    })
    .await;
    lane.shutdown(Duration::from_secs(5)).await;

    let sink = blast::sink::start(port, SinkConfig::default())
        .await
        .unwrap();
    let (lane, _) = start(dir.path(), sink.addr, "");
    wait_until("delivered after restart", || sink.count() == 1).await;
    wait_until("recorded", || Stats::get(&lane.stats.delivered) == 1).await;
    let r = &sink.received()[0];
    assert_eq!(r.rcpt_to, vec!["late@x.example"]);
    lane.shutdown(Duration::from_secs(5)).await;
    let q = QueueStore::open(dir.path(), Duration::from_secs(5)).unwrap();
    assert!(q.get(id).unwrap().is_none());
    assert_eq!(sink.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_removes_and_retry_makes_due_now() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (lane, _) = start(
        dir.path(),
        port,
        "connect_timeout = \"1s\"\nretry = [\"1h\"]\n",
    );
    let a = accept(&lane, message("app@acme.example", &["a@x.example"], "a")).await;
    let b = accept(&lane, message("app@acme.example", &["b@x.example"], "b")).await;
    wait_until("both deferred", || Stats::get(&lane.stats.deferred) == 2).await;
    let (tx, rx) = oneshot::channel();
    lane.tx.send(Cmd::Drop(a, tx)).await.unwrap();
    assert_eq!(rx.await.unwrap(), Ok(true));
    let left = lane.store.list().unwrap();
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
    // The relay comes up; without `retry` the message would wait an hour.
    let sink = blast::sink::start(port, SinkConfig::default())
        .await
        .unwrap();
    lane.tx.send(Cmd::RetryNow(None)).await.unwrap();
    wait_until("retried now", || sink.count() == 1).await;
    assert_eq!(sink.received()[0].rcpt_to, vec!["b@x.example"]);
    lane.shutdown(Duration::from_secs(5)).await;
}

/// Issue 10, the priority lane's side of one SMTP transaction against a strict relay: SIZE
/// 6000, no SMTPUTF8, PIPELINING on or off. An oversize message is refused locally (`552 5.3.4
/// not sent…`), one to a non-ASCII recipient likewise (`553 5.6.7 not sent…`), neither with a
/// word on the wire; each sender gets a DSN naming the local reply, and every other message is
/// delivered exactly once.
async fn strict_relay_priority_lane(pipelining: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sink = blast::sink::start(
        "127.0.0.1:0".parse().unwrap(),
        SinkConfig {
            pipelining,
            smtputf8: false,
            max_size: 6_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (lane, logs) = start(dir.path(), sink.addr, "");
    const OK: usize = 10;
    for i in 0..OK {
        accept(
            &lane,
            message(
                "app@acme.example",
                &[&format!("u{i}@x.example")],
                &format!("ok{i}"),
            ),
        )
        .await;
    }
    let mut big = message("app@acme.example", &["big@x.example"], "big");
    // ~8 KB of body in 105 lines of 76: over the relay's SIZE, and nothing else wrong with it.
    big.data
        .extend(b"X".repeat(76).iter().chain(b"\r\n").cycle().take(78 * 105));
    accept(&lane, big).await;
    let mut utf8 = message("app@acme.example", &["jürgen@x.example"], "utf8");
    utf8.smtputf8 = true;
    accept(&lane, utf8).await;

    wait_until("all delivered or bounced, and the DSNs delivered", || {
        // `delivered` counts the two DSNs too.
        Stats::get(&lane.stats.delivered) == OK as u64 + 2
            && Stats::get(&lane.stats.bounced) == 2
            && sink
                .received()
                .iter()
                .filter(|r| r.mail_from.is_empty())
                .count()
                == 2
    })
    .await;
    let got = sink.received();
    let delivered: Vec<_> = got.iter().filter(|r| !r.mail_from.is_empty()).collect();
    assert_eq!(delivered.len(), OK, "one transaction per good message");
    let mut rcpts: Vec<String> = delivered.iter().flat_map(|r| r.rcpt_to.clone()).collect();
    rcpts.sort();
    rcpts.dedup();
    assert_eq!(rcpts.len(), OK, "each good message exactly once: {rcpts:?}");
    assert_eq!(
        sink.attempts("big@x.example"),
        0,
        "the oversize message went on the wire"
    );
    assert_eq!(
        sink.attempts("jürgen@x.example"),
        0,
        "the UTF-8 recipient went on the wire"
    );
    let dsns: Vec<String> = got
        .iter()
        .filter(|r| r.mail_from.is_empty())
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    assert!(
        dsns.iter()
            .any(|d| d.contains("Status: 5.3.4") && d.contains("not sent")),
        "no DSN for the oversize message: {dsns:?}"
    );
    assert!(
        dsns.iter()
            .any(|d| d.contains("Status: 5.6.7") && d.contains("not sent")),
        "no DSN for the UTF-8 recipient: {dsns:?}"
    );
    let logs = logs.lock().unwrap().join("\n");
    assert!(logs.contains("552 5.3.4 not sent"), "{logs}");
    assert!(logs.contains("553 5.6.7 not sent"), "{logs}");
    for r in &got {
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }
    lane.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_relay_with_pipelining_refuses_oversize_and_utf8_locally() {
    strict_relay_priority_lane(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_relay_without_pipelining_refuses_oversize_and_utf8_locally() {
    strict_relay_priority_lane(false).await;
}
