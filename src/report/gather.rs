//! One pass over a campaign's store for everything `blast status` and `blast report` say
//! about it, so the two can never disagree: counts per state, the rates, per-domain counts,
//! the last errors, sender-level warnings, and (for the report) sends per minute and bounce
//! categories.

use std::collections::BTreeMap;

use crate::commands::rates::{self, Rates, Tally};
use crate::commands::status::{warnings_json, Warning, Warnings};
use crate::config::Settings;
use crate::error::Result;
use crate::store::campaign::{CampaignStore, Counts};
use crate::store::record::{Record, State};

/// Errors kept for the "last errors" lines.
const LAST_ERRORS: usize = 10;

/// What one pass found.
pub struct Gathered {
    /// Counts per state.
    pub counts: Counts,
    /// Bounce, unsubscribe and complaint rates.
    pub rates: Rates,
    /// What the rates were computed from.
    pub tally: Tally,
    /// Per-domain sender/message-level rejections.
    pub warnings: Vec<Warning>,
    /// Per domain: sent, deferred, bounced, failed; busiest first.
    pub domains: Vec<(String, [u64; 4])>,
    /// The latest errors (time, line), newest first.
    pub errors: Vec<(u64, String)>,
    /// Per minute (ms since the epoch at its start): sent, bounced, failed.
    pub per_minute: BTreeMap<u64, [u64; 3]>,
    /// Bounced and failed recipients by the category of their last reply.
    pub categories: BTreeMap<String, u64>,
    /// The first attempt and the last result (ms since the epoch); 0 before any.
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// What the campaign added to the global state, per reason (and `click:URL`).
    pub source_counts: Vec<(String, u64)>,
    /// Response-rule holds in force on the lane's source IPs (they bind every campaign on
    /// them).
    pub holds: Vec<crate::store::suppression::SiteHold>,
    /// Lost-reply resends over the campaign's runs (from the last run's snapshot).
    pub ambiguous_resends: u64,
}

impl Gathered {
    /// The object `blast status --json` prints: counts per state, `warnings`, `rates`.
    pub fn json(&self, campaign: &str) -> serde_json::Value {
        let mut v = super::summary::counts_json(campaign, &self.counts, false);
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("warnings".into(), warnings_json(&self.warnings));
            m.insert(
                "rates".into(),
                serde_json::to_value(&self.rates).unwrap_or_default(),
            );
            m.insert(
                "holds".into(),
                serde_json::to_value(&self.holds).unwrap_or_default(),
            );
            m.insert("ambiguous_resends".into(), self.ambiguous_resends.into());
        }
        v
    }
}

fn error_line(r: &Record) -> String {
    format!("{} ({}): {}", r.address, r.state.name(), r.last_reply)
}

/// Reads the store once (and the global list's counts for the campaign).
pub fn gather(s: &Settings, st: &CampaignStore) -> Result<Gathered> {
    let counts = st.counts()?;
    let mut warnings = Warnings::default();
    let mut domains: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    let mut errors: Vec<(u64, String)> = Vec::new();
    let mut tally = Tally::default();
    let mut per_minute: BTreeMap<u64, [u64; 3]> = BTreeMap::new();
    let mut categories: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first_ms, mut last_ms) = (u64::MAX, 0u64);
    for kv in st.iter() {
        let (_, r) = kv?;
        warnings.note(&r);
        tally.note(&r);
        if r.first_attempt_ms > 0 {
            first_ms = first_ms.min(r.first_attempt_ms);
        }
        let slot = match r.state {
            State::Sent => 0,
            State::Deferred => 1,
            State::Bounced => 2,
            State::Failed => 3,
            _ => continue,
        };
        domains.entry(r.domain().to_string()).or_default()[slot] += 1;
        if slot != 1 {
            last_ms = last_ms.max(r.updated_ms);
            let minute = r.updated_ms / 60_000 * 60_000;
            per_minute.entry(minute).or_default()[if slot == 0 { 0 } else { slot - 1 }] += 1;
        }
        if slot >= 2 {
            let cat = crate::classify::reply_category(&r.last_reply);
            *categories.entry(format!("{cat:?}")).or_default() += 1;
        }
        if slot > 0 {
            errors.push((r.updated_ms, error_line(&r)));
        }
        // Keep memory bounded on big campaigns: only the latest few matter.
        if errors.len() > 1000 {
            errors.sort_by_key(|e| std::cmp::Reverse(e.0));
            errors.truncate(LAST_ERRORS);
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.0));
    errors.truncate(LAST_ERRORS);
    for (d, c) in &domains {
        tally.note_domain(d, c[0], &s.bounce_policy);
    }
    let mut domains: Vec<_> = domains.into_iter().collect();
    domains.sort_by(|a, b| {
        b.1.iter()
            .sum::<u64>()
            .cmp(&a.1.iter().sum::<u64>())
            .then_with(|| a.0.cmp(&b.0))
    });
    let owner = crate::owner::Global::shared(s.suppression_state_dir());
    let global = owner.source_counts(&s.id)?;
    let ips: Vec<String> = if s.lane.source_ips.is_empty() {
        vec![crate::lane::sites::ip_key(s.lane.source_ip)]
    } else {
        s.lane.source_ips.iter().map(|p| p.ip.to_string()).collect()
    };
    let holds = owner
        .holds()?
        .into_iter()
        .filter(|h| ips.contains(&h.ip))
        .collect();
    let rates = rates::rates(&tally, &global, &s.bounce_policy);
    Ok(Gathered {
        counts,
        rates,
        tally,
        warnings: warnings.finish(),
        domains,
        errors,
        per_minute,
        categories,
        first_ms: if first_ms == u64::MAX { 0 } else { first_ms },
        last_ms,
        source_counts: global,
        holds,
        ambiguous_resends: crate::report::summary::snapshot_ambiguous(
            &crate::send::campaign_dir(s).join("status.json"),
        ),
    })
}
