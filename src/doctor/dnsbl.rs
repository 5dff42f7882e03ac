//! DNSBLs (RFC 5782): the egress IP looked up in each configured zone. An answer in
//! 127.255.255.0/24 is Spamhaus's "query refused" (public or unidentified resolvers), so
//! the IP was not checked: a WARN, never a PASS.

use std::net::IpAddr;

use super::lookup::reverse_name;
use super::{Dns, Row};

/// One row per zone.
pub async fn check(ip: IpAddr, zones: &[String], dns: &Dns) -> Vec<Row> {
    let mut rows = Vec::new();
    for zone in zones {
        let name = format!("dnsbl {zone}");
        let q = reverse_name(ip, zone, zone);
        rows.push(match dns.a(&q).await {
            Err(e) => Row::warn(
                name,
                format!("not checked: {e}"),
                "rerun; or use your own resolver ([dns] nameservers)",
            ),
            Ok(a) if a.is_empty() => Row::pass(name, format!("{ip} not listed")),
            Ok(a) if a.iter().all(|x| x.octets()[..3] == [127, 255, 255]) => Row::warn(
                name,
                format!("not checked: the query was refused ({})", a[0]),
                "use your own resolver ([dns] nameservers), not a public one",
            ),
            Ok(a) => {
                let codes: Vec<String> = a.iter().map(|x| x.to_string()).collect();
                Row::fail(
                    name,
                    format!("{ip} is listed ({})", codes.join(", ")),
                    format!("see {zone}'s lookup page for {ip}, fix the cause, request delisting"),
                )
            }
        });
    }
    rows
}
