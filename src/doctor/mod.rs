//! `blast check --dns CAMPAIGN`, the deliverability doctor: what receivers will find in DNS
//! for the campaign as it would be sent, judged for the address they will see (`[lane]
//! egress_ip`, default `source_ip`). One [`Row`] per check, PASS / WARN / FAIL with a
//! one-line fix; exit 0 when nothing FAILs, 1 otherwise.
//!
//! - `mod.rs`    the target (domains, IP, key), the runner, the output
//! - `lookup.rs` the DNS questions, through `[dns] nameservers`
//! - `spf.rs`    SPF (mail-auth's evaluator) for the MAIL FROM domain and the HELO name
//! - `dkim.rs`   the selector's TXT record against the configured private key
//! - `dmarc.rs`  the policy (with the organisational-domain fallback) and alignment
//! - `ptr.rs`    PTR, forward confirmation, HELO match
//! - `dnsbl.rs`  the egress IP on the configured DNSBLs (and how a list's answer reads)
//! - `dbl.rs`    the From, bounce and link domains on the configured domain blocklists
//! - `links.rs`  the link domains of the templates
//! - `mx.rs`     MX for the From and bounce domains
//! - `tls.rs`    the lane's TLS to its relay
//!
//! A lookup that fails (SERVFAIL, timeout) is a WARN "could not check", never a PASS or a
//! FAIL: nothing is known.

mod dbl;
mod dkim;
mod dmarc;
mod dnsbl;
mod links;
mod lookup;
mod mx;
mod ptr;
mod spf;
mod tls;

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use crate::config::{self, Settings};
use crate::error::{Error, Result};

pub use lookup::Dns;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Fine.
    Pass,
    /// Worth fixing; does not fail the doctor.
    Warn,
    /// Receivers will hold it against the campaign: exit 1.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was checked (`spf mail-from acme.example`).
    pub check: String,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty on PASS).
    pub fix: String,
}

impl Row {
    fn pass(check: impl Into<String>, detail: impl Into<String>) -> Row {
        Row {
            check: check.into(),
            status: Status::Pass,
            detail: detail.into(),
            fix: String::new(),
        }
    }
    fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Row {
        Row {
            check: check.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
    /// A lookup failed (SERVFAIL, timeout): nothing is known, so neither PASS nor FAIL.
    fn unchecked(check: impl Into<String>, why: impl std::fmt::Display) -> Row {
        Row::warn(
            check,
            format!("could not check: {why}"),
            "rerun; if it persists, check the zone's name servers and [dns] nameservers",
        )
    }
    fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Row {
        Row {
            check: check.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// The configured DKIM key, as its TXT record should publish it.
#[derive(Debug, Clone)]
pub struct DkimKey {
    /// `d=`.
    pub domain: String,
    /// The selector.
    pub selector: String,
    /// `rsa` or `ed25519`.
    pub kind: &'static str,
    /// The public key as `p=` carries it (SubjectPublicKeyInfo for RSA, the raw 32 bytes
    /// for Ed25519).
    pub public: Vec<u8>,
}

/// What the doctor checks: the campaign as it would be sent.
#[derive(Debug, Clone)]
pub struct Target {
    /// The From header's domain.
    pub from_domain: String,
    /// The MAIL FROM domain: `[bounces] domain` when tokens are configured, else the From's.
    pub mail_from_domain: String,
    /// The lane's EHLO name.
    pub helo: String,
    /// The address receivers see; `None` when unset or not public (see `ip_note`).
    pub ip: Option<IpAddr>,
    /// Why IP checks are skipped.
    pub ip_note: Option<String>,
    /// The signing keys (RSA first, then the optional Ed25519).
    pub dkim: Vec<DkimKey>,
    /// DNSBL zones.
    pub dnsbl: Vec<String>,
    /// Domain blocklist zones.
    pub dbl: Vec<String>,
    /// The domains looked up on them: From, bounce, the links' (and unsubscribe and
    /// click-tracking hosts).
    pub domains: Vec<dbl::Checked>,
    /// The relay whose TLS is checked (`transport = "smtp://…"`), without credentials.
    pub relay: Option<crate::transport::smtp::Endpoint>,
    /// `[lane] source_ips`: each IP of the pool, checked with its own HELO and egress IP
    /// (empty: the lane's one `ip` and `helo` above).
    pub pool: Vec<PoolMember>,
    /// `[lane] relays` past the first (whose TLS `relay` checks).
    pub more_relays: Vec<crate::transport::smtp::Endpoint>,
}

/// One source IP of the lane's pool as receivers see it.
#[derive(Debug, Clone)]
pub struct PoolMember {
    /// How its rows are labelled: the bind address (and the egress address when it differs).
    pub label: String,
    /// Its public address, if it is one.
    pub ip: Option<IpAddr>,
    /// Why `ip` is not checked.
    pub ip_note: Option<String>,
    /// Its HELO name.
    pub helo: String,
}

/// The egress address to check and, when there is none to check, why.
fn egress(ip: Option<IpAddr>, key: &str) -> (Option<IpAddr>, Option<String>) {
    match ip {
        None => (
            None,
            Some(format!("no [lane] {key} or source_ip: set {key} to the address receivers see")),
        ),
        Some(ip) => match not_public(ip) {
            Some(why) => (
                None,
                Some(format!(
                    "egress IP {ip} is {why}, not what receivers see: set [lane] {key} to the public address (the NAT's or relay's)"
                )),
            ),
            None => (Some(ip), None),
        },
    }
}

/// Why `ip` is not one receivers see: RFC 1918 / unique-local, loopback, link-local.
fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v) if v.is_private() => Some("a private (RFC 1918) address"),
        IpAddr::V4(v) if v.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v) if v.is_link_local() => Some("a link-local address"),
        IpAddr::V4(v) if v.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v) if v.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v) if v.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
        IpAddr::V6(v) if (v.segments()[0] & 0xfe00) == 0xfc00 => {
            Some("a unique-local (private) address")
        }
        _ => None,
    }
}

impl Target {
    /// The target of campaign `s` (its tokens already set from `--config`).
    pub fn of(s: &Settings) -> Result<Target> {
        let from_domain = s.from.domain().unwrap_or_default().to_ascii_lowercase();
        let mail_from_domain = s
            .tokens
            .as_ref()
            .and_then(|t| t.bounce_domain.clone())
            .unwrap_or_else(|| from_domain.clone())
            .to_ascii_lowercase();
        let (ip, ip_note) = egress(s.lane.egress_ip, "egress_ip");
        let pool = s
            .lane
            .source_ips
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (ip, ip_note) =
                    egress(Some(p.egress_ip), &format!("source_ips[{i}].egress_ip"));
                PoolMember {
                    label: if p.egress_ip == p.ip {
                        p.ip.to_string()
                    } else {
                        format!("{} as {}", p.ip, p.egress_ip)
                    },
                    ip,
                    ip_note,
                    helo: p.helo.to_ascii_lowercase(),
                }
            })
            .collect();
        let more_relays = s
            .lane
            .relays
            .iter()
            .skip(1)
            .filter_map(|r| {
                let mut lane = s.lane.clone();
                lane.transport = r.transport.clone();
                tls::probe_endpoint(crate::transport::smtp::Endpoint::for_lane(&lane))
            })
            .collect();
        let dkim = match &s.dkim {
            None => Vec::new(),
            Some(d) => dkim::configured(&d.spec).map_err(Error::Config)?,
        };
        let domains = dbl::domains_of(s, &from_domain, &mail_from_domain);
        Ok(Target {
            from_domain,
            mail_from_domain,
            helo: s.lane.helo.to_ascii_lowercase(),
            ip,
            ip_note,
            dkim,
            dnsbl: s.lane.dnsbl.clone(),
            dbl: s.lane.dbl.clone(),
            domains,
            relay: tls::probe_endpoint(crate::transport::smtp::Endpoint::for_lane(&s.lane)),
            pool,
            more_relays,
        })
    }
}

/// Runs every check of `t` through `dns` (and mail-auth's SPF through `auth`).
pub async fn diagnose(t: &Target, dns: &Dns, auth: &mail_auth::MessageAuthenticator) -> Vec<Row> {
    let mut rows = Vec::new();
    if t.pool.is_empty() {
        rows.extend(spf_rows(t, dns, auth, "egress_ip").await);
        rows.extend(dkim::check(t, dns).await);
        rows.extend(dmarc::check(t, dns).await);
        rows.extend(listing_rows(t, dns).await);
    } else {
        for m in &t.pool {
            // Each IP as receivers see it: its own HELO, SPF evaluation, PTR and listings.
            let one = Target {
                ip: m.ip,
                ip_note: m.ip_note.clone(),
                helo: m.helo.clone(),
                ..t.clone()
            };
            let mut own = spf_rows(&one, dns, auth, "source_ips[].egress_ip").await;
            own.extend(listing_rows(&one, dns).await);
            for mut r in own {
                r.check = format!("{} [{}]", r.check, m.label);
                rows.push(r);
            }
        }
        rows.extend(dkim::check(t, dns).await);
        rows.extend(dmarc::check(t, dns).await);
    }
    rows.extend(dbl::check(t, dns).await);
    rows.extend(mx::check(t, dns).await);
    for ep in t.relay.iter().chain(&t.more_relays) {
        rows.push(tls::check(ep).await);
    }
    rows
}

/// The SPF rows of the sending IP and its HELO (and why the IP is not checked, if so).
async fn spf_rows(
    t: &Target,
    dns: &Dns,
    auth: &mail_auth::MessageAuthenticator,
    key: &str,
) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(note) = &t.ip_note {
        rows.push(Row::warn(
            "egress ip",
            format!("{note}; SPF evaluation, PTR and DNSBL checks skipped"),
            format!("set [lane] {key} = \"PUBLIC.ADDRESS\""),
        ));
    }
    rows.extend(spf::check(t, dns, auth).await);
    rows
}

/// PTR/FCrDNS against the HELO, and the DNSBLs, of the sending IP.
async fn listing_rows(t: &Target, dns: &Dns) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(ip) = t.ip {
        rows.extend(ptr::check(ip, &t.helo, dns).await);
        rows.extend(dnsbl::check(ip, &t.dnsbl, dns).await);
    }
    rows
}

/// The rows as a table: `STATUS  CHECK  DETAIL`, then `fix: …` under a WARN or FAIL.
pub fn table(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{}  {:<w$}  {}\n",
            r.status.label(),
            r.check,
            r.detail
        ));
        if !r.fix.is_empty() {
            out.push_str(&format!("      {:<w$}  fix: {}\n", "", r.fix));
        }
    }
    out
}

/// The exit code of a diagnosis: 0 when nothing FAILs, 1 otherwise.
pub fn exit_code(rows: &[Row]) -> i32 {
    i32::from(rows.iter().any(|r| r.status == Status::Fail))
}

/// `blast check --dns CAMPAIGN [--config blast.toml] [--json]`; returns the exit code.
pub async fn run(campaign: &Path, config: Option<&Path>, json: bool) -> Result<i32> {
    let mut s = config::load(campaign)?;
    if let Some(sv) = crate::commands::schedule::serve_settings(config)? {
        s.tokens = sv.token_settings()?.map(std::sync::Arc::new);
    }
    let t = Target::of(&s)?;
    let (r1, describe) =
        crate::dns::hickory_resolver(&s.lane.nameservers).map_err(Error::Config)?;
    let (r2, _) = crate::dns::hickory_resolver(&s.lane.nameservers).map_err(Error::Config)?;
    let dns = Dns::new(r1);
    let auth = mail_auth::MessageAuthenticator(r2);
    let rows = diagnose(&t, &dns, &auth).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| Error::Lane(e.to_string()))?
        );
    } else {
        let who = if t.pool.is_empty() {
            format!(
                "egress IP {}, HELO {}",
                t.ip.map_or("not set".to_string(), |i| i.to_string()),
                t.helo
            )
        } else {
            let ips: Vec<String> = t
                .pool
                .iter()
                .map(|m| format!("{} (HELO {})", m.label, m.helo))
                .collect();
            format!("IP pool {}", ips.join(", "))
        };
        println!(
            "{}: DNS as receivers see it ({who}, asked {describe})",
            campaign.display(),
        );
        print!("{}", table(&rows));
    }
    Ok(exit_code(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_are_not_public() {
        for ip in [
            "10.1.2.3",
            "192.168.0.1",
            "172.16.9.9",
            "127.0.0.1",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(not_public(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["203.0.113.10", "198.51.100.7", "2001:db8::1"] {
            assert!(not_public(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn exit_code_is_1_only_with_a_fail() {
        let warn = Row::warn("a", "b", "c");
        assert_eq!(exit_code(&[Row::pass("a", "b"), warn.clone()]), 0);
        assert_eq!(exit_code(&[warn, Row::fail("a", "b", "c")]), 1);
        let t = table(&[Row::fail("dkim x", "key mismatch", "publish it")]);
        assert_eq!(
            t,
            "FAIL  dkim x  key mismatch\n              fix: publish it\n"
        );
    }
}
