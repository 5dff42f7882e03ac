//! `blast check --dns`, the deliverability doctor, against a real DNS server: dnsmasq on
//! 127.0.0.1 (started by each test with its records on the command line, see `mx/mod.rs`),
//! the campaign's `[dns] nameservers` pointing at it and `egress_ip = "203.0.113.10"` (a
//! documentation address). Zones are under `.test` (and the one reverse zone), so a missing
//! record is NXDOMAIN, never a question forwarded anywhere.
//!
//! - a good zone: every check PASSes, exit 0 (table and `--json`)
//! - a broken zone: SPF missing, SPF without the IP, DKIM key mismatch, no DMARC, PTR
//!   missing, the IP listed on a DNSBL served by the test DNS: each a precise FAIL, exit 1
//! - another: `p=none` a WARN, a PTR that does not forward-confirm a FAIL
//! - a private egress IP: the IP checks skipped with a note
//! - `doctor/blocklists.rs` the From and link domains on a domain blocklist served by dnsmasq
//! - `doctor/org.rs` DMARC at the organisational domain (Public Suffix List) of a co.uk From
//! - `doctor/servfail.rs` a zone answering SERVFAIL: WARN "could not check", exit 0
//! - `doctor/pool.rs` `source_ips`: SPF, PTR and DNSBL rows per IP of the pool, with its own HELO
//! - `doctor/tls.rs` the lane's TLS to its relay (blast's sink with and without STARTTLS)

mod blocklists;
mod org;
mod pool;
mod servfail;
mod tls;

use std::path::Path;
use std::process::{Command, Stdio};

use super::dkim::keygen;
use super::mx::Dns;

const BIN: &str = env!("CARGO_BIN_EXE_blast");
const IP: &str = "203.0.113.10";

/// `--txt-record=NAME,…,…`: the value in strings of at most 255 bytes (dnsmasq splits at
/// commas and keeps quotes literally; no value here has a comma).
fn txt(name: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect();
    format!("--txt-record={name},{}", strings.join(","))
}

/// dnsmasq with `records`, authoritative for the egress IP's reverse zone too.
fn dns(records: &[String]) -> Dns {
    let mut args = vec!["--local=/113.0.203.in-addr.arpa/".to_string()];
    args.extend_from_slice(records);
    Dns::start(&args)
}

/// Writes the campaign (From news@acme.test, HELO mail.acme.test, signing with `key` as
/// s1._domainkey.acme.test, an outbox transport) into `dir`.
fn campaign(dir: &Path, dns: &Dns, key: &Path, egress: &str) {
    campaign_with(dir, dns, key, egress, "", "transport = \"outbox:out\"\n");
}

/// [`campaign`] with more `[campaign]` keys and the `[lane]` transport lines given.
fn campaign_with(dir: &Path, dns: &Dns, key: &Path, egress: &str, more: &str, lane: &str) {
    if !dir.join("t.txt").exists() {
        std::fs::write(dir.join("t.txt"), "Hello. Unsubscribe: reply.\n").unwrap();
    }
    std::fs::write(dir.join("c.csv"), "email\nann@example.net\n").unwrap();
    let toml = format!(
        "[campaign]\nid = \"c\"\nfrom = \"Acme <news@acme.test>\"\nsubject = \"Hi\"\n\
         text = \"t.txt\"\nlists = [\"c.csv\"]\n{more}\n[lane]\n{lane}\
         helo = \"mail.acme.test\"\negress_ip = \"{egress}\"\n\n\
         [dkim]\ndomain = \"acme.test\"\nselector = \"s1\"\nkey = {key:?}\n\n\
         [dns]\nnameservers = [\"{}\"]\ndnsbl = [\"zen.test\"]\ndbl = [\"dbl.test\"]\n",
        dns.addr
    );
    std::fs::write(dir.join("c.toml"), toml).unwrap();
}

/// A row: check, status, detail, fix.
type Rows = Vec<(String, String, String, String)>;

/// Runs `blast check --dns c.toml --json` in `dir`: exit code and rows
/// (check → (status, detail, fix)).
fn doctor(dir: &Path) -> (i32, Rows) {
    let o = Command::new(BIN)
        .args(["check", "--dns", "c.toml", "--json"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run blast");
    parse(o)
}

/// [`doctor`] from an async test (a sink of the test runs on the runtime meanwhile).
async fn doctor_async(dir: &Path) -> (i32, Rows) {
    let o = tokio::process::Command::new(BIN)
        .args(["check", "--dns", "c.toml", "--json"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run blast");
    parse(o)
}

fn parse(o: std::process::Output) -> (i32, Rows) {
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {out}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let rows = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let f = |k: &str| r[k].as_str().unwrap().to_string();
            (f("check"), f("status"), f("detail"), f("fix"))
        })
        .collect();
    (o.status.code().unwrap(), rows)
}

fn row<'a>(
    rows: &'a [(String, String, String, String)],
    check: &str,
) -> &'a (String, String, String, String) {
    rows.iter()
        .find(|r| r.0 == check)
        .unwrap_or_else(|| panic!("no row {check:?} in {rows:#?}"))
}

/// The good zone's records, with `dkim` as the selector's value.
fn good(dkim: &str) -> Vec<String> {
    vec![
        txt("acme.test", &format!("v=spf1 ip4:{IP} -all")),
        // The HELO's SPF through `a`: mail-auth follows it to the host record.
        txt("mail.acme.test", "v=spf1 a -all"),
        format!("--host-record=mail.acme.test,{IP}"),
        txt("s1._domainkey.acme.test", dkim),
        txt(
            "_dmarc.acme.test",
            "v=DMARC1; p=reject; rua=mailto:d@acme.test",
        ),
        format!("--ptr-record=10.113.0.203.in-addr.arpa,mail.acme.test"),
        "--mx-host=acme.test,mail.acme.test,10".to_string(),
    ]
}

#[test]
fn a_good_zone_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keygen(dir.path(), "acme.test", "s1", false);
    let dns = dns(&good(&record));
    campaign(dir.path(), &dns, &key, IP);
    let (code, rows) = doctor(dir.path());
    for r in &rows {
        assert_eq!(r.1, "PASS", "{r:?} in {rows:#?}");
    }
    let checks: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        checks,
        [
            "spf mail-from acme.test",
            "spf helo mail.acme.test",
            "dkim s1._domainkey.acme.test",
            "dmarc acme.test",
            "dmarc alignment",
            "ptr 203.0.113.10",
            "ptr matches helo",
            "dnsbl zen.test",
            "dbl dbl.test acme.test",
            "mx acme.test",
        ]
    );
    assert_eq!(code, 0);
    // The table: one row per check, exit 0.
    let o = Command::new(BIN)
        .args(["check", "--dns", "c.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("PASS  spf mail-from acme.test"), "{out}");
    assert!(!out.contains("FAIL") && !out.contains("WARN"), "{out}");
}

#[test]
fn a_broken_zone_fails_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "acme.test", "s1", false);
    // The record of another key.
    let other = tempfile::tempdir().unwrap();
    let (_, wrong) = keygen(other.path(), "acme.test", "s1", false);
    let dns = dns(&[
        // No SPF at acme.test; the HELO's leaves the egress IP out.
        // (No --host-record for the egress IP: dnsmasq would derive its PTR from it.)
        txt("mail.acme.test", "v=spf1 ip4:198.51.100.1 -all"),
        txt("s1._domainkey.acme.test", &wrong),
        // No DMARC, no PTR; listed on the test DNSBL.
        "--host-record=10.113.0.203.zen.test,127.0.0.2".to_string(),
        "--mx-host=acme.test,mail.acme.test,10".to_string(),
    ]);
    campaign(dir.path(), &dns, &key, IP);
    let (code, rows) = doctor(dir.path());
    assert_eq!(code, 1, "{rows:#?}");
    let r = row(&rows, "spf mail-from acme.test");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("FAIL", "no SPF record at acme.test")
    );
    assert!(r.3.contains("v=spf1 ip4:203.0.113.10 -all"), "{r:?}");
    let r = row(&rows, "spf helo mail.acme.test");
    assert_eq!(r.1, "FAIL");
    assert!(
        r.2.starts_with("203.0.113.10 does not pass \"v=spf1 ip4:198.51.100.1 -all\": fail"),
        "{r:?}"
    );
    assert!(r.3.contains("add ip4:203.0.113.10"), "{r:?}");
    let r = row(&rows, "dkim s1._domainkey.acme.test");
    assert_eq!(r.1, "FAIL");
    assert!(r.2.starts_with("key mismatch"), "{r:?}");
    let r = row(&rows, "dmarc acme.test");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("FAIL", "no DMARC record at _dmarc.acme.test")
    );
    let r = row(&rows, "ptr 203.0.113.10");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("FAIL", "no PTR record for 203.0.113.10")
    );
    let r = row(&rows, "dnsbl zen.test");
    assert_eq!(
        (r.1.as_str(), r.2.as_str()),
        ("FAIL", "203.0.113.10 is listed (127.0.0.2)")
    );
    assert_eq!(row(&rows, "mx acme.test").1, "PASS");
    // Every WARN and FAIL says, on one line, what to do.
    for r in &rows {
        assert_eq!(r.1 == "PASS", r.3.is_empty(), "{r:?}");
        assert!(!r.3.contains('\n'), "{r:?}");
    }
}

#[test]
fn p_none_warns_and_an_unconfirmed_ptr_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keygen(dir.path(), "acme.test", "s1", false);
    let mut records: Vec<String> = good(&record)
        .into_iter()
        .filter(|r| !r.contains("_dmarc") && !r.starts_with("--host-record=mail."))
        .collect();
    records.extend([
        txt("_dmarc.acme.test", "v=DMARC1; p=none"),
        // The PTR's name points elsewhere; the HELO's SPF then has nothing to match.
        "--host-record=mail.acme.test,198.51.100.7".to_string(),
        // A refused DNSBL query (127.255.255.254): never a PASS.
        "--host-record=10.113.0.203.zen.test,127.255.255.254".to_string(),
    ]);
    let dns = dns(&records);
    campaign(dir.path(), &dns, &key, IP);
    let (code, rows) = doctor(dir.path());
    assert_eq!(code, 1, "{rows:#?}");
    let r = row(&rows, "dmarc acme.test");
    assert_eq!(r.1, "WARN");
    assert!(r.2.contains("p=none"), "{r:?}");
    let r = row(&rows, "ptr 203.0.113.10");
    assert_eq!(r.1, "FAIL");
    assert!(
        r.2.contains("mail.acme.test does not forward-confirm"),
        "{r:?}"
    );
    let r = row(&rows, "dnsbl zen.test");
    assert_eq!(r.1, "WARN");
    assert!(r.2.starts_with("not checked"), "{r:?}");
    assert_eq!(row(&rows, "spf mail-from acme.test").1, "PASS");
    assert_eq!(row(&rows, "dkim s1._domainkey.acme.test").1, "PASS");
}

#[test]
fn a_private_egress_ip_skips_the_ip_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keygen(dir.path(), "acme.test", "s1", false);
    let dns = dns(&good(&record));
    campaign(dir.path(), &dns, &key, "10.1.2.3");
    let (code, rows) = doctor(dir.path());
    let r = row(&rows, "egress ip");
    assert_eq!(r.1, "WARN");
    assert!(
        r.2.contains("10.1.2.3 is a private (RFC 1918) address"),
        "{r:?}"
    );
    assert!(rows
        .iter()
        .all(|r| !r.0.starts_with("ptr") && !r.0.starts_with("dnsbl")));
    assert_eq!(code, 0, "{rows:#?}");
}
