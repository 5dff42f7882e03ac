//! The plain-text bounces of real MTAs: Postfix (`<a@b>: host x said: 550 …`), Exim (the
//! address indented on its own line, the SMTP error under it), qmail and Yahoo
//! (`<a@b>:` then `Remote host said: …`), Sendmail (`<a@b>... User unknown`), Gmail (the
//! address on its own line, the server's reply further down), Exchange and others
//! (`Recipient: a@b`, `Your message to a@b …`). Rather than one parser per MTA, recipient
//! lines are recognised by where the address sits on the line, and the reply text is what
//! follows it up to the next recipient.

use super::{scan, Finding};

/// Most text kept as one recipient's context.
const MAX_CONTEXT: usize = 1500;

/// Lines that start the returned original in a text body (lower-cased phrases); a line counts
/// when it contains one and is decorated (`---`, `===`, `***`) or is short.
const ORIGINAL_MARKERS: &[&str] = &[
    "this is a copy of the message",
    "copy of the message",
    "original message",
    "returned message",
    "unsent message",
    "message header follows",
    "original message header",
    "headers of the original",
    "original mail",
    "content-type: message/rfc822",
    "message text follows",
    "below is a copy",
    "included is a copy",
    "rfc822 headers",
];

/// Splits a bounce's text into its own part and the quoted original after a "copy of the
/// message" line (when there is one).
pub fn split_original(text: &str) -> (&str, Option<&str>) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.len() < 120 && !trimmed.is_empty() {
            let lower = trimmed.to_ascii_lowercase();
            let decorated = trimmed.starts_with(['-', '=', '*', '_', '>'])
                || lower.ends_with(':')
                || lower.starts_with("content-type");
            let leads = [
                "original message follows",
                "original message",
                "unsent message",
            ]
            .iter()
            .any(|m| lower.starts_with(m));
            if (decorated || leads) && ORIGINAL_MARKERS.iter().any(|m| lower.contains(m)) {
                let rest = text[offset + line.len()..].trim_start_matches(['\r', '\n']);
                return (&text[..offset], Some(rest));
            }
        }
        offset += line.len();
    }
    (text, None)
}

/// Local parts that are the reporting system, not a recipient.
fn is_daemon(addr: &str) -> bool {
    let local = addr.split('@').next().unwrap_or("");
    [
        "mailer-daemon",
        "postmaster",
        "mail-daemon",
        "maildaemon",
        "mailerdaemon",
        "noreply",
        "no-reply",
    ]
    .iter()
    .any(|d| local.eq_ignore_ascii_case(d))
}

/// How an address sits on its line.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    /// A recipient line: the address opens the line, or follows a recipient label.
    Strong,
    /// Mentioned in passing.
    Weak,
    /// The sender's side (`MAIL FROM:<…>`, `From:`): never the recipient.
    Sender,
}

fn kind(before: &str) -> Kind {
    let b = before
        .trim_end_matches(['<', '"', '\'', ' ', '\t', '(', '['])
        .to_ascii_lowercase();
    let b = b.trim();
    if b.is_empty() {
        return Kind::Strong;
    }
    const SENDER: &[&str] = &[
        "mail from:",
        "from:",
        "from",
        "sender:",
        "sender",
        "envelope-from",
        "return-path:",
        "reply-to:",
        "sent by",
        "by",
        "message-id:",
        "message-id",
        "references:",
        "in-reply-to:",
    ];
    if SENDER.iter().any(|s| b.ends_with(s)) {
        return Kind::Sender;
    }
    const LABELS: &[&str] = &[
        "rcpt to:",
        "rcpt to",
        "recipient:",
        "recipients:",
        "recipient",
        "address:",
        "addresses:",
        "address",
        "addressee:",
        "to:",
        " to",
        "for",
        "user",
        "user:",
        "mailbox",
        "rfc822;",
        "failed:",
        "unknown:",
        "error:",
        "destinataire :",
        "destinataire:",
        "宛先:",
        "宛先 :",
    ];
    // `554 <a@b>... Host unknown`: a reply line that opens with the address it is about.
    let reply_code = b.len() == 3 && b.bytes().all(|c| c.is_ascii_digit());
    if reply_code || LABELS.iter().any(|s| b.ends_with(s)) || b == "to" {
        return Kind::Strong;
    }
    Kind::Weak
}

struct Hit {
    addr: String,
    kind: Kind,
    /// One of the bounce's own addresses (its To, its envelope): a recipient only when
    /// nothing else is (a message someone sent to themselves).
    own: bool,
    /// Byte offset of its line in the region.
    line_start: usize,
}

fn hits(region: &str, exclude: &[String]) -> Vec<Hit> {
    let mut out = Vec::new();
    let mut offset = 0;
    for line in region.split_inclusive('\n') {
        if out.len() > 5000 {
            break;
        }
        for (at, addr) in scan::addresses(line) {
            if is_daemon(&addr) {
                continue;
            }
            out.push(Hit {
                own: exclude.contains(&addr),
                kind: kind(&line[..at]),
                addr,
                line_start: offset,
            });
        }
        offset += line.len();
    }
    out
}

/// The text from `start` to the next line that starts another recipient's entry.
fn context_from(region: &str, start: usize, next: Option<usize>) -> &str {
    let end = next.unwrap_or(region.len()).min(region.len());
    let s = &region[start..end.max(start)];
    scan::prefix(s, MAX_CONTEXT)
}

fn starts_with_code(s: &str) -> bool {
    let b = s.trim_start().as_bytes();
    b.len() > 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' '
}

/// The first line of `s` and the indented lines that continue it.
fn one_entry(s: &str) -> &str {
    let mut end = 0;
    for (i, line) in s.split_inclusive('\n').enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        end += line.len();
    }
    &s[..end]
}

/// The recipients a text bounce names, each with the text that follows it.
pub(crate) fn findings(region: &str, exclude: &[String]) -> Vec<Finding> {
    let hits = hits(region, exclude);
    let pick = |kind: Kind, own: bool| -> Vec<&Hit> {
        hits.iter()
            .filter(|h| h.kind == kind && h.own == own)
            .collect()
    };
    let mut chosen = pick(Kind::Strong, false);
    if chosen.is_empty() {
        chosen = pick(Kind::Weak, false);
        chosen.truncate(1);
    }
    if chosen.is_empty() {
        chosen = pick(Kind::Strong, true);
        chosen.truncate(1);
    }
    let mut out: Vec<Finding> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, h) in chosen.iter().enumerate() {
        if seen.contains(&h.addr.as_str()) {
            continue;
        }
        seen.push(&h.addr);
        // The entry runs to the next line that names a different recipient.
        let next = chosen[i + 1..]
            .iter()
            .find(|n| n.addr != h.addr && n.line_start > h.line_start)
            .map(|n| n.line_start);
        let mut context = context_from(region, h.line_start, next);
        if starts_with_code(context) {
            // Sendmail's summary (`554 <a@b>... Host unknown`): one line per recipient, and
            // the lines after it are other recipients' replies.
            context = one_entry(context);
        }
        out.push(Finding {
            recipient: Some(h.addr.clone()),
            context: Some(context.to_owned()),
            ..Finding::default()
        });
    }
    out
}

/// The text around a recipient already known from DSN fields, from the line that first
/// names it, bounded. `None` when the text does not name it.
/// The entry ends at the first later line that names one of `others`.
pub(crate) fn context_for(
    region: &str,
    lower_region: &str,
    rcpt: &str,
    others: &[&str],
) -> Option<String> {
    let at = lower_region.find(rcpt)?;
    let line_start = lower_region[..at].rfind('\n').map_or(0, |i| i + 1);
    let window = scan::prefix(&lower_region[line_start..], MAX_CONTEXT);
    let mut next = None;
    let mut offset = 0;
    for (i, line) in window.split_inclusive('\n').enumerate() {
        if i > 0 && others.iter().any(|o| *o != rcpt && line.contains(o)) {
            next = Some(line_start + offset);
            break;
        }
        offset += line.len();
    }
    Some(context_from(region, line_start, next).to_owned())
}
