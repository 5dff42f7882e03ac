//! Address hygiene: decides whether a list cell is a deliverable plain SMTP mailbox.
//!
//! The verdict is about syntax only (no DNS): a cell is accepted when it is exactly one bare
//! RFC 5321 mailbox — dot-atom local part, LDH domain with a TLD — after trimming SPACE/HTAB.
//! Everything a careful postmaster would not put on an envelope as-is (display forms, quoted
//! local parts, address literals, comments, control or invisible characters) is rejected with
//! a stable [`Reason`] code for the prune report.
//!
//! How the work is split, and why:
//! 1. one byte scan classifies the cell (control characters, `<>`, quotes, comments, `@` count),
//!    so the common reject shapes get a precise reason and the common accept shape costs one pass;
//! 2. the domain is lower-cased, or converted to its A-label with `idna` (UTS #46) when it is
//!    internationalised, then checked as LDH labels (the `email_address` crate accepts any
//!    atext in a domain, e.g. `iana/icann.org`, which no DNS name can hold);
//! 3. the `email_address` parser, with display text and domain literals disallowed and a TLD
//!    required, validates the rebuilt `local@a-label` address — the authoritative check.

use email_address::{EmailAddress, Options};
use std::fmt;

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
        match self {
            Reason::Empty => "empty",
            Reason::Invalid(_) => "invalid",
            Reason::DisplayForm => "display_form",
            Reason::MultipleAddresses => "multiple_addresses",
            Reason::NoTld => "no_tld",
            Reason::IpLiteral => "ip_literal",
            Reason::QuotedLocal => "quoted_local",
            Reason::TooLong => "too_long",
            Reason::ControlChar => "control_char",
            Reason::Role => "role",
            Reason::NeedsSmtputf8 => "needs_smtputf8",
        }
    }
}

/// Human-readable detail, for the prune report's `detail` column and for logs.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => f.write_str("empty cell"),
            Reason::Invalid(detail) => write!(f, "not a valid address: {detail}"),
            Reason::DisplayForm => {
                f.write_str("display-name, angle-bracket or mailto: form, not a bare address")
            }
            Reason::MultipleAddresses => f.write_str("more than one address in one cell"),
            Reason::NoTld => {
                f.write_str("domain has no top-level domain (single label or numeric TLD)")
            }
            Reason::IpLiteral => f.write_str("IP address instead of a domain name"),
            Reason::QuotedLocal => f.write_str("quoted local part"),
            Reason::TooLong => f.write_str(
                "too long (local part > 64, label > 63, domain > 253 or address > 254 octets)",
            ),
            Reason::ControlChar => {
                f.write_str("control, invisible (format) or non-ASCII space character")
            }
            Reason::Role => f.write_str("role account (RFC 2142), not a person"),
            Reason::NeedsSmtputf8 => {
                f.write_str("non-ASCII local part needs SMTPUTF8, which the lane does not offer")
            }
        }
    }
}

impl std::error::Error for Reason {}

/// RFC 5321 §4.5.3.1.1: 64 octets of local part.
const MAX_LOCAL: usize = 64;
/// RFC 1035: 255 octets on the wire, which is 253 in text form without the root dot.
const MAX_DOMAIN: usize = 253;
/// RFC 1035 §2.3.4.
const MAX_LABEL: usize = 63;
/// RFC 5321 path limit (256) minus the angle brackets.
const MAX_ADDRESS: usize = 254;

/// Role mailboxes: every name of RFC 2142 (business, network operations, services), the ones
/// RFC 5321 and common practice add, and no-reply variants (nobody reads them). Compared
/// against the ASCII-lower-cased local part. `info`, `sales`, `support` and `marketing` are
/// RFC 2142 names too; B2B lists that want them set `Policy::allow_role`.
pub const ROLE_LOCAL_PARTS: &[&str] = &[
    // RFC 2142 §3 business-related
    "info",
    "marketing",
    "sales",
    "support",
    // RFC 2142 §4 network operations
    "abuse",
    "noc",
    "security",
    // RFC 2142 §5 support services
    "postmaster",
    "hostmaster",
    "usenet",
    "news",
    "webmaster",
    "www",
    "uucp",
    "ftp",
    // common additions
    "mailer-daemon",
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
];

/// Likely misspellings of the largest mailbox providers → the intended domain. Exact matches
/// only: a fuzzy matcher would flag real small domains, and flags only warn anyway.
pub const TYPO_DOMAINS: &[(&str, &str)] = &[
    ("gmial.com", "gmail.com"),
    ("gmai.com", "gmail.com"),
    ("gmal.com", "gmail.com"),
    ("gamil.com", "gmail.com"),
    ("gnail.com", "gmail.com"),
    ("gmaill.com", "gmail.com"),
    ("gmail.co", "gmail.com"),
    ("gmail.con", "gmail.com"),
    ("gmail.cm", "gmail.com"),
    ("gmail.om", "gmail.com"),
    ("gmail.cmo", "gmail.com"),
    ("gmail.comm", "gmail.com"),
    ("googlemail.con", "googlemail.com"),
    ("hotmial.com", "hotmail.com"),
    ("hotmal.com", "hotmail.com"),
    ("hotmai.com", "hotmail.com"),
    ("hotamil.com", "hotmail.com"),
    ("hotmaill.com", "hotmail.com"),
    ("hotmail.con", "hotmail.com"),
    ("hotmail.cm", "hotmail.com"),
    ("yaho.com", "yahoo.com"),
    ("yahooo.com", "yahoo.com"),
    ("yhoo.com", "yahoo.com"),
    ("yahho.com", "yahoo.com"),
    ("yahoo.con", "yahoo.com"),
    ("yahoo.cm", "yahoo.com"),
    ("outlok.com", "outlook.com"),
    ("outloook.com", "outlook.com"),
    ("outlook.con", "outlook.com"),
    ("outllok.com", "outlook.com"),
    ("iclod.com", "icloud.com"),
    ("icoud.com", "icloud.com"),
    ("icloud.con", "icloud.com"),
    ("icluod.com", "icloud.com"),
    ("aol.con", "aol.com"),
    ("aoll.com", "aol.com"),
    ("live.con", "live.com"),
    ("msn.con", "msn.com"),
    ("comcast.con", "comcast.net"),
];

/// Well-known disposable-mailbox services, as registrable two-label domains. A domain matches
/// itself or any subdomain of an entry (several services hand out `*.domain` inboxes).
pub const DISPOSABLE_DOMAINS: &[&str] = &[
    "mailinator.com",
    "guerrillamail.com",
    "guerrillamail.net",
    "guerrillamail.org",
    "guerrillamail.de",
    "guerrillamailblock.com",
    "sharklasers.com",
    "grr.la",
    "10minutemail.com",
    "10minutemail.net",
    "yopmail.com",
    "yopmail.fr",
    "yopmail.net",
    "temp-mail.org",
    "tempmail.com",
    "tempmailo.com",
    "throwawaymail.com",
    "trashmail.com",
    "trashmail.net",
    "getnada.com",
    "dispostable.com",
    "maildrop.cc",
    "mailnesia.com",
    "mintemail.com",
    "fakeinbox.com",
    "spamgourmet.com",
    "mohmal.com",
    "emailondeck.com",
    "discard.email",
    "mailcatch.com",
    "tempr.email",
    "getairmail.com",
];

/// The strict `email_address` options: bare addresses only, no `[1.2.3.4]`, TLD required.
const PARSER_OPTIONS: Options = Options {
    minimum_sub_domains: 2,
    allow_domain_literal: false,
    allow_display_text: false,
    allow_long_local_parts: false,
};

/// Validates one raw cell. Trims leading/trailing SPACE and HTAB only.
pub fn check(raw: &str, policy: &Policy) -> Result<Mailbox, Reason> {
    // Only SPACE and HTAB: a NBSP or BOM means the data went through something lossy, and the
    // corpus (and the principle of least surprise) wants those rejected, not silently fixed.
    let s = trim_space_tab(raw);
    if s.is_empty() {
        return Err(Reason::Empty);
    }
    let shape = scan(s)?;
    if !shape.ascii {
        check_unicode(s)?;
    }

    // Display forms first: they often also contain quotes, spaces and commas, and
    // "display_form" tells the list owner what to fix.
    if starts_with_ignore_case(s, "mailto:") || shape.angle {
        return Err(Reason::DisplayForm);
    }
    if shape.at == 0 {
        return Err(Reason::Invalid("no @ sign"));
    }
    if shape.at > 1 && shape.separator {
        return Err(Reason::MultipleAddresses);
    }
    if s.starts_with('"') {
        return Err(Reason::QuotedLocal);
    }
    if shape.quote {
        return Err(Reason::Invalid("stray double quote"));
    }
    if shape.paren {
        return Err(Reason::Invalid("comment or parenthesis"));
    }
    if shape.at > 1 {
        return Err(Reason::Invalid("more than one @ sign"));
    }
    let (local, domain) = s.split_once('@').expect("one @ counted");
    if domain.starts_with('[') {
        return Err(Reason::IpLiteral);
    }
    if shape.bracket {
        return Err(Reason::Invalid("stray square bracket"));
    }
    if shape.space {
        return Err(Reason::Invalid("space inside the address"));
    }
    if local.is_empty() {
        return Err(Reason::Invalid("nothing before the @"));
    }
    if domain.is_empty() {
        return Err(Reason::Invalid("nothing after the @"));
    }
    if local.len() > MAX_LOCAL {
        return Err(Reason::TooLong);
    }
    if local.starts_with('.') || local.ends_with('.') || has_double_dot(local) {
        return Err(Reason::Invalid(
            "local part has a leading, trailing or doubled dot",
        ));
    }

    // Domain → lower-case A-label. The all-ASCII, non-punycode case (nearly every row) skips
    // idna: UTS #46 mapping of ASCII is exactly lower-casing.
    let mut address = String::with_capacity(s.len() + 8);
    address.push_str(local);
    address.push('@');
    let domain_start = address.len();
    let ascii_domain = domain.is_ascii();
    let mut idn = !ascii_domain;
    if ascii_domain {
        address.push_str(domain);
        address[domain_start..].make_ascii_lowercase();
        if check_ldh_domain(&address[domain_start..])? {
            // An `xn--` label: idna decodes and validates the punycode.
            idn = true;
            let converted = to_a_label(&address[domain_start..])?;
            address.truncate(domain_start);
            address.push_str(&converted);
            check_ldh_domain(&address[domain_start..])?;
        }
    } else {
        let converted = to_a_label(domain)?;
        address.push_str(&converted);
        check_ldh_domain(&address[domain_start..])?;
    }
    if address.len() > MAX_ADDRESS {
        return Err(Reason::TooLong);
    }

    // The authoritative grammar check on exactly what will go on the envelope.
    validate_with_parser(&address, domain_start)?;

    let local_ascii = local.is_ascii();
    if !local_ascii && !policy.smtputf8 {
        return Err(Reason::NeedsSmtputf8);
    }

    let role = local_ascii && is_role(local);
    if role && !policy.allow_role {
        return Err(Reason::Role);
    }

    let key = if local_ascii {
        let mut key = address.clone();
        key[..local.len()].make_ascii_lowercase();
        key
    } else {
        let mut key = local.to_lowercase();
        key.push_str(&address[local.len()..]);
        key
    };

    let domain_lc = &address[domain_start..];
    let flags = Flags {
        typo_of: typo_of(domain_lc),
        disposable: is_disposable(domain_lc),
        role,
        idn,
    };
    let domain_owned = domain_lc.to_owned();
    Ok(Mailbox {
        address,
        key,
        domain: domain_owned,
        flags,
    })
}

/// What one byte pass over the trimmed cell saw.
#[derive(Default)]
struct Shape {
    ascii: bool,
    at: u32,
    angle: bool,
    quote: bool,
    paren: bool,
    bracket: bool,
    space: bool,
    /// `,`, `;` or a space: what separates several addresses in one cell.
    separator: bool,
}

const C_CONTROL: u8 = 1;
const C_ANGLE: u8 = 2;
const C_QUOTE: u8 = 4;
const C_PAREN: u8 = 8;
const C_BRACKET: u8 = 16;
const C_SPACE: u8 = 32;
const C_SEPARATOR: u8 = 64;
const C_NON_ASCII: u8 = 128;

/// Byte classes for [`scan`]. A table and an OR per byte instead of a `match`: the match
/// compiled to a jump table whose mispredictions were the biggest cost of the whole check.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            // TAB inside counts too: only the ends are trimmed.
            0x00..=0x1f | 0x7f => C_CONTROL,
            b'<' | b'>' => C_ANGLE,
            b'"' => C_QUOTE,
            b'(' | b')' => C_PAREN,
            b'[' | b']' => C_BRACKET,
            b' ' => C_SPACE | C_SEPARATOR,
            b',' | b';' => C_SEPARATOR,
            0x80..=0xff => C_NON_ASCII,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// One pass over the bytes; rejects ASCII control characters.
fn scan(s: &str) -> Result<Shape, Reason> {
    let mut class = 0u8;
    let mut at = 0u32;
    for &b in s.as_bytes() {
        class |= CLASS[b as usize];
        at += u32::from(b == b'@');
    }
    if class & C_CONTROL != 0 {
        return Err(Reason::ControlChar);
    }
    Ok(Shape {
        ascii: class & C_NON_ASCII == 0,
        at,
        angle: class & C_ANGLE != 0,
        quote: class & C_QUOTE != 0,
        paren: class & C_PAREN != 0,
        bracket: class & C_BRACKET != 0,
        space: class & C_SPACE != 0,
        separator: class & C_SEPARATOR != 0,
    })
}

/// Non-ASCII cells: C1 controls, non-ASCII white space (U+00A0, U+2028, U+3000 …),
/// invisible format characters (U+200B, U+FEFF, bidi controls …) and U+FFFD.
fn check_unicode(s: &str) -> Result<(), Reason> {
    for c in s.chars().filter(|c| !c.is_ascii()) {
        if c == '\u{FFFD}' {
            return Err(Reason::Invalid(
                "U+FFFD replacement character (the list was not valid UTF-8 when exported)",
            ));
        }
        if c.is_control() || c.is_whitespace() || is_invisible(c) {
            return Err(Reason::ControlChar);
        }
    }
    Ok(())
}

/// Unicode format characters (general category Cf) and other default-ignorable fillers that
/// render as nothing, so a human could never have typed them on purpose.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{180E}'
        | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{08E2}'
        | '\u{17B4}' | '\u{17B5}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
        | '\u{110BD}' | '\u{110CD}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Strips SPACE and HTAB at both ends (bytes, not chars: both are ASCII, and a byte loop is
/// cheaper than a char pattern on this per-row path).
fn trim_space_tab(raw: &str) -> &str {
    let b = raw.as_bytes();
    let start = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |i| i + 1);
    // Both ends sit next to an ASCII byte or at the ends, so they are char boundaries.
    &raw[start..end]
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// UTS #46 to ASCII with the STD3 rules (letters, digits, hyphen). Length limits are checked
/// afterwards by [`check_ldh_domain`] so that an over-long IDN gets `too_long`, like ASCII.
fn to_a_label(domain: &str) -> Result<String, Reason> {
    use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
    Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Ignore,
        )
        .map(|cow| cow.into_owned())
        .map_err(|_| Reason::Invalid("domain is not a valid internationalised domain name"))
}

const L_BAD: u8 = 0;
const L_DIGIT: u8 = 1;
const L_ALPHA: u8 = 2;
const L_DOT: u8 = 3;

/// Byte classes of a lower-cased host name: letters and hyphen, digits, dot, anything else.
const LDH: [u8; 256] = {
    let mut t = [L_BAD; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'a'..=b'z' | b'-' => L_ALPHA,
            b'0'..=b'9' => L_DIGIT,
            b'.' => L_DOT,
            _ => L_BAD,
        };
        b += 1;
    }
    t
};

/// RFC 1035/1123 host name rules on the lower-cased domain, plus the bulk-sending rules: at
/// least two labels and a TLD that is not all digits. One pass over the bytes (this runs for
/// every row); returns whether a label is an `xn--` A-label, which idna must then validate.
fn check_ldh_domain(domain: &str) -> Result<bool, Reason> {
    if domain.len() > MAX_DOMAIN {
        return Err(Reason::TooLong);
    }
    let bytes = domain.as_bytes();
    let mut labels = 0usize;
    let mut all_numeric = true;
    let mut xn = false;
    let mut start = 0usize;
    // Per label: any byte outside LDH, any non-digit. Table lookups and ORs, branching only
    // at dots (a `match` per byte compiled to a mispredicted jump table).
    let mut bad = false;
    let mut non_digit = false;
    for i in 0..=bytes.len() {
        let class = bytes.get(i).map_or(L_DOT, |&b| LDH[b as usize]);
        if class != L_DOT {
            bad |= class == L_BAD;
            non_digit |= class == L_ALPHA;
            continue;
        }
        let label = &bytes[start..i];
        if bad {
            return Err(Reason::Invalid("character not allowed in a domain name"));
        }
        if label.is_empty() {
            return Err(Reason::Invalid(
                "domain has a leading, trailing or doubled dot",
            ));
        }
        if label.len() > MAX_LABEL {
            return Err(Reason::TooLong);
        }
        if label[0] == b'-' || label[label.len() - 1] == b'-' {
            return Err(Reason::Invalid("domain label starts or ends with a hyphen"));
        }
        xn |= label.starts_with(b"xn--");
        labels += 1;
        all_numeric &= !non_digit;
        if i == bytes.len() {
            break;
        }
        start = i + 1;
        non_digit = false;
    }
    let numeric = !non_digit;
    if labels < 2 {
        return Err(Reason::NoTld);
    }
    if all_numeric && labels == 4 {
        // 255.255.255.255 without brackets: an IPv4 address typed as a domain.
        return Err(Reason::IpLiteral);
    }
    if numeric {
        return Err(Reason::NoTld);
    }
    Ok(xn)
}

fn has_double_dot(s: &str) -> bool {
    s.as_bytes().windows(2).any(|w| w == b"..")
}

/// Runs the `email_address` parser on the rebuilt address.
///
/// The common path asks its local-part validator (dot-atom grammar, 64-octet limit). The
/// domain needs no second opinion: [`check_ldh_domain`] already held it to letters, digits
/// and hyphens, which is stricter than the parser's atext labels. The parser's whole-address
/// entry point first rescans the string for a `Name <addr>` form with a libc `memcmp` per
/// character, which cost more than everything else here; that form, domain literals and
/// single-label domains are rejected before this point, so its strict options add nothing on
/// this path. A local part the validator refuses goes through `parse_with_options` with the
/// strict options to get the parser's precise error.
fn validate_with_parser(address: &str, domain_start: usize) -> Result<(), Reason> {
    if EmailAddress::is_valid_local_part(&address[..domain_start - 1]) {
        return Ok(());
    }
    match EmailAddress::parse_with_options(address, PARSER_OPTIONS) {
        Err(e) => Err(parser_reason(e)),
        // Unreachable in practice (the local part was refused); never accept on disagreement.
        Ok(_) => Err(Reason::Invalid("character not allowed in an address")),
    }
}

/// Maps the `email_address` parser's verdict to a reason.
fn parser_reason(e: email_address::Error) -> Reason {
    use email_address::Error as E;
    match e {
        E::LocalPartTooLong | E::DomainTooLong | E::SubDomainTooLong => Reason::TooLong,
        E::DomainTooFew => Reason::NoTld,
        E::UnsupportedDomainLiteral | E::InvalidIPAddress => Reason::IpLiteral,
        E::UnsupportedDisplayName | E::MissingDisplayName | E::MissingEndBracket => {
            Reason::DisplayForm
        }
        E::UnbalancedQuotes => Reason::QuotedLocal,
        E::MissingSeparator => Reason::Invalid("no @ sign"),
        E::LocalPartEmpty => Reason::Invalid("nothing before the @"),
        E::DomainEmpty => Reason::Invalid("nothing after the @"),
        E::SubDomainEmpty | E::DomainInvalidSeparator => {
            Reason::Invalid("domain has a leading, trailing or doubled dot")
        }
        E::InvalidComment => Reason::Invalid("comment or parenthesis"),
        E::InvalidCharacter => Reason::Invalid("character not allowed in an address"),
    }
}

fn is_role(local: &str) -> bool {
    // Role names are short; skip the table for the long local parts most people have.
    local.len() <= 13
        && ROLE_LOCAL_PARTS
            .iter()
            .any(|r| r.len() == local.len() && r.eq_ignore_ascii_case(local))
}

/// Little-endian word of up to 8 bytes of `b` from `start` (zero-padded); `const` so the
/// tables below are hashed at compile time.
const fn word(b: &[u8], start: usize) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < 8 && start + i < b.len() {
        w |= (b[start + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// A constant-time hash of a domain: its length and its first and last eight bytes. Only a
/// prefilter (a hit is confirmed by comparing the strings), so it may collide; what matters is
/// that a non-matching domain, i.e. nearly every row, costs a few instructions.
const fn quick_hash(b: &[u8]) -> u64 {
    let n = b.len();
    let first = word(b, 0);
    let last = if n > 8 { word(b, n - 8) } else { 0 };
    let mut h = (n as u64) ^ first.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h = (h.rotate_left(29) ^ last).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 31)
}

/// Hashes of [`TYPO_DOMAINS`]: one hash of the domain and a scan of these integers instead of
/// a string compare per entry (this runs for every accepted row).
const TYPO_HASHES: [u64; TYPO_DOMAINS.len()] = {
    let mut out = [0u64; TYPO_DOMAINS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = quick_hash(TYPO_DOMAINS[i].0.as_bytes());
        i += 1;
    }
    out
};

/// Hashes of [`DISPOSABLE_DOMAINS`], as for [`TYPO_HASHES`].
const DISPOSABLE_HASHES: [u64; DISPOSABLE_DOMAINS.len()] = {
    let mut out = [0u64; DISPOSABLE_DOMAINS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = quick_hash(DISPOSABLE_DOMAINS[i].as_bytes());
        i += 1;
    }
    out
};

fn typo_of(domain: &str) -> Option<&'static str> {
    let h = quick_hash(domain.as_bytes());
    TYPO_HASHES
        .iter()
        .position(|&t| t == h)
        .map(|i| TYPO_DOMAINS[i])
        .filter(|(typo, _)| *typo == domain)
        .map(|(_, intended)| intended)
}

fn is_disposable(domain: &str) -> bool {
    // Every entry is a registrable two-label domain, and `a.b.mailinator.com` is as
    // disposable as `mailinator.com`: look up the last two labels only, with one hash.
    let base = match domain.rfind('.').and_then(|i| domain[..i].rfind('.')) {
        Some(i) => &domain[i + 1..],
        None => domain,
    };
    let h = quick_hash(base.as_bytes());
    DISPOSABLE_HASHES
        .iter()
        .position(|&d| d == h)
        .is_some_and(|i| DISPOSABLE_DOMAINS[i] == base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Policy = Policy {
        allow_role: false,
        smtputf8: false,
    };
    const LAX: Policy = Policy {
        allow_role: true,
        smtputf8: true,
    };

    fn ok(raw: &str) -> Mailbox {
        check(raw, &DEFAULT).unwrap_or_else(|r| panic!("{raw:?} rejected: {r}"))
    }

    fn err(raw: &str) -> Reason {
        match check(raw, &DEFAULT) {
            Ok(m) => panic!("{raw:?} accepted as {m:?}"),
            Err(r) => r,
        }
    }

    #[test]
    fn normalises_domain_keeps_local_case() {
        let m = ok("  John.Doe@Example.COM\t");
        assert_eq!(m.address, "John.Doe@example.com");
        assert_eq!(m.key, "john.doe@example.com");
        assert_eq!(m.domain, "example.com");
        assert_eq!(m.flags, Flags::default());
    }

    #[test]
    fn empty_and_trim_only_space_and_tab() {
        assert_eq!(err(""), Reason::Empty);
        assert_eq!(err(" \t "), Reason::Empty);
        assert_eq!(err("a@example.com\u{a0}"), Reason::ControlChar);
        assert_eq!(err("\u{feff}a@example.com"), Reason::ControlChar);
        assert_eq!(err("a\u{200b}b@example.com"), Reason::ControlChar);
        assert_eq!(err("a\tb@example.com"), Reason::ControlChar);
        assert_eq!(
            err("a@example.com\r\nBcc: x@example.net"),
            Reason::ControlChar
        );
        assert_eq!(err("a@example.com\0.evil.example"), Reason::ControlChar);
        assert_eq!(err("\u{7f}@example.com"), Reason::ControlChar);
        assert_eq!(err("a@exa\u{85}mple.com"), Reason::ControlChar);
    }

    #[test]
    fn display_forms_and_lists() {
        assert_eq!(err("Jane Doe <jane@example.com>"), Reason::DisplayForm);
        assert_eq!(err("<jane@example.com>"), Reason::DisplayForm);
        assert_eq!(err("\"Doe, Jane\" <jane@example.com>"), Reason::DisplayForm);
        assert_eq!(err("MAILTO:jane@example.com"), Reason::DisplayForm);
        assert_eq!(
            err("a@example.com; b@example.org"),
            Reason::MultipleAddresses
        );
        assert_eq!(
            err("a@example.com,b@example.org"),
            Reason::MultipleAddresses
        );
        assert_eq!(
            err("a@@example.com"),
            Reason::Invalid("more than one @ sign")
        );
    }

    #[test]
    fn domains() {
        assert_eq!(err("joe@localhost"), Reason::NoTld);
        assert_eq!(err("test@iana.123"), Reason::NoTld);
        assert_eq!(err("test@255.255.255.255"), Reason::IpLiteral);
        assert_eq!(err("a@[192.168.0.1]"), Reason::IpLiteral);
        assert_eq!(err("a@[IPv6:::]"), Reason::IpLiteral);
        assert!(matches!(err("a@example.com."), Reason::Invalid(_)));
        assert!(matches!(err("a@-example.com"), Reason::Invalid(_)));
        assert!(matches!(err("a@example-.com"), Reason::Invalid(_)));
        assert!(matches!(err("a@iana/icann.org"), Reason::Invalid(_)));
        assert!(matches!(err("a@exa_mple.com"), Reason::Invalid(_)));
        assert!(matches!(err("a@example,com"), Reason::Invalid(_)));
        ok("test@iana.a");
        ok("test@iana.co-uk");
        ok("x@1example.com");
    }

    #[test]
    fn local_parts() {
        assert_eq!(err("\"test\"@iana.org"), Reason::QuotedLocal);
        assert!(matches!(err("test\"@iana.org"), Reason::Invalid(_)));
        assert!(matches!(err("(c)test@iana.org"), Reason::Invalid(_)));
        assert!(matches!(err("test@iana.org(c)"), Reason::Invalid(_)));
        assert!(matches!(err(".a@example.com"), Reason::Invalid(_)));
        assert!(matches!(err("a.@example.com"), Reason::Invalid(_)));
        assert!(matches!(err("a..b@example.com"), Reason::Invalid(_)));
        assert!(matches!(err("jane doe@example.com"), Reason::Invalid(_)));
        ok("!#$%&`*+/=?^`{|}~@iana.org");
        ok("xn--test@iana.org");
    }

    #[test]
    fn lengths() {
        let l64 = "a".repeat(64);
        ok(&format!("{l64}@example.com"));
        assert_eq!(err(&format!("{l64}b@example.com")), Reason::TooLong);
        let label63 = "b".repeat(63);
        ok(&format!("a@{label63}.com"));
        assert_eq!(err(&format!("a@{label63}b.com")), Reason::TooLong);
        // 254 octets in all is the maximum.
        let d = format!("{label63}.{label63}.{label63}.{}", "c".repeat(59));
        assert_eq!(d.len(), 251);
        ok(&format!("ab@{d}"));
        assert_eq!(err(&format!("abc@{d}")), Reason::TooLong);
        let d = format!("{label63}.{label63}.{label63}.{}", "c".repeat(61));
        assert_eq!(d.len(), 253);
        assert_eq!(err(&format!("a@{d}")), Reason::TooLong);
    }

    #[test]
    fn idn() {
        let m = ok("user@BÜCHER.de");
        assert_eq!(m.address, "user@xn--bcher-kva.de");
        assert!(m.flags.idn);
        let m2 = ok("User@XN--BCHER-KVA.DE");
        assert_eq!(m2.key, m.key);
        assert!(m2.flags.idn);
        assert!(ok("test@xn--hxajbheg2az3al.xn--jxalpdlp").flags.idn);
        assert!(matches!(err("a@xn--zz.com"), Reason::Invalid(_)));
        assert!(matches!(err("jane.doe＠example.com"), Reason::Invalid(_)));
        assert!(matches!(err("a@ex\u{fffd}ample.com"), Reason::Invalid(_)));
    }

    #[test]
    fn smtputf8() {
        assert_eq!(err("josé@example.com"), Reason::NeedsSmtputf8);
        let m = check("José@bücher.de", &LAX).unwrap();
        assert_eq!(m.address, "José@xn--bcher-kva.de");
        assert_eq!(m.key, "josé@xn--bcher-kva.de");
    }

    #[test]
    fn roles_and_flags() {
        assert_eq!(err("Postmaster@example.com"), Reason::Role);
        assert_eq!(err("no-reply@example.com"), Reason::Role);
        assert!(check("abuse@example.com", &LAX).unwrap().flags.role);
        assert!(!ok("abused@example.com").flags.role);
        assert_eq!(ok("a@gmial.com").flags.typo_of, Some("gmail.com"));
        assert_eq!(ok("a@Gmail.con").flags.typo_of, Some("gmail.com"));
        assert_eq!(ok("a@gmail.com").flags.typo_of, None);
        assert!(ok("a@mailinator.com").flags.disposable);
        assert!(ok("a@x.mailinator.com").flags.disposable);
        assert!(!ok("a@notmailinator.com").flags.disposable);
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(Reason::Invalid("x").code(), "invalid");
        assert_eq!(Reason::NeedsSmtputf8.code(), "needs_smtputf8");
        assert_eq!(Reason::MultipleAddresses.code(), "multiple_addresses");
        assert!(Reason::Invalid("no @ sign")
            .to_string()
            .contains("no @ sign"));
    }
}
