//! A small pool of threads for CPU-bound work — rendering and DKIM signing, ~0.9 ms of RSA
//! per message — kept off the async reactor so connections keep being served while both
//! cores sign. Sized to the cores: more threads than cores would only time-slice.
//!
//! Threads are created by [`CpuPool::new`] on the calling thread and inherit its scheduling
//! priority (Linux keeps `nice` per thread), so a pool made on serve's niced blast runtime
//! is niced too. They exit when the pool is dropped.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Task = Box<dyn FnOnce() + Send>;

/// The pool.
pub struct CpuPool {
    tx: Mutex<mpsc::Sender<Task>>,
    threads: usize,
}

impl std::fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuPool")
            .field("threads", &self.threads)
            .finish()
    }
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl CpuPool {
    /// A pool of `threads` threads (at least one) named `name-N`.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Arc<CpuPool>> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take one task, never while running it.
                    let task = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match task {
                        Ok(t) => t(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Arc::new(CpuPool {
            tx: Mutex::new(tx),
            threads,
        }))
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a pool thread and waits for its result without blocking the reactor. A
    /// panic in `f` is an error here, not a dead pool thread.
    pub async fn run<R, F>(&self, f: F) -> Result<R, String>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r.map_err(|_| "panicked while building the message".to_string()));
        });
        self.tx
            .lock()
            .map_err(|_| "cpu pool poisoned".to_string())?
            .send(task)
            .map_err(|_| "cpu pool stopped".to_string())?;
        rx.await.map_err(|_| "cpu pool stopped".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_pool_threads_and_survives_a_panic() {
        let pool = CpuPool::new("t", 2).unwrap();
        let name = pool
            .run(|| std::thread::current().name().unwrap_or("").to_string())
            .await
            .unwrap();
        assert!(name.starts_with("t-"), "{name}");
        assert!(pool.run(|| panic!("boom")).await.is_err());
        // Both threads still work after the panic.
        let sums = futures_join(&pool).await;
        assert_eq!(sums, vec![1, 2, 3, 4]);
    }

    async fn futures_join(pool: &Arc<CpuPool>) -> Vec<u32> {
        let mut out = Vec::new();
        for i in 1..=4u32 {
            out.push(pool.run(move || i).await.unwrap());
        }
        out
    }
}
