//! The lane's TLS, against blast's own sink on 127.0.0.1 (a self-signed certificate from
//! rcgen, as in `tests/tls.rs`): STARTTLS offered and working is a PASS with
//! `opportunistic`; a relay without TLS a WARN (a FAIL under `required`); under `required`
//! and for `smtps://` the certificate must be valid for the host, so a self-signed one
//! FAILs; a relay that cannot be reached is a WARN "could not check". The doctor sends no
//! mail and never authenticates.

use std::path::Path;

use blast::sink::{self, SinkConfig, SinkHandle};

use super::super::dkim::keygen;
use super::super::tls::self_signed;
use super::{campaign_with, dns, doctor_async, good, row};

async fn sink(tls: bool, implicit: bool) -> SinkHandle {
    sink::start(
        "127.0.0.1:0".parse().unwrap(),
        SinkConfig {
            tls: tls.then(self_signed),
            implicit_tls: implicit,
            ..Default::default()
        },
    )
    .await
    .expect("start sink")
}

/// The `tls` row and exit code of the doctor for a relay at `addr` with `lane` settings.
async fn tls_row(
    dir: &Path,
    d: &super::Dns,
    key: &Path,
    scheme: &str,
    addr: std::net::SocketAddr,
    lane: &str,
) -> (i32, (String, String, String, String)) {
    let transport = format!("transport = \"{scheme}://{addr}\"\n{lane}");
    campaign_with(dir, d, key, "203.0.113.10", "", &transport);
    let (code, rows) = doctor_async(dir).await;
    let r = row(&rows, &format!("tls {addr}")).clone();
    // Only the TLS row differs from the good zone's all-PASS.
    for other in rows.iter().filter(|x| !x.0.starts_with("tls ")) {
        assert_eq!(other.1, "PASS", "{other:?}");
    }
    (code, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lanes_tls_to_its_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keygen(dir.path(), "acme.test", "s1", false);
    let d = dns(&good(&record));
    let (dir, key) = (dir.path(), key.as_path());
    let opportunistic = "starttls = \"opportunistic\"\n";
    let required = "starttls = \"required\"\n";

    let tls = sink(true, false).await;
    let (code, r) = tls_row(dir, &d, key, "smtp", tls.addr, opportunistic).await;
    assert_eq!(r.1, "PASS", "{r:?}");
    assert!(
        r.2.starts_with("STARTTLS offered, handshake succeeds"),
        "{r:?}"
    );
    assert_eq!(code, 0);
    assert!(tls.tls_handshakes() >= 1, "the handshake really happened");

    let (code, r) = tls_row(dir, &d, key, "smtp", tls.addr, required).await;
    assert_eq!(r.1, "FAIL", "{r:?}");
    assert!(
        r.2.starts_with("the certificate is not valid for 127.0.0.1: "),
        "{r:?}"
    );
    assert!(r.3.contains("from a public CA"), "{r:?}");
    assert_eq!(code, 1);

    let plain = sink(false, false).await;
    let (code, r) = tls_row(dir, &d, key, "smtp", plain.addr, opportunistic).await;
    assert_eq!(r.1, "WARN", "{r:?}");
    assert_eq!(
        r.2,
        format!(
            "{} does not offer STARTTLS: mail (and any AUTH) crosses in cleartext",
            plain.addr
        )
    );
    assert_eq!(code, 0, "a WARN alone exits 0");

    let (code, r) = tls_row(dir, &d, key, "smtp", plain.addr, required).await;
    assert_eq!(r.1, "FAIL", "{r:?}");
    assert!(
        r.2.contains("does not offer STARTTLS and [lane] starttls = \"required\""),
        "{r:?}"
    );
    assert_eq!(code, 1);

    // A loopback relay left at its default (starttls off): nothing crosses a network.
    let (code, r) = tls_row(dir, &d, key, "smtp", plain.addr, "").await;
    assert_eq!(r.1, "PASS", "{r:?}");
    assert_eq!(code, 0);

    let smtps = sink(true, true).await;
    let (code, r) = tls_row(dir, &d, key, "smtps", smtps.addr, "").await;
    assert_eq!(r.1, "FAIL", "{r:?}");
    assert!(
        r.2.starts_with("the certificate is not valid for 127.0.0.1"),
        "{r:?}"
    );
    assert_eq!(code, 1);

    // Nobody listens there (a port just freed): unknown, so a WARN.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, r) = tls_row(dir, &d, key, "smtp", gone, opportunistic).await;
    assert_eq!(r.1, "WARN", "{r:?}");
    assert!(r.2.starts_with("could not check: "), "{r:?}");
    assert_eq!(code, 0);

    // The doctor never sent a message.
    for s in [&tls, &plain, &smtps] {
        assert_eq!(s.count(), 0);
    }
}
