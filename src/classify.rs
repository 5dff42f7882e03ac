//! One classifier for SMTP replies (and, later, bounce messages): what a failure says about
//! the address, the sender, or the moment.
//!
//! Not every 5xx means "this address is bad". 550 5.1.1 does; 550 5.7.1 (your IP is listed),
//! 5.7.26 (DMARC), 554 content rejected and 552 5.2.2 (mailbox full) are about the sender or
//! the message — suppressing on those would wipe out a provider's whole segment after one DNS
//! mistake. The lane and the bounce parser both call [`classify`].

/// Where in the SMTP dialogue a reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Greeting or EHLO/HELO.
    Connect,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// The DATA command (354 expected).
    Data,
    /// The reply to the final dot.
    DataEnd,
    /// A bounce (DSN) received later; no stage known.
    Bounce,
}

/// What to do about a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx/3xx.
    Success,
    /// The address itself is bad (user unknown, bad domain): bounced and suppressed.
    AddressPermanent,
    /// Permanent, but about the sender or the message (blocklist, DMARC, content, size):
    /// bounced for this run, not suppressed; an alert for the domain.
    OtherPermanent,
    /// Try this recipient again later (greylisting, full mailbox, temporary local error).
    Transient,
    /// The destination asks us to slow down: back off the whole destination.
    Throttling,
}

impl Class {
    /// Final failure for this run.
    pub fn is_permanent(self) -> bool {
        matches!(self, Class::AddressPermanent | Class::OtherPermanent)
    }

    /// Worth retrying.
    pub fn is_transient(self) -> bool {
        matches!(self, Class::Transient | Class::Throttling)
    }
}

/// An enhanced status code (RFC 3463) `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl std::fmt::Display for Enhanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Finds an enhanced status code at the start of the reply text (`5.1.1 …`), or anywhere as a
/// fallback (some servers put it after a word, e.g. `#5.1.1`).
pub fn parse_enhanced(text: &str) -> Option<Enhanced> {
    text.split(|c: char| {
        c.is_whitespace() || c == '#' || c == '(' || c == ')' || c == '[' || c == ']'
    })
    .take(8)
    .find_map(|w| {
        let w = w.trim_end_matches([',', ';', ':', '.']);
        let mut it = w.split('.');
        let (a, b, c) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        let a: u8 = a.parse().ok()?;
        if !(2..=5).contains(&a) || b.len() > 3 || c.len() > 3 {
            return None;
        }
        Some(Enhanced(a, b.parse().ok()?, c.parse().ok()?))
    })
}

/// Texts that mean "no such mailbox" when a server gives no (or a generic) enhanced code.
const USER_UNKNOWN_TEXTS: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "no such recipient",
    "recipient unknown",
    "unknown recipient",
    "user not found",
    "recipient not found",
    "mailbox not found",
    "address rejected: user unknown",
    "does not exist",
    "invalid recipient",
    "invalid mailbox",
    "account has been disabled",
    "mailbox is disabled",
    "no mailbox here",
    "not a valid mailbox",
    "doesn't have a",
    "address unknown",
];

/// Provider texts that mean "slow down" even on a plain 4xx/5.7.x.
const THROTTLING_TEXTS: &[&str] = &[
    "rate limit",
    "ratelimit",
    "rate-limit",
    "too many messages",
    "too many connections",
    "too many recipients this",
    "throttl",
    "try again later, closing",
    "temporarily deferred due to unexpected volume",
    "tss04", // Yahoo: temporarily deferred due to user complaints / volume
    "tss01",
    "tss05",
    "ts01",
    "ts02",
    "ts03",
    "4.7.650", // Microsoft: IP reputation throttling
    "4.7.28",  // Gmail: unusual rate of unsolicited mail
    "unusual rate",
    "sending rate",
    "exceeded the rate",
];

fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| haystack.contains(n))
}

/// Classifies a reply. `code` is the three-digit reply code; `text` the reply text (all lines).
pub fn classify(stage: Stage, code: u16, text: &str) -> Class {
    if (200..400).contains(&code) {
        return Class::Success;
    }
    let lower = text.to_ascii_lowercase();
    let enhanced = parse_enhanced(text);
    // RFC 5321 §4.5.3.1.10: a 552 to RCPT ("too many recipients") is really 452.
    let code = if stage == Stage::Rcpt && code == 552 {
        452
    } else {
        code
    };
    if code == 421 || contains_any(&lower, THROTTLING_TEXTS) {
        return Class::Throttling;
    }
    if (400..500).contains(&code) {
        if let Some(Enhanced(_, 7, 0)) = enhanced {
            // 4.7.0 is used both for greylisting and for rate limiting; the texts above caught the
            // rate-limit ones, the rest is a per-recipient retry.
            return Class::Transient;
        }
        return Class::Transient;
    }
    if !(500..600).contains(&code) {
        // Not a valid SMTP reply code: treat as temporary, the transaction did not complete.
        return Class::Transient;
    }
    // 5xx from here.
    if let Some(Enhanced(cls, subj, detail)) = enhanced {
        if cls == 4 {
            // 5xx reply with a 4.x.x enhanced code: the enhanced code is more specific.
            return Class::Transient;
        }
        match (subj, detail) {
            (1, 1) | (1, 2) | (1, 6) | (1, 10) | (1, 3) => return Class::AddressPermanent,
            (1, 0) | (0, 0) if contains_any(&lower, USER_UNKNOWN_TEXTS) => {
                return Class::AddressPermanent
            }
            // 5.2.1 mailbox disabled is about the address, but providers also use it for
            // "not accepting messages" temporarily: bounce without suppression is the safe side.
            _ => return Class::OtherPermanent,
        }
    }
    if stage == Stage::Rcpt
        && (code == 550 || code == 551 || code == 553)
        && contains_any(&lower, USER_UNKNOWN_TEXTS)
    {
        return Class::AddressPermanent;
    }
    Class::OtherPermanent
}

/// Whether a stored reply (`"550 5.1.1 user unknown"`) says the address itself is bad, for
/// records that carry no class. Replies without a leading code (`not sent: …`, written by
/// blast itself) are never about the address. The stage is unknown once stored; RCPT is the
/// one where address-level replies come, and the one whose text rules are the widest.
pub fn is_address_level_reply(reply: &str) -> bool {
    let reply = reply.trim_start();
    let (code, text) = reply.split_once(' ').unwrap_or((reply, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    code.parse::<u16>()
        .is_ok_and(|code| classify(Stage::Rcpt, code, text) == Class::AddressPermanent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_level_replies() {
        let is_address_level = is_address_level_reply;
        assert!(is_address_level("550 5.1.1 <a@b.example>: user unknown"));
        assert!(is_address_level("550 No such user here"));
        assert!(is_address_level("553 5.1.10 recipient null MX"));
        assert!(!is_address_level("550 5.7.26 unauthenticated"));
        assert!(!is_address_level("554 content rejected"));
        assert!(!is_address_level("not sent: address unsafe on the wire"));
        assert!(!is_address_level("5501 5.1.1 odd"));
        assert!(!is_address_level(""));
    }

    #[test]
    fn address_vs_sender_permanent() {
        assert_eq!(
            classify(Stage::Rcpt, 550, "5.1.1 <a@b.example>: user unknown"),
            Class::AddressPermanent
        );
        assert_eq!(
            classify(
                Stage::Rcpt,
                550,
                "5.7.1 Service unavailable; client host blocked"
            ),
            Class::OtherPermanent
        );
        assert_eq!(
            classify(
                Stage::DataEnd,
                550,
                "5.7.26 unauthenticated email is not accepted (DMARC)"
            ),
            Class::OtherPermanent
        );
        assert_eq!(
            classify(Stage::DataEnd, 554, "content rejected"),
            Class::OtherPermanent
        );
        assert_eq!(
            classify(Stage::DataEnd, 552, "5.2.2 mailbox full"),
            Class::OtherPermanent
        );
        assert_eq!(
            classify(Stage::Rcpt, 550, "No such user here"),
            Class::AddressPermanent
        );
        assert_eq!(
            classify(Stage::Rcpt, 553, "5.1.10 recipient null MX"),
            Class::AddressPermanent
        );
    }

    #[test]
    fn transient_and_throttling() {
        assert_eq!(
            classify(Stage::Rcpt, 451, "4.7.1 greylisted, try again"),
            Class::Transient
        );
        assert_eq!(
            classify(Stage::Rcpt, 450, "4.2.0 mailbox busy"),
            Class::Transient
        );
        // RFC 5321 §4.5.3.1.10: 552 to RCPT is 452, whatever its enhanced code says.
        assert_eq!(
            classify(Stage::Rcpt, 552, "5.2.2 too many recipients"),
            Class::Transient
        );
        assert_eq!(
            classify(Stage::Rcpt, 552, "too many recipients"),
            Class::Transient
        );
        assert_eq!(
            classify(Stage::Connect, 421, "4.7.0 too busy"),
            Class::Throttling
        );
        assert_eq!(
            classify(
                Stage::Rcpt,
                451,
                "4.7.650 The mail server [x] has been temporarily rate limited"
            ),
            Class::Throttling
        );
        assert_eq!(
            classify(
                Stage::Mail,
                421,
                "4.7.0 [TSS04] Messages temporarily deferred"
            ),
            Class::Throttling
        );
        assert_eq!(
            classify(Stage::Rcpt, 450, "4.7.0 rate limit exceeded"),
            Class::Throttling
        );
        assert_eq!(classify(Stage::DataEnd, 250, "2.0.0 ok"), Class::Success);
    }

    #[test]
    fn enhanced_parsing() {
        assert_eq!(
            parse_enhanced("5.1.1 user unknown"),
            Some(Enhanced(5, 1, 1))
        );
        assert_eq!(
            parse_enhanced("Requested action aborted #4.4.2"),
            Some(Enhanced(4, 4, 2))
        );
        assert_eq!(parse_enhanced("version 1.2.3 ok"), None);
    }
}
