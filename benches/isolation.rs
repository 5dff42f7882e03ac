//! Isolation of the priority lane (`cargo bench --bench isolation`).
//!
//! `blast serve` runs as its own process, delivering to a sink inside this process (so
//! submit → delivered is measured on one clock). A probe submits one transactional message
//! every 50 ms over a reused authenticated session and records the latency:
//!
//! - (a) idle;
//! - (b) while a separate `blast send` process pushes BLAST_N messages (default 200,000) at
//!   full speed through the blast lane to a second sink process;
//! - (c) while serve itself runs a blast campaign of BLAST_N in-process (a scheduled run).
//!
//! Prints p50 / p99 / max per phase, the target `p99 ≤ max(1.2 × idle p99, idle p99 + 10 ms)`,
//! and the priority lane's own counters (`blast queue stats`): `waited_for_worker` must stay
//! 0 — no transactional message waited for a connection. Knobs: DURATION (s, default 60; the
//! length of (a), and the cap of (b) and (c)), BLAST_N, INTERVAL_MS (default 50), ROUNDS
//! (default 5: the three phases run interleaved that many times, so machine drift hits all
//! alike; the summary gives median and worst p50/p99/max per phase and the ratio of median
//! p99s, against the targets ≤ 1.2× idle, every run ≤ its idle + 10 ms, no delivery > 100 ms).

#[path = "common/mod.rs"]
mod common;
#[path = "common/serve.rs"]
mod serve;
#[path = "common/submit.rs"]
mod submit;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serve::env_u64;
use std::time::{Duration, Instant};

use blast::sink::SinkHandle;

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Writes a list of `n` recipients over 1,000 domains and a campaign sending it to `relay`.
fn write_campaign(dir: &Path, id: &str, n: u64, relay: SocketAddr, extra: &str) -> PathBuf {
    let list = dir.join(format!("{id}.csv"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&list).unwrap());
    writeln!(w, "email,first_name").unwrap();
    for i in 0..n {
        writeln!(w, "user{i}@d{}.example,User{i}", i % 1000).unwrap();
    }
    w.flush().unwrap();
    std::fs::write(
        dir.join("news.txt.hbs"),
        "Hello {{first_name}},\n\nthe news.\n",
    )
    .unwrap();
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "[campaign]\nid = \"{id}\"\nfrom = \"News <news@news.acme.example>\"\nsubject = \"News for {{{{first_name}}}}\"\ntext = \"news.txt.hbs\"\nlists = [\"{id}.csv\"]\nstate_dir = \"state-{id}\"\n{extra}\n[lane]\ntransport = \"smtp://{relay}\"\nconnections = 16\n"
        ),
    )
    .unwrap();
    path
}

/// Submits a probe every `interval` until `until` says stop (or `cap` passes); returns
/// submit → delivered latencies in ms.
async fn probe(
    addr: SocketAddr,
    sink: &SinkHandle,
    phase: &str,
    interval: Duration,
    cap: Duration,
    mut until: impl FnMut() -> bool,
) -> Vec<f64> {
    let mut s = submit::Session::open(addr, serve::USER.0, serve::USER.1)
        .await
        .unwrap();
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut accept_ms: Vec<f64> = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let t0 = Instant::now();
    let mut k = 0u64;
    while t0.elapsed() < cap && !until() {
        tick.tick().await;
        let subject = format!("probe-{phase}-{k}");
        let at = Instant::now();
        s.send("app@acme.example", "user@probe.example", &subject)
            .await
            .expect("probe submission");
        accept_ms.push(at.elapsed().as_secs_f64() * 1000.0);
        sent.insert(subject, at);
        k += 1;
    }
    // Collect: every probe must arrive (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: HashMap<String, Instant> = sink
            .received()
            .into_iter()
            .filter_map(|r| {
                let text = String::from_utf8_lossy(&r.data).into_owned();
                let subj = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Subject: "))?
                    .trim()
                    .to_string();
                sent.contains_key(&subj).then_some((subj, r.at))
            })
            .collect();
        if got.len() == sent.len() || Instant::now() > deadline {
            if got.len() != sent.len() {
                println!("  !! {} of {} probes delivered", got.len(), sent.len());
            }
            let mut lat: Vec<f64> = got
                .iter()
                .map(|(k, at)| at.duration_since(sent[k]).as_secs_f64() * 1000.0)
                .collect();
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            accept_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "    submit → 250 (durable accept): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                pct(&accept_ms, 0.5),
                pct(&accept_ms, 0.99),
                accept_ms.last().copied().unwrap_or(f64::NAN)
            );
            return lat;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn show(phase: &str, lat: &[f64]) -> f64 {
    let p99 = pct(lat, 0.99);
    println!(
        "{phase:<44} n={:<5} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        lat.len(),
        pct(lat, 0.5),
        p99,
        lat.last().copied().unwrap_or(f64::NAN)
    );
    p99
}

fn counters(server: &serve::Serve) -> String {
    server
        .stats()
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Median and worst of a figure over the rounds.
fn med_worst(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (pct(&s, 0.5), s.last().copied().unwrap_or(f64::NAN))
}

/// One phase's figures in one round: p50, p99, max (ms).
#[derive(Clone, Copy)]
struct Fig {
    p50: f64,
    p99: f64,
    max: f64,
}

fn fig(lat: &[f64]) -> Fig {
    Fig {
        p50: pct(lat, 0.5),
        p99: pct(lat, 0.99),
        max: lat.last().copied().unwrap_or(f64::NAN),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cap = Duration::from_secs(env_u64("DURATION", 60));
    let n = env_u64("BLAST_N", 200_000);
    let rounds = env_u64("ROUNDS", 5) as usize;
    let interval = Duration::from_millis(env_u64("INTERVAL_MS", 50));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let sink_a = serve::recording_sink().await;
    let sink_b_addr = free_port();
    let mut sink_b = Command::new(serve::bin())
        .args(["sink", "--listen", &sink_b_addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::create_dir_all(d.join("campaigns")).unwrap();
    let server = serve::Serve::start(d, sink_a.addr, "campaigns_dir = \"campaigns\"");
    let (addr, config) = (server.addr, server.config.clone());
    println!(
        "isolation: probe every {} ms; blast of {n} messages; cap {} s per phase; {rounds} interleaved rounds",
        interval.as_millis(),
        cap.as_secs()
    );

    let (mut idle, mut beside_send, mut beside_inproc) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        println!("round {round}:");
        // (a) idle
        let lat = probe(
            addr,
            &sink_a,
            &format!("idle{round}"),
            interval,
            cap,
            || false,
        )
        .await;
        show("(a) idle", &lat);
        idle.push(fig(&lat));

        // (b) a separate `blast send` process (default nice 10)
        let id = format!("bulk{round}");
        let campaign = write_campaign(d, &id, n, sink_b_addr, "");
        let t = Instant::now();
        let mut send = Command::new(serve::bin())
            .args(["send", "--quiet"])
            .arg(&campaign)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut done = false;
        let lat = probe(addr, &sink_a, &id, interval, cap, || {
            done = done || send.try_wait().ok().flatten().is_some();
            done
        })
        .await;
        let _ = send.kill();
        let st = send.wait().unwrap();
        println!(
            "    blast send: exit {:?}, {:.1} s ({:.0} msg/s while probed)",
            st.code(),
            t.elapsed().as_secs_f64(),
            n as f64 / t.elapsed().as_secs_f64()
        );
        show("(b) during `blast send` (separate process)", &lat);
        beside_send.push(fig(&lat));

        // (c) serve runs a blast campaign itself: a scheduled campaign whose slot is now.
        let id = format!("inproc{round}");
        let lat = inproc_phase(
            d,
            &config,
            addr,
            &sink_a,
            n,
            sink_b_addr,
            interval,
            cap,
            &id,
        )
        .await;
        show("(c) during a blast run inside serve", &lat);
        beside_inproc.push(fig(&lat));
        println!("    lane counters: {}", counters(&server));
    }

    println!("summary over {rounds} rounds (median / worst, ms):");
    let line = |name: &str, f: &[Fig]| {
        let (p50m, p50w) = med_worst(&f.iter().map(|x| x.p50).collect::<Vec<_>>());
        let (p99m, p99w) = med_worst(&f.iter().map(|x| x.p99).collect::<Vec<_>>());
        let (maxm, maxw) = med_worst(&f.iter().map(|x| x.max).collect::<Vec<_>>());
        println!(
            "  {name:<10} p50 {p50m:>6.2} / {p50w:>6.2}   p99 {p99m:>6.2} / {p99w:>6.2}   max {maxm:>6.2} / {maxw:>6.2}"
        );
        p99m
    };
    let idle_p99 = line("(a) idle", &idle);
    let send_p99 = line("(b) send", &beside_send);
    let inproc_p99 = line("(c) inproc", &beside_inproc);
    for (name, m, f) in [
        ("(b)", send_p99, &beside_send),
        ("(c)", inproc_p99, &beside_inproc),
    ] {
        let ratio = m / idle_p99;
        let per_run_ok = f.iter().zip(&idle).all(|(b, a)| b.p99 <= a.p99 + 10.0);
        let slowest = f.iter().map(|x| x.max).fold(0.0, f64::max);
        println!(
            "  {name} median p99 / median idle p99 = {ratio:.2} (target ≤ 1.20: {}); every run ≤ its idle p99 + 10 ms: {}; slowest delivery {slowest:.1} ms (target ≤ 100: {})",
            if ratio <= 1.2 { "met" } else { "MISSED" },
            if per_run_ok { "met" } else { "MISSED" },
            if slowest <= 100.0 { "met" } else { "MISSED" }
        );
    }
    println!("serve log (last lines):");
    for l in server.stop(8) {
        println!("    {l}");
    }
    let _ = sink_b.kill();
    let _ = sink_b.wait();
}

/// Phase (c): drops a scheduled campaign into serve's campaigns dir with a slot a few seconds
/// from now, probes while serve's run is sending (until its state says done, or the cap).
#[allow(clippy::too_many_arguments)]
async fn inproc_phase(
    d: &Path,
    _config: &Path,
    addr: SocketAddr,
    sink_a: &SinkHandle,
    n: u64,
    relay: SocketAddr,
    interval: Duration,
    cap: Duration,
    id: &str,
) -> Vec<f64> {
    // serve rescans its campaigns dir every 5 s and never runs a first-seen campaign's past
    // slot: the slot must come after the next scan.
    let slot = chrono::Utc::now() + chrono::Duration::seconds(8);
    let cron = slot.format("%S %M %H %d %m *").to_string();
    let staging = d.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let extra = format!("\n[schedule]\ncron = \"{cron}\"\ntimezone = \"UTC\"\n");
    let file = write_campaign(&staging, id, n, relay, &extra);
    for f in [format!("{id}.csv"), "news.txt.hbs".to_string()] {
        std::fs::copy(staging.join(&f), d.join("campaigns").join(&f)).unwrap();
    }
    std::fs::copy(&file, d.join(format!("campaigns/{id}.toml"))).unwrap();
    // Wait for the run to start: its per-run state appears under the serve state dir.
    let runs = d.join(".blast/runs").join(id);
    let t0 = Instant::now();
    while !runs.exists() && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let snapshot = d.join(".blast");
    let lat = probe(addr, sink_a, id, interval, cap, || {
        run_finished(&snapshot, id)
    })
    .await;
    let snap = blast::schedule::claims::Snapshot::read(&snapshot)
        .ok()
        .flatten();
    let run = snap.and_then(|s| s.runs.into_iter().find(|r| r.campaign == id));
    println!(
        "    in-process run: {:.1} s probed; run record: {}",
        started.elapsed().as_secs_f64(),
        run.map(|r| format!("{} {} {:?}", r.id, r.status.name(), r.counts))
            .unwrap_or_else(|| "none".into())
    );
    lat
}

/// The scheduler's snapshot says the in-process run has ended.
fn run_finished(state_dir: &Path, id: &str) -> bool {
    use blast::schedule::claims::{RunStatus, Snapshot};
    match Snapshot::read(state_dir) {
        Ok(Some(s)) => s
            .runs
            .iter()
            .any(|r| r.campaign == id && r.status != RunStatus::Running),
        _ => false,
    }
}
