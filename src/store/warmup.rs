//! Warm-up counters in the global state: per (IP, scope, UTC day) how many messages counted
//! against the day's cap, and how the day's answered attempts ended (for the brake). Kept
//! beside the suppression list behind its one owner ([`crate::owner::Global`]), so every run
//! and every campaign sending from the IP spends from the same count.
//!
//! A reservation is an atomic read-modify-write of one record (`update_and_fetch`), so two
//! handles in one process (serve's control connections) never both take the last slot; two
//! processes never hold the store at once (sled's lock).

use serde::{Deserialize, Serialize};

use super::store_err;
use super::suppression::Suppression;
use crate::error::Result;

const TREE: &str = "warmup";

/// One (IP, scope, day)'s counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCount {
    /// Counted against the cap: reserved before sending, given back when an attempt never
    /// reached the receiver.
    pub used: u64,
    /// Accepted (250).
    pub sent: u64,
    /// Refused permanently.
    pub bounced: u64,
    /// Refused for now (4xx).
    pub deferred: u64,
}

impl DayCount {
    /// Attempts the receivers answered.
    pub fn answered(&self) -> u64 {
        self.sent + self.bounced + self.deferred
    }
}

/// A day's record with its key parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmupDay {
    /// The IP key ([`crate::lane::sites::ip_key`] of the egress address).
    pub ip: String,
    /// [`crate::config::warmup::IP_SCOPE`] or a provider's name.
    pub scope: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Its counts.
    pub count: DayCount,
}

/// What a run settles for one (IP, scope, day): reservations it gives back and the outcomes
/// of its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    /// The IP key.
    pub ip: String,
    /// The scope.
    pub scope: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Reserved but not spent (never reached the receiver, or left over at the end).
    pub release: u64,
    /// Outcomes to add.
    pub sent: u64,
    /// Outcomes to add.
    pub bounced: u64,
    /// Outcomes to add.
    pub deferred: u64,
}

fn key(ip: &str, scope: &str, day: &str) -> String {
    format!("{ip}\0{scope}\0{day}")
}

fn decode(v: Option<&[u8]>) -> DayCount {
    // An unreadable record counts as full rather than empty: better one day's mail late than
    // an IP over its cap.
    v.map_or(DayCount::default(), |b| {
        serde_json::from_slice(b).unwrap_or(DayCount {
            used: u64::MAX / 2,
            ..DayCount::default()
        })
    })
}

fn encode(c: &DayCount) -> Vec<u8> {
    serde_json::to_vec(c).expect("a DayCount serialises")
}

impl Suppression {
    /// Takes up to `want` of the day's cap (`cap`: `None` = no cap, still counted); returns
    /// how many it got (not flushed).
    pub fn warmup_reserve(
        &self,
        ip: &str,
        scope: &str,
        day: &str,
        want: u64,
        cap: Option<u64>,
    ) -> Result<u64> {
        let (t, path) = self.tree(TREE)?;
        let mut granted = 0;
        t.update_and_fetch(key(ip, scope, day).as_bytes(), |old| {
            let mut c = decode(old);
            granted = match cap {
                Some(cap) => want.min(cap.saturating_sub(c.used)),
                None => want,
            };
            c.used = c.used.saturating_add(granted);
            Some(encode(&c))
        })
        .map_err(|e| store_err(path, e))?;
        Ok(granted)
    }

    /// Gives reservations back and adds outcomes (not flushed).
    pub fn warmup_settle(&self, s: &Settle) -> Result<()> {
        let (t, path) = self.tree(TREE)?;
        t.update_and_fetch(key(&s.ip, &s.scope, &s.day).as_bytes(), |old| {
            let mut c = decode(old);
            c.used = c.used.saturating_sub(s.release);
            c.sent += s.sent;
            c.bounced += s.bounced;
            c.deferred += s.deferred;
            Some(encode(&c))
        })
        .map_err(|e| store_err(path, e))?;
        Ok(())
    }

    /// Every day recorded for `ip` (every IP's when `None`), in (IP, scope, day) order.
    pub fn warmup_days(&self, ip: Option<&str>) -> Result<Vec<WarmupDay>> {
        let (t, path) = self.tree(TREE)?;
        let prefix = ip.map(|i| format!("{i}\0")).unwrap_or_default();
        let mut out = Vec::new();
        for kv in t.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv.map_err(|e| store_err(path, e))?;
            let k = String::from_utf8_lossy(&k).into_owned();
            let mut parts = k.splitn(3, '\0');
            let (Some(ip), Some(scope), Some(day)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            out.push(WarmupDay {
                ip: ip.into(),
                scope: scope.into(),
                day: day.into(),
                count: decode(Some(&v)),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_cap_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let wait = std::time::Duration::from_secs(5);
        {
            let sp = Suppression::open(dir.path(), wait).unwrap();
            assert_eq!(
                sp.warmup_reserve("ip", "*", "2026-12-01", 30, Some(50))
                    .unwrap(),
                30
            );
            assert_eq!(
                sp.warmup_reserve("ip", "*", "2026-12-01", 30, Some(50))
                    .unwrap(),
                20
            );
            assert_eq!(
                sp.warmup_reserve("ip", "*", "2026-12-01", 30, Some(50))
                    .unwrap(),
                0
            );
            sp.flush().unwrap();
        }
        let sp = Suppression::open(dir.path(), wait).unwrap();
        sp.warmup_settle(&Settle {
            ip: "ip".into(),
            scope: "*".into(),
            day: "2026-12-01".into(),
            release: 5,
            sent: 40,
            bounced: 3,
            deferred: 2,
        })
        .unwrap();
        assert_eq!(
            sp.warmup_reserve("ip", "*", "2026-12-01", 30, Some(50))
                .unwrap(),
            5
        );
        let days = sp.warmup_days(Some("ip")).unwrap();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].count.used, 50);
        assert_eq!(days[0].count.answered(), 45);
        assert!(sp.warmup_days(Some("other")).unwrap().is_empty());
    }
}
