//! Campaign configuration in two phases: the TOML file is deserialised strictly into raw
//! structs (unknown keys are errors), then validated into typed [`Settings`] with documented
//! defaults. Every error names the file, the line and the key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::list::hygiene::Policy;
use crate::message::{needs_smtputf8, parse_named_address, NamedAddress};

pub mod dkim;
pub mod duration;
pub mod pool;
pub mod schedule;
pub mod shaping;
pub mod warmup;

pub use duration::parse_duration;

// ---------------------------------------------------------------- raw (serde) layer

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    campaign: RawCampaign,
    lane: Spanned<RawLane>,
    schedule: Option<schedule::RawSchedule>,
    dkim: Option<dkim::RawDkim>,
    dns: Option<RawDns>,
}

/// `[dns]`: the resolver `transport = "mx"` asks (campaign.toml and blast.toml).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub(crate) nameservers: Option<Vec<Spanned<String>>>,
    /// `blast check --dns`: the DNSBL zones the egress IP is looked up in.
    pub(crate) dnsbl: Option<Vec<Spanned<String>>>,
    /// `blast check --dns`: the domain blocklists the From, bounce and link domains are
    /// looked up in.
    pub(crate) dbl: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    id: Spanned<String>,
    from: Spanned<String>,
    reply_to: Option<Spanned<String>>,
    subject: Spanned<String>,
    text: Option<Spanned<String>>,
    html: Option<Spanned<String>>,
    lists: Spanned<Vec<String>>,
    email_column: Option<String>,
    state_dir: Option<String>,
    headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    allow_role_accounts: Option<bool>,
    in_flight: Option<InFlightPolicy>,
    /// Rewrite the HTML part's links to serve's click redirect (`[tracking] url`).
    track_clicks: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLane {
    pub(crate) transport: Option<Spanned<String>>,
    /// A pool of relays instead of `transport` ([`pool`]).
    pub(crate) relays: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub(crate) source_ip: Option<Spanned<String>>,
    /// A pool of source IPs instead of `source_ip` ([`pool`]).
    pub(crate) source_ips: Option<Spanned<Vec<Spanned<pool::RawSourceIp>>>>,
    /// The address receivers see (a NAT's or relay's public address); `blast check --dns`.
    pub(crate) egress_ip: Option<Spanned<String>>,
    pub(crate) helo: Option<Spanned<String>>,
    pub(crate) rate: Option<Limit>,
    pub(crate) burst: Option<Spanned<u32>>,
    pub(crate) connections: Option<Spanned<u32>>,
    pub(crate) per_domain_connections: Option<Spanned<u32>>,
    pub(crate) starttls: Option<StartTls>,
    smtputf8: Option<bool>,
    pub(crate) username: Option<Spanned<String>>,
    pub(crate) password_env: Option<String>,
    pub(crate) password_file: Option<Spanned<String>>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) command_timeout: Option<Spanned<String>>,
    pub(crate) data_timeout: Option<Spanned<String>>,
    pub(crate) max_messages_per_connection: Option<Spanned<u32>>,
    pub(crate) max_connection_age: Option<Spanned<String>>,
    pub(crate) retry: Option<Vec<Spanned<String>>>,
    pub(crate) max_retry_age: Option<Spanned<String>>,
    pub(crate) backoff: Option<Spanned<String>>,
    pub(crate) wait_for_retries: Option<Spanned<String>>,
    /// `blast send` only: the CPU priority it runs at (0 = unchanged).
    pub(crate) nice: Option<Spanned<i32>>,
    /// The circuit breaker: share of bad addresses among the first attempts (0 = off)…
    pub(crate) breaker_share: Option<Spanned<f64>>,
    /// …among this many first attempts.
    pub(crate) breaker_window: Option<Spanned<u32>>,
    /// The complaint breaker: share of complaints among the campaign's deliveries (0 = off).
    pub(crate) complaint_share: Option<Spanned<f64>>,
    #[serde(default)]
    pub(crate) per_domain: BTreeMap<String, Spanned<Limit>>,
    /// `transport = "mx"`: the port MX hosts are reached on (25; loopback tests use another).
    pub(crate) mx_port: Option<Spanned<u32>>,
    /// The accounting file (JSON lines, one per attempt).
    pub(crate) accounting: Option<Spanned<String>>,
    /// A shaping file over the shipped one ([`shaping`]).
    pub(crate) shaping: Option<Spanned<String>>,
    /// `false`: none of the shipped providers and rules.
    pub(crate) shaping_defaults: Option<Spanned<bool>>,
    /// Provider rollups over the shaping files, key by key.
    #[serde(default)]
    pub(crate) providers: BTreeMap<String, Spanned<shaping::RawProvider>>,
    /// Response rules over the shaping files, key by key.
    #[serde(default)]
    pub(crate) rules: BTreeMap<String, Spanned<shaping::RawRule>>,
    /// Daily caps of a new IP ([`warmup`]).
    pub(crate) warmup: Option<warmup::RawSteps>,
    /// The warm-up's first day.
    pub(crate) warmup_start: Option<Spanned<String>>,
    /// Holds the warm-up's cap after a bad day.
    pub(crate) warmup_brake: Option<Spanned<warmup::RawBrake>>,
    /// Provider rollups warmed up on schedules of their own.
    #[serde(default)]
    pub(crate) warmup_providers: BTreeMap<String, warmup::RawSteps>,
    /// blast.toml's `[priority.dkim."domain"]` only (a campaign's keys are its `[dkim]`).
    #[serde(default)]
    pub(crate) dkim: BTreeMap<String, Spanned<dkim::RawDkim>>,
}

// ---------------------------------------------------------------- typed settings

/// A validated campaign.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The campaign file, as given.
    pub file: PathBuf,
    /// Campaign id (names the state directory).
    pub id: String,
    /// `From:` and envelope sender.
    pub from: NamedAddress,
    /// `Reply-To:`.
    pub reply_to: Option<NamedAddress>,
    /// Subject template source.
    pub subject: String,
    /// Text template: path and source.
    pub text: Option<(PathBuf, String)>,
    /// HTML template: path and source.
    pub html: Option<(PathBuf, String)>,
    /// CSV lists, resolved relative to the campaign file.
    pub lists: Vec<PathBuf>,
    /// The column holding the address. Default `email`.
    pub email_column: String,
    /// State directory. Default `.blast` beside the campaign file.
    pub state_dir: PathBuf,
    /// Extra headers, names validated; values are templates (rendered per recipient).
    pub headers: Vec<(String, String)>,
    /// Hygiene policy (role accounts, SMTPUTF8).
    pub policy: Policy,
    /// `[campaign] track_clicks`: links of the HTML part go through serve's click redirect
    /// (needs `[tracking] url` in the server config). Default off.
    pub track_clicks: bool,
    /// What to do with recipients found `in_flight` after a crash.
    pub in_flight: InFlightPolicy,
    /// The blast lane.
    pub lane: LaneSettings,
    /// The `[schedule]` table: `blast serve` runs the campaign on these slots.
    pub schedule: Option<schedule::ScheduleSettings>,
    /// Where the global suppression list lives; `None`: in `state_dir`. A scheduled run keeps
    /// its own state per run but shares the serve state dir's suppression list.
    pub suppression_dir: Option<PathBuf>,
    /// Token keys, unsubscribe URL and VERP domain, from the server config (`--config`, or
    /// serve's scheduler). `None`: no tokens, so no List-Unsubscribe and no VERP.
    pub tokens: Option<std::sync::Arc<crate::token::TokenSettings>>,
    /// `[dkim]`: the signing keys, parsed once.
    pub dkim: Option<dkim::DkimSettings>,
    /// blast.toml's `[bounces]` policy (`--config`, or serve's scheduler); defaults without.
    pub bounce_policy: crate::bounce::policy::BouncePolicy,
    /// `blast send --shard K/N`: only that shard's recipients, with its own state
    /// ([`crate::shard`]); `None`: the whole list.
    pub shard: Option<crate::shard::Shard>,
    /// The server config's `[cluster]` (`--config`): the lane's rates and connection caps are
    /// the fleet's, shared through Redis, and so is the suppression list. `None`: this
    /// machine's alone.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

impl Settings {
    /// The state dir holding the suppression list this campaign reads and adds to.
    pub fn suppression_state_dir(&self) -> &Path {
        self.suppression_dir.as_deref().unwrap_or(&self.state_dir)
    }
}

/// What a rerun does with recipients whose transaction was open when the last run died.
/// `in_flight = "skip" | "resend"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InFlightPolicy {
    /// Mark them `unknown` and never resend (possible miss, never a duplicate). Default.
    Skip,
    /// Send them again (possible duplicate, never a miss).
    Resend,
}

/// Where the lane sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportSpec {
    /// A relay over SMTP; `implicit_tls` for `smtps://`.
    Smtp {
        /// Host name or IP.
        host: String,
        /// Port (default 25, or 465 for smtps).
        port: u16,
        /// TLS from the first byte (`smtps://`).
        implicit_tls: bool,
    },
    /// Write one .eml file per message into this directory.
    Outbox(PathBuf),
    /// Direct delivery to each recipient domain's MX hosts (`transport = "mx"`).
    Mx,
}

/// STARTTLS policy: `starttls = "off" | "opportunistic" | "required"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Never.
    Off,
    /// When advertised, with any certificate (encrypts against passive snooping). A failed
    /// handshake is a connection failure (retried), never a silent fall-back to cleartext.
    Opportunistic,
    /// Always; certificate and host name are verified.
    Required,
}

/// A rate such as `200/s`. Displays back as written (`count/unit`). Deserialises from that
/// string (through [`TryFrom<String>`], as KumoMTA's `ThrottleSpec` does), so a bad rate is
/// a serde error that names the file, line and key like every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    /// Messages per `per`.
    pub count: u32,
    /// The period.
    pub per: Duration,
    unit: char,
}

impl Rate {
    /// Parses `<n>/<s|m|h|d>`.
    pub fn parse(s: &str) -> std::result::Result<Rate, String> {
        let bad = || format!("expected \"<n>/<s|m|h|d>\", got {s:?}");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let n = n.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // All digits: a parse failure is an overflow, which is not a format mistake.
        let count: u32 = n.parse().map_err(|_| {
            format!(
                "rate {s:?} is too large: at most {} per unit (use a longer unit or \"unlimited\")",
                u32::MAX
            )
        })?;
        if count == 0 {
            return Err(format!("rate must be at least 1, got {s:?}"));
        }
        let unit = unit.trim();
        let (per, c) = match unit {
            "s" => (1, 's'),
            "m" => (60, 'm'),
            "h" => (3600, 'h'),
            "d" => (86400, 'd'),
            _ => return Err(bad()),
        };
        Ok(Rate {
            count,
            per: Duration::from_secs(per),
            unit: c,
        })
    }

    /// Interval between two messages at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }

    /// Messages per second.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.per.as_secs_f64()
    }
}

impl TryFrom<String> for Rate {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Rate, String> {
        Rate::parse(&s)
    }
}

/// A rate setting: a [`Rate`], or `"unlimited"` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct Limit(pub(crate) Option<Rate>);

impl TryFrom<String> for Limit {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Limit, String> {
        if s.trim() == "unlimited" {
            return Ok(Limit(None));
        }
        Rate::parse(&s)
            .map(|r| Limit(Some(r)))
            .map_err(|m| format!("{m} or \"unlimited\""))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit)
    }
}

/// Password for SMTP AUTH, read from a file or environment variable. Never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret value (only for the AUTH command).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// SMTP AUTH credentials.
#[derive(Debug, Clone)]
pub struct Auth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// Network timeouts. Defaults follow RFC 5321 §4.5.3.2 (never a short one after the final dot:
/// giving up early there is how duplicates are made).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect + greeting. Default 60 s (RFC says 5 min for the greeting; a relay that
    /// takes a minute to connect is down for our purposes).
    pub connect: Duration,
    /// EHLO, MAIL, RCPT, DATA replies. Default 5 min.
    pub command: Duration,
    /// Reply to the final dot. Default 10 min.
    pub data_end: Duration,
}

/// Settings of the blast lane.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    /// Where mail goes.
    pub transport: TransportSpec,
    /// The lane's dedicated source IP (bind address), if any (`None` with a pool).
    pub source_ip: Option<IpAddr>,
    /// `source_ips`: the lane's pool of source IPs (empty: `source_ip` alone).
    pub source_ips: Vec<pool::PoolIp>,
    /// `relays`: the lane's pool of relays (empty: `transport` alone, which is then the
    /// first relay of the pool).
    pub relays: Vec<pool::PoolRelay>,
    /// `egress_ip`: the address receivers see, checked by `blast check --dns`. Default
    /// `source_ip`.
    pub egress_ip: Option<IpAddr>,
    /// EHLO name. Default: the From domain.
    pub helo: String,
    /// Global rate; `None` = unlimited.
    pub rate: Option<Rate>,
    /// Burst allowed by every limiter. Default 1: messages are spaced evenly.
    pub burst: u32,
    /// Default per-domain rate; `None` = unlimited.
    pub per_domain_default: Option<Rate>,
    /// Per-domain rates for named domains (lower-case A-labels).
    pub per_domain: HashMap<String, Rate>,
    /// Total connections. Default 16.
    pub connections: usize,
    /// Concurrent transactions per recipient domain. Default 4.
    pub per_domain_connections: usize,
    /// STARTTLS policy. Default `opportunistic`, or `off` for a loopback relay.
    pub starttls: StartTls,
    /// The relay advertises SMTPUTF8, so non-ASCII local parts may be imported. Default false.
    pub smtputf8: bool,
    /// AUTH credentials.
    pub auth: Option<Auth>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Messages per connection before reconnecting. Default 1000.
    pub max_messages_per_connection: u32,
    /// Connection age before reconnecting. Default 10 min.
    pub max_connection_age: Duration,
    /// Delay before each retry of a transient failure. Default 5m, 15m, 1h, 4h, 12h.
    pub retry: Vec<Duration>,
    /// After this long since the first attempt, a deferred recipient fails. Default 3 days.
    pub max_retry_age: Duration,
    /// First backoff of a destination that signals throttling; doubles, capped at 30 min. Default 1 min.
    pub backoff: Duration,
    /// `blast send` waits in-process for deferred retries due within this long; later ones end
    /// the run with exit 75 (rerun to resume). Default 15 min.
    pub wait_for_retries: Duration,
    /// `blast send` runs at this nice value (0–19, default 10; 0 leaves it alone), with the
    /// lowest best-effort I/O priority when above 0: a bulk send gives way to `blast serve`.
    pub nice: i32,
    /// The circuit breaker: `(share, window)` — more than `share` of the first `window`
    /// attempts refused as bad addresses stops the run (exit 75). Default `(0.10, 1000)`;
    /// `None`: off (`breaker_share = 0`, or `blast send --override-breaker`).
    pub breaker: Option<(f64, u64)>,
    /// The complaint breaker: more than this share of the campaign's deliveries reported as
    /// complaints (once at least [`crate::lane::complaints::MIN_COMPLAINTS`] are in) stops the
    /// run (exit 75). Default 0.003, the limit Gmail and Yahoo enforce; `None`: off
    /// (`complaint_share = 0`, or `blast send --override-breaker`).
    pub complaint_share: Option<f64>,
    /// `transport = "mx"`: the port of every MX host. Default 25.
    pub mx_port: u16,
    /// `[dns] nameservers`: the resolver for MX lookups; empty = the system's (resolv.conf).
    pub nameservers: Vec<std::net::SocketAddr>,
    /// `[dns] dnsbl`: the DNSBL zones `blast check --dns` looks the egress IP up in.
    /// Default [`DEFAULT_DNSBL`].
    pub dnsbl: Vec<String>,
    /// `[dns] dbl`: the domain blocklists `blast check --dns` looks the From, bounce and link
    /// domains up in. Default [`DEFAULT_DBL`].
    pub dbl: Vec<String>,
    /// The accounting file (one JSON line per attempt). `None` in the file: the lane's
    /// default (`STATE_DIR/ID/accounting.jsonl` for a campaign, `STATE_DIR/accounting.jsonl`
    /// for serve's priority lane), filled in where the lane is started.
    pub accounting: Option<PathBuf>,
    /// Provider rollups and response rules (the blast lane's; empty for the priority lane).
    pub shaping: std::sync::Arc<shaping::Shaping>,
    /// The IP's warm-up schedule (`None`: no daily caps).
    pub warmup: Option<std::sync::Arc<warmup::Warmup>>,
}

impl LaneSettings {
    /// Rate for a recipient domain.
    pub fn domain_rate(&self, domain: &str) -> Option<Rate> {
        self.per_domain
            .get(domain)
            .copied()
            .or(self.per_domain_default)
    }
}

// ---------------------------------------------------------------- loading

/// Reads and validates a campaign file.
pub fn load(path: &Path) -> Result<Settings> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "{}: cannot read campaign file: {e}",
            path.display()
        ))
    })?;
    parse(path, &src)
}

/// Validates campaign TOML `src`, read from `path` (relative paths resolve against its directory).
pub fn parse(path: &Path, src: &str) -> Result<Settings> {
    let loc = Locator { path, src };
    let raw: RawFile = loc.parse_toml()?;
    validate(&loc, raw)
}

/// Turns byte spans into `file:line` prefixes.
pub(crate) struct Locator<'a> {
    pub(crate) path: &'a Path,
    pub(crate) src: &'a str,
}

impl Locator<'_> {
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.src[..offset.min(self.src.len())].matches('\n').count() + 1
    }

    /// Deserializes the whole source; a TOML error becomes `file:line: key: message` (the
    /// key from the error's span: serde's own messages, such as "invalid type: integer 100,
    /// expected a string", do not name it). A syntax error, where no key is known, is
    /// `file:line: message`.
    pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        toml::from_str(self.src).map_err(|e| {
            let line = e.span().map(|s| self.line(s.start)).unwrap_or(0);
            let key = e
                .span()
                .and_then(|s| key_at(self.src, s))
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            // A missing field's span is its table's header (or the whole file): pointing a
            // caret at `[campaign]` would suggest that line is wrong.
            let excerpt = match e.span() {
                Some(s) if !e.message().starts_with("missing field") => self.excerpt(&s),
                _ => String::new(),
            };
            Error::Config(format!(
                "{}:{line}: {key}{}{excerpt}",
                self.path.display(),
                e.message().trim()
            ))
        })
    }

    pub(crate) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        msg: impl fmt::Display,
    ) -> Result<T> {
        Err(Error::Config(format!(
            "{}:{}: {key}: {msg}{}",
            self.path.display(),
            self.line(span.start),
            self.excerpt(&span)
        )))
    }

    /// The line holding `span` and a caret line under it (`\n  10 | rate = "fast"\n     |
    /// ^^^^^^`), so a person sees which value is meant without opening the file. Empty for a
    /// span outside the source (a key that is missing altogether has no line to show).
    pub(crate) fn excerpt(&self, span: &std::ops::Range<usize>) -> String {
        excerpt(self.src, span)
    }

    pub(crate) fn base(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    pub(crate) fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base().join(p)
        }
    }
}

/// See [`Locator::excerpt`]. Columns count characters, and a tab is shown as one space, so
/// the caret lines up on a terminal whatever its tab stops.
pub(crate) fn excerpt(src: &str, span: &std::ops::Range<usize>) -> String {
    let start = span.start;
    if start >= src.len() || !src.is_char_boundary(start) {
        return String::new();
    }
    let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
    let text = src[line_start..line_end].trim_end_matches('\r');
    // Very long lines (a list of 50 domains) are cut: the caret must stay on screen.
    const MAX: usize = 120;
    let col = src[line_start..start].chars().count();
    let end = span.end.clamp(start, line_start + text.len());
    let width = src.get(start..end).map_or(1, |s| s.chars().count()).max(1);
    let skip = col.saturating_sub(MAX / 2);
    let shown: String = text
        .chars()
        .skip(skip)
        .take(MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let width = width.min(MAX.saturating_sub(col - skip)).max(1);
    let lineno = src[..start].matches('\n').count() + 1;
    let gutter = lineno.to_string().len();
    format!(
        "\n {lineno} | {shown}\n {:gutter$} | {}{}",
        "",
        " ".repeat(col - skip),
        "^".repeat(width)
    )
}

/// The dotted key (`lane.burst`, `lane.retry[1]`, `campaign.headers.X-Tag`) whose key or value
/// is the span `at` of a deserialisation error, the deepest one. `None` when the source
/// does not parse (a syntax error has no key) or the span is outside every key (the file as
/// a whole).
fn key_at(src: &str, at: std::ops::Range<usize>) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    // serde's spans are exactly a key's or a value's (a table's header for a missing field);
    // containment would blame `campaign` for a missing top-level `[lane]`, whose span is the
    // document's start.
    fn holds(span: &std::ops::Range<usize>, at: &std::ops::Range<usize>) -> bool {
        span == at
    }
    // Every entry is visited: a table's span is only its `[header]`, its keys may be on any
    // later line, so containment cannot prune the search. The deepest match wins.
    fn walk(v: &DeValue<'_>, at: &std::ops::Range<usize>, path: &str, best: &mut Option<String>) {
        let found = |p: String, best: &mut Option<String>| {
            if best.as_ref().is_none_or(|b| p.len() > b.len()) {
                *best = Some(p);
            }
        };
        match v {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    let p = if path.is_empty() {
                        k.get_ref().to_string()
                    } else {
                        format!("{path}.{}", k.get_ref())
                    };
                    if holds(&k.span(), at) || holds(&v.span(), at) {
                        found(p.clone(), best);
                    }
                    walk(v.get_ref(), at, &p, best);
                }
            }
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if holds(&v.span(), at) {
                        found(p.clone(), best);
                    }
                    walk(v.get_ref(), at, &p, best);
                }
            }
            _ => {}
        }
    }
    let doc = DeTable::parse(src).ok()?;
    let mut best = None;
    walk(&DeValue::Table(doc.into_inner()), &at, "", &mut best);
    best
}

pub(crate) fn duration(
    loc: &Locator,
    v: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s.get_ref()).or_else(|m| loc.err(s.span(), key, m)),
    }
}

/// A count that must be positive: `0` is an error (it used to be raised to 1 silently, so
/// the file said something the lane did not do).
pub(crate) fn at_least_one(
    loc: &Locator,
    v: &Option<Spanned<u32>>,
    key: &str,
    default: u32,
) -> Result<u32> {
    match v {
        None => Ok(default),
        Some(x) if *x.get_ref() == 0 => loc.err(x.span(), key, "must be at least 1"),
        Some(x) => Ok(*x.get_ref()),
    }
}

fn read_template(
    loc: &Locator,
    v: &Option<Spanned<String>>,
    key: &str,
) -> Result<Option<(PathBuf, String)>> {
    let Some(v) = v else { return Ok(None) };
    let p = loc.resolve(v.get_ref());
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some((p, s))),
        Err(e) => loc.err(v.span(), key, format!("cannot read {}: {e}", p.display())),
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn parse_transport(loc: &Locator, v: &Spanned<String>, key: &str) -> Result<TransportSpec> {
    let s = v.get_ref().trim();
    if let Some(dir) = s.strip_prefix("outbox:") {
        if dir.is_empty() {
            return loc.err(
                v.span(),
                key,
                "outbox: needs a directory, e.g. \"outbox:../outbox\"",
            );
        }
        return Ok(TransportSpec::Outbox(loc.resolve(dir)));
    }
    let (rest, implicit_tls, default_port) = if let Some(r) = s.strip_prefix("smtp://") {
        (r, false, 25)
    } else if let Some(r) = s.strip_prefix("smtps://") {
        (r, true, 465)
    } else if s == "mx" {
        return Ok(TransportSpec::Mx);
    } else {
        return loc.err(
            v.span(),
            key,
            format!(
                "expected \"smtp://host:port\", \"smtps://host:port\", \"mx\" or \"outbox:DIR\", got {s:?}"
            ),
        );
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        // [v6]:port
        let (h, p) = stripped.split_once(']').unwrap_or((stripped, ""));
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (rest.to_string(), ""),
        }
    };
    if host.is_empty() {
        return loc.err(v.span(), key, "missing host");
    }
    let port = if port.is_empty() {
        default_port
    } else {
        port.parse()
            .or_else(|_| loc.err(v.span(), key, format!("bad port {port:?}")))?
    };
    Ok(TransportSpec::Smtp {
        host,
        port,
        implicit_tls,
    })
}

/// Checks a name blast puts on the SMTP wire as a host (EHLO argument, serve's greeting):
/// a domain (a Unicode one becomes its A-label) or an address literal such as `[192.0.2.1]`
/// or `[IPv6:2001:db8::1]`. Anything else — a space, CR/LF — would change the command.
pub(crate) fn host_name(v: &str) -> std::result::Result<String, String> {
    let bad = || {
        format!(
            "{v:?} is not a host name (letters, digits, '-' and '.', or an address literal \
             like [192.0.2.1])"
        )
    };
    if let Some(lit) = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip = lit.strip_prefix("IPv6:").unwrap_or(lit);
        return match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) if ip == lit => Ok(v.to_string()),
            Ok(IpAddr::V6(_)) if ip != lit => Ok(v.to_string()),
            _ => Err(bad()),
        };
    }
    if v.is_empty() || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let a = idna::domain_to_ascii(v).map_err(|_| bad())?;
    let ldh = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if a.len() > 253 || !a.split('.').all(ldh) {
        return Err(bad());
    }
    Ok(a)
}

fn valid_header_name(name: &str) -> bool {
    // RFC 5322 field-name: printable ASCII except colon; we also refuse headers blast owns.
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Entries blast itself keeps in a state directory (campaign and serve state can share one):
/// a campaign with one of these ids would put its store inside them. Compared without case,
/// for case-insensitive file systems.
const RESERVED_IDS: &[&str] = &["suppression", "queue", "schedule", "runs", "control.sock"];

const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "sender",
    "return-path",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "dkim-signature",
];

fn validate(loc: &Locator, raw: RawFile) -> Result<Settings> {
    let schedule = match raw.schedule {
        None => None,
        Some(r) => {
            Some(self::schedule::validate(r).or_else(|(span, key, msg)| loc.err(span, &key, msg))?)
        }
    };
    let c = raw.campaign;
    let lane_span = raw.lane.span();
    let l = raw.lane.into_inner();

    let id = c.id.get_ref().trim().to_string();
    if id.is_empty()
        || !id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.@".contains(ch))
        || id.starts_with('.')
    {
        return loc.err(
            c.id.span(),
            "campaign.id",
            "use letters, digits, '-', '_', '.' and '@', not starting with '.' (it names a directory)",
        );
    }
    if let Some(own) = RESERVED_IDS.iter().find(|r| r.eq_ignore_ascii_case(&id)) {
        return loc.err(
            c.id.span(),
            "campaign.id",
            format!("{own:?} names one of blast's own entries in the state directory; choose another id"),
        );
    }
    let from = parse_named_address(c.from.get_ref())
        .or_else(|m| loc.err(c.from.span(), "campaign.from", m))?;
    let reply_to = match &c.reply_to {
        Some(r) => Some(
            parse_named_address(r.get_ref())
                .or_else(|m| loc.err(r.span(), "campaign.reply_to", m))?,
        ),
        None => None,
    };
    // The domain is already an A-label; a non-ASCII local part can only go out with
    // SMTPUTF8, so without it every message would bounce.
    let utf8_lane = l.smtputf8.unwrap_or(false);
    for (addr, span, key) in [
        (Some(&from), c.from.span(), "campaign.from"),
        (
            reply_to.as_ref(),
            c.reply_to.as_ref().map_or(0..0, |r| r.span()),
            "campaign.reply_to",
        ),
    ] {
        if let Some(a) = addr.filter(|a| needs_smtputf8(&a.address) && !utf8_lane) {
            return loc.err(
                span,
                key,
                format!(
                    "{} has a non-ASCII local part, which needs SMTPUTF8: set `smtputf8 = true` \
                     in [lane] if the relay supports it, or use an ASCII address",
                    a.address
                ),
            );
        }
    }
    let text = read_template(loc, &c.text, "campaign.text")?;
    let html = read_template(loc, &c.html, "campaign.html")?;
    if text.is_none() && html.is_none() {
        return loc.err(
            c.subject.span(),
            "campaign",
            "needs `text` and/or `html` template paths",
        );
    }
    if c.lists.get_ref().is_empty() {
        return loc.err(
            c.lists.span(),
            "campaign.lists",
            "needs at least one CSV file",
        );
    }
    let lists = c.lists.get_ref().iter().map(|p| loc.resolve(p)).collect();
    let mut headers = Vec::new();
    let (header_map, header_span) = match &c.headers {
        Some(h) => (h.get_ref().clone(), h.span()),
        None => (BTreeMap::new(), 0..0),
    };
    for (name, value) in &header_map {
        if !valid_header_name(name) {
            return loc.err(
                header_span.clone(),
                &format!("campaign.headers.{name:?}"),
                "not a valid header name",
            );
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return loc.err(
                header_span.clone(),
                &format!("campaign.headers.{name}"),
                "blast sets this header itself",
            );
        }
        // CR/LF here would end the header and start another on the wire.
        if let Some(c) = value
            .get_ref()
            .chars()
            .find(|&c| c.is_control() && c != '\t')
        {
            return loc.err(
                value.span(),
                &format!("campaign.headers.{name}"),
                format!("control character {c:?} in the value (CR, LF, … are not allowed)"),
            );
        }
        // TOML keys are case-sensitive, header names are not: `List-Id` and `list-id`
        // would both go out.
        if headers
            .iter()
            .any(|(n, _): &(String, String)| n.eq_ignore_ascii_case(name))
        {
            return loc.err(
                value.span(),
                &format!("campaign.headers.{name}"),
                "this header is set twice (names differ only in case)",
            );
        }
        headers.push((name.clone(), value.get_ref().clone()));
    }
    let in_flight = c.in_flight.unwrap_or(InFlightPolicy::Skip);
    let state_dir = match &c.state_dir {
        Some(d) => loc.resolve(d),
        None => loc.base().join(".blast"),
    };

    let default_helo = from.domain().unwrap_or("localhost").to_string();
    if let Some((d, t)) = l.dkim.iter().next() {
        return loc.err(
            t.span(),
            &format!("lane.dkim.{d}"),
            "a campaign's signing keys go in its own [dkim] table",
        );
    }
    let lane = lane_settings(loc, &l, lane_span, "lane", default_helo, raw.dns.as_ref())?;
    let dkim = match &raw.dkim {
        None => None,
        Some(d) => Some(self::dkim::validate(loc, d, "dkim", None)?),
    };

    Ok(Settings {
        file: loc.path.to_path_buf(),
        id,
        from,
        reply_to,
        subject: c.subject.into_inner(),
        text,
        html,
        lists,
        email_column: c.email_column.unwrap_or_else(|| "email".into()),
        state_dir,
        headers,
        track_clicks: c.track_clicks.unwrap_or(false),
        policy: Policy {
            allow_role: c.allow_role_accounts.unwrap_or(false),
            smtputf8: l.smtputf8.unwrap_or(false),
        },
        in_flight,
        lane,
        schedule,
        suppression_dir: None,
        cluster: None,
        tokens: None,
        dkim,
        bounce_policy: Default::default(),
        shard: None,
    })
}

/// Validates a lane table (`[lane]` of a campaign, `[priority]` of blast.toml); `section`
/// names it in errors, `default_helo` is used when `helo` is not set.
pub(crate) fn lane_settings(
    loc: &Locator,
    l: &RawLane,
    lane_span: std::ops::Range<usize>,
    section: &str,
    default_helo: String,
    dns: Option<&RawDns>,
) -> Result<LaneSettings> {
    let k = |key: &str| format!("{section}.{key}");
    let relays = match (&l.transport, &l.relays) {
        (Some(_), Some(r)) => {
            return loc.err(
                r.span(),
                &k("relays"),
                "set transport or relays, not both (relays lists every relay of the pool)",
            )
        }
        (None, None) => {
            return loc.err(
                lane_span,
                &k("transport"),
                "missing: set transport = \"smtp://host:port\" (or \"mx\", \"outbox:DIR\"), or relays = [\"smtp://a:25\", …]",
            )
        }
        (None, Some(r)) if section != "lane" => {
            return loc.err(r.span(), &k("relays"), "only a campaign's [lane] has a relay pool")
        }
        (None, Some(r)) => pool::relays(loc, r, section)?,
        (Some(_), None) => Vec::new(),
    };
    let transport = match &l.transport {
        Some(t) => parse_transport(loc, t, &k("transport"))?,
        None => relays[0].transport.clone(),
    };
    let is_mx = transport == TransportSpec::Mx;
    let mx_port = match &l.mx_port {
        None => 25,
        Some(p) if !is_mx => {
            return loc.err(
                p.span(),
                &k("mx_port"),
                "only for transport = \"mx\" (a relay's port goes in its URL)",
            )
        }
        Some(p) => match u16::try_from(*p.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => return loc.err(p.span(), &k("mx_port"), "a port from 1 to 65535"),
        },
    };
    let nameservers = nameservers(loc, dns)?;
    let accounting = l.accounting.as_ref().map(|a| loc.resolve(a.get_ref()));
    let source_ip = match &l.source_ip {
        Some(s) => Some(s.get_ref().parse::<IpAddr>().or_else(|_| {
            loc.err(
                s.span(),
                &k("source_ip"),
                format!("not an IP address: {:?}", s.get_ref()),
            )
        })?),
        None => None,
    };
    let egress_ip = match &l.egress_ip {
        Some(s) => Some(s.get_ref().parse::<IpAddr>().or_else(|_| {
            loc.err(
                s.span(),
                &k("egress_ip"),
                format!("not an IP address: {:?}", s.get_ref()),
            )
        })?),
        None => source_ip,
    };
    let dnsbl = zones(
        loc,
        dns.and_then(|d| d.dnsbl.as_ref()),
        "dnsbl",
        DEFAULT_DNSBL,
    )?;
    let dbl = zones(loc, dns.and_then(|d| d.dbl.as_ref()), "dbl", DEFAULT_DBL)?;
    let relay_is_loopback = matches!(&transport, TransportSpec::Smtp { host, .. } if is_loopback_host(host))
        && relays.iter().all(
            |r| matches!(&r.transport, TransportSpec::Smtp { host, .. } if is_loopback_host(host)),
        );
    let starttls = l.starttls.unwrap_or(if relay_is_loopback {
        StartTls::Off
    } else {
        StartTls::Opportunistic
    });
    let rate_v = l.rate.and_then(|r| r.0);
    let mut per_domain = HashMap::new();
    let mut per_domain_default = None;
    for (domain, r) in &l.per_domain {
        let key = format!("{section}.per_domain.{domain}");
        let parsed = r.get_ref().0;
        if domain == "default" {
            per_domain_default = parsed;
        } else if let Some(p) = parsed {
            let d = idna::domain_to_ascii(domain.trim())
                .or_else(|_| loc.err(r.span(), &key, "not a valid domain"))?;
            per_domain.insert(d, p);
        }
    }
    let positive = |v: &Option<Spanned<u32>>, key: &str, default: u32| -> Result<usize> {
        match v {
            None => Ok(default as usize),
            Some(s) if *s.get_ref() == 0 => loc.err(s.span(), key, "must be at least 1"),
            Some(s) if *s.get_ref() > 1024 => loc.err(s.span(), key, "at most 1024"),
            Some(s) => Ok(*s.get_ref() as usize),
        }
    };
    let connections = positive(&l.connections, &k("connections"), 16)?;
    let per_domain_connections =
        positive(&l.per_domain_connections, &k("per_domain_connections"), 4)?;

    let auth = match (&l.username, &l.password_env, &l.password_file) {
        (None, None, None) => None,
        (Some(u), env, file) => {
            if let Some(c) = u.get_ref().chars().find(|c| c.is_control()) {
                return loc.err(
                    u.span(),
                    &k("username"),
                    format!("control character {c:?} in the user name"),
                );
            }
            let password = match (env, file) {
                (Some(var), None) => std::env::var(var).map_err(|_| {
                    Error::Config(format!("{}:{}: {section}.password_env: environment variable {var} is not set", loc.path.display(), loc.line(lane_span.start)))
                })?,
                (None, Some(f)) => {
                    let p = loc.resolve(f.get_ref());
                    std::fs::read_to_string(&p)
                        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                        .or_else(|e| loc.err(f.span(), &k("password_file"), format!("cannot read {}: {e}", p.display())))?
                }
                _ => return loc.err(lane_span, section, "with `username`, set exactly one of `password_env` or `password_file` (passwords never go in the campaign file)"),
            };
            Some(Auth {
                username: u.get_ref().clone(),
                password: Secret(password),
            })
        }
        _ => {
            return loc.err(
                lane_span,
                section,
                "`password_env`/`password_file` need `username`",
            )
        }
    };
    if let (true, Some(u)) = (is_mx, &l.username) {
        return loc.err(
            u.span(),
            &k("username"),
            "AUTH is for a relay; MX hosts take mail without it (transport = \"mx\")",
        );
    }
    if auth.is_some() && starttls != StartTls::Required && !relay_is_loopback {
        if let TransportSpec::Smtp {
            implicit_tls: false,
            ..
        } = transport
        {
            return loc.err(lane_span, &k("starttls"), "AUTH is never sent without TLS except to loopback: set starttls = \"required\" or use smtps://");
        }
    }

    let mut retry = Vec::new();
    for r in l.retry.iter().flatten() {
        retry.push(parse_duration(r.get_ref()).or_else(|m| loc.err(r.span(), &k("retry"), m))?);
    }
    if l.retry.is_none() {
        retry = [5 * 60, 15 * 60, 3600, 4 * 3600, 12 * 3600]
            .map(Duration::from_secs)
            .to_vec();
    }
    let shaping = lane_shaping(loc, l, section)?;
    let helo = match &l.helo {
        Some(h) => host_name(h.get_ref()).or_else(|m| loc.err(h.span(), &k("helo"), m))?,
        None => default_helo,
    };

    let source_ips = match (&l.source_ip, &l.source_ips) {
        (Some(s), Some(_)) => {
            return loc.err(
                s.span(),
                &k("source_ip"),
                "set source_ip or source_ips, not both (source_ips lists every IP of the pool)",
            )
        }
        (None, Some(r)) if section != "lane" => {
            return loc.err(
                r.span(),
                &k("source_ips"),
                "only a campaign's [lane] has an IP pool",
            )
        }
        (None, Some(r)) => {
            if let Some(e) = &l.egress_ip {
                return loc.err(
                    e.span(),
                    &k("egress_ip"),
                    "with source_ips, each entry has its own egress_ip",
                );
            }
            if !matches!(transport, TransportSpec::Smtp { .. }) {
                // Direct delivery keeps one source IP per lane in this release.
                return loc.err(
                    r.span(),
                    &k("source_ips"),
                    "an IP pool sends through relays: set transport = \"smtp://…\" or relays",
                );
            }
            let ips = pool::source_ips(loc, r, section, &helo)?;
            if ips.len() > connections {
                return loc.err(
                    r.span(),
                    &k("source_ips"),
                    format!(
                        "{} IPs but connections = {connections}: each IP needs a connection of its own",
                        ips.len()
                    ),
                );
            }
            ips
        }
        _ => Vec::new(),
    };
    Ok(LaneSettings {
        transport,
        source_ip,
        source_ips,
        relays,
        egress_ip,
        helo,
        rate: rate_v,
        burst: at_least_one(loc, &l.burst, &k("burst"), 1)?,
        per_domain_default,
        per_domain,
        connections,
        per_domain_connections,
        starttls,
        smtputf8: l.smtputf8.unwrap_or(false),
        auth,
        timeouts: Timeouts {
            connect: duration(
                loc,
                &l.connect_timeout,
                &k("connect_timeout"),
                Duration::from_secs(60),
            )?,
            command: duration(
                loc,
                &l.command_timeout,
                &k("command_timeout"),
                Duration::from_secs(300),
            )?,
            data_end: duration(
                loc,
                &l.data_timeout,
                &k("data_timeout"),
                Duration::from_secs(600),
            )?,
        },
        max_messages_per_connection: at_least_one(
            loc,
            &l.max_messages_per_connection,
            &k("max_messages_per_connection"),
            1000,
        )?,
        max_connection_age: duration(
            loc,
            &l.max_connection_age,
            &k("max_connection_age"),
            Duration::from_secs(600),
        )?,
        retry,
        max_retry_age: duration(
            loc,
            &l.max_retry_age,
            &k("max_retry_age"),
            Duration::from_secs(3 * 86400),
        )?,
        backoff: duration(loc, &l.backoff, &k("backoff"), Duration::from_secs(60))?,
        wait_for_retries: duration(
            loc,
            &l.wait_for_retries,
            &k("wait_for_retries"),
            Duration::from_secs(15 * 60),
        )?,
        nice: match &l.nice {
            None => 10,
            Some(n) if section != "lane" => {
                return loc.err(n.span(), &k("nice"), "only a campaign's [lane] has a nice value (serve's priority lane never lowers itself)")
            }
            Some(n) if (0..=19).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => return loc.err(n.span(), &k("nice"), "must be 0 (unchanged) to 19 (yield the most)"),
        },
        breaker: {
            let share = match &l.breaker_share {
                None => 0.10,
                Some(v) if (0.0..=1.0).contains(v.get_ref()) => *v.get_ref(),
                Some(v) => return loc.err(v.span(), &k("breaker_share"), "a share from 0 (off) to 1, e.g. 0.1"),
            };
            let window = at_least_one(loc, &l.breaker_window, &k("breaker_window"), 1000)?;
            (share > 0.0).then_some((share, u64::from(window)))
        },
        complaint_share: match &l.complaint_share {
            None => Some(crate::bounce::policy::COMPLAINT_ALARM),
            Some(v) if (0.0..=1.0).contains(v.get_ref()) => (*v.get_ref() > 0.0).then_some(*v.get_ref()),
            Some(v) => return loc.err(v.span(), &k("complaint_share"), "a share from 0 (off) to 1, e.g. 0.003"),
        },
        mx_port,
        nameservers,
        dnsbl,
        dbl,
        accounting,
        warmup: warmup::settings(loc, l, &shaping, section)?.map(std::sync::Arc::new),
        shaping: std::sync::Arc::new(shaping),
    })
}

/// The lane's shaping: the shipped file, then `shaping = "file"`, then the lane's own
/// `providers` and `rules` tables. Only the blast lane shapes: serve's priority lane sends
/// one transaction at a time and must never be held by a rule.
fn lane_shaping(loc: &Locator, l: &RawLane, section: &str) -> Result<shaping::Shaping> {
    let k = |key: &str| format!("{section}.{key}");
    if section != "lane" {
        let set = l
            .shaping
            .as_ref()
            .map(|s| (s.span(), "shaping"))
            .or(l
                .shaping_defaults
                .as_ref()
                .map(|s| (s.span(), "shaping_defaults")))
            .or(l.providers.values().next().map(|s| (s.span(), "providers")))
            .or(l.rules.values().next().map(|s| (s.span(), "rules")));
        if let Some((span, key)) = set {
            return loc.err(
                span,
                &k(key),
                "only a campaign's [lane] is shaped (the priority lane is never held back)",
            );
        }
        return Ok(shaping::Shaping::default());
    }
    let mut b = shaping::Builder::new(l.shaping_defaults.as_ref().is_none_or(|d| *d.get_ref()));
    if let Some(f) = &l.shaping {
        let path = loc.resolve(f.get_ref());
        let src = std::fs::read_to_string(&path).or_else(|e| {
            loc.err(
                f.span(),
                &k("shaping"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let floc = Locator {
            path: &path,
            src: &src,
        };
        let raw: shaping::RawShaping = floc.parse_toml()?;
        b.layer(&floc, &raw.providers, &raw.rules, "")?;
    }
    b.layer(loc, &l.providers, &l.rules, "lane.")?;
    b.build()
}

/// The DNSBL zones checked when `[dns] dnsbl` is not set.
pub const DEFAULT_DNSBL: &[&str] = &["zen.spamhaus.org", "bl.spamcop.net"];

/// The domain blocklists checked when `[dns] dbl` is not set.
pub const DEFAULT_DBL: &[&str] = &["dbl.spamhaus.org"];

/// `[dns] dnsbl = ["zen.spamhaus.org"]`, `[dns] dbl = ["dbl.spamhaus.org"]`: zones as host
/// names (an error names `dns.KEY[i]`); `default` when the key is not set.
fn zones(
    loc: &Locator,
    list: Option<&Vec<Spanned<String>>>,
    key: &str,
    default: &[&str],
) -> Result<Vec<String>> {
    let Some(list) = list else {
        return Ok(default.iter().map(|z| z.to_string()).collect());
    };
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let z = host_name(v.get_ref().trim().trim_end_matches('.'))
            .or_else(|m| loc.err(v.span(), &format!("dns.{key}[{i}]"), m))?;
        out.push(z);
    }
    Ok(out)
}

/// `[dns] nameservers = ["127.0.0.1:5353", "192.0.2.53"]` (port 53 when left out).
fn nameservers(loc: &Locator, dns: Option<&RawDns>) -> Result<Vec<std::net::SocketAddr>> {
    let mut out = Vec::new();
    for (i, v) in dns
        .and_then(|d| d.nameservers.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let s = v.get_ref().trim();
        let parsed = s.parse::<std::net::SocketAddr>().ok().or_else(|| {
            let ip = s.trim_start_matches('[').trim_end_matches(']');
            ip.parse::<IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        });
        match parsed {
            Some(a) => out.push(a),
            None => {
                return loc.err(
                    v.span(),
                    &format!("dns.nameservers[{i}]"),
                    format!(
                    "expected an IP address with an optional port (\"127.0.0.1:5353\"), got {s:?}"
                ),
                )
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_trip() {
        for s in ["200/s", "50000/h", "3/m", "1/d"] {
            assert_eq!(Rate::parse(s).unwrap().to_string(), s);
        }
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("10/w").is_err());
        assert!(Rate::parse("fast").is_err());
        assert_eq!(
            Rate::parse("20/s").unwrap().interval(),
            Duration::from_millis(50)
        );
    }

    /// A valid campaign in a temp dir (template and list exist); `campaign`/`lane` lines are
    /// appended to those tables. Line 1 is `[campaign]`, line 8 `[lane]`.
    fn parse_with(campaign: &str, lane: &str) -> Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.txt"), "Hi\n").unwrap();
        let src = format!(
            "[campaign]\nid = \"c1\"\nfrom = \"Acme <news@acme.example>\"\nsubject = \"S\"\n\
             text = \"t.txt\"\nlists = [\"l.csv\"]\n{campaign}\n[lane]\n\
             transport = \"smtp://127.0.0.1:2525\"\n{lane}\n"
        );
        parse(&dir.path().join("b.toml"), &src)
    }

    fn err(campaign: &str, lane: &str) -> String {
        parse_with(campaign, lane).unwrap_err().to_string()
    }

    #[test]
    fn egress_ip_defaults_to_source_ip_and_dnsbl_to_the_two_lists() {
        let s = parse_with("", "source_ip = \"192.0.2.1\"").unwrap();
        assert_eq!(s.lane.egress_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(s.lane.dnsbl, DEFAULT_DNSBL);
        assert_eq!(s.lane.dbl, ["dbl.spamhaus.org"]);
        let s = parse_with(
            "",
            "source_ip = \"10.0.0.5\"\negress_ip = \"203.0.113.10\"\n[dns]\ndnsbl = [\"zen.test\"]",
        )
        .unwrap();
        assert_eq!(s.lane.egress_ip, Some("203.0.113.10".parse().unwrap()));
        assert_eq!(s.lane.dnsbl, ["zen.test"]);
        let e = err("", "egress_ip = \"nat\"");
        assert!(e.contains(":10: lane.egress_ip: not an IP address"), "{e}");
        let e = err("", "[dns]\ndnsbl = [\"bad zone\"]");
        assert!(e.contains(":11: dns.dnsbl[0]:"), "{e}");
        let s = parse_with("", "[dns]\ndbl = [\"dbl.test.\"]\ndnsbl = []").unwrap();
        assert_eq!(
            (s.lane.dbl.as_slice(), s.lane.dnsbl.len()),
            (&["dbl.test".to_string()][..], 0)
        );
        let e = err("", "[dns]\ndbl = [\"dbl.test\", \"bad zone\"]");
        assert!(e.contains(":11: dns.dbl[1]:"), "{e}");
    }

    #[test]
    fn mx_keys_are_checked_with_file_line_and_key() {
        let e = err("", "mx_port = 2525");
        assert!(
            e.contains(":10: lane.mx_port: only for transport = \"mx\""),
            "{e}"
        );
        let e = err(
            "",
            "[dns]\nnameservers = [\"127.0.0.1:53\", \"resolver.lan\"]",
        );
        assert!(
            e.contains(":11: dns.nameservers[1]: expected an IP address"),
            "{e}"
        );
        let s = parse_with("", "[dns]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]").unwrap();
        let want: Vec<std::net::SocketAddr> = vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        ];
        assert_eq!(s.lane.nameservers, want);
        // Direct delivery needs no relay and takes no AUTH.
        let mx = |lane: &str| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("t.txt"), "Hi\n").unwrap();
            let src = format!(
                "[campaign]\nid = \"c1\"\nfrom = \"news@acme.example\"\nsubject = \"S\"\n\
                 text = \"t.txt\"\nlists = [\"l.csv\"]\n[lane]\ntransport = \"mx\"\n{lane}\n"
            );
            parse(&dir.path().join("c.toml"), &src)
        };
        let s = mx("mx_port = 2525\naccounting = \"acct.jsonl\"").unwrap();
        assert_eq!(s.lane.transport, TransportSpec::Mx);
        assert_eq!(s.lane.mx_port, 2525);
        assert_eq!(s.lane.starttls, StartTls::Opportunistic);
        assert!(s.lane.accounting.unwrap().ends_with("acct.jsonl"));
        let e = mx("mx_port = 70000").unwrap_err().to_string();
        assert!(
            e.contains(":9: lane.mx_port: a port from 1 to 65535"),
            "{e}"
        );
        std::env::set_var("BLAST_CONFIG_TEST_MX_PW", "pw");
        let e = mx("username = \"u\"\npassword_env = \"BLAST_CONFIG_TEST_MX_PW\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":9: lane.username: AUTH is for a relay"), "{e}");
    }

    #[test]
    fn a_header_named_twice_in_different_case_is_refused() {
        // TOML keys are case-sensitive, header names are not: both would go out, two
        // List-Ids (RFC 2919 allows one) or two of any other.
        let e = err(
            "[campaign.headers]\n\"List-Id\" = \"<a.acme.example>\"\n\"list-id\" = \"<b>\"",
            "",
        );
        assert!(
            e.contains("campaign.headers.list-id") && e.contains("twice"),
            "{e}"
        );
        assert!(parse_with(
            "[campaign.headers]\n\"List-Id\" = \"<a.acme.example>\"\nX-A = \"1\"",
            ""
        )
        .is_ok());
    }

    #[test]
    fn excerpt_puts_a_caret_under_the_span() {
        let src = "a = 1\nrate = \"fast\"\n";
        let at = src.find("\"fast").unwrap();
        assert_eq!(
            excerpt(src, &(at..at + 6)),
            "\n 2 | rate = \"fast\"\n   |        ^^^^^^"
        );
        // An empty span still gets one caret; a span past the end shows nothing.
        assert!(excerpt(src, &(0..0)).ends_with("|\x20^"));
        assert_eq!(excerpt(src, &(999..1000)), "");
        // A multi-line span is underlined to the end of its first line only.
        let src = "retry = [\n  \"5m\",\n]";
        let e = excerpt(src, &(8..src.len()));
        assert!(e.ends_with("|         ^"), "{e}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = err("", "connections = \"many\"");
        assert!(
            e.contains(
                "b.toml:10: lane.connections: invalid type: string \"many\", expected u32\n"
            ),
            "{e}"
        );
        // The offending line, with a caret under the value.
        assert!(
            e.ends_with("\n 10 | connections = \"many\"\n    |               ^^^^^^"),
            "{e}"
        );
        let e = err("", "retry = [\"5m\", 100]");
        assert!(
            e.contains("b.toml:10: lane.retry[1]: invalid type: integer `100`, expected a string"),
            "{e}"
        );
        let e = err("email_column = 100", "");
        assert!(
            e.contains("b.toml:7: campaign.email_column: invalid type: integer `100`"),
            "{e}"
        );
        let e = err("[campaign.headers]\nX-N = 1", "");
        assert!(
            e.contains("b.toml:8: campaign.headers.X-N: invalid type"),
            "{e}"
        );
        // Values parsed by serde (rates, enums) keep file, line and key.
        let e = err("", "rate = \"fast\"");
        assert!(
            e.contains("b.toml:10: lane.rate: expected \"<n>/<s|m|h|d>\""),
            "{e}"
        );
        let e = err("", "starttls = \"sometimes\"");
        assert!(e.contains("b.toml:10: lane.starttls: unknown variant `sometimes`, expected one of `off`, `opportunistic`, `required`"), "{e}");
        let e = err("in_flight = \"retry\"", "");
        assert!(
            e.contains("b.toml:7: campaign.in_flight: unknown variant `retry`"),
            "{e}"
        );
        let e = err("", "[lane.per_domain]\n\"gmail.com\" = \"9/fortnight\"");
        assert!(
            e.contains("b.toml:11: lane.per_domain.gmail.com: expected"),
            "{e}"
        );
        // An unknown key and a missing one.
        let e = err("", "conections = 4");
        assert!(
            e.contains("b.toml:10: lane.conections: unknown field `conections`"),
            "{e}"
        );
        // A missing table is no key's fault (not `campaign: missing field `lane``).
        let src = "[campaign]\nid = \"c\"\nfrom = \"a@b.example\"\nsubject = \"S\"\nlists = []\n";
        let e = parse(Path::new("b.toml"), src).unwrap_err();
        assert_eq!(e.to_string(), "b.toml:1: missing field `lane`");
        let e = parse(Path::new("b.toml"), "[campaign]\nid = \"c\"\n").unwrap_err();
        assert_eq!(e.to_string(), "b.toml:1: campaign: missing field `from`");
        let ok = parse_with(
            "in_flight = \"resend\"",
            "starttls = \"required\"\nrate = \"unlimited\"",
        )
        .unwrap();
        assert_eq!(ok.in_flight, InFlightPolicy::Resend);
        assert_eq!(ok.lane.starttls, StartTls::Required);
        assert_eq!(ok.lane.rate, None);
    }

    #[test]
    fn rate_overflow_is_not_a_format_error() {
        let e = Rate::parse("4294967296/s").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        assert!(!e.contains("expected"), "{e}");
        assert_eq!(Rate::parse("4294967295/d").unwrap().count, u32::MAX);
        let e = err("", "rate = \"4294967296/s\"");
        assert!(
            e.contains("b.toml:10: lane.rate: rate \"4294967296/s\" is too large"),
            "{e}"
        );
    }

    #[test]
    fn zero_limits_are_refused() {
        let e = err("", "burst = 0");
        assert!(
            e.contains("b.toml:10: lane.burst: must be at least 1"),
            "{e}"
        );
        let e = err("", "max_messages_per_connection = 0");
        assert!(
            e.contains("b.toml:10: lane.max_messages_per_connection: must be at least 1"),
            "{e}"
        );
        let s = parse_with("", "burst = 5\nmax_messages_per_connection = 7").unwrap();
        assert_eq!((s.lane.burst, s.lane.max_messages_per_connection), (5, 7));
    }

    #[test]
    fn campaign_ids_of_blast_own_directories_are_refused() {
        for own in [
            "suppression",
            "queue",
            "schedule",
            "runs",
            "Suppression",
            "control.sock",
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("t.txt"), "Hi\n").unwrap();
            let src = format!("[campaign]\nid = \"{own}\"\nfrom = \"a@acme.example\"\nsubject = \"S\"\ntext = \"t.txt\"\nlists = [\"l.csv\"]\n[lane]\ntransport = \"outbox:o\"\n");
            let e = parse(&dir.path().join("b.toml"), &src)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("b.toml:2: campaign.id:") && e.contains("blast's own"),
                "{own}: {e}"
            );
        }
        // The message lists every allowed character, '@' included (run ids have one).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.txt"), "Hi\n").unwrap();
        let src = "[campaign]\nid = \"a b\"\nfrom = \"a@acme.example\"\nsubject = \"S\"\ntext = \"t.txt\"\nlists = [\"l.csv\"]\n[lane]\ntransport = \"outbox:o\"\n";
        let e = parse(&dir.path().join("b.toml"), src)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'@'"), "{e}");
        let src = src.replace("a b", "news@2026");
        parse(&dir.path().join("b.toml"), &src).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5 parsecs").is_err());
    }

    const GOOD: &str = "[campaign]\nid = \"c\"\nfrom = \"News <news@acme.example>\"\nsubject = \"s\"\ntext = \"t.txt\"\nlists = [\"l.csv\"]\n\n[campaign.headers]\n\"X-Campaign\" = \"c\"\n\n[lane]\ntransport = \"outbox:out\"\nhelo = \"blast.acme.example\"\n";

    fn load_with(src: &str) -> Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.txt"), "hi\n").unwrap();
        parse(&dir.path().join("c.toml"), src)
    }

    fn error_of(src: &str) -> String {
        let e = load_with(src).expect_err("must be refused").to_string();
        e.split_once("c.toml")
            .map(|(_, r)| r.to_string())
            .unwrap_or(e)
    }

    /// Issue 11.5: every campaign string that reaches SMTP is checked at load: EHLO name,
    /// header values, AUTH user — `file:line: key:`.
    #[test]
    fn wire_strings_are_validated_at_load() {
        load_with(GOOD).unwrap();
        let e = error_of(&GOOD.replace("blast.acme.example", "bad helo\\r\\nMAIL FROM"));
        assert!(e.starts_with(":13: lane.helo:"), "{e}");
        let e = error_of(&GOOD.replace("blast.acme.example", "two words"));
        assert!(e.starts_with(":13: lane.helo:"), "{e}");
        let e = error_of(&GOOD.replace(
            "= \"c\"\n\n[lane]",
            "= \"c\\r\\nBcc: x@y.example\"\n\n[lane]",
        ));
        assert!(e.starts_with(":9: campaign.headers.X-Campaign:"), "{e}");
        let e = error_of(&format!(
            "{GOOD}username = \"u\\r\\nQUIT\"\npassword_env = \"P\"\n"
        ));
        assert!(e.starts_with(":14: lane.username:"), "{e}");
        let e = error_of(&GOOD.replace("News <news@acme.example>", "x@y.example\\r\\nRCPT"));
        assert!(e.starts_with(":3: campaign.from:"), "{e}");
    }

    /// Issue 11.6: a Unicode From domain becomes its A-label (envelope, header, default
    /// EHLO); a non-ASCII local part needs SMTPUTF8, which the lane must enable.
    #[test]
    fn idn_from_domain_is_punycoded_and_a_utf8_local_part_needs_smtputf8() {
        let src = GOOD
            .replace("news@acme.example", "news@acmé.example")
            .replace("helo = \"blast.acme.example\"\n", "");
        let s = load_with(&src).unwrap();
        assert_eq!(s.from.address, "news@xn--acm-dma.example");
        assert_eq!(s.lane.helo, "xn--acm-dma.example");
        let src = GOOD.replace("news@acme.example", "jörg@acme.example");
        let e = error_of(&src);
        assert!(
            e.starts_with(":3: campaign.from:") && e.contains("SMTPUTF8"),
            "{e}"
        );
        let s = load_with(&format!("{src}smtputf8 = true\n")).unwrap();
        assert_eq!(s.from.address, "jörg@acme.example");
    }
}
