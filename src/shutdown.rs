//! Cooperative stop. A [`Shutdown`] is created by whoever owns the process (`main`, `blast
//! serve`, a test) and passed in to what runs (lanes, listeners, the scheduler), as mini-redis
//! passes its shutdown signal to `server::run`: nothing in the library listens for signals on
//! its own, so a test can stop a send exactly as Ctrl-C does.
//!
//! [`signal`] is the one place that says which signals mean "stop": SIGINT (Ctrl-C) and
//! SIGTERM (what systemd, `timeout`, cron wrappers and container runtimes send).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Cooperative stop: set once (Ctrl-C, SIGTERM, fatal lane error); everyone checks it.
#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    /// Asks everything to stop taking new work.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves when a stop is requested.
    pub async fn wait(&self) {
        while !self.stopping() {
            let n = self.notify.notified();
            if self.stopping() {
                return;
            }
            n.await;
        }
    }
}

/// Resolves on the next SIGINT or SIGTERM. Both mean "stop gracefully": a service manager's
/// SIGTERM deserves the same saved state as a user's Ctrl-C. Call it again for the next one.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
