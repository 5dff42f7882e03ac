//! Warm-up (issue 16, item 2): daily caps per source IP held across runs, days and campaigns,
//! with the calendar moved by `BLAST_NOW` (the injected clock; `blast send` runs as a child
//! process so each run reads its own). A real SMTP sink on 127.0.0.1:0, real stores.

use std::process::Output;
use std::time::Duration;

use blast::sink::{Action, Rule, SinkConfig};
use tokio::process::Command;

use crate::pipeline::{addrs, campaign_toml, csv_list, start_sink, start_sink_with, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_blast");
const DAY1: &str = "2026-12-01T10:00:00Z";
const DAY1_LATER: &str = "2026-12-01T15:00:00Z";
const DAY2: &str = "2026-12-02T09:00:00Z";

/// Runs `blast ARGS` in the fixture with the clock at `now`.
async fn blast_at(f: &Fixture, now: &str, args: &[&str]) -> Output {
    let fut = Command::new(BIN)
        .args(args)
        .current_dir(f.dir.path())
        .env("BLAST_NOW", now)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .expect("blast finished in time")
        .expect("blast ran")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `blast send NAME.toml --quiet` at `now`; returns (exit code, stderr).
async fn send_at(f: &Fixture, name: &str, now: &str) -> (i32, String) {
    let o = blast_at(f, now, &["send", &format!("{name}.toml"), "--quiet"]).await;
    (o.status.code().unwrap_or(-1), stderr(&o))
}

fn settings(f: &Fixture, id: &str) -> blast::config::Settings {
    blast::config::load(&f.path(&format!("{id}.toml"))).expect("campaign loads")
}

/// Writes campaign `id` with a list `id.csv` of `list` and extra `[lane]` keys.
fn campaign(f: &Fixture, id: &str, relay: std::net::SocketAddr, list: &[String], lane: &str) {
    f.write(&format!("{id}.csv"), csv_list(list));
    f.write(
        &format!("{id}.toml"),
        campaign_toml(id, relay, &[&format!("{id}.csv")], lane),
    );
}

/// 120 recipients over four domains.
fn list120() -> Vec<String> {
    ["a.test", "b.test", "c.test", "d.test"]
        .iter()
        .flat_map(|d| addrs("u", d, 30))
        .collect()
}

const SCHEDULE: &str = "warmup = [\"50/d\", \"100/d\", \"500/d\"]\nwarmup_start = \"2026-12-01\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_cap_holds_across_runs_and_the_next_day_sends_the_rest() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let list = list120();
    campaign(&f, "w", sink.addr, &list, SCHEDULE);

    let (code, err) = send_at(&f, "w", DAY1).await;
    assert_eq!(code, 75, "the rest waits for tomorrow: exit 75\n{err}");
    assert_eq!(sink.count(), 50, "day 1 sends exactly the cap\n{err}");
    assert!(
        err.contains("warm-up: default all: 0/50 today (sending day 1 of 3)"),
        "up front:\n{err}"
    );
    assert!(
        err.contains("70 recipients deferred to the next sending day (2026-12-02 00:00:00 UTC)"),
        "summary:\n{err}"
    );
    let held: Vec<_> = crate::pipeline::records(&settings(&f, "w"))
        .into_values()
        .filter(|r| r.state == blast::store::record::State::Deferred)
        .collect();
    assert_eq!(held.len(), 70);
    assert!(held
        .iter()
        .all(|r| r.attempts == 0 && r.last_reply.contains("today's cap of 50/d")));

    // The same day again: nothing more goes.
    let (code, err) = send_at(&f, "w", DAY1_LATER).await;
    assert_eq!(code, 75, "{err}");
    assert_eq!(
        sink.count(),
        50,
        "a second run on day 1 sends nothing\n{err}"
    );

    let o = blast_at(&f, DAY1_LATER, &["status", "w.toml"]).await;
    assert!(
        stdout(&o).contains("warm-up default all: 50/50 today"),
        "{}",
        stdout(&o)
    );

    // Day 2 (cap 100): the remaining 70.
    let (code, err) = send_at(&f, "w", DAY2).await;
    assert_eq!(code, 0, "{err}");
    crate::pipeline::assert_exactly_once(&sink, &list);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_sharing_an_ip_share_its_cap() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let lane = format!("source_ip = \"127.0.0.1\"\n{SCHEDULE}");
    campaign(&f, "one", sink.addr, &addrs("one", "a.test", 40), &lane);
    campaign(&f, "two", sink.addr, &addrs("two", "b.test", 40), &lane);
    let (c1, e1) = send_at(&f, "one", DAY1).await;
    assert_eq!((c1, sink.count()), (0, 40), "{e1}");
    let (c2, e2) = send_at(&f, "two", DAY1).await;
    assert_eq!(c2, 75, "{e2}");
    assert_eq!(
        sink.count(),
        50,
        "the second campaign gets what the first left\n{e2}"
    );
    assert!(e2.contains("warm-up: 127.0.0.1 all: 40/50 today"), "{e2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_holds_the_cap_after_a_day_of_bounces() {
    // A quarter of the list is unknown users: day 1's bounce share is about 25%.
    let list: Vec<String> = addrs("u", "a.test", 200);
    let bad: Vec<Rule> = list
        .iter()
        .step_by(4)
        .map(|a| {
            Rule::new(
                a.clone(),
                Action::RcptReply(550, "5.1.1 no such user".into()),
            )
        })
        .collect();
    let sink = start_sink_with(SinkConfig {
        rules: bad,
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let lane = format!("{SCHEDULE}warmup_brake = {{ bounce_rate = 0.05 }}\n");
    campaign(&f, "b", sink.addr, &list, &lane);
    let attempted = |f: &Fixture| {
        crate::pipeline::records(&settings(f, "b"))
            .values()
            .filter(|r| r.attempts > 0)
            .count()
    };
    let (code, err) = send_at(&f, "b", DAY1).await;
    assert_eq!((code, attempted(&f)), (75, 50), "{err}");
    let (code, err) = send_at(&f, "b", DAY2).await;
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("held by the brake"), "{err}");
    assert_eq!(
        attempted(&f),
        100,
        "day 2 held at 50, not raised to 100\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_warms_up_on_its_own_schedule() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let mut list = addrs("g", "gmail.test", 30);
    list.extend(addrs("o", "other.test", 30));
    let lane = "warmup = [\"20/d\"]\nwarmup_start = \"2026-12-01\"\n\
                [lane.warmup_providers]\ngoogle = [\"10/d\", \"20/d\"]\n\
                [lane.providers.google]\ndomains = [\"gmail.test\"]\n";
    campaign(&f, "p", sink.addr, &list, lane);
    let (code, err) = send_at(&f, "p", DAY1).await;
    assert_eq!(code, 75, "{err}");
    let got = crate::pipeline::by_rcpt(&sink);
    let gmail = got.keys().filter(|k| k.ends_with("@gmail.test")).count();
    let other = got.keys().filter(|k| k.ends_with("@other.test")).count();
    assert_eq!((gmail, other), (10, 20), "{err}");
    assert!(err.contains("warm-up: default google: 0/10 today"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_file_line_and_key() {
    let f = Fixture::new();
    let relay: std::net::SocketAddr = "127.0.0.1:2525".parse().unwrap();
    let cases = [
        ("warmup = [\"50/h\"]\nwarmup_start = \"2026-12-01\"\n", "lane.warmup[0]", "per day"),
        ("warmup = [\"50/d\"]\n", "lane.warmup_start", "needs its first day"),
        ("warmup = [\"50/d\"]\nwarmup_start = \"1st of December\"\n", "lane.warmup_start", "not a date"),
        ("warmup = [\"500/d\", \"50/d\"]\nwarmup_start = \"2026-12-01\"\n", "lane.warmup[1]", "never lowers"),
        ("warmup_start = \"2026-12-01\"\n", "lane.warmup_start", "without a schedule"),
        ("warmup = [\"50/d\"]\nwarmup_start = \"2026-12-01\"\nwarmup_brake = { bounce_rate = 5 }\n", "lane.warmup_brake.bounce_rate", "between 0 and 1"),
        ("warmup_start = \"2026-12-01\"\n[lane.warmup_providers]\ngmail = [\"10/d\"]\n", "lane.warmup_providers.gmail", "no provider rollup \"gmail\""),
    ];
    for (lane, key, why) in cases {
        let p = f.write("bad.toml", campaign_toml("bad", relay, &["x.csv"], lane));
        let e = blast::config::load(&p).unwrap_err().to_string();
        let file = p.display().to_string();
        assert!(
            e.contains(&format!("{file}:")) && e.contains(&format!(": {key}: ")) && e.contains(why),
            "{lane}\n→ {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_expected_finish_date() {
    let f = Fixture::new();
    let relay: std::net::SocketAddr = "127.0.0.1:2525".parse().unwrap();
    campaign(&f, "c", relay, &list120(), SCHEDULE);
    let o = blast_at(&f, DAY1, &["check", "c.toml"]).await;
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        out.contains("warm-up: default all: 120 recipients, expected to finish on 2026-12-02"),
        "{out}"
    );
}

/// `kill -9` in the middle of a day's sending (a slow sink keeps messages in flight), then a
/// rerun the same day: the day never delivers more than its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_never_lets_the_day_exceed_its_cap() {
    let sink = start_sink_with(SinkConfig {
        rules: vec![Rule::new("*", Action::Delay(Duration::from_millis(150)))],
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let lane = "connections = 4\nwarmup = [\"30/d\"]\nwarmup_start = \"2026-12-01\"\n";
    campaign(&f, "k", sink.addr, &addrs("u", "a.test", 100), lane);
    let mut child = std::process::Command::new(BIN)
        .args(["send", "k.toml", "--quiet"])
        .current_dir(f.dir.path())
        .env("BLAST_NOW", DAY1)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while sink.count() < 8 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        sink.count() >= 8 && sink.count() < 30,
        "killed mid-run: {}",
        sink.count()
    );
    let (code, err) = send_at(&f, "k", DAY1_LATER).await;
    assert_eq!(code, 75, "{err}");
    assert!(
        sink.count() <= 30,
        "{} delivered on a 30/d day\n{err}",
        sink.count()
    );
}

/// While `blast serve` owns the global state, the counters go through its control socket:
/// two campaigns sent with `--config blast.toml` share the cap, and neither campaign's own
/// state dir holds a global store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_serve_the_cap_is_shared_too() {
    use crate::serve::{free_port, term, Setup};
    let sink = start_sink(vec![]).await;
    let setup = Setup::new(free_port());
    let (serve, _) = tokio::task::block_in_place(|| setup.spawn_first_line());
    let f = Fixture::new();
    campaign(&f, "one", sink.addr, &addrs("one", "a.test", 40), SCHEDULE);
    campaign(&f, "two", sink.addr, &addrs("two", "b.test", 40), SCHEDULE);
    let cfg = setup.config().display().to_string();
    for (name, code, total) in [("one", 0, 40), ("two", 75, 50)] {
        let o = blast_at(
            &f,
            DAY1,
            &["send", &format!("{name}.toml"), "--quiet", "--config", &cfg],
        )
        .await;
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert_eq!(sink.count(), total, "{}", stderr(&o));
    }
    assert!(
        !f.path("state/suppression").exists(),
        "the counts live in serve's state"
    );
    assert_eq!(term(serve).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ip_of_a_pool_warms_on_its_own_count() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let list = list120();
    let lane = "warmup = [\"20/d\", \"100/d\"]\nwarmup_start = \"2026-12-01\"\n\
                source_ips = [{ ip = \"127.0.0.2\" }, { ip = \"127.0.0.3\", egress_ip = \"203.0.113.26\" }]\n";
    campaign(&f, "p", sink.addr, &list, lane);
    let (code, err) = send_at(&f, "p", DAY1).await;
    assert_eq!(code, 75, "each IP's rest waits for tomorrow\n{err}");
    for ip in ["127.0.0.2", "203.0.113.26"] {
        assert!(
            err.contains(&format!(
                "warm-up: {ip} all: 0/20 today (sending day 1 of 2)"
            )),
            "one line per IP up front:\n{err}"
        );
    }
    // Counted per IP (by the address receivers see), each recipient from its hash's IP.
    let members = [("127.0.0.2".to_string(), 1), ("127.0.0.3".to_string(), 1)];
    let mut per_ip: std::collections::HashMap<String, usize> = Default::default();
    for r in sink.received() {
        let peer = r
            .peer
            .expect("the sink records the client")
            .ip()
            .to_string();
        let to = r.rcpt_to[0].to_ascii_lowercase();
        assert_eq!(
            peer,
            members[blast::lane::pool::pick(&to, &members)].0,
            "{to} left from the wrong IP"
        );
        *per_ip.entry(peer).or_default() += 1;
    }
    assert_eq!(per_ip.get("127.0.0.2"), Some(&20), "{per_ip:?}\n{err}");
    assert_eq!(per_ip.get("127.0.0.3"), Some(&20), "{per_ip:?}\n{err}");

    let o = blast_at(&f, DAY1_LATER, &["status", "p.toml"]).await;
    for ip in ["127.0.0.2", "203.0.113.26"] {
        assert!(
            stdout(&o).contains(&format!("warm-up {ip} all: 20/20 today")),
            "{}",
            stdout(&o)
        );
    }
    let o = blast_at(&f, DAY1_LATER, &["check", "p.toml"]).await;
    let said = format!("{}{}", stdout(&o), stderr(&o));
    // Each IP's share of the list by the pool's hash, and its own finish date.
    let share = |ip: &str| {
        list.iter()
            .filter(|a| members[blast::lane::pool::pick(a, &members)].0 == ip)
            .count()
    };
    for (ip, key) in [("127.0.0.2", "127.0.0.2"), ("203.0.113.26", "127.0.0.3")] {
        assert!(
            said.contains(&format!(
                "warm-up: {ip} all: {} recipients, expected to finish on 2026-12-02",
                share(key)
            )),
            "check prints a finish date per IP:\n{said}"
        );
    }

    // Day 2 (100 each): the rest.
    let (code, err) = send_at(&f, "p", DAY2).await;
    assert_eq!(code, 0, "{err}");
    crate::pipeline::assert_exactly_once(&sink, &list);
}
