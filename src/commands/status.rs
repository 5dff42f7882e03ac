//! `blast status CAMPAIGN [--json] [--config blast.toml]`: counts per state, the bounce,
//! unsubscribe and complaint rates ([`super::rates`]), the top domains, the last errors, and
//! a warning per domain that rejected the sender or the message (5.7.x blocklist, DMARC,
//! content…): those recipients are bounced for the campaign but not suppressed, and the cause
//! is usually on the sending side, so a postmaster must hear about it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::commands::rates;
use crate::config;
use crate::error::{Error, Result};
use crate::report;
use crate::send;
use crate::store::campaign::CampaignStore;
use crate::store::record::{Record, State};

/// Sender/message-level permanent failures of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Recipient domain.
    pub domain: String,
    /// Bounced recipients of that domain whose reply was not about the address.
    pub count: u64,
    /// The most recent such reply.
    pub last: String,
}

/// Collects [`Warning`]s from bounced records: per domain, sorted by count (descending) then
/// domain name.
#[derive(Debug, Default)]
pub struct Warnings {
    by_domain: BTreeMap<String, (u64, u64, String)>, // count, updated_ms of last, last
}

impl Warnings {
    /// Looks at one record.
    pub fn note(&mut self, r: &Record) {
        // The class stored with the record decides (older records: their reply text).
        if r.state != State::Bounced || r.is_address_bounce() {
            return;
        }
        let e = self
            .by_domain
            .entry(r.domain().to_string())
            .or_insert((0, 0, String::new()));
        e.0 += 1;
        if r.updated_ms >= e.1 {
            e.1 = r.updated_ms;
            e.2 = r.last_reply.clone();
        }
    }

    /// The warnings, most affected domain first.
    pub fn finish(self) -> Vec<Warning> {
        let mut v: Vec<Warning> = self
            .by_domain
            .into_iter()
            .map(|(domain, (count, _, last))| Warning {
                domain,
                count,
                last,
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.domain.cmp(&b.domain)));
        v
    }
}

/// The warnings as a JSON array of `{"domain", "count", "last"}`.
pub fn warnings_json(w: &[Warning]) -> serde_json::Value {
    w.iter()
        .map(|w| serde_json::json!({"domain": w.domain, "count": w.count, "last": w.last}))
        .collect::<Vec<_>>()
        .into()
}

/// The campaign's settings, with the global list and `[bounces]` policy of `server` (the
/// blast.toml it was sent with) when given.
pub fn settings(campaign: &Path, server: Option<&Path>) -> Result<config::Settings> {
    let mut s = config::load(campaign)?;
    if let Some(server) = server {
        let sv = crate::serve::config::load(server)?;
        s.bounce_policy = sv.bounce_policy;
        s.suppression_dir = Some(sv.state_dir);
    }
    Ok(s)
}

/// Opens the store of a campaign that is not being sent (`blast report`).
pub fn open_finished(campaign: &Path, s: &config::Settings) -> Result<CampaignStore> {
    let dir = send::store_dir(s);
    if !dir.exists() {
        return Err(not_sent(campaign, s, &dir));
    }
    CampaignStore::open(&dir, Duration::from_millis(200)).map_err(|e| match e {
        Error::Locked(_) => Error::Lane(format!(
            "{}: campaign {} is being sent right now; `blast status` shows its progress, and the \
             report can be made once the send ends",
            campaign.display(),
            s.id
        )),
        e => e,
    })
}

fn not_sent(campaign: &Path, s: &config::Settings, dir: &Path) -> Error {
    Error::Config(format!(
        "{}: campaign {} has not been sent yet (no state in {})",
        campaign.display(),
        s.id,
        dir.display()
    ))
}

/// Runs `blast status` (`server`: the blast.toml the campaign was sent with).
pub fn run(campaign: &Path, json: bool, server: Option<&Path>) -> Result<i32> {
    let s = settings(campaign, server)?;
    let dir = send::store_dir(&s);
    let shards = super::shards::find(&s);
    if !shards.is_empty() && !dir.exists() {
        return super::shards::run(&s, &shards, json);
    }
    if !dir.exists() {
        return Err(not_sent(campaign, &s, &dir));
    }
    let st = match CampaignStore::open(&dir, Duration::from_millis(200)) {
        Ok(st) => st,
        Err(Error::Locked(_)) => {
            // A send is running: report its snapshot (JSON with the same keys as below).
            let snap = send::campaign_dir(&s).join("status.json");
            let text = std::fs::read_to_string(&snap).map_err(|e| {
                Error::io(
                    format!("a send is running; reading its snapshot {}", snap.display()),
                    e,
                )
            })?;
            if json {
                println!("{}", text.trim_end());
            } else {
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    Error::io(
                        format!(
                            "a send is running; its snapshot {} is not JSON",
                            snap.display()
                        ),
                        e.into(),
                    )
                })?;
                print_running(&s.id, &v);
                print_warmup(&s);
            }
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let g = report::gather::gather(&s, &st)?;
    if json {
        println!("{}", g.json(&s.id));
        return Ok(0);
    }
    let c = &g.counts;
    print_table(&s.id, c.total, |st| c.get(st));
    rates::print(&g.rates, &g.tally);
    if !g.domains.is_empty() {
        println!(
            "  {:<30} {:>8} {:>8} {:>8}",
            "domain", "sent", "deferred", "bounced"
        );
        for (d, [a, b, c, _]) in g.domains.iter().take(10) {
            println!("  {d:<30} {a:>8} {b:>8} {c:>8}");
        }
    }
    if !g.errors.is_empty() {
        println!("  last errors:");
        for (_, e) in &g.errors {
            println!("    {e}");
        }
    }
    for w in &g.warnings {
        println!(
            "warning: {}: {} sender/message-level rejections (not suppressed), last: {}",
            w.domain, w.count, w.last
        );
    }
    if g.ambiguous_resends > 0 {
        println!(
            "  {} messages were resent after their reply was lost past the final dot (each may \
             have arrived twice)",
            g.ambiguous_resends
        );
    }
    print_holds(&g.holds);
    print_warmup(&s);
    Ok(0)
}

/// Today's warm-up use of the lane's IPs, one line per IP and scope (used/cap), when it warms
/// up.
pub fn print_warmup(s: &config::Settings) {
    if s.lane.warmup.is_none() {
        return;
    }
    let g = crate::owner::Global::shared(s.suppression_state_dir());
    match g.warmup_days(None) {
        Ok(records) => {
            for t in crate::lane::warmup::today(&s.lane, &records, crate::clock::today()) {
                println!("warm-up {}", t.line());
            }
        }
        Err(e) => println!("warm-up: cannot read the counts: {e}"),
    }
}

/// The response-rule holds on the lane's IP: what a receiver asked for, and until when.
pub fn print_holds(holds: &[crate::store::suppression::SiteHold]) {
    for h in holds {
        let what = match &h.rate {
            None => "suspended".to_string(),
            Some(r) => format!("held to {r}"),
        };
        println!(
            "hold: {} {what} until {} UTC (rule {}, source IP {}): {}",
            h.site,
            crate::report::summary::utc_time(h.until_ms),
            h.rule,
            h.ip,
            h.reply
        );
    }
}

/// The counts table, the same whether a send runs or not.
fn print_table(id: &str, total: u64, count: impl Fn(State) -> u64) {
    println!("campaign {id}: {total} recipients");
    for state in State::ALL {
        println!("  {:<10} {:>10}", state.name(), count(state));
    }
}

/// The table from a running send's snapshot, then what only the snapshot knows (this run's
/// counters) and what waits for the end (domains, errors: they need the store).
fn print_running(id: &str, v: &serde_json::Value) {
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let at = n("at_ms")
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
        .map(|t| format!(" as of {}", t.format("%H:%M:%S UTC")))
        .unwrap_or_default();
    match n("total") {
        Some(total) => print_table(id, total, |st| n(st.name()).unwrap_or(0)),
        None => println!("campaign {id}: counts not known yet (the send is importing)"),
    }
    let run = |k: &str| n(k).unwrap_or(0);
    println!(
        "  a send is running (pid {}): counts{at}; this run sent {}, deferred {}, bounced {}, failed {}",
        n("pid").map_or_else(|| "?".to_string(), |p| p.to_string()),
        run("sent_this_run"),
        run("deferred_this_run"),
        run("bounced_this_run"),
        run("failed_this_run")
    );
    println!("  (domains and last errors are shown once it ends)");
}
