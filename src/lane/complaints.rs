//! The complaint breaker: complaints about a campaign come back while it is still going out
//! (feedback loops report within minutes), and a campaign that draws them at the rate Gmail
//! and Yahoo reject at is burning the sending domain's reputation with every message. More
//! than `[lane] complaint_share` (default 0.3%) of the campaign's deliveries reported as
//! complaints, once at least [`MIN_COMPLAINTS`] are in, stops the run (exit 75) with the
//! reason; a rerun stops again at once, until `blast send --override-breaker`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::LaneCtx;
use crate::store::record::State;

/// Complaints needed before the share means anything: two complaints in the first hundred
/// messages are bad luck, not a verdict.
pub const MIN_COMPLAINTS: u64 = 5;
/// How often the global list is asked (one small read through its owner).
const EVERY: Duration = Duration::from_secs(5);

/// Deliveries of earlier runs, counted once and only when the complaints are enough to
/// matter (it is a store scan).
#[derive(Default)]
pub(crate) struct Watch {
    earlier: Option<u64>,
}

impl Watch {
    /// Checks once; stops the lane (and returns true) when the share is over. The lane
    /// checks before it dispatches anything, so a rerun of a campaign that tripped it sends
    /// nothing.
    pub(crate) async fn check(&mut self, ctx: &Arc<LaneCtx>) -> bool {
        let share = ctx.settings.complaint_share;
        let (c, earlier) = (ctx.clone(), self.earlier);
        let checked = tokio::task::spawn_blocking(move || -> crate::error::Result<_> {
            let counts = c.global.source_counts(&c.spec.campaign)?;
            let get = |r: &str| counts.iter().find(|(k, _)| k == r).map_or(0, |x| x.1);
            let n = get("complaint");
            // The progress display shows them too.
            c.stats
                .unsubscribed
                .store(get("unsubscribe"), Ordering::Relaxed);
            c.stats.complaints.store(n, Ordering::Relaxed);
            c.stats.feedback_known.store(true, Ordering::Relaxed);
            if n < MIN_COMPLAINTS || share.is_none() {
                return Ok((n, None));
            }
            let earlier = match earlier {
                Some(e) => e,
                None => {
                    let this_run = c.stats.sent.load(Ordering::Relaxed);
                    c.store.counts()?.get(State::Sent).saturating_sub(this_run)
                }
            };
            Ok((n, Some(earlier)))
        })
        .await;
        // Unreadable (the list's owner unreachable): the suppressions wait on it too, and
        // the next check tries again.
        let Ok(Ok((n, Some(e)))) = checked else {
            return false;
        };
        self.earlier = Some(e);
        let Some(share) = share else { return false };
        let delivered = e + ctx.stats.sent.load(Ordering::Relaxed);
        if n as f64 <= share * delivered as f64 {
            return false;
        }
        ctx.set_stalled(format!(
            "complaint breaker: {n} complaints for {delivered} messages delivered ({:.2}%, more \
             than {:.2}%): recipients are reporting this campaign as spam, and Gmail and Yahoo \
             reject senders above 0.3%. Find out why (list source, consent, content) before \
             sending more, or rerun with `blast send --override-breaker` to send anyway",
            100.0 * n as f64 / delivered.max(1) as f64,
            100.0 * share
        ));
        true
    }

    /// Checks every few seconds until the lane stops (or the caller aborts it).
    pub(crate) async fn watch(mut self, ctx: Arc<LaneCtx>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = ctx.shutdown.wait() => return,
            }
            if self.check(&ctx).await {
                return;
            }
        }
    }
}
