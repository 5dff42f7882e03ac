//! `blast report`'s data: what [`super::gather`] found (the numbers `blast status --json`
//! gives), arranged for the report, and its JSON and CSV forms. The HTML form is
//! [`super::html`].

use std::path::Path;

use serde::Serialize;

use super::gather::Gathered;
use crate::commands::rates::Rates;
use crate::store::campaign::CampaignStore;
use crate::store::record::State;

/// Domains in the report's table.
pub const TOP_DOMAINS: usize = 20;

/// One minute of sending.
#[derive(Debug, Clone, Serialize)]
pub struct Minute {
    /// Its start (ms since the epoch).
    pub minute_ms: u64,
    /// Results recorded in it.
    pub sent: u64,
    /// See `sent`.
    pub bounced: u64,
    /// See `sent`.
    pub failed: u64,
}

/// One domain's row.
#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    /// The recipient domain.
    pub domain: String,
    /// Recipients in each state.
    pub sent: u64,
    /// See `sent`.
    pub deferred: u64,
    /// See `sent`.
    pub bounced: u64,
    /// See `sent`.
    pub failed: u64,
    /// bounced ÷ (sent + bounced).
    pub bounce_rate: f64,
}

/// The prune report's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Prune {
    /// Where every pruned row is listed.
    pub path: String,
    /// Rows pruned.
    pub total: u64,
    /// Per reason, most first.
    pub reasons: Vec<(String, u64)>,
}

/// One recipient (`--recipients`).
#[derive(Debug, Clone, Serialize)]
pub struct Recipient {
    /// The address.
    pub address: String,
    /// Its state.
    pub state: String,
    /// Delivery attempts.
    pub attempts: u16,
    /// The last reply (or skip reason).
    pub last_reply: String,
    /// Its last change (ms since the epoch).
    pub updated_ms: u64,
}

/// Everything the report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Campaign id.
    pub campaign: String,
    /// When the report was made.
    pub generated_ms: u64,
    /// The object `blast status --json` prints for the campaign.
    pub status: serde_json::Value,
    /// Recipients.
    pub total: u64,
    /// Counts per state, in the states' order.
    pub states: Vec<(String, u64)>,
    /// First attempt and last result (ms since the epoch, 0 before any).
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// From the first attempt to the last result.
    pub duration_s: f64,
    /// Results per minute over that time.
    pub average_per_minute: f64,
    /// The lane's `rate`, per minute (`None`: unlimited).
    pub configured_per_minute: Option<f64>,
    /// Results per minute.
    pub per_minute: Vec<Minute>,
    /// The busiest [`TOP_DOMAINS`] domains.
    pub domains: Vec<Domain>,
    /// Bounce, unsubscribe and complaint rates.
    pub rates: Rates,
    /// Bounced and failed recipients by category, most first.
    pub categories: Vec<(String, u64)>,
    /// Clicks per tracked link, most first.
    pub links: Vec<(String, u64)>,
    /// The prune report's summary, when there is one.
    pub prune: Option<Prune>,
    /// Every recipient, with `--recipients`.
    pub recipients: Option<Vec<Recipient>>,
}

/// Reads the prune report (`file,line,address,reason,detail`) and counts its reasons.
fn prune_summary(path: &Path) -> Option<Prune> {
    let mut r = csv::Reader::from_path(path).ok()?;
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    let mut total = 0;
    for rec in r.records().flatten() {
        total += 1;
        *counts
            .entry(rec.get(3).unwrap_or("").to_string())
            .or_default() += 1;
    }
    let mut reasons: Vec<_> = counts.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Some(Prune {
        path: path.display().to_string(),
        total,
        reasons,
    })
}

/// Arranges `g` for the report; `recipients` reads every record again for the per-recipient
/// rows.
pub fn build(
    s: &crate::config::Settings,
    g: &Gathered,
    st: &CampaignStore,
    recipients: bool,
) -> crate::error::Result<Report> {
    let c = &g.counts;
    let states = State::ALL
        .iter()
        .map(|st| (st.name().to_string(), c.get(*st)))
        .collect();
    let duration_s = g.last_ms.saturating_sub(g.first_ms) as f64 / 1000.0;
    let done = c.get(State::Sent) + c.get(State::Bounced) + c.get(State::Failed);
    let average_per_minute = if duration_s > 0.0 {
        done as f64 / duration_s * 60.0
    } else {
        0.0
    };
    let configured_per_minute = s
        .lane
        .rate
        .as_ref()
        .map(|r| r.count as f64 * 60.0 / r.per.as_secs_f64().max(0.001));
    let domains = g
        .domains
        .iter()
        .take(TOP_DOMAINS)
        .map(|(d, [sent, deferred, bounced, failed])| Domain {
            domain: d.clone(),
            sent: *sent,
            deferred: *deferred,
            bounced: *bounced,
            failed: *failed,
            bounce_rate: if sent + bounced == 0 {
                0.0
            } else {
                *bounced as f64 / (sent + bounced) as f64
            },
        })
        .collect();
    let mut categories: Vec<_> = g.categories.iter().map(|(k, v)| (k.clone(), *v)).collect();
    categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let recipients = if recipients {
        let mut v = Vec::new();
        for kv in st.iter() {
            let (_, r) = kv?;
            v.push(Recipient {
                address: r.address.clone(),
                state: r.state.name().to_string(),
                attempts: r.attempts,
                last_reply: r.last_reply.clone(),
                updated_ms: r.updated_ms,
            });
        }
        Some(v)
    } else {
        None
    };
    Ok(Report {
        campaign: s.id.clone(),
        generated_ms: crate::store::now_ms(),
        status: g.json(&s.id),
        total: c.total,
        states,
        first_ms: g.first_ms,
        last_ms: g.last_ms,
        duration_s,
        average_per_minute,
        configured_per_minute,
        per_minute: g
            .per_minute
            .iter()
            .map(|(m, [sent, bounced, failed])| Minute {
                minute_ms: *m,
                sent: *sent,
                bounced: *bounced,
                failed: *failed,
            })
            .collect(),
        domains,
        rates: g.rates.clone(),
        categories,
        links: {
            let mut l: Vec<(String, u64)> = g
                .source_counts
                .iter()
                .filter_map(|(k, n)| Some((k.strip_prefix("click:")?.to_string(), *n)))
                .collect();
            l.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            l
        },
        prune: prune_summary(&crate::send::campaign_dir(s).join("pruned.csv")),
        recipients,
    })
}

/// The report as CSV: `section,name,field,value` rows (one table that every spreadsheet
/// pivots), the same numbers as the HTML and JSON forms.
pub fn to_csv(r: &Report) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut row = |a: &str, b: &str, c: &str, d: String| {
        let _ = w.write_record([a, b, c, d.as_str()]);
    };
    row("section", "name", "field", "value".into());
    for (k, v) in [
        ("total", r.total.to_string()),
        ("first_ms", r.first_ms.to_string()),
        ("last_ms", r.last_ms.to_string()),
        ("duration_s", format!("{:.3}", r.duration_s)),
        ("average_per_minute", format!("{:.1}", r.average_per_minute)),
        (
            "configured_per_minute",
            r.configured_per_minute
                .map_or(String::new(), |x| format!("{x:.1}")),
        ),
    ] {
        row("summary", k, "", v);
    }
    for (s, n) in &r.states {
        row("state", s, "recipients", n.to_string());
    }
    let rr = &r.rates;
    for (k, v) in [
        ("hard_bounces", rr.hard_bounces.to_string()),
        ("bounce_rate", rr.bounce_rate.to_string()),
        ("unsubscribes", rr.unsubscribes.to_string()),
        ("unsubscribe_rate", rr.unsubscribe_rate.to_string()),
        ("complaints", rr.complaints.to_string()),
        ("feedback_delivered", rr.feedback_delivered.to_string()),
        (
            "complaint_rate",
            rr.complaint_rate.map_or(String::new(), |c| c.to_string()),
        ),
    ] {
        row("rates", k, "", v);
    }
    for m in &r.per_minute {
        let name = m.minute_ms.to_string();
        row("minute", &name, "sent", m.sent.to_string());
        row("minute", &name, "bounced", m.bounced.to_string());
        row("minute", &name, "failed", m.failed.to_string());
    }
    for d in &r.domains {
        row("domain", &d.domain, "sent", d.sent.to_string());
        row("domain", &d.domain, "deferred", d.deferred.to_string());
        row("domain", &d.domain, "bounced", d.bounced.to_string());
        row("domain", &d.domain, "failed", d.failed.to_string());
    }
    for (k, n) in &r.categories {
        row("category", k, "recipients", n.to_string());
    }
    row("rates", "clicks", "", r.rates.clicks.to_string());
    for (url, n) in &r.links {
        row("link", url, "clicks", n.to_string());
    }
    if let Some(p) = &r.prune {
        row("prune", "total", "", p.total.to_string());
        for (k, n) in &p.reasons {
            row("prune", k, "rows", n.to_string());
        }
    }
    for x in r.recipients.iter().flatten() {
        row("recipient", &x.address, &x.state, x.last_reply.clone());
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}
