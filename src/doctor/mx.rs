//! MX for the From and bounce domains: replies and bounces must be deliverable, and
//! receivers check that a sender domain accepts mail.

use super::{Dns, Row, Target};

/// One row per distinct domain.
pub async fn check(t: &Target, dns: &Dns) -> Vec<Row> {
    let mut domains = vec![t.from_domain.clone()];
    if t.mail_from_domain != t.from_domain {
        domains.push(t.mail_from_domain.clone());
    }
    let mut rows = Vec::new();
    for d in domains {
        let name = format!("mx {d}");
        rows.push(match dns.mx(&d).await {
            Err(e) => Row::unchecked(name, e),
            Ok(m) if m.is_empty() => Row::fail(
                name,
                format!("no MX record for {d}"),
                format!("publish an MX for {d} (replies and bounces go there)"),
            ),
            Ok(m) if m.iter().all(|(_, h)| h.is_empty()) => Row::fail(
                name,
                format!("{d} has a null MX: it accepts no mail"),
                format!("publish a real MX for {d}"),
            ),
            Ok(mut m) => {
                m.sort();
                let hosts: Vec<String> = m.iter().map(|(p, h)| format!("{p} {h}")).collect();
                Row::pass(name, hosts.join(", "))
            }
        });
    }
    rows
}
