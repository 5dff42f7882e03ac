//! Site holds in the global state: a response rule's suspension or throttle of a (source IP,
//! site). Kept beside the suppression list, behind its one owner ([`crate::owner::Global`]),
//! so a hold survives a restart and binds every campaign sending from that IP.

use serde::{Deserialize, Serialize};

use super::store_err;
use super::suppression::Suppression;
use crate::error::Result;

const TREE: &str = "holds";

/// One hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteHold {
    /// The source IP it binds (`"default"`: a lane that binds none).
    pub ip: String,
    /// The site: sorted MX hosts joined by commas, or a domain.
    pub site: String,
    /// The rule that made it.
    pub rule: String,
    /// `None`: suspended; else the rate it is held to ("60/h").
    pub rate: Option<String>,
    /// When it began (ms since the epoch).
    pub since_ms: u64,
    /// When it ends (ms since the epoch).
    pub until_ms: u64,
    /// The reply that triggered it.
    pub reply: String,
    /// The campaign that met the reply.
    pub campaign: String,
}

impl SiteHold {
    fn key(&self) -> String {
        format!("{}\0{}", self.ip, self.site)
    }
}

impl Suppression {
    /// Records a hold (replacing the site's previous one) and forgets holds ended before
    /// `now_ms` (not flushed).
    pub fn put_hold(&self, h: &SiteHold, now_ms: u64) -> Result<()> {
        let (t, path) = self.tree(TREE)?;
        for (k, old) in self.holds_in(&t, path)? {
            if old.until_ms <= now_ms {
                t.remove(k).map_err(|e| store_err(path, e))?;
            }
        }
        let v = serde_json::to_vec(h).map_err(|e| store_err(path, e))?;
        t.insert(h.key().as_bytes(), v)
            .map_err(|e| store_err(path, e))?;
        Ok(())
    }

    /// Lifts the holds of `site` (every IP's when `ip` is `None`); returns how many.
    pub fn lift_holds(&self, site: &str, ip: Option<&str>) -> Result<u64> {
        let (t, path) = self.tree(TREE)?;
        let mut n = 0;
        for (k, h) in self.holds_in(&t, path)? {
            if h.site == site && ip.is_none_or(|i| i == h.ip) {
                t.remove(k).map_err(|e| store_err(path, e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The holds still in force at `now_ms`.
    pub fn holds(&self, now_ms: u64) -> Result<Vec<SiteHold>> {
        let (t, path) = self.tree(TREE)?;
        Ok(self
            .holds_in(&t, path)?
            .into_iter()
            .map(|(_, h)| h)
            .filter(|h| h.until_ms > now_ms)
            .collect())
    }

    fn holds_in(
        &self,
        t: &sled::Tree,
        path: &std::path::Path,
    ) -> Result<Vec<(sled::IVec, SiteHold)>> {
        let mut out = Vec::new();
        for kv in t.iter() {
            let (k, v) = kv.map_err(|e| store_err(path, e))?;
            // A record this version cannot read is left alone, never taken for a hold.
            if let Ok(h) = serde_json::from_slice(&v) {
                out.push((k, h));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_survives_reopening_and_ended_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let h = |site: &str, until_ms| SiteHold {
            ip: "203.0.113.5".into(),
            site: site.into(),
            rule: "r".into(),
            rate: None,
            since_ms: 1,
            until_ms,
            reply: "421 4.7.0 [TSS04]".into(),
            campaign: "c".into(),
        };
        {
            let sp = Suppression::open(dir.path(), std::time::Duration::from_secs(5)).unwrap();
            sp.put_hold(&h("old.test", 50), 10).unwrap();
            sp.put_hold(&h("y.test", 1000), 100).unwrap();
            sp.flush().unwrap();
        }
        let sp = Suppression::open(dir.path(), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(sp.holds(100).unwrap(), vec![h("y.test", 1000)]);
        assert_eq!(sp.holds(1000).unwrap(), vec![]);
        assert_eq!(sp.lift_holds("y.test", None).unwrap(), 1);
        assert_eq!(sp.holds(100).unwrap(), vec![]);
    }
}
