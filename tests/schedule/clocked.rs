//! The scheduler on a test clock: slots across DST changes, a restart in the middle of a run,
//! missed slots and catch_up, a changed and an invalid campaign file, pause, overlap.

use std::time::Duration;

use blast::schedule::campaigns::Change;
use blast::schedule::claims::{self, RunStatus, Snapshot};
use blast::schedule::{Clock, Event, TestClock};
use blast::sink::{Action, Rule};

use super::{runs, scheduled, utc, Serve, EVENT_LIMIT};
use crate::pipeline::{addrs, assert_exactly_once, by_rcpt, header, start_sink, Fixture};

const HOUR: Duration = Duration::from_secs(3600);

/// Walks the clock in 10-minute steps from `from` for `steps` steps with a daily 02:30
/// Europe/Berlin campaign, and checks exactly one run, `expected`, sent to everyone once.
async fn daily_0230_berlin(from: &str, steps: u32, expected: &str) {
    let f = Fixture::new();
    let sink = start_sink(vec![]).await;
    let list = addrs("u", "berlin.example", 3);
    scheduled(
        &f,
        "nightly",
        sink.addr,
        &list,
        "",
        "cron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"",
    );
    let clock = TestClock::new(utc(from));
    let mut serve = Serve::start(f.dir.path(), &f.path("serve"), clock.clone(), HOUR);
    serve.pass_at(clock.now()).await;
    for _ in 0..steps {
        clock.advance(Duration::from_secs(600));
        serve.pass_at(clock.now()).await;
    }
    let rec = serve.finished(expected, RunStatus::Done).await;
    assert_eq!(rec.counts.get("sent"), Some(&3));
    let seen = serve.stop().await;
    let claimed: Vec<&Event> = seen
        .iter()
        .filter(|e| matches!(e, Event::Claimed(_)))
        .collect();
    assert_eq!(claimed, vec![&Event::Claimed(expected.into())]);
    assert_exactly_once(&sink, &list);
    let stored = runs(&f.path("serve"), "nightly");
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0].status, RunStatus::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dst_spring_forward_slot_runs_once() {
    // 29 March 2026 02:00 CET → 03:00 CEST: 02:30 never happens; it runs once, at 03:00 CEST.
    daily_0230_berlin("2026-03-28T22:00:00Z", 36, "nightly@20260329T010000Z").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dst_fall_back_slot_runs_once() {
    // 25 October 2026 03:00 CEST → 02:00 CET: 02:30 happens twice (00:30 and 01:30 UTC); once.
    daily_0230_berlin("2026-10-24T22:00:00Z", 36, "nightly@20261025T003000Z").await;
}

/// Polls (bounded) until the sink has accepted at least `n` messages.
async fn sink_reaches(sink: &blast::sink::SinkHandle, n: usize) {
    let deadline = tokio::time::Instant::now() + EVENT_LIMIT;
    while sink.count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sink stuck at {}",
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_run_resumes_it_and_never_starts_the_slot_again() {
    let f = Fixture::new();
    // Slow final-dot replies keep the run going long enough to stop it half way.
    let sink = start_sink(vec![Rule::new(
        "*",
        Action::Delay(Duration::from_millis(100)),
    )])
    .await;
    let list = addrs("r", "resume.example", 20);
    let lane = "connections = 1\nper_domain_connections = 1\n";
    scheduled(&f, "news", sink.addr, &list, lane, "cron = \"0 * * * *\"");
    let state = f.path("serve");
    let clock = TestClock::new(utc("2026-01-05T09:59:30Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve.pass_at(clock.now()).await;
    clock.set(utc("2026-01-05T10:00:00Z"));
    let id = "news@20260105T100000Z";
    serve
        .until("the claim", |e| *e == Event::Claimed(id.into()))
        .await;
    sink_reaches(&sink, 3).await;
    let seen = serve.stop().await;
    assert!(
        sink.count() < list.len(),
        "the run ended before the restart"
    );
    let stopped = seen
        .iter()
        .find_map(|e| match e {
            Event::Finished(r) if r.id == id => Some(r.clone()),
            _ => None,
        })
        .expect("the interrupted launch is reported");
    assert_eq!(stopped.status, RunStatus::Running, "{stopped:?}");
    assert_eq!(runs(&state, "news")[0].status, RunStatus::Running);

    // Restart a little later: the claimed slot is resumed, not claimed again.
    clock.set(utc("2026-01-05T10:00:40Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve
        .until("the resume", |e| *e == Event::Resumed(id.into(), 2))
        .await;
    let rec = serve.finished(id, RunStatus::Done).await;
    assert_eq!(rec.counts.get("sent"), Some(&20));
    let seen = serve.stop().await;
    assert!(
        seen.iter().all(|e| !matches!(e, Event::Claimed(_))),
        "{seen:#?}"
    );
    assert_exactly_once(&sink, &list);
    let stored = runs(&state, "news");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_slots_follow_catch_up() {
    let f = Fixture::new();
    let sink = start_sink(vec![]).await;
    let late = addrs("l", "late.example", 4);
    let none = addrs("n", "none.example", 4);
    let stale = addrs("s", "stale.example", 4);
    scheduled(&f, "late", sink.addr, &late, "", "cron = \"0 * * * *\"");
    scheduled(
        &f,
        "none",
        sink.addr,
        &none,
        "",
        "cron = \"0 * * * *\"\ncatch_up = \"none\"",
    );
    scheduled(
        &f,
        "stale",
        sink.addr,
        &stale,
        "",
        "cron = \"0 * * * *\"\ncatch_up_max_age = \"10m\"",
    );
    let state = f.path("serve");
    let clock = TestClock::new(utc("2026-01-05T08:30:00Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve.pass_at(clock.now()).await;
    serve.stop().await;

    // Down for five slots (09:00 … 13:00); back at 13:30.
    clock.set(utc("2026-01-05T13:30:00Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve
        .finished("late@20260105T130000Z", RunStatus::Done)
        .await;
    serve.pass_at(clock.now()).await;
    let seen = serve.stop().await;
    let claimed: Vec<&Event> = seen
        .iter()
        .filter(|e| matches!(e, Event::Claimed(_)))
        .collect();
    assert_eq!(
        claimed,
        vec![&Event::Claimed("late@20260105T130000Z".into())]
    );
    assert_exactly_once(&sink, &late);

    let statuses = |c: &str| -> Vec<(String, RunStatus)> {
        runs(&state, c)
            .into_iter()
            .map(|r| (r.id, r.status))
            .collect()
    };
    // The four before the latest are one `missed` entry (never a burst, never silent).
    assert_eq!(
        statuses("late"),
        vec![
            ("late@20260105T120000Z".into(), RunStatus::Missed),
            ("late@20260105T130000Z".into(), RunStatus::Done)
        ]
    );
    assert!(runs(&state, "late")[0].note.starts_with("4 slot(s)"));
    assert_eq!(
        statuses("none"),
        vec![
            ("none@20260105T120000Z".into(), RunStatus::Missed),
            ("none@20260105T130000Z".into(), RunStatus::Missed)
        ]
    );
    assert_eq!(
        statuses("stale")[1],
        ("stale@20260105T130000Z".into(), RunStatus::Missed)
    );
    assert!(runs(&state, "stale")[1].note.contains("catch_up_max_age"));
}

fn subjects(sink: &blast::sink::SinkHandle) -> Vec<String> {
    sink.received()
        .iter()
        .map(|r| header(&r.data, "Subject").unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_file_is_picked_up_and_an_invalid_one_keeps_the_old() {
    let f = Fixture::new();
    let sink = start_sink(vec![]).await;
    let list = addrs("c", "change.example", 2);
    let file = scheduled(&f, "news", sink.addr, &list, "", "cron = \"0 * * * *\"");
    let state = f.path("serve");
    let clock = TestClock::new(utc("2026-01-05T08:59:00Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve.pass_at(clock.now()).await;
    clock.set(utc("2026-01-05T09:00:00Z"));
    serve
        .finished("news@20260105T090000Z", RunStatus::Done)
        .await;
    assert!(subjects(&sink).iter().all(|s| s.starts_with("Hello ")));

    // New subject and new schedule (half past).
    let original = std::fs::read_to_string(&file).unwrap();
    let changed = original
        .replace("subject = \"Hello", "subject = \"Issue B for")
        .replace("cron = \"0 * * * *\"", "cron = \"30 * * * *\"");
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, &changed).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    clock.set(utc("2026-01-05T09:05:00Z"));
    serve
        .until("the reload", |e| {
            *e == Event::Campaign(Change::Changed("news".into()))
        })
        .await;
    clock.set(utc("2026-01-05T09:30:00Z"));
    serve
        .finished("news@20260105T093000Z", RunStatus::Done)
        .await;
    assert_eq!(
        subjects(&sink)
            .iter()
            .filter(|s| s.starts_with("Issue B for "))
            .count(),
        2
    );

    // An invalid edit is reported; the previous valid version keeps running.
    std::fs::write(
        &file,
        changed.replace("cron = \"30 * * * *\"", "cron = \"61 * * * *\""),
    )
    .unwrap();
    // Reported once a second scan reads the same bytes (not a half-written file).
    clock.set(utc("2026-01-05T09:35:00Z"));
    serve.pass_at(clock.now()).await;
    clock.set(utc("2026-01-05T09:36:00Z"));
    let invalid = serve
        .until("the invalid file", |e| {
            matches!(e, Event::Campaign(Change::Invalid(..)))
        })
        .await;
    let Event::Campaign(Change::Invalid(p, err)) = invalid else {
        unreachable!()
    };
    assert_eq!(p, file);
    assert!(err.contains("schedule.cron"), "{err}");
    serve.pass_at(clock.now()).await; // The snapshot is written before the pass ends.
    let snap = Snapshot::read(&state).unwrap().expect("snapshot");
    assert!(
        snap.invalid.contains_key(&file.display().to_string()),
        "{snap:?}"
    );
    clock.set(utc("2026-01-05T10:00:00Z"));
    serve.pass_at(clock.now()).await;
    clock.set(utc("2026-01-05T10:30:00Z"));
    serve
        .finished("news@20260105T103000Z", RunStatus::Done)
        .await;
    let seen = serve.stop().await;
    let claimed: Vec<&Event> = seen
        .iter()
        .filter(|e| matches!(e, Event::Claimed(_)))
        .collect();
    assert_eq!(claimed.len(), 3, "{claimed:?}");
    assert_eq!(
        subjects(&sink)
            .iter()
            .filter(|s| s.starts_with("Issue B for "))
            .count(),
        4
    );
    // Each recipient once per run.
    assert!(by_rcpt(&sink).values().all(|v| v.len() == 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_skips_slots_and_resume_runs_the_next() {
    let f = Fixture::new();
    let sink = start_sink(vec![]).await;
    let list = addrs("p", "pause.example", 2);
    scheduled(&f, "news", sink.addr, &list, "", "cron = \"0 * * * *\"");
    let state = f.path("serve");
    let clock = TestClock::new(utc("2026-01-05T08:59:00Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve.pass_at(clock.now()).await;
    claims::set_paused(&state, "news", true).unwrap();
    clock.set(utc("2026-01-05T09:00:00Z"));
    serve
        .until(
            "the skip",
            |e| matches!(e, Event::Passed(r) if r.status == RunStatus::Skipped),
        )
        .await;
    // Two more slots of the same pause: still one record, its note counts them (issue 11
    // item 13: it used to be one `skipped` run per slot).
    for t in ["2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z"] {
        clock.set(utc(t));
        serve.pass_at(utc(t)).await;
    }
    // While serve holds the store, `blast schedule runs` reads its snapshot.
    let (listed, from) = blast::commands::schedule::runs(&state, "news").unwrap();
    assert!(from.is_some());
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert!(listed[0].note.contains("paused"));
    assert!(
        listed[0]
            .note
            .contains("3 slot(s) skipped, the last at 2026-01-05 11:00:00 UTC"),
        "{}",
        listed[0].note
    );
    claims::set_paused(&state, "news", false).unwrap();
    clock.set(utc("2026-01-05T12:00:00Z"));
    serve
        .finished("news@20260105T120000Z", RunStatus::Done)
        .await;
    serve.stop().await;
    assert_exactly_once(&sink, &list);
    let (listed, from) = blast::commands::schedule::runs(&state, "news").unwrap();
    assert!(from.is_none());
    let table = blast::commands::schedule::runs_table(&listed);
    assert!(
        table.contains("skipped") && table.contains("done"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_during_a_run_is_skipped_not_overlapped() {
    let f = Fixture::new();
    let sink = start_sink(vec![Rule::new(
        "*",
        Action::Delay(Duration::from_millis(100)),
    )])
    .await;
    let list = addrs("o", "overlap.example", 10);
    let lane = "connections = 1\nper_domain_connections = 1\n";
    scheduled(
        &f,
        "fast",
        sink.addr,
        &list,
        lane,
        "cron = \"*/2 * * * * *\"",
    );
    let state = f.path("serve");
    let clock = TestClock::new(utc("2026-01-05T08:59:59Z"));
    let mut serve = Serve::start(f.dir.path(), &state, clock.clone(), HOUR);
    serve.pass_at(clock.now()).await;
    clock.set(utc("2026-01-05T09:00:00Z"));
    serve
        .until("the claim", |e| matches!(e, Event::Claimed(_)))
        .await;
    clock.set(utc("2026-01-05T09:00:02Z"));
    let skipped = serve
        .until(
            "the skip",
            |e| matches!(e, Event::Passed(r) if r.status == RunStatus::Skipped),
        )
        .await;
    let Event::Passed(skipped) = skipped else {
        unreachable!()
    };
    assert_eq!(skipped.id, "fast@20260105T090002Z");
    assert!(skipped.note.contains("still going"), "{}", skipped.note);
    serve
        .finished("fast@20260105T090000Z", RunStatus::Done)
        .await;
    clock.set(utc("2026-01-05T09:00:04Z"));
    serve
        .finished("fast@20260105T090004Z", RunStatus::Done)
        .await;
    serve.stop().await;
    assert!(by_rcpt(&sink).values().all(|v| v.len() == 2));
}
