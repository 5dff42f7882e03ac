//! The SMTP transaction (`src/transport/session.rs`) against a scripted relay on 127.0.0.1:0:
//! a real TCP server that answers each command line as a test's policy says (421 at any
//! stage, refusals, closing), records what the client sent and flags protocol violations
//! (a nested MAIL: a transaction left open). Plus whole sends through such a relay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blast::config::{StartTls, Timeouts};
use blast::transport::smtp::Endpoint;
use blast::transport::{Broken, Connector, Envelope, RcptOutcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What the relay does with a command line.
pub enum Say {
    /// Answer with this reply (`"250 ok"`).
    Reply(String),
    /// Answer (unless empty), then close the connection.
    Close(String),
}

/// `policy(connection number from 0, line)`: the line is the command as sent, `"CONNECT"` for
/// the greeting, `"."` for the end of a message body. `None`: the usual answer.
pub type Policy = dyn Fn(usize, &str) -> Option<Say> + Send + Sync;

/// A running scripted relay.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    /// Per connection, every line received (bodies as one `"."` line).
    pub log: Arc<Mutex<Vec<Vec<String>>>>,
    /// Protocol violations seen.
    pub violations: Arc<Mutex<Vec<String>>>,
    /// Messages answered 250 after the dot: their RCPT TO addresses.
    pub accepted: Arc<Mutex<Vec<Vec<String>>>>,
}

fn usual(line: &str, pipelining: bool) -> Say {
    let u = line.to_ascii_uppercase();
    let r = if line == "CONNECT" {
        "220 relay.test ESMTP"
    } else if u.starts_with("EHLO") {
        if pipelining {
            "250-relay.test\r\n250-PIPELINING\r\n250 8BITMIME"
        } else {
            "250-relay.test\r\n250 8BITMIME"
        }
    } else if u.starts_with("MAIL") || u.starts_with("RCPT") || u == "RSET" || line == "." {
        "250 2.0.0 ok"
    } else if u == "DATA" {
        "354 go ahead"
    } else if u == "QUIT" {
        return Say::Close("221 bye".into());
    } else {
        "500 5.5.1 unknown command"
    };
    Say::Reply(r.into())
}

/// Starts a relay; it runs until the test's runtime ends.
pub async fn relay(pipelining: bool, policy: Box<Policy>) -> Relay {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = Relay {
        addr: l.local_addr().unwrap(),
        log: Default::default(),
        violations: Default::default(),
        accepted: Default::default(),
    };
    let (log, violations, accepted) = (r.log.clone(), r.violations.clone(), r.accepted.clone());
    let policy: Arc<Policy> = Arc::from(policy);
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((s, _)) = l.accept().await else { return };
            s.set_nodelay(true).unwrap();
            log.lock().unwrap().push(Vec::new());
            let (log, violations, accepted, policy) = (
                log.clone(),
                violations.clone(),
                accepted.clone(),
                policy.clone(),
            );
            tokio::spawn(async move {
                let (rd, mut wr) = s.into_split();
                let mut rd = BufReader::new(rd);
                let say = |line: &str| policy(n, line).unwrap_or_else(|| usual(line, pipelining));
                // (MAIL accepted, accepted recipients)
                let mut txn: Option<Vec<String>> = None;
                let mut pending = Some("CONNECT".to_string());
                loop {
                    let line = match pending.take() {
                        Some(l) => l,
                        None => {
                            let mut buf = String::new();
                            match tokio::time::timeout(
                                Duration::from_secs(60),
                                rd.read_line(&mut buf),
                            )
                            .await
                            {
                                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                                Ok(Ok(_)) => {}
                            }
                            buf.trim_end_matches(['\r', '\n']).to_string()
                        }
                    };
                    log.lock().unwrap()[n].push(line.clone());
                    let u = line.to_ascii_uppercase();
                    if u.starts_with("MAIL") && txn.is_some() {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("connection {n}: nested MAIL"));
                        let _ = wr.write_all(b"503 5.5.1 nested MAIL\r\n").await;
                        continue;
                    }
                    let no_rcpt = u == "DATA" && txn.as_ref().is_none_or(Vec::is_empty);
                    let (reply, close) = match say(&line) {
                        // As Postfix: DATA without an accepted recipient is refused, and the
                        // transaction stays open (MAIL was accepted) until RSET.
                        Say::Reply(_) if no_rcpt && txn.is_some() => {
                            ("554 5.5.1 no valid recipients".into(), false)
                        }
                        Say::Reply(_) if no_rcpt => ("503 5.5.1 need MAIL".into(), false),
                        Say::Reply(r) => (r, false),
                        Say::Close(r) => (r, true),
                    };
                    let ok = reply.starts_with('2') || reply.starts_with('3');
                    if u.starts_with("MAIL") && ok {
                        txn = Some(Vec::new());
                    } else if u.starts_with("RCPT") && ok {
                        if let Some(t) = &mut txn {
                            let a = &line[line.find('<').unwrap_or(0) + 1
                                ..line.rfind('>').unwrap_or(line.len())];
                            t.push(a.to_string());
                        }
                    } else if u == "RSET" {
                        txn = None;
                    }
                    if !answer(&mut wr, &reply, close).await {
                        return;
                    }
                    if u == "DATA" && reply.starts_with("354") {
                        // The body, up to the dot.
                        loop {
                            let mut b = String::new();
                            match rd.read_line(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if b == ".\r\n" => break,
                                Ok(_) => {}
                            }
                        }
                        let rcpts = txn.take().unwrap_or_default();
                        let (reply, close) = match say(".") {
                            Say::Reply(r) => (r, false),
                            Say::Close(r) => (r, true),
                        };
                        log.lock().unwrap()[n].push(".".into());
                        if reply.starts_with("250") {
                            accepted.lock().unwrap().push(rcpts);
                        }
                        if !answer(&mut wr, &reply, close).await {
                            return;
                        }
                    }
                }
            });
        }
    });
    r
}

/// Writes `reply` (none when it is empty and the relay closes); whether the session goes on.
async fn answer(wr: &mut tokio::net::tcp::OwnedWriteHalf, reply: &str, close: bool) -> bool {
    if close && reply.is_empty() {
        return false;
    }
    wr.write_all(format!("{reply}\r\n").as_bytes())
        .await
        .is_ok()
        && !close
}

fn endpoint(r: &Relay) -> Connector {
    let t = Duration::from_secs(20);
    Connector::Smtp(Endpoint {
        host: "127.0.0.1".into(),
        port: r.addr.port(),
        implicit_tls: false,
        starttls: StartTls::Off,
        source_ip: None,
        helo: "client.test".into(),
        auth: None,
        timeouts: Timeouts {
            connect: t,
            command: t,
            data_end: t,
        },
    })
}

fn env(rcpt: &str) -> Envelope {
    Envelope {
        mail_from: "news@acme.example".into(),
        rcpts: vec![rcpt.into()],
        ..Default::default()
    }
}

const MSG: &[u8] = b"Subject: hi\r\n\r\nhello\r\n";

/// Submits one message per recipient the way the blast lane's worker does (with PIPELINING
/// the next one goes before the previous result is read; nothing more once the session is
/// broken) and returns (tag, outcome, broken after it) in tag order.
async fn stream(c: &Connector, rcpts: &[&str]) -> Vec<(usize, RcptOutcome, Option<Broken>)> {
    let mut s = c.open::<usize>().await.expect("open session");
    let mut out = Vec::new();
    s.submit(0, &env(rcpts[0]), MSG.to_vec()).await;
    let mut next = 1;
    for _ in 0..rcpts.len() * 2 + 2 {
        if next < rcpts.len() && s.pipelining() && s.broken().is_none() {
            s.submit(next, &env(rcpts[next]), MSG.to_vec()).await;
            next += 1;
        }
        let r = tokio::time::timeout(Duration::from_secs(30), s.next_result())
            .await
            .expect("a result in time");
        let Some((tag, mut res)) = r else {
            if next < rcpts.len() && s.broken().is_none() {
                s.submit(next, &env(rcpts[next]), MSG.to_vec()).await;
                next += 1;
                continue;
            }
            break;
        };
        out.push((tag, res.pop().unwrap(), s.broken().cloned()));
    }
    out.sort_by_key(|r| r.0);
    out
}

fn reply(r: &str) -> Option<Say> {
    Some(Say::Reply(r.into()))
}

fn close(r: &str) -> Option<Say> {
    Some(Say::Close(r.into()))
}

fn throttled(o: &RcptOutcome) -> bool {
    matches!(
        o,
        RcptOutcome::NotSent {
            throttled: true,
            ..
        }
    )
}

/// Lines connection `n` received, joined (bodies as ".").
fn lines(r: &Relay, n: usize) -> String {
    r.log.lock().unwrap()[n].join(" | ")
}

/// A policy answering `say` to the `nth` (from 1) line starting with `cmd` on connection 0.
fn nth(cmd: &'static str, nth: usize, say: fn() -> Option<Say>) -> Box<Policy> {
    let seen = std::sync::atomic::AtomicUsize::new(0);
    Box::new(move |n, l| {
        let hit = n == 0
            && l.to_ascii_uppercase().starts_with(cmd)
            && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == nth;
        if hit {
            say()
        } else {
            None
        }
    })
}

/// 421 at the second message's MAIL, RCPT or DATA (pipelined behind the first body), or after
/// its final dot: the first is delivered; the second and everything behind it are not sent,
/// throttled (no retry spent) — never `Unknown`, a 421 is an answer — and the session is
/// broken as `Closing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_421_anywhere_settles_the_rest_as_throttled() {
    for (cmd, pipelining) in [
        ("MAIL", true),
        ("RCPT", true),
        ("DATA", true),
        (".", true),
        ("MAIL", false),
        ("DATA", false),
        (".", false),
    ] {
        let r = relay(pipelining, nth(cmd, 2, || close("421 4.7.0 busy, closing"))).await;
        let out = stream(&endpoint(&r), &["a@x.test", "b@x.test", "c@x.test"]).await;
        let what = format!("421 at {cmd} (pipelining {pipelining}): {out:?}");
        assert!(matches!(out[0].1, RcptOutcome::Delivered(_)), "{what}");
        assert!(out[1..].iter().all(|o| throttled(&o.1)), "{what}");
        assert!(
            matches!(out.last().unwrap().2, Some(Broken::Closing(_))),
            "{what}"
        );
        assert_eq!(
            *r.accepted.lock().unwrap(),
            vec![vec!["a@x.test".to_string()]],
            "{what}"
        );
        assert!(r.violations.lock().unwrap().is_empty(), "{what}");
    }
}

/// A transaction that went no further than MAIL (every RCPT refused, or DATA refused) is
/// closed with RSET, and the transaction pipelined behind it is delivered, with no nested
/// MAIL, with and without PIPELINING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_behind_a_reset_one_is_delivered() {
    for pipelining in [true, false] {
        let r = relay(
            pipelining,
            Box::new(|_, l| {
                if l.contains("<bad@") {
                    reply("550 5.1.1 no such user")
                } else {
                    None
                }
            }),
        )
        .await;
        let out = stream(
            &endpoint(&r),
            &["bad@x.test", "a@x.test", "bad@x.test", "b@x.test"],
        )
        .await;
        let what = format!("pipelining {pipelining}: {out:?}\n{}", lines(&r, 0));
        assert!(
            matches!(&out[0].1, RcptOutcome::Refused { reply, .. } if reply.contains("5.1.1")),
            "{what}"
        );
        assert!(matches!(out[1].1, RcptOutcome::Delivered(_)), "{what}");
        assert!(matches!(&out[2].1, RcptOutcome::Refused { .. }), "{what}");
        assert!(matches!(out[3].1, RcptOutcome::Delivered(_)), "{what}");
        assert!(r.violations.lock().unwrap().is_empty(), "{what}");
        assert_eq!(r.accepted.lock().unwrap().len(), 2, "{what}");
    }
    let r = relay(true, nth("DATA", 1, || reply("554 5.7.1 not now"))).await;
    let out = stream(&endpoint(&r), &["a@x.test", "b@x.test"]).await;
    let what = format!("{out:?}\n{}", lines(&r, 0));
    assert!(matches!(&out[0].1, RcptOutcome::Refused { .. }), "{what}");
    assert!(matches!(out[1].1, RcptOutcome::Delivered(_)), "{what}");
    assert!(r.violations.lock().unwrap().is_empty(), "{what}");
}

/// A 421 in reply to that RSET is the relay closing: throttling, like a 421 anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_421_to_rset_is_throttling() {
    let r = relay(
        true,
        Box::new(|_, l| match l {
            _ if l.contains("<bad@") => reply("550 5.1.1 no such user"),
            "RSET" => close("421 4.7.0 too many errors, closing"),
            _ => None,
        }),
    )
    .await;
    let out = stream(&endpoint(&r), &["bad@x.test", "a@x.test"]).await;
    let what = format!("{out:?}\n{}", lines(&r, 0));
    assert!(matches!(&out[0].1, RcptOutcome::Refused { .. }), "{what}");
    assert!(throttled(&out[1].1), "{what}");
    assert!(matches!(out[1].2, Some(Broken::Closing(_))), "{what}");
}

/// A connection lost after a final dot without a reply: that message is `Unknown` (it may
/// have been delivered), the one pipelined behind it is simply not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_after_the_dot_is_unknown_and_the_next_is_not_sent() {
    let r = relay(true, nth(".", 1, || close(""))).await;
    let out = stream(&endpoint(&r), &["a@x.test", "b@x.test"]).await;
    let what = format!("{out:?}\n{}", lines(&r, 0));
    assert!(matches!(out[0].1, RcptOutcome::Unknown(_)), "{what}");
    assert!(
        matches!(
            out[1].1,
            RcptOutcome::NotSent {
                throttled: false,
                ..
            }
        ),
        "{what}"
    );
}

/// A relay that answers 421 at the greeting or to EHLO from the first connection on is
/// throttling, not misconfigured: the destination is backed off and the run ends as
/// stalled (exit 75, everyone still pending, a rerun resumes), not with "cannot connect"
/// (exit 1) after three attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_saying_421_before_any_mail_stalls_the_run_with_exit_75() {
    use crate::pipeline::{addrs, campaign_toml, csv_list, send_ok, Fixture};
    for at in ["CONNECT", "EHLO"] {
        let r = relay(
            true,
            Box::new(move |_, l| {
                l.starts_with(at)
                    .then(|| Say::Close("421 4.7.0 try again later".into()))
            }),
        )
        .await;
        let f = Fixture::new();
        let list = addrs("u", "x.example", 5);
        f.write("list.csv", csv_list(&list));
        let extra = "wait_for_retries = \"1s\"\nbackoff = \"100ms\"\n";
        let toml = campaign_toml("s421", r.addr, &["list.csv"], "");
        let toml = toml.replace("wait_for_retries = \"30s\"\nbackoff = \"300ms\"\n", extra);
        let s = f.campaign("s421", &toml);
        let sum = send_ok(&s).await;
        let what = format!("421 at {at}: {sum:?}");
        assert_eq!(sum.fatal, None, "{what}");
        assert!(
            sum.stalled.as_deref().is_some_and(
                |m| m.contains("unavailable since") && m.contains("421 4.7.0 try again later")
            ),
            "{what}"
        );
        assert_eq!(sum.exit_code(), 75, "{what}");
        assert_eq!(
            sum.counts.get(blast::store::record::State::Pending),
            5,
            "{what}"
        );
        let log = r.log.lock().unwrap();
        assert!(log.len() > 1, "backed off and tried again: {what}");
        assert!(
            log.iter().flatten().all(|l| !l.starts_with("MAIL")),
            "{what}"
        );
    }
}

/// RFC 3461: with an ENVID and a server that offers DSN, MAIL asks for headers only with the
/// id, each RCPT for failure reports only with its original address in xtext; without DSN
/// on offer (or without an ENVID) no parameter is sent (a server without DSN refuses them).
#[tokio::test]
async fn dsn_parameters_only_when_offered() {
    for offered in [true, false] {
        let r = relay(
            true,
            Box::new(move |_, line| {
                (offered && line.to_ascii_uppercase().starts_with("EHLO")).then(|| {
                    Say::Reply("250-relay.test\r\n250-PIPELINING\r\n250-DSN\r\n250 8BITMIME".into())
                })
            }),
        )
        .await;
        let c = endpoint(&r);
        let mut s = c.open::<usize>().await.expect("open");
        let mut e = env("a+b=c@x.example");
        e.envid = Some("tok+=en".into());
        s.submit(0, &e, MSG.to_vec()).await;
        let mut plain = env("plain@x.example");
        plain.envid = None;
        s.submit(1, &plain, MSG.to_vec()).await;
        for _ in 0..2 {
            let (_, res) = s.next_result().await.expect("result");
            assert!(matches!(res[0], RcptOutcome::Delivered(_)), "{res:?}");
        }
        s.close().await;
        let log = r.log.lock().unwrap()[0].clone();
        let mails: Vec<&String> = log.iter().filter(|l| l.starts_with("MAIL")).collect();
        let rcpts: Vec<&String> = log.iter().filter(|l| l.starts_with("RCPT")).collect();
        if offered {
            assert_eq!(
                mails[0],
                "MAIL FROM:<news@acme.example> RET=HDRS ENVID=tok+2B+3Den"
            );
            assert_eq!(
                rcpts[0],
                "RCPT TO:<a+b=c@x.example> NOTIFY=FAILURE ORCPT=rfc822;a+2Bb+3Dc@x.example"
            );
        } else {
            assert_eq!(mails[0], "MAIL FROM:<news@acme.example>");
            assert_eq!(rcpts[0], "RCPT TO:<a+b=c@x.example>");
        }
        assert_eq!(
            mails[1], "MAIL FROM:<news@acme.example>",
            "no ENVID, no DSN request"
        );
        assert_eq!(rcpts[1], "RCPT TO:<plain@x.example>");
    }
}
