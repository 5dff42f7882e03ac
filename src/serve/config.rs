//! `blast.toml`, the server config of `blast serve`: a `[serve]` table (state dir, the
//! submission listener and its limits, users file, campaigns dir, the one-click HTTP listener
//! and the token secret file), a `[priority]` table (the priority lane: its own relay, source
//! IP, HELO and connection pool), and the optional `[unsubscribe]` (public one-click URL) and
//! `[bounces]` (VERP domain) tables. Same two-phase parsing as campaign files: strict serde,
//! then validation with `file:line: key: message`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::bounce::policy::BouncePolicy;
use crate::config::{
    at_least_one, duration, host_name, lane_settings, LaneSettings, Locator, RawDns, RawLane,
};
use crate::error::{Error, Result};
use crate::token::{Keys, TokenSettings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServeFile {
    serve: Spanned<RawServe>,
    priority: Spanned<RawLane>,
    unsubscribe: Option<Spanned<RawUnsubscribe>>,
    bounces: Option<Spanned<RawBounces>>,
    tracking: Option<Spanned<RawUnsubscribe>>,
    dns: Option<RawDns>,
    cluster: Option<Spanned<RawCluster>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    redis: Spanned<String>,
    machine: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnsubscribe {
    url: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBounces {
    domain: Option<Spanned<String>>,
    /// Addresses providers send feedback-loop reports to (registered with them).
    #[serde(default)]
    feedback_addresses: Vec<Spanned<String>>,
    soft_limit: Option<Spanned<u32>>,
    soft_days: Option<Spanned<u32>>,
    keep_days: Option<Spanned<u32>>,
    hard_warn: Option<Spanned<f64>>,
    #[serde(default)]
    feedback_domains: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    state_dir: Option<String>,
    submission: Option<Spanned<String>>,
    users: Option<String>,
    hostname: Option<Spanned<String>>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    allow_networks: Option<Vec<Spanned<String>>>,
    /// Required beside an `allow_networks` entry that covers the whole internet.
    i_know_this_is_an_open_relay: Option<bool>,
    max_message_size: Option<Spanned<u64>>,
    max_recipients: Option<Spanned<u32>>,
    max_connections: Option<Spanned<u32>>,
    max_connections_per_ip: Option<Spanned<u32>>,
    idle_timeout: Option<Spanned<String>>,
    auth_fail_limit: Option<Spanned<u32>>,
    auth_block: Option<Spanned<String>>,
    campaigns_dir: Option<String>,
    blast_threads: Option<Spanned<u32>>,
    shutdown_timeout: Option<Spanned<String>>,
    http: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    bounce_inbox: Option<Spanned<String>>,
}

/// The submission listener's settings, as configured.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Listen address. Default 127.0.0.1:2587.
    pub listen: SocketAddr,
    /// Greeting name and Message-ID domain. Default: the priority lane's HELO.
    pub hostname: String,
    /// STARTTLS certificate chain and key (PEM), both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Networks that may relay without AUTH (CIDR). Default none.
    pub allow_networks: Vec<(IpAddr, u8)>,
    /// Largest message accepted. Default 25 MiB.
    pub max_message_size: usize,
    /// Recipients per message. Default 100.
    pub max_recipients: usize,
    /// Sessions at once. Default 200.
    pub max_connections: usize,
    /// Sessions at once per client IP. Default 20.
    pub max_connections_per_ip: usize,
    /// Idle session timeout. Default 5 min.
    pub idle_timeout: Duration,
    /// Failed AUTHs per client IP before it is blocked. Default 5.
    pub auth_fail_limit: u32,
    /// How long a client IP stays blocked. Default 5 min.
    pub auth_block: Duration,
}

/// A validated `blast.toml`.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The config file.
    pub file: PathBuf,
    /// Where the queue, suppression list, schedule claims and runs live. Default `.blast`
    /// beside the config file.
    pub state_dir: PathBuf,
    /// Users file (`blast user add`). Default `users.txt` beside the config file.
    pub users: PathBuf,
    /// The submission listener.
    pub listener: ListenerConfig,
    /// Campaign files that `serve` schedules, if any.
    pub campaigns_dir: Option<PathBuf>,
    /// Worker threads of the runtime that runs blast campaigns inside `serve`. Default 1, so
    /// a blast can never take both cores from the priority lane on a small machine.
    pub blast_threads: usize,
    /// How long a stop waits for deliveries in progress. Default 30 s.
    pub shutdown_timeout: Duration,
    /// The priority lane.
    pub priority: LaneSettings,
    /// The priority lane's DKIM keys by the From domain they sign for (the table's name;
    /// `d=` is the table's `domain`, default the same).
    pub priority_dkim: Vec<(String, crate::config::dkim::DkimSettings)>,
    /// Listen address of the one-click unsubscribe endpoint (plain HTTP, behind a
    /// TLS-terminating proxy). `None`: no HTTP listener.
    pub http: Option<SocketAddr>,
    /// The token keys (`[serve] secret_file`, relative to the config file). `None`: campaigns
    /// carry no tokens (no List-Unsubscribe link, no VERP).
    pub secret_file: Option<PathBuf>,
    /// `[unsubscribe] url`: public https base of the one-click link, ending in `/`.
    pub unsubscribe_url: Option<String>,
    /// `[bounces] domain`: the VERP domain (A-label).
    pub bounce_domain: Option<String>,
    /// `[serve] bounce_inbox`: listen address of the bounce inbox (SMTP for the VERP domain,
    /// the List-Unsubscribe mailto:, feedback loops, postmaster@ and abuse@). `None`: none.
    pub bounce_inbox: Option<SocketAddr>,
    /// `[bounces] feedback_addresses`: full addresses (lower case) the inbox accepts
    /// feedback-loop reports at.
    pub feedback_addresses: Vec<String>,
    /// `[tracking] url`: public https base of the click redirect, ending in `/`.
    pub click_url: Option<String>,
    /// The rest of `[bounces]`: soft-bounce counting, how long bounces are kept, the lines
    /// rates are judged by.
    pub bounce_policy: BouncePolicy,
    /// `[cluster]`: the fleet's Redis and this machine's name in it. `None`: one machine.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

/// `[cluster] redis` (a `redis://` URL) and `machine` (default: the host name).
fn cluster(
    loc: &Locator,
    c: Option<&RawCluster>,
) -> Result<Option<crate::cluster::ClusterSettings>> {
    let Some(c) = c else { return Ok(None) };
    let url = c.redis.get_ref().trim().to_string();
    if !(url.starts_with("redis://")
        || url.starts_with("valkey://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://"))
    {
        return loc.err(
            c.redis.span(),
            "cluster.redis",
            "a Redis URL, e.g. \"redis://10.0.0.5:6379\" (TLS rediss:// is not supported yet)",
        );
    }
    if let Err(e) = redis::Client::open(url.as_str()) {
        return loc.err(
            c.redis.span(),
            "cluster.redis",
            format!("not a Redis URL: {e}"),
        );
    }
    let machine = match &c.machine {
        Some(m) => {
            let v = m.get_ref().trim().to_string();
            if v.is_empty()
                || v.len() > 100
                || v.chars().any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return loc.err(
                    m.span(),
                    "cluster.machine",
                    "a short name without spaces, unique in the fleet",
                );
            }
            v
        }
        None => crate::cluster::hostname(),
    };
    Ok(Some(crate::cluster::ClusterSettings {
        redis: url,
        machine,
    }))
}

/// `[bounces] soft_limit`, `soft_days`, `keep_days`, `hard_warn`, `feedback_domains`.
fn bounce_policy(loc: &Locator, b: Option<&RawBounces>) -> Result<BouncePolicy> {
    let mut p = BouncePolicy::default();
    let Some(b) = b else { return Ok(p) };
    p.soft.campaigns = at_least_one(loc, &b.soft_limit, "bounces.soft_limit", p.soft.campaigns)?;
    p.soft.min_days = b
        .soft_days
        .as_ref()
        .map_or(p.soft.min_days, |d| *d.get_ref());
    p.keep_days = at_least_one(loc, &b.keep_days, "bounces.keep_days", p.keep_days)?;
    if let Some(w) = &b.hard_warn {
        let v = *w.get_ref();
        if !(v > 0.0 && v <= 1.0) {
            return loc.err(
                w.span(),
                "bounces.hard_warn",
                "a share above 0 and at most 1, e.g. 0.02",
            );
        }
        p.hard_warn = v;
    }
    for d in &b.feedback_domains {
        let v = d.get_ref().trim().to_ascii_lowercase();
        let v = host_name(&v).or_else(|m| loc.err(d.span(), "bounces.feedback_domains", m))?;
        p.feedback_domains.push(v);
    }
    Ok(p)
}

impl ServeSettings {
    /// The path the HTTP endpoint serves tokens under: the path of `[unsubscribe] url`
    /// (`/u/` for `https://news.acme.example/u/`).
    pub fn unsubscribe_path(&self) -> Option<String> {
        self.unsubscribe_url.as_deref().map(url_path)
    }

    /// The path the click redirect answers under (`/c/` for `https://click.acme.example/c/`).
    pub fn click_path(&self) -> Option<String> {
        self.click_url.as_deref().map(url_path)
    }

    /// What campaigns sent under this config issue tokens with: the keys of `secret_file`
    /// (read now; refused when group or others may read it) with the unsubscribe URL and the
    /// bounce domain. `None` without a secret file. Errors name the file, never a secret.
    pub fn token_settings(&self) -> Result<Option<TokenSettings>> {
        let Some(path) = &self.secret_file else {
            return Ok(None);
        };
        let keys = Keys::load(path).map_err(|e| {
            Error::Config(format!("{}: serve.secret_file: {e}", self.file.display()))
        })?;
        Ok(Some(TokenSettings {
            keys,
            unsubscribe_url: self.unsubscribe_url.clone(),
            bounce_domain: self.bounce_domain.clone(),
            click_url: self.click_url.clone(),
        }))
    }
}

/// The path part of a validated https URL (`https://h/u/` → `/u/`).
fn url_path(url: &str) -> String {
    let rest = &url["https://".len()..];
    rest.find('/')
        .map(|i| rest[i..].to_string())
        .unwrap_or_else(|| "/".into())
}

/// Checks `[unsubscribe] url` (and `[tracking] url`): https, a host, a plain path (no query, fragment, user info or
/// characters that would need escaping); returned ending in `/` so a token can be appended.
fn https_base(v: &str) -> std::result::Result<String, String> {
    let rest = v.strip_prefix("https://").ok_or_else(|| {
        format!("{v:?} must be an https:// URL (mail providers only follow https one-click links)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!("{v:?}: no user info in the URL"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(_) => (h, format!(":{p}")),
            Err(_) => return Err(format!("{v:?}: bad port {p:?}")),
        },
        None => (authority, String::new()),
    };
    if host.starts_with('[') {
        return Err(format!(
            "{v:?}: use a host name (links with an address are spam signals)"
        ));
    }
    let host = host_name(host).map_err(|m| format!("{v:?}: {m}"))?;
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"/-._~%!$&'()+,;=".contains(&b);
    if let Some(c) = path.bytes().find(|b| !ok(*b)) {
        return Err(format!(
            "{v:?}: the path may not contain {:?} (no query or fragment; a token is appended)",
            c as char
        ));
    }
    let mut path = if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    };
    if !path.ends_with('/') {
        path.push('/');
    }
    Ok(format!("https://{host}{port}{path}"))
}

/// Reads and validates a server config file.
pub fn load(path: &Path) -> Result<ServeSettings> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "{}: cannot read server config: {e}",
            path.display()
        ))
    })?;
    parse(path, &src)
}

/// Validates server config TOML `src`, read from `path`.
pub fn parse(path: &Path, src: &str) -> Result<ServeSettings> {
    let loc = Locator { path, src };
    let raw: RawServeFile = loc.parse_toml()?;
    let pspan = raw.priority.span();
    let p = raw.priority.into_inner();
    if p.rate.is_some() || !p.per_domain.is_empty() || p.burst.is_some() {
        return loc.err(
            pspan,
            "priority",
            "the priority lane has no rate limits (rate, burst and per_domain belong to a campaign's [lane])",
        );
    }
    let mut priority = lane_settings(
        &loc,
        &p,
        pspan.clone(),
        "priority",
        "localhost".into(),
        raw.dns.as_ref(),
    )?;
    let mut priority_dkim = Vec::new();
    for (domain, t) in &p.dkim {
        let section = format!("priority.dkim.{domain:?}");
        let d = crate::config::host_name(domain).or_else(|m| loc.err(t.span(), &section, m))?;
        let keys = crate::config::dkim::validate(&loc, t.get_ref(), &section, Some(&d))?;
        priority_dkim.push((d, keys));
    }
    if p.connections.is_none() {
        priority.connections = 8;
    }
    if p.retry.is_none() {
        // Transactional mail is time-sensitive: retry sooner than a newsletter would.
        priority.retry = [60, 5 * 60, 15 * 60, 3600, 4 * 3600]
            .map(Duration::from_secs)
            .to_vec();
    }
    if p.max_retry_age.is_none() {
        priority.max_retry_age = Duration::from_secs(86400);
    }

    let sspan = raw.serve.span();
    let s = raw.serve.into_inner();
    let listen = match &s.submission {
        None => SocketAddr::from(([127, 0, 0, 1], 2587)),
        Some(a) => a.get_ref().parse().or_else(|_| {
            loc.err(
                a.span(),
                "serve.submission",
                format!("expected IP:port, got {:?}", a.get_ref()),
            )
        })?,
    };
    let tls = match (&s.tls_cert, &s.tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((loc.resolve(c), loc.resolve(k))),
        _ => {
            return loc.err(
                sspan,
                "serve.tls_cert",
                "set both tls_cert and tls_key, or neither",
            )
        }
    };
    let mut allow_networks = Vec::new();
    for n in s.allow_networks.iter().flatten() {
        let net =
            parse_cidr(n.get_ref()).or_else(|m| loc.err(n.span(), "serve.allow_networks", m))?;
        if is_open_relay(net) && s.i_know_this_is_an_open_relay != Some(true) {
            return loc.err(
                n.span(),
                "serve.allow_networks",
                format!(
                    "{:?} lets anyone on the internet relay through the priority lane without AUTH \
                     (an open relay, listed within hours): name your own networks, or set \
                     i_know_this_is_an_open_relay = true in [serve] if that is really meant",
                    n.get_ref()
                ),
            );
        }
        allow_networks.push(net);
    }
    let count = |v: &Option<Spanned<u32>>, key: &str, default: u32| -> Result<usize> {
        match v {
            None => Ok(default as usize),
            Some(x) if *x.get_ref() == 0 => loc.err(x.span(), key, "must be at least 1"),
            Some(x) => Ok(*x.get_ref() as usize),
        }
    };
    let max_message_size = match &s.max_message_size {
        None => 25 << 20,
        Some(x) if *x.get_ref() < 1024 => {
            return loc.err(x.span(), "serve.max_message_size", "at least 1024 bytes")
        }
        Some(x) => *x.get_ref() as usize,
    };
    let listener = ListenerConfig {
        listen,
        // In the 220 greeting and the EHLO reply: checked like an EHLO name.
        hostname: match &s.hostname {
            Some(h) => {
                host_name(h.get_ref()).or_else(|m| loc.err(h.span(), "serve.hostname", m))?
            }
            None => priority.helo.clone(),
        },
        tls,
        allow_networks,
        max_message_size,
        max_recipients: count(&s.max_recipients, "serve.max_recipients", 100)?,
        max_connections: count(&s.max_connections, "serve.max_connections", 200)?,
        max_connections_per_ip: count(
            &s.max_connections_per_ip,
            "serve.max_connections_per_ip",
            20,
        )?,
        idle_timeout: duration(
            &loc,
            &s.idle_timeout,
            "serve.idle_timeout",
            Duration::from_secs(300),
        )?,
        auth_fail_limit: at_least_one(&loc, &s.auth_fail_limit, "serve.auth_fail_limit", 5)?,
        auth_block: duration(
            &loc,
            &s.auth_block,
            "serve.auth_block",
            Duration::from_secs(300),
        )?,
    };
    let http = match &s.http {
        None => None,
        Some(a) => Some(a.get_ref().parse::<SocketAddr>().or_else(|_| {
            loc.err(
                a.span(),
                "serve.http",
                format!("expected IP:port, got {:?}", a.get_ref()),
            )
        })?),
    };
    let unsubscribe_url = match &raw.unsubscribe {
        None => None,
        Some(u) => {
            let url = &u.get_ref().url;
            Some(https_base(url.get_ref()).or_else(|m| loc.err(url.span(), "unsubscribe.url", m))?)
        }
    };
    let click_url = match &raw.tracking {
        None => None,
        Some(u) => {
            let url = &u.get_ref().url;
            let v =
                https_base(url.get_ref()).or_else(|m| loc.err(url.span(), "tracking.url", m))?;
            if unsubscribe_url
                .as_deref()
                .is_some_and(|u| url_path(u) == url_path(&v))
            {
                return loc.err(
                    url.span(),
                    "tracking.url",
                    "needs a path of its own (not [unsubscribe] url's): both are served by [serve] http",
                );
            }
            Some(v)
        }
    };
    let bounce_domain = match raw
        .bounces
        .as_ref()
        .and_then(|b| b.get_ref().domain.as_ref())
    {
        None => None,
        Some(d) => {
            let v = d.get_ref();
            if v.starts_with('[') {
                return loc.err(
                    d.span(),
                    "bounces.domain",
                    format!("{v:?}: a domain, not an address literal"),
                );
            }
            Some(host_name(v).or_else(|m| loc.err(d.span(), "bounces.domain", m))?)
        }
    };
    let bounce_inbox = match &s.bounce_inbox {
        None => None,
        Some(a) => {
            if bounce_domain.is_none() {
                return loc.err(
                    a.span(),
                    "serve.bounce_inbox",
                    "needs [bounces] domain (the inbox accepts mail for that domain only)",
                );
            }
            Some(a.get_ref().parse::<SocketAddr>().or_else(|_| {
                loc.err(
                    a.span(),
                    "serve.bounce_inbox",
                    format!("expected IP:port, got {:?}", a.get_ref()),
                )
            })?)
        }
    };
    let mut feedback_addresses = Vec::new();
    for a in raw
        .bounces
        .iter()
        .flat_map(|b| b.get_ref().feedback_addresses.iter())
    {
        let v = a.get_ref().trim().to_ascii_lowercase();
        let ok = v.rsplit_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && host_name(d).is_ok() && !v.contains(char::is_whitespace)
        });
        if !ok {
            return loc.err(
                a.span(),
                "bounces.feedback_addresses",
                format!("{v:?} is not an address"),
            );
        }
        feedback_addresses.push(v);
    }
    let bounce_policy = bounce_policy(&loc, raw.bounces.as_ref().map(|b| b.get_ref()))?;
    let cluster = cluster(&loc, raw.cluster.as_ref().map(|c| c.get_ref()))?;
    let secret_file = s.secret_file.as_ref().map(|f| loc.resolve(f.get_ref()));
    if secret_file.is_none() {
        // Links and return paths need tokens, tokens need keys: say so at load, not when the
        // first campaign goes out without them.
        let needs = [
            (
                "unsubscribe.url",
                raw.unsubscribe.as_ref().map(|u| u.span()),
            ),
            (
                "bounces.domain",
                raw.bounces
                    .as_ref()
                    .and_then(|b| b.get_ref().domain.as_ref())
                    .map(|d| d.span()),
            ),
            ("serve.http", s.http.as_ref().map(|h| h.span())),
            ("tracking.url", raw.tracking.as_ref().map(|t| t.span())),
        ];
        if let Some((key, Some(span))) = needs.into_iter().find(|(_, sp)| sp.is_some()) {
            return loc.err(
                span,
                key,
                "needs [serve] secret_file, the token keys (create one: \
                 `umask 077; printf '1 %s\\n' \"$(openssl rand -hex 32)\" > blast.secret`)",
            );
        }
    }
    if let (Some(h), None) = (&s.http, &unsubscribe_url) {
        return loc.err(
            h.span(),
            "serve.http",
            "needs [unsubscribe] url (its path is where the endpoint answers)",
        );
    }
    if let (Some(t), None) = (&raw.tracking, &s.http) {
        return loc.err(
            t.span(),
            "tracking.url",
            "needs [serve] http (the redirect is served by its listener)",
        );
    }
    let state_dir = loc.resolve(s.state_dir.as_deref().unwrap_or(".blast"));
    if priority.accounting.is_none() {
        priority.accounting = Some(state_dir.join("accounting.jsonl"));
    }
    Ok(ServeSettings {
        cluster,
        click_url,
        bounce_policy,
        bounce_inbox,
        feedback_addresses,
        http,
        secret_file,
        unsubscribe_url,
        bounce_domain,
        file: path.to_path_buf(),
        state_dir,
        users: loc.resolve(s.users.as_deref().unwrap_or("users.txt")),
        listener,
        campaigns_dir: s.campaigns_dir.as_deref().map(|d| loc.resolve(d)),
        blast_threads: count(&s.blast_threads, "serve.blast_threads", 1)?,
        shutdown_timeout: duration(
            &loc,
            &s.shutdown_timeout,
            "serve.shutdown_timeout",
            Duration::from_secs(30),
        )?,
        priority,
        priority_dkim,
    })
}

/// Whether a network is so wide it is the internet rather than someone's own network: shorter
/// than 10.0.0.0/8 for IPv4, than fc00::/7 (unique local) for IPv6, the widest private ranges.
fn is_open_relay((ip, len): (IpAddr, u8)) -> bool {
    match ip {
        IpAddr::V4(_) => len < 8,
        IpAddr::V6(_) => len < 7,
    }
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address (a /32 or /128).
pub fn parse_cidr(s: &str) -> std::result::Result<(IpAddr, u8), String> {
    let (ip, len) = match s.trim().split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("expected a network like \"10.0.0.0/8\", got {s:?}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("bad prefix length in {s:?}"))?,
    };
    Ok((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_relay_needs_the_explicit_switch() {
        for open in ["0.0.0.0/0", "::/0", "0.0.0.0/1"] {
            let bad = GOOD.replace("10.0.0.0/8", open);
            let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
            assert!(
                e.contains("b.toml:4: serve.allow_networks:")
                    && e.contains("open relay")
                    && e.contains("i_know_this_is_an_open_relay"),
                "{open}: {e}"
            );
            let meant = bad.replace(
                "allow_networks",
                "i_know_this_is_an_open_relay = true\nallow_networks",
            );
            let s = parse(Path::new("b.toml"), &meant).unwrap();
            assert_eq!(s.listener.allow_networks.len(), 1);
        }
        // Private ranges are anyone's own networks.
        for own in ["10.0.0.0/8", "192.168.0.0/16", "fc00::/7", "127.0.0.1"] {
            parse(Path::new("b.toml"), &GOOD.replace("10.0.0.0/8", own)).unwrap();
        }
    }

    const GOOD: &str = r#"
[serve]
submission = "127.0.0.1:0"
allow_networks = ["10.0.0.0/8"]

[priority]
transport = "smtp://127.0.0.1:2526"
helo = "mail.acme.example"
"#;

    #[test]
    fn defaults() {
        let s = parse(Path::new("/etc/blast/blast.toml"), GOOD).unwrap();
        assert_eq!(s.state_dir, Path::new("/etc/blast/.blast"));
        assert_eq!(s.users, Path::new("/etc/blast/users.txt"));
        assert_eq!(s.priority.connections, 8);
        assert_eq!(s.listener.hostname, "mail.acme.example");
        assert_eq!(
            s.listener.allow_networks,
            vec![("10.0.0.0".parse().unwrap(), 8)]
        );
        assert_eq!(s.blast_threads, 1);
    }

    #[test]
    fn errors_name_line_and_key() {
        let bad = GOOD.replace("127.0.0.1:0", "nowhere");
        let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(e.starts_with("b.toml:3: serve.submission:"), "{e}");
        let bad = format!("{GOOD}rate = \"10/s\"\n");
        let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(
            e.contains("priority: the priority lane has no rate limits"),
            "{e}"
        );
        let bad = GOOD.replace("smtp://127.0.0.1:2526", "smtp://");
        let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(e.contains("priority.transport"), "{e}");
        let bad = GOOD.replace("submission", "auth_fail_limit = 0\nsubmission");
        let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(
            e.contains("b.toml:3: serve.auth_fail_limit: must be at least 1"),
            "{e}"
        );
        let bad = GOOD.replace("10.0.0.0/33", "x");
        let bad = bad.replace("10.0.0.0/8", "10.0.0.0/33");
        let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(e.contains("b.toml:4: serve.allow_networks"), "{e}");
    }

    /// Issue 11.5: strings serve puts on the wire (its 220/EHLO hostname, the priority
    /// lane's EHLO name and AUTH user) are checked at load, with `file:line: key:`.
    #[test]
    fn wire_strings_are_validated_at_load() {
        let bad = GOOD.replace(
            "allow_networks",
            "hostname = \"x\\r\\n250 injected\"\nallow_networks",
        );
        let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(e.starts_with("b.toml:4: serve.hostname:"), "{e}");
        let bad = GOOD.replace("mail.acme.example", "mail\\r\\nQUIT");
        let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(e.starts_with("b.toml:8: priority.helo:"), "{e}");
        let bad = format!("{GOOD}username = \"app\\nRSET\"\npassword_env = \"P\"\n");
        let e = parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(e.starts_with("b.toml:9: priority.username:"), "{e}");
        // An address literal and an IDN are fine (the IDN goes out as its A-label).
        let ok = GOOD.replace("mail.acme.example", "[192.0.2.1]");
        assert_eq!(
            parse(Path::new("b.toml"), &ok).unwrap().priority.helo,
            "[192.0.2.1]"
        );
        let ok = GOOD.replace("mail.acme.example", "mail.acmé.example");
        let s = parse(Path::new("b.toml"), &ok).unwrap();
        assert_eq!(s.listener.hostname, "mail.xn--acm-dma.example");
    }

    /// Issue 12: the token keys, the one-click URL and the VERP domain.
    #[test]
    fn token_tables_are_validated_at_load() {
        let with = |extra_serve: &str, tables: &str| {
            GOOD.replace("[serve]\n", &format!("[serve]\n{extra_serve}")) + tables
        };
        let ok = with(
            "http = \"127.0.0.1:8025\"\nsecret_file = \"blast.secret\"\n",
            "\n[unsubscribe]\nurl = \"https://news.acme.example/u\"\n\n[bounces]\ndomain = \"bounces.acmé.example\"\n",
        );
        let s = parse(Path::new("/etc/blast/blast.toml"), &ok).unwrap();
        assert_eq!(s.http, Some("127.0.0.1:8025".parse().unwrap()));
        assert_eq!(
            s.secret_file.as_deref(),
            Some(Path::new("/etc/blast/blast.secret"))
        );
        assert_eq!(
            s.unsubscribe_url.as_deref(),
            Some("https://news.acme.example/u/")
        );
        assert_eq!(s.unsubscribe_path().as_deref(), Some("/u/"));
        assert_eq!(
            s.bounce_domain.as_deref(),
            Some("bounces.xn--acm-dma.example")
        );
        let root = ok.replace(
            "https://news.acme.example/u",
            "https://news.acme.example:8443",
        );
        let s = parse(Path::new("b.toml"), &root).unwrap();
        assert_eq!(
            s.unsubscribe_url.as_deref(),
            Some("https://news.acme.example:8443/")
        );
        assert_eq!(s.unsubscribe_path().as_deref(), Some("/"));

        let err = |src: &str| parse(Path::new("b.toml"), src).unwrap_err().to_string();
        for bad in [
            "http://news.acme.example/u/",
            "news.acme.example/u/",
            "https:///u/",
            "https://news acme/u/",
            "https://news.acme.example/u/?x=1",
            "https://news.acme.example/u/#top",
            "https://news.acme.example/{u}/",
            "https://me@news.acme.example/u/",
        ] {
            let e = err(&ok.replace("https://news.acme.example/u", bad));
            assert!(e.starts_with("b.toml:13: unsubscribe.url: "), "{bad}: {e}");
        }
        assert!(err(&ok.replace("https://news.acme", "http://news.acme")).contains("https"));
        for bad in [
            "bounces acme",
            "bounces..acme",
            "[192.0.2.1]",
            "-x.example",
            "",
        ] {
            let e = err(&ok.replace("bounces.acmé.example", bad));
            assert!(e.starts_with("b.toml:16: bounces.domain: "), "{bad}: {e}");
        }
        let e = err(&ok.replace("127.0.0.1:8025", "8025"));
        assert!(e.starts_with("b.toml:3: serve.http: "), "{e}");
        // Tokens need keys; the endpoint needs the URL whose path it answers.
        let e = err(&ok.replace("secret_file = \"blast.secret\"\n", ""));
        assert!(e.contains("needs [serve] secret_file"), "{e}");
        let no_url = with("http = \"127.0.0.1:8025\"\nsecret_file = \"s\"\n", "");
        assert!(err(&no_url).contains("serve.http: needs [unsubscribe] url"));
        let e = err(&(ok.clone() + "extra = 1\n"));
        assert!(e.contains("extra"), "{e}");
    }

    /// The key file is read when tokens are built: a world-readable or broken one is an error
    /// that names the file and never shows a secret.
    #[test]
    fn token_settings_refuse_a_readable_or_broken_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("blast.toml");
        let src = GOOD.replace("[serve]\n", "[serve]\nsecret_file = \"k\"\n");
        let s = parse(&cfg, &src).unwrap();
        let secret = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
        let e = s.token_settings().unwrap_err().to_string();
        assert!(e.contains("serve.secret_file") && e.contains("/k"), "{e}");
        crate::token::write_private(&d.path().join("k"), secret).unwrap();
        let t = s.token_settings().unwrap().expect("tokens");
        assert!(t.unsubscribe_url.is_none());
        std::fs::set_permissions(d.path().join("k"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = s.token_settings().unwrap_err().to_string();
        assert!(
            e.contains("readable by others") && e.contains("chmod 600"),
            "{e}"
        );
        assert!(!e.contains("0a0b0c"), "{e}");
        std::fs::write(d.path().join("k"), "1 0a0b0c0d\n").unwrap();
        std::fs::set_permissions(d.path().join("k"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let e = s.token_settings().unwrap_err().to_string();
        assert!(e.contains("k:1: key 1: secret must be at least"), "{e}");
        assert!(!e.contains("0a0b0c0d"), "{e}");
        assert!(parse(&cfg, GOOD)
            .unwrap()
            .token_settings()
            .unwrap()
            .is_none());
    }
}
