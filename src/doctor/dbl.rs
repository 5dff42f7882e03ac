//! Domain blocklists (Spamhaus's DBL and the like, `[dns] dbl`): the From domain, the bounce
//! (VERP) domain and the domains of the links in the templates (with the unsubscribe and
//! click-tracking hosts every message carries), each looked up as `DOMAIN.ZONE` — and its
//! organisational domain too when it is a subdomain, since lists mostly list registered
//! domains. Answers are read as for the IP lists ([`super::dnsbl::listing`]): a refusal
//! (127.255.255.0/24) or a failed lookup is a WARN, never a PASS.

use std::path::Path;

use super::dnsbl::{codes, listing, refused, Listing};
use super::{links, Dns, Row, Target};
use crate::config::Settings;
use crate::dns::organisational;

/// A domain to look up and why it matters (`From domain`, `link in t.html:3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Lower-case A-label.
    pub domain: String,
    /// Where it comes from; several joined with `, `.
    pub roles: Vec<String>,
}

/// Adds `domain` for `role` to `list`, merging the roles of one domain.
fn add(list: &mut Vec<Checked>, domain: &str, role: String) {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return;
    }
    match list.iter_mut().find(|c| c.domain == domain) {
        Some(c) => {
            if !c.roles.contains(&role) {
                c.roles.push(role)
            }
        }
        None => list.push(Checked {
            domain,
            roles: vec![role],
        }),
    }
}

/// The domains campaign `s` puts before receivers: its From and MAIL FROM domains, its
/// templates' link domains, and the hosts of the unsubscribe and click-tracking URLs.
pub fn domains_of(s: &Settings, from: &str, mail_from: &str) -> Vec<Checked> {
    let mut out = Vec::new();
    add(&mut out, from, "From domain".into());
    add(&mut out, mail_from, "bounce domain".into());
    let templates = [&s.text, &s.html]
        .into_iter()
        .flatten()
        .map(|(p, src)| (p.as_path(), src.as_str()));
    for l in links::domains(templates) {
        add(&mut out, &l.domain, format!("link in {}", l.at));
    }
    if let Some(tk) = &s.tokens {
        let urls = [
            (&tk.unsubscribe_url, "unsubscribe URL"),
            (&tk.click_url, "click-tracking URL"),
        ];
        for (url, role) in urls {
            for l in links::domains(url.iter().map(|u| (Path::new("config"), u.as_str()))) {
                add(&mut out, &l.domain, role.into());
            }
        }
    }
    out
}

/// One row per zone and domain.
pub async fn check(t: &Target, dns: &Dns) -> Vec<Row> {
    let mut rows = Vec::new();
    for zone in &t.dbl {
        for c in &t.domains {
            rows.push(one(dns, zone, c).await);
        }
    }
    rows
}

async fn one(dns: &Dns, zone: &str, c: &Checked) -> Row {
    let name = format!("dbl {zone} {}", c.domain);
    let roles = c.roles.join(", ");
    let org = organisational(&c.domain);
    let mut asked = vec![c.domain.clone()];
    if org != c.domain {
        asked.push(org);
    }
    for d in &asked {
        match listing(dns, &format!("{d}.{zone}")).await {
            Listing::Clear => {}
            Listing::Listed(a) => {
                return Row::fail(
                    name,
                    format!("{d} ({roles}) is listed ({})", codes(&a)),
                    format!(
                        "see {zone}'s lookup page for {d}; stop using the domain in mail until it is delisted"
                    ),
                )
            }
            Listing::Refused(code) => return refused(name, code),
            Listing::Failed(e) => return Row::unchecked(name, e),
        }
    }
    Row::pass(
        name,
        format!("{} ({roles}) not listed", asked.join(" and ")),
    )
}
