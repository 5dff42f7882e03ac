//! Faults at the relay: 4xx retried, 5.1.1 bounced and suppressed, 5.7.x bounced but not
//! suppressed, dropped connections, a relay without PIPELINING, a relay that is not there, a
//! strict relay (SIZE, no SMTPUTF8, PIPELINING on and off: refused locally, never sent).

use blast::sink::Action;
use blast::store::record::State;

use super::*;

fn rule(pattern: &str, action: Action, times: Option<u32>) -> Rule {
    Rule {
        times,
        ..Rule::new(pattern, action)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_4xx_are_retried_and_delivered_once() {
    let rcpt_450 = ["grey0@t.example", "grey1@t.example", "grey2@t.example"];
    let data_451 = ["later0@t.example", "later1@t.example"];
    let mut rules = Vec::new();
    for a in rcpt_450 {
        rules.push(rule(
            a,
            Action::RcptReply(450, "4.2.0 greylisted, try again".into()),
            Some(1),
        ));
    }
    for a in data_451 {
        rules.push(rule(
            a,
            Action::DataReply(451, "4.3.0 try later".into()),
            Some(1),
        ));
    }
    let sink = start_sink(rules).await;
    let f = Fixture::new();
    let mut list = addrs("ok", "t.example", 40);
    list.extend(rcpt_450.iter().chain(&data_451).map(|a| a.to_string()));
    f.write("list.csv", csv_list(&list));
    let s = f.campaign("t2", &campaign_toml("t2", sink.addr, &["list.csv"], ""));
    let summary = send_ok(&s).await;
    eprintln!(
        "4xx: {:?} in {:.2?}",
        summary.counts.by_state, summary.elapsed
    );

    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.counts.get(State::Sent), list.len() as u64);
    assert_exactly_once(&sink, &list);
    let recs = records(&s);
    for a in rcpt_450.iter().chain(&data_451) {
        assert!(
            sink.attempts(a) >= 2,
            "{a}: {} RCPT attempts",
            sink.attempts(a)
        );
        let r = &recs[*a];
        assert_eq!(r.state, State::Sent, "{a}: {r:?}");
        assert!(r.attempts >= 2, "{a}: record says {} attempts", r.attempts);
    }
    for a in &list[..40] {
        assert_eq!(
            sink.attempts(a),
            1,
            "{a} was not faulted and must be tried once"
        );
    }
    assert_eq!(violations(&sink), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_unknown_bounces_once_and_is_suppressed_for_the_next_campaign() {
    let bad = "nobody@t.example";
    let sink = start_sink(vec![rule(
        bad,
        Action::RcptReply(550, "5.1.1 no such user".into()),
        None,
    )])
    .await;
    let f = Fixture::new();
    let mut list = addrs("ok", "t.example", 20);
    list.push(bad.to_string());
    f.write("list.csv", csv_list(&list));

    let s = f.campaign("t3a", &campaign_toml("t3a", sink.addr, &["list.csv"], ""));
    let summary = send_ok(&s).await;
    eprintln!(
        "5.1.1: {:?}, suppressed {}",
        summary.counts.by_state, summary.suppressed
    );
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.counts.get(State::Bounced), 1);
    assert_eq!(summary.counts.get(State::Sent), 20);
    assert_eq!(summary.suppressed, 1);
    assert_eq!(sink.attempts(bad), 1, "a 5.1.1 must not be retried");
    let rec = &records(&s)[bad];
    assert_eq!(rec.state, State::Bounced);
    assert!(rec.last_reply.contains("5.1.1"), "{rec:?}");
    assert_exactly_once(&sink, &list[..20]);

    // A second campaign in the same state dir: the address is skipped, never sent to again.
    let s2 = f.campaign("t3b", &campaign_toml("t3b", sink.addr, &["list.csv"], ""));
    let summary2 = send_ok(&s2).await;
    eprintln!("second campaign: {:?}", summary2.counts.by_state);
    assert_eq!(summary2.exit_code(), 0, "{summary2:?}");
    let rec2 = &records(&s2)[bad];
    assert_eq!(rec2.state, State::Skipped, "{rec2:?}");
    assert_eq!(
        sink.attempts(bad),
        1,
        "a suppressed address reached the relay again"
    );
    assert_eq!(summary2.counts.get(State::Sent), 20);
    assert_eq!(
        summary2.pruned.1.get("suppressed"),
        Some(&1),
        "{:?}",
        summary2.pruned
    );
    for a in &list[..20] {
        assert_eq!(
            by_rcpt(&sink)[a.as_str()].len(),
            2,
            "{a}: once per campaign"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_level_5xx_bounce_without_suppression_and_warn_the_domain() {
    let listed = "listed@t.example";
    let sink = start_sink(vec![
        rule(
            listed,
            Action::RcptReply(550, "5.7.1 your IP is on a blocklist".into()),
            None,
        ),
        rule(
            "*@dmarc.example",
            Action::DataReply(
                550,
                "5.7.26 unauthenticated email from acme.example is not accepted due to DMARC"
                    .into(),
            ),
            None,
        ),
    ])
    .await;
    let f = Fixture::new();
    let ok = addrs("ok", "t.example", 10);
    let dmarc = addrs("m", "dmarc.example", 5);
    let mut list = ok.clone();
    list.push(listed.to_string());
    list.extend(dmarc.iter().cloned());
    f.write("list.csv", csv_list(&list));

    let s = f.campaign("t4a", &campaign_toml("t4a", sink.addr, &["list.csv"], ""));
    let summary = send_ok(&s).await;
    eprintln!(
        "5.7.x: {:?}, warnings {:?}",
        summary.counts.by_state, summary.warnings
    );
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.counts.get(State::Bounced), 6);
    assert_eq!(summary.counts.get(State::Sent), 10);
    assert_eq!(summary.suppressed, 0, "5.7.x is not about the address");
    let (n, reply) = summary
        .warnings
        .get("dmarc.example")
        .unwrap_or_else(|| panic!("no warning for dmarc.example: {:?}", summary.warnings));
    assert_eq!(*n, 5);
    assert!(reply.contains("5.7.26"), "{reply}");
    assert!(
        summary.warnings.contains_key("t.example"),
        "{:?}",
        summary.warnings
    );
    let recs = records(&s);
    for a in dmarc.iter().chain([&listed.to_string()]) {
        assert_eq!(recs[a].state, State::Bounced, "{a}");
        assert_eq!(
            sink.attempts(a),
            1,
            "{a}: a permanent failure must not be retried"
        );
    }

    // Not suppressed: a second campaign (same state dir, a relay that now accepts) sends to them.
    let sink2 = start_sink(vec![]).await;
    let s2 = f.campaign("t4b", &campaign_toml("t4b", sink2.addr, &["list.csv"], ""));
    let summary2 = send_ok(&s2).await;
    assert_eq!(summary2.exit_code(), 0, "{summary2:?}");
    assert_eq!(
        summary2.counts.get(State::Sent),
        list.len() as u64,
        "{:?}",
        summary2.counts
    );
    assert_exactly_once(&sink2, &list);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing() {
    let mid = [
        "mid0@t.example",
        "mid1@t.example",
        "mid2@t.example",
        "mid3@u.example",
    ];
    let after = "after@t.example";
    let mut rules: Vec<Rule> = mid
        .iter()
        .map(|a| rule(a, Action::DropMidData, Some(1)))
        .collect();
    rules.push(rule(after, Action::DropAfterData, Some(1)));
    let sink = start_sink(rules).await;
    let f = Fixture::new();
    let mut list = addrs("ok", "t.example", 60);
    list.extend(addrs("ok", "u.example", 60));
    list.extend(mid.iter().map(|a| a.to_string()));
    list.push(after.to_string());
    f.write("list.csv", csv_list(&list));
    let s = f.campaign(
        "t5",
        &campaign_toml("t5", sink.addr, &["list.csv"], "connections = 4\n"),
    );
    let summary = send_ok(&s).await;

    let got = by_rcpt(&sink);
    let after_copies = got.get(after).map_or(0, Vec::len);
    eprintln!(
        "drops: {:?}; {} connections; {after} received {after_copies}× (ambiguous: the sink took \
         the message but the reply was lost); RCPT attempts mid-data {:?}, after-data {}",
        summary.counts.by_state,
        sink.connections(),
        mid.iter().map(|a| sink.attempts(a)).collect::<Vec<_>>(),
        sink.attempts(after),
    );
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.counts.get(State::Sent), list.len() as u64);
    // Everything but the ambiguous one exactly once.
    let others: Vec<String> = list.iter().filter(|a| *a != after).cloned().collect();
    for a in &others {
        assert_eq!(got.get(a.as_str()).map_or(0, Vec::len), 1, "{a}");
    }
    assert_eq!(got.len(), list.len());
    assert!(
        (1..=2).contains(&after_copies),
        "{after}: {after_copies} copies"
    );
    for a in mid {
        assert!(
            sink.attempts(a) >= 2,
            "{a} was dropped mid-DATA, so it needs a second try"
        );
    }
    assert!(
        sink.connections() > mid.len(),
        "each drop closes the connection, so retries need new ones ({} connections)",
        sink.connections()
    );
    assert_eq!(violations(&sink), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_without_pipelining_gets_every_message_once() {
    let grey = "grey@t.example";
    let bad = "bad@t.example";
    let sink = start_sink_with(SinkConfig {
        pipelining: false,
        rules: vec![
            rule(
                grey,
                Action::RcptReply(450, "4.2.0 greylisted".into()),
                Some(1),
            ),
            rule(
                bad,
                Action::RcptReply(550, "5.1.1 no such user".into()),
                None,
            ),
        ],
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let mut list = addrs("ok", "t.example", 100);
    list.extend(addrs("ok", "u.example", 100));
    list.push(grey.to_string());
    list.push(bad.to_string());
    f.write("list.csv", csv_list(&list));
    let s = f.campaign("t12", &campaign_toml("t12", sink.addr, &["list.csv"], ""));
    let summary = send_ok(&s).await;
    eprintln!(
        "no pipelining: {:?}, {} connections",
        summary.counts.by_state,
        sink.connections()
    );
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.counts.get(State::Sent), list.len() as u64 - 1);
    assert_eq!(summary.counts.get(State::Bounced), 1);
    assert_exactly_once(&sink, &list[..list.len() - 1]);
    assert_eq!(sink.attempts(grey), 2);
    assert_eq!(sink.attempts(bad), 1);
    assert_eq!(violations(&sink), Vec::<String>::new());
}

/// A campaign whose relay is a port with nothing listening.
async fn unreachable_relay_run(f: &Fixture, list: &[String]) -> BTreeMap<&'static str, u64> {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    f.write("list.csv", csv_list(list));
    let s = f.campaign("t11", &campaign_toml("t11", dead, &["list.csv"], ""));
    match send(&s).await {
        Ok(sum) => {
            eprintln!(
                "unreachable: fatal {:?}, counts {:?}, exit {}",
                sum.fatal,
                sum.counts.by_state,
                sum.exit_code()
            );
            assert!(sum.fatal.is_some(), "{sum:?}");
            assert_ne!(sum.exit_code(), 0);
            assert_eq!(sum.counts.get(State::Sent), 0);
            assert_eq!(sum.sent_this_run, 0);
        }
        Err(e) => eprintln!("unreachable: error {e}"),
    }
    let recs = records(&s);
    assert_eq!(recs.len(), list.len());
    assert!(
        recs.values().all(|r| r.state != State::Sent),
        "marked sent without a relay"
    );
    let states = recs.values().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.state.name()).or_insert(0) += 1;
        m
    });
    eprintln!("states after the failed run: {states:?}");
    states
}

/// The relay comes back: rerun the same campaign against a live sink.
async fn rerun_live(f: &Fixture) -> (SinkHandle, Summary) {
    let sink = start_sink(vec![]).await;
    let s = f.campaign("t11", &campaign_toml("t11", sink.addr, &["list.csv"], ""));
    let summary = send_ok(&s).await;
    eprintln!("rerun: {:?}", summary.counts.by_state);
    (sink, summary)
}

/// Stops with `fatal` set and nothing marked sent; the rerun never duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_relay_stops_without_marking_anything_sent() {
    let f = Fixture::new();
    let list = addrs("ok", "t.example", 30);
    unreachable_relay_run(&f, &list).await;
    let (sink, summary) = rerun_live(&f).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert!(by_rcpt(&sink).values().all(|v| v.len() == 1));
    assert!(summary.counts.get(State::Sent) > 0);
}

/// The full promise: after the relay was down, a rerun delivers everyone exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_relay_then_rerun_sends_everyone_once() {
    let f = Fixture::new();
    let list = addrs("ok", "t.example", 30);
    unreachable_relay_run(&f, &list).await;
    let (sink, summary) = rerun_live(&f).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(
        summary.counts.get(State::Sent),
        list.len() as u64,
        "{:?}",
        summary.counts
    );
    assert_exactly_once(&sink, &list);
}

/// Issue 10, the blast lane's side of one SMTP transaction against a strict relay: SIZE 6000
/// advertised, no SMTPUTF8, PIPELINING on or off. A message over the relay's SIZE is refused
/// locally (`552 5.3.4 not sent…`, no RCPT on the wire), a non-ASCII recipient likewise (`553
/// 5.6.7 not sent…`; the lane is configured `smtputf8 = true` so the list imports it, but this
/// relay does not offer it); both bounce for this run without touching the suppression list,
/// and everything else is delivered exactly once, in clean wire form.
async fn strict_relay_blast_lane(pipelining: bool) {
    let sink = start_sink_with(SinkConfig {
        pipelining,
        smtputf8: false,
        max_size: 6_000,
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let ok = addrs("ok", "strict.example", 40);
    let big = "big@strict.example";
    let utf8 = "jürgen@strict.example";
    let mut csv = csv_list(&ok);
    // The code goes into both the text and the HTML part: ~2 × 8 KB > SIZE 6000.
    csv.push_str(&format!("{big},Big,{}\n", "X".repeat(8_000)));
    csv.push_str(&format!("{utf8},Jürgen,C-UTF8\n"));
    f.write("list.csv", csv);
    let id = if pipelining { "strict-p" } else { "strict-n" };
    let s = f.campaign(
        id,
        &campaign_toml(id, sink.addr, &["list.csv"], "smtputf8 = true\n"),
    );
    let summary = send_ok(&s).await;
    eprintln!(
        "strict relay (pipelining {pipelining}): {:?}, {} connections",
        summary.counts.by_state,
        sink.connections()
    );
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.counts.get(State::Sent), ok.len() as u64);
    assert_eq!(summary.counts.get(State::Bounced), 2);
    assert_eq!(
        summary.suppressed, 0,
        "a local refusal is not about the address"
    );
    let recs = records(&s);
    let r = &recs[big];
    assert_eq!(r.state, State::Bounced, "{r:?}");
    assert!(r.last_reply.starts_with("552 5.3.4 not sent"), "{r:?}");
    assert!(!r.is_address_bounce(), "{r:?}");
    let r = recs
        .values()
        .find(|r| r.address.starts_with("jürgen@"))
        .expect("the non-ASCII recipient was imported");
    assert_eq!(r.state, State::Bounced, "{r:?}");
    assert!(r.last_reply.starts_with("553 5.6.7 not sent"), "{r:?}");
    assert!(!r.is_address_bounce(), "{r:?}");
    // Refused before a word went on the wire.
    assert_eq!(sink.attempts(big), 0);
    assert_eq!(sink.attempts(utf8), 0);
    assert_exactly_once(&sink, &ok);
    assert_eq!(violations(&sink), Vec::<String>::new());
    let listed = blast::owner::Global::shared(s.suppression_state_dir())
        .list()
        .unwrap();
    assert!(listed.is_empty(), "suppressed: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_relay_with_pipelining_refuses_oversize_and_utf8_locally() {
    strict_relay_blast_lane(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_relay_without_pipelining_refuses_oversize_and_utf8_locally() {
    strict_relay_blast_lane(false).await;
}

/// The lane through the in-memory stub transport (no sockets): every recipient is handed to
/// the transport once, the stub's 5.1.1s end `bounced` and on the suppression list, the rest
/// `sent` — the lane's scheduling and the writer's suppression ordering, without SMTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_runs_through_the_stub_transport() {
    use blast::import::{self, ImportSource};
    use blast::lane::{self, Inputs, MessageSpec, Stats};
    use blast::list::prune::PruneReport;
    use blast::owner::Global;
    use blast::store::campaign::CampaignStore;
    use blast::transport::{stub::Stub, Connector};
    use std::sync::Arc;

    let f = Fixture::new();
    let mut list = addrs("ok", "stub.example", 95);
    list.extend(addrs("bad", "stub.example", 5));
    f.write("list.csv", csv_list(&list));
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let s = f.campaign("stub", &campaign_toml("stub", unused, &["list.csv"], ""));
    let (templates, reader, fields) = blast::send::load_inputs(&s).unwrap();
    let store = Arc::new(
        CampaignStore::open(
            &blast::send::store_dir(&s),
            std::time::Duration::from_secs(5),
        )
        .unwrap(),
    );
    let file_map = import::register_files(&store, &reader).unwrap();
    let mut prune = PruneReport::create(&f.path("pruned.csv")).unwrap();
    import::import(
        &s,
        &store,
        ImportSource {
            reader,
            file_map: &file_map,
            fields: &fields,
            feed: None,
        },
        &mut prune,
        None,
        &blast::lane::Stats::default(),
    )
    .unwrap();
    let stub = Arc::new(Stub::new(Box::new(|rcpt: &str| {
        if rcpt.starts_with("bad") {
            (550, "5.1.1 no such user".into())
        } else {
            (250, "2.0.0 ok".into())
        }
    })));
    let spec = Arc::new(MessageSpec::new(&s, templates, store.files().unwrap()));
    let global = Global::shared(s.suppression_state_dir());
    let report = lane::run_with(
        Connector::Stub(stub.clone()),
        &s.lane,
        Inputs {
            global: global.clone(),
            spec,
            store: store.clone(),
            shutdown: Default::default(),
            stats: Arc::new(Stats::default()),
            feed: None,
            soft_policy: Default::default(),
            fleet: None,
        },
    )
    .await
    .unwrap();
    assert!(
        report.fatal.is_none() && report.stalled.is_none(),
        "{report:?}"
    );
    assert_eq!(stub.count(), 95, "every good recipient handed over once");
    assert_eq!(report.suppressed, 5);
    let listed: Vec<String> = global.list().unwrap().into_iter().map(|(k, _)| k).collect();
    let mut bad: Vec<String> = addrs("bad", "stub.example", 5);
    bad.sort();
    assert_eq!(listed, bad);
    let c = store.counts().unwrap();
    assert_eq!((c.get(State::Sent), c.get(State::Bounced)), (95, 5));
}

/// The circuit breaker: 30% of the first recipients refused as unknown addresses stops the
/// run (exit 75, the reason printed) before the list is burnt through; a rerun with the
/// override sends the rest, and nobody is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_stops_a_bad_list_and_the_override_resumes_it() {
    let f = Fixture::new();
    let mut list = Vec::new();
    for i in 0..400 {
        // Three in ten bad, spread through the list.
        if i % 10 < 3 {
            list.push(format!("gone{i}@stale.example"));
        } else {
            list.push(format!("ok{i}@stale.example"));
        }
    }
    f.write("list.csv", csv_list(&list));
    let bad: Vec<String> = list
        .iter()
        .filter(|a| a.starts_with("gone"))
        .cloned()
        .collect();
    let sink = start_sink(user_unknown(&bad)).await;
    // One connection, so hardly anything is in flight when the breaker trips.
    let s = f.campaign(
        "stale",
        &campaign_toml("stale", sink.addr, &["list.csv"], "connections = 1\n"),
    );
    let first = send_ok(&s).await;
    assert_eq!(
        first.status(),
        blast::run_status::RunStatus::Deferred,
        "exit 75: {first:?}"
    );
    let why = first.stalled.clone().unwrap_or_default();
    assert!(
        why.contains("circuit breaker") && why.contains("--override-breaker"),
        "{why}"
    );
    let done = first.counts.get(State::Sent) + first.counts.get(State::Bounced);
    // The store hands out recipients in key order, not list order, so the bad ones may come
    // first or last: at worst all 280 good ones and then 32 bad (32 of 312 is over 10%).
    let tripped_at: u64 = why
        .split(" of the first ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {why}"));
    assert!(
        tripped_at <= 312,
        "trips as soon as the share is over: {why}"
    );
    // One connection: what was already pipelined finishes, nothing more is dispatched.
    assert!(
        done >= tripped_at && done <= tripped_at + 4,
        "stopped right after the trip, not after the whole list: {done} sent or bounced, {why}"
    );
    // The override sends the rest.
    let second = send_with(
        &s,
        SendOptions {
            override_breaker: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(second.counts.get(State::Sent), 280, "{second:?}");
    assert_eq!(second.counts.get(State::Bounced), 120);
    let good: Vec<String> = list
        .iter()
        .filter(|a| a.starts_with("ok"))
        .cloned()
        .collect();
    assert_exactly_once(&sink, &good);
}
