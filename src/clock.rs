//! The wall clock every durable time in blast is read from ([`now_ms`]), with one testing aid:
//! `BLAST_NOW=2026-12-03T10:00:00Z` (RFC 3339) starts this process's clock at that instant.
//!
//! The clock keeps running from there (an offset from the system clock, not a frozen time), so
//! rates, claim markers and retry times behave as usual; only the calendar moves. It exists so
//! tests can play several warm-up days without waiting for them: a deferral written "until the
//! next sending day" by one run is due for a run started with a later `BLAST_NOW`. Read once per
//! process. Not meant for production: a sender whose clock disagrees with the receivers' counts
//! days the receivers do not.

use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, Utc};

/// The environment variable of the testing aid.
pub const ENV: &str = "BLAST_NOW";

fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds added to the system clock (0 without `BLAST_NOW`).
fn offset_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| match std::env::var(ENV) {
        Ok(v) if !v.trim().is_empty() => match DateTime::parse_from_rfc3339(v.trim()) {
            Ok(t) => t.timestamp_millis() - system_ms(),
            Err(e) => {
                // A typo must not silently send on the real calendar during a test.
                eprintln!("blast: {ENV}={v:?} is not an RFC 3339 time ({e}); exiting");
                std::process::exit(2);
            }
        },
        _ => 0,
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    (system_ms() + offset_ms()).max(0) as u64
}

/// The current time.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(now_ms() as i64).unwrap_or_default()
}

/// Today's date in UTC: the warm-up's day.
pub fn today() -> NaiveDate {
    now().date_naive()
}

/// Midnight UTC at the start of `day`, in ms since the epoch.
pub fn day_start_ms(day: NaiveDate) -> u64 {
    day.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_millis().max(0) as u64)
}
