//! Ready queues per site: a site's recipients ride on at most `per_domain_connections`
//! sessions at once (idle ones included: receivers count those too), pipelined one after
//! another on few connections rather than one connection each, while another site is served
//! beside it; every recipient exactly once.

use std::time::Duration;

use blast::send::SendOptions;
use blast::sink::SinkConfig;

use super::{a, campaign_toml, mx, two_sinks, Dns};
use crate::pipeline::{addrs, assert_exactly_once, csv_list, send_within, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_gets_at_most_its_cap_of_sessions_each_carrying_many_recipients() {
    // Six domains on one MX host (one site at 127.0.0.2), two on another (127.0.0.3).
    let shared = ["a.test", "b.test", "c.test", "d.test", "e.test", "f.test"];
    let mut records: Vec<String> = shared.iter().map(|d| mx(d, "mx.one.test", 10)).collect();
    records.extend([
        mx("g.test", "mx.two.test", 10),
        mx("h.test", "mx.two.test", 10),
        a("mx.one.test", "127.0.0.2"),
        a("mx.two.test", "127.0.0.3"),
    ]);
    let dns = Dns::start(&records);
    let (s2, s3, port) = two_sinks(SinkConfig::default).await;
    let f = Fixture::new();
    let at2: Vec<String> = shared.iter().flat_map(|d| addrs("u", d, 100)).collect();
    let at3: Vec<String> = ["g.test", "h.test"]
        .iter()
        .flat_map(|d| addrs("u", d, 100))
        .collect();
    let all: Vec<String> = at2.iter().chain(&at3).cloned().collect();
    f.write("list.csv", csv_list(&all));
    let lane = "connections = 8\nper_domain_connections = 2\nmax_messages_per_connection = 1000\n";
    let s = f.campaign("ready", &campaign_toml("ready", dns.addr, port, lane));
    let summary = send_within(&s, SendOptions::default(), Duration::from_secs(120))
        .await
        .expect("send");
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_exactly_once(&s2, &at2);
    assert_exactly_once(&s3, &at3);
    for (name, sink, n) in [
        ("mx.one.test", &s2, at2.len()),
        ("mx.two.test", &s3, at3.len()),
    ] {
        assert!(
            sink.peak_connections() <= 2,
            "{name}: per_domain_connections = 2 but {} sessions were open at once",
            sink.peak_connections()
        );
        // Sessions are kept and reused: a handful of connections for hundreds of recipients
        // (one per recipient is what a site switch per message would cost).
        assert!(
            sink.connections() <= 4,
            "{name}: {n} recipients over {} connections",
            sink.connections()
        );
    }
}
