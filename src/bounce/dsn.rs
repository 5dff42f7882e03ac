//! RFC 3464 delivery-status fields: a per-message block (`Reporting-MTA`) and one block per
//! recipient (`Final-Recipient`, `Action`, `Status`, `Diagnostic-Code`, `Remote-MTA`). Read
//! from a message/delivery-status part, or — for MTAs that paste the fields into a text body —
//! from the bounce's own text.

use super::{mime::Parts, scan, Finding};

/// Fields a DSN can carry; an indented line starting with one of them is a new field, not a
/// continuation (some MTAs indent the pasted block).
const DSN_FIELDS: &[&str] = &[
    "final-recipient",
    "original-recipient",
    "x-actual-recipient",
    "action",
    "status",
    "diagnostic-code",
    "remote-mta",
    "reporting-mta",
    "last-attempt-date",
    "will-retry-until",
    "x-postfix-queue-id",
    "x-postfix-sender",
    "arrival-date",
    "received-from-mta",
];

/// A parsed DSN.
#[derive(Debug, Default)]
pub struct Report {
    /// `Reporting-MTA`, without its type (`dns;`).
    pub reporting_mta: Option<String>,
    /// One finding per recipient block.
    pub(crate) recipients: Vec<Finding>,
}

fn field_name(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    if name.is_empty()
        || name.len() > 40
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    Some((name, value))
}

/// Header-style fields of `text` grouped into blocks (separated by empty lines), names
/// lower-cased, folded lines joined.
pub fn blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !out.last().is_some_and(Vec::is_empty) {
                out.push(Vec::new());
            }
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        let trimmed = line.trim_start();
        let parsed = field_name(trimmed)
            .filter(|(n, _)| !indented || DSN_FIELDS.iter().any(|f| n.eq_ignore_ascii_case(f)));
        let block = out.last_mut().expect("never empty");
        match parsed {
            Some((name, value)) => {
                block.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
            None if indented => {
                if let Some((_, v)) = block.last_mut() {
                    if v.len() < 4096 {
                        v.push(' ');
                        v.push_str(trimmed.trim_end());
                    }
                }
            }
            None => {}
        }
    }
    out.retain(|b| !b.is_empty());
    out
}

/// Every field of `text`, in order (blocks flattened).
pub fn fields(text: &str) -> Vec<(String, String)> {
    blocks(text).into_iter().flatten().collect()
}

/// A field value without its type prefix (`rfc822; a@b` → `a@b`, `smtp; 550 …` → `550 …`).
pub fn strip_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((t, rest))
            if !t.is_empty()
                && t.len() <= 16
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            rest.trim()
        }
        _ => value.trim(),
    }
}

/// Reads the DSN fields of the message: its delivery-status parts, or the fields pasted into
/// its text when it has none.
pub fn parse(parts: &Parts) -> Report {
    let mut report = parse_text(&parts.status);
    if report.recipients.is_empty() {
        let (region, _) = super::text::split_original(&parts.text);
        let inline = parse_text(region);
        if !inline.recipients.is_empty() {
            report = inline;
        }
    }
    report
}

/// Reads DSN fields from one text.
pub fn parse_text(text: &str) -> Report {
    let mut report = Report::default();
    for block in blocks(text) {
        let mut cur = Rec::default();
        for (name, value) in block {
            match name.as_str() {
                "reporting-mta" if report.reporting_mta.is_none() => {
                    report.reporting_mta = Some(strip_type(&value).to_owned());
                }
                "final-recipient" => {
                    if cur.final_rcpt.is_some() {
                        cur.flush(&mut report.recipients);
                    }
                    cur.final_rcpt = Some(value);
                }
                "original-recipient" => {
                    if cur.final_rcpt.is_some() && (cur.action.is_some() || cur.status.is_some()) {
                        cur.flush(&mut report.recipients);
                    }
                    cur.original = Some(value);
                }
                "x-actual-recipient" => cur.actual = Some(value),
                "action" => cur.action = Some(value),
                "status" => cur.status = Some(value),
                "diagnostic-code" => cur.diagnostic = Some(value),
                "remote-mta" => cur.remote = Some(strip_type(&value).to_owned()),
                _ => {}
            }
        }
        cur.flush(&mut report.recipients);
    }
    report
}

#[derive(Default)]
struct Rec {
    final_rcpt: Option<String>,
    original: Option<String>,
    actual: Option<String>,
    action: Option<String>,
    status: Option<String>,
    diagnostic: Option<String>,
    remote: Option<String>,
}

impl Rec {
    fn flush(&mut self, out: &mut Vec<Finding>) {
        let r = std::mem::take(self);
        if r.final_rcpt.is_none() && r.original.is_none() && r.actual.is_none() {
            return;
        }
        let addr = |v: &Option<String>| v.as_deref().map(strip_type).and_then(scan::address_in);
        let recipient = addr(&r.final_rcpt)
            .or_else(|| addr(&r.original))
            .or_else(|| addr(&r.actual));
        out.push(Finding {
            recipient,
            action: r.action,
            status: r.status,
            diagnostic: r.diagnostic.filter(|d| !strip_type(d).is_empty()),
            context: None,
            remote_mta: r.remote,
        });
    }
}
