//! SPF (RFC 7208) for the two identities receivers check, the MAIL FROM domain and the HELO
//! name, evaluated against the egress IP with mail-auth's evaluator (`include`, `a`, `mx`,
//! `redirect`, macros…), asking the campaign's resolver.

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfResult};

use super::{Dns, Row, Target};

/// Why there is no one SPF record to evaluate.
enum NoRecord {
    /// The lookup failed: unknown.
    Lookup(String),
    /// More than one (a permerror).
    Many(String),
}

/// The `v=spf1` record at `domain`, if there is exactly one.
async fn record(dns: &Dns, domain: &str) -> Result<Option<String>, NoRecord> {
    let recs: Vec<String> = dns
        .txt(domain)
        .await
        .map_err(NoRecord::Lookup)?
        .into_iter()
        .filter(|t| {
            let l = t.to_ascii_lowercase();
            l == "v=spf1" || l.starts_with("v=spf1 ")
        })
        .collect();
    match recs.len() {
        0 => Ok(None),
        1 => Ok(recs.into_iter().next()),
        n => Err(NoRecord::Many(format!(
            "{n} SPF records at {domain} (RFC 7208 §4.5: a permerror)"
        ))),
    }
}

/// The SPF rows.
pub async fn check(t: &Target, dns: &Dns, auth: &MessageAuthenticator) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut ids = vec![("mail-from", t.mail_from_domain.clone())];
    if t.helo != t.mail_from_domain {
        ids.push(("helo", t.helo.clone()));
    }
    for (which, domain) in ids {
        let name = format!("spf {which} {domain}");
        let rec = match record(dns, &domain).await {
            Err(NoRecord::Lookup(e)) => {
                rows.push(Row::unchecked(name, e));
                continue;
            }
            Err(NoRecord::Many(e)) => {
                rows.push(Row::fail(
                    name,
                    e,
                    format!("publish one TXT \"v=spf1 …\" at {domain}"),
                ));
                continue;
            }
            Ok(None) => {
                let allow = t.ip.map_or("ip4:EGRESS_IP".to_string(), mechanism);
                rows.push(Row::fail(
                    name,
                    format!("no SPF record at {domain}"),
                    format!("publish TXT \"v=spf1 {allow} -all\" at {domain}"),
                ));
                continue;
            }
            Ok(Some(r)) => r,
        };
        let Some(ip) = t.ip else {
            rows.push(Row::warn(
                name,
                format!("\"{rec}\" found, not evaluated (no public egress IP)"),
                "set [lane] egress_ip",
            ));
            continue;
        };
        let sender = format!("postmaster@{domain}");
        let params = if which == "helo" {
            SpfParameters::verify_ehlo(ip, &domain, "blast.check")
        } else {
            SpfParameters::verify_mail_from(ip, &t.helo, "blast.check", &sender)
        };
        let out = auth.verify_spf(params).await;
        let result = out.result();
        match result {
            SpfResult::Pass => rows.push(Row::pass(name, format!("{ip} passes \"{rec}\""))),
            // A DNS failure during evaluation (an include's zone answering SERVFAIL, say):
            // nothing is known about the record.
            SpfResult::TempError => rows.push(Row::unchecked(
                name,
                format!("evaluating \"{rec}\" for {ip} hit a DNS failure (temperror)"),
            )),
            other => rows.push(Row::fail(
                name,
                format!("{ip} does not pass \"{rec}\": {}", word(other)),
                match other {
                    SpfResult::PermError => {
                        format!("fix the syntax of the SPF record at {domain} (at most 10 lookups)")
                    }
                    _ => format!("add {} to the SPF record at {domain}", mechanism(ip)),
                },
            )),
        }
    }
    rows
}

fn mechanism(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v) => format!("ip4:{v}"),
        std::net::IpAddr::V6(v) => format!("ip6:{v}"),
    }
}

fn word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}
