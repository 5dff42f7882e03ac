//! What bounces and complaints add up to, and the lines a campaign's rates are judged by.
//! Set in blast.toml's `[bounces]` table; `blast send --config`, serve's inbox and scheduled
//! runs, `blast bounces import` and `blast status --config` all read the same one.

use crate::store::suppression::SoftPolicy;

/// Complaint rate at which `blast status` warns: the line Gmail and Yahoo publish as the one
/// to stay under.
pub const COMPLAINT_WARN: f64 = 0.001;
/// Complaint rate at which `blast status` raises an alarm: Gmail and Yahoo's limit (2024
/// bulk-sender rules); above it, mail is rejected or spam-foldered.
pub const COMPLAINT_ALARM: f64 = 0.003;

/// Receivers that send feedback-loop (ARF) reports, by the recipient domains they host:
/// Yahoo/AOL (its CFL, which also covers AT&T and Verizon mailboxes it hosts), Microsoft
/// (JMRP/SNDS), Comcast, Mail.ru, Yandex, Fastmail, Zoho and Rackspace. Gmail sends none:
/// its complaint rate is only in Postmaster Tools. A user adds more with `[bounces]
/// feedback_domains`. Entries match the domain and its subdomains; `yahoo.` matches any
/// country's yahoo domain.
pub const FEEDBACK_DOMAINS: &[&str] = &[
    "yahoo.",
    "ymail.com",
    "rocketmail.com",
    "aol.com",
    "aim.com",
    "verizon.net",
    "att.net",
    "sbcglobal.net",
    "bellsouth.net",
    "outlook.",
    "hotmail.",
    "live.",
    "msn.com",
    "comcast.net",
    "mail.ru",
    "yandex.ru",
    "yandex.com",
    "fastmail.com",
    "zoho.com",
    "rackspace.com",
];

/// blast.toml's `[bounces]` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct BouncePolicy {
    /// When a mailbox's soft failures add up to a suppression.
    pub soft: SoftPolicy,
    /// Days a received bounce is kept for `blast bounces list|show` (`keep_days`, default 30).
    pub keep_days: u32,
    /// Share of hard bounces at which `blast status` warns (`hard_warn`, default 0.02).
    pub hard_warn: f64,
    /// More recipient domains whose receivers send feedback reports.
    pub feedback_domains: Vec<String>,
}

impl Default for BouncePolicy {
    fn default() -> Self {
        BouncePolicy {
            soft: SoftPolicy::default(),
            keep_days: 30,
            hard_warn: 0.02,
            feedback_domains: Vec::new(),
        }
    }
}

impl BouncePolicy {
    /// Whether mail to `domain` (lower case) can come back as a feedback report.
    pub fn sends_feedback(&self, domain: &str) -> bool {
        let matches = |pat: &str| {
            if let Some(stem) = pat.strip_suffix('.') {
                // `yahoo.`: yahoo.com, yahoo.co.uk, and their subdomains.
                domain
                    .split('.')
                    .position(|l| l == stem)
                    .is_some_and(|i| i + 1 < domain.split('.').count())
            } else {
                domain == pat || domain.ends_with(&format!(".{pat}"))
            }
        };
        FEEDBACK_DOMAINS.iter().any(|p| matches(p))
            || self.feedback_domains.iter().any(|p| matches(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_domains_match_whole_labels() {
        let p = BouncePolicy {
            feedback_domains: vec!["web.de".into()],
            ..Default::default()
        };
        for d in [
            "yahoo.com",
            "yahoo.co.uk",
            "mail.yahoo.fr",
            "aol.com",
            "hotmail.de",
            "web.de",
        ] {
            assert!(p.sends_feedback(d), "{d}");
        }
        for d in [
            "gmail.com",
            "notyahoo.com",
            "yahoo",
            "myaol.com",
            "aol.com.evil.example",
        ] {
            assert!(!p.sends_feedback(d), "{d}");
        }
    }
}
