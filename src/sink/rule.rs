//! Fault-injection rules: which recipients get which misbehaviour, and how often.
//!
//! CLI form (`blast sink --rule …`): `KIND:PATTERN[=ARG][;times=N][;fraction=F]`
//!
//! | kind              | arg                       | action                          |
//! |-------------------|---------------------------|---------------------------------|
//! | `rcpt`            | `550 5.1.1 no such user`  | [`Action::RcptReply`]           |
//! | `data`            | `451 4.3.0 try later`     | [`Action::DataReply`]           |
//! | `drop-mid-data`   | —                         | [`Action::DropMidData`]         |
//! | `drop-after-data` | —                         | [`Action::DropAfterData`]       |
//! | `delay`           | `200ms`, `2s`, `1.5s`, `1m` | [`Action::Delay`]             |
//! | `421`             | —                         | [`Action::Reply421AtRcpt`]      |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One fault-injection rule. The first rule (in order) whose pattern matches a
/// recipient, whose `times` budget is not used up and whose `fraction` draw hits
/// decides what happens to that recipient in this transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Recipient pattern, ASCII case-insensitive: `*` (any), `*@domain`, `*suffix`,
    /// or an exact address. `*` may appear anywhere and matches any run of characters.
    pub pattern: String,
    /// What to do to matching recipients.
    pub action: Action,
    /// Apply only to the first N matching transactions per recipient, then behave normally.
    pub times: Option<u32>,
    /// Share of (recipient, attempt) pairs the rule applies to, 0..=1; 1.0 = always.
    /// Deterministic (a hash, not a RNG) so test runs are reproducible.
    pub fraction: f64,
}

/// The misbehaviour a [`Rule`] injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reply to RCPT TO with this code and text (e.g. `450`, `"4.2.0 greylisted"`).
    /// A 2xx code accepts the recipient with that reply.
    RcptReply(u16, String),
    /// Accept the data, then answer the final dot with this code and text.
    /// A 2xx code still records the message.
    DataReply(u16, String),
    /// Read the first line of the DATA body, then close the socket without replying.
    DropMidData,
    /// Read the whole body including the dot, then close without replying: the
    /// ambiguous case. The message *is* recorded (with `reply: None`), as a real
    /// server whose reply got lost would have delivered it.
    DropAfterData,
    /// Delay the reply to the final dot by this much, then answer 250.
    Delay(Duration),
    /// Answer RCPT with `421 4.7.0 too many messages, closing` and close the connection.
    Reply421AtRcpt,
}

impl Action {
    /// True if the action happens at RCPT TO; the others act on the DATA phase.
    pub fn at_rcpt(&self) -> bool {
        matches!(self, Action::RcptReply(..) | Action::Reply421AtRcpt)
    }
}

impl Rule {
    /// A rule that always applies (`times: None`, `fraction: 1.0`).
    pub fn new(pattern: impl Into<String>, action: Action) -> Rule {
        Rule {
            pattern: pattern.into(),
            action,
            times: None,
            fraction: 1.0,
        }
    }

    /// Whether the pattern matches `rcpt` (ASCII case-insensitive).
    pub fn matches(&self, rcpt: &str) -> bool {
        glob_match_ci(self.pattern.as_bytes(), rcpt.as_bytes())
    }

    /// Whether the `fraction` draw hits for this recipient's `attempt`-th RCPT TO
    /// (1-based). Public so tests can predict which attempts a fractional rule hits.
    pub fn fraction_hit(&self, rcpt: &str, attempt: u32) -> bool {
        if self.fraction >= 1.0 {
            return true;
        }
        // NaN counts as 0: never.
        if self.fraction.is_nan() || self.fraction <= 0.0 {
            return false;
        }
        let h = mix(fnv1a(rcpt, attempt));
        ((h >> 11) as f64) / ((1u64 << 53) as f64) < self.fraction
    }
}

/// FNV-1a over the lowercased recipient and the attempt number: stable across Rust
/// versions and platforms, unlike `DefaultHasher`.
fn fnv1a(rcpt: &str, attempt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = rcpt.bytes().map(|b| b.to_ascii_lowercase());
    for b in bytes.chain([0xff]).chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64 finaliser: FNV's low bits are poorly mixed for short inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Wildcard match, `*` = any run of bytes, ASCII case-insensitive. Iterative with
/// one backtrack point, so it is linear-ish and cannot blow up on hostile patterns.
fn glob_match_ci(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p].eq_ignore_ascii_case(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

/// A `--rule` string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sink rule {input:?}: {reason}")]
pub struct RuleParseError {
    /// The rule as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Rule {
    type Err = RuleParseError;

    fn from_str(s: &str) -> Result<Rule, RuleParseError> {
        let err = |reason: &str| RuleParseError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        // Options are peeled off the end one `;` at a time, so a reply text may itself
        // contain `;` as long as what follows it is not `times=`/`fraction=`.
        let mut main = s.trim();
        let (mut times, mut fraction) = (None, 1.0);
        while let Some((head, tail)) = main.rsplit_once(';') {
            let tail = tail.trim();
            if let Some(v) = tail.strip_prefix("times=") {
                let n: u32 = v.parse().map_err(|_| err("times must be a whole number"))?;
                times = Some(n);
            } else if let Some(v) = tail.strip_prefix("fraction=") {
                let f: f64 = v.parse().map_err(|_| err("fraction must be a number"))?;
                if !(0.0..=1.0).contains(&f) {
                    return Err(err("fraction must be between 0 and 1"));
                }
                fraction = f;
            } else {
                break;
            }
            main = head.trim_end();
        }
        let (kind, rest) = main
            .split_once(':')
            .ok_or_else(|| err("expected KIND:PATTERN[=ARG]"))?;
        let kind = kind.trim().to_ascii_lowercase();
        let needs_reply = kind == "rcpt" || kind == "data";
        let (pattern, arg) = if needs_reply {
            // Addresses may contain '=' (VERP), so the split is at the '=' that starts
            // a reply code, not simply the first one.
            let at = find_reply_start(rest)
                .ok_or_else(|| err("expected =CODE TEXT, e.g. =550 5.1.1 no such user"))?;
            (&rest[..at], Some(&rest[at + 1..]))
        } else if kind == "delay" {
            let (p, a) = rest
                .rsplit_once('=')
                .ok_or_else(|| err("expected =DURATION, e.g. =200ms"))?;
            (p, Some(a))
        } else {
            (rest, None)
        };
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(err("empty recipient pattern (use * for any)"));
        }
        let action = match (kind.as_str(), arg) {
            ("rcpt", Some(a)) => {
                let (code, text) = parse_reply(a).map_err(|r| err(&r))?;
                Action::RcptReply(code, text)
            }
            ("data", Some(a)) => {
                let (code, text) = parse_reply(a).map_err(|r| err(&r))?;
                Action::DataReply(code, text)
            }
            ("delay", Some(a)) => Action::Delay(
                parse_duration(a.trim())
                    .ok_or_else(|| err("bad duration (use e.g. 200ms, 2s, 1m)"))?,
            ),
            ("drop-mid-data", None) => Action::DropMidData,
            ("drop-after-data", None) => Action::DropAfterData,
            ("421", None) => Action::Reply421AtRcpt,
            _ => {
                return Err(err(
                    "unknown kind (rcpt, data, drop-mid-data, drop-after-data, delay, 421)",
                ))
            }
        };
        Ok(Rule {
            pattern: pattern.to_string(),
            action,
            times,
            fraction,
        })
    }
}

/// Index of the `=` that is followed by a three-digit reply code.
fn find_reply_start(s: &str) -> Option<usize> {
    s.match_indices('=').map(|(i, _)| i).find(|&i| {
        let after = &s.as_bytes()[i + 1..];
        after.len() >= 3
            && after[..3].iter().all(u8::is_ascii_digit)
            && after.get(3).is_none_or(|&b| b == b' ')
    })
}

/// `"550 5.1.1 no such user"` → `(550, "5.1.1 no such user")`.
fn parse_reply(s: &str) -> Result<(u16, String), String> {
    let s = s.trim();
    let (code, text) = s.split_once(' ').unwrap_or((s, ""));
    let code: u16 = code
        .parse()
        .map_err(|_| "reply code must be 3 digits".to_string())?;
    if !(200..=599).contains(&code) {
        return Err("reply code must be 2xx, 4xx or 5xx".into());
    }
    if text.contains(['\r', '\n']) {
        return Err("reply text must be one line".into());
    }
    Ok((code, text.trim().to_string()))
}

/// `200ms`, `1.5s`, `2m`, `500us`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

impl fmt::Display for Rule {
    /// The CLI form; `Rule::from_str(&rule.to_string())` gives the rule back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.pattern;
        match &self.action {
            Action::RcptReply(c, t) => write!(f, "rcpt:{p}={c} {t}")?,
            Action::DataReply(c, t) => write!(f, "data:{p}={c} {t}")?,
            Action::DropMidData => write!(f, "drop-mid-data:{p}")?,
            Action::DropAfterData => write!(f, "drop-after-data:{p}")?,
            Action::Delay(d) if d.subsec_nanos() % 1_000_000 == 0 => {
                write!(f, "delay:{p}={}ms", d.as_millis())?
            }
            Action::Delay(d) => write!(f, "delay:{p}={}us", d.as_micros())?,
            Action::Reply421AtRcpt => write!(f, "421:{p}")?,
        }
        if let Some(n) = self.times {
            write!(f, ";times={n}")?;
        }
        if self.fraction < 1.0 {
            write!(f, ";fraction={}", self.fraction)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match_ci(b"*", b"a@b"));
        assert!(glob_match_ci(b"*@B.example", b"x@b.EXAMPLE"));
        assert!(!glob_match_ci(b"*@b.example", b"x@sub.b.example"));
        assert!(glob_match_ci(b"*.example", b"x@sub.b.example"));
        assert!(glob_match_ci(b"user@*", b"user@x"));
        assert!(glob_match_ci(b"a@b", b"A@B"));
        assert!(!glob_match_ci(b"a@b", b"a@bc"));
        assert!(glob_match_ci(b"*a*b*", b"xxaxxbxx"));
    }

    #[test]
    fn fraction_is_roughly_right_and_deterministic() {
        let mut r = Rule::new("*", Action::DropMidData);
        r.fraction = 0.3;
        let hits = (0..10_000)
            .filter(|i| r.fraction_hit(&format!("u{i}@x"), 1))
            .count();
        assert!((2_500..3_500).contains(&hits), "{hits}");
        assert_eq!(r.fraction_hit("A@x", 2), r.fraction_hit("a@X", 2));
    }
}
