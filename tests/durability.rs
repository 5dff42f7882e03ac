//! Durable campaigns (issue 4, "Must show" and item 8), against the real `blast` binary as a
//! child process, a real SMTP sink on 127.0.0.1:0 in this process and a real store on a temp
//! dir:
//!
//! - crash test: `kill -9` at seeded random moments, rerun until done; exactly once under
//!   `in_flight = "skip"` (misses listed as `unknown`), at least once under `resend` with
//!   duplicates within the README's bound
//! - a second `blast send` of a running campaign refuses; `blast status` still answers
//! - SIGINT and SIGTERM: exit 130, state saved, the rerun completes without duplicates
//! - an uncreatable state dir: a clear error naming the path, nothing sent
//! - import idempotence: the list changes between runs (rows removed, rows added)
//! - issue 10: `kill -9` after address-level bounces (every 5.1.1 ends on the suppression
//!   list, and a committed bounce is on it at every kill); a relay answering every RCPT with
//!   421 (bounded reconnects, exit 75, no retry spent); a relay that goes away mid-send
//!   (exit 75 "unavailable since", a rerun delivers everyone once)

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::pipeline::{start_sink, start_sink_with};
use blast::sink::{Action, Rule, SinkConfig, SinkHandle};
use blast::store::campaign::CampaignStore;
use blast::store::record::{Record, State};
use rand::{Rng, SeedableRng};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_blast");

/// A temp dir with a template, a list and a campaign file; state in `state/`.
struct Camp {
    dir: tempfile::TempDir,
    id: String,
    toml: PathBuf,
}

impl Camp {
    /// `campaign_extra` goes into `[campaign]`, `lane_extra` into `[lane]`.
    fn new(id: &str, relay: std::net::SocketAddr, campaign_extra: &str, lane_extra: &str) -> Camp {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("t.txt.hbs"),
            "Hello {{first_name}}, your code is {{code}}.\n",
        )
        .unwrap();
        let toml = dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &toml,
            format!(
                r#"[campaign]
id = "{id}"
from = "Acme News <news@acme.example>"
subject = "Hello {{{{first_name}}}}"
text = "t.txt.hbs"
lists = ["list.csv"]
{campaign_extra}

[lane]
transport = "smtp://{relay}"
helo = "blast.test"
connect_timeout = "5s"
{lane_extra}
"#
            ),
        )
        .unwrap();
        Camp {
            dir,
            id: id.to_string(),
            toml,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write_list(&self, addrs: &[String]) {
        let mut s = String::from("email,first_name,code\n");
        for (i, a) in addrs.iter().enumerate() {
            s.push_str(&format!("{a},Name{i},C-{i:06}\n"));
        }
        std::fs::write(self.path("list.csv"), s).unwrap();
    }

    fn toml(&self) -> &str {
        self.toml.to_str().unwrap()
    }

    /// `blast send CAMPAIGN --quiet` as a child; stderr goes to `log` in the temp dir.
    fn spawn_send(&self, log: &str, extra: &[&str]) -> Child {
        let err = std::fs::File::create(self.path(log)).unwrap();
        Command::new(BIN)
            .arg("send")
            .arg(self.toml())
            .arg("--quiet")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn blast send")
    }

    /// Waits (≤ 30 s, polling every `poll`) until `n` messages reached the sink while the
    /// first send (logging to `first.err`) is still running: the moment to interrupt it.
    async fn wait_for_sink(&self, child: &mut Child, sink: &SinkHandle, n: usize, poll: Duration) {
        let t0 = Instant::now();
        while sink.count() < n {
            assert!(t0.elapsed() < Duration::from_secs(30), "send never started");
            if let Ok(Some(st)) = child.try_wait() {
                panic!("send exited early {st:?}: {}", self.log("first.err"));
            }
            tokio::time::sleep(poll).await;
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Runs `blast send` to the end (bounded) and returns its exit code and stderr.
    async fn send(&self, log: &str, extra: &[&str], limit: Duration) -> (Option<i32>, String) {
        let mut child = self.spawn_send(log, extra);
        let st = wait_bounded(&mut child, limit).await;
        (st.code(), self.log(log))
    }

    /// `blast status --json` parsed.
    async fn status(&self) -> serde_json::Value {
        let out = run(&["status", "--json", self.toml()], Duration::from_secs(30)).await;
        assert!(
            out.status.success(),
            "blast status failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("blast status --json printed no JSON ({e}): {text}"))
    }

    /// Every record of the store (only when no blast process holds it): lowercase address → state.
    fn states(&self) -> HashMap<String, State> {
        self.records()
            .into_iter()
            .map(|(a, r)| (a, r.state))
            .collect()
    }

    /// Every record of the store (only when no blast process holds it), by lowercase address.
    fn records(&self) -> HashMap<String, Record> {
        let dir = self.path("state").join(&self.id).join("store");
        let st = CampaignStore::open(&dir, Duration::from_secs(5)).expect("open store");
        st.iter()
            .map(|kv| {
                let (_, r) = kv.expect("store record");
                (r.address.to_ascii_lowercase(), r)
            })
            .collect()
    }

    /// The campaign file's text with `from` replaced by `to` (another id, another relay).
    fn toml_with(&self, replace: &[(&str, &str)]) -> String {
        let mut text = std::fs::read_to_string(&self.toml).unwrap();
        for (from, to) in replace {
            assert!(text.contains(from), "{from:?} not in the campaign file");
            text = text.replace(from, to);
        }
        text
    }

    /// `blast suppress --campaign TOML list`: the listed keys (the CSV's first column).
    async fn suppressed(&self) -> HashSet<String> {
        let out = run(
            &["suppress", "--campaign", self.toml(), "list"],
            Duration::from_secs(60),
        )
        .await;
        assert!(out.status.success(), "blast suppress list: {out:?}");
        suppress_keys(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Runs the binary to the end with a time limit.
async fn run(args: &[&str], limit: Duration) -> std::process::Output {
    let fut = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("blast {args:?} did not finish within {limit:?}"))
        .expect("run blast")
}

async fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(st) => st.expect("wait for blast"),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            panic!("blast send did not finish within {limit:?}");
        }
    }
}

/// The keys of `blast suppress list` output (CSV with a header; first column).
pub fn suppress_keys(csv: &str) -> HashSet<String> {
    csv.lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(|k| k.trim().to_ascii_lowercase())
        .filter(|k| !k.is_empty())
        .collect()
}

/// Accepted deliveries (final dot answered 250) per lowercase recipient.
fn tally(sink: &SinkHandle) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in sink.received() {
        if r.reply == Some(250) {
            for a in &r.rcpt_to {
                *m.entry(a.to_ascii_lowercase()).or_insert(0) += 1;
            }
        }
    }
    m
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("status JSON has no numeric {key:?}: {v}"))
}

/// `n` addresses over `domains` domains.
fn addrs(prefix: &str, n: usize, domains: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i}@d{}.example", i % domains))
        .collect()
}

/// Sends `sig` (`INT`: what a terminal's Ctrl-C sends; `TERM`: what systemd, `timeout` and
/// container runtimes send) with the `kill` utility (no libc dependency in the tests).
fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

// ------------------------------------------------------------------ crash test

const CRASH_RECIPIENTS: usize = 5_000;
const CRASH_KILLS: usize = 12;
const CRASH_CONNECTIONS: u64 = 8;

struct CrashRun {
    camp: Camp,
    sink: SinkHandle,
    kills: usize,
    runs: usize,
}

/// Sends 5,000 recipients, SIGKILLing `blast send` `CRASH_KILLS` times at seeded random
/// moments (some in startup/import, most while sending), then reruns until exit 0.
async fn crash_run(policy: &str, seed: u64) -> CrashRun {
    let sink = start_sink(Vec::new()).await;
    let camp = Camp::new(
        &format!("crash-{policy}"),
        sink.addr,
        &format!("state_dir = \"state\"\nin_flight = \"{policy}\""),
        &format!("rate = \"1500/s\"\nconnections = {CRASH_CONNECTIONS}"),
    );
    camp.write_list(&addrs("u", CRASH_RECIPIENTS, 20));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut kills, mut runs) = (0, 0);
    let mut done = false;
    let mut per_run = Vec::new();
    while runs < 40 && started.elapsed() < Duration::from_secs(150) {
        runs += 1;
        let log = format!("run{runs}.err");
        let mut child = camp.spawn_send(&log, &[]);
        let before = sink.count();
        let code = if kills < CRASH_KILLS {
            // A quarter of the kills land anywhere from startup through import (20–400 ms after
            // spawn); the rest while messages are going out, once this run has delivered a random
            // 1–400 messages (a point in the run rather than a time, so a faster machine cannot
            // finish the campaign before the kills are done: 12 × 400 < 5,000).
            let early = rng.random_range(0..4) == 0;
            let after = Duration::from_millis(rng.random_range(20..400));
            let target = rng.random_range(1..400);
            let t0 = Instant::now();
            let wait = async {
                if early {
                    tokio::time::sleep(after).await;
                } else {
                    while sink.count() - before < target && t0.elapsed() < Duration::from_secs(30) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            };
            let exited = tokio::select! {
                st = child.wait() => Some(st.expect("wait")),
                _ = wait => None,
            };
            match exited {
                Some(st) => st.code(),
                None => {
                    child.start_kill().expect("SIGKILL");
                    let st = child.wait().await.expect("wait after kill");
                    match st.code() {
                        // Exited on its own just before the signal landed.
                        Some(c) => Some(c),
                        None => {
                            kills += 1;
                            per_run.push(sink.count() - before);
                            continue;
                        }
                    }
                }
            }
        } else {
            wait_bounded(&mut child, Duration::from_secs(90))
                .await
                .code()
        };
        per_run.push(sink.count() - before);
        match code {
            Some(0) => {
                done = true;
                break;
            }
            other => panic!(
                "run {runs} (after {kills} kills) exited {other:?}:\n{}",
                camp.log(&log)
            ),
        }
    }
    assert!(
        done,
        "campaign not complete after {runs} runs, {kills} kills, {:?}",
        started.elapsed()
    );
    assert!(
        kills >= 10,
        "only {kills} kills landed before the campaign completed (runs are too fast)"
    );
    eprintln!("crash/{policy}: delivered per run {per_run:?}");
    CrashRun {
        camp,
        sink,
        kills,
        runs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill9_skip_never_duplicates_and_lists_misses_as_unknown() {
    let CrashRun {
        camp,
        sink,
        kills,
        runs,
    } = crash_run("skip", 0x5eed_0001).await;
    let got = tally(&sink);
    let dups: Vec<_> = got.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        dups.is_empty(),
        "in_flight = \"skip\": {} recipients received more than once, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
    let missing = CRASH_RECIPIENTS - got.len();

    let st = camp.status().await;
    let (sent, unknown) = (num(&st, "sent"), num(&st, "unknown"));
    assert_eq!(num(&st, "total"), CRASH_RECIPIENTS as u64, "{st}");
    assert_eq!(sent + unknown, CRASH_RECIPIENTS as u64, "{st}");
    for k in ["pending", "in_flight", "deferred", "failed", "bounced"] {
        assert_eq!(num(&st, k), 0, "{k}: {st}");
    }

    // Per recipient: not received ⇒ unknown; sent ⇒ received exactly once. (A recipient can be
    // received *and* unknown: its 250 came back but was not committed before the kill. So the
    // unknown count is ≥ the missing count, with equality only when no kill fell in that gap.)
    let states = camp.states();
    assert_eq!(states.len(), CRASH_RECIPIENTS);
    let mut received_unknown = 0;
    for (addr, state) in &states {
        match (got.get(addr).copied().unwrap_or(0), state) {
            (0, State::Unknown) => {}
            (0, s) => panic!("{addr} was never received but is {s:?}, not unknown"),
            (1, State::Sent) => {}
            (1, State::Unknown) => received_unknown += 1,
            (n, s) => panic!("{addr} received {n} times, state {s:?}"),
        }
    }
    assert_eq!(unknown as usize, missing + received_unknown);
    eprintln!(
        "crash/skip: {kills} kills, {runs} runs, 0 duplicates, {missing} never sent (unknown), \
         {received_unknown} delivered but unknown (250 not committed at the kill), unknown = {unknown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill9_resend_delivers_everyone_with_bounded_duplicates() {
    let CrashRun {
        camp,
        sink,
        kills,
        runs,
    } = crash_run("resend", 0x5eed_0002).await;
    let got = tally(&sink);
    let never: Vec<_> = addrs("u", CRASH_RECIPIENTS, 20)
        .into_iter()
        .filter(|a| !got.contains_key(a))
        .collect();
    assert!(
        never.is_empty(),
        "in_flight = \"resend\": {} recipients never received, e.g. {:?}",
        never.len(),
        &never[..never.len().min(5)]
    );
    let dups: usize = got.values().map(|n| n - 1).sum();
    let bound = kills * (CRASH_CONNECTIONS as usize * 2 + 8192);
    eprintln!("crash/resend: {kills} kills, {runs} runs, {dups} duplicates (bound {bound})");
    assert!(dups <= bound, "{dups} duplicates > bound {bound}");

    let st = camp.status().await;
    assert_eq!(num(&st, "total"), CRASH_RECIPIENTS as u64, "{st}");
    assert_eq!(num(&st, "sent"), CRASH_RECIPIENTS as u64, "{st}");
    assert_eq!(num(&st, "unknown"), 0, "{st}");
}

// ------------------------------------------------------------------ lock

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_send_refuses_while_status_still_answers() {
    let sink = start_sink(Vec::new()).await;
    let camp = Camp::new(
        "locked",
        sink.addr,
        "state_dir = \"state\"",
        "rate = \"25/s\"",
    );
    camp.write_list(&addrs("l", 400, 4));
    let mut first = camp.spawn_send("first.err", &[]);

    // Wait until the first one is sending and has written its status snapshot (every ~2 s).
    let snap = camp.path("state").join("locked").join("status.json");
    let t0 = Instant::now();
    while !(snap.exists() && sink.count() > 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "first send never started: {}",
            camp.log("first.err")
        );
        if let Ok(Some(st)) = first.try_wait() {
            panic!("first send exited early {st:?}: {}", camp.log("first.err"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let t = Instant::now();
    let (code, err) = camp.send("second.err", &[], Duration::from_secs(30)).await;
    let took = t.elapsed();
    assert!(
        matches!(code, Some(c) if c != 0),
        "second send exited {code:?}: {err}"
    );
    assert!(
        err.contains("in use by another blast process"),
        "second send's message: {err}"
    );
    assert!(took < Duration::from_secs(10), "second send took {took:?}");

    let st = camp.status().await;
    assert_eq!(st["campaign"], "locked", "{st}");
    // The live snapshot has the store's counts, the keys of the idle `--json` (issue 11
    // item 8: it had only this run's counters).
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(num(&st, "total"), 400, "{st}");
    let states = [
        "pending",
        "in_flight",
        "sent",
        "deferred",
        "bounced",
        "failed",
        "skipped",
        "unknown",
    ];
    let sum: u64 = states.iter().map(|k| num(&st, k)).sum();
    assert_eq!(sum, 400, "{st}");
    assert!(num(&st, "sent") > 0, "{st}");

    // Without --json: the table `blast status` prints when idle, not raw JSON.
    let out = run(&["status", camp.toml()], Duration::from_secs(30)).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(!text.contains('{'), "raw JSON without --json: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "campaign locked: 400 recipients", "{text}");
    for (line, state) in lines[1..].iter().zip(states) {
        let mut w = line.split_whitespace();
        assert_eq!(w.next(), Some(state), "{text}");
        w.next()
            .unwrap()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{text}"));
    }
    assert!(text.contains("a send is running (pid "), "{text}");

    assert!(
        first.try_wait().unwrap().is_none(),
        "first send ended during the test (make it slower)"
    );
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let dups = tally(&sink).values().filter(|&&n| n > 1).count();
    assert_eq!(dups, 0);
    eprintln!("lock: second send exit {code:?} after {took:?}");
}

// ------------------------------------------------------------------ interrupt

/// A rate-limited send of `n` recipients started as a child process, waited for until 60
/// messages reached the sink (so it is mid-send when the test interrupts it).
async fn interrupted_send_setup(
    id: &str,
    prefix: &str,
    n: usize,
) -> (SinkHandle, Camp, Vec<String>, Child) {
    let sink = start_sink(Vec::new()).await;
    let camp = Camp::new(id, sink.addr, "state_dir = \"state\"", "rate = \"150/s\"");
    let list = addrs(prefix, n, 6);
    camp.write_list(&list);
    let mut child = camp.spawn_send("first.err", &[]);
    camp.wait_for_sink(&mut child, &sink, 60, Duration::from_millis(20))
        .await;
    (sink, camp, list, child)
}

/// A signal to a mid-send `blast send`: exit 130 with nothing left in flight, and a rerun
/// sends the rest with no recipient received twice.
async fn interrupt_exits_130_and_rerun_completes(sig: &str, id: &str, prefix: &str) {
    const N: usize = 600;
    let (sink, camp, list, mut child) = interrupted_send_setup(id, prefix, N).await;
    signal(child.id().expect("pid"), sig);
    let st = wait_bounded(&mut child, Duration::from_secs(60)).await;
    assert_eq!(
        st.code(),
        Some(130),
        "after SIG{sig}: {st:?}\n{}",
        camp.log("first.err")
    );
    let at_stop = sink.count();
    assert!(at_stop < N, "everything was sent before the interrupt");

    let s = camp.status().await;
    assert_eq!(
        num(&s, "in_flight"),
        0,
        "graceful stop left in_flight rows: {s}"
    );
    assert_eq!(num(&s, "unknown"), 0, "{s}");
    assert_eq!(num(&s, "sent") as usize, at_stop, "{s}");

    let (code, err) = camp.send("second.err", &[], Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "rerun: {err}");
    let got = tally(&sink);
    for a in &list {
        assert_eq!(got.get(a).copied(), Some(1), "{a}");
    }
    assert_eq!(sink.count(), N);
    eprintln!(
        "SIG{sig}: {at_stop} sent before the signal, {} after",
        N - at_stop
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_130_and_rerun_completes_without_duplicates() {
    interrupt_exits_130_and_rerun_completes("INT", "intr", "i").await;
}

/// SIGTERM (a service manager stopping blast) gets the same graceful stop as Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_130_and_rerun_completes_without_duplicates() {
    interrupt_exits_130_and_rerun_completes("TERM", "term", "t").await;
}

// ------------------------------------------------------------------ state dir

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncreatable_state_dir_is_a_clear_error_and_nothing_is_sent() {
    let sink = start_sink(Vec::new()).await;
    // Root ignores permission bits, so use a path whose parent is a regular file.
    let camp = Camp::new("ro", sink.addr, "state_dir = \"blocker/state\"", "");
    std::fs::write(camp.path("blocker"), "a file, not a directory\n").unwrap();
    camp.write_list(&addrs("s", 20, 2));
    let (code, err) = camp.send("send.err", &[], Duration::from_secs(30)).await;
    assert!(
        matches!(code, Some(1) | Some(2)),
        "exit {code:?}, stderr: {err}"
    );
    assert!(
        err.contains(&camp.path("blocker").display().to_string()),
        "the error does not name the path: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(sink.count(), 0);
    assert_eq!(sink.connections(), 0, "connected to the relay anyway");
    eprintln!("state dir: exit {code:?}: {}", err.trim());
}

// ------------------------------------------------------------------ import idempotence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_list_adds_new_rows_and_skips_removed_ones() {
    let list = addrs("r", 100, 5);
    // r0..r9 get one 451 each (per recipient: greylisting-like, not a throttling signal).
    let rules = list[..10]
        .iter()
        .map(|a| Rule {
            pattern: a.clone(),
            action: Action::RcptReply(451, "4.2.0 mailbox busy, try again".into()),
            times: Some(1),
            fraction: 1.0,
        })
        .collect();
    let sink = start_sink(rules).await;
    let camp = Camp::new(
        "imp",
        sink.addr,
        "state_dir = \"state\"",
        "retry = [\"1s\", \"1s\"]\nwait_for_retries = \"0s\"",
    );
    camp.write_list(&list);
    let (code, err) = camp.send("first.err", &[], Duration::from_secs(60)).await;
    assert_eq!(code, Some(75), "first run: {err}");
    let s = camp.status().await;
    assert_eq!(num(&s, "sent"), 90, "{s}");
    assert_eq!(num(&s, "deferred"), 10, "{s}");
    assert_eq!(sink.count(), 90);

    // Remove 5 sent rows (r50..r54) and 2 deferred rows (r0, r1); add 5 new rows.
    let mut edited: Vec<String> = list
        .iter()
        .enumerate()
        .filter(|(i, _)| !(50..55).contains(i) && *i >= 2)
        .map(|(_, a)| a.clone())
        .collect();
    let new = addrs("n", 5, 5);
    edited.extend(new.iter().cloned());
    camp.write_list(&edited);

    // Let the deferred rows' retry time (1 s ± 10%) come.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (code, err) = camp.send("second.err", &[], Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "rerun: {err}");
    assert!(
        err.contains("2 recipients are no longer in the lists"),
        "rerun does not report the 2 removed rows: {err}"
    );

    let got = tally(&sink);
    for a in &list[..2] {
        assert_eq!(got.get(a), None, "{a} was removed from the list but sent");
        assert_eq!(sink.attempts(a), 1, "{a} retried after removal");
    }
    for a in list[2..].iter().chain(&new) {
        assert_eq!(got.get(a).copied(), Some(1), "{a}");
    }
    assert_eq!(sink.count(), 90 + 8 + 5);
    let s = camp.status().await;
    assert_eq!(num(&s, "total"), 105, "{s}");
    assert_eq!(num(&s, "sent"), 103, "{s}");
    assert_eq!(num(&s, "skipped"), 2, "{s}");
    assert_eq!(num(&s, "deferred"), 0, "{s}");
    let states = camp.states();
    assert_eq!(states[&list[0]], State::Skipped);
    assert_eq!(
        states[&list[50]],
        State::Sent,
        "a sent row removed from the list stays sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_sigint_exits_at_once_and_rerun_never_duplicates() {
    const N: usize = 600;
    let (sink, camp, list, mut child) = interrupted_send_setup("intr2", "j", N).await;
    let pid = child.id().expect("pid");
    signal(pid, "INT");
    // The second Ctrl-C has to come after the handler re-armed; a person is slower than this.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if child.try_wait().unwrap().is_none() {
        signal(pid, "INT");
    }
    let st = wait_bounded(&mut child, Duration::from_secs(30)).await;
    assert_eq!(st.code(), Some(130), "{st:?}\n{}", camp.log("first.err"));

    let (code, err) = camp.send("second.err", &[], Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "rerun: {err}");
    let got = tally(&sink);
    let states = camp.states();
    for a in &list {
        match (got.get(a).copied().unwrap_or(0), states[a]) {
            (1, State::Sent | State::Unknown) | (0, State::Unknown) => {}
            (n, s) => panic!("{a}: received {n} times, state {s:?}"),
        }
    }
    eprintln!(
        "double interrupt: {} delivered, {} unknown",
        got.len(),
        states.values().filter(|s| **s == State::Unknown).count()
    );
}

/// A tmpfs mounted for the test, unmounted on drop (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` when this machine does not let us mount (not root, or no CAP_SYS_ADMIN).
    fn mount(at: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(at))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `path` until a write fails with ENOSPC.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
        if n > 1 << 30 {
            panic!("filled 1 GiB without running out of space");
        }
    }
    let _ = f.sync_all();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_mid_send_stops_cleanly_and_rerun_never_duplicates() {
    const N: usize = 3_000;
    let sink = start_sink(Vec::new()).await;
    let camp = Camp::new(
        "full",
        sink.addr,
        "state_dir = \"state\"",
        "rate = \"500/s\"",
    );
    let Some(_mnt) = Tmpfs::mount(camp.path("state"), "64m") else {
        eprintln!("disk full: cannot mount a tmpfs here; test skipped");
        return;
    };
    let list = addrs("f", N, 10);
    camp.write_list(&list);
    let mut child = camp.spawn_send("first.err", &[]);
    camp.wait_for_sink(&mut child, &sink, 200, Duration::from_millis(5))
        .await;
    let filler = camp.path("state").join("filler");
    let filled = fill(&filler);
    let st = wait_bounded(&mut child, Duration::from_secs(60)).await;
    let err = camp.log("first.err");
    let at_full = sink.count();
    eprintln!(
        "disk full: filled {filled} bytes after {at_full} deliveries; exit {:?}: {}",
        st.code(),
        err.trim()
    );
    assert!(
        !err.contains("panicked"),
        "blast panicked on a full disk: {err}"
    );
    assert_eq!(st.code(), Some(1), "a full disk is exit 1: {err}");
    assert!(
        err.contains("No space left"),
        "the error does not say the disk is full: {err}"
    );
    // Said in words (issue 11 item 9): what happened, which path, that nothing recorded is
    // lost, how to resume; not sled's Debug text.
    assert!(err.contains("the disk is full"), "{err}");
    let state = camp.path("state").display().to_string();
    assert!(
        err.contains(&state),
        "the error does not name the path: {err}"
    );
    assert!(err.contains("nothing already recorded is lost"), "{err}");
    assert!(
        err.contains("run the same `blast send` again to resume"),
        "{err}"
    );
    assert!(!err.contains("Os {"), "raw io::Error Debug text: {err}");
    assert!(at_full < N, "everything was sent before the disk filled up");

    std::fs::remove_file(&filler).unwrap();
    let (code, err) = camp.send("second.err", &[], Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "rerun after freeing space: {err}");
    let got = tally(&sink);
    let states = camp.states();
    for a in &list {
        match (got.get(a).copied().unwrap_or(0), states[a]) {
            (1, State::Sent | State::Unknown) | (0, State::Unknown) => {}
            (n, s) => panic!("{a}: received {n} times, state {s:?}"),
        }
    }
}

// ------------------------------------------------------------------ issue 10: bounces and kill -9

/// SIGKILLs `child` as soon as `ready()` holds (polled every millisecond, ≤ 60 s). `false`
/// when the child exited on its own first.
async fn kill9_when(child: &mut Child, camp: &Camp, log: &str, ready: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while !ready() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the moment to kill never came: {}",
            camp.log(log)
        );
        if let Ok(Some(st)) = child.try_wait() {
            eprintln!("{log}: exited on its own {st:?} before the kill");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.start_kill().expect("SIGKILL");
    let st = child.wait().await.expect("wait after kill");
    st.code().is_none()
}

/// The promise a lane's writer keeps at every instant: a recipient recorded as an
/// address-level bounce is on the suppression list (the list is written and made durable
/// before the group's results are committed). Checked right after a `kill -9`, with nothing
/// holding either store. Returns the number of committed address bounces.
async fn assert_committed_bounces_are_suppressed(camp: &Camp, when: &str) -> usize {
    let recs = camp.records();
    let listed = camp.suppressed().await;
    let committed: Vec<&String> = recs
        .iter()
        .filter(|(_, r)| r.is_address_bounce())
        .map(|(a, _)| a)
        .collect();
    let missing: Vec<&&String> = committed.iter().filter(|a| !listed.contains(**a)).collect();
    assert!(
        missing.is_empty(),
        "{when}: {} of {} committed 5.1.1 bounces are not on the suppression list, e.g. {:?}",
        missing.len(),
        committed.len(),
        &missing[..missing.len().min(5)]
    );
    committed.len()
}

/// 3,000 recipients, 60 of them answered `550 5.1.1` at RCPT; `blast send` is SIGKILLed right
/// after the first rejections and again half-way, then rerun to completion. At each kill every
/// committed bounce is already on the suppression list; at the end all 60 are, and a second
/// campaign over the same list on the same state dir mails none of them. `in_flight =
/// "resend"`: a bad address whose RCPT was answered but whose result was not committed at the
/// kill is tried again (and rejected again), so the end state does not depend on where the kill
/// fell (under "skip" it would be `unknown`, a rejection blast never learnt of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_user_unknown_bounces_every_bounce_ends_suppressed() {
    const N: usize = 3_000;
    let list = addrs("b", N, 10);
    // Every 50th address, spread over the whole send: 60.
    let bad: Vec<String> = list.iter().skip(25).step_by(50).cloned().collect();
    assert_eq!(bad.len(), 60);
    let rules = crate::pipeline::user_unknown(&bad);
    let sink = start_sink(rules).await;
    let camp = Camp::new(
        "bounce",
        sink.addr,
        "state_dir = \"state\"\nin_flight = \"resend\"",
        // ~10 s for the whole list: both kills land while it is sending.
        "rate = \"300/s\"\nconnections = 4",
    );
    camp.write_list(&list);
    let rejected = || bad.iter().filter(|a| sink.attempts(a) > 0).count();

    // Kill 1: as soon as the sink has rejected the first bad addresses (their results are
    // likely still on the way to the writer, or between the list and the commit).
    let mut child = camp.spawn_send("run1.err", &[]);
    let killed1 = kill9_when(&mut child, &camp, "run1.err", || rejected() >= 2).await;
    assert!(
        killed1,
        "run 1 ended before the kill: {}",
        camp.log("run1.err")
    );
    let at1 = assert_committed_bounces_are_suppressed(&camp, "after kill 1").await;
    let sent1 = sink.count();

    // Kill 2: half-way through the bad addresses.
    let mut child = camp.spawn_send("run2.err", &[]);
    let killed2 = kill9_when(&mut child, &camp, "run2.err", || rejected() >= 30).await;
    assert!(
        killed2,
        "run 2 ended before the kill: {}",
        camp.log("run2.err")
    );
    let at2 = assert_committed_bounces_are_suppressed(&camp, "after kill 2").await;
    let sent2 = sink.count();
    assert!(sent2 < N - bad.len(), "everything was sent before kill 2");

    let (code, err) = camp.send("run3.err", &[], Duration::from_secs(120)).await;
    assert_eq!(code, Some(0), "rerun to completion: {err}");
    eprintln!(
        "bounce/kill9: kill 1 after {sent1} delivered ({at1} bounces committed), kill 2 after \
         {sent2} ({at2} committed); rejections seen by the sink per bad address: max {}",
        bad.iter().map(|a| sink.attempts(a)).max().unwrap_or(0)
    );

    let listed = camp.suppressed().await;
    let bad_set: HashSet<String> = bad.iter().cloned().collect();
    let not_listed: Vec<_> = bad_set.difference(&listed).collect();
    assert!(
        not_listed.is_empty(),
        "{} 5.1.1 addresses are not on the suppression list, e.g. {:?}",
        not_listed.len(),
        &not_listed[..not_listed.len().min(5)]
    );
    assert_eq!(listed, bad_set, "only the 5.1.1 addresses are suppressed");
    let recs = camp.records();
    for a in &bad {
        let r = &recs[a];
        assert!(r.is_address_bounce(), "{a}: {r:?}");
        assert!(r.last_reply.contains("5.1.1"), "{a}: {r:?}");
    }
    let got = tally(&sink);
    for a in list.iter().filter(|a| !bad_set.contains(*a)) {
        assert!(got.contains_key(a), "{a} never delivered");
        assert_eq!(recs[a].state, State::Sent, "{a}");
    }

    // A second campaign over the same list, on the same state dir, to a fresh relay.
    let sink2 = start_sink(Vec::new()).await;
    let second = camp.path("second.toml");
    std::fs::write(
        &second,
        camp.toml_with(&[
            ("id = \"bounce\"", "id = \"bounce2\""),
            (&sink.addr.to_string(), &sink2.addr.to_string()),
        ]),
    )
    .unwrap();
    let out = run(
        &["send", second.to_str().unwrap(), "--quiet"],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "second campaign: {out:?}");
    let mailed: Vec<&String> = bad.iter().filter(|a| sink2.attempts(a) > 0).collect();
    assert!(
        mailed.is_empty(),
        "the second campaign mailed {} suppressed addresses, e.g. {:?}",
        mailed.len(),
        &mailed[..mailed.len().min(5)]
    );
    let got2 = tally(&sink2);
    assert_eq!(got2.len(), N - bad.len());
    assert!(got2.values().all(|&n| n == 1), "second campaign duplicated");
}

// ------------------------------------------------------------------ issue 10: an unavailable relay

/// A relay that answers every RCPT with `421 4.7.0 … closing` and hangs up (PIPELINING
/// advertised, so the next message's MAIL/RCPT/DATA are already on the wire when the 421
/// comes). A 421 is throttling for the destination: the lane backs off (1 s, doubling) instead
/// of reconnecting at once, spends no retry, and ends the run with exit 75 once the relay has
/// been unavailable for longer than `wait_for_retries`. A rerun against a healthy relay
/// delivers everyone exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rcpt_421_backs_off_ends_with_75_and_spends_no_retry() {
    const N: usize = 200;
    const CONNECTIONS: usize = 4;
    let sink = start_sink(vec![Rule::new("*", Action::Reply421AtRcpt)]).await;
    let camp = Camp::new(
        "t421",
        sink.addr,
        "state_dir = \"state\"",
        &format!(
            "connections = {CONNECTIONS}\nbackoff = \"1s\"\nwait_for_retries = \"4s\"\n\
             retry = [\"2s\", \"4s\"]"
        ),
    );
    let list = addrs("p", N, 5);
    camp.write_list(&list);
    let (code, err) = camp.send("first.err", &[], Duration::from_secs(60)).await;
    let conns = sink.connections();
    eprintln!("421: exit {code:?}, {conns} connections; {}", err.trim());
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("unavailable since"), "{err}");
    // Within wait_for_retries (4 s) a backoff of 1 s that doubles leaves room for a handful of
    // rounds, each opening at most `connections` connections. Without the backoff a 421 was
    // a reconnect at once: thousands of connections in the same time.
    let bound = CONNECTIONS * (1 + 4);
    assert!(conns <= bound, "{conns} connections > {bound}");
    assert!(conns >= 1);
    assert_eq!(sink.count(), 0, "the sink accepted nothing");

    let recs = camp.records();
    assert_eq!(recs.len(), N);
    for (a, r) in &recs {
        assert!(
            matches!(r.state, State::Pending | State::Deferred),
            "{a} is {:?} after 421s: {r:?}",
            r.state
        );
        assert_eq!(r.attempts, 0, "{a}: a 421 spent a retry: {r:?}");
    }

    let sink2 = start_sink(Vec::new()).await;
    std::fs::write(
        &camp.toml,
        camp.toml_with(&[(&sink.addr.to_string(), &sink2.addr.to_string())]),
    )
    .unwrap();
    let (code, err) = camp.send("second.err", &[], Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "rerun against a healthy relay: {err}");
    let got = tally(&sink2);
    for a in &list {
        assert_eq!(got.get(a).copied(), Some(1), "{a}");
    }
    assert_eq!(sink2.count(), N);
}

/// Which list rows (the `C-<index>` code the template puts in every body) the `.eml` files of
/// a sink's maildir hold, and how often each.
fn maildir_codes(dir: &std::path::Path) -> HashMap<usize, usize> {
    let mut m = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        // `.<seq>.eml.tmp`: a write cut short by the sink's shutdown, never answered 250.
        if !name.ends_with(".eml") || name.starts_with('.') {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).replace("=\r\n", "");
        let i = text
            .split("your code is C-")
            .nth(1)
            .and_then(|t| t.get(..6))
            .and_then(|d| d.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{name}: no code in {text}"));
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// The relay goes away mid-send (the sink is shut down, so its port refuses): `blast send`
/// ends on its own with exit 75 once the relay has been unavailable for longer than
/// `wait_for_retries`, says since when, fails nobody and leaves every unsent recipient pending
/// or deferred. The relay comes back on the same port; a rerun delivers everyone, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_gone_mid_send_exits_75_and_rerun_delivers_everyone_once() {
    const N: usize = 800;
    const CONNECTIONS: usize = 4;
    let maildir = tempfile::tempdir().unwrap();
    // Both sink instances write to one maildir: the count spans both runs.
    let config = || SinkConfig {
        maildir: Some(maildir.path().to_path_buf()),
        ..Default::default()
    };
    let sink = start_sink_with(config()).await;
    let addr = sink.addr;
    let camp = Camp::new(
        "down",
        addr,
        "state_dir = \"state\"",
        &format!("rate = \"100/s\"\nconnections = {CONNECTIONS}\nwait_for_retries = \"3s\""),
    );
    let list = addrs("g", N, 4);
    camp.write_list(&list);
    let mut child = camp.spawn_send("first.err", &[]);
    camp.wait_for_sink(&mut child, &sink, 100, Duration::from_millis(10))
        .await;
    sink.shutdown().await;
    let stopped = Instant::now();

    // wait_for_retries (3 s) + a connect timeout (5 s) + slack; far less in practice.
    let st = wait_bounded(&mut child, Duration::from_secs(60)).await;
    let took = stopped.elapsed();
    let err = camp.log("first.err");
    eprintln!(
        "relay down: exit {:?} {took:?} after the relay stopped: {}",
        st.code(),
        err.trim()
    );
    assert_eq!(st.code(), Some(75), "{err}");
    assert!(err.contains("unavailable since"), "{err}");
    let first = maildir_codes(maildir.path());
    assert!(
        first.len() < N,
        "everything was sent before the relay went away"
    );

    let recs = camp.records();
    assert_eq!(recs.len(), N);
    let mut by_state: HashMap<State, usize> = HashMap::new();
    for (a, r) in &recs {
        *by_state.entry(r.state).or_insert(0) += 1;
        assert!(
            matches!(r.state, State::Sent | State::Pending | State::Deferred),
            "{a} is {:?} after the relay went away: {r:?}",
            r.state
        );
    }
    eprintln!("relay down: states {by_state:?}");

    // The relay is back on the same port.
    let sink = blast::sink::start(addr, config())
        .await
        .expect("restart the sink on the same port");
    let (code, err) = camp.send("second.err", &[], Duration::from_secs(90)).await;
    assert_eq!(code, Some(0), "rerun after the relay came back: {err}");
    let all = maildir_codes(maildir.path());
    let never: Vec<usize> = (0..N).filter(|i| !all.contains_key(i)).collect();
    assert!(never.is_empty(), "never delivered: {never:?}");
    // Exactly once, but for one case: the sink's shutdown aborts its open connections, and a
    // message whose final dot it had read (the .eml is written before the 250) may have lost
    // its 250 on the way; blast resends such a message by design. At most one per connection
    // open at the stop.
    let dups: Vec<(usize, usize)> = all
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&i, &n)| (i, n))
        .collect();
    assert!(
        dups.len() <= CONNECTIONS && dups.iter().all(|&(_, n)| n == 2),
        "duplicates beyond one lost reply per connection: {dups:?}"
    );
    assert!(
        dups.iter().all(|(i, _)| first.contains_key(i)),
        "a duplicate that was not in flight when the relay went away: {dups:?}"
    );
    eprintln!(
        "relay down: {} delivered before the stop, {} duplicates (lost 250s)",
        first.values().sum::<usize>(),
        dups.len()
    );
    let states = camp.states();
    assert!(states.values().all(|s| *s == State::Sent), "{by_state:?}");
    sink.shutdown().await;
}
