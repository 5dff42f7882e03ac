//! What the progress display needs beyond plain counters: recipients deferred right now (a
//! gauge, not a count of attempts), per-domain activity with the reason a domain is
//! throttled, the relay's last trouble, and the time the lane spent waiting (for retries or
//! a backed-off relay) so an average rate can leave that time out.
//!
//! The writer updates this once per commit group (one lock per group, not per message).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One destination domain's activity in this run.
#[derive(Debug, Default, Clone)]
pub struct DomainLive {
    /// Accepted in this run.
    pub sent: u64,
    /// Recipients of this domain deferred right now (set when first seen from the store's
    /// state at start; raised and lowered as results come in).
    pub deferred: u64,
    /// Bounced in this run.
    pub bounced: u64,
    /// Failed (retries exhausted) in this run.
    pub failed: u64,
    /// The domain's last throttling reply and until when it backs off.
    pub throttled: Option<(Instant, String)>,
}

/// The details behind the display (see the module doc).
#[derive(Debug, Default)]
pub struct Live {
    domains: Mutex<HashMap<String, DomainLive>>,
    /// The relay's last trouble (421, refused connection) and when it was reported.
    relay: Mutex<Option<(Instant, String)>>,
    /// Response-rule holds in force, one line each.
    holds: Mutex<Vec<String>>,
    /// Milliseconds the dispatcher spent waiting with nothing it could send.
    pub idle_ms: AtomicU64,
    /// While the lane sleeps until the next retry is due: that time (ms since the epoch), else 0.
    pub waiting_until_ms: AtomicU64,
    /// When that sleep began (ms since the epoch), else 0: the sleep counts as waiting while
    /// it lasts, not only once [`Live::idle_ms`] has it.
    pub waiting_since_ms: AtomicU64,
}

/// One domain's change in a commit group.
#[derive(Debug, Default, Clone)]
pub struct DomainDelta {
    /// Accepted.
    pub sent: u64,
    /// Bounced.
    pub bounced: u64,
    /// Failed.
    pub failed: u64,
    /// Recipients that became deferred, minus deferred ones that got a final result.
    pub deferred: i64,
    /// A throttling reply in this group, and the backoff's end.
    pub throttled: Option<(Instant, String)>,
}

impl Live {
    /// Applies one commit group's changes.
    pub fn apply(&self, deltas: HashMap<String, DomainDelta>) {
        if deltas.is_empty() {
            return;
        }
        let mut m = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        for (domain, d) in deltas {
            let e = m.entry(domain).or_default();
            e.sent += d.sent;
            e.bounced += d.bounced;
            e.failed += d.failed;
            e.deferred = e.deferred.saturating_add_signed(d.deferred);
            if d.throttled.is_some() {
                e.throttled = d.throttled;
            }
        }
    }

    /// The holds in force now (from [`super::sites`]).
    pub fn set_holds(&self, lines: Vec<String>) {
        *self.holds.lock().unwrap_or_else(|p| p.into_inner()) = lines;
    }

    /// See [`Live::set_holds`].
    pub fn holds(&self) -> Vec<String> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The relay said 421 or could not be reached.
    pub fn relay_trouble(&self, why: &str) {
        *self.relay.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), why.into()));
    }

    /// The relay's last trouble if it is more recent than `within`.
    pub fn recent_relay_trouble(&self, within: std::time::Duration) -> Option<String> {
        let r = self.relay.lock().unwrap_or_else(|p| p.into_inner());
        r.as_ref()
            .filter(|(at, _)| at.elapsed() <= within)
            .map(|(_, why)| why.clone())
    }

    /// Up to `n` domains, the ones throttled right now first, then by activity in this run.
    pub fn busiest(&self, n: usize) -> Vec<(String, DomainLive)> {
        let now = Instant::now();
        let m = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(&String, &DomainLive)> = m.iter().collect();
        let key = |d: &DomainLive| {
            let throttled = d.throttled.as_ref().is_some_and(|(until, _)| *until > now);
            (throttled, d.sent + d.bounced + d.failed + d.deferred)
        };
        // Ties by name, so the lines do not swap places between frames.
        v.sort_by(|a, b| key(b.1).cmp(&key(a.1)).then_with(|| a.0.cmp(b.0)));
        v.into_iter()
            .take(n)
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect()
    }

    /// Waiting time so far: what [`Live::idle_ms`] holds plus the sleep going on now.
    pub fn idle(&self) -> std::time::Duration {
        let since = self.waiting_since_ms.load(Ordering::Relaxed);
        let now = if since > 0 {
            crate::store::now_ms().saturating_sub(since)
        } else {
            0
        };
        std::time::Duration::from_millis(self.idle_ms.load(Ordering::Relaxed) + now)
    }

    /// Adds waiting time the average rate leaves out.
    pub fn add_idle(&self, d: std::time::Duration) {
        self.idle_ms
            .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
    }
}
