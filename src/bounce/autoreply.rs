//! Auto-replies (out-of-office, vacation, "I have a new address"): not bounces, whatever
//! their text says about delivery. RFC 3834 marks them `Auto-Submitted: auto-replied`; many
//! responders only say so in the subject or in vendor headers.

use super::mime::Parts;

/// Subjects that responders use (lower-cased prefixes and phrases).
const SUBJECTS: &[&str] = &[
    "auto:",
    "autoreply",
    "auto-reply",
    "auto reply",
    "automatic reply",
    "autosvar",
    "automatische antwort",
    "réponse automatique",
    "risposta automatica",
    "respuesta automática",
    "out of office",
    "out of the office",
    "abwesenheit",
    "vacation",
    "away from",
    "on leave",
    "自動応答",
    "自动回复",
];

/// Whether the message is an auto-reply rather than a bounce. Only asked when no DSN fields
/// were found: MTAs mark their DSNs `Auto-Submitted: auto-replied` too.
pub fn is_autoreply(parts: &Parts) -> bool {
    let header_says = parts.auto_headers.iter().any(|h| {
        h.starts_with("auto-submitted: auto-replied")
            || h.starts_with("x-autoreply")
            || h.starts_with("x-autorespond")
            || h.starts_with("x-autoresponder")
            || h == "precedence: auto_reply"
    });
    let subject = parts.subject.as_deref().unwrap_or("").to_lowercase();
    let subject_says = SUBJECTS.iter().any(|s| subject.contains(s));
    // A daemon's failure notice is a bounce even when its headers say auto-replied.
    let daemon = parts.from.iter().any(|a| {
        let local = a.split('@').next().unwrap_or("");
        local.contains("mailer-daemon") || local.contains("postmaster")
    });
    (header_says || subject_says) && !daemon && !parts.is_report && !parts.says_undelivered()
}
