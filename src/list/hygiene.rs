//! Address hygiene: decides whether a list cell is a deliverable plain SMTP mailbox.
//!
//! OWNER: hygiene helper. API is fixed; implementation pending.

/// What the campaign allows beyond plain syntax.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Send to RFC 2142 role accounts (postmaster@, abuse@, …). Default: false (skipped, reason `role`).
    pub allow_role: bool,
    /// The lane supports SMTPUTF8, so non-ASCII local parts are acceptable.
    pub smtputf8: bool,
}

/// Advisory flags on an accepted address (they never change the verdict).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// The domain looks like a misspelling of a large provider; the likely intended domain.
    pub typo_of: Option<&'static str>,
    /// The domain is a known disposable-mailbox service.
    pub disposable: bool,
    /// The local part is an RFC 2142 role account (only set when the policy allows roles).
    pub role: bool,
    /// The domain is internationalised (given as U-labels or `xn--` A-labels).
    pub idn: bool,
}

/// An accepted, normalised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The address to put on the envelope and in `To:`: trimmed local part as given, `@`,
    /// the domain lower-cased and in A-label (punycode) form.
    pub address: String,
    /// Dedupe key: `address` with the local part lower-cased as well.
    pub key: String,
    /// Lower-cased A-label domain (the part after `@` in `address`).
    pub domain: String,
    /// Advisory flags for the prune report.
    pub flags: Flags,
}

/// Why a cell was pruned. `code()` is the `reason` column of the prune report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The cell is empty after trimming.
    Empty,
    /// Not an address at all, or broken syntax (detail in the message).
    Invalid(&'static str),
    /// `Name <addr>` or `mailto:` forms.
    DisplayForm,
    /// More than one address in one cell.
    MultipleAddresses,
    /// Domain without a dot / top-level domain.
    NoTld,
    /// `user@[1.2.3.4]` address literal.
    IpLiteral,
    /// `"quoted"@example.com` local part.
    QuotedLocal,
    /// Local part over 64 octets, domain over 255 octets, label over 63 or address over 254.
    TooLong,
    /// Control, format or non-ASCII space characters (CR, LF, NUL, U+200B, U+00A0 …).
    ControlChar,
    /// RFC 2142 role account and the policy does not allow roles.
    Role,
    /// Non-ASCII local part and the lane has no SMTPUTF8.
    NeedsSmtputf8,
}

impl Reason {
    /// Stable short code used in the prune report's `reason` column.
    pub fn code(&self) -> &'static str {
        todo!()
    }
}

/// Validates one raw cell. Trims leading/trailing SPACE and HTAB only.
pub fn check(raw: &str, policy: &Policy) -> Result<Mailbox, Reason> {
    let _ = (raw, policy);
    todo!()
}
