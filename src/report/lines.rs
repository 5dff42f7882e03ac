//! A [`Frame`] as text: the terminal's lines (each cut to the terminal's width) and the
//! single plain line written when stderr is not a terminal.

use std::time::Duration;

use super::frame::Frame;

/// The terminal lines of a frame, none wider than `width` columns: the overall bar, the
/// counts, the lane's state, then one line per busy domain.
pub fn terminal(campaign: &str, f: &Frame, width: usize) -> Vec<String> {
    let figures = format!("{}/{}", num(f.done), total(f));
    // The bar takes what is left of the first line, between 10 and 50 columns.
    let bar_w = width
        .saturating_sub(figures.chars().count() + 3)
        .clamp(10, 50);
    let mut lines = vec![
        format!("[{}] {figures}", bar(f, bar_w)),
        format!("{campaign}: {}", counts(f)),
        format!("{} · {}", rates(f), lane(f)),
    ];
    for d in &f.domains {
        let mut l = format!(
            "  {:<22} sent {} · deferred {} · bounced {}",
            d.domain,
            num(d.sent),
            num(d.deferred),
            num(d.bounced)
        );
        if let Some(why) = &d.throttled {
            l.push_str(&format!(" · throttled: {}", one_line(why)));
        }
        lines.push(l);
    }
    for h in &f.holds {
        lines.push(format!("  hold: {}", one_line(h)));
    }
    lines.into_iter().map(|l| fit(&l, width)).collect()
}

/// The plain progress line (logs, CI): the same figures on one line.
pub fn plain(campaign: &str, f: &Frame) -> String {
    let head = if f.last { "final: " } else { "" };
    let held = match f.holds.len() {
        0 => String::new(),
        n => format!(" · {n} site(s) held: {}", one_line(&f.holds[0])),
    };
    format!(
        "[{campaign}] {head}{}/{} done · {} · {} · {}{held}",
        num(f.done),
        total(f),
        counts(f),
        rates(f),
        lane(f)
    )
}

/// `12,345`: whole numbers with thousands separators.
pub fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `line` cut to `width` columns (an ellipsis marks the cut). Every character blast puts in
/// these lines is one column wide; a domain or a reply could hold a wide one, so those are
/// counted as two.
pub fn fit(line: &str, width: usize) -> String {
    let w = |c: char| {
        if (c as u32) >= 0x1100 && !matches!(c, '·' | '…') {
            2
        } else {
            1
        }
    };
    let total: usize = line.chars().map(w).sum();
    if total <= width {
        return line.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in line.chars() {
        if used + w(c) + 1 > width {
            break;
        }
        used += w(c);
        out.push(c);
    }
    out.push('…');
    out
}

fn total(f: &Frame) -> String {
    if f.importing {
        // The count so far, marked as still growing.
        format!("{}+ (importing…)", num(f.total))
    } else {
        num(f.total)
    }
}

fn counts(f: &Frame) -> String {
    let mut s = format!(
        "sent {} · deferred {} · bounced {} · failed {} · skipped {}",
        num(f.sent),
        num(f.deferred),
        num(f.bounced),
        num(f.failed),
        num(f.skipped)
    );
    // Counted once the bounce/unsubscribe processing reports them (the hook is in `Frame`).
    if let Some(n) = f.unsubscribed {
        s.push_str(&format!(" · unsubscribed {}", num(n)));
    }
    if let Some(n) = f.complaints {
        s.push_str(&format!(" · complaints {}", num(n)));
    }
    s
}

fn rates(f: &Frame) -> String {
    let mut s = format!("{}/s now · {}/s avg", num(f.rate_now), num(f.rate_avg));
    if let Some(eta) = f.eta {
        s.push_str(&format!(" · ETA {}", duration(eta)));
    }
    s
}

fn lane(f: &Frame) -> String {
    let mut s = format!("limit {}", f.limit);
    if let Some(w) = f.waiting {
        s.push_str(&format!(" · waiting for retries, next in {}", duration(w)));
    } else if let Some(r) = &f.relay {
        // Shown for 10 s after the relay's last 421 or refused connection, however short its
        // backoff: the reply is what a person needs to see, and it stays readable.
        s.push_str(&format!(" · relay trouble (last 10 s): {}", one_line(r)));
    } else if f.last {
        s.push_str(" · done");
    } else {
        s.push_str(" · sending");
    }
    s
}

fn bar(f: &Frame, w: usize) -> String {
    let filled = if f.total == 0 {
        0
    } else {
        ((f.done as f64 / f.total as f64) * w as f64).floor() as usize
    }
    .min(w);
    let mut s = "=".repeat(filled);
    if filled < w {
        s.push('>');
        s.push_str(&" ".repeat(w - filled - 1));
    }
    s
}

/// A reply on one line (a multi-line reply's first line).
fn one_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::frame::{DomainLine, Frame};

    fn frame() -> Frame {
        Frame {
            elapsed: Duration::from_secs(3),
            done: 123_456,
            total: 200_000,
            importing: true,
            sent: 123_000,
            deferred: 250,
            bounced: 456,
            failed: 0,
            skipped: 17,
            rate_now: 2_918,
            rate_avg: 2_901,
            eta: None,
            limit: "unlimited".into(),
            waiting: None,
            relay: None,
            domains: vec![DomainLine {
                domain: "a-rather-long-domain-name.example".into(),
                sent: 99_999,
                deferred: 250,
                bounced: 3,
                throttled: Some("421 4.7.28 Our system has detected an unusual rate".into()),
            }],
            holds: vec!["mx1.yahoo.test suspended until 2026-12-02 10:00:00 UTC: yahoo-tss04 (421 4.7.0 [TSS04])".into()],
            unsubscribed: None,
            complaints: None,
            last: false,
        }
    }

    #[test]
    fn no_line_is_wider_than_the_terminal() {
        for width in [40, 80, 120] {
            for l in terminal("spring-newsletter", &frame(), width) {
                assert!(l.chars().count() <= width, "{width}: {l:?}");
            }
        }
        let l = terminal("c", &frame(), 80);
        assert!(l[0].contains("123,456/200,000+ (importing…)"), "{l:?}");
        assert!(l[1].contains("deferred 250"), "{l:?}");
        assert!(
            l[2].contains("2,918/s now · 2,901/s avg · limit unlimited"),
            "{l:?}"
        );
        let l = terminal("c", &frame(), 120);
        assert!(l[3].contains("throttled: 421 4.7.28"), "{l:?}");
        assert!(
            l[4].starts_with("  hold: mx1.yahoo.test suspended until"),
            "{l:?}"
        );
        assert!(plain("c", &frame()).contains("1 site(s) held: mx1.yahoo.test"));
    }

    #[test]
    fn numbers_and_durations_are_whole() {
        assert_eq!(num(0), "0");
        assert_eq!(num(1_234), "1,234");
        assert_eq!(num(1_234_567), "1,234,567");
        assert_eq!(duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(duration(Duration::from_secs(3_720)), "1h02m");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abcd", 4), "abcd");
    }
}
