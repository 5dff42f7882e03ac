//! Destination state keyed the way receivers count: by *site*. With `transport = "mx"` a
//! domain's site is its sorted MX host set, so every domain hosted on the same MX hosts
//! shares one entry (its transactions in flight, its backoff after a 421, its holds); through
//! a relay, where blast never sees the MX hosts, the site is the domain. A provider rollup
//! (`[lane.providers.NAME]`) adds one more cap across all of its sites.
//!
//! Response rules ([`crate::config::shaping`]) act here: a reply matching a rule suspends or
//! throttles its site (a [`SiteHold`], persisted in the global state by the caller so it
//! survives a restart and binds every campaign on the IP), or ends the recipient's delivery
//! as a sender-side failure. Nothing here ever blocks another site.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::DefaultDirectRateLimiter;

use crate::classify::Class;
use crate::config::shaping::{RuleAction, Shaping, Trigger};
use crate::config::Rate;
use crate::store::now_ms;
use crate::store::suppression::SiteHold;

/// A destination site and its provider rollup, as the dispatcher found it.
#[derive(Debug, Clone)]
pub struct Site {
    /// The sorted MX host names joined by commas, or the domain.
    pub key: Arc<str>,
    /// Index into the shaping's providers.
    pub provider: Option<usize>,
    /// The source IP (index into the lane's pool; 0 without one) it leaves from: receivers
    /// count per (IP, site), so every limit and hold here is kept per pair.
    pub ip: usize,
}

/// A hold on a site in force now.
#[derive(Debug)]
struct Hold {
    until: Instant,
    /// The same end in wall-clock time: a hold read again is recognised (and its rate
    /// limiter kept, not refilled).
    until_ms: u64,
    /// `None`: suspended; else held to this rate.
    limiter: Option<DefaultDirectRateLimiter>,
    /// For a reply: the rule and what it matched.
    why: String,
}

#[derive(Debug, Default)]
struct SiteState {
    inflight: usize,
    /// The dispatcher found it full and waits for it to drain to its low-water mark.
    full: bool,
    backoff_until: Option<Instant>,
    backoff_level: u32,
    hold: Option<Hold>,
    /// Per rule with a count trigger: the recent matches.
    hits: HashMap<usize, VecDeque<Instant>>,
}

struct ProviderLive {
    inflight: AtomicUsize,
    /// Like [`SiteState::full`].
    full: std::sync::atomic::AtomicBool,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// What a response rule did to one reply.
#[derive(Debug)]
pub struct RuleEffect {
    /// The recipient's outcome, changed when the rule says so.
    pub class: Class,
    /// The reply, with the rule's note.
    pub reply: String,
    /// A new hold to make durable.
    pub hold: Option<SiteHold>,
}

/// Why a site cannot take a transaction now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Its in-flight cap (or its provider's) is reached: it can go when one of its
    /// transactions ends ([`Sites::freed`] says when), not after a fixed time.
    Full,
    /// A backoff, a hold or a rate: this long.
    For(Duration),
}

impl Wait {
    /// How long to sleep at most before asking again.
    pub fn at_most(self) -> Duration {
        match self {
            // A fallback only: the dispatcher also wakes on `freed`.
            Wait::Full => Duration::from_millis(50),
            Wait::For(d) => d,
        }
    }
}

/// Every site's state for one lane run.
pub struct Sites {
    shaping: Arc<Shaping>,
    /// The source IPs the holds belong to, by pool index (`["default"]` without one).
    ips: Vec<String>,
    per_site_cap: usize,
    /// Transactions in flight per connection the caps allow (1 through a relay, where the
    /// dispatcher's count is the connection cap; more with direct delivery, whose workers
    /// enforce connections as sessions and need recipients in flight behind each session).
    depth: usize,
    table: Mutex<HashMap<(usize, Arc<str>), SiteState>>,
    providers: Vec<ProviderLive>,
    /// Domain → (identity of the DNS answer it came from, its site): the key is built once
    /// per answer, not per message.
    of_domain: Mutex<HashMap<String, (usize, Site)>>,
    /// Site keys, interned.
    keys: Mutex<HashMap<String, Arc<str>>>,
    /// Lease keys per (IP, site), in a fleet.
    lease_keys: Mutex<HashMap<PairKey, Arc<str>>>,
    clock: DefaultClock,
    /// Signalled when a transaction ends: a dispatcher waiting on a full site goes at once
    /// instead of polling (a poll of a few ms capped a busy site at its cap per poll).
    freed: tokio::sync::Notify,
    /// In a fleet (`[cluster]`): the per-site cap is the fleet's, held as leases in Redis.
    leases: std::sync::OnceLock<Arc<crate::cluster::leases::Leases>>,
}

/// A (pool IP index, site key) pair.
type PairKey = (usize, Arc<str>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn limiter(rate: Rate) -> DefaultDirectRateLimiter {
    governor::RateLimiter::direct(super::throttle::quota(rate, 1))
}

/// In flight at which a full site (or provider) wakes the dispatcher again: a quarter below
/// its cap, so a busy site costs the dispatcher one round per quarter of its cap rather than
/// one per finished transaction (a round looks at every buffered domain).
fn low_water(cap: usize) -> usize {
    cap - cap.div_ceil(4)
}

/// The site key of an MX host set: its names, lower case, sorted, joined by commas.
pub fn site_key<'a>(hosts: impl IntoIterator<Item = &'a str>) -> String {
    let mut v: Vec<String> = hosts
        .into_iter()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    v.sort();
    v.dedup();
    v.join(",")
}

/// The key holds are stored under for an IP: `"default"` when the lane binds none.
pub fn ip_key(ip: Option<std::net::IpAddr>) -> String {
    ip.map_or_else(|| "default".to_string(), |i| i.to_string())
}

impl Sites {
    /// A lane's sites: the shaping, the IPs its holds are keyed by (the pool's, in order),
    /// the per-(IP, site) connection cap, and the transactions in flight allowed per
    /// connection of a cap.
    pub fn new(
        shaping: Arc<Shaping>,
        ips: Vec<String>,
        per_site_cap: usize,
        depth: usize,
    ) -> Sites {
        let providers = shaping
            .providers
            .iter()
            .map(|p| ProviderLive {
                inflight: AtomicUsize::new(0),
                full: Default::default(),
                limiter: p.rate.map(limiter),
            })
            .collect();
        Sites {
            shaping,
            ips,
            per_site_cap,
            depth: depth.max(1),
            table: Mutex::default(),
            providers,
            of_domain: Mutex::default(),
            keys: Mutex::default(),
            lease_keys: Mutex::default(),
            clock: DefaultClock::default(),
            freed: tokio::sync::Notify::new(),
            leases: std::sync::OnceLock::new(),
        }
    }

    /// Makes the per-site cap the fleet's: a transaction opens only under a lease.
    pub fn share_caps(&self, leases: Arc<crate::cluster::leases::Leases>) {
        let _ = self.leases.set(leases);
    }

    /// The fleet's lease key of a site as seen from its IP, `IP|SITE` (interned): receivers
    /// count connections per (IP, site), so each IP of a pool holds leases of its own.
    fn lease_key(&self, site: &Site) -> Arc<str> {
        let mut m = lock(&self.lease_keys);
        if let Some(k) = m.get(&(site.ip, site.key.clone())) {
            return k.clone();
        }
        let k: Arc<str> = Arc::from(format!("{}|{}", self.ip(site.ip), site.key));
        m.insert((site.ip, site.key.clone()), k.clone());
        k
    }

    /// The IP key of the holds of pool member `ip`.
    pub fn ip(&self, ip: usize) -> &str {
        self.ips.get(ip).map_or("default", String::as_str)
    }

    /// The site of `domain` when its MX hosts are not known (through a relay): the domain.
    pub fn site_of_domain(&self, domain: &str) -> Site {
        self.site_of(domain, 0, Vec::new)
    }

    /// The site of `domain` from its MX host names; `answer` tells one DNS answer from the
    /// next, so `hosts` is called only when the answer changed.
    pub fn site_of(
        &self,
        domain: &str,
        answer: usize,
        hosts: impl FnOnce() -> Vec<String>,
    ) -> Site {
        if let Some((seen, s)) = lock(&self.of_domain).get(domain) {
            if *seen == answer {
                return s.clone();
            }
        }
        let h = hosts();
        let (key, provider) = if h.is_empty() {
            (domain.to_string(), self.shaping.provider_of(domain, []))
        } else {
            (
                site_key(h.iter().map(String::as_str)),
                self.shaping
                    .provider_of(domain, h.iter().map(String::as_str)),
            )
        };
        // Interned: every domain of a site shares one key, so a site is told by its pointer.
        let key = lock(&self.keys)
            .entry(key)
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone();
        let site = Site {
            key,
            provider,
            ip: 0,
        };
        lock(&self.of_domain).insert(domain.to_string(), (answer, site.clone()));
        site
    }

    /// Whether the site may take one more transaction now; `Err` says how long to wait. Takes
    /// the rate tokens of a throttle hold and of the provider when it says yes.
    pub fn admit(&self, site: &Site, now: Instant) -> Result<(), Wait> {
        let mut t = lock(&self.table);
        let s = t.entry((site.ip, site.key.clone())).or_default();
        if let Some(until) = s.backoff_until {
            if until > now {
                return Err(Wait::For(until - now));
            }
            s.backoff_until = None;
        }
        if s.hold.as_ref().is_some_and(|h| h.until <= now) {
            s.hold = None;
        }
        if let Some(h) = &s.hold {
            if h.limiter.is_none() {
                return Err(Wait::For((h.until - now).min(Duration::from_secs(1))));
            }
        }
        if s.inflight >= self.per_site_cap.saturating_mul(self.depth) {
            s.full = true;
            return Err(Wait::Full);
        }
        if let Some(l) = self.leases.get() {
            l.admit(&self.lease_key(site)).map_err(Wait::For)?;
        }
        if let Some(p) = site.provider {
            let cap = self.shaping.providers[p]
                .connections
                .map_or(usize::MAX, |c| c.saturating_mul(self.depth));
            if self.providers[p].inflight.load(Ordering::Relaxed) >= cap {
                self.providers[p].full.store(true, Ordering::Relaxed);
                return Err(Wait::Full);
            }
        }
        if let Some(l) = s.hold.as_ref().and_then(|h| h.limiter.as_ref()) {
            l.check()
                .map_err(|nu| Wait::For(nu.wait_time_from(self.clock.now())))?;
        }
        if let Some(l) = site
            .provider
            .and_then(|p| self.providers[p].limiter.as_ref())
        {
            l.check()
                .map_err(|nu| Wait::For(nu.wait_time_from(self.clock.now())))?;
        }
        Ok(())
    }

    /// The site's suspension in force now: its end (ms since the epoch) and why.
    pub fn suspended(&self, site: &Site) -> Option<(u64, String)> {
        let now = Instant::now();
        let t = lock(&self.table);
        let h = t.get(&(site.ip, site.key.clone()))?.hold.as_ref()?;
        (h.limiter.is_none() && h.until > now).then(|| (h.until_ms, h.why.clone()))
    }

    /// Why the site's recipients must not go now although they were dispatched: it backs
    /// off after a 421, or a rule suspended it. `None`: they may go.
    pub fn held_back(&self, site: &Site) -> Option<String> {
        let now = Instant::now();
        let t = lock(&self.table);
        let s = t.get(&(site.ip, site.key.clone()))?;
        if s.backoff_until.is_some_and(|u| u > now) {
            return Some(format!("{} backing off after a 421", site.key));
        }
        let h = s.hold.as_ref()?;
        (h.limiter.is_none() && h.until > now).then(|| format!("held: {}", h.why))
    }

    /// A transaction to the site was dispatched.
    pub fn start(&self, site: &Site) {
        lock(&self.table)
            .entry((site.ip, site.key.clone()))
            .or_default()
            .inflight += 1;
        if let Some(l) = self.leases.get() {
            l.start(&self.lease_key(site));
        }
        if let Some(p) = site.provider {
            self.providers[p].inflight.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Resolves once a transaction has ended since the last wake-up (a permit is kept when
    /// no one waits, so a transaction ending just before the wait is not missed).
    pub async fn freed(&self) {
        self.freed.notified().await
    }

    /// A transaction to the site ended.
    pub fn finished(&self, site: &Site) {
        let mut wake = false;
        if let Some(s) = lock(&self.table).get_mut(&(site.ip, site.key.clone())) {
            s.inflight = s.inflight.saturating_sub(1);
            if s.full && s.inflight <= low_water(self.per_site_cap.saturating_mul(self.depth)) {
                s.full = false;
                wake = true;
            }
        }
        if let Some(l) = self.leases.get() {
            l.finished(&self.lease_key(site));
        }
        if let Some(p) = site.provider {
            let live = &self.providers[p];
            let left = live
                .inflight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .map_or(0, |n| n - 1);
            let cap = self.shaping.providers[p]
                .connections
                .map_or(usize::MAX, |c| c.saturating_mul(self.depth));
            if left <= low_water(cap) && live.full.swap(false, Ordering::Relaxed) {
                wake = true;
            }
        }
        if wake || self.leases.get().is_some() {
            self.freed.notify_one();
        }
    }

    /// The site signalled throttling to pool member `ip`: back off that pair `base × 2^level`,
    /// capped at 30 min, and never before a suspension in force ends (the site's mail waits
    /// for its own IP: moving it to another would be snowshoeing). Returns when the pair may
    /// be tried again.
    pub fn throttled(&self, ip: usize, site: &str, base: Duration) -> Instant {
        let mut t = lock(&self.table);
        let s = t.entry((ip, Arc::from(site))).or_default();
        let d = super::retry::doubling(base, s.backoff_level, Duration::from_secs(1800));
        s.backoff_level += 1;
        let mut until = Instant::now() + d;
        if let Some(h) = s.hold.as_ref().filter(|h| h.limiter.is_none()) {
            until = until.max(h.until);
        }
        s.backoff_until = Some(until);
        until
    }

    /// A delivery from pool member `ip` to the site succeeded: the pair is healthy again.
    pub fn healthy(&self, ip: usize, site: &str) {
        if let Some(s) = lock(&self.table).get_mut(&(ip, Arc::from(site))) {
            s.backoff_level = 0;
        }
    }

    /// Messages one connection to the site may carry: the lane's limit, lowered by its
    /// provider's.
    pub fn messages_per_connection(&self, site: &Site, lane: u32) -> u32 {
        site.provider
            .and_then(|p| self.shaping.providers[p].messages_per_connection)
            .map_or(lane, |m| m.min(lane))
    }

    /// Puts a hold read from the global state back in force (a restart, another campaign).
    pub fn restore(&self, h: &SiteHold) {
        let now_wall = now_ms();
        let Some(ip) = self.ips.iter().position(|i| *i == h.ip) else {
            return;
        };
        if h.until_ms <= now_wall {
            return;
        }
        let left = Duration::from_millis(h.until_ms - now_wall);
        let limiter = match h.rate.as_deref().map(Rate::parse) {
            Some(Ok(r)) => Some(limiter(r)),
            _ => None,
        };
        let mut t = lock(&self.table);
        let s = t.entry((ip, Arc::from(h.site.as_str()))).or_default();
        if s.hold
            .as_ref()
            .is_some_and(|old| old.until_ms == h.until_ms)
        {
            return;
        }
        s.hold = Some(Hold {
            until_ms: h.until_ms,
            until: Instant::now() + left,
            limiter,
            why: format!("{} ({})", h.rule, h.reply),
        });
    }

    /// The holds in force now, one line each for the progress display, by site.
    pub fn hold_lines(&self) -> Vec<String> {
        let now = Instant::now();
        let pooled = self.ips.len() > 1;
        let mut v: Vec<String> = lock(&self.table)
            .iter()
            .filter_map(|((ip, k), s)| {
                let h = s.hold.as_ref().filter(|h| h.until > now)?;
                let what = if h.limiter.is_some() {
                    "throttled"
                } else {
                    "suspended"
                };
                let from = if pooled {
                    format!(" from {}", self.ip(*ip))
                } else {
                    String::new()
                };
                Some(format!(
                    "{k}{from} {what} until {} UTC: {}",
                    crate::report::summary::utc_time(h.until_ms),
                    h.why
                ))
            })
            .collect();
        v.sort();
        v
    }

    /// Runs the response rules over a reply from `site`. `None`: no rule matched, or its
    /// trigger has not fired yet.
    pub fn apply_rules(
        &self,
        site: &Site,
        class: Class,
        reply: &str,
        campaign: &str,
    ) -> Option<RuleEffect> {
        let (idx, rule) = self.shaping.rules.iter().enumerate().find(|(_, r)| {
            r.regex.is_match(reply)
                && r.provider.as_ref().is_none_or(|p| {
                    site.provider
                        .is_some_and(|i| &self.shaping.providers[i].name == p)
                })
        })?;
        let now = Instant::now();
        let mut t = lock(&self.table);
        let s = t.entry((site.ip, site.key.clone())).or_default();
        if let Trigger::Count(n, per) = rule.trigger {
            let q = s.hits.entry(idx).or_default();
            q.push_back(now);
            while q.front().is_some_and(|at| now.duration_since(*at) > per) {
                q.pop_front();
            }
            if q.len() < n as usize {
                return None;
            }
            q.clear();
        }
        let note = |what: String| format!("{reply} [rule {}: {what}]", rule.name);
        let (d, rate) = match rule.action {
            RuleAction::Bounce => {
                return Some(RuleEffect {
                    class: Class::OtherPermanent,
                    reply: note("ended for this campaign, the address stays on the list".into()),
                    hold: None,
                })
            }
            RuleAction::Suspend(d) => (d, None),
            RuleAction::Throttle(r, d) => (d, Some(r)),
        };
        let until_ms = now_ms() + d.as_millis() as u64;
        let until_text = format!("{} UTC", crate::report::summary::utc_time(until_ms));
        let what = match rate {
            None => format!("{} suspended until {until_text}", site.key),
            Some(r) => format!("{} held to {r} until {until_text}", site.key),
        };
        s.hold = Some(Hold {
            until_ms,
            until: now + d,
            limiter: rate.map(limiter),
            why: format!("{} ({reply})", rule.name),
        });
        // A suspended site's recipient waits for the end of the suspension (the writer's
        // throttling path); a throttled one keeps its own class and retry.
        let class = if rate.is_none() {
            Class::Throttling
        } else {
            class
        };
        Some(RuleEffect {
            class,
            reply: note(what),
            hold: Some(SiteHold {
                ip: self.ip(site.ip).to_string(),
                site: site.key.to_string(),
                rule: rule.name.clone(),
                rate: rate.map(|r| r.to_string()),
                since_ms: now_ms(),
                until_ms,
                reply: reply.to_string(),
                campaign: campaign.to_string(),
            }),
        })
    }
}

/// How often a running lane reads the holds other campaigns made on its IP.
const HOLDS_EVERY: Duration = Duration::from_secs(5);

/// Puts the holds of the global state in force: once before the lane dispatches anything,
/// then every few seconds, so a hold another campaign (or a restart) made binds this run too.
/// A store that cannot be read only costs that refresh.
pub(crate) async fn load_holds(ctx: &super::LaneCtx) {
    let g = ctx.global.clone();
    match tokio::task::spawn_blocking(move || g.holds()).await {
        Ok(Ok(holds)) => {
            for h in &holds {
                ctx.sites.restore(h);
            }
            publish_holds(ctx);
        }
        Ok(Err(e)) => eprintln!("blast: warning: cannot read the site holds: {e}"),
        Err(_) => {}
    }
}

/// Shows the holds in force on the progress display.
pub(crate) fn publish_holds(ctx: &super::LaneCtx) {
    ctx.stats.live.set_holds(ctx.sites.hold_lines());
}

/// [`load_holds`] every [`HOLDS_EVERY`] until the lane stops.
pub(crate) async fn watch_holds(ctx: Arc<super::LaneCtx>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HOLDS_EVERY) => {}
            _ = ctx.shutdown.wait() => return,
        }
        load_holds(&ctx).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::shaping::{Provider, ResponseRule};

    fn shaping() -> Arc<Shaping> {
        Arc::new(Shaping {
            providers: vec![Provider {
                name: "big".into(),
                mx_suffix: vec![".big.test".into()],
                domains: vec![],
                connections: Some(3),
                messages_per_connection: Some(7),
                rate: None,
            }],
            rules: vec![
                ResponseRule {
                    name: "stop".into(),
                    regex: regex::Regex::new(r"\[TSS04\]").unwrap(),
                    action: RuleAction::Suspend(Duration::from_secs(3600)),
                    trigger: Trigger::Immediate,
                    provider: None,
                },
                ResponseRule {
                    name: "slow".into(),
                    regex: regex::Regex::new("slow down").unwrap(),
                    action: RuleAction::Throttle(
                        Rate::parse("1/h").unwrap(),
                        Duration::from_secs(60),
                    ),
                    trigger: Trigger::Count(2, Duration::from_secs(60)),
                    provider: None,
                },
            ],
        })
    }

    #[test]
    fn domains_on_the_same_mx_hosts_are_one_site_and_a_provider_caps_all_its_sites() {
        let s = Sites::new(shaping(), vec!["default".into()], 2, 1);
        let hosts = |v: &[&str]| v.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let a = s.site_of("a.test", 1, || hosts(&["MX2.big.test.", "mx1.big.test"]));
        let b = s.site_of("b.test", 2, || hosts(&["mx1.big.test", "mx2.big.test"]));
        assert_eq!(a.key, b.key);
        assert_eq!(&*a.key, "mx1.big.test,mx2.big.test");
        assert_eq!(a.provider, Some(0));
        let now = Instant::now();
        s.start(&a);
        s.start(&b);
        assert!(
            s.admit(&a, now).is_err(),
            "the site's cap of 2 counts both domains"
        );
        let c = s.site_of("c.test", 3, || hosts(&["mx9.big.test"]));
        assert!(s.admit(&c, now).is_ok());
        s.start(&c);
        let d = s.site_of("d.test", 4, || hosts(&["mx8.big.test"]));
        assert!(
            s.admit(&d, now).is_err(),
            "the provider's cap of 3 spans its sites"
        );
        s.finished(&a);
        assert!(s.admit(&d, now).is_ok());
        assert_eq!(s.messages_per_connection(&d, 1000), 7);
        let other = s.site_of_domain("o.test");
        assert_eq!((&*other.key, other.provider), ("o.test", None));
    }

    #[test]
    fn a_rule_suspends_only_its_site_and_a_count_trigger_waits_for_its_count() {
        let s = Sites::new(shaping(), vec!["203.0.113.5".into()], 4, 1);
        let y = s.site_of_domain("y.test");
        let z = s.site_of_domain("z.test");
        let e = s
            .apply_rules(&y, Class::Throttling, "421 4.7.0 [TSS04] go away", "c1")
            .unwrap();
        assert_eq!(e.class, Class::Throttling);
        let h = e.hold.unwrap();
        assert_eq!(
            (h.ip.as_str(), h.site.as_str(), h.rule.as_str()),
            ("203.0.113.5", "y.test", "stop")
        );
        assert!(s.admit(&y, Instant::now()).is_err());
        assert!(s.admit(&z, Instant::now()).is_ok(), "other sites go on");
        assert!(
            s.throttled(0, "y.test", Duration::from_secs(1))
                >= Instant::now() + Duration::from_secs(3500)
        );
        assert!(s
            .apply_rules(&z, Class::Transient, "451 slow down", "c1")
            .is_none());
        let e = s
            .apply_rules(&z, Class::Transient, "451 slow down", "c1")
            .unwrap();
        assert_eq!(e.class, Class::Transient);
        let zh = e.hold.unwrap();
        assert_eq!(zh.rate.as_deref(), Some("1/h"));
        assert!(
            s.admit(&z, Instant::now()).is_ok(),
            "the first token of the held rate"
        );
        assert!(s.admit(&z, Instant::now()).is_err(), "then 1/h");
        s.restore(&zh);
        assert!(
            s.admit(&z, Instant::now()).is_err(),
            "read again, the hold keeps its limiter"
        );

        // Restored in a new run from the global state.
        let again = Sites::new(shaping(), vec!["203.0.113.5".into()], 4, 1);
        again.restore(&h);
        assert!(again.admit(&y, Instant::now()).is_err());
        let other_ip = Sites::new(shaping(), vec!["203.0.113.6".into()], 4, 1);
        other_ip.restore(&h);
        assert!(
            other_ip.admit(&y, Instant::now()).is_ok(),
            "a hold binds its own IP only"
        );
    }
}
