//! Warm-up: the daily caps of a new sending IP, enforced across runs and campaigns.
//!
//! Counted per (IP, scope, UTC day) in the global state ([`crate::store::warmup`], through its
//! one owner). The IP is the address receivers see (`egress_ip`, which defaults to
//! `source_ip`; `"default"` without either), because receivers build reputation per
//! connecting address. The scope is a provider rollup with a schedule of its own
//! (`[lane.warmup_providers]`: Gmail, Microsoft and Yahoo warm separately), else
//! [`IP_SCOPE`] for everything else; each message counts in exactly one scope.
//!
//! What counts: every attempt the receiver answered for the recipient — accepted, refused,
//! or deferred with a 4xx — since that is what the receiver saw and counts. What never
//! reached it (a refused connection, a 421 greeting, a lost connection that is tried again,
//! a stop, a render error) is given back. A message is reserved before its claim is
//! committed, so before its MAIL FROM; reservations are taken from the global count in small
//! blocks and written durably first, so a crash (even `kill -9`) leaves the count at or
//! above what was sent: the day's cap is never exceeded, and at most one block plus the
//! messages in flight go unsent that day.
//!
//! The schedule advances per *sending day*: today's step is the number of earlier days
//! (from `warmup_start`) on which the scope counted anything, so a day the IP sent nothing
//! does not advance it. With a brake, a sending day whose bounce or deferral share was above
//! its threshold holds the next sending day at the same step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;

use super::sites::Site;
use crate::clock;
use crate::config::warmup::{Brake, Warmup, IP_SCOPE};
use crate::config::LaneSettings;
use crate::error::{Error, Result};
use crate::owner::Global;
use crate::store::warmup::{DayCount, Settle, WarmupDay};

/// Where a scope stands today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// 0-based index into the schedule (may be past its end).
    pub step: usize,
    /// Today's cap (`None`: past the last step, no cap).
    pub cap: Option<u64>,
    /// Sending days before today.
    pub sending_days: usize,
    /// The brake held today's step.
    pub braked: bool,
}

/// Whether a day's outcomes hold the next day's step.
fn brakes(brake: Option<Brake>, c: &DayCount) -> bool {
    let (Some(b), n) = (brake, c.answered()) else {
        return false;
    };
    if n == 0 {
        return false;
    }
    let share = |x: u64| x as f64 / n as f64;
    b.bounce_rate.is_some_and(|t| share(c.bounced) > t)
        || b.deferral_rate.is_some_and(|t| share(c.deferred) > t)
}

/// Today's step of a schedule from one scope's recorded days (any order).
pub fn plan(steps: &[u64], w: &Warmup, days: &[(NaiveDate, DayCount)], today: NaiveDate) -> Plan {
    let mut sending: Vec<&(NaiveDate, DayCount)> = days
        .iter()
        .filter(|(d, c)| *d >= w.start && *d < today && c.used > 0)
        .collect();
    sending.sort_by_key(|(d, _)| *d);
    let (mut step, mut braked) = (0usize, false);
    for (_, c) in &sending {
        // This day ran at `step`; the next one runs one step up unless this one braked.
        braked = brakes(w.brake, c);
        if !braked {
            step += 1;
        }
    }
    Plan {
        step,
        cap: steps.get(step).copied(),
        sending_days: sending.len(),
        braked,
    }
}

/// The first day on which `n` more messages of a scope will have gone, sending every day
/// from `today` (with `used_today` already spent) and no brake: the estimate `blast check`
/// prints.
pub fn finish_date(steps: &[u64], p: Plan, used_today: u64, n: u64, today: NaiveDate) -> NaiveDate {
    let (mut left, mut day, mut step, mut used) = (n, today, p.step, used_today);
    loop {
        let Some(cap) = steps.get(step) else {
            return day;
        };
        let avail = cap.saturating_sub(used);
        if left <= avail {
            return day;
        }
        left -= avail;
        day = day.succ_opt().unwrap_or(day);
        step += 1;
        used = 0;
    }
}

/// The IP key warm-up counts under for a lane without an IP pool: its egress address.
pub fn ip_of(l: &LaneSettings) -> String {
    super::sites::ip_key(l.egress_ip.or(l.source_ip))
}

/// The IP keys warm-up counts under, by pool index: with `source_ips` each IP's egress
/// address (each warms on its own schedule: receivers build reputation per address), else
/// the lane's one ([`ip_of`]).
pub fn ips_of(l: &LaneSettings) -> Vec<String> {
    if l.source_ips.is_empty() {
        return vec![ip_of(l)];
    }
    l.source_ips
        .iter()
        .map(|p| super::sites::ip_key(Some(p.egress_ip)))
        .collect()
}

/// The pool index of the IP the recipient with store key `key` leaves from (the pool's own
/// hash, [`super::pool::pick`]); 0 without a pool.
pub fn ip_index(l: &LaneSettings, key: &str) -> usize {
    if l.source_ips.len() < 2 {
        return 0;
    }
    let members: Vec<(String, u32)> = l
        .source_ips
        .iter()
        .map(|p| (super::sites::ip_key(Some(p.ip)), p.weight))
        .collect();
    super::pool::pick(key, &members)
}

/// The scope of a provider index and its schedule (`None`: nothing caps it).
pub fn scope_of(w: &Warmup, provider: Option<usize>) -> Option<(&str, &[u64])> {
    if let Some(p) = provider.and_then(|p| w.providers.iter().find(|x| x.provider == p)) {
        return Some((p.name.as_str(), &p.steps));
    }
    (!w.steps.is_empty()).then_some((IP_SCOPE, w.steps.as_slice()))
}

/// How a scope is named to people.
pub fn scope_label(scope: &str) -> &str {
    if scope == IP_SCOPE {
        "all"
    } else {
        scope
    }
}

/// One scope's days from the records of an IP.
pub fn days_of(records: &[WarmupDay], scope: &str) -> Vec<(NaiveDate, DayCount)> {
    records
        .iter()
        .filter(|r| r.scope == scope)
        .filter_map(|r| Some((NaiveDate::parse_from_str(&r.day, "%Y-%m-%d").ok()?, r.count)))
        .collect()
}

/// The largest block of reservations taken at once.
const BLOCK_MAX: u64 = 1000;
/// Outcomes are written at most this often while a run goes on (and at its end): only the
/// brake and `blast status` read them, so a crash costs a few seconds of tallies, while the
/// caps themselves are reserved durably before sending.
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Where one scope of a lane's warm-up stands today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Today {
    /// The IP key.
    pub ip: String,
    /// The scope ([`IP_SCOPE`] or a provider).
    pub scope: String,
    /// Its step and cap.
    pub plan: Plan,
    /// Counted today so far.
    pub used: u64,
    /// Steps in its schedule.
    pub steps: usize,
    /// The warm-up has not started yet (today is before `warmup_start`).
    pub before_start: bool,
}

impl Today {
    /// `203.0.113.5 google: 30/50 today (sending day 2 of 5)`, short enough for a status line.
    pub fn line(&self) -> String {
        let label = scope_label(&self.scope);
        if self.before_start {
            return format!("{} {label}: not started yet", self.ip);
        }
        match self.plan.cap {
            None => format!(
                "{} {label}: {} today, warm-up complete (no cap)",
                self.ip, self.used
            ),
            Some(cap) => format!(
                "{} {label}: {}/{cap} today (sending day {} of {}{})",
                self.ip,
                self.used,
                self.plan.sending_days + 1,
                self.steps,
                if self.plan.braked {
                    ", held by the brake"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Every scope of every IP of a lane's warm-up today (in pool order, then scope), from the
/// recorded days (of any IPs: each IP's own are picked out).
pub fn today(l: &LaneSettings, records: &[WarmupDay], today: NaiveDate) -> Vec<Today> {
    ips_of(l)
        .into_iter()
        .flat_map(|ip| today_of(l, &ip, records, today))
        .collect()
}

fn today_of(l: &LaneSettings, ip: &str, records: &[WarmupDay], today: NaiveDate) -> Vec<Today> {
    let Some(w) = &l.warmup else {
        return Vec::new();
    };
    let mut scopes: Vec<(&str, &[u64])> = Vec::new();
    if !w.steps.is_empty() {
        scopes.push((IP_SCOPE, &w.steps));
    }
    scopes.extend(
        w.providers
            .iter()
            .map(|p| (p.name.as_str(), p.steps.as_slice())),
    );
    let day = today.to_string();
    scopes
        .into_iter()
        .map(|(scope, steps)| {
            let mine: Vec<WarmupDay> = records.iter().filter(|r| r.ip == ip).cloned().collect();
            Today {
                ip: ip.to_string(),
                scope: scope.to_string(),
                plan: plan(steps, w, &days_of(&mine, scope), today),
                used: mine
                    .iter()
                    .find(|r| r.scope == scope && r.day == day)
                    .map_or(0, |r| r.count.used),
                steps: steps.len(),
                before_start: today < w.start,
            }
        })
        .collect()
}

/// What the dispatcher may do with a recipient of a capped scope.
#[derive(Debug)]
pub enum Take {
    /// Reserved: send it.
    Go,
    /// Today's cap is spent (or the warm-up has not started): defer until then.
    Defer {
        /// The start of the next sending day (ms since the epoch).
        until_ms: u64,
        /// Why, for the record and the summary.
        why: String,
    },
}

#[derive(Debug)]
struct Budget {
    day: NaiveDate,
    /// Reserved from the global count and not yet spent.
    left: u64,
    plan: Option<Plan>,
    exhausted: bool,
    /// Outcomes not yet written to the global count.
    tally: DayCount,
}

impl Budget {
    fn new(day: NaiveDate) -> Budget {
        Budget {
            day,
            left: 0,
            plan: None,
            exhausted: false,
            tally: DayCount::default(),
        }
    }

    /// What goes to the global count for this budget (its leftovers too when `release`).
    fn settle(&mut self, ip: &str, scope: &str, release: bool) -> Option<Settle> {
        let s = Settle {
            ip: ip.to_string(),
            scope: scope.to_string(),
            day: self.day.to_string(),
            release: if release {
                std::mem::take(&mut self.left)
            } else {
                0
            },
            sent: self.tally.sent,
            bounced: self.tally.bounced,
            deferred: self.tally.deferred,
        };
        self.tally = DayCount::default();
        (s.release + s.sent + s.bounced + s.deferred > 0).then_some(s)
    }
}

/// How an attempt ended, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Accepted.
    Sent,
    /// Refused permanently.
    Bounced,
    /// Refused for now.
    Deferred,
    /// Never reached the receiver: its reservation goes back.
    Released,
}

/// One lane run's warm-up: local budgets reserved from the global count.
pub struct Runtime {
    w: Arc<Warmup>,
    /// The IP keys, by pool index ([`ips_of`]).
    ips: Vec<String>,
    global: Global,
    /// By (pool index, scope).
    budgets: Mutex<HashMap<(usize, String), Budget>>,
    /// Recipients this run deferred because a cap was reached.
    pub deferred: AtomicU64,
    /// The latest time they were deferred to (ms).
    pub deferred_until_ms: AtomicU64,
    last_settle: Mutex<std::time::Instant>,
}

/// Runs a global-state call off the reactor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Lane(format!("warm-up task failed: {e}")))?
}

impl Runtime {
    /// The lane's warm-up, if it has one.
    pub fn new(l: &LaneSettings, global: Global) -> Option<Runtime> {
        Some(Runtime {
            w: l.warmup.clone()?,
            ips: ips_of(l),
            global,
            budgets: Mutex::default(),
            deferred: AtomicU64::new(0),
            deferred_until_ms: AtomicU64::new(0),
            last_settle: Mutex::new(std::time::Instant::now()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, String), Budget>> {
        self.budgets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool index of a site's IP (clamped: a lane without a pool has one).
    fn ip_index(&self, site: Option<&Site>) -> usize {
        site.map_or(0, |s| s.ip).min(self.ips.len() - 1)
    }

    /// Reserves one message to `site`, or says until when it must wait. Only the dispatcher
    /// calls it (one caller, so a refill never races another).
    pub async fn take(&self, site: &Site) -> Result<Take> {
        let Some((scope, steps)) = scope_of(&self.w, site.provider) else {
            return Ok(Take::Go);
        };
        let i = self.ip_index(Some(site));
        let ip = self.ips[i].as_str();
        let bk = (i, scope.to_string());
        let today = clock::today();
        if today < self.w.start {
            return Ok(Take::Defer {
                until_ms: clock::day_start_ms(self.w.start),
                why: format!("warm-up of {ip} starts on {}", self.w.start),
            });
        }
        let (stale, known) = {
            let mut b = self.lock();
            let e = b.entry(bk.clone()).or_insert_with(|| Budget::new(today));
            let mut stale = None;
            if e.day != today {
                // A new day: yesterday's leftovers go back to yesterday's count.
                stale = e.settle(ip, scope, true);
                *e = Budget::new(today);
            }
            if e.left > 0 {
                e.left -= 1;
                return Ok(Take::Go);
            }
            if e.exhausted {
                return Ok(self.defer(ip, scope, today, e.plan));
            }
            (stale, e.plan)
        };
        if let Some(s) = stale {
            let g = self.global.clone();
            blocking(move || g.warmup_settle(&[s])).await?;
        }
        let plan = match known {
            Some(p) => p,
            None => {
                let (g, ipk) = (self.global.clone(), ip.to_string());
                let records = blocking(move || g.warmup_days(Some(&ipk))).await?;
                let p = plan(steps, &self.w, &days_of(&records, scope), today);
                self.lock().get_mut(&bk).expect("budget made above").plan = Some(p);
                p
            }
        };
        // Blocks: one durable write per block rather than per message, and little (a
        // fiftieth of the cap) left unsent when a run dies holding one.
        let want = plan.cap.map_or(BLOCK_MAX, |c| (c / 50).clamp(1, BLOCK_MAX));
        let (g, ipk, sc, day) = (
            self.global.clone(),
            ip.to_string(),
            scope.to_string(),
            today.to_string(),
        );
        let cap = plan.cap;
        let granted = blocking(move || g.warmup_reserve(&ipk, &sc, &day, want, cap)).await?;
        let mut b = self.lock();
        let e = b.get_mut(&bk).expect("budget made above");
        if granted == 0 {
            e.exhausted = true;
            return Ok(self.defer(ip, scope, today, Some(plan)));
        }
        e.left += granted - 1;
        Ok(Take::Go)
    }

    fn defer(&self, ip: &str, scope: &str, today: NaiveDate, plan: Option<Plan>) -> Take {
        let next = today.succ_opt().unwrap_or(today);
        let (cap, day, held) = plan.map_or((0, 1, false), |p| {
            (p.cap.unwrap_or(0), p.sending_days + 1, p.braked)
        });
        let of = if scope == IP_SCOPE {
            String::new()
        } else {
            format!(" to {scope}")
        };
        Take::Defer {
            until_ms: clock::day_start_ms(next),
            why: format!(
                "warm-up: today's cap of {cap}/d for {ip}{of} is reached (sending day {day}{}); next sending day {next}",
                if held { ", held by the brake" } else { "" }
            ),
        }
    }

    /// Records that `n` recipients were deferred until `until_ms` (for the summary).
    pub fn note_deferred(&self, n: u64, until_ms: u64) {
        self.deferred.fetch_add(n, Ordering::Relaxed);
        self.deferred_until_ms
            .fetch_max(until_ms, Ordering::Relaxed);
    }

    /// Counts how one attempt to `site` ended (the writer, per result).
    pub fn count(&self, site: Option<&Site>, how: Counted) {
        let Some((scope, _)) = scope_of(&self.w, site.and_then(|s| s.provider)) else {
            return;
        };
        let bk = (self.ip_index(site), scope.to_string());
        let mut b = self.lock();
        let Some(e) = b.get_mut(&bk) else { return };
        match how {
            Counted::Sent => e.tally.sent += 1,
            Counted::Bounced => e.tally.bounced += 1,
            Counted::Deferred => e.tally.deferred += 1,
            // Back into this run's budget: the next message spends it.
            Counted::Released => {
                e.left += 1;
                e.exhausted = false;
            }
        }
    }

    /// Writes the outcomes counted so far (called after each group of results, written every
    /// [`SETTLE_EVERY`]); at the end of the run (`last`) the unspent reservations go back too.
    pub async fn settle(&self, last: bool) -> Result<()> {
        {
            let mut t = self.last_settle.lock().unwrap_or_else(|p| p.into_inner());
            if !last && t.elapsed() < SETTLE_EVERY {
                return Ok(());
            }
            *t = std::time::Instant::now();
        }
        let settles: Vec<Settle> = self
            .lock()
            .iter_mut()
            .filter_map(|((i, scope), b)| b.settle(&self.ips[*i], scope, last))
            .collect();
        if settles.is_empty() {
            return Ok(());
        }
        let g = self.global.clone();
        blocking(move || g.warmup_settle(&settles)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn w(brake: Option<Brake>) -> Warmup {
        Warmup {
            start: d("2026-12-01"),
            steps: vec![50, 100, 500],
            providers: vec![],
            brake,
        }
    }

    fn day(used: u64, sent: u64, bounced: u64) -> DayCount {
        DayCount {
            used,
            sent,
            bounced,
            deferred: 0,
        }
    }

    #[test]
    fn only_sending_days_advance_the_schedule() {
        let w = w(None);
        let p = plan(&w.steps, &w, &[], d("2026-12-05"));
        assert_eq!((p.step, p.cap), (0, Some(50)));
        // Sent on the 1st and the 3rd; nothing on the 2nd, the 4th or before the start.
        let days = [
            (d("2026-11-30"), day(10, 10, 0)),
            (d("2026-12-01"), day(50, 50, 0)),
            (d("2026-12-02"), day(0, 0, 0)),
            (d("2026-12-03"), day(100, 100, 0)),
        ];
        let p = plan(&w.steps, &w, &days, d("2026-12-05"));
        assert_eq!((p.step, p.cap, p.sending_days), (2, Some(500), 2));
        // Today's own count does not move today's step.
        let p = plan(&w.steps, &w, &days, d("2026-12-03"));
        assert_eq!(p.cap, Some(100));
        let more = [days[1], days[3], (d("2026-12-04"), day(500, 500, 0))];
        assert_eq!(plan(&w.steps, &w, &more, d("2026-12-05")).cap, None);
    }

    #[test]
    fn the_brake_holds_the_step_after_a_bad_day() {
        let w = w(Some(Brake {
            bounce_rate: Some(0.05),
            deferral_rate: None,
        }));
        let days = [(d("2026-12-01"), day(50, 40, 10))];
        let p = plan(&w.steps, &w, &days, d("2026-12-02"));
        assert_eq!((p.step, p.cap, p.braked), (0, Some(50), true));
        let days = [days[0], (d("2026-12-02"), day(50, 50, 0))];
        let p = plan(&w.steps, &w, &days, d("2026-12-03"));
        assert_eq!((p.step, p.cap, p.braked), (1, Some(100), false));
    }

    #[test]
    fn the_finish_date_follows_the_caps() {
        let w = w(None);
        let p = plan(&w.steps, &w, &[], d("2026-12-01"));
        let f = |n, used| finish_date(&w.steps, p, used, n, d("2026-12-01"));
        assert_eq!(f(50, 0), d("2026-12-01"));
        assert_eq!(f(120, 0), d("2026-12-02"));
        assert_eq!(f(150, 10), d("2026-12-03"));
        // Past the last step nothing caps it.
        assert_eq!(f(1_000_000, 0), d("2026-12-04"));
    }
}
