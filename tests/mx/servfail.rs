//! SERVFAIL for one recipient domain, from an in-process hickory-proto responder
//! (`zone.rs`) that the lane's `[dns] nameservers` points at directly (no dnsmasq between
//! them): that domain's recipients are deferred — neither bounced nor suppressed — while
//! the other domains are delivered, each exactly once.

use blast::send::SendOptions;
use blast::sink::SinkConfig;
use blast::store::record::State;

use super::zone::{Records, Zone};
use super::{campaign_toml, two_sinks};
use crate::pipeline::{addrs, assert_exactly_once, csv_list, records, send_within, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_servfail_defers_that_domain_and_delivers_the_others() {
    let zone = Zone::start(
        Records::default()
            .mx("ok.test", "mx.ok.test", 10)
            .a("mx.ok.test", "127.0.0.2")
            .mx("also.test", "mx.also.test", 10)
            .a("mx.also.test", "127.0.0.3")
            .servfail("broken.test"),
    );
    let (s2, s3, port) = two_sinks(SinkConfig::default).await;
    let f = Fixture::new();
    let ok = addrs("u", "ok.test", 4);
    let also = addrs("v", "also.test", 4);
    let broken = addrs("w", "broken.test", 4);
    let all: Vec<String> = [ok.clone(), broken.clone(), also.clone()].concat();
    f.write("list.csv", csv_list(&all));
    // A retry an hour away: the deferred recipients stay deferred and the run ends (75).
    let lane = "retry = [\"1h\"]\nwait_for_retries = \"1s\"";
    let s = f.campaign("sf", &campaign_toml("sf", zone.addr, port, lane));
    let summary = send_within(
        &s,
        SendOptions::default(),
        std::time::Duration::from_secs(90),
    )
    .await
    .expect("send");
    assert_eq!(summary.fatal, None, "{summary:?}");
    assert_eq!(summary.stalled, None, "SERVFAIL is no resolver fault");
    assert!(
        zone.servfails.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the responder answered SERVFAIL"
    );

    assert_exactly_once(&s2, &ok);
    assert_exactly_once(&s3, &also);
    let recs = records(&s);
    for a in ok.iter().chain(&also) {
        assert_eq!(recs[a].state, State::Sent, "{a}: {:?}", recs[a]);
    }
    for a in &broken {
        let r = &recs[a];
        assert_eq!(r.state, State::Deferred, "{a}: {r:?}");
        assert!(
            r.last_reply.contains("4.4.3"),
            "a temporary DNS failure: {}",
            r.last_reply
        );
    }
    assert_eq!(summary.counts.get(State::Bounced), 0, "{summary:?}");
    assert_eq!(summary.suppressed, 0, "a SERVFAIL suppresses nobody");
    assert_eq!(summary.exit_code(), 75, "deferred recipients remain");
}
