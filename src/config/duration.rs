//! Durations as campaign and serve files write them (`250ms`, `30s`, `5m`, `2h`, `1d`). A leaf
//! module: [`super::schedule`] parses its `catch_up_max_age` with it, and config uses both.

use std::time::Duration;

/// Parses `30s`, `5m`, `2h`, `1d`, `250ms`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a duration like \"30s\", \"5m\", \"1h\", got {s:?}"))?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(format!(
                "expected a duration like \"30s\", \"5m\", \"1h\", got {s:?}"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}
