//! DKIM signing alone, keys cached (parsed once, as the lanes do): RSA-2048 and Ed25519 over
//! a ~2 KB campaign message, and the two together (a campaign with `ed25519_selector`).
//!
//!   cargo bench --bench sign
//!
//! Compare with `openssl speed -multi 1 rsa2048` (one core); `benches/e2e.sh` with `DKIM=1`
//! measures the whole send against `openssl speed -multi <cores>`.

use std::time::Duration;

use blast::commands::dkim::Generated;
use blast::sign::{KeySpec, Signer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn message() -> Vec<u8> {
    let mut m = String::from(
        "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nFrom: Acme News <news@acme.example>\r\nReply-To: support@acme.example\r\nTo: ann@example.net\r\nSubject: Spring offers for Ann\r\nMessage-ID: <abcdefghijklmnopqrstuvwxyz234567ab@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\nList-Id: <spring.acme.example>\r\nList-Unsubscribe: <https://news.acme.example/u/abcdefghijklmnopqrstuvwxyz234567ab>,\r\n <mailto:unsub+abcdefghijklmnopqrstuvwxyz234567ab@bounces.acme.example>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nFeedback-ID: spring:list:acme.example\r\n\r\n",
    );
    while m.len() < 2048 {
        m.push_str("  * Offer for Ann in Lisbon: 20% off garden furniture, free delivery.\r\n");
    }
    m.into_bytes()
}

fn signer(dir: &std::path::Path, ed25519: bool) -> Signer {
    let write = |name: &str, g: Generated| {
        let p = dir.join(name);
        std::fs::write(&p, g.pem).unwrap();
        p
    };
    let key = write("rsa.pem", Generated::rsa(2048).unwrap());
    let ed = ed25519.then(|| {
        (
            "ed".to_string(),
            write("ed.pem", Generated::ed25519().unwrap()),
        )
    });
    Signer::load(&KeySpec {
        domain: "acme.example".into(),
        selector: "s1".into(),
        key,
        ed25519: ed,
        standby: vec![],
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let msg = message();
    let rsa = signer(dir.path(), false);
    let both = signer(dir.path(), true);
    let mut g = c.benchmark_group("dkim_sign");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("rsa2048", |b| b.iter(|| rsa.sign(&msg).unwrap()));
    g.bench_function("rsa2048+ed25519", |b| b.iter(|| both.sign(&msg).unwrap()));
    g.finish();
    // Ed25519 alone is never configured (blast always signs RSA too), but its cost is the
    // difference between the two figures above; a direct figure helps read it.
    let ed = mail_auth_ed(dir.path());
    c.bench_function("dkim_sign/ed25519_only", |b| b.iter(|| ed(&msg)));
}

/// An Ed25519-only signature through the same library path, for the figure.
fn mail_auth_ed(dir: &std::path::Path) -> impl Fn(&[u8]) {
    let p = dir.join("ed-only.pem");
    std::fs::write(&p, Generated::ed25519().unwrap().pem).unwrap();
    let key = blast::sign::load_ed25519(&p).unwrap();
    let signer = mail_auth::dkim::DkimSigner::from_key(key)
        .domain("acme.example")
        .selector("ed")
        .headers(["From", "To", "Subject", "Date", "Message-ID", "From"]);
    move |m: &[u8]| {
        signer.sign(m).unwrap();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
