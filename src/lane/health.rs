//! The health of the lane's destination (the relay; with direct delivery, later, one entry
//! per MX site): backoff after a 421 or a refused connection, and since when it has been in
//! trouble, so a relay that stays down ends the run (exit 75) instead of a reconnect loop
//! that never ends.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::retry::doubling;

/// Connect failures back off from this, doubling per consecutive failure.
const CONNECT_BACKOFF: Duration = Duration::from_millis(200);
/// No backoff is longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(1800);

#[derive(Debug, Default)]
struct State {
    backoff_until: Option<Instant>,
    /// Consecutive 421s (the throttling backoff doubles with each).
    closing_level: u32,
    /// Consecutive failed connects.
    connect_level: u32,
    /// First trouble (421 or failed connect) since the last delivery or good connect.
    trouble_since: Option<(Instant, SystemTime)>,
    /// The last trouble, for the report.
    last: String,
}

/// Shared by the dispatcher (which waits out a backoff) and the workers (which report).
#[derive(Debug, Default)]
pub struct Health(Mutex<State>);

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How long to wait before the next transaction, if the destination is backed off.
    pub fn blocked(&self) -> Option<Duration> {
        self.with(|s| {
            let until = s.backoff_until?;
            let now = Instant::now();
            if until > now {
                Some(until - now)
            } else {
                s.backoff_until = None;
                None
            }
        })
    }

    /// The destination said 421: back off `base × 2^level` (capped), nothing is sent meanwhile.
    pub fn closing(&self, base: Duration, why: &str) {
        self.with(|s| {
            let d = doubling(base, s.closing_level, MAX_BACKOFF);
            s.closing_level += 1;
            extend(s, d, why);
        })
    }

    /// A connection could not be opened: back off briefly, doubling while it goes on.
    pub fn connect_failed(&self, why: &str) {
        self.with(|s| {
            let d = doubling(CONNECT_BACKOFF, s.connect_level, Duration::from_secs(30));
            s.connect_level += 1;
            extend(s, d, why);
        })
    }

    /// Something the lane waits on is unavailable (a pool IP out): starts the trouble clock
    /// without a backoff, so a wait that outlasts every delivery ends the run as stalled.
    pub fn waiting_on(&self, why: &str) {
        self.with(|s| {
            s.trouble_since
                .get_or_insert_with(|| (Instant::now(), SystemTime::now()));
            s.last = why.to_string();
        })
    }

    /// A connection opened (the relay is reachable again).
    pub fn connected(&self) {
        self.with(|s| {
            s.connect_level = 0;
            if s.closing_level == 0 {
                s.trouble_since = None;
            }
        })
    }

    /// A message was accepted: the destination is healthy.
    pub fn delivered(&self) {
        self.with(|s| {
            s.closing_level = 0;
            s.connect_level = 0;
            s.trouble_since = None;
        })
    }

    /// Since when (wall clock) the destination has been in trouble, if it has for longer
    /// than `limit`, with the last thing it did.
    pub fn stalled(&self, limit: Duration) -> Option<(SystemTime, String)> {
        self.with(|s| {
            let (at, wall) = s.trouble_since?;
            (at.elapsed() > limit).then(|| (wall, s.last.clone()))
        })
    }
}

fn extend(s: &mut State, d: Duration, why: &str) {
    let until = Instant::now() + d;
    if s.backoff_until.is_none_or(|u| u < until) {
        s.backoff_until = Some(until);
    }
    s.trouble_since
        .get_or_insert_with(|| (Instant::now(), SystemTime::now()));
    s.last = why.to_string();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_delivery_heals() {
        let h = Health::default();
        assert!(h.blocked().is_none());
        h.closing(Duration::from_secs(10), "421 busy");
        let first = h.blocked().expect("backed off");
        assert!(first <= Duration::from_secs(10) && first > Duration::from_secs(9));
        h.closing(Duration::from_secs(10), "421 busy");
        assert!(h.blocked().unwrap() > Duration::from_secs(19));
        assert!(h
            .stalled(Duration::ZERO)
            .is_some_and(|(_, w)| w == "421 busy"));
        assert!(h.stalled(Duration::from_secs(60)).is_none());
        h.connected();
        // A good connect does not heal a throttling destination; a delivery does.
        assert!(h.stalled(Duration::ZERO).is_some());
        h.delivered();
        assert!(h.stalled(Duration::ZERO).is_none());
    }
}
