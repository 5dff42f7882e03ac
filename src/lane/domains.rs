//! Per-destination-domain state shared by the dispatcher, workers and writer: transactions in
//! flight (the per-domain concurrency cap) and throttling backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One domain's live state.
#[derive(Debug, Default, Clone)]
pub struct DomainState {
    /// Transactions dispatched and not yet finished.
    pub inflight: usize,
    /// No new transactions before this instant (the domain asked us to slow down).
    pub backoff_until: Option<Instant>,
    /// Consecutive throttling signals (the backoff doubles with each).
    pub backoff_level: u32,
}

/// All domains' state behind one lock (held for microseconds).
#[derive(Debug, Default)]
pub struct DomainTable(Mutex<HashMap<String, DomainState>>);

impl DomainTable {
    /// Runs `f` on a domain's state.
    pub fn with<R>(&self, domain: &str, f: impl FnOnce(&mut DomainState) -> R) -> R {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get_mut(domain) {
            return f(s);
        }
        f(m.entry(domain.to_string()).or_default())
    }

    /// A transaction to `domain` ended.
    pub fn finished(&self, domain: &str) {
        self.with(domain, |s| s.inflight = s.inflight.saturating_sub(1));
    }

    /// The domain signalled throttling: back off `base × 2^level`, capped at 30 min.
    /// Returns when the backoff ends.
    pub fn throttled(&self, domain: &str, base: Duration) -> Instant {
        self.with(domain, |s| {
            let d = super::retry::doubling(base, s.backoff_level, Duration::from_secs(1800));
            s.backoff_level += 1;
            let until = Instant::now() + d;
            s.backoff_until = Some(until);
            until
        })
    }

    /// A delivery succeeded: the domain is healthy again.
    pub fn healthy(&self, domain: &str) {
        self.with(domain, |s| s.backoff_level = 0);
    }
}
