//! The `[schedule]` table of a campaign file: a cron expression (5 or 6 fields, parsed by
//! croner) in an IANA time zone (chrono-tz), optional start/end dates, what to do with slots
//! missed while `blast serve` was down, and what to do when a run is still going at the next
//! slot. [`ScheduleSettings::next_slots`] and [`ScheduleSettings::latest_at_or_before`] turn it
//! into UTC instants, the identity of a slot.
//!
//! DST: croner walks the wall clock of the zone. A fixed-time slot (`0 30 2 * * *`) in the hour
//! a spring-forward skips runs once, at the first instant after the gap; in the hour a
//! fall-back repeats it runs once, in the earlier pass. Slots are UTC instants, so the store
//! never confuses the two passes of a repeated hour.

use std::ops::Range;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::Deserialize;
use toml::Spanned;

/// The raw `[schedule]` table (strict: unknown keys are errors).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    cron: Spanned<String>,
    timezone: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    end: Option<Spanned<String>>,
    catch_up: Option<Spanned<String>>,
    catch_up_max_age: Option<Spanned<String>>,
    overlap: Option<Spanned<String>>,
}

/// A validation error: the byte span in the file, the key and the message (config.rs turns it
/// into `file:line: key: message`).
pub(crate) type SpanError = (Range<usize>, String, String);

/// What happens to slots that passed while `blast serve` was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Run the most recent missed slot once, if it is younger than `catch_up_max_age`;
    /// older ones are recorded as missed. Default.
    Latest,
    /// Record missed slots as missed; run nothing until the next slot.
    None,
}

/// What happens when a run is still going (or waiting to resume) when the next slot comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Record the new slot as skipped, with a warning. Default.
    Skip,
    /// Run the latest slot that came during the run as soon as the run ends.
    Wait,
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// The cron expression as written.
    pub expr: String,
    /// The parsed expression.
    pub cron: Cron,
    /// The zone the expression is read in. Default UTC.
    pub tz: Tz,
    /// No slot before this instant (00:00 of the start date in `tz`).
    pub start: Option<DateTime<Utc>>,
    /// No slot at or after this instant (00:00 of the day after the end date in `tz`).
    pub end: Option<DateTime<Utc>>,
    /// Missed slots policy. Default [`CatchUp::Latest`].
    pub catch_up: CatchUp,
    /// A missed slot older than this is not caught up. Default 6 h.
    pub catch_up_max_age: Duration,
    /// Overlap policy. Default [`Overlap::Skip`].
    pub overlap: Overlap,
}

/// Parses a cron expression of 5 fields (minute precision) or 6 (leading seconds).
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    let seconds = match fields {
        5 => Seconds::Disallowed,
        6 => Seconds::Required,
        n => {
            return Err(format!(
                "expected 5 fields (min hour day month weekday) or 6 (sec min hour day month weekday), got {n} in {expr:?}"
            ))
        }
    };
    CronParser::builder()
        .seconds(seconds)
        .build()
        .parse(expr)
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

/// Parses an IANA zone name (`Europe/Berlin`, `UTC`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?} (use an IANA name such as \"Europe/Berlin\")")
    })
}

/// `YYYY-MM-DD` (midnight) or `YYYY-MM-DDTHH:MM[:SS]`, local time in `tz`, to the first real
/// instant at or after it (a local time in a DST gap moves past the gap).
fn parse_local(s: &str, tz: Tz) -> Result<(DateTime<Utc>, bool), String> {
    let t = s.trim();
    let (naive, date_only) = if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        (d.and_hms_opt(0, 0, 0).expect("midnight exists"), true)
    } else {
        let n = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M"))
            .map_err(|_| {
                format!("expected a date \"2026-01-05\" or a local time \"2026-01-05T09:00\", got {s:?}")
            })?;
        (n, false)
    };
    Ok((resolve_local(naive, tz), date_only))
}

fn resolve_local(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    // A gap is at most a few hours: step forward by minutes until the local time exists.
    for m in 0..=(24 * 60) {
        let n = naive + chrono::Duration::minutes(m);
        if let Some(t) = tz.from_local_datetime(&n).earliest() {
            return t.with_timezone(&Utc);
        }
    }
    Utc.from_utc_datetime(&naive)
}

/// Validates the raw table.
pub(crate) fn validate(raw: RawSchedule) -> Result<ScheduleSettings, SpanError> {
    let err = |span: Range<usize>, key: &str, msg: String| (span, format!("schedule.{key}"), msg);
    let cron = parse_cron(raw.cron.get_ref()).map_err(|m| err(raw.cron.span(), "cron", m))?;
    let tz = match &raw.timezone {
        None => Tz::UTC,
        Some(t) => parse_tz(t.get_ref()).map_err(|m| err(t.span(), "timezone", m))?,
    };
    let start = match &raw.start {
        None => None,
        Some(s) => Some(
            parse_local(s.get_ref(), tz)
                .map_err(|m| err(s.span(), "start", m))?
                .0,
        ),
    };
    let end = match &raw.end {
        None => None,
        Some(s) => {
            let (t, date_only) =
                parse_local(s.get_ref(), tz).map_err(|m| err(s.span(), "end", m))?;
            // An end date includes that whole day.
            Some(if date_only {
                let next = t.with_timezone(&tz).date_naive() + chrono::Duration::days(1);
                resolve_local(next.and_hms_opt(0, 0, 0).expect("midnight"), tz)
            } else {
                t
            })
        }
    };
    if let (Some(a), Some(b), Some(e)) = (start, end, &raw.end) {
        if b <= a {
            return Err(err(e.span(), "end", "is before start".into()));
        }
    }
    let catch_up = match raw
        .catch_up
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("latest", _)) => CatchUp::Latest,
        Some(("none", _)) => CatchUp::None,
        Some((o, span)) => {
            return Err(err(
                span,
                "catch_up",
                format!("expected \"latest\" or \"none\", got {o:?}"),
            ))
        }
    };
    let catch_up_max_age = match &raw.catch_up_max_age {
        None => Duration::from_secs(6 * 3600),
        Some(s) => super::duration::parse_duration(s.get_ref())
            .map_err(|m| err(s.span(), "catch_up_max_age", m))?,
    };
    let overlap = match raw
        .overlap
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("skip", _)) => Overlap::Skip,
        Some(("wait", _)) => Overlap::Wait,
        Some((o, span)) => {
            return Err(err(
                span,
                "overlap",
                format!("expected \"skip\" or \"wait\", got {o:?}"),
            ))
        }
    };
    let s = ScheduleSettings {
        expr: raw.cron.get_ref().trim().to_string(),
        cron,
        tz,
        start,
        end,
        catch_up,
        catch_up_max_age,
        overlap,
    };
    // A pattern that never matches (`0 0 31 2 *`) is an error now, not a silent no-op later.
    if s.cron
        .find_next_occurrence(&Utc::now().with_timezone(&tz), false)
        .is_err()
    {
        return Err(err(
            raw.cron.span(),
            "cron",
            format!("{:?} never matches", s.expr),
        ));
    }
    Ok(s)
}

impl ScheduleSettings {
    /// A schedule from an expression and zone name with the defaults (tests, `--campaigns-dir`
    /// listings).
    pub fn new(expr: &str, tz: &str) -> Result<ScheduleSettings, String> {
        Ok(ScheduleSettings {
            expr: expr.trim().to_string(),
            cron: parse_cron(expr)?,
            tz: parse_tz(tz)?,
            start: None,
            end: None,
            catch_up: CatchUp::Latest,
            catch_up_max_age: Duration::from_secs(6 * 3600),
            overlap: Overlap::Skip,
        })
    }

    fn in_window(&self, t: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| t >= s) && self.end.is_none_or(|e| t < e)
    }

    /// The first slot strictly after `after`, if any (none past `end`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = match self.start {
            // Just before start, so a slot exactly at start counts.
            Some(s) if after < s => s - chrono::Duration::milliseconds(1),
            _ => after,
        };
        let next = self
            .cron
            .find_next_occurrence(&from.with_timezone(&self.tz), false)
            .ok()?
            .with_timezone(&Utc);
        self.in_window(next).then_some(next)
    }

    /// Up to `n` slots strictly after `after`, in order.
    pub fn next_slots(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(s) => {
                    out.push(s);
                    t = s;
                }
                None => break,
            }
        }
        out
    }

    /// The most recent slot at or before `now`, if any.
    ///
    /// Slots are defined by the forward walk ([`Self::next_after`]); croner's backward walk
    /// may pick the other pass of a repeated hour, so near a UTC offset change the answer is
    /// re-derived forwards.
    pub fn latest_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let p = self
            .cron
            .find_previous_occurrence(&now.with_timezone(&self.tz), true)
            .ok()?
            .with_timezone(&Utc);
        let window = chrono::Duration::hours(3);
        let offset = |t: DateTime<Utc>| self.tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        let latest = if offset(p - window) == offset(p + window) {
            p
        } else {
            // Bounded: a repeated or skipped range is at most a few hours.
            let mut t = p - window;
            let mut best = None;
            for _ in 0..100_000 {
                match self
                    .cron
                    .find_next_occurrence(&t.with_timezone(&self.tz), false)
                {
                    Ok(s) if s.with_timezone(&Utc) <= now => {
                        t = s.with_timezone(&Utc);
                        best = Some(t);
                    }
                    _ => break,
                }
            }
            best.unwrap_or(p)
        };
        if self.in_window(latest) {
            Some(latest)
        } else if self.end.is_some_and(|e| latest >= e) {
            // Past the end: the last slot before it.
            self.latest_at_or_before(self.end? - chrono::Duration::milliseconds(1))
        } else {
            None
        }
    }
}

/// A slot as a compact UTC string for ids and directory names: `20260105T080000Z`.
pub fn slot_id(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The run id of a campaign's slot: `<campaign>@<slot_id>`.
pub fn run_id(campaign: &str, slot: DateTime<Utc>) -> String {
    format!("{campaign}@{}", slot_id(slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn five_or_six_fields() {
        assert!(parse_cron("0 9 * * MON").is_ok());
        assert!(parse_cron("*/2 * * * * *").is_ok());
        assert!(parse_cron("0 9 * *").unwrap_err().contains("got 4"));
        assert!(parse_cron("0 0 9 * * MON 2026")
            .unwrap_err()
            .contains("got 7"));
        assert!(parse_cron("0 25 * * *").is_err());
        assert!(parse_tz("Mars/Olympus").is_err());
    }

    #[test]
    fn weekly_in_berlin_across_dst() {
        let s = ScheduleSettings::new("0 9 * * MON", "Europe/Berlin").unwrap();
        let got = s.next_slots(utc("2026-03-20T00:00:00Z"), 3);
        // 09:00 CET is 08:00 UTC; after 29 March 09:00 CEST is 07:00 UTC.
        assert_eq!(
            got,
            vec![
                utc("2026-03-23T08:00:00Z"),
                utc("2026-03-30T07:00:00Z"),
                utc("2026-04-06T07:00:00Z")
            ]
        );
    }

    #[test]
    fn spring_forward_slot_runs_once_after_the_gap() {
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let s = ScheduleSettings::new("30 2 * * *", "Europe/Berlin").unwrap();
        let got = s.next_slots(berlin(2026, 3, 28, 12, 0), 3);
        assert_eq!(
            got,
            vec![
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST, the first instant after the gap
                berlin(2026, 3, 30, 2, 30),
                berlin(2026, 3, 31, 2, 30),
            ]
        );
    }

    #[test]
    fn fall_back_slot_runs_once() {
        // 25 October 2026: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let s = ScheduleSettings::new("30 2 * * *", "Europe/Berlin").unwrap();
        let got = s.next_slots(utc("2026-10-24T12:00:00Z"), 2);
        assert_eq!(
            got,
            vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        // The backward search agrees with the forward one in the repeated hour.
        assert_eq!(
            s.latest_at_or_before(utc("2026-10-25T01:45:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn start_and_end_bound_the_slots() {
        let mut s = ScheduleSettings::new("0 9 * * *", "UTC").unwrap();
        s.start = Some(utc("2026-01-10T00:00:00Z"));
        s.end = Some(utc("2026-01-12T00:00:00Z"));
        assert_eq!(
            s.next_slots(utc("2026-01-01T00:00:00Z"), 5),
            vec![utc("2026-01-10T09:00:00Z"), utc("2026-01-11T09:00:00Z")]
        );
        assert_eq!(s.latest_at_or_before(utc("2026-01-05T00:00:00Z")), None);
        assert_eq!(
            s.latest_at_or_before(utc("2026-02-01T00:00:00Z")),
            Some(utc("2026-01-11T09:00:00Z"))
        );
    }

    #[test]
    fn ids() {
        assert_eq!(
            run_id("news", utc("2026-01-05T08:00:00Z")),
            "news@20260105T080000Z"
        );
    }
}
