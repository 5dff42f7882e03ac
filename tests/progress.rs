//! Live progress that tells the truth (issue 15, item 1), through the real `blast` binary:
//!
//! - on a pseudo-terminal (tmux, 80×24) over a list of 200,000 rows: while the import runs the
//!   display shows the count imported so far marked as still growing, then the final total;
//!   no display line is wider than 80 columns; the send ends with the summary
//! - `--json-progress`: one JSON object per line on stdout, `deferred` counts recipients (not
//!   attempts), and the last object's figures are the store's (`blast status --json`)
//! - stderr not a terminal: plain lines whose last one carries the store's final counts
//!
//! The relay is blast's own sink on 127.0.0.1:0 in this process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pipeline::start_sink_with;
use blast::sink::{Action, Rule, SinkConfig, SinkHandle};

const BIN: &str = env!("CARGO_BIN_EXE_blast");

/// A campaign in a temp dir: `c.toml` sending `l.csv` to `relay`.
fn campaign(dir: &Path, relay: std::net::SocketAddr, csv: &str, lane_extra: &str) -> PathBuf {
    std::fs::write(dir.join("t.txt.hbs"), "Hello {{first_name}}.\n").unwrap();
    std::fs::write(dir.join("l.csv"), csv).unwrap();
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[campaign]\nid = \"prog\"\nfrom = \"news@acme.example\"\nsubject = \"Hi {{{{first_name}}}}\"\n\
             text = \"t.txt.hbs\"\nlists = [\"l.csv\"]\nstate_dir = \"state\"\n\n[lane]\n\
             transport = \"smtp://{relay}\"\nhelo = \"blast.test\"\nretry = [\"200ms\", \"400ms\"]\n\
             wait_for_retries = \"30s\"\n{lane_extra}"
        ),
    )
    .unwrap();
    p
}

/// `rows` rows over `unique` addresses (the rest repeat them: pruned as duplicates) in 50
/// domains.
fn list(rows: usize, unique: usize) -> String {
    let mut s = String::with_capacity(rows * 32);
    s.push_str("email,first_name\n");
    for i in 0..rows {
        let u = i % unique;
        s.push_str(&format!("u{u}@d{}.example,N{u}\n", u % 50));
    }
    s
}

/// `blast status --json` of the campaign, parsed.
fn status(toml: &Path) -> serde_json::Value {
    let o = Command::new(BIN)
        .args(["status", toml.to_str().unwrap(), "--json"])
        .output()
        .expect("run blast status");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("status --json is JSON")
}

async fn sink(rules: Vec<Rule>) -> SinkHandle {
    start_sink_with(SinkConfig {
        rules,
        record: false,
        ..Default::default()
    })
    .await
}

/// Runs `blast send` as a child (stderr a pipe, not a terminal), bounded in time.
async fn send(args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("blast send finished within 120 s")
        .expect("run blast send")
}

fn figure(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no number {k:?} in {v}"))
}

/// The display's figures agree with the store: `deferred` is recipients deferred now, never
/// more than the recipients that can be (here each of 100 is deferred twice: 200 attempts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_progress_lines_parse_and_the_last_one_is_the_store() {
    let slow = Rule {
        times: Some(2),
        ..Rule::new(
            "*@d7.example",
            Action::RcptReply(451, "4.3.0 try later".into()),
        )
    };
    let relay = sink(vec![slow]).await;
    let dir = tempfile::tempdir().unwrap();
    // 5,000 recipients, 100 of them in d7.example.
    let toml = campaign(
        dir.path(),
        relay.addr,
        &list(5_000, 5_000),
        "rate = \"2000/s\"\n",
    );
    let o = send(&["send", toml.to_str().unwrap(), "--json-progress", "--quiet"]).await;
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
    let objs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        objs.len() >= 2,
        "at least one object a second and a final one: {out}"
    );
    for v in &objs {
        assert!(
            figure(v, "deferred") <= 100,
            "deferred counts recipients: {v}"
        );
        assert!(figure(v, "done") <= figure(v, "total"), "{v}");
        assert!(
            v["rate_now"].is_u64() && v["rate_avg"].is_u64(),
            "whole numbers: {v}"
        );
        assert_eq!(v["limit"], "2000/s");
    }
    let last = objs.last().unwrap();
    assert_eq!(last["final"], true, "{last}");
    assert!(objs[..objs.len() - 1].iter().all(|v| v["final"] == false));
    let st = status(&toml);
    for k in ["sent", "deferred", "bounced", "failed", "skipped"] {
        assert_eq!(figure(last, k), figure(&st, k), "{k}: {last} vs {st}");
    }
    assert_eq!(figure(last, "sent"), 5_000);
    assert_eq!(
        (figure(last, "done"), figure(last, "total")),
        (5_000, 5_000)
    );
    assert_eq!(relay.count(), 5_000);
    // The quiet stderr has no progress lines, only the summary.
    assert!(!err.contains("[prog]"), "{err}");
}

/// stderr not a terminal: plain lines every few seconds, the last with the store's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_lines_carry_the_store_figures() {
    // A global rate makes the send last a few seconds, so plain lines appear on the way.
    let relay = sink(vec![Rule::new(
        "u1*@d1.example",
        Action::RcptReply(550, "5.1.1 no such user".into()),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = campaign(
        dir.path(),
        relay.addr,
        &list(4_000, 4_000),
        "rate = \"1000/s\"\n",
    );
    let o = send(&["send", toml.to_str().unwrap()]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    let plain: Vec<&str> = err.lines().filter(|l| l.starts_with("[prog] ")).collect();
    assert!(
        plain.len() >= 2,
        "plain lines on the way and a final one:\n{err}"
    );
    let last = plain.last().unwrap();
    assert!(last.starts_with("[prog] final: 4,000/4,000 done"), "{last}");
    let st = status(&toml);
    let n = |k: &str| blast::report::lines::num(figure(&st, k));
    let want = format!(
        "sent {} · deferred {} · bounced {} · failed {} · skipped {}",
        n("sent"),
        n("deferred"),
        n("bounced"),
        n("failed"),
        n("skipped")
    );
    assert!(last.contains(&want), "{last}\nwant {want}");
    assert!(figure(&st, "bounced") > 0, "the rule bounced some: {st}");
    for l in &plain {
        assert!(
            !l.contains('.') || !l.contains("/s now"),
            "whole numbers: {l}"
        );
    }
    assert!(err.contains("campaign prog: 4000 recipients"), "{err}");
}

/// The tmux server of this test, on a socket of its own: killing it touches no other tmux.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let ok = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "tmux is required for the pseudo-terminal test: apt-get install -y tmux \
             (.ci/run installs it)"
        );
        let t = Tmux {
            socket: format!("blast-progress-{}", std::process::id()),
        };
        let st = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
            ])
            .arg(cmd)
            .status()
            .expect("start tmux");
        assert!(st.success());
        t
    }

    /// The pane with its history, one string per screen row (indicatif pads each line to
    /// the width and lets the terminal wrap, so `-J` would join every display line).
    fn capture(&self) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-S", "-1000"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// No display line is wider than the 80-column pane: each display row is whole (a line that
/// wrapped would push its end onto the next row, breaking the expected sequence of rows:
/// bar, counts, rates and lane, then domain lines).
fn check_rows(screen: &str) {
    let rows: Vec<&str> = screen.lines().collect();
    for (i, r) in rows.iter().enumerate() {
        assert!(r.chars().count() <= 80, "row {i} wider than 80: {r:?}");
        if !(r.starts_with('[') && r.contains("] ")) {
            continue;
        }
        let whole = |j: usize, prefix: &str, end: &str| {
            let row = rows.get(i + j).copied().unwrap_or("").trim_end();
            assert!(
                row.starts_with(prefix) && (row.contains(end) || row.ends_with('…')),
                "display row {} is not whole (wrapped?): {row:?}\n{screen}",
                i + j
            );
        };
        whole(0, "[", "/");
        whole(1, "prog: sent ", " skipped ");
        whole(2, "", " · limit unlimited · ");
        for j in 3..8 {
            let row = rows.get(i + j).copied().unwrap_or("");
            if row.starts_with("  d") {
                whole(j, "  d", " bounced ");
            }
        }
    }
}

/// The `N+ (importing…)` count of the display's first line, if it shows one.
fn importing_count(screen: &str) -> Option<u64> {
    let l = screen.lines().find(|l| l.contains("+ (importing…)"))?;
    let before = l.split("+ (importing…)").next()?;
    let n = before.rsplit('/').next()?.replace(',', "");
    n.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_the_total_growing_then_final_then_the_summary() {
    let relay = sink(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    // 200,000 rows over 20,000 addresses: the import reads for a while (the rest are
    // duplicates), so the first frames come while the total is still growing.
    let toml = campaign(dir.path(), relay.addr, &list(200_000, 20_000), "");
    let cmd = format!(
        "cd {} && {BIN} send c.toml; echo BLAST-EXIT=$?; sleep 300",
        dir.path().display()
    );
    let tmux = Tmux::start(&cmd);
    let started = Instant::now();
    let mut growing: Vec<u64> = Vec::new();
    let mut final_total = false;
    let mut screen = String::new();
    // Bounded: at most 180 s, polled every 100 ms.
    for _ in 0..1_800 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        screen = tmux.capture();
        if let Some(n) = importing_count(&screen) {
            if growing.last() != Some(&n) {
                growing.push(n);
            }
        }
        if !final_total && !screen.contains("(importing…)") {
            final_total = screen
                .lines()
                .any(|l| l.contains("/20,000") && l.starts_with('['));
        }
        check_rows(&screen);
        if screen.contains("BLAST-EXIT=") {
            break;
        }
    }
    assert!(
        screen.contains("BLAST-EXIT=0"),
        "send ended with 0 within {:?}:\n{screen}",
        started.elapsed()
    );
    assert!(
        !growing.is_empty(),
        "a frame showed the count imported so far as still growing:\n{screen}"
    );
    assert!(growing.windows(2).all(|w| w[0] < w[1]), "{growing:?}");
    assert!(growing.iter().all(|n| *n <= 20_000), "{growing:?}");
    assert!(final_total, "then the final total:\n{screen}");
    // The last frame stays on the screen, the summary follows it.
    let frame_at = screen.rfind("20,000/20,000").expect("the last frame stays");
    let summary_at = screen
        .find("campaign prog: 20000 recipients")
        .expect("the summary");
    assert!(frame_at < summary_at, "{screen}");
    assert!(screen.contains("sent 20,000 · deferred 0"), "{screen}");
    assert_eq!(relay.count(), 20_000);
    assert_eq!(figure(&status(&toml), "sent"), 20_000);
}

/// While the lane only waits for retries, the JSON lines say so, `deferred` is the recipients
/// waiting (all 40 not yet done), and the average rate holds instead of sinking with the wall
/// clock (retry times have ±10% jitter, so the check is over lines with the same `done`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_retries_holds_the_average_and_says_so() {
    let once = Rule {
        times: Some(1),
        ..Rule::new(
            "*@d7.example",
            Action::RcptReply(451, "4.3.0 try later".into()),
        )
    };
    let relay = sink(vec![once]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = campaign(dir.path(), relay.addr, &list(2_000, 2_000), "");
    // The retry comes 5 s after the first attempt: the lane sleeps meanwhile.
    let t = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("retry = [\"200ms\", \"400ms\"]", "retry = [\"5s\"]");
    std::fs::write(&toml, t).unwrap();
    let o = send(&["send", toml.to_str().unwrap(), "--json-progress", "--quiet"]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let objs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let waiting: Vec<&serde_json::Value> =
        objs.iter().filter(|v| !v["waiting_s"].is_null()).collect();
    assert!(!waiting.is_empty(), "a line said the lane waits: {objs:?}");
    let mut by_done: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for v in &waiting {
        let (done, deferred) = (figure(v, "done"), figure(v, "deferred"));
        assert!(
            deferred <= 40 && done + deferred == 2_000,
            "all not done are deferred: {v}"
        );
        assert!(
            v["eta_s"].is_null(),
            "no ETA while only retries are left: {v}"
        );
        by_done.entry(done).or_default().push(figure(v, "rate_avg"));
    }
    let held: Vec<&Vec<u64>> = by_done.values().filter(|a| a.len() >= 2).collect();
    assert!(!held.is_empty(), "two lines in one wait: {by_done:?}");
    for avgs in held {
        let (lo, hi) = (avgs.iter().min().unwrap(), avgs.iter().max().unwrap());
        // Waiting is timed to the millisecond: over a sub-second first pass that moves the
        // figure by a few tenths of a percent, where a sinking average would halve it.
        assert!(
            hi - lo <= 1 + hi / 100,
            "the average holds while waiting: {by_done:?}"
        );
    }
    let last = objs.last().unwrap();
    assert_eq!(
        (figure(last, "sent"), figure(last, "deferred")),
        (2_000, 0),
        "{last}"
    );
}

/// A domain that answers with a rate-limit reply is shown throttled, with the reply, while it
/// backs off; the lane's limits are on every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_domain_is_shown_with_its_reply() {
    let once = Rule {
        times: Some(1),
        ..Rule::new(
            "u3@d3.example",
            Action::RcptReply(450, "4.7.0 rate limit exceeded, slow down".into()),
        )
    };
    let relay = sink(vec![once]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = campaign(
        dir.path(),
        relay.addr,
        &list(2_000, 2_000),
        "backoff = \"3s\"\n[lane.per_domain]\ndefault = \"500/s\"\n",
    );
    let o = send(&["send", toml.to_str().unwrap(), "--json-progress", "--quiet"]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let objs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let throttled = objs.iter().find_map(|v| {
        v["domains"]
            .as_array()?
            .iter()
            .find(|d| d["domain"] == "d3.example" && !d["throttled"].is_null())
            .cloned()
    });
    let d = throttled.unwrap_or_else(|| panic!("d3.example shown throttled: {objs:?}"));
    assert!(
        d["throttled"]
            .as_str()
            .unwrap()
            .contains("4.7.0 rate limit exceeded"),
        "{d}"
    );
    assert!(objs
        .iter()
        .all(|v| v["limit"] == "unlimited, 500/s per domain"));
    let last = objs.last().unwrap();
    assert_eq!(figure(last, "sent"), 2_000, "{last}");
}

/// A resumed run starts from the store's counts: its first JSON line already shows the
/// recipients a previous run left deferred, and the last one equals the store again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_starts_from_the_store_counts() {
    let once = Rule {
        times: Some(1),
        ..Rule::new(
            "*@d7.example",
            Action::RcptReply(451, "4.3.0 try later".into()),
        )
    };
    let relay = sink(vec![once]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = campaign(dir.path(), relay.addr, &list(1_000, 1_000), "");
    // Retries an hour away, and no waiting for them: the first run ends with 20 deferred.
    let t = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("retry = [\"200ms\", \"400ms\"]", "retry = [\"1h\"]")
        .replace("wait_for_retries = \"30s\"", "wait_for_retries = \"1s\"");
    std::fs::write(&toml, t).unwrap();
    let path = toml.to_str().unwrap();
    let o = send(&["send", path, "--quiet"]).await;
    assert_eq!(
        o.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(figure(&status(&toml), "deferred"), 20);

    let o = send(&["send", path, "--retry-now", "--quiet", "--json-progress"]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let objs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let first = objs.first().expect("a line");
    // Campaign-wide figures from the first line on (the run itself has 20 to settle).
    assert!(figure(first, "sent") >= 980, "{first}");
    assert_eq!(figure(first, "total"), 20, "{first}");
    assert!(
        figure(first, "deferred") + figure(first, "done") == 20,
        "the 20 deferred at the start are counted as deferred until settled: {first}"
    );
    let last = objs.last().unwrap();
    let st = status(&toml);
    for k in ["sent", "deferred", "bounced", "failed", "skipped"] {
        assert_eq!(figure(last, k), figure(&st, k), "{k}: {last} vs {st}");
    }
    assert_eq!(figure(last, "sent"), 1_000);
}

/// A relay that answers 421 is shown backing off, with its reply, on the lane's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_backing_off_is_shown_with_its_reply() {
    let once = Rule {
        times: Some(1),
        ..Rule::new("u5@d5.example", Action::Reply421AtRcpt)
    };
    let relay = sink(vec![once]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = campaign(
        dir.path(),
        relay.addr,
        &list(2_000, 2_000),
        "backoff = \"500ms\"\n",
    );
    let o = send(&["send", toml.to_str().unwrap(), "--json-progress", "--quiet"]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let objs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let relay_note = objs
        .iter()
        .find_map(|v| v["relay"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("a line shows the relay backing off: {objs:?}"));
    assert!(relay_note.contains("421"), "{relay_note}");
    let last = objs.last().unwrap();
    assert_eq!(
        figure(last, "sent"),
        2_000,
        "nothing lost to the 421: {last}"
    );
}
