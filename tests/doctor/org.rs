//! The organisational domain through the Public Suffix List: a From of `news.acme.co.uk`
//! with no `_dmarc.news.acme.co.uk` finds the policy at `_dmarc.acme.co.uk` (RFC 7489
//! §6.6.3, its `sp=` applying), and a DKIM `d=acme.co.uk` aligns with it; while
//! `acme.github.io` (a suffix of the list's private section) is its own organisation, so
//! `d=github.io` would not align — the doctor says so.

use std::process::{Command, Stdio};

use super::super::dkim::keygen;
use super::{dns, parse, row, txt, BIN};

fn toml(from: &str, dkim_domain: &str, key: &std::path::Path, dns: &super::Dns) -> String {
    format!(
        "[campaign]\nid = \"o\"\nfrom = \"Acme <news@{from}>\"\nsubject = \"Hi\"\n\
         text = \"t.txt\"\nlists = [\"c.csv\"]\n\n[lane]\ntransport = \"outbox:out\"\n\
         helo = \"mail.acme.test\"\negress_ip = \"203.0.113.10\"\n\n\
         [dkim]\ndomain = \"{dkim_domain}\"\nselector = \"s1\"\nkey = {key:?}\n\n\
         [dns]\nnameservers = [\"{}\"]\ndnsbl = []\ndbl = []\n",
        dns.addr
    )
}

#[test]
fn dmarc_is_found_at_the_organisational_domain_of_a_co_uk_subdomain() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "acme.co.uk", "s1", false);
    std::fs::write(dir.path().join("t.txt"), "Hello. Unsubscribe: reply.\n").unwrap();
    std::fs::write(dir.path().join("c.csv"), "email\nann@example.net\n").unwrap();
    // dnsmasq answers for these zones itself: a name it has no record for is NXDOMAIN.
    let d = dns(&[
        "--local=/acme.co.uk/".to_string(),
        "--local=/github.io/".to_string(),
        txt("_dmarc.acme.co.uk", "v=DMARC1; p=reject; sp=quarantine"),
        txt("_dmarc.acme.github.io", "v=DMARC1; p=reject"),
    ]);
    let run = |from: &str, dkim_domain: &str| {
        std::fs::write(dir.path().join("c.toml"), toml(from, dkim_domain, &key, &d)).unwrap();
        parse(
            Command::new(BIN)
                .args(["check", "--dns", "c.toml", "--json"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .expect("run blast"),
        )
    };

    let (_, rows) = run("news.acme.co.uk", "acme.co.uk");
    let r = row(&rows, "dmarc news.acme.co.uk");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("PASS", "_dmarc.acme.co.uk: p=reject, sp=quarantine"),
        "{rows:#?}"
    );
    let r = row(&rows, "dmarc alignment");
    assert_eq!(r.1, "PASS", "{r:?}");
    assert!(
        r.2.ends_with("with news.acme.co.uk (organisational domain acme.co.uk)"),
        "{r:?}"
    );

    // Under github.io (a public suffix of the list's private section) every site is its own
    // organisation: the policy is acme.github.io's, and d=github.io does not align.
    let (_, rows) = run("news.acme.github.io", "github.io");
    let r = row(&rows, "dmarc news.acme.github.io");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("PASS", "_dmarc.acme.github.io: p=reject"),
        "{rows:#?}"
    );
    let r = row(&rows, "dmarc alignment");
    assert!(
        r.2.contains("DKIM d=github.io not aligned")
            && r.2.contains("(organisational domain acme.github.io)"),
        "{r:?}"
    );
}
