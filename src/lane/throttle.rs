//! Rate limits with governor: one global limiter, a keyed limiter for the default per-domain
//! rate, and direct limiters for domains with their own rate. Quotas are built with
//! `with_period` + `allow_burst` so the rate is smooth (burst 1 spaces messages evenly;
//! `per_hour(n)` would allow a burst of n).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::{LaneSettings, Rate};

fn quota(rate: Rate, burst: u32) -> Quota {
    let period = rate.interval().max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst ≥ 1"))
}

/// All the lane's limiters.
pub struct Throttle {
    global: Option<DefaultDirectRateLimiter>,
    default_domain: Option<DefaultKeyedRateLimiter<String>>,
    domains: HashMap<String, DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl Throttle {
    /// Builds the limiters from lane settings.
    pub fn new(s: &LaneSettings) -> Self {
        Throttle {
            global: s
                .rate
                .map(|r| governor::RateLimiter::direct(quota(r, s.burst))),
            default_domain: s
                .per_domain_default
                .map(|r| governor::RateLimiter::keyed(quota(r, s.burst))),
            domains: s
                .per_domain
                .iter()
                .map(|(d, r)| (d.clone(), governor::RateLimiter::direct(quota(*r, s.burst))))
                .collect(),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token for `domain` without waiting; on failure, how long until one is free.
    pub fn check_domain(&self, domain: &str) -> Result<(), Duration> {
        let r = if let Some(l) = self.domains.get(domain) {
            l.check()
        } else if let Some(l) = &self.default_domain {
            l.check_key(&domain.to_string())
        } else {
            return Ok(());
        };
        r.map_err(|nu| nu.wait_time_from(self.clock.now()))
    }

    /// Takes a global token without waiting.
    pub fn try_global(&self) -> bool {
        self.global.as_ref().is_none_or(|g| g.check().is_ok())
    }

    /// Waits for a global token.
    pub async fn wait_global(&self) {
        if let Some(g) = &self.global {
            g.until_ready().await;
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
