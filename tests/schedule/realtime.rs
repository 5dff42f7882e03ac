//! Real time: a 6-field cron every 2 s, bounded by `start`/`end` to exactly N slots, on the
//! system clock: N runs, each recipient delivered N times, once per run.

use std::sync::Arc;
use std::time::Duration;

use blast::schedule::claims::RunStatus;
use blast::schedule::{Event, SystemClock};
use chrono::{Timelike, Utc};

use super::{runs, scheduled, Serve};
use crate::pipeline::{addrs, by_rcpt, start_sink, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_seconds_n_slots_make_n_runs() {
    const N: usize = 3;
    let f = Fixture::new();
    let sink = start_sink(vec![]).await;
    let list = addrs("t", "realtime.example", 5);
    // The first even second at least 3 s ahead; `end` stops after N slots.
    let mut start = Utc::now().with_nanosecond(0).unwrap() + chrono::Duration::seconds(3);
    if start.second() % 2 == 1 {
        start += chrono::Duration::seconds(1);
    }
    let end = start + chrono::Duration::seconds(2 * N as i64 - 1);
    let fmt = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    scheduled(
        &f,
        "rt",
        sink.addr,
        &list,
        "",
        &format!(
            "cron = \"*/2 * * * * *\"\noverlap = \"wait\"\nstart = \"{}\"\nend = \"{}\"",
            fmt(start),
            fmt(end)
        ),
    );
    let state = f.path("serve");
    let mut serve = Serve::start(
        f.dir.path(),
        &state,
        Arc::new(SystemClock),
        Duration::from_millis(200),
    );
    for i in 0..N {
        let slot = start + chrono::Duration::seconds(2 * i as i64);
        let id = blast::schedule::run_id("rt", slot);
        let rec = serve.finished(&id, RunStatus::Done).await;
        assert_eq!(
            rec.counts.get("sent"),
            Some(&(list.len() as u64)),
            "{rec:?}"
        );
    }
    // One more pass past the end: nothing else is claimed.
    let after = end + chrono::Duration::seconds(1);
    serve
        .until(
            "a pass after the end",
            |e| matches!(e, Event::Tick(t) if *t >= after),
        )
        .await;
    let seen = serve.stop().await;
    let claimed = seen
        .iter()
        .filter(|e| matches!(e, Event::Claimed(_)))
        .count();
    assert_eq!(claimed, N, "{seen:#?}");
    let stored = runs(&state, "rt");
    assert_eq!(stored.len(), N);
    assert!(stored.iter().all(|r| r.status == RunStatus::Done));
    let got = by_rcpt(&sink);
    assert_eq!(got.len(), list.len());
    assert!(
        got.values().all(|v| v.len() == N),
        "{:?}",
        got.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
    );
}
