//! RFC 5965 feedback reports (ARF): a recipient's complaint, relayed by its provider. The
//! complaining recipient is `Original-Rcpt-To` (or `Removal-Recipient`), else the returned
//! original's `To`; providers that redact it leave the recipient unknown (the VERP token or
//! the Message-ID still identify it).

use super::{dsn, mime::Parts, original, scan};

/// One feedback report's per-message fields.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `Feedback-Type` (`abuse`, `opt-out`, `auth-failure`, …), lower-cased.
    pub feedback_type: String,
    /// `Reporting-MTA`, without its type.
    pub reporting_mta: Option<String>,
}

/// Whether the message is a feedback report, and if so its recipients (one result each;
/// `None` when the report names nobody) with the report's fields.
pub fn parse(parts: &Parts) -> Option<Vec<(Option<String>, Report)>> {
    // Hotmail/Outlook.com's JMRP reports are no ARF: the original comes back with the
    // complaining recipient in a header of its own.
    if parts.feedback.is_empty() {
        if let Some(r) = original::header_address(&parts.original, "x-hmxmroriginalrecipient") {
            let report = Report {
                feedback_type: "abuse".into(),
                reporting_mta: None,
            };
            return Some(vec![(Some(r), report)]);
        }
    }
    let source = if !parts.feedback.is_empty() {
        &parts.feedback
    } else if parts.is_report || has_feedback_line(&parts.text) {
        // Some reporters put the fields in a text/plain part.
        &parts.text
    } else {
        return None;
    };
    let mut report = Report::default();
    let mut rcpts: Vec<String> = Vec::new();
    for (name, value) in dsn::fields(source) {
        match name.as_str() {
            "feedback-type" if report.feedback_type.is_empty() => {
                report.feedback_type = scan::one_line(&value, 40).to_ascii_lowercase();
            }
            "reporting-mta" if report.reporting_mta.is_none() => {
                report.reporting_mta = Some(dsn::strip_type(&value).to_owned());
            }
            "original-rcpt-to" | "removal-recipient" => {
                if let Some(a) = scan::address_in(&value) {
                    if !rcpts.contains(&a) {
                        rcpts.push(a);
                    }
                }
            }
            _ => {}
        }
    }
    if report.feedback_type.is_empty() {
        return None;
    }
    if rcpts.is_empty() {
        if let Some(to) = original::header_address(&parts.original, "to") {
            rcpts.push(to);
        }
    }
    if rcpts.is_empty() {
        return Some(vec![(None, report)]);
    }
    Some(
        rcpts
            .into_iter()
            .map(|r| (Some(r), report.clone()))
            .collect(),
    )
}

fn has_feedback_line(text: &str) -> bool {
    text.lines()
        .take(400)
        .any(|l| l.len() > 14 && l.as_bytes()[..14].eq_ignore_ascii_case(b"feedback-type:"))
}
