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

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::pipeline::start_sink;
use blast::sink::{Action, Rule, SinkHandle};
use blast::store::campaign::CampaignStore;
use blast::store::record::State;
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
        let dir = self.path("state").join(&self.id).join("store");
        let st = CampaignStore::open(&dir, Duration::from_secs(5)).expect("open store");
        st.iter()
            .map(|kv| {
                let (_, r) = kv.expect("store record");
                (r.address.to_ascii_lowercase(), r.state)
            })
            .collect()
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
