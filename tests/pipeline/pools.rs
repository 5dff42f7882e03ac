//! Pools (issue 16, item 1): three sinks as three relays, one killed mid-run; two source IPs
//! (127.0.0.2 and 127.0.0.3) whose recipients stick to their hash's IP and whose per-domain
//! rate holds per IP; the pool keys' config errors.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use blast::sink::{Action, Rule, SinkConfig};
use blast::store::record::State;

use super::*;

/// `campaign_toml` with `transport = …` replaced by `replacement` (a pool's keys).
fn pool_campaign(
    id: &str,
    relay: SocketAddr,
    lists: &[&str],
    lane: &str,
    replacement: &str,
) -> String {
    campaign_toml(id, relay, lists, lane)
        .replace(&format!("transport = \"smtp://{relay}\""), replacement)
}

/// Each recipient's receptions over every sink.
fn receptions(sinks: &[&blast::sink::SinkHandle]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in sinks {
        for r in s.received() {
            for to in &r.rcpt_to {
                *m.entry(to.to_ascii_lowercase()).or_insert(0) += 1;
            }
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_one_killed_mid_run_the_others_carry_its_share() {
    let f = Fixture::new();
    let mut all = Vec::new();
    for d in 0..20 {
        all.extend(addrs("u", &format!("d{d}.test"), 150));
    }
    f.write("l.csv", csv_list(&all));
    let sinks = [
        start_sink(vec![]).await,
        start_sink(vec![]).await,
        start_sink(vec![]).await,
    ];
    let urls: Vec<String> = sinks
        .iter()
        .map(|s| format!("\"smtp://{}\"", s.addr))
        .collect();
    // A global rate long enough for the kill to land mid-run (3,000 at 1,500/s: ~2 s).
    let toml = pool_campaign(
        "relays",
        sinks[0].addr,
        &["l.csv"],
        "connections = 6\nper_domain_connections = 6\nrate = \"1500/s\"\n",
        &format!(
            "relays = [{}, {{ url = {}, weight = 1 }}]",
            urls[..2].join(", "),
            urls[2]
        ),
    );
    let s = f.campaign("relays", &toml);
    assert_eq!(s.lane.relays.len(), 3);
    let run = tokio::spawn({
        let s = s.clone();
        async move { send(&s).await }
    });
    // Kill the second relay once a fifth of the list is through (bounded wait).
    let t0 = Instant::now();
    while sinks.iter().map(|s| s.count()).sum::<usize>() < all.len() / 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the send never got going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = [sinks[0].count(), sinks[1].count(), sinks[2].count()];
    sinks[1].kill();
    let summary = run.await.expect("send task").expect("send");
    assert_eq!(
        summary.exit_code(),
        0,
        "{:?} {:?}",
        summary.fatal,
        summary.stalled
    );
    assert_eq!(summary.counts.get(State::Sent), all.len() as u64);

    let got = receptions(&[&sinks[0], &sinks[1], &sinks[2]]);
    let missing: Vec<_> = all.iter().filter(|a| !got.contains_key(*a)).collect();
    assert!(
        missing.is_empty(),
        "never delivered: {:?}",
        &missing[..missing.len().min(5)]
    );
    let dups: usize = got.values().map(|n| n - 1).sum();
    assert!(
        dups as u64 <= summary.ambiguous_resends,
        "{dups} duplicates but only {} counted lost-reply resends",
        summary.ambiguous_resends
    );
    let after = [sinks[0].count(), sinks[1].count(), sinks[2].count()];
    assert!(
        before.iter().all(|n| *n > 0),
        "every relay carried mail before the kill: {before:?}"
    );
    assert!(after[1] == sinks[1].received().len() && after[1] < all.len() / 2);
    // The survivors took the dead relay's share: between them the rest of the list. The dead
    // relay's own count is taken after the kill: it may still have accepted a message or two
    // between the snapshot above and the kill.
    let survivors = (after[0] - before[0]) + (after[2] - before[2]);
    assert!(
        survivors + before[0] + before[2] + after[1] >= all.len(),
        "before {before:?}, after {after:?}"
    );
    assert!(
        after[0] > before[0] && after[2] > before[2],
        "{before:?} → {after:?}"
    );
    // `blast status --json` reports the count.
    let store = blast::store::campaign::CampaignStore::open(
        &blast::send::store_dir(&s),
        Duration::from_secs(10),
    )
    .unwrap();
    let g = blast::report::gather::gather(&s, &store).unwrap();
    assert_eq!(
        g.json(&s.id)["ambiguous_resends"],
        summary.ambiguous_resends
    );
}

/// The pool member a recipient's address hashes to, as the README documents it.
fn hashed_ip(addr: &str, ips: &[(&str, u32)]) -> IpAddr {
    let members: Vec<(String, u32)> = ips.iter().map(|(i, w)| (i.to_string(), *w)).collect();
    ips[blast::lane::pool::pick(&addr.to_ascii_lowercase(), &members)]
        .0
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_source_ips_each_recipient_from_its_hash_ip_and_the_domain_rate_per_ip() {
    let f = Fixture::new();
    let mut all = addrs("a", "one.test", 60);
    all.extend(addrs("b", "two.test", 60));
    f.write("l.csv", csv_list(&all));
    // The first attempt of a few recipients is refused with a 451: their retry must leave
    // from the same IP.
    let retried: Vec<String> = all.iter().step_by(10).cloned().collect();
    let rules = retried
        .iter()
        .map(|a| Rule {
            times: Some(1),
            ..Rule::new(a.clone(), Action::RcptReply(451, "4.3.0 try again".into()))
        })
        .collect();
    let sink = start_sink_with(SinkConfig {
        rules,
        ..Default::default()
    })
    .await;
    let rate = 10.0;
    let toml = pool_campaign(
        "ips",
        sink.addr,
        &["l.csv"],
        "connections = 4\n[lane.per_domain]\ndefault = \"10/s\"\n",
        "transport = \"smtp://SINK\"\nsource_ips = [{ ip = \"127.0.0.2\", helo = \"m1.blast.test\" }, { ip = \"127.0.0.3\", helo = \"m2.blast.test\", egress_ip = \"203.0.113.26\" }]"
            .replace("SINK", &sink.addr.to_string())
            .as_str(),
    );
    let s = f.campaign("ips", &toml);
    assert_eq!(s.lane.source_ips.len(), 2);
    let summary = send_ok(&s).await;
    assert_eq!(
        summary.exit_code(),
        0,
        "{:?} {:?}",
        summary.fatal,
        summary.stalled
    );
    assert_exactly_once(&sink, &all);

    let ips = [("127.0.0.2", 1), ("127.0.0.3", 1)];
    let mut seen = HashSet::new();
    let mut per_pair: HashMap<(String, IpAddr), Vec<Instant>> = HashMap::new();
    for r in sink.received() {
        let peer = r.peer.expect("the sink records the client").ip();
        seen.insert(peer);
        let to = r.rcpt_to[0].to_ascii_lowercase();
        assert_eq!(peer, hashed_ip(&to, &ips), "{to} left from the wrong IP");
        let domain = to.split('@').nth(1).unwrap().to_string();
        per_pair.entry((domain, peer)).or_default().push(r.at);
    }
    assert_eq!(
        seen.len(),
        2,
        "the sink saw both client addresses: {seen:?}"
    );
    for a in &retried {
        assert_eq!(sink.attempts(a), 2, "{a} was retried once");
    }
    // Per (domain, IP): never much above 10/s in any 1-second window of the sink's times,
    // and the pair's messages spread as the rate says. Generous tolerances: shared machine.
    for ((d, ip), mut at) in per_pair.clone() {
        at.sort();
        for (i, t) in at.iter().enumerate() {
            let in_window = at[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            assert!(
                in_window <= rate as usize + 3,
                "{d} from {ip}: {in_window} in one second"
            );
        }
        let span = at.last().unwrap().duration_since(at[0]).as_secs_f64();
        let want = (at.len() - 1) as f64 / rate;
        assert!(
            span >= want * 0.7,
            "{d} from {ip}: {} messages in {span:.2}s",
            at.len()
        );
    }
    // Per IP, not per domain: the domain as a whole went faster than one IP's rate.
    for d in ["one.test", "two.test"] {
        let mut at: Vec<Instant> = per_pair
            .iter()
            .filter(|((dd, _), _)| dd == d)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        at.sort();
        let span = at.last().unwrap().duration_since(at[0]).as_secs_f64();
        assert!(
            span < (at.len() - 1) as f64 / rate * 0.85,
            "{d}: {} messages in {span:.2}s: the rate was not per IP",
            at.len()
        );
    }
    // A second run (resume) sends nothing again, and the hash does not depend on the run.
    let again = send_ok(&s).await;
    assert_eq!(again.sent_this_run, 0);
}

#[test]
fn pool_config_errors_name_file_line_and_key() {
    let f = Fixture::new();
    f.write("l.csv", csv_list(&addrs("u", "x.test", 1)));
    let relay: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    let cases = [
        (
            "source_ip = \"127.0.0.2\"\nsource_ips = [{ ip = \"127.0.0.3\" }]\n",
            "lane.source_ip: set source_ip or source_ips, not both",
        ),
        ("source_ips = []\n", "lane.source_ips: an empty pool"),
        (
            "source_ips = [{ ip = \"127.0.0.2\", weight = 0 }]\n",
            "lane.source_ips[0].weight: bad weight 0",
        ),
        (
            "source_ips = [{ ip = \"127.0.0.2\" }, { ip = \"127.0.0.2\" }]\n",
            "lane.source_ips[1].ip: 127.0.0.2 is listed twice",
        ),
        (
            "source_ips = [{ ip = \"nope\" }]\n",
            "lane.source_ips[0].ip: not an IP address",
        ),
        (
            "relays = [\"smtp://127.0.0.1:1\"]\n",
            "lane.relays: set transport or relays, not both",
        ),
    ];
    for (i, (lane, want)) in cases.iter().enumerate() {
        let toml = campaign_toml("c", relay, &["l.csv"], lane);
        let p = f.write(&format!("c{i}.toml"), &toml);
        let e = blast::config::load(&p).unwrap_err().to_string();
        let line = toml
            .lines()
            .position(|l| lane.lines().next().is_some_and(|f| l == f))
            .unwrap()
            + 1;
        assert!(
            e.contains(&format!("c{i}.toml:{line}: {want}")),
            "{e}\nwanted line {line}: {want}"
        );
    }
    // Relays without transport: an empty pool, a bad weight.
    for (i, (lane, want)) in [
        ("relays = []\n", "lane.relays: an empty pool"),
        (
            "relays = [{ url = \"smtp://127.0.0.1:1\", weight = -2 }]\n",
            "lane.relays[0].weight: bad weight -2",
        ),
        (
            "relays = [\"mx\"]\n",
            "lane.relays[0]: a relay pool lists SMTP relays",
        ),
    ]
    .iter()
    .enumerate()
    {
        let toml = pool_campaign("c", relay, &["l.csv"], "", lane.trim_end());
        let p = f.write(&format!("r{i}.toml"), &toml);
        let e = blast::config::load(&p).unwrap_err().to_string();
        let line = toml.lines().position(|l| l.starts_with("relays")).unwrap() + 1;
        assert!(
            e.contains(&format!("r{i}.toml:{line}: {want}")),
            "{e}\nwanted line {line}: {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_not_on_this_machine_is_taken_out_and_its_recipients_wait() {
    let f = Fixture::new();
    let all = addrs("u", "x.test", 40);
    f.write("l.csv", csv_list(&all));
    let sink = start_sink(vec![]).await;
    // 192.0.2.1 (TEST-NET-1) is on no interface here: binding it fails with EADDRNOTAVAIL.
    let toml = pool_campaign(
        "gone",
        sink.addr,
        &["l.csv"],
        "",
        &format!(
            "transport = \"smtp://{}\"\nsource_ips = [{{ ip = \"127.0.0.2\" }}, {{ ip = \"192.0.2.1\" }}]",
            sink.addr
        ),
    )
    .replace("wait_for_retries = \"30s\"", "wait_for_retries = \"2s\"");
    let s = f.campaign("gone", &toml);
    let summary = send(&s).await.expect("send");
    let ips = [("127.0.0.2", 1), ("192.0.2.1", 1)];
    let (here, away): (Vec<&String>, Vec<&String>) = all
        .iter()
        .partition(|a| hashed_ip(a, &ips) == "127.0.0.2".parse::<IpAddr>().unwrap());
    assert!(!here.is_empty() && !away.is_empty());
    assert_exactly_once(
        &sink,
        &here.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    // Never moved to the other IP: still pending, nothing spent; exit 75, resumable.
    assert_eq!(summary.exit_code(), 75, "{:?}", summary.fatal);
    assert!(
        summary
            .stalled
            .as_deref()
            .unwrap_or("")
            .contains("192.0.2.1"),
        "{:?}",
        summary.stalled
    );
    let recs = records(&s);
    for a in &away {
        let r = &recs[*a];
        assert_eq!((r.state, r.attempts), (State::Pending, 0), "{a}: {r:?}");
    }
}
