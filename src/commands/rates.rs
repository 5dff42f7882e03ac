//! A campaign's bounce, unsubscribe and complaint rates for `blast status`, and the lines
//! they are judged by. The complaint rate is complaints ÷ messages delivered to receivers
//! that send feedback reports ([`BouncePolicy::sends_feedback`]): a complaint from a Gmail
//! user never reaches a sender (Gmail's rate is only in its Postmaster Tools), so counting
//! Gmail deliveries in the denominator would make the rate look better than it is.

use serde::Serialize;

use crate::bounce::policy::{BouncePolicy, COMPLAINT_ALARM, COMPLAINT_WARN};
use crate::store::record::{Record, State};

/// A share as a percentage with two decimals (`0.0015` → `0.15%`).
pub fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// Counts gathered from a campaign's records.
#[derive(Debug, Default)]
pub struct Tally {
    /// Accepted by the receiver.
    pub delivered: u64,
    /// Refused permanently at send time (any reason).
    pub bounced: u64,
    /// Of those, refused as bad addresses.
    pub address_bounces: u64,
    /// Delivered to domains whose receivers send feedback reports.
    pub feedback_delivered: u64,
    /// Delivered to Gmail.
    pub gmail_delivered: u64,
}

impl Tally {
    /// Looks at one record.
    pub fn note(&mut self, r: &Record) {
        match r.state {
            State::Sent => self.delivered += 1,
            State::Bounced => {
                self.bounced += 1;
                self.address_bounces += u64::from(r.is_address_bounce());
            }
            _ => {}
        }
    }

    /// Counts one domain's `sent` deliveries towards the feedback-loop and Gmail bases: once
    /// per domain, from the per-domain counts, not once per record.
    pub fn note_domain(&mut self, domain: &str, sent: u64, policy: &BouncePolicy) {
        if policy.sends_feedback(domain) {
            self.feedback_delivered += sent;
        } else if domain == "gmail.com" || domain == "googlemail.com" {
            self.gmail_delivered += sent;
        }
    }
}

/// The rates, with what a postmaster should hear about them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rates {
    /// Accepted by the receiver.
    pub delivered: u64,
    /// Hard bounces: refused as bad addresses at send time, or bounced back later.
    pub hard_bounces: u64,
    /// hard ÷ (delivered + bounced at send time).
    pub bounce_rate: f64,
    /// Unsubscribes (one-click, mailto:, feedback `opt-out`).
    pub unsubscribes: u64,
    /// unsubscribes ÷ delivered.
    pub unsubscribe_rate: f64,
    /// Complaints (feedback reports of type abuse or fraud).
    pub complaints: u64,
    /// Delivered to receivers that send feedback reports: the complaint rate's base.
    pub feedback_delivered: u64,
    /// complaints ÷ feedback_delivered; `None` when nothing went to such a receiver.
    pub complaint_rate: Option<f64>,
    /// Clicks on tracked links (`[campaign] track_clicks`), all links together. Security
    /// scanners that follow every link count too.
    pub clicks: u64,
    /// Lines to print: `warning: …` or `ALARM: …`.
    pub alerts: Vec<String>,
}

/// Rates from a campaign's tally and what it added to the global list (`counts`: reason →
/// count, [`crate::owner::Global::source_counts`]).
pub fn rates(t: &Tally, counts: &[(String, u64)], policy: &BouncePolicy) -> Rates {
    let get = |r: &str| counts.iter().find(|(k, _)| k == r).map_or(0, |x| x.1);
    // Every send-time address bounce put an entry on the list (counted under "bounce"),
    // and so does each bounce that came back later; a list from before the counts has
    // only the store's.
    let hard = get("bounce").max(t.address_bounces);
    let attempted = t.delivered + t.bounced;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let complaints = get("complaint");
    let complaint_rate =
        (t.feedback_delivered > 0).then(|| ratio(complaints, t.feedback_delivered));
    let mut alerts = Vec::new();
    let bounce_rate = ratio(hard, attempted);
    if attempted > 0 && bounce_rate >= policy.hard_warn {
        alerts.push(format!(
            "warning: hard bounce rate {} is at or above {} ([bounces] hard_warn): clean the list \
             before the next send; receivers read a high rate as a bought or stale list",
            pct(bounce_rate),
            pct(policy.hard_warn)
        ));
    }
    if let Some(r) = complaint_rate {
        if r >= COMPLAINT_ALARM {
            alerts.push(format!(
                "ALARM: complaint rate {} is at or above {}, the limit Gmail and Yahoo enforce: \
                 mail from this sender is being rejected or spam-foldered; stop and find out why",
                pct(r),
                pct(COMPLAINT_ALARM)
            ));
        } else if r >= COMPLAINT_WARN {
            alerts.push(format!(
                "warning: complaint rate {} is at or above {} (Gmail and Yahoo ask senders to stay \
                 under it)",
                pct(r),
                pct(COMPLAINT_WARN)
            ));
        }
    }
    Rates {
        delivered: t.delivered,
        hard_bounces: hard,
        bounce_rate,
        unsubscribes: get("unsubscribe"),
        unsubscribe_rate: ratio(get("unsubscribe"), t.delivered),
        complaints,
        feedback_delivered: t.feedback_delivered,
        complaint_rate,
        clicks: get("click"),
        alerts,
    }
}

/// The rates' lines for the status table.
pub fn print(r: &Rates, t: &Tally) {
    println!(
        "  hard bounces {} ({}) · unsubscribes {} ({}) · complaints {} ({})",
        r.hard_bounces,
        pct(r.bounce_rate),
        r.unsubscribes,
        pct(r.unsubscribe_rate),
        r.complaints,
        match r.complaint_rate {
            Some(c) => format!(
                "{} of {} delivered to feedback-loop receivers",
                pct(c),
                r.feedback_delivered
            ),
            None => "no mail went to a receiver that sends feedback reports".into(),
        }
    );
    if r.clicks > 0 {
        println!("  clicks on tracked links {}", r.clicks);
    }
    if t.gmail_delivered > 0 {
        println!(
            "  ({} delivered to Gmail, which sends no feedback reports: its complaint rate is only \
             in Google Postmaster Tools)",
            t.gmail_delivered
        );
    }
    for a in &r.alerts {
        println!("{a}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn complaint_rate_counts_only_feedback_receivers_and_alarms_at_the_published_lines() {
        let p = BouncePolicy::default();
        let t = Tally {
            delivered: 10_000,
            bounced: 100,
            address_bounces: 90,
            feedback_delivered: 2_000,
            gmail_delivered: 8_000,
        };
        let r = rates(
            &t,
            &counts(&[("complaint", 2), ("unsubscribe", 30), ("bounce", 95)]),
            &p,
        );
        assert_eq!(r.hard_bounces, 95, "send-time and later bounces");
        assert_eq!(r.complaint_rate, Some(0.001));
        assert!(
            r.alerts
                .iter()
                .any(|a| a.starts_with("warning: complaint rate 0.10%")),
            "{:?}",
            r.alerts
        );
        assert!(
            r.alerts.iter().all(|a| !a.contains("hard bounce")),
            "0.94% < 2%"
        );
        let r = rates(&t, &counts(&[("complaint", 6)]), &p);
        assert!(
            r.alerts
                .iter()
                .any(|a| a.starts_with("ALARM: complaint rate 0.30%")),
            "{:?}",
            r.alerts
        );
        let r = rates(&t, &counts(&[("complaint", 1)]), &p);
        assert!(r.alerts.is_empty(), "0.05%: {:?}", r.alerts);
        let gmail_only = Tally {
            feedback_delivered: 0,
            ..t
        };
        assert_eq!(
            rates(&gmail_only, &counts(&[("complaint", 1)]), &p).complaint_rate,
            None
        );
    }

    #[test]
    fn hard_bounce_share_warns_at_the_policy_line() {
        let p = BouncePolicy {
            hard_warn: 0.05,
            ..Default::default()
        };
        let t = Tally {
            delivered: 95,
            bounced: 5,
            address_bounces: 5,
            ..Default::default()
        };
        let r = rates(&t, &[], &p);
        assert_eq!(r.bounce_rate, 0.05);
        assert!(
            r.alerts[0].starts_with("warning: hard bounce rate 5.00%"),
            "{:?}",
            r.alerts
        );
        assert!(rates(&Tally::default(), &[], &p).alerts.is_empty());
    }
}
