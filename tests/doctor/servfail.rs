//! A zone whose name server answers SERVFAIL (dnsmasq forwards it to the test's SERVFAIL
//! responder): the checks that need it WARN "could not check" — never PASS, never FAIL —
//! so the doctor exits 0 when nothing else is wrong.

use super::super::dkim::keygen;
use super::super::mx::ServFail;
use super::{campaign, dns, doctor, good, row};

#[test]
fn servfail_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keygen(dir.path(), "acme.test", "s1", false);
    let sf = ServFail::start();
    let upstream = format!("{}#{}", sf.addr.ip(), sf.addr.port());
    let mut records: Vec<String> = good(&record)
        .into_iter()
        .filter(|r| !r.contains("_dmarc") && !r.starts_with("--host-record=mail."))
        .collect();
    records.extend([
        // The DMARC record's name, the whole domain blocklist and the PTR name's address
        // (what forward-confirms the PTR, and the HELO's SPF `a`) answer SERVFAIL.
        format!("--server=/_dmarc.acme.test/{upstream}"),
        format!("--server=/dbl.test/{upstream}"),
        format!("--server=/mail.acme.test/{upstream}"),
    ]);
    let d = dns(&records);
    campaign(dir.path(), &d, &key, "203.0.113.10");
    let (code, rows) = doctor(dir.path());
    for check in [
        "dmarc acme.test",
        "dbl dbl.test acme.test",
        "ptr 203.0.113.10",
        "spf helo mail.acme.test",
    ] {
        let r = row(&rows, check);
        assert_eq!(r.1, "WARN", "{r:?}");
        assert!(r.2.starts_with("could not check: "), "{r:?}");
        assert!(!r.3.is_empty(), "a WARN says what to do: {r:?}");
    }
    assert_eq!(row(&rows, "spf mail-from acme.test").1, "PASS");
    assert_eq!(row(&rows, "mx acme.test").1, "PASS");
    assert!(rows.iter().all(|r| r.1 != "FAIL"), "{rows:#?}");
    assert_eq!(code, 0, "WARNs only: exit 0");
}
