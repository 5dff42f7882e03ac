//! A fleet through Redis (issue 16, item 4): real `redis-server` processes started here on
//! 127.0.0.1 with a free port (no persistence: `--save "" --appendonly no`), real `blast
//! send --config` processes with their own state dirs and blast.toml each, one shared sink.
//!
//! - two machines, shards 1/2 and 2/2 of one campaign at 300/s: never more than 300 + burst
//!   messages in any 1-second window of the sink's timestamps together, both make progress
//! - an address suppressed on one machine is skipped by the other; a removal syncs too
//! - Redis stopped mid-run: sending pauses (nothing over the limit, nothing lost) and resumes
//!   when Redis is back; Redis restarted empty: the lists are published again
//! - a Redis with `maxmemory-policy allkeys-lru` is refused with a clear message
//! - an IP pool: each IP takes its per-site tokens under its own keys and holds its own rate
//!
//! The tests fail (never skip) when `redis-server` is missing: `.ci/run` installs it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pipeline::{addrs, by_rcpt, csv_list, start_sink, user_unknown, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_blast");
/// Every blast process of these tests ends within this (or the test fails).
const PROCESS_LIMIT: Duration = Duration::from_secs(120);

/// A redis-server of this test, killed when dropped.
pub struct Redis {
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    /// Starts one on a free port; `extra`: more `redis-server` arguments.
    pub fn start(extra: &[&str]) -> Redis {
        let mut r = Redis {
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts it on the same port, empty (nothing is persisted).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for the cluster tests (.ci/run installs it)");
        self.child = Some(child);
        // Bounded: up to 10 s for it to answer PING.
        let t0 = Instant::now();
        loop {
            if self.ping() {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    /// Kills it (its data goes with it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A synchronous client for looking at what blast wrote.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One machine of the fleet: its blast.toml (state dir `NAME-global`) and its campaign
/// file (state dir `NAME-state`), in one fixture.
struct Machine {
    name: String,
    config: PathBuf,
    campaign: PathBuf,
}

impl Machine {
    fn new(f: &Fixture, name: &str, redis: &str, campaign: &str) -> Machine {
        let config = f.write(
            &format!("{name}.blast.toml"),
            format!(
                "[serve]\nstate_dir = \"{name}-global\"\n\n[priority]\ntransport = \"outbox:{name}-pq\"\n\n\
                 [cluster]\nredis = \"{redis}\"\nmachine = \"{name}\"\n"
            ),
        );
        let campaign = f.write(
            &format!("{name}.campaign.toml"),
            campaign.replace(
                "state_dir = \"state\"",
                &format!("state_dir = \"{name}-state\""),
            ),
        );
        Machine {
            name: name.to_string(),
            config,
            campaign,
        }
    }

    fn global_dir(&self) -> PathBuf {
        self.config
            .parent()
            .unwrap()
            .join(format!("{}-global", self.name))
    }

    fn send(&self, extra: &[&str]) -> Child {
        Command::new(BIN)
            .args(["send", "--quiet"])
            .arg(&self.campaign)
            .arg("--config")
            .arg(&self.config)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `blast suppress --config … ARGS`; its stderr.
    fn suppress(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("suppress")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    }

    fn list(&self) -> Vec<String> {
        let g = blast::owner::Global::shared(&self.global_dir());
        g.list().unwrap().into_iter().map(|(k, _)| k).collect()
    }
}

/// Waits for a child within [`PROCESS_LIMIT`]; (exit code, stderr).
fn finish(mut c: Child) -> (i32, String) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = c.stderr.take().unwrap().read_to_string(&mut err);
            return (st.code().unwrap_or(-1), err);
        }
        if t0.elapsed() > PROCESS_LIMIT {
            let _ = c.kill();
            panic!("blast send did not end within {PROCESS_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The most messages the sink received in any 1-second window.
fn max_per_second(times: &[Instant]) -> usize {
    let mut t = times.to_vec();
    t.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..t.len() {
        while t[hi].duration_since(t[lo]) >= Duration::from_secs(1) {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Messages per 100 ms, for a failure's message.
fn histogram(times: &[Instant]) -> String {
    let Some(first) = times.iter().min() else {
        return String::new();
    };
    let mut b = vec![0usize; 1];
    for t in times {
        let i = (t.duration_since(*first).as_millis() / 100) as usize;
        if b.len() <= i {
            b.resize(i + 1, 0);
        }
        b[i] += 1;
    }
    format!("per 100 ms: {b:?}")
}

/// 1,500 recipients over 30 domains, rate 300/s with a (generous) burst of 150 across the fleet.
fn fleet_campaign(f: &Fixture, relay: std::net::SocketAddr, n: usize) -> (String, Vec<String>) {
    let list: Vec<String> = (0..n)
        .map(|i| format!("u{i}@d{}.example", i % 30))
        .collect();
    f.write("fleet.csv", csv_list(&list));
    let toml = crate::pipeline::campaign_toml(
        "fleet",
        relay,
        &["fleet.csv"],
        "rate = \"300/s\"\nburst = 150\nconnections = 8\n",
    );
    (toml, list)
}

const RATE: usize = 300;
const BURST: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_machines_share_one_global_rate_through_redis() {
    let redis = Redis::start(&[]);
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let (toml, list) = fleet_campaign(&f, sink.addr, 1500);
    let a = Machine::new(&f, "m1", &redis.url(), &toml);
    let b = Machine::new(&f, "m2", &redis.url(), &toml);
    let (ca, cb) = (a.send(&["--shard", "1/2"]), b.send(&["--shard", "2/2"]));
    let (ra, rb) = tokio::task::spawn_blocking(move || (finish(ca), finish(cb)))
        .await
        .unwrap();
    assert_eq!(ra.0, 0, "m1: {}", ra.1);
    assert_eq!(rb.0, 0, "m2: {}", rb.1);
    let got = by_rcpt(&sink);
    assert_eq!(got.len(), list.len(), "everyone delivered");
    assert!(got.values().all(|m| m.len() == 1), "nobody twice");
    // Both made progress: each shard's recipients came from its own machine.
    let mut per_shard: BTreeMap<u32, usize> = BTreeMap::new();
    for k in got.keys() {
        *per_shard.entry(blast::shard::shard_of(k, 2)).or_default() += 1;
    }
    assert!(per_shard.values().all(|n| *n > 300), "{per_shard:?}");
    let times: Vec<Instant> = sink.received().iter().map(|r| r.at).collect();
    let peak = max_per_second(&times);
    assert!(
        peak <= RATE + BURST,
        "{peak} messages in one second: the fleet's limit is {RATE}/s + burst {BURST}; {}",
        histogram(&times)
    );
    // And on average: two machines each at 300/s would be twice this.
    let mut sorted = times.clone();
    sorted.sort();
    let steady = &sorted[sorted.len() / 10..sorted.len() - sorted.len() / 10];
    let avg = (steady.len() - 1) as f64
        / steady
            .last()
            .unwrap()
            .duration_since(steady[0])
            .as_secs_f64();
    assert!(avg <= RATE as f64 * 1.05, "{avg:.0}/s over the steady 80%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_suppressed_on_one_machine_is_skipped_by_the_other() {
    let redis = Redis::start(&[]);
    let bad = addrs("gone", "d1.example", 3);
    let sink = start_sink(user_unknown(&bad)).await;
    let f = Fixture::new();
    let mut list = addrs("ok", "d2.example", 20);
    list.extend(bad.iter().cloned());
    f.write("fleet.csv", csv_list(&list));
    let toml = crate::pipeline::campaign_toml("fleet", sink.addr, &["fleet.csv"], "");
    let a = Machine::new(&f, "m1", &redis.url(), &toml);
    let b = Machine::new(
        &f,
        "m2",
        &redis.url(),
        &toml.replace("id = \"fleet\"", "id = \"fleet2\""),
    );
    // m1 meets the unknown users (550 5.1.1) and suppresses them…
    let (code, err) = finish(a.send(&[]));
    assert_eq!(code, 0, "{err}");
    for x in &bad {
        assert!(a.list().contains(x), "{x} not on m1's list");
    }
    // …and m2, sending to the same list, skips them without ever trying.
    let before = sink.received().len();
    let (code, err) = finish(b.send(&[]));
    assert_eq!(code, 0, "{err}");
    for x in &bad {
        assert!(b.list().contains(x), "{x} did not reach m2's list");
    }
    let second: Vec<_> = sink.received()[before..].to_vec();
    assert_eq!(second.len(), 20, "m2 sent only the good addresses");
    assert!(second
        .iter()
        .all(|r| r.rcpt_to.iter().all(|t| !t.starts_with("gone"))));

    // A removal syncs too: m2 lifts one (`blast suppress --config` publishes it at once, no
    // serve or send running on m2), m1 hears of it with its next round.
    let said = b.suppress(&["remove", &bad[0]]);
    assert!(said.contains("fleet: synced with"), "{said}");
    round(&redis, &a).await;
    assert!(!a.list().contains(&bad[0]), "the removal reached m1");
    assert!(a.list().contains(&bad[1]));
}

/// One sync round of `m`'s state dir, as a running send or serve does every 500 ms.
async fn round(redis: &Redis, m: &Machine) -> blast::cluster::suppression_sync::Round {
    let cs = blast::cluster::ClusterSettings {
        redis: redis.url(),
        machine: m.name.clone(),
    };
    let cluster = blast::cluster::Cluster::new(&cs).unwrap();
    let g = blast::owner::Global::shared(&m.global_dir());
    blast::cluster::suppression_sync::SuppressionSync::new(cluster, g)
        .round()
        .await
        .unwrap()
}

fn stream_keys(redis: &Redis) -> Vec<String> {
    let mut c = redis.client();
    let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("{blast:supp}:stream")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap_or_default();
    v.into_iter()
        .flat_map(|(_, f)| f.into_iter().filter(|(k, _)| k == "k").map(|(_, v)| v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_pauses_sending_and_an_empty_restart_republishes() {
    let mut redis = Redis::start(&[]);
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let (toml, list) = fleet_campaign(&f, sink.addr, 1500);
    let a = Machine::new(&f, "m1", &redis.url(), &toml);
    a.suppress(&["add", "listed@elsewhere.example", "--reason", "manual"]);
    let child = a.send(&[]);
    // Bounded waits: until a few hundred went out, then Redis dies.
    let t0 = Instant::now();
    while sink.received().len() < 300 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "sending did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        stream_keys(&redis).contains(&"listed@elsewhere.example".to_string()),
        "joining the fleet published m1's list"
    );
    redis.stop();
    let stopped_at = Instant::now();
    let at_stop = sink.received().len();
    // Tokens in hand (50 ms' worth) and messages already claimed may still land (on a busy
    // machine a group commit takes a while); then nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = sink.received().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = sink.received().len();
    assert_eq!(during, after, "nothing is sent while Redis is down");
    assert!(
        after - at_stop <= BURST,
        "{} messages after Redis stopped: only what was already allowed may land",
        after - at_stop
    );
    assert!(after < list.len(), "the run was cut short");
    redis.restart();
    let restarted_at = Instant::now();
    let (code, err) = tokio::task::spawn_blocking(move || finish(child))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let got = by_rcpt(&sink);
    assert_eq!(got.len(), list.len(), "nothing lost");
    assert!(got.values().all(|m| m.len() == 1), "nothing twice");
    let times: Vec<Instant> = sink.received().iter().map(|r| r.at).collect();
    let peak = max_per_second(&times);
    assert!(
        peak <= RATE + BURST,
        "{peak} in one second; {}",
        histogram(&times)
    );
    let late = stopped_at + Duration::from_millis(1500);
    assert_eq!(
        times
            .iter()
            .filter(|t| **t > late && **t < restarted_at)
            .count(),
        0,
        "nothing went out while Redis was down"
    );
    // Redis came back empty: the machine saw the epoch go and published its list again.
    assert!(
        stream_keys(&redis).contains(&"listed@elsewhere.example".to_string()),
        "m1's list was published again after Redis lost its data"
    );
}

#[test]
fn a_redis_that_may_evict_keys_is_refused() {
    let redis = Redis::start(&["--maxmemory-policy", "allkeys-lru"]);
    let f = Fixture::new();
    let (toml, _) = fleet_campaign(&f, "127.0.0.1:9".parse().unwrap(), 10);
    let a = Machine::new(&f, "m1", &redis.url(), &toml);
    let (code, err) = finish(a.send(&[]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("maxmemory-policy")
            && err.contains("allkeys-lru")
            && err.contains("noeviction"),
        "{err}"
    );
}

#[test]
fn cluster_keys_are_validated_and_machine_defaults_to_the_host_name() {
    let base = "[serve]\n[priority]\ntransport = \"outbox:pq\"\n";
    let p = std::path::Path::new("/etc/blast/blast.toml");
    let ok = blast::serve::config::parse(
        p,
        &format!("{base}[cluster]\nredis = \"redis://10.0.0.5:6379\"\nmachine = \"m1\"\n"),
    )
    .unwrap();
    let c = ok.cluster.unwrap();
    assert_eq!(
        (c.redis.as_str(), c.machine.as_str()),
        ("redis://10.0.0.5:6379", "m1")
    );
    let dflt =
        blast::serve::config::parse(p, &format!("{base}[cluster]\nredis = \"redis://r:6379\"\n"))
            .unwrap();
    assert_eq!(dflt.cluster.unwrap().machine, blast::cluster::hostname());
    assert!(blast::serve::config::parse(p, base)
        .unwrap()
        .cluster
        .is_none());
    for (bad, why) in [
        ("redis = \"http://r:6379\"", "cluster.redis"),
        (
            "redis = \"redis://r:6379\"\nmachine = \"a b\"",
            "cluster.machine",
        ),
        ("redis = \"redis://r:6379\"\nnodes = 3", "unknown field"),
    ] {
        let e = blast::serve::config::parse(p, &format!("{base}[cluster]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ip_of_a_pool_takes_the_fleet_rates_under_its_own_keys() {
    let redis = Redis::start(&[]);
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let list: Vec<String> = addrs("u", "one.test", 60);
    f.write("fleet.csv", csv_list(&list));
    let toml = crate::pipeline::campaign_toml(
        "fleet",
        sink.addr,
        &["fleet.csv"],
        "connections = 4\nsource_ips = [{ ip = \"127.0.0.2\" }, { ip = \"127.0.0.3\" }]\n\
         [lane.per_domain]\ndefault = \"10/s\"\n",
    );
    let m = Machine::new(&f, "m1", &redis.url(), &toml);
    let child = m.send(&[]);
    // While it sends (60 messages at 10/s per IP: seconds), both IPs' buckets exist in Redis.
    let mut c = redis.client();
    let mut seen: std::collections::BTreeSet<String> = Default::default();
    let t0 = Instant::now();
    while seen.len() < 2 && t0.elapsed() < Duration::from_secs(60) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("{blast:rate:site:*")
            .query(&mut c)
            .unwrap_or_default();
        seen.extend(keys);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, err) = tokio::task::spawn_blocking(move || finish(child))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    crate::pipeline::assert_exactly_once(&sink, &list);
    assert_eq!(
        seen,
        [
            "{blast:rate:site:127.0.0.2|one.test}".to_string(),
            "{blast:rate:site:127.0.0.3|one.test}".to_string()
        ]
        .into_iter()
        .collect(),
        "one bucket per (IP, site)"
    );
    // And each IP held its own 10/s (lower bound on the sink's timestamps: 5% for timers).
    let mut per_ip: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for r in sink.received() {
        let ip = r.peer.expect("client address").ip().to_string();
        per_ip.entry(ip).or_default().push(r.at);
    }
    assert_eq!(per_ip.len(), 2, "both IPs sent: {:?}", per_ip.keys());
    for (ip, mut t) in per_ip {
        t.sort();
        let span = t.last().unwrap().duration_since(t[0]);
        // Less two tokens: a batch and the burst (1) may leave together.
        let floor = Duration::from_millis(95 * (t.len() as u64 - 1))
            .saturating_sub(Duration::from_millis(200));
        assert!(span >= floor, "{ip}: {} messages in {span:?}", t.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppression_made_while_redis_is_away_is_kept_and_said_so() {
    let mut redis = Redis::start(&[]);
    let f = Fixture::new();
    let toml =
        crate::pipeline::campaign_toml("fleet", "127.0.0.1:9".parse().unwrap(), &["fleet.csv"], "");
    let m = Machine::new(&f, "m1", &redis.url(), &toml);
    let said = m.suppress(&["add", "first@elsewhere.example", "--reason", "manual"]);
    assert!(said.contains("fleet: synced with"), "{said}");
    redis.stop();
    let said = m.suppress(&["add", "gone@elsewhere.example", "--reason", "manual"]);
    assert!(said.contains("did not answer"), "{said}");
    assert!(said.contains("next sync"), "{said}");
    assert!(m.list().contains(&"gone@elsewhere.example".to_string()));
    // Back (empty): the next sync of this machine carries it to the fleet.
    redis.restart();
    round(&redis, &m).await;
    assert!(
        stream_keys(&redis).contains(&"gone@elsewhere.example".to_string()),
        "the change made while Redis was away reached the stream"
    );
}
