//! Reverse DNS: the egress IP has a PTR, its name's A/AAAA include the IP again (FCrDNS),
//! and it is the HELO name.

use std::net::IpAddr;

use super::{Dns, Row};

/// The PTR rows.
pub async fn check(ip: IpAddr, helo: &str, dns: &Dns) -> Vec<Row> {
    let name = format!("ptr {ip}");
    let names = match dns.ptr(ip).await {
        Err(e) => {
            return vec![Row::unchecked(name, e)];
        }
        Ok(n) if n.is_empty() => {
            return vec![Row::fail(
                name,
                format!("no PTR record for {ip}"),
                format!("ask the owner of {ip} (your host or ISP) for a PTR to {helo}"),
            )];
        }
        Ok(n) => n,
    };
    let mut confirmed = None;
    let mut failed = None;
    for n in &names {
        match dns.addrs(n).await {
            Ok(addrs) if addrs.contains(&ip) => {
                confirmed = Some(n.clone());
                break;
            }
            Ok(_) => {}
            Err(e) => failed = Some(e),
        }
    }
    // A forward lookup that failed proves nothing either way.
    if let (None, Some(e)) = (&confirmed, failed) {
        return vec![Row::unchecked(name, e)];
    }
    let Some(host) = confirmed else {
        return vec![Row::fail(
            name,
            format!(
                "PTR {} does not forward-confirm: its A/AAAA records do not include {ip}",
                names.join(", ")
            ),
            format!("publish A {ip} for {}", names[0]),
        )];
    };
    let mut rows = vec![Row::pass(name, format!("{host}, forward-confirmed"))];
    rows.push(if host == helo {
        Row::pass("ptr matches helo", format!("{host} is the HELO name"))
    } else {
        Row::warn(
            "ptr matches helo",
            format!("PTR {host} is not the HELO name {helo}"),
            format!("set [lane] helo = \"{host}\" (or point the PTR at {helo})"),
        )
    });
    rows
}
