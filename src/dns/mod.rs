//! DNS for direct delivery (`transport = "mx"`): MX lookups (RFC 5321 §5.1) through the
//! configured resolver (`[dns] nameservers`, default the system's), cached by TTL with a
//! floor, negative answers cached too, so a run asks once per domain and TTL — never once per
//! message. Lookups run in the background ([`Resolver::poll`]) with a bounded number in
//! flight: a domain waiting on DNS holds up nobody else.
//!
//! What an answer means for delivery lives here too, because the cache decides it: a null MX
//! (RFC 7505) is final; NXDOMAIN is final only when a second lookup at least `backoff` later
//! agrees ([`Cache::put`]); SERVFAIL and timeouts are temporary. And because a broken resolver
//! answering NXDOMAIN for everything must never bounce (and suppress) a whole list,
//! [`Resolver::fault`] reports a run in which too many domains say NXDOMAIN.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod cache;
mod org;

pub use cache::Cache;
pub use org::organisational;

use mail_auth::hickory_resolver as hickory;

use hickory::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory::net::runtime::TokioRuntimeProvider;
use hickory::net::{DnsError, NetError};
use hickory::proto::op::ResponseCode;
use hickory::proto::rr::{Name, RData, RecordType};
use hickory::TokioResolver;

/// Answers are kept at least this long, whatever their TTL (dnsmasq's own records have TTL 0,
/// and a busy run must not ask again for every message).
pub const TTL_FLOOR: Duration = Duration::from_secs(60);
/// …and at most this long, so a changed MX is picked up within a day.
pub const TTL_CAP: Duration = Duration::from_secs(86_400);
/// A run whose answered domains are more than this share NXDOMAIN…
pub const FAULT_NX_SHARE: f64 = 0.05;
/// …once at least this many domains have answered, pauses as a resolver fault.
pub const FAULT_MIN_DOMAINS: u64 = 20;
/// Lookups in flight at once.
const CONCURRENT: usize = 32;
/// One lookup (MX and its hosts' addresses) at most.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// MX hosts used per domain at most (Postfix tries 5 addresses; a list of 50 is an attack).
const MAX_HOSTS: usize = 10;

/// One mail exchanger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Its name (lower case, no trailing dot): the TLS server name and the accounting name.
    pub name: String,
    /// MX preference; lower is tried first.
    pub preference: u16,
    /// Its addresses (AAAA left out when the lane's source IP is IPv4).
    pub addrs: Vec<IpAddr>,
}

/// A domain's mail exchangers, sorted by preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxSet {
    /// Sorted by preference.
    pub hosts: Vec<MxHost>,
    /// No MX record: the domain's own A/AAAA (RFC 5321 §5.1).
    pub implicit: bool,
}

impl MxSet {
    /// A set of hosts without addresses, for tests: (name, preference).
    #[cfg(test)]
    pub(crate) fn of(prefs: &[(&str, u16)]) -> MxSet {
        MxSet {
            hosts: prefs
                .iter()
                .map(|(n, p)| MxHost {
                    name: n.to_string(),
                    preference: *p,
                    addrs: vec![],
                })
                .collect(),
            implicit: false,
        }
    }

    /// The hosts in the order to try them: by preference, at random within one preference
    /// (RFC 5321 §5.1), so equal hosts share the load.
    pub fn ordered(&self) -> Vec<&MxHost> {
        use rand::seq::SliceRandom;
        let mut out: Vec<&MxHost> = self.hosts.iter().collect();
        let mut rng = rand::rng();
        let mut i = 0;
        while i < out.len() {
            let p = out[i].preference;
            let n = out[i..].iter().take_while(|h| h.preference == p).count();
            out[i..i + n].shuffle(&mut rng);
            i += n;
        }
        out
    }

    /// Whether `host` is one of this set's exchangers (a session to it may carry the domain).
    pub fn contains(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.name == host)
    }
}

/// What delivery to a domain can do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Deliver to these hosts.
    Hosts(Arc<MxSet>),
    /// RFC 7505 null MX: the domain accepts no mail (permanent, 5.1.10).
    NullMx,
    /// NXDOMAIN, or neither MX nor address records. `confirmed`: a second lookup at least
    /// `backoff` after the first agreed, so it may bounce; until then it waits.
    NoSuchDomain {
        /// What the resolver said.
        why: String,
        /// Two lookups `backoff` apart agree.
        confirmed: bool,
        /// When an unconfirmed answer may be confirmed.
        retry_at: Instant,
    },
    /// SERVFAIL, timeout, no address for any MX host: try later.
    Temporary(String),
}

/// What one lookup found, before the cache applies confirmation and TTLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Exchangers with addresses.
    Hosts(MxSet),
    /// A null MX.
    NullMx,
    /// NXDOMAIN (or no MX and no address).
    NoSuchDomain(String),
    /// Try later.
    Temporary(String),
}

/// Addresses of one name.
enum Addrs {
    Found(Vec<IpAddr>, Duration),
    NxDomain,
    Temporary(String),
}

#[derive(Default)]
struct Tally {
    answered: HashSet<String>,
    nx: HashSet<String>,
}

/// A hickory resolver asking `nameservers` (UDP, then TCP for long answers), or the
/// system's (`/etc/resolv.conf`) when empty, with hickory's own cache off; and how to name
/// it in messages. The MX resolver and `blast check --dns` both ask through it.
pub fn hickory_resolver(nameservers: &[SocketAddr]) -> Result<(TokioResolver, String), String> {
    let provider = TokioRuntimeProvider::default();
    let (builder, describe) = if nameservers.is_empty() {
        let b = TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system's resolver config: {e}"))?;
        (b, "the system resolver".to_string())
    } else {
        let servers = nameservers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        let cfg = ResolverConfig::from_name_servers(servers);
        let names: Vec<String> = nameservers.iter().map(|a| a.to_string()).collect();
        (
            TokioResolver::builder_with_config(cfg, provider),
            format!("nameservers {}", names.join(", ")),
        )
    };
    let mut builder = builder;
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    let inner = builder
        .build()
        .map_err(|e| format!("cannot start the resolver: {e}"))?;
    Ok((inner, describe))
}

/// MX resolution with a cache, lookups in the background, and the resolver-fault tally.
pub struct Resolver {
    inner: TokioResolver,
    ipv4_only: bool,
    cache: Mutex<Cache>,
    hosts: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
    pending: Mutex<HashSet<String>>,
    tally: Mutex<Tally>,
    limit: tokio::sync::Semaphore,
    notify: tokio::sync::Notify,
    describe: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Resolver {
    /// A resolver asking `nameservers` (UDP, then TCP for long answers), or the system's
    /// (`/etc/resolv.conf`) when empty. `ipv4_only`: the lane's source IP is IPv4, so AAAA
    /// records are not looked up. Hickory's own cache is off: this one decides what is
    /// fresh (a cached NXDOMAIN must not pass for the confirming lookup).
    pub fn new(
        nameservers: &[SocketAddr],
        ipv4_only: bool,
        backoff: Duration,
    ) -> Result<Arc<Resolver>, String> {
        let (inner, describe) = hickory_resolver(nameservers)?;
        Ok(Arc::new(Resolver {
            inner,
            ipv4_only,
            cache: Mutex::new(Cache::new(backoff)),
            hosts: Mutex::default(),
            pending: Mutex::default(),
            tally: Mutex::default(),
            limit: tokio::sync::Semaphore::new(CONCURRENT),
            notify: tokio::sync::Notify::new(),
            describe,
        }))
    }

    /// Which resolver this is (for messages).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The cached answer for `domain`; `None` while it is being looked up (a lookup is
    /// started in the background when none is running). Never waits.
    pub fn poll(self: &Arc<Self>, domain: &str) -> Option<Answer> {
        if let Some(a) = lock(&self.cache).get(domain, Instant::now()) {
            return Some(a);
        }
        if !lock(&self.pending).insert(domain.to_string()) {
            return None;
        }
        let (me, d) = (self.clone(), domain.to_string());
        tokio::spawn(async move {
            let (found, ttl) = match me.limit.acquire().await {
                Ok(_permit) => match tokio::time::timeout(LOOKUP_TIMEOUT, me.lookup(&d)).await {
                    Ok(r) => r,
                    Err(_) => (
                        Found::Temporary(format!("DNS lookup for {d} timed out")),
                        Duration::ZERO,
                    ),
                },
                Err(_) => (Found::Temporary("resolver closed".into()), Duration::ZERO),
            };
            me.record(&d, found, ttl);
            lock(&me.pending).remove(&d);
            me.notify.notify_waiters();
        });
        None
    }

    /// The answer for `domain`, waiting for the lookup if needed (bounded by the lookup
    /// timeout).
    pub async fn resolve(self: &Arc<Self>, domain: &str) -> Answer {
        let deadline = tokio::time::Instant::now() + LOOKUP_TIMEOUT + Duration::from_secs(5);
        loop {
            let woken = self.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(a) = self.poll(domain) {
                return a;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Answer::Temporary(format!("DNS lookup for {domain} timed out"));
            }
        }
    }

    /// A run in which more than 5% of the domains that answered (once 20 have) said NXDOMAIN
    /// is far more likely a broken resolver than a bad list: the reason to pause it.
    pub fn fault(&self) -> Option<String> {
        let t = lock(&self.tally);
        let (n, nx) = (t.answered.len() as u64, t.nx.len() as u64);
        (n >= FAULT_MIN_DOMAINS && nx as f64 > FAULT_NX_SHARE * n as f64).then(|| {
            format!(
                "resolver fault: {nx} of {n} domains answered NXDOMAIN (more than {}%) through \
                 {}; nothing was bounced for it — check [dns] nameservers, then rerun",
                FAULT_NX_SHARE * 100.0,
                self.describe
            )
        })
    }

    fn record(&self, domain: &str, found: Found, ttl: Duration) {
        {
            let mut t = lock(&self.tally);
            match &found {
                Found::Temporary(_) => {}
                Found::NoSuchDomain(_) => {
                    t.answered.insert(domain.to_string());
                    t.nx.insert(domain.to_string());
                }
                _ => {
                    t.answered.insert(domain.to_string());
                    t.nx.remove(domain);
                }
            }
        }
        lock(&self.cache).put(domain, found, ttl, Instant::now());
    }

    async fn lookup(&self, domain: &str) -> (Found, Duration) {
        let Ok(name) = Name::from_ascii(format!("{}.", domain.trim_end_matches('.'))) else {
            return (
                Found::NoSuchDomain(format!("{domain:?} is not a domain name")),
                Duration::ZERO,
            );
        };
        let lookup = match self.inner.lookup(name.clone(), RecordType::MX).await {
            Ok(l) => l,
            Err(e) => {
                return match no_records(&e) {
                    Some(ResponseCode::NXDomain) => (
                        Found::NoSuchDomain(format!("{domain}: NXDOMAIN")),
                        negative_ttl(&e),
                    ),
                    // NODATA: no MX, so the domain's own address is its exchanger.
                    Some(ResponseCode::NoError) => self.implicit(domain, name).await,
                    _ => (
                        Found::Temporary(format!("MX lookup for {domain} failed: {e}")),
                        Duration::ZERO,
                    ),
                };
            }
        };
        let mut ttl = u32::MAX;
        let mut mx: Vec<(u16, Name)> = Vec::new();
        for r in lookup.answers() {
            if let RData::MX(m) = &r.data {
                ttl = ttl.min(r.ttl);
                mx.push((m.preference, m.exchange.clone()));
            }
        }
        if mx.is_empty() {
            return self.implicit(domain, name).await;
        }
        let ttl = Duration::from_secs(u64::from(ttl));
        if mx.len() == 1 && mx[0].1.is_root() {
            return (Found::NullMx, ttl);
        }
        // RFC 7505 §3: a null MX beside real ones is ignored.
        mx.retain(|(_, n)| !n.is_root());
        mx.sort_by_key(|(p, _)| *p);
        mx.truncate(MAX_HOSTS);
        let mut hosts = Vec::new();
        let mut trouble = Vec::new();
        for (preference, exchange) in mx {
            let host = exchange
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            match self.addrs(&host, exchange).await {
                Addrs::Found(addrs, _) if !addrs.is_empty() => hosts.push(MxHost {
                    name: host,
                    preference,
                    addrs,
                }),
                Addrs::Found(..) | Addrs::NxDomain => trouble.push(format!("{host}: no address")),
                Addrs::Temporary(w) => trouble.push(w),
            }
        }
        if hosts.is_empty() {
            return (
                Found::Temporary(format!(
                    "no MX host of {domain} has an address: {}",
                    trouble.join("; ")
                )),
                Duration::ZERO,
            );
        }
        (
            Found::Hosts(MxSet {
                hosts,
                implicit: false,
            }),
            ttl,
        )
    }

    /// RFC 5321 §5.1: no MX record, so the domain itself, by its A/AAAA records.
    async fn implicit(&self, domain: &str, name: Name) -> (Found, Duration) {
        match self.addrs(domain, name).await {
            Addrs::Found(addrs, ttl) if !addrs.is_empty() => (
                Found::Hosts(MxSet {
                    hosts: vec![MxHost {
                        name: domain.to_string(),
                        preference: 0,
                        addrs,
                    }],
                    implicit: true,
                }),
                ttl,
            ),
            Addrs::Found(_, ttl) => (
                Found::NoSuchDomain(format!("{domain}: no MX and no address record")),
                ttl,
            ),
            Addrs::NxDomain => (
                Found::NoSuchDomain(format!("{domain}: NXDOMAIN")),
                Duration::ZERO,
            ),
            Addrs::Temporary(w) => (Found::Temporary(w), Duration::ZERO),
        }
    }

    /// A (and AAAA unless IPv4-only) addresses of `host`, from the host cache when fresh.
    async fn addrs(&self, host: &str, name: Name) -> Addrs {
        let now = Instant::now();
        if let Some((a, exp)) = lock(&self.hosts).get(host) {
            if *exp > now {
                return Addrs::Found(a.clone(), exp.saturating_duration_since(now));
            }
        }
        let mut types = vec![RecordType::A];
        if !self.ipv4_only {
            types.push(RecordType::AAAA);
        }
        let mut addrs = Vec::new();
        let mut ttl = u32::MAX;
        let mut nx = false;
        for t in types {
            match self.inner.lookup(name.clone(), t).await {
                Ok(l) => {
                    for r in l.answers() {
                        let ip = match &r.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(a) => IpAddr::V6(a.0),
                            _ => continue,
                        };
                        ttl = ttl.min(r.ttl);
                        addrs.push(ip);
                    }
                }
                Err(e) => match no_records(&e) {
                    Some(ResponseCode::NXDomain) => nx = true,
                    Some(_) => {}
                    // An AAAA failure must not hide the A records already found.
                    None if !addrs.is_empty() => {}
                    None => return Addrs::Temporary(format!("address lookup for {host}: {e}")),
                },
            }
        }
        if addrs.is_empty() && nx {
            return Addrs::NxDomain;
        }
        let ttl = Duration::from_secs(u64::from(ttl.min(86_400)));
        let exp = now + ttl.clamp(TTL_FLOOR, TTL_CAP);
        let mut h = lock(&self.hosts);
        if h.len() > 100_000 {
            h.retain(|_, (_, e)| *e > now);
        }
        h.insert(host.to_string(), (addrs.clone(), exp));
        Addrs::Found(addrs, ttl)
    }
}

/// The response code of a "no records" answer (NXDOMAIN, or NODATA as `NoError`).
pub(crate) fn no_records(e: &NetError) -> Option<ResponseCode> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => Some(nr.response_code),
        _ => None,
    }
}

fn negative_ttl(e: &NetError) -> Duration {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            Duration::from_secs(u64::from(nr.negative_ttl.unwrap_or(0)))
        }
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(prefs: &[(&str, u16)]) -> MxSet {
        MxSet::of(prefs)
    }

    #[test]
    fn hosts_by_preference_random_within_one() {
        let s = set(&[("a", 10), ("b", 10), ("c", 10), ("d", 20)]);
        let mut firsts = HashSet::new();
        for _ in 0..200 {
            let o: Vec<&str> = s.ordered().iter().map(|h| h.name.as_str()).collect();
            assert_eq!(o.len(), 4);
            assert_eq!(o[3], "d", "the lower preference always comes last: {o:?}");
            firsts.insert(o[0].to_string());
        }
        // 200 shuffles of three: each comes first at some point (chance of not: ~3e-35).
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    fn resolver() -> Arc<Resolver> {
        // Never asked: the tally is fed directly.
        Resolver::new(
            &["127.0.0.1:9".parse().unwrap()],
            true,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    fn feed(r: &Resolver, ok: usize, nx: usize) {
        for i in 0..ok {
            r.record(&format!("ok{i}.test"), Found::NullMx, Duration::ZERO);
        }
        for i in 0..nx {
            r.record(
                &format!("nx{i}.test"),
                Found::NoSuchDomain("NXDOMAIN".into()),
                Duration::ZERO,
            );
        }
    }

    #[tokio::test]
    async fn more_than_five_percent_nxdomain_of_twenty_domains_is_a_fault() {
        let r = resolver();
        feed(&r, 19, 1);
        assert_eq!(r.fault(), None, "1 of 20 is exactly 5%: not more");
        feed(&r, 0, 2);
        let why = r.fault().expect("2 of 21 is a fault");
        assert!(why.contains("2 of 21 domains answered NXDOMAIN"), "{why}");
        assert!(why.contains("127.0.0.1:9"), "names the resolver: {why}");
    }

    #[tokio::test]
    async fn below_the_minimum_nothing_is_a_fault() {
        let r = resolver();
        feed(&r, 10, 9);
        assert_eq!(r.fault(), None);
        // Temporary failures are not answers: they count neither way.
        for i in 0..5 {
            r.record(
                &format!("sf{i}.test"),
                Found::Temporary("SERVFAIL".into()),
                Duration::ZERO,
            );
        }
        assert_eq!(r.fault(), None);
        // A domain that answers after an NXDOMAIN leaves the NXDOMAIN count.
        r.record("nx0.test", Found::NullMx, Duration::ZERO);
        r.record("ok19.test", Found::NullMx, Duration::ZERO);
        assert_eq!(r.fault().map(|_| ()), Some(()), "8 of 20");
    }
}
