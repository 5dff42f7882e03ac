//! Limits and failures: sizes, recipients, line length, connections, idle timeout, shutdown,
//! and a queue that cannot take the message.

use super::*;

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

/// Connections over the per-IP or the total limit get 421 4.7.0 and are closed; an idle
/// client gets 421 and is closed; shutdown tells an idle session 421 4.3.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_idle_timeout_and_shutdown() {
    for (per_ip, total) in [(1, 200), (20, 1)] {
        let fx = start(
            SubmissionSettings {
                max_connections_per_ip: per_ip,
                max_connections: total,
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
    }

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

/// Issue 11.2: a message the priority lane can never send (a NUL octet, a line over RFC 5321
/// §4.5.3.1.6's 998 octets) is refused at the end of DATA with a 5xx that says why — never
/// 250 and a DSN later (backscatter). Nothing is queued and the session stays in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsendable_content_is_refused_at_the_end_of_data() {
    let fx = start(settings(), Queue::Ok).await;
    let mut c = fx.login().await;
    let head = "From: ann@a.test\r\nTo: x@rcpt.test\r\nSubject: s\r\n\r\n";
    let nul = format!("{head}before\0after\r\n.\r\n");
    let r = transaction(&mut c, "ann@a.test", &nul).await;
    assert!(r.starts_with("554 5.6.0"), "NUL: {r}");
    assert!(r.contains("NUL"), "{r}");
    let long = format!("{head}{}\r\n.\r\n", "x".repeat(5000));
    let r = transaction(&mut c, "ann@a.test", &long).await;
    assert!(r.starts_with("554 5.6.0"), "long line: {r}");
    assert!(r.contains("998") && r.contains("line 5"), "{r}");
    // A header line counts too; 998 octets exactly is fine.
    let long_header = format!("X-Long: {}\r\n{head}b\r\n.\r\n", "y".repeat(1200));
    let r = transaction(&mut c, "ann@a.test", &long_header).await;
    assert!(r.starts_with("554 5.6.0") && r.contains("line 1"), "{r}");
    let at_limit = format!("{head}{}\r\n.\r\n", "z".repeat(998));
    let r = transaction(&mut c, "ann@a.test", &at_limit).await;
    assert!(r.starts_with("250 2.0.0"), "998 octets: {r}");
    assert_eq!(fx.got().len(), 1, "only the sendable message is queued");
    assert_eq!(fx.stat(|s| &s.rejected_messages), 3);
    fx.h.shutdown().await;
}
