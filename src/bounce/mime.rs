//! The message through mail-parser (the version mail-auth uses), flattened into what the
//! bounce parsers read. Every piece is bounded: a bounce's own text is short, and what makes
//! a message large is the returned original, which only its headers are kept of.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::scan;

/// Bound on the bounce's own human-readable text (all its text parts together).
const MAX_TEXT: usize = 128 * 1024;
/// Bound on delivery-status and feedback-report parts together.
const MAX_REPORT: usize = 256 * 1024;
/// Bound on the returned original's header block.
const MAX_ORIGINAL: usize = 64 * 1024;

/// One message, flattened.
#[derive(Debug, Default)]
pub struct Parts {
    /// Addresses in the bounce's From.
    pub from: Vec<String>,
    /// Addresses in the bounce's To (normally the original's sender or its VERP address).
    pub to: Vec<String>,
    /// Envelope addresses the bounce was delivered to (Delivered-To, X-Original-To,
    /// Return-Path): where a VERP token shows.
    pub envelope: Vec<String>,
    /// Exim's `X-Failed-Recipients`.
    pub x_failed_recipients: Vec<String>,
    /// The decoded Subject.
    pub subject: Option<String>,
    /// Auto-reply markers in the headers (`Auto-Submitted: auto-replied`, `X-Autoreply`,
    /// `Precedence: auto_reply`, …), lower-cased `name: value`.
    pub auto_headers: Vec<String>,
    /// `Content-Type: multipart/report` at the top.
    pub is_report: bool,
    /// The bounce's own text parts (text/plain, text/html as text), in order.
    pub text: String,
    /// message/delivery-status parts.
    pub status: String,
    /// message/feedback-report parts.
    pub feedback: String,
    /// The returned original's header block (message/rfc822, text/rfc822-headers), when
    /// attached as a MIME part.
    pub original: String,
}

impl Parts {
    /// Addresses that belong to the bounce itself (its sender, the original's sender): never
    /// the failed recipient.
    pub fn own_addresses(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .from
            .iter()
            .chain(&self.to)
            .chain(&self.envelope)
            .cloned()
            .collect();
        for (name, value) in super::dsn::fields(&self.original) {
            if matches!(
                name.as_str(),
                "from" | "return-path" | "sender" | "reply-to"
            ) {
                v.extend(scan::addresses(&value).into_iter().map(|(_, a)| a));
            }
        }
        v
    }

    /// Whether the message presents itself as a delivery failure (daemon sender, report type,
    /// bounce-like subject), for a last-resort result when no recipient line was found.
    pub fn looks_like_bounce(&self) -> bool {
        let daemon = self.from.iter().any(|a| {
            let local = a.split('@').next().unwrap_or("");
            local.contains("mailer-daemon")
                || local.contains("postmaster")
                || local.contains("mail-daemon")
                || local.contains("post_master")
                || local == "mailer"
        });
        let subject = self.subject.as_deref().unwrap_or("").to_ascii_lowercase();
        let subject_says = [
            "undeliver",
            "delivery status",
            "delivery failure",
            "failure notice",
            "returned mail",
            "mail delivery",
            "delivery notification",
            "not delivered",
            "could not be delivered",
            "non remis",
            "nondeliver",
            "rejected",
            "bounce",
            // Mailing-list managers (fml) refusing a post or stopping a loop.
            "not member",
            "loop alert",
        ]
        .iter()
        .any(|s| subject.contains(s));
        self.is_report || daemon || subject_says || self.says_undelivered()
    }

    /// Whether the subject or the start of the text says a message was not delivered.
    pub fn says_undelivered(&self) -> bool {
        let subject = self.subject.as_deref().unwrap_or("").to_ascii_lowercase();
        if ["error", "undeliver", "failure", "failed", "returned"]
            .iter()
            .any(|s| subject.contains(s))
        {
            return true;
        }
        let text = scan::prefix(&self.text, 8192).to_ascii_lowercase();
        [
            "could not be delivered",
            "delivery has failed",
            "delivery failed",
            "permanent error",
            "undeliverable",
            "undelivered",
            "was not delivered",
            "failed permanently",
            "unable to deliver",
            "couldn't be delivered",
            "delivery to the following",
            "returned to sender",
            "permanent fatal errors",
            "not be delivered",
            "did not reach",
            "rejected your message",
            "mail delivery failed",
        ]
        .iter()
        .any(|s| text.contains(s))
    }
}

/// Appends `s` to `buf`, keeping `buf` within `max` bytes.
fn push_bounded(buf: &mut String, s: &str, max: usize) {
    if buf.len() >= max {
        return;
    }
    // Japanese MTAs send ISO-2022-JP without declaring it (no MIME, or no charset): its
    // escape sequences are plain ASCII, so mail-parser passes it through undecoded.
    if s.contains("\x1b$B") {
        if let Some(decode) = mail_parser::decoders::charsets::map::charset_decoder(b"iso-2022-jp")
        {
            let decoded = decode(scan::prefix(s, max - buf.len()).as_bytes());
            if !buf.is_empty() {
                buf.push('\n');
            }
            buf.push_str(scan::prefix(&decoded, max - buf.len().min(max)));
            return;
        }
    }
    if !buf.is_empty() {
        buf.push('\n');
    }
    buf.push_str(scan::prefix(s, max - buf.len().min(max)));
}

/// The header block of a raw message (up to the first empty line).
fn header_block(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(MAX_ORIGINAL)];
    let end = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| raw.windows(4).position(|w| w == b"\r\n\r\n"))
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// A message read without MIME: its header block for the addresses and subject, the rest as
/// text (bounded). The fallback when mail-parser cannot read it.
fn plain(raw: &[u8]) -> Parts {
    let headers = header_block(raw);
    let body = &raw[headers.len().min(raw.len())..];
    let body = &body[..body.len().min(MAX_TEXT)];
    let mut p = Parts::default();
    for (name, value) in super::dsn::fields(&headers) {
        let addrs = || scan::addresses(&value).into_iter().map(|(_, a)| a);
        match name.as_str() {
            "from" => p.from.extend(addrs()),
            "to" => p.to.extend(addrs()),
            "subject" => p.subject = Some(scan::one_line(&value, 400)),
            "x-failed-recipients" => p.x_failed_recipients.extend(addrs()),
            _ => {}
        }
    }
    p.text = String::from_utf8_lossy(body).into_owned();
    p
}

/// Parses and flattens `raw`. `None` when mail-parser finds no message at all.
pub fn flatten(raw: &[u8]) -> Option<Parts> {
    // An mbox `From ` line in front would hide the headers from mail-parser.
    let raw = if raw.starts_with(b"From ") {
        raw.iter()
            .position(|&b| b == b'\n')
            .map_or(&raw[raw.len()..], |i| &raw[i + 1..])
    } else {
        raw
    };
    // mail-parser 0.11.9 can panic on malformed nesting ("Invalid part ID, could not find
    // multipart", found by the mutation test): a hostile bounce must not take down the
    // inbox, so such a message is read as plain headers and text instead.
    let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(raw));
    let msg = match parsed {
        Ok(msg) => msg?,
        Err(_) => return Some(plain(raw)),
    };
    let mut p = Parts {
        subject: msg.subject().map(str::to_owned),
        ..Parts::default()
    };
    for h in msg.headers() {
        let name = h.name().to_ascii_lowercase();
        let start = h.offset_start() as usize;
        let end = (h.offset_end() as usize).min(raw.len());
        let value = raw
            .get(start..end)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let addrs = || scan::addresses(&value).into_iter().map(|(_, a)| a);
        match name.as_str() {
            "from" => p.from.extend(addrs()),
            "to" => p.to.extend(addrs()),
            "delivered-to" | "x-original-to" | "return-path" | "envelope-to" => {
                p.envelope.extend(addrs())
            }
            "x-failed-recipients" => p.x_failed_recipients.extend(addrs()),
            "auto-submitted"
            | "x-autoreply"
            | "x-autorespond"
            | "precedence"
            | "x-auto-response-suppress"
            | "x-autoresponder"
            | "x-autogenerated" => {
                let v = value.trim().to_ascii_lowercase();
                p.auto_headers
                    .push(format!("{name}: {}", scan::prefix(&v, 200)));
            }
            _ => {}
        }
    }
    if let Some(ct) = msg.content_type() {
        p.is_report = ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"));
    }
    for part in &msg.parts {
        let (ctype, subtype) = part
            .content_type()
            .map_or((String::new(), String::new()), |ct| {
                (
                    ct.ctype().to_ascii_lowercase(),
                    ct.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            });
        let is_status = subtype.ends_with("delivery-status");
        let is_feedback = subtype == "feedback-report";
        let is_headers = subtype.ends_with("rfc822-headers") || subtype == "global-headers";
        match &part.body {
            PartType::Text(t) => {
                if is_status {
                    push_bounded(&mut p.status, t, MAX_REPORT);
                } else if is_feedback {
                    push_bounded(&mut p.feedback, t, MAX_REPORT);
                } else if is_headers {
                    if p.original.is_empty() {
                        p.original = scan::prefix(t, MAX_ORIGINAL).to_owned();
                    }
                } else {
                    push_bounded(&mut p.text, t, MAX_TEXT);
                }
            }
            PartType::Html(h) => {
                let h = scan::prefix(h, MAX_TEXT);
                push_bounded(
                    &mut p.text,
                    &mail_parser::decoders::html::html_to_text(h),
                    MAX_TEXT,
                );
            }
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                let b = &b[..b.len().min(MAX_REPORT)];
                if is_status {
                    push_bounded(&mut p.status, &String::from_utf8_lossy(b), MAX_REPORT);
                } else if is_feedback {
                    push_bounded(&mut p.feedback, &String::from_utf8_lossy(b), MAX_REPORT);
                } else if is_headers {
                    if p.original.is_empty() {
                        p.original = header_block(b);
                    }
                } else if ctype == "message" && subtype == "rfc822" {
                    // mail-parser leaves a message it could not parse as bytes.
                    if p.original.is_empty() {
                        p.original = header_block(b);
                    }
                } else if ctype == "text" {
                    push_bounded(&mut p.text, &String::from_utf8_lossy(b), MAX_TEXT);
                }
            }
            PartType::Message(m) => {
                if p.original.is_empty() {
                    p.original = header_block(m.raw_message());
                }
            }
            PartType::Multipart(_) => {}
        }
    }
    Some(p)
}
