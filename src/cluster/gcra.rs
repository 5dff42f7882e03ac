//! Shared rates: GCRA (the generic cell rate algorithm) in one Lua script, the way KumoMTA
//! shares its throttles. Redis runs a script atomically, and the script reads the time from
//! `redis.call('TIME')`, so every machine is held to one clock (Redis's), never its own.
//!
//! A bucket is one key, `{blast:rate:NAME}` (the braces are the Redis Cluster hash tag, so
//! a script's keys always live on one node), holding the *theoretical arrival time* in
//! microseconds. The script grants up to `want` tokens at once: a machine takes at most
//! 50 ms of its share of the rate per call, so a message is not a round trip. Tokens a
//! machine took but did not use within [`HOLD`] are dropped, and the bucket's burst is
//! lowered by what machines may hold and by an allowance for the delivery path's jitter, so
//! the fleet stays under the rate plus the burst in any one-second window at the receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Cluster;
use crate::config::Rate;

/// How long tokens taken from Redis may wait locally before they are dropped; also the
/// most of its share a machine asks for at once.
pub const HOLD: Duration = Duration::from_millis(50);

/// `KEYS[1]` the bucket; `ARGV` emission interval (µs), tolerance (µs), tokens wanted.
/// Returns `{granted, wait_us}`: `wait_us` is how long until one token is free when none was.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local room = math.floor((now + tolerance - tat) / interval) + 1
if room > want then room = want end
if room <= 0 then
  return {0, tat - tolerance - now}
end
local new_tat = tat + room * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
return {room, 0}
"#;

/// One shared rate: its bucket name, rate and burst.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The Redis key.
    pub key: String,
    /// The rate of the whole fleet.
    pub rate: Rate,
    /// Messages the fleet may send at once beyond the rate.
    pub burst: u32,
}

impl Bucket {
    /// The fleet-wide global rate of a campaign's lane (every machine sending it shares it).
    pub fn global(campaign: &str, rate: Rate, burst: u32) -> Bucket {
        Bucket {
            key: format!("{{blast:rate:global:{campaign}}}"),
            rate,
            burst,
        }
    }

    /// A site's default rate as seen from one source IP (receivers count per IP and site).
    pub fn site(site: &str, ip: &str, rate: Rate, burst: u32) -> Bucket {
        Bucket {
            key: format!("{{blast:rate:site:{ip}|{site}}}"),
            rate,
            burst,
        }
    }

    fn interval_us(&self) -> u64 {
        (self.rate.interval().as_micros() as u64).max(1)
    }

    /// Tokens this machine asks for at once: 50 ms of its share, but no more than its share
    /// of half the burst (a batch is a burst of its own), at least one.
    fn batch(&self, machines: u64) -> u64 {
        let m = machines.max(1);
        let per_hold = HOLD.as_micros() as u64 / self.interval_us() / m;
        let per_burst = u64::from(self.burst / 2) / m;
        per_hold.min(per_burst).max(1)
    }

    /// The bucket's tolerance: half the burst, less what machines may hold unused for a
    /// moment. The other half is kept for the way from token to wire: claims are committed in
    /// groups (one fsync), so a slow disk or a busy core delivers a few hundred milliseconds'
    /// tokens at once, and the receiver counts when mail arrives, not when it was allowed.
    fn tolerance_us(&self, machines: u64) -> u64 {
        let batch = self.batch(machines);
        let held = batch * machines.max(1);
        // At least a batch's worth: with less, an idle bucket grants one token per call and
        // every message becomes a round trip.
        let count = u64::from(self.burst / 2)
            .saturating_sub(held)
            .max(batch - 1);
        count * self.interval_us()
    }
}

/// What the local side of a bucket knows.
#[derive(Default)]
struct Local {
    tokens: u64,
    /// When the tokens were granted: they are dropped after [`HOLD`].
    granted: Option<Instant>,
    /// A refill is on its way.
    refilling: bool,
    /// Redis said none is free until then.
    not_before: Option<Instant>,
}

/// This machine's side of the shared buckets: tokens taken from Redis in small batches,
/// handed out without waiting.
pub struct Rates {
    cluster: Cluster,
    script: redis::Script,
    local: Mutex<HashMap<String, Local>>,
    /// Machines sending now (from [`super::leases::Fleet`]), for the share.
    machines: Arc<std::sync::atomic::AtomicU64>,
}

impl Rates {
    /// Shared buckets through `cluster`; `machines` is kept current by the fleet heartbeat.
    pub fn new(cluster: Cluster, machines: Arc<std::sync::atomic::AtomicU64>) -> Arc<Rates> {
        Arc::new(Rates {
            cluster,
            script: redis::Script::new(SCRIPT),
            local: Mutex::default(),
            machines,
        })
    }

    /// Takes one token of `bucket` without waiting. `Err`: how long to wait before asking
    /// again (a refill from Redis is started meanwhile; while Redis is down, a retry later).
    pub fn try_take(self: &Arc<Self>, bucket: &Bucket) -> Result<(), Duration> {
        let now = Instant::now();
        let mut m = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let l = m.entry(bucket.key.clone()).or_default();
        if l.granted.is_some_and(|g| now.duration_since(g) > HOLD) {
            l.tokens = 0;
            l.granted = None;
        }
        if l.tokens > 0 {
            l.tokens -= 1;
            return Ok(());
        }
        if let Some(nb) = l.not_before {
            if nb > now {
                return Err(nb - now);
            }
            l.not_before = None;
        }
        if !l.refilling {
            l.refilling = true;
            let (me, b) = (self.clone(), bucket.clone());
            tokio::spawn(async move { me.refill(b).await });
        }
        Err(Duration::from_millis(1))
    }

    async fn refill(self: Arc<Self>, b: Bucket) {
        let machines = self.machines.load(std::sync::atomic::Ordering::Relaxed);
        let want = b.batch(machines);
        let (script, key) = (&self.script, b.key.clone());
        let (interval, tol) = (b.interval_us(), b.tolerance_us(machines));
        let r: std::result::Result<(u64, i64), String> = self
            .cluster
            .call(|mut c| async move {
                script
                    .key(key)
                    .arg(interval)
                    .arg(tol)
                    .arg(want)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        let now = Instant::now();
        let mut m = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let l = m.entry(b.key.clone()).or_default();
        l.refilling = false;
        match r {
            Ok((granted, _)) if granted > 0 => {
                l.tokens = granted;
                l.granted = Some(now);
            }
            Ok((_, wait_us)) => {
                l.not_before = Some(now + Duration::from_micros(wait_us.max(0) as u64));
            }
            // Down: nothing is sent on this bucket until Redis answers; ask again soon.
            Err(_) => l.not_before = Some(now + Duration::from_millis(250)),
        }
    }

    /// Drops the state of buckets unused for a while (bounds memory over many sites).
    pub fn shrink(&self) {
        let now = Instant::now();
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, l| {
                l.refilling
                    || l.granted.is_some_and(|g| now.duration_since(g) < HOLD)
                    || l.not_before.is_some_and(|n| n > now)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate: &str, burst: u32) -> Bucket {
        Bucket::global("c", Rate::parse(rate).unwrap(), burst)
    }

    #[test]
    fn a_batch_is_at_most_fifty_ms_of_the_machines_share() {
        let b = bucket("300/s", 150);
        // 300/s: 15 tokens per 50 ms; two machines take 7 each, ten take at least one.
        assert_eq!(b.batch(1), 15);
        assert_eq!(b.batch(2), 7);
        assert_eq!(b.batch(10), 1);
        assert_eq!(bucket("10/s", 5).batch(1), 1);
    }

    #[test]
    fn tolerance_keeps_held_tokens_and_jitter_inside_the_burst() {
        let b = bucket("300/s", 150);
        let interval = b.interval_us();
        assert_eq!(interval, 3333);
        // Half of 150, less 2 × 7 held: 61 intervals.
        assert_eq!(b.tolerance_us(2), 61 * interval);
        // A small burst: batches of 2 (half the burst over two machines), and a tolerance of
        // one batch so a call can be granted one.
        assert_eq!(bucket("300/s", 10).batch(2), 2);
        assert_eq!(bucket("300/s", 10).tolerance_us(2), interval);
        // A fast rate: the batch is held to half the burst, not 50 ms (5,000 here).
        assert_eq!(bucket("100000/s", 100).batch(1), 50);
        assert_eq!(bucket("100000/s", 100).tolerance_us(1), 49 * 10);
    }

    #[test]
    fn keys_share_one_hash_tag_per_bucket() {
        let s = Bucket::site(
            "mx1.example,mx2.example",
            "203.0.113.25",
            Rate::parse("10/s").unwrap(),
            1,
        );
        assert_eq!(
            s.key,
            "{blast:rate:site:203.0.113.25|mx1.example,mx2.example}"
        );
        assert_eq!(bucket("1/s", 1).key, "{blast:rate:global:c}");
    }
}
