//! Shaping keyed the way receivers count: domains on one MX host set share one site's
//! limits, a provider rollup holds several sites to one limit and one messages-per-connection
//! cap, and a response rule suspends one site (durably: a second campaign on the same IP is
//! held too) while the others go on.
//!
//! The rate checks are lower bounds on elapsed time between the sink's own receive
//! timestamps (a slow machine can only make them pass more easily), never timed deadlines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use blast::send::SendOptions;
use blast::sink::{Action, Rule, SinkConfig, SinkHandle};
use blast::store::record::State;

use super::{a, campaign_toml, mx, two_sinks, Dns};
use crate::pipeline::{addrs, assert_exactly_once, csv_list, records, send_within, Fixture};

const LIMIT: Duration = Duration::from_secs(120);

/// Receive times at `sink` of recipients in `domains`, sorted.
fn times(sink: &SinkHandle, domains: &[&str]) -> Vec<Instant> {
    let mut t: Vec<Instant> = sink
        .received()
        .iter()
        .filter(|r| {
            r.rcpt_to
                .iter()
                .any(|to| domains.iter().any(|d| to.ends_with(&format!("@{d}"))))
        })
        .map(|r| r.at)
        .collect();
    t.sort();
    t
}

/// The span from the first to the last of `t`.
fn span(t: &[Instant]) -> Duration {
    t.last().unwrap().duration_since(*t.first().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_on_one_mx_host_share_its_site_and_a_provider_rolls_sites_into_one_limit() {
    let dns = Dns::start(&[
        // Two domains, one MX host: one site.
        mx("one.test", "mx.shared.test", 10),
        mx("two.test", "mx.shared.test", 10),
        a("mx.shared.test", "127.0.0.2"),
        // Two sites under one provider suffix.
        mx("three.test", "mx1.roll.test", 10),
        mx("four.test", "mx2.roll.test", 10),
        a("mx1.roll.test", "127.0.0.3"),
        a("mx2.roll.test", "127.0.0.3"),
    ]);
    let (s2, s3, port) = two_sinks(SinkConfig::default).await;
    let f = Fixture::new();
    let by_domain: BTreeMap<&str, Vec<String>> =
        ["one.test", "two.test", "three.test", "four.test"]
            .into_iter()
            .map(|d| (d, addrs("u", d, 15)))
            .collect();
    let all: Vec<String> = by_domain.values().flatten().cloned().collect();
    f.write("list.csv", csv_list(&all));
    // 10/s per site by default; the rollup holds its two sites to 10/s together and 4
    // messages per connection.
    let lane = r#"
[lane.per_domain]
default = "10/s"

[lane.providers.roll]
mx_suffix = [".roll.test"]
rate = "10/s"
messages_per_connection = 4
"#;
    let s = f.campaign("shaped", &campaign_toml("shaped", dns.addr, port, lane));
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("send");
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    let at2: Vec<String> = [&by_domain["one.test"], &by_domain["two.test"]]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let at3: Vec<String> = [&by_domain["three.test"], &by_domain["four.test"]]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    assert_exactly_once(&s2, &at2);
    assert_exactly_once(&s3, &at3);

    // 30 messages at 10/s: 29 intervals of 100 ms at least (5% for timer rounding). Had the
    // rate been per domain (or per site for the rollup), both would take half as long.
    let shared = times(&s2, &["one.test", "two.test"]);
    assert_eq!(shared.len(), 30);
    assert!(
        span(&shared) >= Duration::from_millis(2750),
        "one.test and two.test share mx.shared.test's 10/s: 30 messages in {:?}",
        span(&shared)
    );
    let rolled = times(&s3, &["three.test", "four.test"]);
    assert_eq!(rolled.len(), 30);
    assert!(
        span(&rolled) >= Duration::from_millis(2750),
        "the rollup's two sites share one 10/s: 30 messages in {:?}",
        span(&rolled)
    );
    // 4 messages per connection: at least 8 connections for 30 messages.
    assert!(
        s3.connections() >= 8,
        "messages_per_connection = 4 for 30 messages: {} connections",
        s3.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tss04_reply_suspends_its_site_across_campaigns_while_other_sites_go_on() {
    let dns = Dns::start(&[
        mx("y1.test", "mx.yahoo-like.test", 10),
        mx("y2.test", "mx.yahoo-like.test", 10),
        a("mx.yahoo-like.test", "127.0.0.2"),
        mx("o1.test", "mx.other.test", 10),
        mx("o2.test", "mx.other.test", 10),
        a("mx.other.test", "127.0.0.3"),
    ]);
    let tss04 = || SinkConfig {
        rules: vec![Rule::new(
            "*@y*.test",
            Action::RcptReply(421, "4.7.0 [TSS04] Try again later".into()),
        )],
        ..Default::default()
    };
    let (s2, s3, port) = two_sinks(tss04).await;
    let f = Fixture::new();
    let ys: Vec<String> = [addrs("u", "y1.test", 10), addrs("u", "y2.test", 10)].concat();
    let os: Vec<String> = [addrs("u", "o1.test", 20), addrs("u", "o2.test", 20)].concat();
    f.write("list.csv", csv_list(&[ys.clone(), os.clone()].concat()));
    // One transaction at a time per site, so the first reply is the only one the suspended
    // site ever gets.
    let lane = "per_domain_connections = 1\nwait_for_retries = \"2s\"";
    let s = f.campaign("first", &campaign_toml("first", dns.addr, port, lane));
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("send");
    assert_eq!(
        summary.exit_code(),
        75,
        "the held recipients remain: {summary:?}"
    );
    assert_exactly_once(&s3, &os);
    assert_eq!(s2.count(), 0);
    let tried: u32 = ys.iter().map(|a| s2.attempts(a)).sum();
    assert_eq!(tried, 1, "one RCPT to the site, then the hold");
    let recs = records(&s);
    for y in &ys {
        let r = &recs[y];
        assert_eq!(r.state, State::Deferred, "{y}: {r:?}");
        assert!(
            r.retry_at_ms > blast::store::now_ms() + 3_600_000,
            "{y}: retry at the hold's end (2 h)"
        );
        assert!(
            r.last_reply.starts_with("held: yahoo-tss04"),
            "{y}: {}",
            r.last_reply
        );
    }
    assert!(
        ys.iter().all(|y| recs[y].attempts == 0),
        "a 421 spends no attempt, and the held ones never had one"
    );

    // The hold is in the global state: `blast status` shows it, with its reason and end.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["status", "--json"])
        .arg(f.path("first.toml"))
        .output()
        .expect("blast status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let holds = v["holds"].as_array().expect("holds");
    assert_eq!(holds.len(), 1, "{v}");
    assert_eq!(holds[0]["site"], "mx.yahoo-like.test");
    assert_eq!(holds[0]["rule"], "yahoo-tss04");
    assert_eq!(holds[0]["ip"], "127.0.0.1");
    assert!(holds[0]["reply"].as_str().unwrap().contains("[TSS04]"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blast"))
        .arg("status")
        .arg(f.path("first.toml"))
        .output()
        .expect("blast status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hold: mx.yahoo-like.test suspended until") && text.contains("yahoo-tss04"),
        "{text}"
    );

    // A new run — another campaign from the same IP — is held too: nothing reaches the
    // suspended site, the other site gets all of its recipients.
    let ys2 = addrs("v", "y1.test", 5);
    let os2 = addrs("v", "o1.test", 5);
    f.write("list.csv", csv_list(&[ys2.clone(), os2.clone()].concat()));
    let s = f.campaign("second", &campaign_toml("second", dns.addr, port, lane));
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("second send");
    assert_eq!(summary.exit_code(), 75);
    let tried: u32 = ys2.iter().map(|a| s2.attempts(a)).sum();
    assert_eq!(
        tried, 0,
        "the hold survives the restart and binds every campaign on the IP"
    );
    assert_eq!(s3.count(), os.len() + os2.len());
    let recs = records(&s);
    for y in &ys2 {
        assert_eq!(recs[y].state, State::Deferred);
        assert_eq!(recs[y].attempts, 0);
        assert!(
            recs[y].last_reply.starts_with("held: yahoo-tss04"),
            "{}",
            recs[y].last_reply
        );
    }

    // A postmaster who sorted it out with the receiver lifts the hold.
    let holds = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_blast"))
            .arg("holds")
            .arg("--campaign")
            .arg(f.path("second.toml"))
            .args(args)
            .output()
            .expect("blast holds")
    };
    let out = holds(&["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("mx.yahoo-like.test suspended"));
    let out = holds(&["lift", "mx.nowhere.test"]);
    assert_eq!(out.status.code(), Some(1), "no such hold");
    let out = holds(&["lift", "mx.yahoo-like.test"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = holds(&["list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}
