//! `blast check --dns` with `[lane] source_ips`: every IP of the pool is checked with its own
//! HELO and egress address — SPF, PTR (forward-confirmed against its HELO) and DNSBL rows per
//! IP, labelled with the IP — while the domain checks (DKIM, DMARC, MX) appear once.

use super::*;

#[test]
fn each_pool_ip_is_checked_with_its_own_helo_and_egress_address() {
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keygen(dir.path(), "acme.test", "s1", false);
    // The good zone for 203.0.113.10 (mail.acme.test); the second IP, 203.0.113.11 behind
    // 127.0.0.3, has its own HELO m2.acme.test (dnsmasq derives its PTR from the host
    // record) and is listed on the DNSBL.
    let mut records = good(&record);
    records[0] = txt("acme.test", "v=spf1 ip4:203.0.113.10 ip4:203.0.113.11 -all");
    records.push(txt("m2.acme.test", "v=spf1 a -all"));
    records.push("--host-record=m2.acme.test,203.0.113.11".to_string());
    records.push("--host-record=11.113.0.203.zen.test,127.0.0.2".to_string());
    let dns = dns(&records);
    let lane = "transport = \"smtp://127.0.0.1:9\"\nstarttls = \"off\"\n\
                source_ips = [{ ip = \"203.0.113.10\" }, \
                { ip = \"127.0.0.3\", helo = \"m2.acme.test\", egress_ip = \"203.0.113.11\", weight = 2 }]\n";
    campaign_with(dir.path(), &dns, &key, IP, "", lane);
    // The pool's entries carry their own egress addresses.
    let toml = std::fs::read_to_string(dir.path().join("c.toml"))
        .unwrap()
        .replace(&format!("egress_ip = \"{IP}\"\n\n"), "\n");
    std::fs::write(dir.path().join("c.toml"), toml).unwrap();
    let (code, rows) = doctor(dir.path());
    assert_eq!(code, 1, "{rows:#?}");
    let first = "[203.0.113.10]";
    let second = "[127.0.0.3 as 203.0.113.11]";
    for check in [
        format!("spf mail-from acme.test {first}"),
        format!("spf helo mail.acme.test {first}"),
        format!("ptr 203.0.113.10 {first}"),
        format!("ptr matches helo {first}"),
        format!("dnsbl zen.test {first}"),
        format!("spf mail-from acme.test {second}"),
        format!("spf helo m2.acme.test {second}"),
    ] {
        assert_eq!(row(&rows, &check).1, "PASS", "{check}: {rows:#?}");
    }
    assert_eq!(row(&rows, &format!("dnsbl zen.test {second}")).1, "FAIL");
    let ptr = row(&rows, &format!("ptr 203.0.113.11 {second}"));
    assert_eq!(ptr.1, "PASS", "{ptr:?}");
    assert!(
        ptr.2.contains("m2.acme.test"),
        "checked against its own HELO: {ptr:?}"
    );
    assert_eq!(row(&rows, &format!("ptr matches helo {second}")).1, "PASS");
    // The domain's own checks once.
    assert_eq!(rows.iter().filter(|r| r.0.starts_with("dkim ")).count(), 1);
    assert_eq!(row(&rows, "dmarc acme.test").1, "PASS");
}
