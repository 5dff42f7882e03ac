//! Direct delivery end to end: one campaign over domains whose DNS says every kind of thing.

use std::collections::BTreeMap;

use blast::send::SendOptions;
use blast::sink::SinkConfig;
use blast::store::record::State;

use super::{a, campaign_toml, mx, two_sinks, Dns, ServFail};
use crate::pipeline::{addrs, assert_exactly_once, csv_list, records, send_within, Fixture};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(90);

fn list(domains: &[&str], n: usize) -> BTreeMap<String, Vec<String>> {
    domains
        .iter()
        .map(|d| (d.to_string(), addrs("u", d, n)))
        .collect()
}

/// One line of the accounting file as JSON.
fn accounting(f: &Fixture, id: &str) -> Vec<serde_json::Value> {
    let p = f.path(&format!("state/{id}/accounting.jsonl"));
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("accounting file {}: {e}", p.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_preference_fallback_implicit_null_nxdomain_servfail() {
    let sf = ServFail::start();
    let dns = Dns::start(&[
        // By preference: 10 on .2, 20 on .3 → everything at .2.
        mx("pref.test", "mx2.pref.test", 10),
        mx("pref.test", "mx3.pref.test", 20),
        a("mx2.pref.test", "127.0.0.2"),
        a("mx3.pref.test", "127.0.0.3"),
        // The preferred host refuses connections (nothing listens on .4) → the next one.
        mx("down.test", "mx.down.test", 10),
        mx("down.test", "mx3.down.test", 20),
        a("mx.down.test", "127.0.0.4"),
        a("mx3.down.test", "127.0.0.3"),
        // The preferred host accepts the connection and never greets → timeout, next host.
        mx("mute.test", "mx.mute.test", 10),
        mx("mute.test", "mx3.mute.test", 20),
        a("mx.mute.test", "127.0.0.5"),
        a("mx3.mute.test", "127.0.0.3"),
        // No MX: the domain's own address.
        a("imp.test", "127.0.0.3"),
        // Two domains on one MX host.
        mx("one.test", "mx.shared.test", 10),
        mx("two.test", "mx.shared.test", 10),
        a("mx.shared.test", "127.0.0.2"),
        // RFC 7505 null MX.
        mx("null.test", ".", 0),
        // SERVFAIL for a whole zone.
        format!("--server=/sf.test/{}#{}", sf.addr.ip(), sf.addr.port()),
        // nx.test has no record at all: NXDOMAIN (dnsmasq is authoritative for .test).
    ]);
    let (s2, s3, port) = two_sinks(SinkConfig::default).await;
    // Never accepted, never answered: the kernel completes the handshake, nobody greets.
    let _mute = std::net::TcpListener::bind(("127.0.0.5", port)).expect("bind 127.0.0.5");
    let f = Fixture::new();
    let domains = [
        "pref.test",
        "down.test",
        "mute.test",
        "imp.test",
        "one.test",
        "two.test",
        "null.test",
        "sf.test",
        "nx.test",
    ];
    let by_domain = list(&domains, 3);
    let all: Vec<String> = by_domain.values().flatten().cloned().collect();
    f.write("list.csv", csv_list(&all));
    // A retry an hour away: a deferred recipient stays deferred, and the run ends (75).
    let lane = "retry = [\"1h\"]\nwait_for_retries = \"1s\"";
    let s = f.campaign("direct", &campaign_toml("direct", dns.addr, port, lane));
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("send");
    assert_eq!(summary.fatal, None);
    assert_eq!(
        summary.stalled, None,
        "9 domains: below the resolver-fault minimum"
    );

    let at2: Vec<String> = ["pref.test", "one.test", "two.test"]
        .iter()
        .flat_map(|d| by_domain[*d].clone())
        .collect();
    let at3: Vec<String> = ["down.test", "mute.test", "imp.test"]
        .iter()
        .flat_map(|d| by_domain[*d].clone())
        .collect();
    // Exactly once each, at the right host, and nothing anywhere else.
    assert_exactly_once(&s2, &at2);
    assert_exactly_once(&s3, &at3);

    let recs = records(&s);
    let state = |d: &str| -> Vec<(State, String)> {
        by_domain[d]
            .iter()
            .map(|a| {
                let r = &recs[a];
                (r.state, r.last_reply.clone())
            })
            .collect()
    };
    for d in [
        "pref.test",
        "down.test",
        "mute.test",
        "imp.test",
        "one.test",
        "two.test",
    ] {
        assert!(
            state(d).iter().all(|(st, _)| *st == State::Sent),
            "{d}: {:?}",
            state(d)
        );
    }
    for (st, reply) in state("null.test") {
        assert_eq!(st, State::Bounced);
        assert!(reply.contains("5.1.10"), "{reply}");
    }
    for (st, reply) in state("nx.test") {
        assert_eq!(st, State::Bounced);
        assert!(
            reply.contains("5.1.2") && reply.contains("confirmed"),
            "{reply}"
        );
    }
    for (st, reply) in state("sf.test") {
        assert_eq!(st, State::Deferred, "{reply}");
        assert!(reply.contains("4.4.3"), "{reply}");
    }
    assert_eq!(summary.exit_code(), 75, "deferred recipients remain");
    // Looked up once per domain, never once per message (3 recipients each); NXDOMAIN
    // twice: the first answer and the one that confirmed it.
    for d in [
        "pref.test",
        "down.test",
        "one.test",
        "two.test",
        "null.test",
    ] {
        assert_eq!(dns.queries("MX", d), 1, "{d}");
    }
    assert_eq!(dns.queries("MX", "nx.test"), 2);
    assert_eq!(
        dns.queries("A", "mx.shared.test"),
        1,
        "one host, two domains: one lookup"
    );
    // source_ip is IPv4: no AAAA asked for at all.
    assert_eq!(dns.queries("AAAA", "mx2.pref.test"), 0);
    assert_eq!(dns.queries("AAAA", "imp.test"), 0);
    assert_eq!(dns.queries("A", "mx2.pref.test"), 1);

    // One accounting line per attempt: every recipient once (none was tried twice here).
    let lines = accounting(&f, "direct");
    assert_eq!(lines.len(), all.len(), "{lines:#?}");
    let line = |rcpt: &str| {
        lines
            .iter()
            .find(|l| l["rcpt"] == rcpt)
            .unwrap_or_else(|| panic!("no accounting line for {rcpt}"))
    };
    let p = line("u0@pref.test");
    assert_eq!(p["mx_host"], "mx2.pref.test");
    assert_eq!(p["mx_addr"], format!("127.0.0.2:{port}"));
    assert_eq!(p["source_ip"], "127.0.0.1");
    assert_eq!(p["tls"], false);
    assert!(p["reply"].as_str().unwrap().starts_with("250"), "{p}");
    assert!(p["time"].as_str().unwrap().ends_with('Z'), "{p}");
    assert_eq!(line("u1@down.test")["mx_host"], "mx3.down.test");
    assert_eq!(line("u1@mute.test")["mx_host"], "mx3.mute.test");
    assert_eq!(line("u2@imp.test")["mx_host"], "imp.test");
    assert_eq!(line("u0@two.test")["mx_host"], "mx.shared.test");
    let n = line("u0@null.test");
    assert!(n["mx_host"].is_null(), "{n}");
    assert!(n["reply"].as_str().unwrap().contains("5.1.10"), "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_many_nxdomains_pause_the_run_as_a_resolver_fault() {
    // 22 domains with an MX, 3 without any record: 12% NXDOMAIN, above the 5% share once
    // 20 domains have answered.
    let good: Vec<String> = (0..22).map(|i| format!("ok{i}.test")).collect();
    let mut args: Vec<String> = good.iter().map(|d| mx(d, "mx.ok.test", 10)).collect();
    args.push(a("mx.ok.test", "127.0.0.2"));
    let dns = Dns::start(&args);
    let (s2, _s3, port) = two_sinks(SinkConfig::default).await;
    let f = Fixture::new();
    let mut all: Vec<String> = good.iter().flat_map(|d| addrs("u", d, 2)).collect();
    let nx: Vec<String> = (0..3)
        .flat_map(|i| addrs("u", &format!("gone{i}.test"), 2))
        .collect();
    all.extend(nx.iter().cloned());
    f.write("list.csv", csv_list(&all));
    // A long backoff: the NXDOMAINs could only bounce after it, long after the pause.
    let toml = campaign_toml("nxshare", dns.addr, port, "wait_for_retries = \"1s\"")
        .replace("backoff = \"300ms\"", "backoff = \"10m\"");
    let s = f.campaign("nxshare", &toml);
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("send");
    let why = summary.stalled.clone().expect("the run pauses");
    assert!(
        why.contains("resolver fault") && why.contains("NXDOMAIN"),
        "{why}"
    );
    assert_eq!(summary.exit_code(), 75);
    let recs = records(&s);
    for a in &nx {
        let r = &recs[a];
        assert_eq!(
            r.state,
            State::Pending,
            "{a}: never bounced: {}",
            r.last_reply
        );
    }
    assert_eq!(summary.suppressed, 0, "a resolver fault suppresses nobody");
    // Whatever went before the pause went exactly once.
    let got = crate::pipeline::by_rcpt(&s2);
    assert!(got.values().all(|v| v.len() == 1));
    assert!(got.keys().all(|k| !k.contains("gone")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_opportunistic_tls_with_any_certificate() {
    let dns = Dns::start(&[
        mx("tls.test", "mx.tls.test", 10),
        a("mx.tls.test", "127.0.0.2"),
    ]);
    let cfg = || SinkConfig {
        tls: Some(crate::tls::self_signed()),
        ..Default::default()
    };
    let (s2, _s3, port) = two_sinks(cfg).await;
    let f = Fixture::new();
    let all = addrs("u", "tls.test", 3);
    f.write("list.csv", csv_list(&all));
    let s = f.campaign("tls", &campaign_toml("tls", dns.addr, port, ""));
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("send");
    assert_eq!(summary.exit_code(), 0);
    assert_exactly_once(&s2, &all);
    // The self-signed certificate names 127.0.0.1, not mx.tls.test: encrypted anyway.
    assert!(s2.received().iter().all(|r| r.tls));
    assert!(accounting(&f, "tls").iter().all(|l| l["tls"] == true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_a_421_backs_off_that_domain_and_the_others_go_on() {
    let dns = Dns::start(&[
        mx("slow.test", "mx.slow.test", 10),
        a("mx.slow.test", "127.0.0.2"),
        mx("fast.test", "mx.fast.test", 10),
        a("mx.fast.test", "127.0.0.3"),
    ]);
    // Only .2 answers slow.test's first RCPT with 421 and closes; .3 never does.
    let (s2, s3, port) = two_sinks(|| SinkConfig {
        rules: vec![blast::sink::Rule {
            times: Some(1),
            ..blast::sink::Rule::new("*@slow.test", blast::sink::Action::Reply421AtRcpt)
        }],
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let slow = addrs("u", "slow.test", 4);
    let fast = addrs("u", "fast.test", 4);
    let all: Vec<String> = slow.iter().chain(&fast).cloned().collect();
    f.write("list.csv", csv_list(&all));
    let s = f.campaign("four21", &campaign_toml("four21", dns.addr, port, ""));
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("send");
    assert_eq!(summary.exit_code(), 0, "{:?}", records(&s));
    assert_exactly_once(&s2, &slow);
    assert_exactly_once(&s3, &fast);
    // The 421 is in the accounting file, and the retry after it spent no attempt.
    let lines = accounting(&f, "four21");
    assert!(
        lines
            .iter()
            .any(|l| l["reply"].as_str().unwrap().contains("421")),
        "{lines:#?}"
    );
    for r in records(&s).values() {
        assert_eq!((r.state, r.attempts), (State::Sent, 1), "{}", r.address);
    }
}
