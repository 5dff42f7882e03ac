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
            if decorated && ORIGINAL_MARKERS.iter().any(|m| lower.contains(m)) {
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
    if LABELS.iter().any(|s| b.ends_with(s)) || b == "to" {
        return Kind::Strong;
    }
    Kind::Weak
}

struct Hit {
    addr: String,
    kind: Kind,
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
            if is_daemon(&addr) || exclude.contains(&addr) {
                continue;
            }
            out.push(Hit {
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
fn context_from<'a>(region: &'a str, start: usize, next: Option<usize>) -> &'a str {
    let end = next.unwrap_or(region.len()).min(region.len());
    let s = &region[start..end.max(start)];
    scan::prefix(s, MAX_CONTEXT)
}

/// The recipients a text bounce names, each with the text that follows it.
pub(crate) fn findings(region: &str, exclude: &[String]) -> Vec<Finding> {
    let hits = hits(region, exclude);
    let strong: Vec<&Hit> = hits.iter().filter(|h| h.kind == Kind::Strong).collect();
    let chosen: Vec<&Hit> = if strong.is_empty() {
        hits.iter().filter(|h| h.kind == Kind::Weak).take(1).collect()
    } else {
        strong
    };
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
        out.push(Finding {
            recipient: Some(h.addr.clone()),
            context: Some(context_from(region, h.line_start, next).to_owned()),
            ..Finding::default()
        });
    }
    out
}

/// The text around a recipient already known from DSN fields, from the line that first
/// names it, bounded. `None` when the text does not name it.
pub(crate) fn context_for(region: &str, lower_region: &str, rcpt: &str) -> Option<String> {
    let at = lower_region.find(rcpt)?;
    let line_start = lower_region[..at].rfind('\n').map_or(0, |i| i + 1);
    Some(context_from(region, line_start, None).to_owned())
}
