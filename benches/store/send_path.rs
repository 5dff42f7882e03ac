//! The store's share of sending: what the lane does to the store per message, without the
//! lane. For `n` pending recipients of a populated store: the dispatcher's scan (pending rows
//! in key order), the claimer's commit (one claim marker per group + fsync), the writer's
//! commit (`sent` + the 250 reply + the marker dropped, one write + fsync per group).
//!
//! Groups are as big as the lane's at the end-to-end rate: `MIN_COMMIT_GAP` (4 ms) apart, so
//! at 12,500 msg/s (`bash benches/e2e.sh`, 16 connections) ~50 claims and ~50 results per
//! commit. The figure is compared with the ~80 µs of CPU a message costs end to end there:
//! with sending CPU-bound, turning the store off would save that share of the throughput.

use blast::store::campaign::CampaignStore;
use blast::store::record::State;

/// CPU per message end to end, store on, measured by `bash benches/e2e.sh` (12.5k msg/s on
/// 16 connections on this two-core machine).
pub const E2E_CPU_US: f64 = 80.0;

/// Runs the claim and result commits for up to `n` pending recipients, `group` per commit.
/// Returns the number of messages.
pub fn run(store: &CampaignStore, n: usize, group: usize) -> u64 {
    const REPLY: &str = "250 2.0.0 Ok: queued as 4XkQ2m1Zz9z8b";
    let mut cursor: Option<String> = None;
    let mut done = 0usize;
    while done < n {
        // The dispatcher's scan chunk (2,000 rows).
        let (rows, last, end) = store
            .scan_from(cursor.as_deref(), 2_000.min(n - done), |st, _| {
                st == State::Pending
            })
            .expect("scan");
        cursor = last;
        for mut chunk in rows.chunks(group).map(|c| c.to_vec()) {
            let now = blast::store::now_ms();
            // The claimer: one marker for the group, one (shared) flush.
            let claim = store
                .put_claim(now + 1, chunk.iter().map(|(k, _)| k.as_str()))
                .and_then(|id| store.flush().map(|_| id))
                .expect("claim commit");
            for (_, r) in &mut chunk {
                r.state = State::Sent;
                r.attempts += 1;
                r.first_attempt_ms = now;
                r.last_reply = REPLY.to_string();
                r.updated_ms = now + 1;
            }
            // The writer: the results, the settled marker, one flush.
            store
                .put_each(chunk.iter().map(|(k, r)| (k.as_str(), r)))
                .and_then(|_| store.remove_claims(&[claim]))
                .and_then(|_| store.flush())
                .expect("result commit");
            done += chunk.len();
        }
        if end {
            break;
        }
    }
    done as u64
}
