//! Connection caps per site across the fleet, as expiring leases, and the fleet's heartbeat.
//!
//! A site's leases are one sorted set, `{blast:conn:IP|SITE}`, of members scored by their
//! expiry on Redis's clock. A machine takes a lease before it opens one more transaction to
//! the site than it holds leases for, renews what it holds every [`TTL`]/3 and gives back
//! what it no longer uses. A machine that dies (or loses Redis) stops renewing, so its
//! leases expire after [`TTL`] and the others may use them: a dead machine never keeps a
//! site's connections for good. While Redis is down a machine keeps using the leases it
//! holds until they would have expired, then stops opening transactions to the site.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Cluster;

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(6);

/// `KEYS[1]` the site's set; `ARGV` member, cap, ttl ms. 1 if the lease was taken.
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"#;

/// `KEYS[1]` the site's set; `ARGV` ttl ms, then members. Renews those still held and
/// returns how many were (a lease that expired meanwhile is lost: another machine may hold
/// it now).
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local kept = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) > now then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    kept = kept + 1
  else
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return kept
"#;

/// `KEYS[1]` the fleet's set; `ARGV` member, ttl ms. Returns the machines alive now.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZCARD', KEYS[1])
"#;

#[derive(Default)]
struct SiteLeases {
    /// Members held, newest last.
    held: Vec<String>,
    in_use: usize,
    /// Most in use since the last renewal: leases above it are given back.
    peak: usize,
    acquiring: bool,
    not_before: Option<Instant>,
}

/// This machine's leases, and the count of machines sending (the rates' share).
pub struct Leases {
    cluster: Cluster,
    cap: usize,
    /// Unique per process: two sends on one machine hold leases of their own.
    me: String,
    next: AtomicU64,
    sites: Mutex<HashMap<Arc<str>, SiteLeases>>,
    /// Last renewal that Redis answered: leases are trusted until it is [`TTL`] old.
    renewed: Mutex<Instant>,
    /// Machines alive in the fleet (at least 1).
    pub machines: Arc<AtomicU64>,
    renewing: std::sync::atomic::AtomicBool,
}

/// The scripts, hashed once (`EVALSHA` names them by their SHA-1).
static ACQUIRE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(ACQUIRE));
static RENEW_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(RENEW));
static HEARTBEAT_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(HEARTBEAT));

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Leases {
    /// Leases of `cap` connections per (IP, site) through `cluster`.
    pub fn new(cluster: Cluster, cap: usize) -> Arc<Leases> {
        let me = format!("{}:{}", cluster.machine(), std::process::id());
        Arc::new(Leases {
            cluster,
            cap,
            me,
            next: AtomicU64::new(0),
            sites: Mutex::default(),
            renewed: Mutex::new(Instant::now()),
            machines: Arc::new(AtomicU64::new(1)),
            renewing: Default::default(),
        })
    }

    /// `site` is the lane's `IP|SITE` (each IP of a pool has its own leases).
    fn key(&self, site: &str) -> String {
        format!("{{blast:conn:{site}}}")
    }

    /// Whether one more transaction to `site` may open now; `Err`: wait that long (a lease
    /// is being taken meanwhile).
    pub fn admit(self: &Arc<Self>, site: &Arc<str>) -> Result<(), Duration> {
        let fresh = lock(&self.renewed).elapsed() < TTL - Duration::from_secs(1);
        let now = Instant::now();
        let mut m = lock(&self.sites);
        let s = m.entry(site.clone()).or_default();
        if fresh && s.in_use < s.held.len() {
            return Ok(());
        }
        if !fresh {
            // Redis was away: renew now (not at the next tick), so sending resumes as soon
            // as the leases are confirmed again.
            if !self.renewing.swap(true, Ordering::Relaxed) {
                let me = self.clone();
                tokio::spawn(async move {
                    me.renew_once().await;
                    me.renewing.store(false, Ordering::Relaxed);
                });
            }
            return Err(Duration::from_millis(20));
        }
        if s.held.len() >= self.cap {
            return Err(Duration::from_millis(5));
        }
        if s.not_before.is_some_and(|n| n > now) {
            return Err(s.not_before.map_or(Duration::ZERO, |n| n - now));
        }
        if !s.acquiring {
            s.acquiring = true;
            let (me, site) = (self.clone(), site.clone());
            tokio::spawn(async move { me.acquire(site).await });
        }
        Err(Duration::from_millis(1))
    }

    async fn acquire(self: Arc<Self>, site: Arc<str>) {
        let member = format!("{}:{}", self.me, self.next.fetch_add(1, Ordering::Relaxed));
        let (key, m2, cap, ttl) = (
            self.key(&site),
            member.clone(),
            self.cap,
            TTL.as_millis() as u64,
        );
        let r: Result<i64, String> = self
            .cluster
            .call(|mut c| async move {
                ACQUIRE_SCRIPT
                    .key(key)
                    .arg(m2)
                    .arg(cap)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        let mut m = lock(&self.sites);
        let s = m.entry(site).or_default();
        s.acquiring = false;
        match r {
            Ok(1) => s.held.push(member),
            // The fleet holds them all: another machine's transaction must end first.
            Ok(_) => s.not_before = Some(Instant::now() + Duration::from_millis(20)),
            Err(_) => s.not_before = Some(Instant::now() + Duration::from_millis(250)),
        }
    }

    /// A transaction to `site` opened (under a lease [`Leases::admit`] allowed).
    pub fn start(&self, site: &Arc<str>) {
        let mut m = lock(&self.sites);
        let s = m.entry(site.clone()).or_default();
        s.in_use += 1;
        s.peak = s.peak.max(s.in_use);
    }

    /// A transaction to `site` ended.
    pub fn finished(&self, site: &str) {
        if let Some(s) = lock(&self.sites).get_mut(site) {
            s.in_use = s.in_use.saturating_sub(1);
        }
    }

    /// Renews the leases in use, gives back the others, and beats the fleet's heart; every
    /// [`TTL`]/3 until `stop`.
    pub async fn keep(self: Arc<Self>, stop: Arc<crate::shutdown::Shutdown>) {
        loop {
            self.renew_once().await;
            tokio::select! {
                _ = tokio::time::sleep(TTL / 3) => {}
                _ = stop.wait() => break,
            }
        }
        self.release_all().await;
    }

    /// One renewal round (also the first heartbeat, before sending starts).
    pub async fn renew_once(&self) {
        let (member, ttl) = (self.me.clone(), TTL.as_millis() as u64);
        if let Ok(n) = self
            .cluster
            .call(|mut c| async move {
                HEARTBEAT_SCRIPT
                    .key("{blast:fleet}:machines")
                    .arg(member)
                    .arg(ttl)
                    .invoke_async::<u64>(&mut c)
                    .await
            })
            .await
        {
            self.machines.store(n.max(1), Ordering::Relaxed);
        }
        let work: Vec<(Arc<str>, Vec<String>, Vec<String>)> = {
            let mut m = lock(&self.sites);
            m.retain(|_, s| !s.held.is_empty() || s.in_use > 0 || s.acquiring);
            m.iter_mut()
                .map(|(k, s)| {
                    let keep = s.peak.max(s.in_use).min(s.held.len());
                    let give_back = s.held.split_off(keep);
                    s.peak = s.in_use;
                    (k.clone(), s.held.clone(), give_back)
                })
                .collect()
        };
        let mut all_ok = true;
        for (site, keep, give_back) in work {
            let key = self.key(&site);
            if !give_back.is_empty() {
                let k = key.clone();
                let _ = self
                    .cluster
                    .call(|mut c| async move {
                        redis::cmd("ZREM")
                            .arg(k)
                            .arg(give_back)
                            .query_async::<i64>(&mut c)
                            .await
                    })
                    .await;
            }
            if keep.is_empty() {
                continue;
            }
            let n = keep.len();
            let r: Result<usize, String> = self
                .cluster
                .call(|mut c| async move {
                    RENEW_SCRIPT
                        .key(key)
                        .arg(ttl)
                        .arg(keep)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            match r {
                Ok(kept) if kept == n => {}
                Ok(_) => {
                    // Some expired (Redis was away longer than TTL): start again from none.
                    if let Some(s) = lock(&self.sites).get_mut(&site) {
                        s.held.clear();
                    }
                }
                Err(_) => all_ok = false,
            }
        }
        if all_ok && self.cluster.down().is_none() {
            *lock(&self.renewed) = Instant::now();
        }
    }

    async fn release_all(&self) {
        let held: Vec<(String, Vec<String>)> = lock(&self.sites)
            .drain()
            .filter(|(_, s)| !s.held.is_empty())
            .map(|(k, s)| (self.key(&k), s.held))
            .collect();
        for (key, members) in held {
            let _ = self
                .cluster
                .call(|mut c| async move {
                    redis::cmd("ZREM")
                        .arg(key)
                        .arg(members)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
        }
        let me = self.me.clone();
        let _ = self
            .cluster
            .call(|mut c| async move {
                redis::cmd("ZREM")
                    .arg("{blast:fleet}:machines")
                    .arg(me)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
    }
}
