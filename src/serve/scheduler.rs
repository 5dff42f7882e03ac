//! Scheduled campaigns inside `blast serve`: the [`crate::schedule`] loop, spawned on the
//! blast runtime (lower CPU priority, `blast_threads` workers), never on the priority
//! lane's. Its runs use the blast lane, exactly as `blast send` does.

use std::sync::Arc;

use super::config::ServeSettings;
use crate::error::Result;
use crate::schedule::{self, SchedulerConfig, SendLauncher, SystemClock};
use crate::shutdown::Shutdown;
use crate::token::TokenSettings;

/// The running scheduler (or nothing, when no `campaigns_dir` is configured).
pub struct SchedulerHandle {
    stop: Arc<Shutdown>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

/// Starts the scheduler on `blast_rt` if the config names a campaigns dir.
/// Its runs issue tokens with `tokens` (serve's keys), when given.
pub fn start(
    s: &ServeSettings,
    tokens: Option<Arc<TokenSettings>>,
    blast_rt: &tokio::runtime::Handle,
) -> Result<SchedulerHandle> {
    let stop = Arc::new(Shutdown::default());
    let task = s.campaigns_dir.as_ref().map(|dir| {
        let mut cfg = SchedulerConfig::new(dir.clone(), s.state_dir.clone());
        cfg.tokens = tokens;
        cfg.bounce_policy = s.bounce_policy.clone();
        cfg.cluster = s.cluster.clone();
        let run = schedule::run(
            cfg,
            Arc::new(SystemClock),
            Arc::new(SendLauncher),
            stop.clone(),
        );
        blast_rt.spawn(async move {
            // Said at once: a scheduler that cannot start must not wait for the stop to
            // be noticed.
            let r = run.await;
            if let Err(e) = &r {
                eprintln!("blast serve: scheduler stopped: {e}");
            }
            r
        })
    });
    Ok(SchedulerHandle { stop, task })
}

impl SchedulerHandle {
    /// Stops launching; runs in progress save their state (they resume on the next start).
    pub async fn stop(self) {
        self.stop.stop();
        if let Some(t) = self.task {
            if let Err(e) = t.await {
                eprintln!("blast serve: scheduler task: {e}");
            }
        }
    }
}
