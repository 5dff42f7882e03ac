//! Does a campaign's blast lane really stay apart from `blast serve`'s priority lane?
//!
//! Separate IPs do not fully separate reputation: mailbox providers also score the From and
//! DKIM `d=` domain. So `blast check` compares the campaign (its From / Reply-To domains and
//! its `[lane]`) with `blast.toml` (the `[priority]` lane and the domains submission users
//! may send as) and returns one [`Warning`] per thing both lanes share. DKIM is not signed
//! yet and the envelope sender is the From address, so the From domain stands for all three.
//!
//! Pure: no I/O, so every rule is unit-tested here.

use std::fmt;

use crate::config::{LaneSettings, Settings, TransportSpec};
use crate::serve::users::Users;

/// What both lanes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The From domain is one a submission user may send as.
    FromDomain,
    /// The Reply-To domain (other than the From domain) is one a submission user may send as.
    ReplyToDomain,
    /// Both lanes bind the same `source_ip`, or neither binds one.
    SourceIp,
    /// Both lanes go through the same relay host.
    Relay,
    /// Both lanes greet with the same EHLO name (a weaker signal: a hint).
    Helo,
}

/// One shared item: what, why it matters, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Which rule fired.
    pub kind: Kind,
    /// What is shared.
    pub what: String,
    /// Why it matters.
    pub why: String,
    /// What to change.
    pub fix: String,
}

impl Warning {
    /// Whether this is only a hint (a weaker signal than the others).
    pub fn is_hint(&self) -> bool {
        self.kind == Kind::Helo
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = if self.is_hint() { "hint" } else { "warning" };
        write!(
            f,
            "{label}: {}\n  why: {}\n  fix: {}",
            self.what, self.why, self.fix
        )
    }
}

/// Compares the campaign's lane and sender with the priority lane and the submission users
/// (`None` when there is no users file: then domains are not compared).
pub fn compare(
    campaign: &Settings,
    priority: &LaneSettings,
    users: Option<&Users>,
) -> Vec<Warning> {
    let mut out = Vec::new();
    if let Some(users) = users {
        out.extend(domain_warnings(campaign, users));
    }
    out.extend(network_warnings(&campaign.lane, priority));
    out
}

/// The lower-case domain of an address, without a trailing dot.
fn domain_of(address: &str) -> Option<String> {
    let (_, d) = address.rsplit_once('@')?;
    Some(d.trim_end_matches('.').to_ascii_lowercase())
}

/// `user (entry)` list for messages: `app (acme.example), ops (.acme.example)`.
fn who(senders: &[(&str, &str)]) -> String {
    let names: Vec<String> = senders.iter().map(|(u, d)| format!("{u} ({d})")).collect();
    names.join(", ")
}

fn domain_warnings(c: &Settings, users: &Users) -> Vec<Warning> {
    let mut out = Vec::new();
    let from = domain_of(&c.from.address);
    if let Some(from) = &from {
        let senders = users.senders_as(from);
        if !senders.is_empty() {
            out.push(Warning {
                kind: Kind::FromDomain,
                what: format!(
                    "transactional and bulk mail share the From domain {from} (submission users may send as it: {})",
                    who(&senders)
                ),
                why: "mailbox providers score the From/DKIM domain, not only the IP: \
                      complaints about a newsletter then cost the receipts and password resets too"
                    .into(),
                fix: subdomain_fix(from, users, "send newsletters from"),
            });
        }
    }
    let reply = c.reply_to.as_ref().and_then(|r| domain_of(&r.address));
    if let Some(reply) = reply.filter(|r| Some(r) != from.as_ref()) {
        let senders = users.senders_as(&reply);
        if !senders.is_empty() {
            out.push(Warning {
                kind: Kind::ReplyToDomain,
                what: format!(
                    "the campaign's Reply-To domain {reply} is a transactional sending domain (submission users: {})",
                    who(&senders)
                ),
                why: "providers tie a message's reputation to the domains it names; replies \
                      and complaints about the newsletter then land on the transactional domain"
                    .into(),
                fix: subdomain_fix(&reply, users, "point Reply-To at"),
            });
        }
    }
    out
}

/// The fix for a shared domain: a `news.` subdomain, unless a `.parent` entry would cover
/// that too (then the user's entry is what has to narrow). When only `.parent` entries
/// cover `domain`, the campaign already has its own subdomain: narrowing is the whole fix
/// (suggesting `news.news.acme.example` for `news.acme.example` helped nobody).
fn subdomain_fix(domain: &str, users: &Users, verb: &str) -> String {
    let senders = users.senders_as(domain);
    if !senders.is_empty() && senders.iter().all(|(_, d)| d.starts_with('.')) {
        return format!(
            "{domain} is already a subdomain of its own; narrow the submission users' domains: {} \
             cover(s) it (list the exact domains transactional mail uses: `blast user add NAME --domain ...`)",
            who(&senders)
        );
    }
    let sub = format!("news.{domain}");
    let covering = users.senders_as(&sub);
    if covering.is_empty() {
        format!(
            "{verb} a subdomain such as {sub} (its own DKIM d= and bounce domain once blast has them)"
        )
    } else {
        format!(
            "{verb} a subdomain such as {sub}, and narrow the submission users' domains: {} also cover(s) {sub} \
             (list the exact domains transactional mail uses: `blast user add NAME --domain ...`)",
            who(&covering)
        )
    }
}

/// The relay host (lower case, no trailing dot) and port, `None` for an outbox.
fn relay(t: &TransportSpec) -> Option<(String, u16)> {
    match t {
        TransportSpec::Smtp { host, port, .. } => {
            Some((host.trim_end_matches('.').to_ascii_lowercase(), *port))
        }
        TransportSpec::Outbox(_) | TransportSpec::Mx => None,
    }
}

/// Source IP, relay and HELO. Skipped when either lane writes to an outbox: nothing of that
/// lane goes over the network, so it has no address or relay to share.
fn network_warnings(blast: &LaneSettings, priority: &LaneSettings) -> Vec<Warning> {
    let mut out = Vec::new();
    // Direct delivery has no relay to share, but its source IP and HELO are what receivers
    // see, so they are compared as a relay lane's are.
    let on_network = |t: &TransportSpec| !matches!(t, TransportSpec::Outbox(_));
    if !on_network(&blast.transport) || !on_network(&priority.transport) {
        return out;
    }
    // A pool's IPs count as the lane's own: the priority lane must use none of them.
    let pooled = blast
        .source_ips
        .iter()
        .map(|p| p.ip)
        .find(|ip| Some(*ip) == priority.source_ip);
    let blast_ip = pooled
        .or(blast.source_ip)
        .or_else(|| blast.source_ips.first().map(|p| p.ip));
    match (blast_ip, priority.source_ip) {
        (Some(b), Some(p)) if b == p => out.push(Warning {
            kind: Kind::SourceIp,
            what: format!("both lanes connect from source_ip {b}"),
            why: "an IP's reputation is shared by everything sent from it: a blocklisting \
                  or rate limit earned by a newsletter delays transactional mail too"
                .into(),
            fix: "give each lane its own address: source_ip in the campaign's [lane] and in \
                  blast.toml's [priority] (with helo matching each address's PTR)"
                .into(),
        }),
        (None, None) => out.push(Warning {
            kind: Kind::SourceIp,
            what: "neither lane sets source_ip: both connect from this machine's default address"
                .into(),
            why: "an IP's reputation is shared by everything sent from it: a blocklisting \
                  or rate limit earned by a newsletter delays transactional mail too"
                .into(),
            fix: "bind the blast lane to an address of its own: source_ip in the campaign's \
                  [lane] (and helo matching its PTR)"
                .into(),
        }),
        // One set, one default: the default may or may not be that address; the OS decides.
        _ => {}
    }
    // Any relay of a pool: the one the priority lane shares, if it shares one.
    let prio = relay(&priority.transport);
    let blast_relay = blast
        .relays
        .iter()
        .filter_map(|r| relay(&r.transport))
        .find(|(h, _)| prio.as_ref().is_some_and(|(ph, _)| ph == h))
        .or_else(|| relay(&blast.transport));
    if let (Some((bh, bp)), Some((ph, pp))) = (blast_relay, prio) {
        if bh == ph {
            let at = if bp == pp {
                format!("{bh}:{bp}")
            } else {
                format!("{bh} (ports {bp} and {pp})")
            };
            out.push(Warning {
                kind: Kind::Relay,
                what: format!("both lanes relay through {at}"),
                why: "the priority lane keeps its own connections, but the relay's per-client \
                  limits (rate, connections, quota) are shared, and receivers see both lanes \
                  coming from the relay's addresses unless it sends each from its own"
                    .into(),
                fix: "use a separate relay (or a relay account and IP pool of its own) for the \
                  blast lane: transport in the campaign's [lane]"
                    .into(),
            });
        }
    }
    if blast.helo.eq_ignore_ascii_case(&priority.helo) {
        out.push(Warning {
            kind: Kind::Helo,
            what: format!("both lanes greet as EHLO {}", blast.helo),
            why: "some receivers keep reputation per HELO name, and it should match the PTR \
                  of each lane's own address"
                .into(),
            fix: format!(
                "give the blast lane its own name, e.g. helo = \"blast.{}\" in the campaign's [lane]",
                blast.helo
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::serve::users::hash_password;

    fn campaign(from: &str, reply_to: &str, lane: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.txt"), "hi\n").unwrap();
        std::fs::write(dir.path().join("l.csv"), "email\na@b.test\n").unwrap();
        let reply = if reply_to.is_empty() {
            String::new()
        } else {
            format!("reply_to = \"{reply_to}\"\n")
        };
        let src = format!(
            "[campaign]\nid = \"c\"\nfrom = \"{from}\"\n{reply}subject = \"s\"\ntext = \"t.txt\"\n\
             lists = [\"l.csv\"]\n\n[lane]\n{lane}\n"
        );
        let p = dir.path().join("c.toml");
        std::fs::write(&p, &src).unwrap();
        crate::config::load(&p).unwrap()
    }

    fn priority(lane: &str) -> LaneSettings {
        let src = format!("[serve]\n\n[priority]\n{lane}\n");
        crate::serve::config::parse(Path::new("blast.toml"), &src)
            .unwrap()
            .priority
    }

    fn users(domains: &str) -> Users {
        let h = hash_password("pw").unwrap();
        Users::parse(Path::new("users"), &format!("app:{h}:{domains}\n")).unwrap()
    }

    fn kinds(w: &[Warning]) -> Vec<Kind> {
        w.iter().map(|w| w.kind).collect()
    }

    const BLAST: &str = "transport = \"smtp://relay-a.test:587\"\nsource_ip = \"192.0.2.1\"\nhelo = \"news.acme.test\"";
    const PRIO: &str = "transport = \"smtp://relay-b.test:587\"\nsource_ip = \"192.0.2.2\"\nhelo = \"mail.acme.test\"";

    #[test]
    fn separate_lanes_share_nothing() {
        let c = campaign("News <n@news.acme.test>", "r@news.acme.test", BLAST);
        let w = compare(&c, &priority(PRIO), Some(&users("acme.test")));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn from_domain_exact_or_under_a_parent_entry() {
        let c = campaign("News <n@Acme.test>", "", BLAST);
        let w = compare(&c, &priority(PRIO), Some(&users("acme.test")));
        assert_eq!(kinds(&w), vec![Kind::FromDomain]);
        assert!(w[0].what.contains("From domain acme.test"), "{}", w[0]);
        assert!(w[0].fix.contains("news.acme.test"), "{}", w[0]);
        assert!(!w[0].fix.contains("narrow"), "{}", w[0]);

        // `.acme.test` covers news.acme.test: the subdomain alone would not separate them.
        let c = campaign("News <n@news.acme.test>", "", BLAST);
        let w = compare(&c, &priority(PRIO), Some(&users("acme.test,.acme.test")));
        assert_eq!(kinds(&w), vec![Kind::FromDomain]);
        assert!(w[0].what.contains("app (.acme.test)"), "{}", w[0]);
        assert!(w[0].fix.contains("narrow"), "{}", w[0]);
        // It already is the subdomain: no `news.news.acme.test` (issue 11 item 14).
        assert!(!w[0].fix.contains("news.news."), "{}", w[0]);
        assert!(
            w[0].fix
                .starts_with("news.acme.test is already a subdomain of its own; narrow"),
            "{}",
            w[0]
        );

        // No users file: domains are not compared.
        assert!(compare(&c, &priority(PRIO), None).is_empty());
    }

    #[test]
    fn reply_to_domain_warns_once() {
        let c = campaign("News <n@news.acme.test>", "help@acme.test", BLAST);
        let w = compare(&c, &priority(PRIO), Some(&users("acme.test")));
        assert_eq!(kinds(&w), vec![Kind::ReplyToDomain]);
        // Same domain in From and Reply-To: one warning, about From.
        let c = campaign("News <n@acme.test>", "help@acme.test", BLAST);
        let w = compare(&c, &priority(PRIO), Some(&users("acme.test")));
        assert_eq!(kinds(&w), vec![Kind::FromDomain]);
    }

    #[test]
    fn shared_ip_relay_and_helo() {
        let c = campaign(
            "n@news.acme.test",
            "",
            "transport = \"smtp://Relay.test.:587\"\nsource_ip = \"192.0.2.1\"\nhelo = \"mail.acme.test\"",
        );
        let p = priority(
            "transport = \"smtps://relay.test:465\"\nsource_ip = \"192.0.2.1\"\nhelo = \"MAIL.acme.test\"",
        );
        let w = compare(&c, &p, None);
        assert_eq!(kinds(&w), vec![Kind::SourceIp, Kind::Relay, Kind::Helo]);
        assert!(
            w[1].what.contains("relay.test (ports 587 and 465)"),
            "{}",
            w[1]
        );
        assert!(w[2].is_hint() && w[2].to_string().starts_with("hint: "));
        assert!(w[0]
            .to_string()
            .starts_with("warning: both lanes connect from source_ip 192.0.2.1\n  why: "));
    }

    #[test]
    fn default_addresses_and_outboxes() {
        let c = campaign(
            "n@news.acme.test",
            "",
            "transport = \"smtp://a.test\"\nhelo = \"x.test\"",
        );
        let p = priority("transport = \"smtp://b.test\"\nhelo = \"y.test\"");
        let w = compare(&c, &p, None);
        assert_eq!(kinds(&w), vec![Kind::SourceIp]);
        assert!(w[0].what.contains("default address"), "{}", w[0]);
        // One lane bound, the other on the default: not known to be shared.
        let p =
            priority("transport = \"smtp://b.test\"\nsource_ip = \"192.0.2.2\"\nhelo = \"y.test\"");
        assert!(compare(&c, &p, None).is_empty());
        // An outbox lane sends nothing over the network; domains still count.
        let c = campaign("n@acme.test", "", "transport = \"outbox:out\"");
        let p = priority("transport = \"smtp://b.test\"\nhelo = \"acme.test\"");
        let w = compare(&c, &p, Some(&users("acme.test")));
        assert_eq!(kinds(&w), vec![Kind::FromDomain]);
    }
}
