//! Rate limits with governor: one global limiter, a keyed limiter for the default rate of a
//! destination site ([`super::sites`]), and direct limiters for domains with their own rate. Quotas are built with
//! `with_period` + `allow_burst` so the rate is smooth (burst 1 spaces messages evenly;
//! `per_hour(n)` would allow a burst of n).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::{LaneSettings, Rate};

/// A smooth quota: one token per `rate` interval, at most `burst` at once.
pub(super) fn quota(rate: Rate, burst: u32) -> Quota {
    let period = rate.interval().max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst ≥ 1"))
}

/// The global pace: an absolute schedule (`next += interval`) rather than a token bucket
/// with burst 1, because a bucket forgets lateness — every timer overshoot (tokio sleeps
/// to the next millisecond tick) is a slot lost for good, and at 1000/s that costs a quarter
/// of the rate. Lateness is made up by back-to-back messages covering at most max(`burst + 1` slots,
/// 20 ms), so the long-run rate matches the setting and never exceeds it.
struct Pacer {
    interval: Duration,
    slack: Duration,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    fn new(rate: Rate, burst: u32) -> Self {
        let interval = rate.interval().max(Duration::from_nanos(1));
        Pacer {
            interval,
            // At least 20 ms: the timer wheel's 1 ms tick would otherwise eat the catch-up at
            // rates near 1000/s.
            slack: (interval * (burst + 1)).max(Duration::from_millis(20)),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Takes the next slot if it has come; otherwise returns when it will.
    fn try_take(&self) -> Result<(), tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if *next > now {
            return Err(*next);
        }
        // Catch up on lateness, but never by more than `slack`.
        let floor = now.checked_sub(self.slack).unwrap_or(now);
        *next = (*next).max(floor) + self.interval;
        Ok(())
    }
}

/// All the lane's limiters.
pub struct Throttle {
    global: Option<Pacer>,
    default_domain: Option<DefaultKeyedRateLimiter<(usize, String)>>,
    /// Per domain with its own rate: one limiter per source IP of the pool.
    domains: HashMap<String, Vec<DefaultDirectRateLimiter>>,
    clock: DefaultClock,
}

impl Throttle {
    /// Builds the limiters from lane settings, for `ips` source IPs (1 without a pool): the
    /// per-destination rates apply to each IP, as receivers count them.
    pub fn new(s: &LaneSettings, ips: usize) -> Self {
        Throttle {
            global: s.rate.map(|r| Pacer::new(r, s.burst)),
            default_domain: s
                .per_domain_default
                .map(|r| governor::RateLimiter::keyed(quota(r, s.burst))),
            domains: s
                .per_domain
                .iter()
                .map(|(d, r)| {
                    let per_ip = (0..ips.max(1))
                        .map(|_| governor::RateLimiter::direct(quota(*r, s.burst)))
                        .collect();
                    (d.clone(), per_ip)
                })
                .collect(),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token for `domain`, on `site`, from source IP `ip` (pool index), without
    /// waiting; on failure, how long until one is free. A domain with its own rate
    /// (`[lane.per_domain]`) is held to that; every other domain shares its site's default
    /// rate (through a relay the site is the domain). Each IP has its own tokens.
    pub fn check_domain(&self, domain: &str, ip: usize, site: &str) -> Result<(), Duration> {
        let r = if let Some(l) = self.domains.get(domain) {
            l[ip.min(l.len() - 1)].check()
        } else if let Some(l) = &self.default_domain {
            l.check_key(&(ip, site.to_string()))
        } else {
            return Ok(());
        };
        r.map_err(|nu| nu.wait_time_from(self.clock.now()))
    }

    /// Takes a global slot without waiting.
    pub fn try_global(&self) -> bool {
        self.global.as_ref().is_none_or(|g| g.try_take().is_ok())
    }

    /// Waits for and takes a global slot.
    pub async fn wait_global(&self) {
        if let Some(g) = &self.global {
            // Bounded: each failed take returns a later instant; the loop ends when it comes.
            while let Err(at) = g.try_take() {
                tokio::time::sleep_until(at).await;
            }
        }
    }

    /// Drops keyed state of domains idle long enough to be full again (bounds memory).
    pub fn shrink(&self) {
        if let Some(k) = &self.default_domain {
            k.retain_recent();
            k.shrink_to_fit();
        }
    }
}
