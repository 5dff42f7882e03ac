//! One frame of the progress display: every figure the terminal, the plain lines and the JSON
//! lines show, computed once from the lane's [`Stats`] so the three never disagree.
//!
//! The figures, and what they mean:
//! - `done / total`: this run's final results (sent, bounced, failed, skipped at send time)
//!   out of the recipients it has to settle (pending and deferred at start plus what the
//!   import adds); while the import runs, `total` is the count so far and `importing` is set.
//! - `sent`, `bounced`, `failed`, `skipped`: the campaign's recipients in those states (the
//!   store's counts at the start of the run plus this run's results), so the last frame
//!   equals `blast status`.
//! - `deferred`: recipients deferred right now, not deferral attempts.
//! - `rate_now`: results per second over the last [`WINDOW`]; `rate_avg`: results per second
//!   over the time the lane was sending — time spent waiting for retries or for a backed-off
//!   relay is left out, so the average does not sink while nothing can be sent.
//! - `eta`: only once the total is final and results are coming in, for the recipients not
//!   waiting for a retry.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::lane::live::DomainLive;
use crate::lane::Stats;
use crate::store::campaign::Counts;
use crate::store::record::State;

/// The span `rate_now` is measured over.
pub const WINDOW: Duration = Duration::from_secs(5);
/// Sending time before `rate_avg` is its own figure (before that it is `rate_now`). Short,
/// because a fast lane can finish its first pass in well under a second and then wait
/// minutes for retries: the average over that half second is the honest figure, and the
/// window rate would sink towards zero during the wait.
const AVG_AFTER: Duration = Duration::from_millis(200);
/// Domain lines shown at most.
pub const DOMAINS: usize = 5;
/// Relay trouble older than this is no longer shown.
const RELAY_NOTE: Duration = Duration::from_secs(10);

/// The campaign's counts per state when the run started (zero for a new campaign).
#[derive(Debug, Default, Clone, Copy)]
pub struct Baseline {
    /// Sent before this run.
    pub sent: u64,
    /// Deferred at the start.
    pub deferred: u64,
    /// Bounced before this run.
    pub bounced: u64,
    /// Failed before this run.
    pub failed: u64,
    /// Skipped before this run (or by this run's import of an existing campaign).
    pub skipped: u64,
}

impl Baseline {
    /// From the store's counts.
    pub fn from_counts(c: &Counts) -> Baseline {
        Baseline {
            sent: c.get(State::Sent),
            deferred: c.get(State::Deferred),
            bounced: c.get(State::Bounced),
            failed: c.get(State::Failed),
            skipped: c.get(State::Skipped),
        }
    }
}

/// One domain's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainLine {
    /// The recipient domain.
    pub domain: String,
    /// Sent in this run.
    pub sent: u64,
    /// Deferred right now (of those this run deferred).
    pub deferred: u64,
    /// Bounced in this run.
    pub bounced: u64,
    /// The throttling reply while the domain backs off.
    pub throttled: Option<String>,
}

/// Everything one frame shows (see the module doc).
#[derive(Debug, Clone)]
pub struct Frame {
    /// Since the display started.
    pub elapsed: Duration,
    /// This run's final results.
    pub done: u64,
    /// Recipients this run has to settle (so far, while `importing`).
    pub total: u64,
    /// The import is still adding recipients.
    pub importing: bool,
    /// Campaign-wide sent.
    pub sent: u64,
    /// Recipients deferred right now.
    pub deferred: u64,
    /// Campaign-wide bounced.
    pub bounced: u64,
    /// Campaign-wide failed.
    pub failed: u64,
    /// Campaign-wide skipped.
    pub skipped: u64,
    /// Results per second over the last [`WINDOW`].
    pub rate_now: u64,
    /// Results per second over the time the lane was sending.
    pub rate_avg: u64,
    /// Time left for the recipients not waiting for a retry.
    pub eta: Option<Duration>,
    /// The lane's configured global rate (`"200/s"`, or `"unlimited"`).
    pub limit: String,
    /// The lane sleeps until the next retry is due, this long.
    pub waiting: Option<Duration>,
    /// The relay's recent trouble (421, refused connection).
    pub relay: Option<String>,
    /// The busiest domains.
    pub domains: Vec<DomainLine>,
    /// Response-rule holds in force (site, what, until, why).
    pub holds: Vec<String>,
    /// Unsubscribes in this campaign (`None` until they are counted: the hook for them).
    pub unsubscribed: Option<u64>,
    /// Complaints (`None` until they are counted).
    pub complaints: Option<u64>,
    /// The last frame, from the store's final counts.
    pub last: bool,
}

/// Turns [`Stats`] into [`Frame`]s, keeping the samples `rate_now` needs.
pub struct Sampler {
    started: Instant,
    base: Baseline,
    limit: String,
    samples: VecDeque<(Instant, u64)>,
}

impl Sampler {
    /// A sampler starting now; `limit` is the lane's rate as configured.
    pub fn new(base: Baseline, limit: String) -> Sampler {
        Sampler {
            started: Instant::now(),
            base,
            limit,
            samples: VecDeque::new(),
        }
    }

    /// The frame for now.
    pub fn frame(&mut self, s: &Stats) -> Frame {
        let now = Instant::now();
        let done = s.done();
        self.samples.push_back((now, done));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
        let rate_now = match self.samples.front() {
            Some((t, d)) if now.duration_since(*t) >= Duration::from_millis(500) => {
                per_sec(done - d, now.duration_since(*t))
            }
            _ => 0,
        };
        let elapsed = now.duration_since(self.started);
        let idle = s.live.idle();
        let active = elapsed.saturating_sub(idle);
        let rate_avg = if active >= AVG_AFTER {
            per_sec(done, active)
        } else {
            rate_now
        };
        let importing = s.importing.load(Ordering::Relaxed);
        let total = s.eligible.load(Ordering::Relaxed).max(done);
        let deferred = s.deferred_now.load(Ordering::Relaxed);
        let waiting_until = s.live.waiting_until_ms.load(Ordering::Relaxed);
        let waiting = (waiting_until > 0)
            .then(|| Duration::from_millis(waiting_until.saturating_sub(crate::store::now_ms())));
        let left = total.saturating_sub(done).saturating_sub(deferred);
        let eta = (!importing && waiting.is_none() && rate_now > 0 && left > 0)
            .then(|| Duration::from_secs(left.div_ceil(rate_now)));
        let now_i = Instant::now();
        let domains = s
            .live
            .busiest(DOMAINS)
            .into_iter()
            .map(|(domain, d): (String, DomainLive)| DomainLine {
                domain,
                sent: d.sent,
                deferred: d.deferred,
                bounced: d.bounced,
                throttled: d
                    .throttled
                    .filter(|(until, _)| *until > now_i)
                    .map(|(_, why)| why),
            })
            .collect();
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Frame {
            elapsed,
            done,
            total,
            importing,
            sent: self.base.sent + ld(&s.sent),
            deferred,
            bounced: self.base.bounced + ld(&s.bounced),
            failed: self.base.failed + ld(&s.failed),
            skipped: self.base.skipped + ld(&s.skipped) + ld(&s.skipped_import),
            rate_now,
            rate_avg,
            eta,
            limit: self.limit.clone(),
            waiting,
            relay: s.live.recent_relay_trouble(RELAY_NOTE),
            domains,
            holds: s.live.holds(),
            unsubscribed: s
                .feedback_known
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| ld(&s.unsubscribed)),
            complaints: s
                .feedback_known
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| ld(&s.complaints)),
            last: false,
        }
    }

    /// The last frame: this run's figures with the campaign-wide ones replaced by the store's
    /// final counts (what the summary and `blast status` say).
    pub fn last_frame(&mut self, s: &Stats, counts: &Counts) -> Frame {
        let mut f = self.frame(s);
        f.importing = false;
        f.sent = counts.get(State::Sent);
        f.deferred = counts.get(State::Deferred);
        f.bounced = counts.get(State::Bounced);
        f.failed = counts.get(State::Failed);
        f.skipped = counts.get(State::Skipped);
        f.eta = None;
        f.waiting = None;
        f.last = true;
        f
    }
}

fn per_sec(n: u64, d: Duration) -> u64 {
    (n as f64 / d.as_secs_f64().max(0.001)).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_is_a_gauge_and_the_average_leaves_waiting_out() {
        let s = Stats::default();
        let mut sm = Sampler::new(Baseline::default(), "unlimited".into());
        s.eligible.store(10, Ordering::Relaxed);
        s.importing.store(true, Ordering::Relaxed);
        let f = sm.frame(&s);
        assert!(f.importing && f.total == 10 && f.eta.is_none());
        s.deferred_now.store(3, Ordering::Relaxed);
        s.deferred.store(6, Ordering::Relaxed); // attempts: not what is shown
        s.sent.store(7, Ordering::Relaxed);
        let f = sm.frame(&s);
        assert_eq!((f.deferred, f.sent, f.done), (3, 7, 7));
        // All but the deferred ones are done: nothing to estimate.
        s.importing.store(false, Ordering::Relaxed);
        assert!(sm.frame(&s).eta.is_none());
        // A run that waited all along: the average is over no sending time, so it is the
        // rate now (0), not a figure sinking with the wall clock.
        s.live.add_idle(Duration::from_secs(3600));
        assert_eq!(sm.frame(&s).rate_avg, 0);
    }

    #[test]
    fn the_last_frame_uses_the_store_counts() {
        let s = Stats::default();
        s.sent.store(5, Ordering::Relaxed);
        let mut sm = Sampler::new(Baseline::default(), "10/s".into());
        let mut c = Counts::default();
        c.by_state.insert("sent", 6);
        c.by_state.insert("deferred", 1);
        let f = sm.last_frame(&s, &c);
        assert_eq!((f.sent, f.deferred, f.last), (6, 1, true));
    }
}
