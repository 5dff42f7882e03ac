//! Domain blocklists (`[dns] dbl`) against dnsmasq serving a test list at `dbl.test`: the
//! From domain, and the domains of the links in the text and HTML templates (placeholders
//! skipped), each looked up with its organisational domain; a refused query is a WARN.

use super::super::dkim::keygen;
use super::{campaign_with, dns, doctor, good, row};

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
