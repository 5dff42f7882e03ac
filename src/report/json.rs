//! `blast send --json-progress`: a [`Frame`] as one JSON object per line (on stdout, so a
//! dashboard reads a clean stream while the human messages stay on stderr).

use super::frame::Frame;

/// The JSON object of a frame. Keys: `campaign`, `elapsed_s`, `done`, `total`, `importing`
/// (`total` is still growing), `sent`, `deferred` (recipients deferred now), `bounced`,
/// `failed`, `skipped`, `rate_now`, `rate_avg` (whole messages per second), `eta_s` (null when
/// not meaningful), `limit`, `waiting_s` (null unless the lane sleeps until a retry is due),
/// `relay` (recent relay trouble, or null), `domains` (`domain`, `sent`, `deferred`, `bounced`,
/// `throttled`), `holds` (one line per response-rule hold in force), `unsubscribed`/`complaints` (null until counted), `final` (the last object,
/// whose figures are the store's counts).
pub fn object(campaign: &str, f: &Frame) -> serde_json::Value {
    let domains: Vec<serde_json::Value> = f
        .domains
        .iter()
        .map(|d| {
            serde_json::json!({
                "domain": d.domain,
                "sent": d.sent,
                "deferred": d.deferred,
                "bounced": d.bounced,
                "throttled": d.throttled,
            })
        })
        .collect();
    serde_json::json!({
        "campaign": campaign,
        "elapsed_s": f.elapsed.as_secs(),
        "done": f.done,
        "total": f.total,
        "importing": f.importing,
        "sent": f.sent,
        "deferred": f.deferred,
        "bounced": f.bounced,
        "failed": f.failed,
        "skipped": f.skipped,
        "rate_now": f.rate_now,
        "rate_avg": f.rate_avg,
        "eta_s": f.eta.map(|d| d.as_secs()),
        "holds": f.holds,
        "limit": f.limit,
        "waiting_s": f.waiting.map(|d| d.as_secs()),
        "relay": f.relay,
        "domains": domains,
        "unsubscribed": f.unsubscribed,
        "complaints": f.complaints,
        "final": f.last,
    })
}
