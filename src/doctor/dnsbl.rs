//! DNSBLs (RFC 5782): the egress IP looked up in each configured zone. An answer in
//! 127.255.255.0/24 is Spamhaus's "query refused" (public or unidentified resolvers), so
//! the IP was not checked: a WARN, never a PASS. [`listing`] reads an answer that way for
//! the domain blocklists too (`dbl.rs`).

use std::net::{IpAddr, Ipv4Addr};

use super::lookup::reverse_name;
use super::{Dns, Row};

/// What a blocklist said about one name.
pub enum Listing {
    /// NXDOMAIN (or no A record): not listed.
    Clear,
    /// Listed, with the answer codes.
    Listed(Vec<Ipv4Addr>),
    /// An answer in 127.255.255.0/24: the list refused the query, so nothing is known.
    Refused(Ipv4Addr),
    /// The lookup failed (SERVFAIL, timeout): nothing is known.
    Failed(String),
}

/// Asks a blocklist about `query` (`REVERSED.IP.ZONE` or `DOMAIN.ZONE`).
pub async fn listing(dns: &Dns, query: &str) -> Listing {
    match dns.a(query).await {
        Err(e) => Listing::Failed(e),
        Ok(a) if a.is_empty() => Listing::Clear,
        // Spamhaus answers 127.255.255.252/254/255 for typing errors, public resolvers and
        // excess queries: a refusal, whatever other codes come with it.
        Ok(a) => match a.iter().find(|x| x.octets()[..3] == [127, 255, 255]) {
            Some(r) => Listing::Refused(*r),
            None => Listing::Listed(a),
        },
    }
}

/// The WARN row of a refused query (shared with `dbl.rs`).
pub fn refused(name: String, code: Ipv4Addr) -> Row {
    Row::warn(
        name,
        format!("not checked: the query was refused ({code})"),
        "use your own resolver ([dns] nameservers), not a public one",
    )
}

/// The answer codes, `127.0.0.2, 127.0.0.4`.
pub fn codes(a: &[Ipv4Addr]) -> String {
    a.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row per zone.
pub async fn check(ip: IpAddr, zones: &[String], dns: &Dns) -> Vec<Row> {
    let mut rows = Vec::new();
    for zone in zones {
        let name = format!("dnsbl {zone}");
        let l = listing(dns, &reverse_name(ip, zone, zone)).await;
        rows.push(match l {
            Listing::Clear => Row::pass(name, format!("{ip} not listed")),
            Listing::Listed(a) => Row::fail(
                name,
                format!("{ip} is listed ({})", codes(&a)),
                format!("see {zone}'s lookup page for {ip}, fix the cause, request delisting"),
            ),
            Listing::Refused(code) => refused(name, code),
            Listing::Failed(e) => Row::unchecked(name, e),
        });
    }
    rows
}
