//! What survives between runs and processes: a claim recorded just before a crash (no run
//! started) is resumed, not lost and not claimed again; the suppression list is global
//! across runs; `[schedule]` config errors name file:line:key; the `blast schedule` and
//! `blast send` commands against the real binary.

use std::process::Stdio;
use std::time::Duration;

use blast::schedule::claims::{Claims, RunRecord, RunStatus};
use blast::schedule::{Clock, Event, TestClock};
use blast::sink::{Action, Rule};
use tokio::process::Command;

use super::{runs, scheduled, utc, Serve};
use crate::pipeline::{addrs, assert_exactly_once, start_sink, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_blast");
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_without_a_run_is_resumed_after_a_crash() {
    let f = Fixture::new();
    let sink = start_sink(vec![]).await;
    let list = addrs("k", "crash.example", 5);
    scheduled(&f, "news", sink.addr, &list, "", "cron = \"0 * * * *\"");
    let state = f.path("serve");
    // The state a crash leaves right after the durable claim, before the run started.
    {
        let c = Claims::open(&state, Duration::from_secs(5)).unwrap();
        let slot = utc("2026-01-05T10:00:00Z");
        let rec = RunRecord {
            id: "news@20260105T100000Z".into(),
            campaign: "news".into(),
            slot_ms: slot.timestamp_millis(),
            claimed_ms: slot.timestamp_millis(),
            finished_ms: None,
            status: RunStatus::Running,
            counts: Default::default(),
            attempts: 1,
            note: String::new(),
        };
        c.commit("news", rec.slot_ms, Some(&rec)).unwrap();
    }
    let clock = TestClock::new(utc("2026-01-05T10:07:00Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve
        .finished("news@20260105T100000Z", RunStatus::Done)
        .await;
    serve.pass_at(clock.now()).await;
    let seen = serve.stop().await;
    assert!(
        seen.iter().all(|e| !matches!(e, Event::Claimed(_))),
        "{seen:#?}"
    );
    assert_exactly_once(&sink, &list);
    assert_eq!(runs(&state, "news").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_is_global_across_runs() {
    let f = Fixture::new();
    let bad = "gone@supp.example";
    let sink = start_sink(vec![Rule::new(
        bad,
        Action::RcptReply(550, "5.1.1 no such user".into()),
    )])
    .await;
    let mut list = addrs("g", "supp.example", 3);
    list.push(bad.to_string());
    scheduled(&f, "news", sink.addr, &list, "", "cron = \"0 * * * *\"");
    let state = f.path("serve");
    let clock = TestClock::new(utc("2026-01-05T08:59:00Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve.pass_at(clock.now()).await;
    clock.set(utc("2026-01-05T09:00:00Z"));
    let first = serve
        .finished("news@20260105T090000Z", RunStatus::Done)
        .await;
    assert_eq!(first.counts.get("bounced"), Some(&1));
    clock.set(utc("2026-01-05T10:00:00Z"));
    let second = serve
        .finished("news@20260105T100000Z", RunStatus::Done)
        .await;
    serve.stop().await;
    // The second run never tried the address the first run's bounce suppressed.
    assert_eq!(second.counts.get("skipped"), Some(&1), "{second:?}");
    assert_eq!(sink.attempts(bad), 1);
    assert!(state.join("suppression").exists());
}

#[test]
fn schedule_config_errors_name_file_line_and_key() {
    let f = Fixture::new();
    let relay = "127.0.0.1:9".parse().unwrap();
    let list = addrs("x", "cfg.example", 1);
    // (table body, key named, line of the bad key counted from the `[schedule]` line)
    for (schedule, key, offset) in [
        ("cron = \"0 9 * *\"", "schedule.cron", 1),
        (
            "cron = \"0 9 * * MON\"\ntimezone = \"Europe/Nowhere\"",
            "schedule.timezone",
            2,
        ),
        (
            "cron = \"0 9 * * MON\"\ncatch_up = \"all\"",
            "schedule.catch_up",
            2,
        ),
        (
            "cron = \"0 9 * * MON\"\noverlap = \"queue\"",
            "schedule.overlap",
            2,
        ),
        (
            "cron = \"0 9 * * MON\"\nstart = \"next monday\"",
            "schedule.start",
            2,
        ),
        ("cron = \"0 9 * * MON\"\nevery = \"week\"", "every", 2),
    ] {
        let p = scheduled(&f, "cfg", relay, &list, "", schedule);
        let text = std::fs::read_to_string(&p).unwrap();
        let table = text.lines().position(|l| l == "[schedule]").unwrap() + 1;
        let line = table + offset;
        let err = blast::config::load(&p).unwrap_err().to_string();
        let prefix = format!("{}:{line}: ", p.display());
        assert!(
            err.starts_with(&prefix) && err.contains(key),
            "{schedule}: {err}"
        );
    }
}

async fn blast(args: &[&str]) -> std::process::Output {
    let child = Command::new(BIN).args(args).stdin(Stdio::null()).output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("blast finishes")
        .expect("blast runs")
}

/// `blast schedule list` over `dir` with state in `state`.
async fn schedule_list(dir: &str, state: &str) -> std::process::Output {
    blast(&[
        "schedule",
        "list",
        "--campaigns-dir",
        dir,
        "--state-dir",
        state,
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_commands_and_send_now() {
    let f = Fixture::new();
    let sink = start_sink(vec![]).await;
    let list = addrs("v", "cli.example", 2);
    let file = scheduled(
        &f,
        "weekly",
        sink.addr,
        &list,
        "",
        "cron = \"0 9 * * MON\"\ntimezone = \"Europe/Berlin\"",
    );
    let dir = f.dir.path().to_str().unwrap();
    let state = f.path("serve");
    let state_s = state.to_str().unwrap();
    let file_s = file.to_str().unwrap();

    let out = schedule_list(dir, state_s).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("weekly  \"0 9 * * MON\"  Europe/Berlin"),
        "{text}"
    );
    let slots: Vec<&str> = text.lines().filter(|l| l.starts_with("  Mon ")).collect();
    assert_eq!(slots.len(), 5, "{text}");
    assert!(
        slots
            .iter()
            .all(|l| l.contains(" 09:00:00 CE") && l.contains(" UTC")),
        "{text}"
    );

    let out = blast(&["schedule", "pause", "weekly", "--state-dir", state_s]).await;
    assert!(out.status.success(), "{out:?}");
    let out = schedule_list(dir, state_s).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("PAUSED"));
    let out = blast(&["schedule", "resume", "weekly", "--state-dir", state_s]).await;
    assert!(out.status.success(), "{out:?}");

    // `blast send` asks for --now; with it, one run is sent at once.
    let out = blast(&["send", file_s, "--quiet"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--now"));
    assert_eq!(sink.count(), 0);
    let out = blast(&["send", file_s, "--quiet", "--now"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_exactly_once(&sink, &list);
    // `--run SLOT` resumes that run: nothing is sent twice.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let slot = stderr
        .split("sending run weekly@")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {stderr}"))
        .to_string();
    let out = blast(&["send", file_s, "--quiet", "--now", "--run", &slot]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_exactly_once(&sink, &list);

    let out = blast(&["schedule", "runs", "weekly", "--state-dir", state_s]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("slot (UTC)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_scheduler_on_the_same_state_dir_refuses() {
    let f = Fixture::new();
    let state = f.path("serve");
    let clock = TestClock::new(utc("2026-01-05T08:00:00Z"));
    let mut first = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    first.pass_at(clock.now()).await;
    let second = blast::schedule::run(
        blast::schedule::SchedulerConfig::new(f.dir.path().to_path_buf(), state.clone()),
        clock.clone(),
        std::sync::Arc::new(blast::schedule::SendLauncher),
        std::sync::Arc::new(blast::shutdown::Shutdown::default()),
    );
    let err = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second scheduler gives up in time")
        .expect_err("the second scheduler refuses");
    assert!(matches!(err, blast::error::Error::Locked(_)), "{err}");
    first.stop().await;
}

/// Issue 11 item 13: `blast schedule list` with no scheduled campaign says so (it printed
/// nothing, which looked like a wrong directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_list_without_scheduled_campaigns_says_so() {
    let f = Fixture::new();
    let dir = f.dir.path().to_str().unwrap();
    let state = f.path("serve");
    let out = schedule_list(dir, state.to_str().unwrap()).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("no scheduled campaigns in {dir} (a campaign file is scheduled by its [schedule] table)")
    );
    // A campaign file without [schedule] is not scheduled either.
    let toml =
        crate::pipeline::campaign_toml("plain", "127.0.0.1:1".parse().unwrap(), &["l.csv"], "");
    f.write("plain.toml", toml);
    let out = schedule_list(dir, state.to_str().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("no scheduled campaigns in "), "{text}");
}
