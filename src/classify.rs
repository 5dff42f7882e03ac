//! One classifier for SMTP replies and bounce messages: what a failure says about
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

/// The [`Category`] of a stored reply (`"552 5.2.2 mailbox full"`): its leading code, when it
/// has one, and its text. For the writer's soft-bounce counting and the report's categories.
pub fn reply_category(reply: &str) -> Category {
    let code = reply.get(..3).and_then(|c| c.parse().ok());
    category(code, None, reply)
}

/// What a failure is about, named the way bulk MTAs name it (KumoMTA's bounce classifier;
/// PowerMTA's `bad-mailbox`, `inactive-mailbox`, `quota-issues`, `spam-related`,
/// `policy-related`… map onto these, several to one). A lane's SMTP reply and a parsed bounce
/// get their category from the same [`category`], and their [`Action`] from
/// [`Category::action`], so the two can never disagree about what to do.
///
/// Two names are blast's own: [`Category::Throttled`] (KumoMTA leaves rate limiting inside
/// `TransientFailure`, but backing off a whole destination is a different action from
/// retrying one recipient) and [`Category::Complaint`] (an ARF feedback report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Category {
    /// The mailbox does not exist (or has moved without forwarding).
    InvalidRecipient,
    /// The domain does not exist, has no usable MX, or accepts no mail (null MX).
    BadDomain,
    /// The mailbox exists but is disabled, suspended or expired.
    InactiveMailbox,
    /// The mailbox or the system is full.
    QuotaIssues,
    /// The sending MTA gave up: the queue lifetime ran out.
    MessageExpired,
    /// The sending IP or domain is on a blocklist or has a bad reputation.
    SpamBlock,
    /// The message itself was judged spam.
    SpamContent,
    /// A virus was found in the message.
    VirusRelated,
    /// The content was refused for another reason (size, attachment, encoding).
    ContentRelated,
    /// A local policy refused the message (not spam, not authentication).
    PolicyRelated,
    /// SPF, DKIM or DMARC failed, or the sender must authenticate.
    AuthenticationFailed,
    /// The receiver refuses to relay for us.
    RelayingIssues,
    /// Mail loops, too many hops, routing errors.
    RoutingErrors,
    /// DNS lookups failed (temporarily).
    DNSFailure,
    /// The SMTP dialogue went wrong (syntax, unexpected commands, bad pipelining).
    ProtocolErrors,
    /// The connection failed or broke.
    BadConnection,
    /// The destination did not answer.
    NoAnswerFromHost,
    /// The receiver is misconfigured.
    BadConfiguration,
    /// The envelope sender was refused.
    InvalidSender,
    /// Too many recipients in one transaction.
    TooManyRecipients,
    /// The destination asks us to slow down (blast's name; see the type's docs).
    Throttled,
    /// Temporarily not delivered, no more specific reason.
    TransientFailure,
    /// An auto-reply / out-of-office message, not a bounce.
    AutoReply,
    /// A feedback-report (ARF) complaint (blast's name; see the type's docs).
    Complaint,
    /// A request to unsubscribe (an ARF `opt-out`).
    Unsubscribe,
    /// Nothing more specific is known (also: a delivery notification that reports success).
    Uncategorized,
}

/// What blast does about a category: the one mapping both the lanes and the bounce handling use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Put the address on the suppression list: the address itself is bad, or its owner
    /// complained.
    Suppress,
    /// Not about the address: a lane retries it on its schedule; after a bounce, later runs
    /// may send to it again.
    Retry,
    /// Back off the whole destination (rate limits, 421).
    ThrottleDestination,
    /// About the sender, its IP or its content: raise an alert for the domain or IP; never
    /// suppress the address.
    Alert,
    /// Nothing to do (auto-replies, success notices).
    None,
}

impl Category {
    /// The action this category calls for.
    pub fn action(self) -> Action {
        use Category::*;
        match self {
            InvalidRecipient | BadDomain | Complaint | Unsubscribe => Action::Suppress,
            Throttled => Action::ThrottleDestination,
            InactiveMailbox | QuotaIssues | MessageExpired | RoutingErrors | DNSFailure
            | BadConnection | NoAnswerFromHost | TooManyRecipients | TransientFailure => {
                Action::Retry
            }
            SpamBlock | SpamContent | VirusRelated | ContentRelated | PolicyRelated
            | AuthenticationFailed | RelayingIssues | ProtocolErrors | BadConfiguration
            | InvalidSender => Action::Alert,
            AutoReply | Uncategorized => Action::None,
        }
    }

    /// Whether the failure is the mailbox's own and temporary (full, inactive): the only
    /// soft failures that add up to a suppression over several campaigns. A blocklisting, a
    /// policy or content refusal, a routing or connection problem, an expiry says nothing
    /// about the mailbox: counting those would suppress a provider's whole segment after
    /// one long blocklisting.
    pub fn counts_as_soft(self) -> bool {
        matches!(self, Category::QuotaIssues | Category::InactiveMailbox)
    }

    /// Whether the failure is about the address itself (the only bounces that suppress it).
    pub fn is_address_failure(self) -> bool {
        matches!(self, Category::InvalidRecipient | Category::BadDomain)
    }
}

/// Blocklist and reputation texts: about the sending IP or domain, never the address, even
/// when a server puts them under 5.1.1 or "mailbox unavailable".
const SPAM_BLOCK_TEXTS: &[&str] = &[
    "spamhaus",
    "spamcop",
    "barracuda",
    "sorbs",
    "blacklist",
    "black list",
    "blocklist",
    "block list",
    "blocked using",
    "dnsbl",
    " rbl",
    "listed at",
    "listed on",
    "listed in",
    "is listed",
    "reputation",
    "client host blocked",
    "client host rejected",
    "blocked by",
    "ip blocked",
    "your ip",
    "ip address blacklisted",
    "my name was rejected",
    "has been blocked",
    "been temporarily blocked",
    "access denied",
    "poor reputation",
    "denied by policy",
    "not accepted from",
    "envelope blocked",
    "rejected due to ip",
    "refused by the server",
    "dynamic ip",
    "residential",
    "reverse dns",
    "no ptr",
    "ptr record",
    "rdns",
    "blocked",
];

/// The message itself was judged spam.
const SPAM_CONTENT_TEXTS: &[&str] = &[
    "spam",
    "junk mail",
    "unsolicited",
    "bulk mail",
    "message content rejected",
    "content rejected",
    "content filter",
    "identified as",
    "suspicious",
    "phish",
];

const VIRUS_TEXTS: &[&str] = &["virus", "malware", "infected"];

const AUTH_TEXTS: &[&str] = &[
    "dmarc",
    "spf",
    "dkim",
    "authentication",
    "unauthenticated",
    "not authenticated",
    "sender policy framework",
];

const RELAY_TEXTS: &[&str] = &[
    "relay access denied",
    "relaying denied",
    "relay denied",
    "relay not permitted",
    "not permitted to relay",
    "unable to relay",
    "relaying not allowed",
    "we do not relay",
    "not allowed to relay",
    "no relaying",
    "relay not allowed",
    "relaying disallowed",
];

/// Host or domain unknown: about the address's domain (suppressed, like a user unknown).
const BAD_DOMAIN_TEXTS: &[&str] = &[
    "host unknown",
    "unknown host",
    "host not found",
    "domain not found",
    "no such domain",
    "domain does not exist",
    "domain name not found",
    "unrouteable address",
    "unroutable address",
    "unrouteable mail domain",
    "name or service not known",
    "host or domain name not found",
    "no mx",
    "null mx",
    "does not accept mail",
    "domain is not found",
    "unknown domain",
    "domain unknown",
    "invalid domain",
    "domain is invalid",
    "nxdomain",
    "illegal host",
    "host/domain name",
    "no smtp service",
    "find a mail exchanger",
    "domain is not reachable",
];

/// Address-level texts beyond [`USER_UNKNOWN_TEXTS`] (which `classify` keeps as it is): the
/// phrasings of MTAs that the labelled corpus showed.
const MORE_USER_UNKNOWN_TEXTS: &[&str] = &[
    "user not exist",
    "not exist",
    "no valid recipients",
    "address couldn't be found",
    "address could not be found",
    "address not found",
    "requested action not taken: mailbox unavailable",
    "check if address is correct",
    "unknown address",
    "user unknown",
    "unknown local part",
    "no such person",
    "invalid address",
    "bad destination mailbox",
    "mailbox unavailable",
    "recipient rejected",
    "user doesn't exist",
    "not our customer",
    "not our user",
    // Lotus Notes / Domino in Japanese: "not in the directory list", "not found in the
    // Domino directory".
    "ディレクトリのリストにありません",
    "ディレクトリには見つかりません",
];

/// A content filter's answer that borrows the words of a user unknown (au/ezweb's
/// "550 : User unknown", empty where the address would be).
const FILTER_TEXTS: &[&str] = &["550 : user unknown", "550: : user unknown"];

/// Exchange Online's directory-based edge blocking says a recipient does not exist this way,
/// with words ("access denied") that otherwise mean a block.
/// Lotus Domino's "not listed in Domino Directory" too.
const DIRECTORY_REJECT_TEXTS: &[&str] = &[
    "recipient address rejected: access denied",
    "not listed in domino directory",
    "not listed in public",
];

/// Permission texts that mention a missing group or list but are about the poster.
const PERMISSION_TEXTS: &[&str] = &[
    "may not have permission",
    "not have permission to post",
    "you are not a member",
    "are not member",
    "recipient preferences",
    "refuse to receive",
    "refuses to receive",
];

/// The mailbox has moved (RFC 3463 X.1.6) — no forwarding address: treated as unknown.
const MOVED_TEXTS: &[&str] = &["has moved", "no longer with", "moved permanently"];

const QUOTA_TEXTS: &[&str] = &[
    "mailbox full",
    "mailbox is full",
    "box is full",
    "quota",
    "mailbox size limit",
    "exceeded storage",
    "storage allocation",
    "insufficient storage",
    "not enough space",
    "mailfolder is full",
    "too much mail",
    "full mailbox",
    "is over the limit",
    "mail box full",
    "disk full",
    "inbox is full",
];

const INACTIVE_TEXTS: &[&str] = &[
    "disabled",
    "suspended",
    "inactive",
    "deactivated",
    "account expired",
    "not active",
    "no longer active",
    "account has been locked",
    "locked",
    "temporarily unavailable",
];

const EXPIRED_TEXTS: &[&str] = &[
    "retry timeout exceeded",
    "retry time not reached for any host after a long failure period",
    "message expired",
    "delivery time expired",
    "could not be delivered for",
    "has been delayed",
    "queue too long",
    "too long in queue",
    "giving up",
    "timeout waiting",
    "expired",
    "was not delivered after",
    "delivery period",
];

const CONTENT_TEXTS: &[&str] = &[
    "message too large",
    "message too big",
    "size exceeds",
    "exceeds size",
    "message size",
    "too large",
    "attachment",
    "mime",
    "8bit",
    "line too long",
];

const POLICY_TEXTS: &[&str] = &[
    "policy",
    "not allowed",
    "prohibited",
    "refused",
    "rejected",
    "denied",
    "not permitted",
    "administrative",
    "restricted",
    "forbidden",
    "filtered",
];

const SENDER_TEXTS: &[&str] = &[
    "sender address rejected",
    "sender rejected",
    "sender domain",
    "domain of sender",
    "sender verify failed",
    "sender address",
    "invalid sender",
    "from address",
    "sender unknown",
    "from: domain is invalid",
    "provide a valid from",
];

const CONNECTION_TEXTS: &[&str] = &[
    "connection refused",
    "connection timed out",
    "connection reset",
    "connection closed",
    "lost connection",
    "network is unreachable",
    "no route to host",
    "timed out",
    "conversation with",
];

const ROUTING_TEXTS: &[&str] = &["mail loop", "loops back", "too many hops", "routing loop"];

/// `neko.example.com does not exist`: a host name, not a mailbox, is what is missing.
fn names_missing_domain(lower: &str) -> bool {
    lower
        .match_indices(" does not exist")
        .take(4)
        .any(|(at, _)| {
            let word = lower[..at].rsplit(char::is_whitespace).next().unwrap_or("");
            let word = word.trim_matches(['<', '>', '"', '\'', ':']);
            word.contains('.') && !word.contains('@') && !word.ends_with('.')
        })
}

/// Postfix's `Recipient address rejected.` with no reason after it: a directory miss (every
/// other use of the phrase names its reason, which the rules above look at first).
fn bare_recipient_reject(lower: &str) -> bool {
    lower
        .match_indices("recipient address rejected")
        .take(4)
        .any(|(at, m)| {
            let rest = lower[at + m.len()..].trim_start_matches(['.', ' ', '\r', '\n', ')']);
            rest.is_empty() || rest.starts_with("(in reply")
        })
}

/// [`category`] for a reply at a known stage.
///
/// - A user-unknown answer to the message data (after DATA, "in reply to end of DATA
///   command") with no specific enhanced code comes from a content filter, not a directory
///   lookup — the recipient was accepted at RCPT — so it is not an address failure. (With
///   5.1.1 it is: pipelining MTAs report RCPT failures after DATA.)
/// - An address-level answer to MAIL FROM is about the sender's address.
pub fn category_at(
    stage: Stage,
    code: Option<u16>,
    enhanced: Option<Enhanced>,
    text: &str,
) -> Category {
    let c = category(code, enhanced, text);
    if !c.is_address_failure() {
        return c;
    }
    let detail = enhanced
        .or_else(|| parse_enhanced(text))
        .map(|e| (e.1, e.2));
    match stage {
        Stage::Mail => Category::InvalidSender,
        Stage::Data | Stage::DataEnd
            if c == Category::InvalidRecipient
                && matches!(detail, None | Some((0, 0)) | Some((2, 0))) =>
        {
            Category::PolicyRelated
        }
        _ => c,
    }
}

/// Maps an SMTP reply (code, enhanced status, text) to a [`Category`]: the same function for a
/// lane's reply and for a parsed bounce's diagnostic, so both get the same category.
///
/// Texts about the sender, the content or a blocklist are looked at before any address rule:
/// a 5xx about them is never an address failure, whatever enhanced code it carries.
pub fn category(code: Option<u16>, enhanced: Option<Enhanced>, text: &str) -> Category {
    let lower = text.to_ascii_lowercase();
    let enhanced = enhanced.or_else(|| parse_enhanced(text));
    let class = enhanced
        .map(|e| e.0)
        .or(code.map(|c| (c / 100) as u8))
        .unwrap_or(5);
    if class == 2 {
        return Category::Uncategorized;
    }
    let has = |needles: &[&str]| contains_any(&lower, needles);
    if code == Some(421) || has(THROTTLING_TEXTS) {
        return Category::Throttled;
    }
    let detail = enhanced.map(|e| (e.1, e.2));
    // Codes that name the sender's problem exactly go first: 5.7.26 DMARC, 5.7.1 with an
    // auth text, X.7.23-27 SPF/DKIM.
    if matches!(detail, Some((7, 20..=27))) || has(AUTH_TEXTS) {
        return Category::AuthenticationFailed;
    }
    if has(VIRUS_TEXTS) {
        return Category::VirusRelated;
    }
    if has(RELAY_TEXTS) || matches!(detail, Some((4, 3))) && lower.contains("relay") {
        return Category::RelayingIssues;
    }
    let user_unknown = has(USER_UNKNOWN_TEXTS) || has(MORE_USER_UNKNOWN_TEXTS);
    if has(DIRECTORY_REJECT_TEXTS) {
        return Category::InvalidRecipient;
    }
    if has(PERMISSION_TEXTS) {
        return Category::PolicyRelated;
    }
    if has(SENDER_TEXTS) {
        return Category::InvalidSender;
    }
    if has(BAD_DOMAIN_TEXTS) && !has(SPAM_BLOCK_TEXTS) {
        return Category::BadDomain;
    }
    if has(SPAM_BLOCK_TEXTS) {
        return Category::SpamBlock;
    }
    if has(SPAM_CONTENT_TEXTS) {
        return Category::SpamContent;
    }
    if has(SENDER_TEXTS) || matches!(detail, Some((1, 7)) | Some((1, 8))) {
        return Category::InvalidSender;
    }
    if has(QUOTA_TEXTS) || matches!(detail, Some((2, 2)) | Some((3, 1))) {
        return Category::QuotaIssues;
    }
    if has(BAD_DOMAIN_TEXTS) || matches!(detail, Some((1, 2)) | Some((1, 10))) {
        return Category::BadDomain;
    }
    if names_missing_domain(&lower) {
        return Category::BadDomain;
    }
    if bare_recipient_reject(&lower) {
        return Category::InvalidRecipient;
    }
    if user_unknown
        || has(MOVED_TEXTS)
        || matches!(detail, Some((1, 1)) | Some((1, 3)) | Some((1, 6)))
        || matches!(detail, Some((1, 0))) && lower.contains("address rejected")
    {
        // "User unknown" under 5.7.x is a filter's answer (`classify` calls it
        // sender-permanent too), and au/ezweb's content filter answers "550 : User unknown".
        if matches!(detail, Some((7, _))) || has(FILTER_TEXTS) {
            return Category::PolicyRelated;
        }
        if has(INACTIVE_TEXTS) && !matches!(detail, Some((1, 1))) {
            return Category::InactiveMailbox;
        }
        return Category::InvalidRecipient;
    }
    if has(INACTIVE_TEXTS) || matches!(detail, Some((2, 1))) {
        return Category::InactiveMailbox;
    }
    if has(EXPIRED_TEXTS) || matches!(detail, Some((4, 7))) {
        return Category::MessageExpired;
    }
    if has(ROUTING_TEXTS) || matches!(detail, Some((4, 6))) {
        return Category::RoutingErrors;
    }
    if has(CONTENT_TEXTS) || matches!(detail, Some((3, 4)) | Some((6, _))) {
        return Category::ContentRelated;
    }
    if has(CONNECTION_TEXTS) || matches!(detail, Some((4, 1)) | Some((4, 2))) {
        return Category::BadConnection;
    }
    if matches!(detail, Some((4, 3)) | Some((4, 4))) {
        return Category::DNSFailure;
    }
    if matches!(detail, Some((5, 3))) {
        return Category::TooManyRecipients;
    }
    if matches!(detail, Some((5, _))) {
        return Category::ProtocolErrors;
    }
    if has(&["greylist", "graylist", "try again later"]) {
        return Category::TransientFailure;
    }
    if has(POLICY_TEXTS) || matches!(detail, Some((7, _))) {
        return Category::PolicyRelated;
    }
    if class == 4 {
        return Category::TransientFailure;
    }
    Category::Uncategorized
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
    #[test]
    fn categories_and_actions() {
        let cat = |code: u16, text: &str| category(Some(code), None, text);
        assert_eq!(
            cat(550, "5.1.1 <a@b.example>: user unknown"),
            Category::InvalidRecipient
        );
        assert_eq!(cat(550, "No such user here"), Category::InvalidRecipient);
        assert_eq!(cat(553, "5.1.10 recipient null MX"), Category::BadDomain);
        assert_eq!(cat(550, "5.7.1 blocked by Spamhaus"), Category::SpamBlock);
        assert_eq!(
            cat(
                550,
                "5.1.1 mailbox unavailable: your IP is listed at zen.spamhaus.org"
            ),
            Category::SpamBlock
        );
        assert_eq!(
            cat(550, "5.7.26 unauthenticated email is not accepted (DMARC)"),
            Category::AuthenticationFailed
        );
        assert_eq!(cat(552, "5.2.2 mailbox full"), Category::QuotaIssues);
        assert_eq!(cat(554, "content rejected as spam"), Category::SpamContent);
        assert_eq!(cat(421, "4.7.0 too busy"), Category::Throttled);
        assert_eq!(
            cat(451, "4.7.1 greylisted, try again"),
            Category::TransientFailure
        );
        assert_eq!(cat(450, "4.2.0 mailbox busy"), Category::TransientFailure);
        assert_eq!(Category::InvalidRecipient.action(), Action::Suppress);
        assert_eq!(Category::SpamBlock.action(), Action::Alert);
        assert_eq!(Category::Throttled.action(), Action::ThrottleDestination);
        assert_eq!(Category::QuotaIssues.action(), Action::Retry);
        assert_eq!(Category::AutoReply.action(), Action::None);
    }

    /// A lane reply that `classify` calls address-permanent is an address-failure category,
    /// and one it calls sender-permanent is not: the two views of a reply agree.
    #[test]
    fn category_agrees_with_classify() {
        for (code, text) in [
            (550, "5.1.1 <a@b.example>: user unknown"),
            (550, "No such user here"),
            (553, "5.1.10 recipient null MX"),
            (550, "5.7.1 Service unavailable; client host blocked"),
            (550, "5.7.26 unauthenticated email is not accepted (DMARC)"),
            (554, "content rejected"),
            (552, "5.2.2 mailbox full"),
            (550, "5.7.1 blocked by Spamhaus"),
        ] {
            let address = classify(Stage::Rcpt, code, text) == Class::AddressPermanent;
            assert_eq!(
                category(Some(code), None, text).is_address_failure(),
                address,
                "{code} {text}"
            );
        }
    }
}
