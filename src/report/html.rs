//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, no external
//! assets), so it can be mailed or archived and opened anywhere. Every number in it comes
//! from [`super::campaign::Report`], the same data `--format json|csv` writes.

use std::fmt::Write;

use super::campaign::Report;
use crate::bounce::policy::{COMPLAINT_ALARM, COMPLAINT_WARN};
use crate::commands::rates::pct;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}\
td:first-child,th:first-child{text-align:left}.kv td{text-align:left}.alert{color:#a40000;font-weight:600}\
.warn{color:#8a5a00;font-weight:600}svg text{font:11px system-ui,sans-serif;fill:#333}.muted{color:#777}";

fn duration_text(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{secs:.1} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn when(ms: u64) -> String {
    if ms == 0 {
        return "—".into();
    }
    match super::summary::utc_time(ms) {
        t if t.is_empty() => t,
        t => format!("{t} UTC"),
    }
}

/// Sends per minute as bars, with the configured rate as a dashed line.
fn minute_chart(r: &Report) -> String {
    let (w, h, left, bottom) = (900.0, 220.0, 50.0, 30.0);
    let data = &r.per_minute;
    if data.is_empty() {
        return "<p class=\"muted\">Nothing was sent yet.</p>".into();
    }
    let max_sent = data.iter().map(|m| m.sent).max().unwrap_or(0) as f64;
    // A configured rate far above what was sent would flatten the bars to nothing: then
    // the scale is the data's and the rate is named instead of drawn.
    let rate_on_scale = r
        .configured_per_minute
        .filter(|c| *c <= 10.0 * max_sent.max(1.0));
    let top = max_sent.max(rate_on_scale.unwrap_or(0.0)).max(1.0) * 1.05;
    let n = data.len() as f64;
    let bw = ((w - left) / n).clamp(1.0, 40.0);
    let y = |v: f64| h - bottom - (v / top) * (h - bottom - 10.0);
    let mut s = format!(
        "<svg id=\"chart-per-minute\" role=\"img\" aria-label=\"sends per minute\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\" stroke=\"#999\"/>",
        h - bottom,
        h - bottom
    );
    for (i, m) in data.iter().enumerate() {
        let x = left + i as f64 * bw;
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#3b7dd8\"><title>{} — {} sent, {} bounced, {} failed</title></rect>",
            y(m.sent as f64),
            (bw - 1.0).max(0.5),
            (h - bottom) - y(m.sent as f64),
            when(m.minute_ms),
            m.sent,
            m.bounced,
            m.failed
        );
    }
    if let (None, Some(rate)) = (rate_on_scale, r.configured_per_minute) {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"14\" fill=\"#d33\">configured {rate:.0}/min (far above, not drawn)</text>",
            left + 4.0
        );
    }
    if let Some(rate) = rate_on_scale {
        let _ = write!(
            s,
            "<line id=\"configured-rate\" x1=\"{left}\" y1=\"{:.1}\" x2=\"{w}\" y2=\"{:.1}\" stroke=\"#d33\" stroke-dasharray=\"6 4\"/>\
             <text x=\"{}\" y=\"{:.1}\" fill=\"#d33\">configured {rate:.0}/min</text>",
            y(rate),
            y(rate),
            left + 4.0,
            y(rate) - 4.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"4\" y=\"14\">{top:.0}</text><text x=\"4\" y=\"{}\">0</text>\
         <text x=\"{left}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        h - bottom,
        h - 8.0,
        esc(&when(data[0].minute_ms)),
        w,
        h - 8.0,
        esc(&when(data[data.len() - 1].minute_ms))
    );
    s
}

/// Horizontal bars, one per (label, value).
fn bars(id: &str, rows: &[(String, u64)], color: &str) -> String {
    if rows.is_empty() {
        return "<p class=\"muted\">None.</p>".into();
    }
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let (w, row_h, label_w) = (700.0, 22.0, 180.0);
    let h = row_h * rows.len() as f64 + 4.0;
    let mut s = format!(
        "<svg id=\"{id}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 2.0;
        let bw = (*v as f64 / max) * (w - label_w - 80.0);
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{:.1}\">{}</text><rect class=\"bar\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{v}</text>",
            y + 15.0,
            esc(label),
            row_h - 6.0,
            label_w + bw + 6.0,
            y + 15.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The complaint rate on a scale with the 0.1% and 0.3% lines.
fn complaint_chart(r: &Report) -> String {
    let rate = r.rates.complaint_rate;
    let (w, h) = (700.0, 60.0);
    let scale = (COMPLAINT_ALARM * 2.0).max(rate.unwrap_or(0.0) * 1.1);
    let x = |v: f64| 10.0 + (v / scale) * (w - 20.0);
    let mut s = format!(
        "<svg id=\"chart-complaints\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <rect x=\"10\" y=\"20\" width=\"{}\" height=\"16\" fill=\"#eee\"/>",
        w - 20.0
    );
    if let Some(c) = rate {
        let color = if c >= COMPLAINT_ALARM {
            "#c00"
        } else if c >= COMPLAINT_WARN {
            "#d90"
        } else {
            "#2a2"
        };
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"10\" y=\"20\" width=\"{:.1}\" height=\"16\" fill=\"{color}\"/>",
            x(c) - 10.0
        );
    }
    for (v, label) in [(COMPLAINT_WARN, "0.1%"), (COMPLAINT_ALARM, "0.3%")] {
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" y1=\"14\" x2=\"{:.1}\" y2=\"42\" stroke=\"#000\" stroke-dasharray=\"3 2\"/><text x=\"{:.1}\" y=\"54\" text-anchor=\"middle\">{label}</text>",
            x(v),
            x(v),
            x(v)
        );
    }
    s.push_str("</svg>");
    s
}

/// Renders the whole report.
pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>blast report: {}</title>\
         <style>{STYLE}</style></head><body><h1>Campaign <span id=campaign>{}</span></h1>",
        esc(&r.campaign),
        esc(&r.campaign)
    );
    let _ = write!(
        h,
        "<table class=\"kv\" id=\"summary\"><tr><td>first attempt</td><td>{}</td></tr>\
         <tr><td>last result</td><td>{}</td></tr><tr><td>duration</td><td>{}</td></tr>\
         <tr><td>average rate</td><td>{:.0} messages/min</td></tr>\
         <tr><td>configured rate</td><td>{}</td></tr><tr><td>recipients</td><td id=\"total\">{}</td></tr></table>",
        when(r.first_ms),
        when(r.last_ms),
        duration_text(r.duration_s),
        r.average_per_minute,
        r.configured_per_minute
            .map_or("unlimited".to_string(), |x| format!("{x:.0}/min")),
        r.total
    );
    for a in &r.rates.alerts {
        let class = if a.starts_with("ALARM") {
            "alert"
        } else {
            "warn"
        };
        let _ = write!(h, "<p class=\"{class}\">{}</p>", esc(a));
    }
    h.push_str("<h2>Sends per minute</h2>");
    h.push_str(&minute_chart(r));
    h.push_str("<h2>Outcomes</h2>");
    let states: Vec<(String, u64)> = r
        .states
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.clone(), *n))
        .collect();
    h.push_str(&bars("chart-states", &states, "#3b7dd8"));
    h.push_str("<table id=\"states\"><tr><th>state</th><th>recipients</th></tr>");
    for (s, n) in &r.states {
        let _ = write!(
            h,
            "<tr><td>{}</td><td data-state=\"{}\">{n}</td></tr>",
            esc(s),
            esc(s)
        );
    }
    h.push_str("</table>");
    h.push_str("<h2>Top domains</h2><table id=\"domains\"><tr><th>domain</th><th>sent</th><th>deferred</th><th>bounced</th><th>failed</th><th>bounce rate</th></tr>");
    for d in &r.domains {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.domain),
            d.sent,
            d.deferred,
            d.bounced,
            d.failed,
            pct(d.bounce_rate)
        );
    }
    h.push_str("</table><h2>Bounces and complaints</h2>");
    let rr = &r.rates;
    let _ = write!(
        h,
        "<table class=\"kv\" id=\"rates\"><tr><td>hard bounces</td><td id=\"hard-bounces\">{}</td><td>{}</td></tr>\
         <tr><td>unsubscribes</td><td id=\"unsubscribes\">{}</td><td>{}</td></tr>\
         <tr><td>complaints</td><td id=\"complaints\">{}</td><td>{}</td></tr></table>",
        rr.hard_bounces,
        pct(rr.bounce_rate),
        rr.unsubscribes,
        pct(rr.unsubscribe_rate),
        rr.complaints,
        match rr.complaint_rate {
            Some(c) => format!(
                "{} of {} delivered to receivers that send feedback reports",
                pct(c),
                rr.feedback_delivered
            ),
            None => "no mail went to a receiver that sends feedback reports".into(),
        }
    );
    h.push_str(&complaint_chart(r));
    h.push_str(
        "<p class=\"muted\">Gmail sends no feedback reports: its complaint rate is only in Google \
         Postmaster Tools. No open tracking: since Apple Mail Privacy Protection, most \"opens\" are \
         proxies fetching images.</p><h3>Bounce categories</h3>",
    );
    let cats: Vec<(String, u64)> = r.categories.iter().map(|(k, v)| (k.clone(), *v)).collect();
    h.push_str(&bars("chart-categories", &cats, "#c66"));
    if !r.links.is_empty() {
        let _ = write!(
            h,
            "<h2>Clicks</h2><p><span id=\"clicks\">{}</span> clicks on tracked links (link scanners that follow every link count too).</p>\
             <table id=\"links\"><tr><th>link</th><th>clicks</th></tr>",
            r.rates.clicks
        );
        for (url, n) in &r.links {
            let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(url));
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Pruned before sending</h2>");
    match &r.prune {
        None => h.push_str("<p class=\"muted\">No prune report found.</p>"),
        Some(p) => {
            let _ = write!(
                h,
                "<p>{} rows pruned; every row and why: <code>{}</code></p><table id=\"prune\"><tr><th>reason</th><th>rows</th></tr>",
                p.total,
                esc(&p.path)
            );
            for (reason, n) in &p.reasons {
                let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(reason));
            }
            h.push_str("</table>");
        }
    }
    if let Some(rows) = &r.recipients {
        h.push_str("<h2>Recipients</h2><table id=\"recipients\"><tr><th>address</th><th>state</th><th>attempts</th><th>last reply</th></tr>");
        for x in rows {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.address),
                esc(&x.state),
                x.attempts,
                esc(&x.last_reply)
            );
        }
        h.push_str("</table>");
    }
    let _ = writeln!(
        h,
        "<p class=\"muted\">Generated by blast {} at {}.</p></body></html>",
        env!("CARGO_PKG_VERSION"),
        when(r.generated_ms)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
