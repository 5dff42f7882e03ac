//! Domain blocklists (`[dns] dbl`) against dnsmasq serving a test list at `dbl.test`: the
//! From domain, and the domains of the links in the text and HTML templates (placeholders
//! skipped), each looked up with its organisational domain; a refused query is a WARN; with
//! the server config, the bounce domain and the unsubscribe and click-tracking hosts.

use std::process::{Command, Stdio};

use super::super::dkim::keygen;
use super::{campaign_with, dns, doctor, good, parse, row, BIN};

#[test]
fn listed_link_and_from_domains_fail_and_a_refusal_warns() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keygen(dir.path(), "acme.test", "s1", false);
    std::fs::write(
        dir.path().join("t.txt"),
        "Hi {{first_name}}, our shop: https://shop.acme.test/spring?x=1.\n\
         Partner: https://refused.test/p. Unsubscribe: {{unsubscribe_url}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("t.html"),
        "<p>Hi {{first_name}}</p>\n\
         <a href=\"https://www.bad.test/deal\">deal</a> <a href=\"{{unsubscribe_url}}\">u</a>\n\
         <img src=\"https://{{cdn_host}}/logo.png\"> <a href=\"https://shop.acme.test/\">again</a>\n",
    )
    .unwrap();
    let mut records = good(&record);
    records.extend([
        // The link's registered domain is listed (the DBL's "spam domain" code)…
        "--host-record=bad.test.dbl.test,127.0.1.2".to_string(),
        // …and the list refuses the query for another (a public resolver, say).
        "--host-record=refused.test.dbl.test,127.255.255.254".to_string(),
    ]);
    let d = dns(&records);
    campaign_with(
        dir.path(),
        &d,
        &key,
        "203.0.113.10",
        "html = \"t.html\"\n",
        "transport = \"outbox:out\"\n",
    );
    let (code, rows) = doctor(dir.path());
    assert_eq!(code, 1, "a listed link domain fails: {rows:#?}");
    let r = row(&rows, "dbl dbl.test acme.test");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("PASS", "acme.test (From domain, bounce domain) not listed")
    );
    let r = row(&rows, "dbl dbl.test shop.acme.test");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        (
            "PASS",
            "shop.acme.test and acme.test (link in t.txt:1) not listed"
        )
    );
    let r = row(&rows, "dbl dbl.test www.bad.test");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("FAIL", "bad.test (link in t.html:2) is listed (127.0.1.2)")
    );
    assert!(r.3.contains("dbl.test's lookup page for bad.test"), "{r:?}");
    let r = row(&rows, "dbl dbl.test refused.test");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        (
            "WARN",
            "not checked: the query was refused (127.255.255.254)"
        )
    );
    assert!(r.3.contains("your own resolver"), "{r:?}");
    // Exactly those four domains: no row for a placeholder.
    let dbl: Vec<&str> = rows
        .iter()
        .filter(|r| r.0.starts_with("dbl "))
        .map(|r| r.0.as_str())
        .collect();
    assert_eq!(
        dbl,
        [
            "dbl dbl.test acme.test",
            "dbl dbl.test shop.acme.test",
            "dbl dbl.test refused.test",
            "dbl dbl.test www.bad.test"
        ]
    );
    // Every row that is not a PASS says what to do.
    for r in &rows {
        assert_eq!(r.1 == "PASS", r.3.is_empty(), "{r:?}");
    }

    // The From domain itself listed: FAIL, and the other checks are unaffected.
    let mut records = good(&record);
    records.push("--host-record=acme.test.dbl.test,127.0.1.2".to_string());
    let d = dns(&records);
    std::fs::write(dir.path().join("t.txt"), "Hello. Unsubscribe: reply.\n").unwrap();
    campaign_with(
        dir.path(),
        &d,
        &key,
        "203.0.113.10",
        "",
        "transport = \"outbox:out\"\n",
    );
    let (code, rows) = doctor(dir.path());
    assert_eq!(code, 1, "{rows:#?}");
    let r = row(&rows, "dbl dbl.test acme.test");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        (
            "FAIL",
            "acme.test (From domain, bounce domain) is listed (127.0.1.2)"
        )
    );
    assert_eq!(
        rows.iter().filter(|r| r.1 == "FAIL").count(),
        1,
        "{rows:#?}"
    );
}

/// With `--config blast.toml`: the bounce (VERP) domain, and the hosts of the unsubscribe
/// and click-tracking URLs every message carries, are looked up too.
#[test]
fn bounce_unsubscribe_and_tracking_domains_are_checked_with_the_server_config() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keygen(dir.path(), "acme.test", "s1", false);
    let mut records = good(&record);
    records.push("--host-record=clicks.test.dbl.test,127.0.1.4".to_string());
    let d = dns(&records);
    campaign_with(
        dir.path(),
        &d,
        &key,
        "203.0.113.10",
        "",
        "transport = \"outbox:out\"\n",
    );
    std::fs::write(
        dir.path().join("blast.toml"),
        "[serve]\nsubmission = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nhostname = \"mx.acme.test\"\n\
         secret_file = \"blast.secret\"\n\n\
         [priority]\ntransport = \"outbox:pout\"\nhelo = \"mx.acme.test\"\n\n\
         [unsubscribe]\nurl = \"https://unsub.acme.test/u\"\n\n\
         [tracking]\nurl = \"https://go.clicks.test/c\"\n\n\
         [bounces]\ndomain = \"bounces.acme.test\"\n",
    )
    .unwrap();
    blast::token::write_private(
        &dir.path().join("blast.secret"),
        "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    )
    .unwrap();
    let (code, rows) = parse(
        Command::new(BIN)
            .args([
                "check",
                "--dns",
                "c.toml",
                "--json",
                "--config",
                "blast.toml",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run blast"),
    );
    assert_eq!(code, 1, "{rows:#?}");
    let dbl: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r.0.starts_with("dbl "))
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        dbl,
        [
            (
                "dbl dbl.test acme.test",
                "PASS",
                "acme.test (From domain) not listed"
            ),
            (
                "dbl dbl.test bounces.acme.test",
                "PASS",
                "bounces.acme.test and acme.test (bounce domain) not listed"
            ),
            (
                "dbl dbl.test unsub.acme.test",
                "PASS",
                "unsub.acme.test and acme.test (unsubscribe URL) not listed"
            ),
            (
                "dbl dbl.test go.clicks.test",
                "FAIL",
                "clicks.test (click-tracking URL) is listed (127.0.1.4)"
            ),
        ]
    );
}
