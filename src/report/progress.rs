//! Live progress: indicatif bars on a terminal; otherwise (CI, pipes, logs) one plain line
//! every few seconds, since indicatif hides its bars when stderr is not a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;

use crate::lane::Stats;
use crate::store::campaign::CampaignStore;

/// A running progress display.
pub struct Progress {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Stops the display (the summary follows).
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the display. `snapshot` is rewritten every couple of seconds so `blast status`
/// works while this process holds the store: with the store's counts per state (the table
/// `blast status` prints when idle) and this run's counters.
pub fn spawn(
    campaign: String,
    stats: Arc<Stats>,
    quiet: bool,
    snapshot: PathBuf,
    store: Arc<CampaignStore>,
) -> Progress {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let total = stats.eligible.load(Ordering::Relaxed);
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{bar:40.cyan/blue}] {pos}/{len} {per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(campaign.clone());
            b
        });
        let mut last_line = Instant::now();
        let mut last_snap = Instant::now();
        // Counting reads every record: on a big store, count at most 5% of the time.
        let mut snap_every = Duration::from_secs(2);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let done = stats.done();
            let msg = format!(
                "sent {} · deferred {} · bounced {} · failed {}",
                stats.sent.load(Ordering::Relaxed),
                stats.deferred.load(Ordering::Relaxed),
                stats.bounced.load(Ordering::Relaxed),
                stats.failed.load(Ordering::Relaxed)
            );
            if let Some(b) = &bar {
                b.set_position(done);
                b.set_message(msg);
            } else if !quiet && last_line.elapsed() >= Duration::from_secs(5) {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "[{campaign}] {done}/{total} done, {:.0}/s, {msg}",
                    done as f64 / secs
                );
                last_line = Instant::now();
            }
            if last_snap.elapsed() >= snap_every {
                let t0 = Instant::now();
                let st = store.clone();
                let counts = tokio::task::spawn_blocking(move || st.counts().ok())
                    .await
                    .ok()
                    .flatten();
                snap_every = Duration::from_secs(2).max(t0.elapsed() * 20);
                super::summary::write_live_snapshot(&snapshot, &campaign, &stats, counts.as_ref());
                last_snap = Instant::now();
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    });
    Progress { stop, task }
}
