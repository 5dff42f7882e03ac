//! Bounce parsing: one received message → zero or more [`Bounce`] results, without changing
//! anything.
//!
//! - [`mime`]      the message through mail-parser, flattened into what the parsers read:
//!   the bounce's own text, delivery-status and feedback-report parts, the returned original
//! - [`dsn`]       RFC 3464 delivery-status fields (in a MIME part or pasted into a text body)
//! - [`arf`]       RFC 5965 feedback reports (complaints)
//! - [`text`]      the plain-text bounces of real MTAs (Postfix, Exim, Sendmail, qmail, Gmail,
//!   Yahoo, Exchange…): recipient lines and the reply text next to them
//! - [`autoreply`] out-of-office and other auto-replies: not bounces
//! - [`original`]  the returned original: its Message-ID and the VERP token
//! - [`ses`]       Amazon SES notifications (JSON in the body) forwarded by mail
//! - [`scan`]      address, SMTP code and enhanced-status scanning shared by the above
//!
//! What a failure *means* is decided in one place, [`crate::classify::category`], the same
//! function the lanes call on SMTP replies; this module only finds the recipient and the text.

pub mod arf;
pub mod autoreply;
pub mod dsn;
pub mod mime;
pub mod original;
pub mod policy;
pub mod scan;
pub mod ses;
pub mod text;

use serde::Serialize;

use crate::classify::{category_at, Enhanced, Stage};
pub use crate::classify::{Action, Category};

/// Longest reason text kept (a diagnostic can quote a whole SMTP transcript).
const MAX_REASON: usize = 400;
/// Most results from one message: a bound for hostile input, far above any real DSN.
const MAX_RESULTS: usize = 500;

/// Hard, soft, complaint or none: what a bounce means for the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceClass {
    /// The address itself is bad (unknown user, unknown domain): suppress it.
    Hard,
    /// Not delivered, but the address is not known to be bad (full, blocked, expired, policy).
    Soft,
    /// The recipient complained (an ARF feedback report).
    Complaint,
    /// Not a failure: an auto-reply or a delivery notice that reports success.
    None,
}

impl BounceClass {
    /// The lower-case name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            BounceClass::Hard => "hard",
            BounceClass::Soft => "soft",
            BounceClass::Complaint => "complaint",
            BounceClass::None => "none",
        }
    }
}

/// One result: what a message says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bounce {
    /// The failed (or complaining) recipient, lower-cased; `None` when the message names none.
    pub recipient: Option<String>,
    /// Hard, soft, complaint or none.
    pub class: BounceClass,
    /// What the failure is about.
    pub category: Category,
    /// What to do about it ([`Category::action`]).
    pub action: Action,
    /// The explanation: the remote server's reply text, or what the message says instead.
    pub reason: String,
    /// The enhanced status code (`5.1.1`), when one is given.
    pub status: Option<String>,
    /// The SMTP reply code (`550`), when one is given.
    pub code: Option<u16>,
    /// The DSN's `Diagnostic-Code` as written (`smtp; 550 5.1.1 …`).
    pub diagnostic: Option<String>,
    /// The MTA that wrote the report (`Reporting-MTA`).
    pub reporting_mta: Option<String>,
    /// The server that refused the message (`Remote-MTA`).
    pub remote_mta: Option<String>,
    /// The returned original's Message-ID (without `<>`).
    pub original_message_id: Option<String>,
    /// The ARF `Feedback-Type` (`abuse`, `opt-out`, …) of a complaint.
    pub feedback_type: Option<String>,
    /// A recipient-token candidate (from `bounces+TOKEN@`, or a token-shaped Message-ID);
    /// not verified here.
    pub verp_token: Option<String>,
}

/// What the parsers found before classification: shared by DSN, ARF and text results.
#[derive(Debug, Default, Clone)]
pub(crate) struct Finding {
    pub recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    /// Text near the recipient in the human-readable part, for when the DSN says little.
    pub context: Option<String>,
    pub remote_mta: Option<String>,
}

/// Parses one message (raw RFC 5322 bytes, CRLF or LF) into its results. Never panics; a
/// message that is not a bounce, a complaint or an auto-reply gives an empty list.
pub fn parse(raw: &[u8]) -> Vec<Bounce> {
    let Some(parts) = mime::flatten(raw) else {
        return Vec::new();
    };
    let orig = original::Original::find(&parts);

    if let Some(found) = ses::parse(&parts) {
        return found
            .into_iter()
            .take(MAX_RESULTS)
            .map(|n| {
                if n.class == BounceClass::Complaint {
                    let mut b = complaint(n.recipient, "abuse", None, &orig);
                    b.reason = "Amazon SES complaint notification".into();
                    b
                } else {
                    let f = Finding {
                        recipient: n.recipient,
                        action: Some(n.action.into()),
                        status: n.status,
                        diagnostic: n.diagnostic,
                        ..Finding::default()
                    };
                    let mut b = classify_finding(f, "", &n.reporting_mta, &orig);
                    if n.class == BounceClass::Soft && b.class == BounceClass::Hard {
                        // SES said Transient: not known to be an address failure.
                        b.class = BounceClass::Soft;
                    }
                    b
                }
            })
            .collect();
    }
    if let Some(report) = arf::parse(&parts) {
        return report
            .into_iter()
            .take(MAX_RESULTS)
            .map(|(recipient, r)| {
                complaint(recipient, &r.feedback_type, r.reporting_mta.clone(), &orig)
            })
            .collect();
    }

    let report = dsn::parse(&parts);
    let (region, _) = text::split_original(&parts.text);
    let exclude = parts.own_addresses();
    let mut findings = report.recipients;
    let dsn_named_nobody = findings.iter().all(|f| f.recipient.is_none());
    if dsn_named_nobody && !autoreply::is_autoreply(&parts) {
        if !parts.looks_like_bounce() {
            // Ordinary mail (a reply, a forward): nothing to report.
            return Vec::new();
        }
        // No DSN fields (or ones without an address): a plain-text bounce.
        let from_text = text::findings(region, &exclude);
        if !from_text.is_empty() {
            // Keep what the DSN said (status, diagnostic) when it had one block.
            let template = (findings.len() == 1).then(|| findings[0].clone());
            findings = from_text
                .into_iter()
                .map(|t| match &template {
                    Some(d) => Finding {
                        recipient: t.recipient,
                        context: t.context,
                        ..d.clone()
                    },
                    None => t,
                })
                .collect();
        }
        if findings.is_empty() {
            if let Some(r) = parts.x_failed_recipients.first() {
                findings.push(Finding {
                    recipient: Some(r.clone()),
                    ..Finding::default()
                });
            }
        }
        if findings.iter().all(|f| f.recipient.is_none()) && parts.looks_like_bounce() {
            // A bounce whose recipient we cannot find still says something about the
            // original's recipient, when the original is attached.
            findings.truncate(1);
            match findings.first_mut() {
                Some(f) => f.recipient = orig.to.clone(),
                None => findings.push(Finding {
                    recipient: orig.to.clone(),
                    ..Finding::default()
                }),
            }
        }
    } else if findings.is_empty() {
        return vec![autoreply_result(&parts, &orig)];
    } else {
        // The human-readable part often says more than a terse Diagnostic-Code.
        let lower = region.to_ascii_lowercase();
        let names: Vec<String> = findings
            .iter()
            .take(20)
            .filter_map(|f| f.recipient.clone())
            .collect();
        let others: Vec<&str> = names.iter().map(String::as_str).collect();
        for f in findings.iter_mut().take(100) {
            if let Some(r) = &f.recipient {
                f.context = text::context_for(region, &lower, r, &others);
            }
        }
    }
    findings.truncate(MAX_RESULTS);
    let mut out: Vec<Bounce> = findings
        .into_iter()
        .map(|f| classify_finding(f, region, &report.reporting_mta, &orig))
        .collect();
    dedupe(&mut out);
    out
}

fn complaint(
    recipient: Option<String>,
    feedback_type: &str,
    reporting_mta: Option<String>,
    orig: &original::Original,
) -> Bounce {
    let category = if feedback_type.eq_ignore_ascii_case("opt-out") {
        Category::Unsubscribe
    } else {
        Category::Complaint
    };
    Bounce {
        recipient,
        class: BounceClass::Complaint,
        category,
        action: category.action(),
        reason: format!("feedback report: {feedback_type}"),
        status: None,
        code: None,
        diagnostic: None,
        reporting_mta,
        remote_mta: None,
        original_message_id: orig.message_id.clone(),
        feedback_type: Some(feedback_type.to_owned()),
        verp_token: orig.verp_token.clone(),
    }
}

fn autoreply_result(parts: &mime::Parts, orig: &original::Original) -> Bounce {
    Bounce {
        recipient: parts.from.first().cloned(),
        class: BounceClass::None,
        category: Category::AutoReply,
        action: Category::AutoReply.action(),
        reason: parts
            .subject
            .as_deref()
            .map_or_else(|| "auto-reply".to_owned(), |s| format!("auto-reply: {s}")),
        status: None,
        code: None,
        diagnostic: None,
        reporting_mta: None,
        remote_mta: None,
        original_message_id: orig.message_id.clone(),
        feedback_type: None,
        verp_token: orig.verp_token.clone(),
    }
}

/// Turns a finding into a result: code, status and category from the diagnostic (or the text
/// around the recipient when the diagnostic says too little), class from the category.
fn classify_finding(
    f: Finding,
    region: &str,
    reporting_mta: &Option<String>,
    orig: &original::Original,
) -> Bounce {
    let diag_text = f.diagnostic.as_deref().map(dsn::strip_type).unwrap_or("");
    let status_field = f.status.as_deref().and_then(scan::find_enhanced);
    let context = f.context.as_deref().unwrap_or("");
    // What the category is judged on: the diagnostic first, then the text near the recipient,
    // then the whole human-readable part (bounded) when neither says anything.
    let mut text = String::with_capacity(diag_text.len() + context.len() + 1);
    text.push_str(diag_text);
    if !context.is_empty() {
        text.push('\n');
        text.push_str(context);
    }
    if text.trim().is_empty() {
        text.push_str(scan::prefix(region, 4096));
    }
    let code = scan::find_code(diag_text).or_else(|| scan::find_code(&text));
    let diag_enhanced = scan::find_enhanced(diag_text);
    // A generic Status (5.0.0) says less than the code in the diagnostic (#5.1.0).
    let enhanced = match (status_field, diag_enhanced) {
        (Some(Enhanced(_, 0, 0)), Some(d)) if d.1 != 0 => Some(d),
        (Some(s), _) => Some(s),
        (None, d) => d.or_else(|| scan::find_enhanced(&text)),
    };
    let action = f.action.as_deref().map(str::to_ascii_lowercase);
    let delivered = matches!(
        action.as_deref(),
        Some("delivered" | "relayed" | "expanded")
    ) || matches!(enhanced, Some(Enhanced(2, _, _)));
    let stage = stage_of(&text);
    let category = if delivered {
        Category::Uncategorized
    } else {
        // The diagnostic alone first: the text around it can quote other recipients' replies.
        let mut c = category_at(stage, code, enhanced, diag_text);
        if is_weak(c) && !diag_text.trim().is_empty() && text.len() > diag_text.len() {
            let wider = category_at(stage, code, enhanced, &text);
            if !is_weak(wider) {
                c = wider;
            }
        } else if diag_text.trim().is_empty() {
            c = category_at(stage, code, enhanced, &text);
        }
        if is_weak(c) && !region.is_empty() {
            // Some MTAs give the reason before the recipient list ("Could not be delivered
            // because of 550 5.1.1 User unknown. The following recipients were affected: …").
            let whole = category_at(stage, code, enhanced, scan::prefix(region, 4096));
            if !is_weak(whole) {
                c = whole;
            }
        }
        if c == Category::Uncategorized {
            // A failure report with no recognisable reason: the class of its code decides.
            match enhanced.map(|e| e.0).or(code.map(|c| (c / 100) as u8)) {
                Some(4) => Category::TransientFailure,
                _ => Category::Uncategorized,
            }
        } else {
            c
        }
    };
    // A 4xx says the failure may pass — except in a final "failed" report of X.1.1: the MTA
    // retried an unknown user until it gave up.
    let temporary = enhanced.map(|e| e.0).or(code.map(|c| (c / 100) as u8)) == Some(4)
        && !(action.as_deref() == Some("failed") && matches!(enhanced, Some(Enhanced(_, 1, 1))));
    let class = if delivered {
        BounceClass::None
    } else if category.is_address_failure() && action.as_deref() != Some("delayed") && !temporary {
        BounceClass::Hard
    } else {
        BounceClass::Soft
    };
    let reason_src = if !diag_text.trim().is_empty() {
        diag_text
    } else if !context.trim().is_empty() {
        context
    } else if delivered {
        "delivered"
    } else {
        scan::prefix(region.trim(), MAX_REASON)
    };
    Bounce {
        recipient: f.recipient,
        class,
        category,
        action: category.action(),
        reason: scan::one_line(reason_src, MAX_REASON),
        status: enhanced.map(|e| e.to_string()),
        code,
        diagnostic: f.diagnostic.map(|d| scan::one_line(&d, MAX_REASON)),
        reporting_mta: reporting_mta.clone(),
        remote_mta: f.remote_mta,
        original_message_id: orig.message_id.clone(),
        feedback_type: None,
        verp_token: orig.verp_token.clone(),
    }
}

/// One result per recipient: a DSN can list a recipient twice (original and final forms).
fn dedupe(out: &mut Vec<Bounce>) {
    let mut seen = std::collections::HashSet::new();
    out.retain(|b| match &b.recipient {
        Some(r) => seen.insert(r.clone()),
        None => true,
    });
}

/// Categories that say little: worth a second look with the text around the recipient.
fn is_weak(c: Category) -> bool {
    matches!(
        c,
        Category::Uncategorized | Category::TransientFailure | Category::ProtocolErrors
    )
}

/// The SMTP stage a bounce's text says the failure came at: after the message data, or not
/// known.
fn stage_of(text: &str) -> Stage {
    let lower = scan::prefix(text, 4096).to_ascii_lowercase();
    // Sendmail's transcript (`>>> DATA` then `<<< 550 …`) and m-FILTER's
    // (`SMTP command` then `DATA`).
    let mut prev = "";
    for line in lower.lines().map(str::trim) {
        if prev == ">>> data" && (line.starts_with("<<< 5") || line.starts_with("<<< 4")) {
            return Stage::DataEnd;
        }
        if line == "data" && prev.contains("smtp command") {
            return Stage::DataEnd;
        }
        if prev.starts_with(">>> mail from") && line.starts_with("<<< 5") {
            return Stage::Mail;
        }
        prev = line;
    }
    const DATA: &[&str] = &[
        "end of data",
        "after data",
        "smtp command data",
        "in reply to data",
        "command data",
        "after end of data",
    ];
    const MAIL: &[&str] = &["after mail from", "in reply to mail from"];
    if DATA.iter().any(|d| lower.contains(d)) {
        Stage::DataEnd
    } else if MAIL.iter().any(|d| lower.contains(d)) {
        Stage::Mail
    } else {
        Stage::Bounce
    }
}
