//! A fleet of blast machines sharing state through Redis (`[cluster] redis` in blast.toml):
//! the global and per-site rates ([`gcra`]), connection caps per site as expiring leases
//! ([`leases`]) and the suppression list ([`suppression_sync`]).
//!
//! Redis is the one place the fleet agrees on, so blast never guesses when it cannot reach
//! it: a rate or a lease it cannot get from Redis is a recipient that waits ("waiting for
//! Redis"), never one sent over a shared limit. The suppression list is the other way round:
//! each machine's own durable list is the truth it acts on, and Redis only carries changes
//! between machines, so an outage costs freshness, never a suppression.
//!
//! Dedicated per-IP limits and warm-up counters stay on the machine that owns the IP: they
//! need no network round trip.

pub mod gcra;
pub mod leases;
pub mod outbox;
pub mod suppression_sync;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Error, Result};
use crate::store::now_ms;

/// Every Redis call is bounded by this: a Redis that does not answer is down.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// `[cluster]` of blast.toml, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis = "redis://host:6379"`: the fleet's Redis (or Valkey).
    pub redis: String,
    /// `machine = "name"`: this machine's name in the fleet (default: the host name). Two
    /// machines with one name would take each other's suppression changes for their own.
    pub machine: String,
}

/// The host name, for `[cluster] machine`'s default.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it (or
    // truncates, which the search for NUL below tolerates).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A connection to the fleet's Redis, and whether it answers.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClusterSettings,
    conn: ConnectionManager,
    /// Since when Redis has not answered (ms since the epoch), 0 while it does.
    down_since_ms: AtomicU64,
    last_error: Mutex<String>,
}

impl Cluster {
    /// A handle on the fleet's Redis; connects lazily (and reconnects by itself), so a Redis
    /// that is down now only makes the first calls fail.
    pub fn new(settings: &ClusterSettings) -> Result<Cluster> {
        let client = redis::Client::open(settings.redis.as_str())
            .map_err(|e| Error::Config(format!("[cluster] redis = {:?}: {e}", settings.redis)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            // A few quick retries inside one call; longer outages are the callers' waits.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| Error::Config(format!("[cluster] redis: {e}")))?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                conn,
                down_since_ms: AtomicU64::new(0),
                last_error: Mutex::new(String::new()),
            }),
        })
    }

    /// This machine's name.
    pub fn machine(&self) -> &str {
        &self.inner.settings.machine
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    /// Runs one Redis call under [`CALL_TIMEOUT`], keeping track of whether Redis answers.
    pub async fn call<T, F, Fut>(&self, f: F) -> std::result::Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let r = tokio::time::timeout(CALL_TIMEOUT, f(self.inner.conn.clone())).await;
        let err = match r {
            Ok(Ok(v)) => {
                self.inner.down_since_ms.store(0, Ordering::Relaxed);
                return Ok(v);
            }
            Ok(Err(e)) if !is_connection_error(&e) => return Err(e.to_string()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
        };
        let _ = self.inner.down_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = err.clone();
        Err(err)
    }

    /// `Some((since_ms, last error))` while Redis does not answer.
    pub fn down(&self) -> Option<(u64, String)> {
        let since = self.inner.down_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| {
            (
                since,
                self.inner
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            )
        })
    }

    /// What the progress display and the summary say while Redis is down.
    pub fn waiting_line(&self) -> Option<String> {
        self.down()
            .map(|(_, e)| format!("waiting for Redis ({}): {e}", self.inner.settings.redis))
    }

    /// Refuses a Redis that may evict keys: an evicted rate bucket hands out a fresh burst,
    /// an evicted lease lets a site get more connections, and an evicted stream loses
    /// suppressions, all silently. `maxmemory-policy` must be `noeviction`.
    pub async fn check_policy(&self) -> Result<()> {
        let r: std::result::Result<Vec<String>, String> = self
            .call(|mut c| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async(&mut c)
                    .await
            })
            .await;
        match r {
            Ok(v) => {
                let policy = v.get(1).cloned().unwrap_or_default();
                if policy != "noeviction" {
                    return Err(Error::Config(format!(
                        "[cluster] redis {}: maxmemory-policy is {policy:?}; blast needs \
                         \"noeviction\" (an evicted key would silently reset a shared rate, a \
                         connection lease or the suppression stream): set \
                         `maxmemory-policy noeviction` in redis.conf, or \
                         `redis-cli CONFIG SET maxmemory-policy noeviction`",
                        self.inner.settings.redis
                    )));
                }
                Ok(())
            }
            // Unreachable now: checked again on the first call that gets through (the
            // caller waits for Redis anyway).
            Err(_) => Ok(()),
        }
    }
}

/// A call that failed because Redis could not be reached (as opposed to a script error).
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// What a lane run uses of the fleet: the shared rates, the connection leases, and whether
/// this Redis was checked (`maxmemory-policy`).
pub struct LaneFleet {
    /// The connection.
    pub cluster: Cluster,
    /// Shared buckets.
    pub rates: Arc<gcra::Rates>,
    /// Connection leases per (IP, site) and the fleet's heartbeat.
    pub leases: Arc<leases::Leases>,
    /// The campaign's global rate, shared by every machine sending it.
    pub global: Option<gcra::Bucket>,
    burst: u32,
    default_site: Option<crate::config::Rate>,
    per_domain: std::collections::HashMap<String, crate::config::Rate>,
    checked: std::sync::atomic::AtomicBool,
}

impl LaneFleet {
    /// The fleet side of a lane sending `campaign`; its per-destination limits are keyed by
    /// each source IP of the lane (the keys its sites give).
    pub fn new(cluster: Cluster, campaign: &str, lane: &crate::config::LaneSettings) -> LaneFleet {
        let leases = leases::Leases::new(cluster.clone(), lane.per_domain_connections);
        let rates = gcra::Rates::new(cluster.clone(), leases.machines.clone());
        LaneFleet {
            global: lane
                .rate
                .map(|r| gcra::Bucket::global(campaign, r, lane.burst)),
            burst: lane.burst,
            default_site: lane.per_domain_default,
            per_domain: lane.per_domain.clone(),
            cluster,
            rates,
            leases,
            checked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the shared limits may be used: Redis answered and its policy is
    /// `noeviction`. `Err`: a policy blast refuses (the lane stops).
    pub async fn ready(&self) -> Result<bool> {
        if self.checked.load(Ordering::Relaxed) {
            return Ok(true);
        }
        self.cluster.check_policy().await?;
        if self.cluster.down().is_some() {
            return Ok(false);
        }
        // The first heartbeat, so the share of the rate counts the machines already sending.
        self.leases.renew_once().await;
        self.checked.store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// The shared per-destination rate of `domain` on `site` from source IP `ip` (its holds'
    /// key: each IP of a pool has buckets of its own), as [`crate::lane::throttle`] keys it
    /// locally: a domain's own rate, else its site's default.
    pub fn check_domain(
        &self,
        domain: &str,
        site: &str,
        ip: &str,
    ) -> std::result::Result<(), Duration> {
        let bucket = if let Some(r) = self.per_domain.get(domain) {
            gcra::Bucket::site(domain, ip, *r, self.burst)
        } else if let Some(r) = self.default_site {
            gcra::Bucket::site(site, ip, r, self.burst)
        } else {
            return Ok(());
        };
        self.rates.try_take(&bucket)
    }

    /// A global token without waiting.
    pub fn try_global(&self) -> std::result::Result<(), Duration> {
        match &self.global {
            Some(b) => self.rates.try_take(b),
            None => Ok(()),
        }
    }
}
