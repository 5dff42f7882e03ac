//! Pieces both harness-less benches use: a deterministic generator and a wall + CPU clock.
//! Included with `#[path = "common/mod.rs"] mod common;`.
#![allow(dead_code)]

use std::time::Instant;

/// xorshift64*: deterministic, dependency-free, plenty for test data.
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// CPU time (user + system) of this process, all its threads, in seconds: the machine is
/// shared (two cores, concurrent builds), so wall time alone would measure the neighbours.
/// All threads, because the import's store writer and sled's flushers run beside the main one.
pub fn cpu_secs() -> f64 {
    // Fields 14 and 15 of /proc/self/stat (utime, stime) in clock ticks (100 Hz on Linux);
    // the command name (field 2) may hold spaces, so count from its closing parenthesis.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let mut f = s.get(s.rfind(')')? + 2..)?.split_whitespace().skip(11);
            let user: u64 = f.next()?.parse().ok()?;
            let sys: u64 = f.next()?.parse().ok()?;
            Some(user + sys)
        })
        .map_or(0.0, |ticks| ticks as f64 / 100.0)
}

/// A timed phase: wall and CPU seconds.
pub struct Clock(Instant, f64);

impl Clock {
    /// Starts timing.
    pub fn start() -> Self {
        Clock(Instant::now(), cpu_secs())
    }
    /// CPU seconds (all threads) so far.
    pub fn cpu(&self) -> f64 {
        cpu_secs() - self.1
    }
    /// Wall time so far.
    pub fn elapsed(&self) -> std::time::Duration {
        self.0.elapsed()
    }
    /// Prints the phase (label padded to `width`) and returns its wall-clock rate.
    pub fn report_padded(&self, what: &str, width: usize, rows: u64) -> f64 {
        let wall = self.0.elapsed().as_secs_f64();
        let cpu = cpu_secs() - self.1;
        let rate = rows as f64 / wall;
        println!(
            "{what:<width$} {rows} rows: wall {wall:.2}s = {rate:>9.0} rows/s | cpu {cpu:.2}s = {:>9.0} rows/s",
            rows as f64 / cpu.max(1e-9)
        );
        rate
    }
}
