//! The circuit breaker: a list whose first recipients bounce as unknown addresses is stale
//! or bought, and mailing the rest of it is how a sending IP lands on a blocklist. Among a
//! run's first `window` attempts (default 1,000), once at least [`MIN_SAMPLE`] are in, more
//! than `share` (default 10%) refused as bad addresses stops the run (exit 75) with the
//! reason; `blast send --override-breaker` sends anyway.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Attempts needed before the share means anything.
pub const MIN_SAMPLE: u64 = 50;

/// The breaker's policy (`[lane] breaker_share`, `[lane] breaker_window`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Share of bad-address refusals that trips it (0 < share ≤ 1).
    pub share: f64,
    /// How many first attempts it watches.
    pub window: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            share: 0.10,
            window: 1000,
        }
    }
}

/// Counts of a run's first attempts.
#[derive(Debug, Default)]
pub struct Breaker {
    attempts: AtomicU64,
    bad: AtomicU64,
    tripped: AtomicBool,
}

impl Breaker {
    /// Records a group's first-attempt results: `attempts` of them, `bad` refused as unknown
    /// addresses. Returns the reason to stop, once, when the breaker trips.
    pub fn record(&self, policy: Option<Policy>, attempts: u64, bad: u64) -> Option<String> {
        let p = policy?;
        let seen = self.attempts.load(Ordering::Relaxed);
        if seen >= p.window || attempts == 0 {
            return None;
        }
        // Only the first `window` attempts count; a group straddling the end is cut at it.
        let take = attempts.min(p.window - seen);
        let bad = bad.min(take);
        let a = self.attempts.fetch_add(take, Ordering::Relaxed) + take;
        let b = self.bad.fetch_add(bad, Ordering::Relaxed) + bad;
        if a < MIN_SAMPLE || (b as f64) <= p.share * a as f64 {
            return None;
        }
        if self.tripped.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(format!(
            "circuit breaker: {b} of the first {a} recipients were refused as unknown addresses \
             ({:.0}%, more than {:.0}%): the list looks stale or bought, and mailing the rest of it \
             burns the sending IP's reputation. Clean the list (the bounced addresses are suppressed), \
             or rerun with `blast send --override-breaker` to send anyway",
            100.0 * b as f64 / a as f64,
            100.0 * p.share
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_once_above_the_share_after_the_sample() {
        let b = Breaker::default();
        let p = Some(Policy::default());
        assert_eq!(b.record(p, 40, 20), None, "under the minimum sample");
        let why = b.record(p, 10, 0).expect("30 of 50 is over 10%");
        assert!(
            why.contains("20 of the first 50") && why.contains("--override-breaker"),
            "{why}"
        );
        assert_eq!(b.record(p, 10, 10), None, "once");
        let ok = Breaker::default();
        assert_eq!(
            ok.record(p, 100, 10),
            None,
            "exactly 10% is not more than 10%"
        );
        assert_eq!(ok.record(None, 100, 100), None, "overridden");
        // Past the window nothing counts.
        let late = Breaker::default();
        assert_eq!(late.record(p, 1000, 50), None);
        assert_eq!(late.record(p, 1000, 1000), None);
    }
}
