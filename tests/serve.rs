//! `blast serve` as a real process: authenticated submission delivered through the priority
//! lane to a sink, a message accepted then `kill -9` delivered once after restart, a second
//! serve on the same state dir refused, `blast queue` through the control socket.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use blast::sink::SinkConfig;
use blast::store::queue::{NewMessage, QueueStore};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A serve config in a temp dir with one user (`app` / `s3cret`, domain acme.example).
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
}

impl Setup {
    pub(crate) fn new(relay: SocketAddr) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("blast.toml"),
            format!(
                "[serve]\nsubmission = \"127.0.0.1:0\"\nhostname = \"mx.acme.example\"\nshutdown_timeout = \"5s\"\n\n[priority]\ntransport = \"smtp://{relay}\"\nhelo = \"mx.acme.example\"\nconnect_timeout = \"1s\"\n"
            ),
        )
        .unwrap();
        blast::serve::users::add_user(
            &dir.path().join("users.txt"),
            "app",
            "s3cret",
            &["acme.example".to_string()],
        )
        .unwrap();
        Setup { dir }
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("blast.toml")
    }

    /// Starts `blast serve` and waits for the line that names the submission address.
    fn spawn(&self) -> (Child, SocketAddr) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_blast"))
            .args(["serve", "--config"])
            .arg(self.config())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        (child, addr)
    }

    /// Starts `blast serve` (stderr discarded) and returns its first stdout line, the one
    /// that names every listener.
    pub(crate) fn spawn_first_line(&self) -> (Child, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_blast"))
            .args(["serve", "--config"])
            .arg(self.config())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line)
    }

    pub(crate) fn blast(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_blast"))
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap()
    }
}

/// Submits one message with AUTH PLAIN (loopback, no TLS); returns the final reply.
async fn submit(addr: SocketAddr, from: &str, to: &str, subject: &str) -> String {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r);
    async fn reply(r: &mut (impl AsyncBufReadExt + Unpin)) -> String {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            tokio::time::timeout(WAIT, r.read_line(&mut l))
                .await
                .expect("reply in time")
                .unwrap();
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }
    reply(&mut r).await;
    let token = base64::engine::general_purpose::STANDARD.encode(b"\0app\0s3cret");
    for cmd in [
        "EHLO client.example\r\n".to_string(),
        format!("AUTH PLAIN {token}\r\n"),
        format!("MAIL FROM:<{from}>\r\n"),
        format!("RCPT TO:<{to}>\r\n"),
        "DATA\r\n".to_string(),
    ] {
        w.write_all(cmd.as_bytes()).await.unwrap();
        let rep = reply(&mut r).await;
        let code = &rep[..3];
        assert!(
            code.starts_with('2') || code.starts_with('3'),
            "{cmd:?} -> {rep}"
        );
    }
    let body = format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nhello\r\n.\r\n");
    w.write_all(body.as_bytes()).await.unwrap();
    let rep = reply(&mut r).await;
    let _ = w.write_all(b"QUIT\r\n").await;
    rep
}

pub(crate) async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub(crate) fn term(mut child: Child) -> std::process::ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(t0.elapsed() < WAIT, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_mail_is_delivered_through_the_priority_lane() {
    let sink = blast::sink::start("127.0.0.1:0".parse().unwrap(), SinkConfig::default())
        .await
        .unwrap();
    let setup = Setup::new(sink.addr);
    let (child, addr) = setup.spawn();
    let rep = submit(addr, "app@acme.example", "user@x.example", "reset").await;
    assert!(rep.starts_with("250"), "{rep}");
    wait_until("delivery", || sink.count() == 1).await;
    let got = &sink.received()[0];
    assert_eq!(got.mail_from, "app@acme.example");
    assert_eq!(got.rcpt_to, vec!["user@x.example"]);
    let text = String::from_utf8_lossy(&got.data);
    assert!(text.contains("Subject: reset"));
    assert!(
        text.contains("\r\nMessage-ID: <") || text.starts_with("Message-ID: <"),
        "{text}"
    );
    assert!(text.contains("Date: "), "{text}");
    assert!(term(child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_then_kill_9_is_delivered_once_after_restart() {
    // The relay is down at first: the message waits in the queue when serve is killed.
    let relay = free_port();
    let setup = Setup::new(relay);
    let (mut child, addr) = setup.spawn();
    let rep = submit(addr, "app@acme.example", "late@x.example", "kill").await;
    assert!(rep.starts_with("250"), "{rep}");
    let id = rep.split_whitespace().last().unwrap().trim().to_string();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // While serve is down, `blast queue list` reads the store itself.
    let out = setup.blast(&["queue", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}", out);
    assert!(listed.contains(&id), "{listed}");
    // The recipient's state reads the same in text as in --json (issue 11 item 14: text said
    // `Deferred`, JSON `deferred`).
    let out = setup.blast(&["queue", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("queue list --json");
    let state = v[0]["rcpts"][0]["status"]
        .as_str()
        .expect("a status")
        .to_string();
    assert!(
        listed.contains(&format!("late@x.example ({state}, ")),
        "{state}: {listed}"
    );

    let sink = blast::sink::start(relay, SinkConfig::default())
        .await
        .unwrap();
    let (child, _) = setup.spawn();
    wait_until("delivery after restart", || sink.count() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 1, "delivered exactly once");
    assert_eq!(sink.received()[0].rcpt_to, vec!["late@x.example"]);
    assert!(term(child).success());
    let out = setup.blast(&["queue", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("queue is empty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_refuses_and_queue_commands_reach_the_running_one() {
    let relay = free_port();
    let setup = Setup::new(relay);
    let (child, addr) = setup.spawn();
    let out = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["serve", "--config"])
        .arg(setup.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process"), "{err}");

    use std::os::unix::fs::PermissionsExt;
    let sock = setup.dir.path().join(".blast/control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only serve's user may drop or retry mail");
    let rep = submit(addr, "app@acme.example", "a@x.example", "q").await;
    let id = rep.split_whitespace().last().unwrap().to_string();
    let out = setup.blast(&["queue", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let out = setup.blast(&["queue", "stats"]);
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(stats.contains("accepted"), "{stats}");
    let out = setup.blast(&["queue", "drop", &id]);
    assert!(out.status.success(), "{out:?}");
    let out = setup.blast(&["queue", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("queue is empty"));
    let out = setup.blast(&["queue", "drop", &id]);
    assert!(!out.status.success());
    // Issue 11.1: retrying an id that is not queued is an error, never "due now".
    for unknown in ["999999", "00000000000F423F"] {
        let out = setup.blast(&["queue", "retry", unknown]);
        assert!(!out.status.success(), "retry {unknown}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not in the queue") || err.contains("not a queue id"),
            "{err}"
        );
    }
    assert!(term(child).success());
    assert!(!Path::new(&setup.dir.path().join(".blast/control.sock")).exists());
}

/// Issue 11.1: 24 messages wait behind a dead relay (serve stopped); dropping by the id that
/// `queue list --json` gives removes exactly that message (a decimal id once read as hex
/// removed another), and `retry` of an id that is not queued fails like `drop` does.
#[test]
fn queue_drop_removes_the_message_whose_json_id_it_is_given() {
    let setup = Setup::new(free_port());
    let state = setup.dir.path().join(".blast");
    {
        let q = QueueStore::open(&state, Duration::from_secs(5)).unwrap();
        for i in 0..24 {
            q.insert(NewMessage {
                mail_from: "app@acme.example".into(),
                rcpt_to: vec![format!("r{i}@x.example")],
                data: format!("Subject: {i}\r\n\r\nbody\r\n").into_bytes(),
                user: Some("app".into()),
                smtputf8: false,
                eight_bit: false,
            })
            .unwrap();
        }
        q.flush_now().unwrap();
    }
    let listed = |setup: &Setup| -> Vec<(String, String)> {
        let out = setup.blast(&["queue", "list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let id = match &e["id"] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (id, e["rcpts"][0]["addr"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let before = listed(&setup);
    assert_eq!(before.len(), 24);
    let (id, addr) = before[10].clone();
    let out = setup.blast(&["queue", "drop", &id]);
    assert!(out.status.success(), "{out:?}");
    let after = listed(&setup);
    assert_eq!(after.len(), 23);
    assert!(
        !after.iter().any(|(_, a)| *a == addr),
        "{addr} still queued"
    );
    // The text listing spells the ids the same way.
    let out = setup.blast(&["queue", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for (id, _) in &after {
        assert!(text.contains(id.as_str()), "{id} not in {text}");
    }
    let out = setup.blast(&["queue", "retry", &id]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the queue"));
    let out = setup.blast(&["queue", "retry", "999999"]);
    assert!(!out.status.success(), "{out:?}");
}

/// Issue 6 at process level: `blast serve` is killed with SIGKILL in the middle of a
/// scheduled run; after the restart the run is resumed under the same id (never claimed
/// again), and the sink sees every recipient at most once (`in_flight = "skip"`: the ones
/// open at the kill are `unknown`, never sent twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_scheduled_run_resumes_the_same_run_once() {
    use blast::sink::{Action, Rule};
    use std::time::Duration as D;
    // Slow replies keep the run going long enough to be killed in the middle.
    let sink =
        crate::pipeline::start_sink(vec![Rule::new("*", Action::Delay(D::from_millis(20)))]).await;
    let setup = Setup::new(free_port());
    let f = crate::pipeline::Fixture::new();
    let list = crate::pipeline::addrs("s", "sched.example", 300);
    // One slot, after serve's first scan (it never runs a first-seen campaign's past slot).
    let slot = chrono::Utc::now() + chrono::Duration::seconds(3);
    let cron = slot.format("%S %M %H %d %m *").to_string();
    crate::schedule::scheduled(
        &f,
        "weekly",
        sink.addr,
        &list,
        "connections = 2\n",
        &format!("cron = \"{cron}\"\ntimezone = \"UTC\""),
    );
    let config = setup.config();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[serve]\n",
        &format!("[serve]\ncampaigns_dir = \"{}\"\n", f.dir.path().display()),
    );
    std::fs::write(&config, text).unwrap();

    let (mut child, _) = setup.spawn();
    wait_until("the run is half-way", || sink.count() >= 60).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = sink.count();
    assert!(at_kill < list.len(), "killed before the end");

    let (child, _) = setup.spawn();
    let state = setup.dir.path().join(".blast");
    wait_until("the resumed run finished", || {
        blast::schedule::claims::Snapshot::read(&state)
            .ok()
            .flatten()
            .is_some_and(|s| s.runs.iter().any(|r| r.status.name() != "running"))
    })
    .await;
    assert!(term(child).success());
    let runs = crate::schedule::runs(&state, "weekly");
    assert_eq!(runs.len(), 1, "one run for the one slot: {runs:?}");
    let run = &runs[0];
    assert_eq!(run.status.name(), "done", "{run:?}");
    assert!(run.attempts >= 2, "resumed, not claimed again: {run:?}");
    let by = crate::pipeline::by_rcpt(&sink);
    assert!(by.values().all(|v| v.len() == 1), "nobody twice");
    // `unknown` = the transaction was open at the kill: the sink may or may not have it.
    let unknown = run.counts.get("unknown").copied().unwrap_or(0);
    let sent = run.counts.get("sent").copied().unwrap_or(0);
    assert_eq!(sent + unknown, list.len() as u64, "{run:?}");
    let received = by.len() as u64;
    assert!(
        (sent..=sent + unknown).contains(&received),
        "{received} received for {run:?}"
    );
}

/// `blast suppress --config blast.toml list` (through serve's control socket while it runs,
/// else the store opened directly): the listed keys.
fn global_list(setup: &Setup) -> std::collections::HashSet<String> {
    let out = tokio::task::block_in_place(|| setup.blast(&["suppress", "list"]));
    assert!(out.status.success(), "blast suppress list: {out:?}");
    crate::durability::suppress_keys(&String::from_utf8_lossy(&out.stdout))
}

/// The address-level bounces committed to the one run's store under serve's state dir
/// (`runs/<campaign>/<run id>/store`; read while no serve holds it).
fn committed_bounces(state: &Path, campaign: &str) -> Vec<String> {
    let dir = state.join("runs").join(campaign);
    let runs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path().join("store"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(runs.len(), 1, "one run store: {runs:?}");
    let store = blast::store::campaign::CampaignStore::open(&runs[0], Duration::from_secs(10))
        .expect("open the run's store");
    store
        .iter()
        .map(|kv| kv.expect("record").1)
        .filter(|r| r.is_address_bounce())
        .map(|r| r.address.to_ascii_lowercase())
        .collect()
}

/// Issue 10 inside `blast serve`: a scheduled run of 1,000 recipients, 20 of them `550 5.1.1`
/// at RCPT; serve is SIGKILLed right after the first rejections and again later, restarted,
/// and the run resumes to completion. At each kill every committed bounce is already on
/// serve's global list (serve down: the command opens the store, past the stale socket); at
/// the end all 20 are, seen through the control socket while serve runs and from the store
/// after it stops, and a campaign sent with `--config blast.toml` mails none of them.
/// `in_flight = "resend"` so a rejection not yet committed at a kill is met again on resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_serve_after_user_unknown_bounces_keeps_them_on_the_global_list() {
    use std::collections::HashSet;
    const N: usize = 1_000;
    let list = crate::pipeline::addrs("s", "sched.example", N);
    let bad: Vec<String> = list.iter().skip(10).step_by(50).cloned().collect();
    assert_eq!(bad.len(), 20);
    let rules = crate::pipeline::user_unknown(&bad);
    let sink = crate::pipeline::start_sink(rules).await;
    let setup = Setup::new(free_port());
    let f = crate::pipeline::Fixture::new();
    // One slot, after serve's first scan (it never runs a first-seen campaign's past slot).
    let slot = chrono::Utc::now() + chrono::Duration::seconds(3);
    let cron = slot.format("%S %M %H %d %m *").to_string();
    let file = crate::schedule::scheduled(
        &f,
        "weekly",
        sink.addr,
        &list,
        // ~7 s for the run: both kills land in the middle of it.
        "rate = \"150/s\"\nconnections = 2\n",
        &format!("cron = \"{cron}\"\ntimezone = \"UTC\""),
    );
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "state_dir = \"state\"\n",
        "state_dir = \"state\"\nin_flight = \"resend\"\n",
    );
    std::fs::write(&file, text).unwrap();
    let config = setup.config();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[serve]\n",
        &format!("[serve]\ncampaigns_dir = \"{}\"\n", f.dir.path().display()),
    );
    std::fs::write(&config, text).unwrap();
    let state = setup.dir.path().join(".blast");
    let rejected = || bad.iter().filter(|a| sink.attempts(a) > 0).count();

    for (kill, after) in [(1, 2), (2, 10)] {
        let (mut child, _) = setup.spawn();
        let t0 = Instant::now();
        while rejected() < after {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "kill {kill}: only {} rejections",
                rejected()
            );
            assert!(child.try_wait().unwrap().is_none(), "serve exited");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let committed = committed_bounces(&state, "weekly");
        let listed = global_list(&setup);
        let missing: Vec<&String> = committed.iter().filter(|a| !listed.contains(*a)).collect();
        assert!(
            missing.is_empty(),
            "kill {kill}: committed 5.1.1 bounces not on the global list: {missing:?}"
        );
        eprintln!(
            "serve kill {kill}: {} delivered, {} bounces committed, {} listed",
            sink.count(),
            committed.len(),
            listed.len()
        );
    }
    assert!(sink.count() < N - bad.len(), "the run ended before kill 2");

    let (child, _) = setup.spawn();
    let t0 = Instant::now();
    while !blast::schedule::claims::Snapshot::read(&state)
        .ok()
        .flatten()
        .is_some_and(|s| s.runs.iter().any(|r| r.status.name() != "running"))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the resumed run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bad_set: HashSet<String> = bad.iter().cloned().collect();
    // serve runs: through its control socket.
    let listed = global_list(&setup);
    assert_eq!(listed, bad_set, "the global list while serve runs");

    // Another campaign over the same list with the server config, while serve runs.
    let sink2 = crate::pipeline::start_sink(Vec::new()).await;
    let g = crate::pipeline::Fixture::new();
    g.write("l.csv", crate::pipeline::csv_list(&list));
    let b = g.write(
        "b.toml",
        crate::pipeline::campaign_toml("b", sink2.addr, &["l.csv"], ""),
    );
    let out = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_blast"))
            .args(["send", "--quiet", "--config"])
            .arg(&config)
            .arg(&b)
            .output()
            .unwrap()
    });
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mailed: Vec<&String> = bad.iter().filter(|a| sink2.attempts(a) > 0).collect();
    assert!(mailed.is_empty(), "suppressed addresses mailed: {mailed:?}");
    assert_eq!(sink2.count(), N - bad.len());

    assert!(term(child).success());
    // serve stopped: the store itself.
    assert_eq!(
        global_list(&setup),
        bad_set,
        "the global list after serve stopped"
    );
    let runs = crate::schedule::runs(&state, "weekly");
    assert_eq!(runs.len(), 1, "one run for the one slot: {runs:?}");
    let run = &runs[0];
    assert_eq!(run.status.name(), "done", "{run:?}");
    assert!(
        run.attempts >= 3,
        "resumed twice, not claimed again: {run:?}"
    );
    assert_eq!(
        run.counts.get("bounced"),
        Some(&(bad.len() as u64)),
        "{run:?}"
    );
    assert_eq!(
        run.counts.get("sent"),
        Some(&((N - bad.len()) as u64)),
        "{run:?}"
    );
    let by = crate::pipeline::by_rcpt(&sink);
    assert_eq!(by.len(), N - bad.len(), "every good address delivered");
}

/// `blast send --config blast.toml`: a campaign's bounces go to serve's (global) suppression
/// list, which `blast suppress --config` shows and the next campaign honours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_with_the_server_config_shares_the_global_suppression_list() {
    use blast::sink::{Action, Rule};
    let sink = crate::pipeline::start_sink(vec![Rule::new(
        "gone@x.example",
        Action::RcptReply(550, "5.1.1 no such user".into()),
    )])
    .await;
    let setup = Setup::new(free_port());
    let f = crate::pipeline::Fixture::new();
    let list = vec!["ok@x.example".to_string(), "gone@x.example".to_string()];
    f.write("l.csv", crate::pipeline::csv_list(&list));
    let a = f.write(
        "a.toml",
        crate::pipeline::campaign_toml("a", sink.addr, &["l.csv"], ""),
    );
    let b = f.write(
        "b.toml",
        crate::pipeline::campaign_toml("b", sink.addr, &["l.csv"], ""),
    );
    let send = |campaign: &Path| {
        Command::new(env!("CARGO_BIN_EXE_blast"))
            .args(["send", "--quiet", "--config"])
            .arg(setup.config())
            .arg(campaign)
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| send(&a));
    assert!(out.status.success(), "{out:?}");
    let listed = setup.blast(&["suppress", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("gone@x.example"), "{listed}");
    assert!(
        !f.path("state/suppression").exists(),
        "the campaign's own state dir holds no list"
    );
    let out = tokio::task::block_in_place(|| send(&b));
    assert!(out.status.success(), "{out:?}");
    let by = crate::pipeline::by_rcpt(&sink);
    assert_eq!(by["ok@x.example"].len(), 2);
    assert_eq!(
        sink.attempts("gone@x.example"),
        1,
        "suppressed for campaign b"
    );
}

/// lettre, an application's mail library, submits to `blast serve` (AUTH over loopback, no
/// TLS) and the message arrives at the priority lane's relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_submits_to_serve_and_the_relay_receives_it() {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let sink = blast::sink::start("127.0.0.1:0".parse().unwrap(), SinkConfig::default())
        .await
        .unwrap();
    let setup = Setup::new(sink.addr);
    let (child, addr) = setup.spawn();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(addr.port())
        .credentials(Credentials::new("app".into(), "s3cret".into()))
        .build();
    let msg = Message::builder()
        .from("Acme <app@acme.example>".parse().unwrap())
        .to("user@x.example".parse().unwrap())
        .subject("Your password reset code")
        .body("Code: 424242".to_string())
        .unwrap();
    let rep = tokio::time::timeout(WAIT, mailer.send(msg))
        .await
        .expect("in time")
        .expect("accepted");
    assert!(rep.is_positive());
    wait_until("delivery", || sink.count() == 1).await;
    let got = &sink.received()[0];
    assert_eq!(got.mail_from, "app@acme.example");
    assert_eq!(got.rcpt_to, vec!["user@x.example"]);
    assert!(String::from_utf8_lossy(&got.data).contains("Subject: Your password reset code"));
    assert!(term(child).success());
}

/// Issue 11 item 14: without a users file, serve's hint is a command that exists and works
/// (it suggested `blast user add … --config`, an option `user add` does not have).
#[test]
fn missing_users_file_hint_is_a_working_command() {
    let setup = Setup::new("127.0.0.1:1".parse().unwrap());
    let users = setup.dir.path().join("users.txt");
    std::fs::remove_file(&users).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["serve", "--config"])
        .arg(setup.config())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let hint = format!(
        "blast user add NAME --domain DOMAIN --users {}",
        users.display()
    );
    assert!(err.contains(&hint), "{err}");
    // The hint, filled in, is accepted by the real `blast user add`.
    let out = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["user", "add", "app", "--domain", "acme.example", "--users"])
        .arg(&users)
        .env("BLAST_PASSWORD", "s3cret")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(users.exists());
}
