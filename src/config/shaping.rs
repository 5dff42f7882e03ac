//! Traffic shaping settings: provider rollups (one limit across every MX site whose hosts
//! end in a suffix) and response rules (a regex over a reply that suspends or throttles a
//! (source IP, site), or ends a delivery as a sender-side failure).
//!
//! Three layers, each validated against its own file so an error names the right file and
//! line: the shipped `shaping/default.toml` (compiled in), the file `[lane] shaping` names,
//! and the campaign's own `[lane.providers.NAME]` / `[lane.rules.NAME]` tables. A later
//! layer overrides an earlier one key by key; `enabled = false` drops an entry.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{parse_duration, Limit, Locator, Rate};
use crate::error::Result;

/// The shipped shaping file.
pub const DEFAULT_SHAPING: &str = include_str!("../../shaping/default.toml");

/// A shaping file (and the same tables inside `[lane]`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShaping {
    #[serde(default)]
    pub(crate) providers: BTreeMap<String, Spanned<RawProvider>>,
    #[serde(default)]
    pub(crate) rules: BTreeMap<String, Spanned<RawRule>>,
}

/// `[providers.NAME]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    /// `false` drops a provider an earlier layer defined.
    pub(crate) enabled: Option<bool>,
    /// MX host name suffixes (".google.com") whose sites roll up into this provider.
    pub(crate) mx_suffix: Option<Vec<Spanned<String>>>,
    /// Recipient domains that belong to it without an MX lookup (through a relay).
    pub(crate) domains: Option<Vec<Spanned<String>>>,
    /// Transactions in flight across the rollup.
    pub(crate) connections: Option<Spanned<u32>>,
    /// Messages per connection to any of its sites.
    pub(crate) messages_per_connection: Option<Spanned<u32>>,
    /// One rate across the rollup.
    pub(crate) rate: Option<Spanned<Limit>>,
}

/// `[rules.NAME]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// `false` drops a rule an earlier layer defined.
    pub(crate) enabled: Option<bool>,
    /// The regex, over the reply as recorded ("421 4.7.0 text").
    pub(crate) r#match: Option<Spanned<String>>,
    /// `suspend`, `throttle` or `bounce`.
    pub(crate) action: Option<Spanned<String>>,
    /// How long a suspension or throttle lasts.
    pub(crate) duration: Option<Spanned<String>>,
    /// `throttle`: the rate the site is held to.
    pub(crate) rate: Option<Spanned<Limit>>,
    /// `immediate` or `N/PERIOD`.
    pub(crate) trigger: Option<Spanned<String>>,
    /// Only replies from this provider's sites.
    pub(crate) provider: Option<Spanned<String>>,
}

/// A provider rollup.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// Its name (the table's key).
    pub name: String,
    /// MX host suffixes, lower case, with a leading dot.
    pub mx_suffix: Vec<String>,
    /// Recipient domains (ASCII, lower case).
    pub domains: Vec<String>,
    /// Cap on transactions in flight across its sites.
    pub connections: Option<usize>,
    /// Cap on messages per connection.
    pub messages_per_connection: Option<u32>,
    /// One rate across its sites.
    pub rate: Option<Rate>,
}

impl Provider {
    /// Whether an MX host (lower case, no trailing dot) belongs to this provider.
    pub fn has_host(&self, host: &str) -> bool {
        self.mx_suffix.iter().any(|s| host.ends_with(s.as_str()))
    }
}

/// What a response rule does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RuleAction {
    /// No new transactions to the site for this long.
    Suspend(Duration),
    /// The site held to this rate for this long.
    Throttle(Rate, Duration),
    /// The recipient's delivery ends as a sender-side failure (never a suppression).
    Bounce,
}

/// When a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// On the first match.
    Immediate,
    /// On the Nth match within the period (per site).
    Count(u32, Duration),
}

/// A response rule.
#[derive(Debug, Clone)]
pub struct ResponseRule {
    /// Its name (the table's key).
    pub name: String,
    /// Over the reply text.
    pub regex: regex::Regex,
    /// What it does.
    pub action: RuleAction,
    /// When.
    pub trigger: Trigger,
    /// Only this provider's sites.
    pub provider: Option<String>,
}

/// The lane's shaping: providers and rules, merged from the three layers.
#[derive(Debug, Clone, Default)]
pub struct Shaping {
    /// In name order.
    pub providers: Vec<Provider>,
    /// In name order (the first match wins).
    pub rules: Vec<ResponseRule>,
}

impl Shaping {
    /// The provider of a site, by its MX hosts or the recipient domain.
    pub fn provider_of<'a>(
        &self,
        domain: &str,
        hosts: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<usize> {
        self.providers.iter().position(|p| {
            p.domains.iter().any(|d| d == domain)
                || hosts.clone().into_iter().any(|h| p.has_host(h))
        })
    }
}

/// A provider with each key as its last layer set it.
#[derive(Default)]
struct PartialProvider {
    enabled: bool,
    mx_suffix: Option<Vec<String>>,
    domains: Option<Vec<String>>,
    connections: Option<usize>,
    messages_per_connection: Option<u32>,
    rate: Option<Option<Rate>>,
}

#[derive(Default)]
struct PartialRule {
    enabled: bool,
    pattern: Option<regex::Regex>,
    action: Option<String>,
    duration: Option<Duration>,
    rate: Option<Rate>,
    trigger: Option<Trigger>,
    provider: Option<String>,
    /// Where it was last defined, for a completeness error ("file:line").
    at: String,
}

/// Merges layers into one [`Shaping`].
#[derive(Default)]
pub(crate) struct Builder {
    providers: BTreeMap<String, PartialProvider>,
    rules: BTreeMap<String, PartialRule>,
}

impl Builder {
    /// The shipped layer unless `defaults` is false.
    pub(crate) fn new(defaults: bool) -> Builder {
        let mut b = Builder::default();
        if defaults {
            let loc = Locator {
                path: Path::new("shaping/default.toml (built in)"),
                src: DEFAULT_SHAPING,
            };
            let raw: RawShaping = loc.parse_toml().expect("the shipped shaping file parses");
            b.layer(&loc, &raw.providers, &raw.rules, "")
                .expect("the shipped shaping file is valid");
        }
        b
    }

    /// Adds a layer; `prefix` is how its keys are named in errors ("lane." inside a campaign).
    pub(crate) fn layer(
        &mut self,
        loc: &Locator,
        providers: &BTreeMap<String, Spanned<RawProvider>>,
        rules: &BTreeMap<String, Spanned<RawRule>>,
        prefix: &str,
    ) -> Result<()> {
        for (name, p) in providers {
            let key = format!("{prefix}providers.{name}");
            let e = self
                .providers
                .entry(name.clone())
                .or_insert(PartialProvider {
                    enabled: true,
                    ..Default::default()
                });
            let p = p.get_ref();
            if let Some(v) = p.enabled {
                e.enabled = v;
            }
            if let Some(v) = &p.mx_suffix {
                let mut out = Vec::new();
                for s in v {
                    let t = s
                        .get_ref()
                        .trim()
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    if t.trim_start_matches('.').is_empty() || t.contains(char::is_whitespace) {
                        return loc.err(
                            s.span(),
                            &format!("{key}.mx_suffix"),
                            "a host name suffix such as \".google.com\"",
                        );
                    }
                    // A suffix matches at a label boundary only: "google.com" must not
                    // match "notgoogle.com".
                    out.push(if t.starts_with('.') {
                        t
                    } else {
                        format!(".{t}")
                    });
                }
                e.mx_suffix = Some(out);
            }
            if let Some(v) = &p.domains {
                let mut out = Vec::new();
                for d in v {
                    let a = idna::domain_to_ascii(d.get_ref().trim()).or_else(|_| {
                        loc.err(d.span(), &format!("{key}.domains"), "not a valid domain")
                    })?;
                    out.push(a);
                }
                e.domains = Some(out);
            }
            if let Some(c) = &p.connections {
                if *c.get_ref() == 0 || *c.get_ref() > 1024 {
                    return loc.err(c.span(), &format!("{key}.connections"), "from 1 to 1024");
                }
                e.connections = Some(*c.get_ref() as usize);
            }
            if let Some(m) = &p.messages_per_connection {
                if *m.get_ref() == 0 {
                    return loc.err(
                        m.span(),
                        &format!("{key}.messages_per_connection"),
                        "must be at least 1",
                    );
                }
                e.messages_per_connection = Some(*m.get_ref());
            }
            if let Some(r) = &p.rate {
                e.rate = Some(r.get_ref().0);
            }
        }
        for (name, r) in rules {
            let key = format!("{prefix}rules.{name}");
            let span = r.span();
            let e = self.rules.entry(name.clone()).or_insert(PartialRule {
                enabled: true,
                ..Default::default()
            });
            e.at = format!("{}:{}", loc.path.display(), loc.line(span.start));
            let r = r.get_ref();
            if let Some(v) = r.enabled {
                e.enabled = v;
            }
            if let Some(p) = &r.r#match {
                let re = regex::Regex::new(p.get_ref()).or_else(|err| {
                    loc.err(
                        p.span(),
                        &format!("{key}.match"),
                        format!("not a valid regex: {err}"),
                    )
                })?;
                e.pattern = Some(re);
            }
            if let Some(a) = &r.action {
                match a.get_ref().as_str() {
                    "suspend" | "throttle" | "bounce" => e.action = Some(a.get_ref().clone()),
                    other => {
                        return loc.err(
                            a.span(),
                            &format!("{key}.action"),
                            format!("{other:?}: expected \"suspend\", \"throttle\" or \"bounce\""),
                        )
                    }
                }
            }
            if let Some(d) = &r.duration {
                let v = parse_duration(d.get_ref())
                    .or_else(|m| loc.err(d.span(), &format!("{key}.duration"), m))?;
                if v.is_zero() {
                    return loc.err(
                        d.span(),
                        &format!("{key}.duration"),
                        "must be longer than 0",
                    );
                }
                e.duration = Some(v);
            }
            if let Some(x) = &r.rate {
                match x.get_ref().0 {
                    Some(rate) => e.rate = Some(rate),
                    None => {
                        return loc.err(
                            x.span(),
                            &format!("{key}.rate"),
                            "a throttle needs a rate such as \"60/h\"",
                        )
                    }
                }
            }
            if let Some(t) = &r.trigger {
                e.trigger = Some(
                    parse_trigger(t.get_ref())
                        .or_else(|m| loc.err(t.span(), &format!("{key}.trigger"), m))?,
                );
            }
            if let Some(p) = &r.provider {
                e.provider = Some(p.get_ref().clone());
            }
        }
        Ok(())
    }

    /// The merged result; a rule missing a key after every layer is an error naming where it
    /// was last defined.
    pub(crate) fn build(self) -> Result<Shaping> {
        let fail = |at: &str, msg: String| Err(crate::error::Error::Config(format!("{at}: {msg}")));
        let providers: Vec<Provider> = self
            .providers
            .into_iter()
            .filter(|(_, p)| p.enabled)
            .map(|(name, p)| Provider {
                name,
                mx_suffix: p.mx_suffix.unwrap_or_default(),
                domains: p.domains.unwrap_or_default(),
                connections: p.connections,
                messages_per_connection: p.messages_per_connection,
                rate: p.rate.flatten(),
            })
            .collect();
        let mut rules = Vec::new();
        for (name, r) in self.rules {
            if !r.enabled {
                continue;
            }
            let Some(regex) = r.pattern else {
                return fail(
                    &r.at,
                    format!("rules.{name}: needs `match` (a regex over the reply)"),
                );
            };
            let action = match (r.action.as_deref(), r.duration, r.rate) {
                (Some("bounce"), ..) => RuleAction::Bounce,
                (Some("suspend"), Some(d), _) => RuleAction::Suspend(d),
                (Some("throttle"), Some(d), Some(rate)) => RuleAction::Throttle(rate, d),
                (Some("throttle"), Some(_), None) => {
                    return fail(&r.at, format!("rules.{name}: a throttle needs `rate`"))
                }
                (Some(_), None, _) => {
                    return fail(
                        &r.at,
                        format!("rules.{name}: needs `duration` (e.g. \"2h\")"),
                    )
                }
                (None, ..) | (Some(_), Some(_), _) => {
                    return fail(
                        &r.at,
                        format!(
                        "rules.{name}: needs `action` (\"suspend\", \"throttle\" or \"bounce\")"
                    ),
                    )
                }
            };
            if let Some(p) = &r.provider {
                if !providers.iter().any(|x| &x.name == p) {
                    return fail(
                        &r.at,
                        format!("rules.{name}.provider: no provider named {p:?}"),
                    );
                }
            }
            rules.push(ResponseRule {
                name,
                regex,
                action,
                trigger: r.trigger.unwrap_or(Trigger::Immediate),
                provider: r.provider,
            });
        }
        Ok(Shaping { providers, rules })
    }
}

/// `immediate` or `N/PERIOD` (`3/10m`: the third match within ten minutes).
fn parse_trigger(s: &str) -> std::result::Result<Trigger, String> {
    let s = s.trim();
    if s == "immediate" {
        return Ok(Trigger::Immediate);
    }
    let bad = || format!("{s:?}: expected \"immediate\" or \"N/PERIOD\" such as \"3/10m\"");
    let (n, per) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = parse_duration(per.trim()).map_err(|_| bad())?;
    if n == 0 || per.is_zero() {
        return Err(bad());
    }
    Ok(if n == 1 {
        Trigger::Immediate
    } else {
        Trigger::Count(n, per)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(src: &str) -> Result<Shaping> {
        let loc = Locator {
            path: Path::new("s.toml"),
            src,
        };
        let raw: RawShaping = loc.parse_toml()?;
        let mut b = Builder::new(true);
        b.layer(&loc, &raw.providers, &raw.rules, "")?;
        b.build()
    }

    #[test]
    fn the_shipped_file_has_the_large_providers_and_their_rules() {
        let s = Builder::new(true).build().unwrap();
        let names: Vec<&str> = s.providers.iter().map(|p| p.name.as_str()).collect();
        for p in [
            "google",
            "outlook",
            "office365",
            "yahoo",
            "apple",
            "gmx",
            "orange",
            "comcast",
        ] {
            assert!(names.contains(&p), "{p} missing from {names:?}");
        }
        let hit = |reply: &str| {
            s.rules
                .iter()
                .find(|r| r.regex.is_match(reply))
                .map(|r| r.name.clone())
        };
        assert_eq!(
            hit("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred").as_deref(),
            Some("deferred-from-ip")
        );
        assert_eq!(
            hit("421 4.7.0 [TSS04] try later").as_deref(),
            Some("yahoo-tss04")
        );
        assert_eq!(
            hit("421 4.7.0 [TS01] try later").as_deref(),
            Some("yahoo-ts0x")
        );
        assert_eq!(hit("451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.").as_deref(), Some("microsoft-ip-reputation"));
        assert_eq!(
            hit("421 4.7.28 Gmail has detected an unusual rate of unsolicited mail").as_deref(),
            Some("gmail-unusual-rate")
        );
        assert_eq!(
            hit("450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages")
                .as_deref(),
            Some("gmail-rate-limited")
        );
        assert_eq!(hit("451 4.3.0 try again"), None);
        assert_eq!(
            hit("450 4.7.0 rate limit exceeded, slow down"),
            None,
            "not Gmail's wording"
        );
        let g = &s.providers[s
            .provider_of("acme.test", ["alt1.aspmx.l.google.com"])
            .unwrap()];
        assert_eq!(g.name, "google");
        assert_eq!(s.provider_of("acme.test", ["mx.notgoogle.com"]), None);
        assert!(Builder::new(false).build().unwrap().providers.is_empty());
    }

    #[test]
    fn a_later_layer_overrides_key_by_key_and_can_drop_an_entry() {
        let s = layer(
            "[providers.google]\nconnections = 2\n[providers.apple]\nenabled = false\n\
             [rules.yahoo-tss04]\nduration = \"30m\"\n[rules.comcast-rl]\nenabled = false\n",
        )
        .unwrap();
        let g = s.providers.iter().find(|p| p.name == "google").unwrap();
        assert_eq!(g.connections, Some(2));
        assert_eq!(
            g.messages_per_connection,
            Some(50),
            "kept from the shipped file"
        );
        assert!(g.has_host("mx.googlemail.com"));
        assert!(!s.providers.iter().any(|p| p.name == "apple"));
        let y = s.rules.iter().find(|r| r.name == "yahoo-tss04").unwrap();
        assert_eq!(y.action, RuleAction::Suspend(Duration::from_secs(1800)));
        assert!(
            y.regex.is_match("[TSS04]"),
            "the pattern is the shipped one"
        );
        assert!(!s.rules.iter().any(|r| r.name == "comcast-rl"));
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let e = layer("[rules.x]\nmatch = \"(\"\naction = \"suspend\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.toml:2: rules.x.match: not a valid regex"),
            "{e}"
        );
        let e = layer("[rules.x]\nmatch = \"a\"\naction = \"pause\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml:3: rules.x.action"), "{e}");
        let e = layer("[rules.x]\nmatch = \"a\"\naction = \"suspend\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml:1: rules.x: needs `duration`"), "{e}");
        let e = layer("[rules.x]\nmatch = \"a\"\naction = \"throttle\"\nduration = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules.x: a throttle needs `rate`"), "{e}");
        let e = layer("[rules.x]\nmatch = \"a\"\naction = \"bounce\"\ntrigger = \"often\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml:4: rules.x.trigger"), "{e}");
        let e = layer("[rules.x]\nmatch = \"a\"\naction = \"bounce\"\nprovider = \"nobody\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no provider named \"nobody\""), "{e}");
        let e = layer("[providers.p]\nconnections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml:2: providers.p.connections"), "{e}");
        let e = layer("[providers.p]\nmx_suffix = [\".\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers.p.mx_suffix"), "{e}");
        assert_eq!(
            parse_trigger("3/10m"),
            Ok(Trigger::Count(3, Duration::from_secs(600)))
        );
        assert_eq!(parse_trigger("1/1h"), Ok(Trigger::Immediate));
    }
}
