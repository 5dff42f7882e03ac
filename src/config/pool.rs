//! `[lane] source_ips` and `[lane] relays`: a lane's pool of source IPs (each with its own HELO
//! and public address) and of relays, with weights. Raw forms and their validation into
//! [`PoolIp`] and [`PoolRelay`]; where a recipient goes is [`crate::lane::pool`].

use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{Locator, TransportSpec};
use crate::error::Result;

/// Weights are small integers: enough to express shares, small enough that a typo (`weight =
/// 20000`) is caught instead of starving the other members.
pub const MAX_WEIGHT: i64 = 1000;

/// One entry of `source_ips = [{ ip = "…", helo = "…", egress_ip = "…", weight = 2 }]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSourceIp {
    /// The address connections are bound to.
    ip: Spanned<String>,
    /// The EHLO name of this IP (its PTR). Default: the lane's `helo`.
    helo: Option<Spanned<String>>,
    /// The address receivers see for it (a NAT's). Default: `ip`.
    egress_ip: Option<Spanned<String>>,
    /// Its share of the recipients. Default 1.
    weight: Option<Spanned<i64>>,
}

/// One source IP of a lane's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolIp {
    /// Bind address.
    pub ip: IpAddr,
    /// EHLO name.
    pub helo: String,
    /// The address receivers see (`blast check --dns` checks this one).
    pub egress_ip: IpAddr,
    /// Share of the recipients (rendezvous weight).
    pub weight: u32,
}

/// One relay of a lane's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRelay {
    /// As written (logs, the status line).
    pub url: String,
    /// The parsed `smtp://` or `smtps://` URL.
    pub transport: TransportSpec,
    /// Share of the connections.
    pub weight: u32,
}

fn weight(loc: &Locator, w: Option<&Spanned<i64>>, key: &str) -> Result<u32> {
    match w {
        None => Ok(1),
        Some(w) if (1..=MAX_WEIGHT).contains(w.get_ref()) => Ok(*w.get_ref() as u32),
        Some(w) => loc.err(
            w.span(),
            key,
            format!(
                "bad weight {}: a whole number from 1 to {MAX_WEIGHT}",
                w.get_ref()
            ),
        ),
    }
}

fn ip(loc: &Locator, v: &Spanned<String>, key: &str) -> Result<IpAddr> {
    v.get_ref().trim().parse::<IpAddr>().or_else(|_| {
        loc.err(
            v.span(),
            key,
            format!("not an IP address: {:?}", v.get_ref()),
        )
    })
}

/// Validates `source_ips` (`section.source_ips`); `helo` is the lane's HELO, the default of
/// each entry.
pub(crate) fn source_ips(
    loc: &Locator,
    raw: &Spanned<Vec<Spanned<RawSourceIp>>>,
    section: &str,
    helo: &str,
) -> Result<Vec<PoolIp>> {
    let key = format!("{section}.source_ips");
    if raw.get_ref().is_empty() {
        return loc.err(
            raw.span(),
            &key,
            "an empty pool: list at least one { ip = \"…\" }, or use source_ip",
        );
    }
    let mut out: Vec<PoolIp> = Vec::new();
    for (i, e) in raw.get_ref().iter().enumerate() {
        let k = |f: &str| format!("{key}[{i}].{f}");
        let r = e.get_ref();
        let addr = ip(loc, &r.ip, &k("ip"))?;
        if out.iter().any(|p| p.ip == addr) {
            return loc.err(r.ip.span(), &k("ip"), format!("{addr} is listed twice"));
        }
        let helo = match &r.helo {
            Some(h) => {
                super::host_name(h.get_ref()).or_else(|m| loc.err(h.span(), &k("helo"), m))?
            }
            None => helo.to_string(),
        };
        let egress_ip = match &r.egress_ip {
            Some(g) => ip(loc, g, &k("egress_ip"))?,
            None => addr,
        };
        out.push(PoolIp {
            ip: addr,
            helo,
            egress_ip,
            weight: weight(loc, r.weight.as_ref(), &k("weight"))?,
        });
    }
    if out.iter().any(|p| p.ip.is_ipv4() != out[0].ip.is_ipv4()) {
        // A relay or MX host is reached over one family; an IPv6 member could never reach
        // the IPv4 address the others use, and its recipients would wait for ever.
        return loc.err(
            raw.span(),
            &key,
            "mixes IPv4 and IPv6 addresses: use one family per lane",
        );
    }
    Ok(out)
}

/// Validates `relays = ["smtp://a:25", …]` or `[{ url = "…", weight = 2 }, …]`.
pub(crate) fn relays(
    loc: &Locator,
    raw: &Spanned<Vec<Spanned<toml::Value>>>,
    section: &str,
) -> Result<Vec<PoolRelay>> {
    let key = format!("{section}.relays");
    if raw.get_ref().is_empty() {
        return loc.err(
            raw.span(),
            &key,
            "an empty pool: list at least one \"smtp://host:port\", or use transport",
        );
    }
    let mut out: Vec<PoolRelay> = Vec::new();
    for (i, e) in raw.get_ref().iter().enumerate() {
        let k = format!("{key}[{i}]");
        let (url, w) =
            match e.get_ref() {
                toml::Value::String(s) => (s.clone(), None),
                toml::Value::Table(t) => {
                    if let Some(other) = t.keys().find(|k| *k != "url" && *k != "weight") {
                        return loc.err(
                            e.span(),
                            &k,
                            format!("unknown key {other:?} (a relay has `url` and `weight`)"),
                        );
                    }
                    let Some(toml::Value::String(u)) = t.get("url") else {
                        return loc.err(
                            e.span(),
                            &format!("{k}.url"),
                            "missing: url = \"smtp://host:port\"",
                        );
                    };
                    let w = match t.get("weight") {
                        None => None,
                        Some(toml::Value::Integer(n)) => Some(*n),
                        Some(_) => {
                            return loc.err(e.span(), &format!("{k}.weight"), "a whole number");
                        }
                    };
                    (u.clone(), w)
                }
                _ => return loc.err(
                    e.span(),
                    &k,
                    "a relay is \"smtp://host:port\" or { url = \"smtp://host:port\", weight = N }",
                ),
            };
        let spanned_url = Spanned::new(e.span(), url.clone());
        let transport = super::parse_transport(loc, &spanned_url, &k)?;
        if !matches!(transport, TransportSpec::Smtp { .. }) {
            return loc.err(
                e.span(),
                &k,
                "a relay pool lists SMTP relays (smtp:// or smtps://); mx and outbox: go in transport",
            );
        }
        let w = w.map(|n| Spanned::new(e.span(), n));
        let weight = weight(loc, w.as_ref(), &format!("{k}.weight"))?;
        if out.iter().any(|r| r.transport == transport) {
            return loc.err(e.span(), &k, format!("{url:?} is listed twice"));
        }
        out.push(PoolRelay {
            url: url.trim().to_string(),
            transport,
            weight,
        });
    }
    Ok(out)
}
