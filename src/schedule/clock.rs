//! The scheduler's notion of time, injected so tests can jump across a DST change or a week of
//! downtime without sleeping: [`SystemClock`] for `blast serve`, [`TestClock`] for tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A boxed future, so [`Clock`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Wall-clock time for the scheduler.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves at (or after) `t`. A clock that jumps (the test clock) also resolves as soon
    /// as it reads anything but `seen`, the caller's last reading, so the caller re-reads it.
    fn sleep_until(&self, t: DateTime<Utc>, seen: DateTime<Utc>) -> BoxFuture<'_, ()>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, t: DateTime<Utc>, _seen: DateTime<Utc>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The wall clock may be stepped (NTP) while we sleep on the monotonic one, so the
            // scheduler never sleeps long: it caps every wait at its poll interval and re-reads
            // the time.
            let d = (t - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(d).await;
        })
    }
}

/// A clock that moves only when told to ([`TestClock::set`], [`TestClock::advance`]).
#[derive(Debug)]
pub struct TestClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl TestClock {
    /// A clock stopped at `t`.
    pub fn new(t: DateTime<Utc>) -> Arc<TestClock> {
        Arc::new(TestClock {
            now: watch::channel(t).0,
        })
    }

    /// Moves the clock to `t` (never backwards).
    pub fn set(&self, t: DateTime<Utc>) {
        self.now.send_modify(|n| {
            if t > *n {
                *n = t
            }
        });
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        let t = *self.now.borrow() + chrono::Duration::from_std(d).expect("duration in range");
        self.set(t);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    /// Resolves at `t`, or earlier whenever the clock is not at `seen` or moves: the scheduler
    /// re-reads the time and makes one pass per move, which gives tests a pass at every time
    /// they set.
    fn sleep_until(&self, t: DateTime<Utc>, seen: DateTime<Utc>) -> BoxFuture<'_, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            let current = *rx.borrow_and_update();
            if current >= t || current != seen {
                return;
            }
            // The sender lives as long as the clock, which outlives this borrow.
            let _ = rx.changed().await;
        })
    }
}
