//! STARTTLS on direct delivery: a host whose handshake fails is retried once in plaintext
//! (and gets the mail); `starttls = "required"` verifies and defers a host that cannot prove
//! its name.

use std::sync::Arc;

use blast::send::SendOptions;
use blast::sink::SinkConfig;
use blast::store::record::State;

use super::{a, campaign_toml, mx, two_sinks, Dns};
use crate::pipeline::{addrs, assert_exactly_once, csv_list, records, send_within, Fixture};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A server config whose handshake always fails for blast: it demands a client certificate
/// (blast presents none).
fn demands_client_cert() -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = rcgen::generate_simple_self_signed(vec!["client-ca.test".into()]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["mx.tls.test".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    Arc::new(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_failed_handshake_is_retried_once_in_plaintext() {
    let dns = Dns::start(&[
        mx("tls.test", "mx.tls.test", 10),
        a("mx.tls.test", "127.0.0.2"),
    ]);
    let cfg = || SinkConfig {
        tls: Some(demands_client_cert()),
        ..Default::default()
    };
    let (s2, _s3, port) = two_sinks(cfg).await;
    let f = Fixture::new();
    let all = addrs("u", "tls.test", 3);
    f.write("list.csv", csv_list(&all));
    let lane = "retry = [\"1h\"]\nwait_for_retries = \"1s\"";
    let s = f.campaign("plain", &campaign_toml("plain", dns.addr, port, lane));
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("send");
    assert_eq!(summary.exit_code(), 0, "{:?}", records(&s));
    assert_exactly_once(&s2, &all);
    assert!(s2.tls_failures() >= 1, "a handshake was tried");
    assert!(s2.received().iter().all(|r| !r.tls));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_required_tls_defers_a_host_whose_certificate_does_not_verify() {
    let dns = Dns::start(&[
        mx("tls.test", "mx.tls.test", 10),
        a("mx.tls.test", "127.0.0.2"),
    ]);
    let cfg = || SinkConfig {
        tls: Some(crate::tls::self_signed()),
        ..Default::default()
    };
    let (s2, _s3, port) = two_sinks(cfg).await;
    let f = Fixture::new();
    let all = addrs("u", "tls.test", 2);
    f.write("list.csv", csv_list(&all));
    let lane = "starttls = \"required\"\nretry = [\"1h\"]\nwait_for_retries = \"1s\"";
    let s = f.campaign("req", &campaign_toml("req", dns.addr, port, lane));
    let summary = send_within(&s, SendOptions::default(), LIMIT)
        .await
        .expect("send");
    assert_eq!(summary.exit_code(), 75);
    assert!(s2.received().is_empty(), "nothing goes out unverified");
    for (addr, r) in records(&s) {
        assert_eq!(r.state, State::Deferred, "{addr}: {}", r.last_reply);
        assert!(r.last_reply.contains("4.4.1"), "{}", r.last_reply);
    }
}
