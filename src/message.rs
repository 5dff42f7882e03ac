//! Building RFC 5322 + MIME messages, and sanitising every header value that comes from a
//! list or a template.
//!
//! OWNER: render/message helper. API is fixed; implementation pending.

/// A parsed `Name <addr@domain>` mailbox for From / Reply-To.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedAddress {
    /// Display name (may be non-ASCII; encoded per RFC 2047 when needed). Empty = none.
    pub name: String,
    /// The bare address.
    pub address: String,
}

/// Everything needed to build one message.
#[derive(Debug, Clone)]
pub struct Parts<'a> {
    /// `From:`.
    pub from: &'a NamedAddress,
    /// `Reply-To:`, if any.
    pub reply_to: Option<&'a NamedAddress>,
    /// The recipient address (already validated; goes in `To:`).
    pub to: &'a str,
    /// Rendered subject (untrusted: sanitised and RFC 2047 encoded here).
    pub subject: &'a str,
    /// Text part.
    pub text: Option<&'a str>,
    /// HTML part.
    pub html: Option<&'a str>,
    /// Extra headers from the campaign (names validated at config time; values sanitised here).
    pub headers: &'a [(String, String)],
    /// Domain for the Message-ID (the sender's domain).
    pub message_id_domain: &'a str,
    /// `Date:` value as a unix timestamp in seconds.
    pub date: i64,
}

/// Builds the message: CRLF line endings, no line over 998 octets (headers folded, bodies
/// quoted-printable or base64), multipart/alternative when both parts exist. Not dot-stuffed
/// (that is the transport's job). Returns the bytes and the Message-ID used (without <>).
pub fn build(parts: &Parts<'_>) -> (Vec<u8>, String) {
    let _ = parts;
    todo!()
}

/// Makes an untrusted value safe as a header value: CR, LF and NUL (and other control
/// characters) can never start a new header; they become single spaces.
pub fn sanitize_header_value(value: &str) -> std::borrow::Cow<'_, str> {
    let _ = value;
    todo!()
}
