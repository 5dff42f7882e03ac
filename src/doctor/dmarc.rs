//! DMARC (RFC 7489): the policy at `_dmarc.FROM`, or at the organisational domain's when the
//! From domain has none (§6.6.3); and whether the SPF domain and the DKIM `d=` align with the
//! From domain (relaxed: the same organisational domain; strict with `aspf=s`/`adkim=s`).

use super::dkim::tag;
use super::{Dns, Row, Target};
use crate::dns::organisational;

/// The `v=DMARC1` record at `_dmarc.DOMAIN`.
async fn record(dns: &Dns, domain: &str) -> Result<Option<String>, String> {
    Ok(dns
        .txt(&format!("_dmarc.{domain}"))
        .await?
        .into_iter()
        .find(|r| r.trim_start().to_ascii_lowercase().starts_with("v=dmarc1")))
}

/// The DMARC rows: the policy, then alignment.
pub async fn check(t: &Target, dns: &Dns) -> Vec<Row> {
    let from = &t.from_domain;
    let org = organisational(from);
    let name = format!("dmarc {from}");
    let found = match record(dns, from).await {
        Ok(None) if org != *from => record(dns, &org).await.map(|r| r.map(|r| (org.clone(), r))),
        other => other.map(|r| r.map(|r| (from.clone(), r))),
    };
    let mut rows = Vec::new();
    let (at, rec) = match found {
        Err(e) => {
            rows.push(Row::unchecked(name, e));
            return rows;
        }
        Ok(None) => {
            let also = if org != *from {
                format!(" or _dmarc.{org}")
            } else {
                String::new()
            };
            rows.push(Row::fail(
                name,
                format!("no DMARC record at _dmarc.{from}{also}"),
                format!("publish TXT \"v=DMARC1; p=none; rua=mailto:dmarc@{org}\" at _dmarc.{org}, then move to p=quarantine"),
            ));
            return rows;
        }
        Ok(Some(found)) => found,
    };
    let p = tag(&rec, "p").unwrap_or("").to_ascii_lowercase();
    // A subdomain's mail is judged by sp= of the organisational domain's record.
    let effective = if at != *from {
        tag(&rec, "sp")
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| p.clone())
    } else {
        p.clone()
    };
    let sp = tag(&rec, "sp")
        .map(|s| format!(", sp={s}"))
        .unwrap_or_default();
    let detail = format!("_dmarc.{at}: p={p}{sp}");
    match effective.as_str() {
        "quarantine" | "reject" => rows.push(Row::pass(name, detail)),
        "none" => rows.push(Row::warn(
            name,
            format!("{detail}: p=none asks receivers to do nothing with failing mail"),
            format!("once reports show your mail aligned, set p=quarantine at _dmarc.{at}"),
        )),
        _ => rows.push(Row::fail(
            name,
            format!("{detail}: no valid policy (p= must be none, quarantine or reject)"),
            format!("fix the record at _dmarc.{at}: \"v=DMARC1; p=quarantine\""),
        )),
    }
    let strict = |k: &str| tag(&rec, k).is_some_and(|v| v.eq_ignore_ascii_case("s"));
    let aligned = |d: &str, strict: bool| {
        if strict {
            d == from
        } else {
            organisational(d) == org
        }
    };
    let spf_ok = aligned(&t.mail_from_domain, strict("aspf"));
    let dkim_d = t.dkim.first().map(|k| k.domain.clone());
    let dkim_ok = dkim_d
        .as_deref()
        .is_some_and(|d| aligned(d, strict("adkim")));
    let spf_s = format!(
        "SPF {} {}",
        t.mail_from_domain,
        if spf_ok { "aligned" } else { "not aligned" }
    );
    let dkim_s = match &dkim_d {
        None => "no DKIM".to_string(),
        Some(d) => format!(
            "DKIM d={d} {}",
            if dkim_ok { "aligned" } else { "not aligned" }
        ),
    };
    let detail = format!("{spf_s}, {dkim_s} with {from} (organisational domain {org})");
    let name = "dmarc alignment";
    rows.push(match (spf_ok, dkim_ok) {
        (true, true) => Row::pass(name, detail),
        (false, false) => Row::fail(
            name,
            detail,
            format!("sign with d={org} (or a subdomain) and/or set [bounces] domain under {org}"),
        ),
        (true, false) => Row::warn(
            name,
            detail,
            format!("sign with d={org}: SPF alone breaks on forwarding"),
        ),
        (false, true) => Row::warn(
            name,
            detail,
            format!("set [bounces] domain under {org} so SPF aligns too"),
        ),
    });
    rows
}
