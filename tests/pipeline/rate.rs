//! 10,000 recipients across 50 domains, with rates chosen so that the global limit and the
//! per-domain limits bind at the same time (water-filling):
//!
//! - global `1000/s`;
//! - default per-domain `15/s`: the 46 "small" domains d0…d45 (150 recipients each) would get
//!   ~20/s from a fair share of the global rate, so their own limit binds;
//! - `d46.example = "10/s"` (100 recipients): a named per-domain limiter that binds;
//! - the 3 "big" domains d47…d49 (1,000 recipients each, 30% of the list) have `200/s`, which
//!   does not bind: they absorb what the others leave of the global rate
//!   (1000 − 46×15 − 10 = 300/s, ~100/s each), so the global limit binds for the whole run.
//!
//! Every domain then finishes after ~10 s. Without the per-domain limiters the small domains
//! would show ~20 per second; without the global one the run would go at ~1,300/s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use blast::store::record::State;

use super::*;

const SMALL_DOMAINS: usize = 46;
const SMALL_N: usize = 150;
const SMALL_RATE: u32 = 15;
const NAMED_DOMAIN: &str = "d46.example";
const NAMED_N: usize = 100;
const NAMED_RATE: u32 = 10;
const BIG_N: usize = 1000;
const BIG_RATE: u32 = 200;
const GLOBAL_RATE: f64 = 1000.0;
const BURST: usize = 1;

/// Most messages in any window `[t, t + w)` of the sorted times.
fn max_in_window(times: &[Instant], w: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi].duration_since(times[lo]) >= w {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Exactly once, content, per-domain windows; the global rate is only checked from above here
/// (see [`global_rate_within_five_percent`] for the ±5% check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_recipients_fifty_domains() {
    let measured = big_run().await;
    assert!(
        measured <= GLOBAL_RATE * 1.05,
        "global rate {measured:.1}/s is above {GLOBAL_RATE}/s + 5%"
    );
}

/// The issue's "global rate within ±5% over the steady part of the run". The lower bound is
/// a timing figure — on a loaded machine blast is simply slower than its limit — so it runs
/// on demand (`cargo test -- --ignored global_rate`), not in CI; the upper bound (never faster
/// than the limit) is checked on every run by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing figure: run on an idle machine with --ignored"]
async fn global_rate_within_five_percent() {
    let measured = big_run().await;
    assert!(
        (GLOBAL_RATE * 0.95..=GLOBAL_RATE * 1.05).contains(&measured),
        "global rate {measured:.1}/s is not within ±5% of {GLOBAL_RATE}/s"
    );
}

/// Sends the 10,000-recipient campaign, asserts everything but the global rate, and returns
/// the global rate measured over the steady part of the run.
async fn big_run() -> f64 {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();

    // Interleave domains in the file so no domain is served from one block of the list.
    let mut per_domain: Vec<(String, usize)> = Vec::new();
    for d in 0..SMALL_DOMAINS {
        per_domain.push((format!("d{d}.example"), SMALL_N));
    }
    per_domain.push((NAMED_DOMAIN.to_string(), NAMED_N));
    for d in 47..50 {
        per_domain.push((format!("d{d}.example"), BIG_N));
    }
    let max_n = per_domain.iter().map(|p| p.1).max().unwrap();
    let mut list: Vec<String> = Vec::new();
    for i in 0..max_n {
        for (d, n) in &per_domain {
            if i < *n {
                list.push(format!("user{i}@{d}"));
            }
        }
    }
    assert_eq!(list.len(), 10_000);
    assert_eq!(per_domain.len(), 50);
    f.write("list.csv", csv_list(&list));

    let lane = format!(
        r#"rate = "{GLOBAL_RATE}/s"
burst = {BURST}
connections = 16
per_domain_connections = 16

[lane.per_domain]
default = "{SMALL_RATE}/s"
"{NAMED_DOMAIN}" = "{NAMED_RATE}/s"
"d47.example" = "{BIG_RATE}/s"
"d48.example" = "{BIG_RATE}/s"
"d49.example" = "{BIG_RATE}/s"
"#
    );
    let s = f.campaign(
        "big",
        &campaign_toml("big", sink.addr, &["list.csv"], &lane),
    );
    // ~10 s at the configured rates; the bound leaves room for a slow lane on a busy machine.
    let summary = send_within(&s, Default::default(), Duration::from_secs(240))
        .await
        .expect("send");
    eprintln!(
        "rate test: {} sent in {:.2?}, counts {:?}",
        summary.sent_this_run, summary.elapsed, summary.counts.by_state
    );
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.counts.get(State::Sent), 10_000);
    assert_eq!(summary.sent_this_run, 10_000);

    // Exactly once, and nothing else.
    assert_exactly_once(&sink, &list);
    let received = sink.received();
    assert_eq!(received.len(), 10_000);
    assert!(received.iter().all(|r| r.rcpt_to.len() == 1));
    assert_eq!(violations(&sink), Vec::<String>::new());

    // Content rendered for the right row: check every 997th recipient (spread over domains).
    let index: BTreeMap<String, usize> = list
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), i))
        .collect();
    let mut checked = 0;
    for r in received.iter().step_by(997) {
        let to = &r.rcpt_to[0];
        let i = index[to.as_str()];
        let subject = header(&r.data, "Subject").expect("Subject header");
        assert_eq!(subject, format!("Hello Name{i}"), "subject for {to}");
        assert_eq!(
            header(&r.data, "To")
                .as_deref()
                .map(|t| t.contains(to.as_str())),
            Some(true)
        );
        let text = flat_text(&r.data);
        let code = format!("your code is C-{i:06}.");
        assert_eq!(
            text.matches(&code).count(),
            2,
            "text+html bodies of {to} carry {code}"
        );
        assert!(
            text.contains("multipart/alternative"),
            "{to}: not multipart"
        );
        assert_eq!(r.mail_from, "news@acme.example");
        checked += 1;
    }
    assert!(checked >= 10);

    // Per-domain: at most burst + ceil(rate × 1 s) + 2 in any 1-second window.
    let mut times: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for r in &received {
        let d = r.rcpt_to[0].rsplit_once('@').unwrap().1.to_string();
        times.entry(d).or_default().push(r.at);
    }
    let mut worst: Vec<(String, usize, u32)> = Vec::new();
    for (d, ts) in &mut times {
        ts.sort();
        let rate = if d == NAMED_DOMAIN {
            NAMED_RATE
        } else if ["d47.example", "d48.example", "d49.example"].contains(&d.as_str()) {
            BIG_RATE
        } else {
            SMALL_RATE
        };
        worst.push((d.clone(), max_in_window(ts, Duration::from_secs(1)), rate));
    }
    let small_max = worst
        .iter()
        .filter(|w| w.2 == SMALL_RATE)
        .map(|w| w.1)
        .max()
        .unwrap();
    let named_max = worst.iter().find(|w| w.0 == NAMED_DOMAIN).unwrap().1;
    let big: Vec<(String, usize, f64)> = ["d47.example", "d48.example", "d49.example"]
        .iter()
        .map(|d| {
            let ts = &times[*d];
            let span = ts.last().unwrap().duration_since(ts[0]).as_secs_f64();
            (
                d.to_string(),
                worst.iter().find(|w| w.0 == *d).unwrap().1,
                (ts.len() - 1) as f64 / span,
            )
        })
        .collect();
    eprintln!(
        "per-domain max in any 1 s window: default-rate domains ({SMALL_RATE}/s) {small_max}, \
         {NAMED_DOMAIN} ({NAMED_RATE}/s) {named_max}, big domains ({BIG_RATE}/s, max, mean rate) {big:?}"
    );
    let over: Vec<_> = worst
        .iter()
        .filter(|(_, n, rate)| *n > BURST + *rate as usize + 2)
        .collect();
    assert!(
        over.is_empty(),
        "per-domain rate exceeded (domain, max in 1 s, rate): {over:?}"
    );
    // Whether the per-domain limit bound: with the global rate met, the default-rate domains
    // run at their limit (15/s), not at the ~20/s a fair share of the global rate would give.
    let small_mean: f64 = {
        let rates: Vec<f64> = times
            .iter()
            .filter(|(d, _)| {
                d.as_str() != NAMED_DOMAIN
                    && !d.starts_with("d47")
                    && !d.starts_with("d48")
                    && !d.starts_with("d49")
            })
            .map(|(_, ts)| {
                (ts.len() - 1) as f64 / ts.last().unwrap().duration_since(ts[0]).as_secs_f64()
            })
            .collect();
        rates.iter().sum::<f64>() / rates.len() as f64
    };
    eprintln!("mean rate of default-rate domains: {small_mean:.2}/s (limit {SMALL_RATE}/s)");

    // Global: ±5% over the steady part (drop the first and last 10% of messages by time).
    let mut all: Vec<Instant> = received.iter().map(|r| r.at).collect();
    all.sort();
    let whole = all.last().unwrap().duration_since(all[0]).as_secs_f64();
    let steady = &all[all.len() / 10..all.len() - all.len() / 10];
    let span = steady
        .last()
        .unwrap()
        .duration_since(steady[0])
        .as_secs_f64();
    let measured = (steady.len() - 1) as f64 / span;
    eprintln!(
        "global: {measured:.1}/s over the steady 80% ({} messages in {span:.3} s; limit {GLOBAL_RATE}/s); \
         whole run {:.1}/s over {whole:.3} s; max in any 1 s window {}",
        steady.len(),
        (all.len() - 1) as f64 / whole,
        max_in_window(&all, Duration::from_secs(1)),
    );
    measured
}
