//! Amazon SES notifications delivered by mail (an SNS email subscription): a JSON document in
//! the body, often itself a JSON string inside the SNS envelope (`"Message" : "{\"…"`), with
//! `bouncedRecipients`, `complainedRecipients` or a delivery's `recipients`. Read with plain
//! substring scans: the document is small, and a real JSON parser would need the escaping
//! undone first anyway.

use super::{mime::Parts, scan, BounceClass};

/// One recipient of a notification.
#[derive(Debug, Clone)]
pub struct Notified {
    /// The recipient, lower-cased.
    pub recipient: Option<String>,
    /// Complaint, Hard (bounceType Permanent), Soft (Transient, Undetermined) or None
    /// (Delivery).
    pub class: BounceClass,
    /// A DSN-like action (`failed`, `delivered`).
    pub action: &'static str,
    /// The enhanced status, when given.
    pub status: Option<String>,
    /// The `diagnosticCode`, when given.
    pub diagnostic: Option<String>,
    /// The `reportingMTA`, when given.
    pub reporting_mta: Option<String>,
}

/// The string value of `"key":"…"` in `s`, starting the search at `from`.
fn string_value<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\"");
    let at = s.find(&pat)? + pat.len();
    let rest = s[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The recipients of an SES notification in the message's text, if it is one.
pub fn parse(parts: &Parts) -> Option<Vec<Notified>> {
    let head = scan::prefix(&parts.text, 64 * 1024);
    if !head.contains("notificationType") {
        return None;
    }
    // Undo line wrapping (a newline and one space) and the JSON-in-JSON escaping.
    let mut doc = String::with_capacity(head.len());
    let mut chars = head.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\n' => {
                if chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            '\\' if chars.peek() == Some(&'"') => {}
            c => doc.push(c),
        }
    }
    let kind = string_value(&doc, "notificationType")?.to_ascii_lowercase();
    let (list_key, class, action) = match kind.as_str() {
        "bounce" => {
            let permanent = string_value(&doc, "bounceType")
                .is_some_and(|t| t.eq_ignore_ascii_case("permanent"));
            let class = if permanent {
                BounceClass::Hard
            } else {
                BounceClass::Soft
            };
            ("bouncedRecipients", class, "failed")
        }
        "complaint" => ("complainedRecipients", BounceClass::Complaint, "failed"),
        "delivery" => ("recipients", BounceClass::None, "delivered"),
        _ => return None,
    };
    let reporting_mta =
        string_value(&doc, "reportingMTA").map(|m| super::dsn::strip_type(m).to_owned());
    let list_at = doc.find(&format!("\"{list_key}\""))?;
    let list = &doc[list_at..];
    let list = &list[..list.find(']').unwrap_or(list.len())];
    let mut out = Vec::new();
    for entry in list.split('{').skip(1).take(500) {
        let recipient = string_value(entry, "emailAddress")
            .and_then(scan::address_in)
            .or_else(|| scan::first_address(entry));
        out.push(Notified {
            recipient,
            class,
            action,
            status: string_value(entry, "status").map(str::to_owned),
            diagnostic: string_value(entry, "diagnosticCode").map(str::to_owned),
            reporting_mta: reporting_mta.clone(),
        });
    }
    if out.is_empty() {
        // A delivery's `recipients` is a list of strings, not objects.
        for (_, a) in scan::addresses(list).into_iter().take(500) {
            out.push(Notified {
                recipient: Some(a),
                class,
                action,
                status: None,
                diagnostic: None,
                reporting_mta: reporting_mta.clone(),
            });
        }
    }
    (!out.is_empty()).then_some(out)
}
