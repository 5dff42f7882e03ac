//! `[lane] warmup`: the daily caps of a new sending IP — one schedule for the IP
//! (`warmup = ["50/d", "100/d", …]`), optional schedules of their own for provider rollups
//! (`[lane.warmup_providers] google = [...]`), the start date and the brake.
//!
//! Only the settings live here; the counting is [`crate::lane::warmup`], the durable counters
//! [`crate::store::warmup`].

use chrono::NaiveDate;
use serde::Deserialize;
use toml::Spanned;

use super::shaping::Shaping;
use super::Locator;
use crate::error::Result;

/// `[lane] warmup_brake = { bounce_rate = 0.05, deferral_rate = 0.2 }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBrake {
    bounce_rate: Option<Spanned<f64>>,
    deferral_rate: Option<Spanned<f64>>,
}

/// A schedule as written: daily caps, each with its place in the file.
pub(crate) type RawSteps = Spanned<Vec<Spanned<String>>>;

/// A validated warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    /// The first day the schedule may send (UTC).
    pub start: NaiveDate,
    /// Daily caps of everything not sent under a provider schedule, one per sending day;
    /// after the last, no cap. Empty: only the providers' schedules cap anything.
    pub steps: Vec<u64>,
    /// Provider rollups with schedules of their own, each counted apart from the IP's.
    pub providers: Vec<ProviderWarmup>,
    /// Holds the cap while the previous sending day went badly.
    pub brake: Option<Brake>,
}

/// One provider rollup's schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderWarmup {
    /// Index into the lane's [`Shaping::providers`].
    pub provider: usize,
    /// Its name (the counters' scope).
    pub name: String,
    /// Daily caps, as [`Warmup::steps`].
    pub steps: Vec<u64>,
}

/// The brake's thresholds (shares of the day's answered attempts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Brake {
    /// Bounced (permanent failures) above this share holds the cap.
    pub bounce_rate: Option<f64>,
    /// Deferred (4xx) above this share holds the cap.
    pub deferral_rate: Option<f64>,
}

/// The scope of the IP's own schedule in the counters (a provider's is its name).
pub const IP_SCOPE: &str = "*";

/// Parses `"50/d"` (also `"50/day"`): messages per day, at least 1.
pub fn parse_step(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("{s:?} is not a daily cap like \"50/d\"");
    let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    if !matches!(unit.trim(), "d" | "day") {
        return Err(format!(
            "{s:?}: a warm-up step is per day (\"{}/d\")",
            n.trim()
        ));
    }
    match n.trim().replace('_', "").parse::<u64>() {
        Ok(0) => Err(format!("{s:?}: a day's cap must be at least 1")),
        Ok(v) => Ok(v),
        Err(_) => Err(bad()),
    }
}

fn steps(loc: &Locator, v: &RawSteps, key: &str) -> Result<Vec<u64>> {
    if v.get_ref().is_empty() {
        return loc.err(
            v.span(),
            key,
            "an empty schedule: list daily caps like [\"50/d\", \"100/d\"], or leave the key out",
        );
    }
    let mut out: Vec<u64> = Vec::new();
    for (i, s) in v.get_ref().iter().enumerate() {
        let n =
            parse_step(s.get_ref()).or_else(|m| loc.err(s.span(), &format!("{key}[{i}]"), m))?;
        if let Some(&prev) = out.last() {
            // A lower cap after a higher one is almost always a typo (500 → 50); a sender
            // who wants a pause stops sending, which does not advance the schedule.
            if n < prev {
                return loc.err(
                    s.span(),
                    &format!("{key}[{i}]"),
                    format!("{n}/d is below the step before it ({prev}/d): a warm-up never lowers its cap"),
                );
            }
        }
        out.push(n);
    }
    Ok(out)
}

fn rate(loc: &Locator, v: &Option<Spanned<f64>>, key: &str) -> Result<Option<f64>> {
    match v {
        None => Ok(None),
        Some(x) if *x.get_ref() > 0.0 && *x.get_ref() < 1.0 => Ok(Some(*x.get_ref())),
        Some(x) => loc.err(x.span(), key, "a share between 0 and 1, e.g. 0.05"),
    }
}

/// Validates the warm-up keys of `[lane]` against the lane's shaping (provider names).
/// `None`: no warm-up.
pub(crate) fn settings(
    loc: &Locator,
    raw: &super::RawLane,
    shaping: &Shaping,
    section: &str,
) -> Result<Option<Warmup>> {
    let k = |key: &str| format!("{section}.{key}");
    let any = raw.warmup.is_some() || !raw.warmup_providers.is_empty();
    if section != "lane" {
        let set = raw
            .warmup
            .as_ref()
            .map(|s| (s.span(), "warmup"))
            .or(raw
                .warmup_start
                .as_ref()
                .map(|s| (s.span(), "warmup_start")))
            .or(raw
                .warmup_brake
                .as_ref()
                .map(|s| (s.span(), "warmup_brake")))
            .or(raw
                .warmup_providers
                .values()
                .next()
                .map(|s| (s.span(), "warmup_providers")));
        if let Some((span, key)) = set {
            return loc.err(
                span,
                &k(key),
                "only a campaign's [lane] warms up (the priority lane is never capped)",
            );
        }
        return Ok(None);
    }
    if !any {
        let stray = raw
            .warmup_start
            .as_ref()
            .map(|s| (s.span(), "warmup_start"))
            .or(raw
                .warmup_brake
                .as_ref()
                .map(|s| (s.span(), "warmup_brake")));
        if let Some((span, key)) = stray {
            return loc.err(
                span,
                &k(key),
                "without a schedule: add warmup = [\"50/d\", …] (or [lane.warmup_providers])",
            );
        }
        return Ok(None);
    }
    let start = match &raw.warmup_start {
        None => {
            let span = raw
                .warmup
                .as_ref()
                .map(|s| s.span())
                .or(raw.warmup_providers.values().next().map(|s| s.span()))
                .unwrap_or_default();
            return loc.err(
                span,
                &k("warmup_start"),
                "a warm-up needs its first day: warmup_start = \"2026-12-01\"",
            );
        }
        Some(s) => NaiveDate::parse_from_str(s.get_ref().trim(), "%Y-%m-%d").or_else(|_| {
            loc.err(
                s.span(),
                &k("warmup_start"),
                format!("{:?} is not a date like \"2026-12-01\"", s.get_ref()),
            )
        })?,
    };
    let ip_steps = match &raw.warmup {
        Some(v) => steps(loc, v, &k("warmup"))?,
        None => Vec::new(),
    };
    let mut providers = Vec::new();
    for (name, v) in &raw.warmup_providers {
        let key = k(&format!("warmup_providers.{name}"));
        let Some(provider) = shaping.providers.iter().position(|p| &p.name == name) else {
            let known: Vec<&str> = shaping.providers.iter().map(|p| p.name.as_str()).collect();
            return loc.err(
                v.span(),
                &key,
                format!(
                    "no provider rollup {name:?} (known: {}; define one in [lane.providers.{name}])",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            );
        };
        providers.push(ProviderWarmup {
            provider,
            name: name.clone(),
            steps: steps(loc, v, &key)?,
        });
    }
    let brake = match &raw.warmup_brake {
        None => None,
        Some(b) => {
            let bounce_rate = rate(
                loc,
                &b.get_ref().bounce_rate,
                &k("warmup_brake.bounce_rate"),
            )?;
            let deferral_rate = rate(
                loc,
                &b.get_ref().deferral_rate,
                &k("warmup_brake.deferral_rate"),
            )?;
            if bounce_rate.is_none() && deferral_rate.is_none() {
                return loc.err(
                    b.span(),
                    &k("warmup_brake"),
                    "set bounce_rate, deferral_rate or both",
                );
            }
            Some(Brake {
                bounce_rate,
                deferral_rate,
            })
        }
    };
    Ok(Some(Warmup {
        start,
        steps: ip_steps,
        providers,
        brake,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_daily_caps() {
        assert_eq!(parse_step("50/d"), Ok(50));
        assert_eq!(parse_step(" 1_000/day "), Ok(1000));
        assert!(parse_step("50/h").unwrap_err().contains("per day"));
        assert!(parse_step("0/d").is_err());
        assert!(parse_step("fifty").is_err());
    }
}
