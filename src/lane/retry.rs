//! The retry schedule for transient failures.

use std::time::Duration;

/// `base × 2^level`, at most `cap` (the doubling shift itself stops at 2^10).
pub fn doubling(base: Duration, level: u32, cap: Duration) -> Duration {
    base.saturating_mul(1 << level.min(10)).min(cap)
}

/// When to try again after `attempts` failed attempts (1-based), or `None` when retries are
/// exhausted (by count, or because `first_attempt_ms` is older than `max_age`).
/// ±10% jitter spreads retries so a greylisting server doesn't see them all at once (the
/// retry still comes from the same source IP and sender, which greylisting needs).
pub fn next_retry_ms(
    schedule: &[Duration],
    max_age: Duration,
    attempts: u16,
    first_attempt_ms: u64,
    now_ms: u64,
) -> Option<u64> {
    let idx = (attempts as usize).checked_sub(1)?;
    let delay = *schedule.get(idx)?;
    if now_ms.saturating_sub(first_attempt_ms) > max_age.as_millis() as u64 {
        return None;
    }
    let ms = delay.as_millis() as u64;
    let jitter = if ms >= 10 {
        rand::random_range(0..=ms / 5)
    } else {
        0
    };
    Some(now_ms + ms - ms / 10 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_exhaustion() {
        let s = [Duration::from_secs(300), Duration::from_secs(900)];
        let age = Duration::from_secs(86400);
        let t = next_retry_ms(&s, age, 1, 0, 1_000).unwrap();
        assert!((1_000 + 270_000..=1_000 + 330_000).contains(&t));
        assert!(next_retry_ms(&s, age, 2, 0, 1_000).is_some());
        assert_eq!(next_retry_ms(&s, age, 3, 0, 1_000), None);
        assert_eq!(next_retry_ms(&s, age, 1, 0, 86_400_001), None);
    }
}
