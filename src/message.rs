//! Building RFC 5322 + MIME messages, and sanitising every header value that comes from a
//! list or a template.
//!
//! The builder is our own rather than lettre's because lettre's builder panics on, or
//! passes through, CR/LF in display names and header values, and list data is untrusted.
//! Invariants of the output (tested in `tests/render_message.rs`): CRLF line endings only,
//! no line over 998 octets (headers are folded to ≤ 78 where whitespace allows), every
//! header line is `Name: value` or a continuation starting with SP, and no value from a
//! list or template can start a header of its own.

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine as _;
use rand::RngCore;

/// A parsed `Name <addr@domain>` mailbox for From / Reply-To.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedAddress {
    /// Display name (may be non-ASCII; encoded per RFC 2047 when needed). Empty = none.
    pub name: String,
    /// The bare address.
    pub address: String,
}

impl NamedAddress {
    /// The part after the last `@` (`None` for an address without one).
    pub fn domain(&self) -> Option<&str> {
        self.address.rsplit_once('@').map(|(_, d)| d)
    }
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
    /// The Message-ID's left part (before `@domain`); random when `None`.
    pub message_id: Option<&'a str>,
    /// blast's own list headers (List-Id, List-Unsubscribe, List-Unsubscribe-Post,
    /// Feedback-ID): ASCII, folded at whitespace, never encoded; an extra header of the same
    /// name is dropped.
    pub list_headers: &'a [(&'a str, String)],
}

/// Preferred maximum header line length (RFC 5322 §2.1.1 "SHOULD").
const SOFT_LIMIT: usize = 78;
/// Absolute maximum line length without CRLF (RFC 5322 §2.1.1 "MUST").
const HARD_LIMIT: usize = 998;
/// Longest body line we send as 7bit; longer lines go quoted-printable.
const MAX_7BIT_LINE: usize = 998;
/// Boundary prefix. `=_` can never appear in quoted-printable output (an `=` is always
/// followed by two hex digits or a line break), so QP bodies cannot contain the boundary;
/// 7bit bodies that contain the prefix are sent QP instead.
const BOUNDARY_PREFIX: &str = "=_blast_";

/// Headers written by [`build`]; an extra header with one of these names is dropped because
/// RFC 5322 allows each of them at most once.
const OWN_HEADERS: &[&str] = &[
    "date",
    "from",
    "reply-to",
    "to",
    "subject",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

/// Builds the message: CRLF line endings, no line over 998 octets (headers folded, bodies
/// quoted-printable or base64), multipart/alternative when both parts exist. Not dot-stuffed
/// (that is the transport's job). Returns the bytes and the Message-ID used (without <>).
///
/// Every value that can come from a list or a template (`to`, subject, display names, extra
/// header values) goes through [`sanitize_header_value`] here, whatever the caller did.
/// Extra headers whose name is not a valid RFC 5322 field name, or that duplicate a header
/// written here, are dropped.
pub fn build(parts: &Parts<'_>) -> (Vec<u8>, String) {
    let body_len = parts.text.map_or(0, str::len) + parts.html.map_or(0, str::len);
    let mut out = Vec::with_capacity(body_len + body_len / 8 + 1024);
    let mut rng = rand::rng();

    // Date: always in UTC; an out-of-range timestamp falls back to the epoch rather than
    // failing the message.
    let date = chrono::DateTime::from_timestamp(parts.date, 0).unwrap_or_default();
    out.extend_from_slice(b"Date: ");
    write_date(&mut out, date);
    out.extend_from_slice(b"\r\n");

    write_mailbox_header(&mut out, "From", parts.from);
    if let Some(r) = parts.reply_to {
        write_mailbox_header(&mut out, "Reply-To", r);
    }
    let to = sanitize_header_value(parts.to);
    let mut h = HeaderWriter::start(&mut out, "To");
    h.text(to.trim());
    h.end();

    let subject = sanitize_header_value(parts.subject);
    let mut h = HeaderWriter::start(&mut out, "Subject");
    h.unstructured(subject.trim());
    h.end();

    let domain = sanitize_header_value(parts.message_id_domain);
    let domain = domain.trim();
    let mut id = String::with_capacity(40 + domain.len());
    match parts.message_id {
        // Only dot-atom text may go left of the @ (RFC 5322 §3.6.4).
        Some(left) if !left.is_empty() && left.bytes().all(is_atext_or_dot) => id.push_str(left),
        _ => {
            push_hex(&mut id, rng.next_u64());
            push_hex(&mut id, rng.next_u64());
        }
    }
    id.push('@');
    id.push_str(domain);
    let mut h = HeaderWriter::start(&mut out, "Message-ID");
    h.raw("<");
    h.raw(&id);
    h.raw(">");
    h.end();
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");

    let boundary = match (parts.text, parts.html) {
        (Some(_), Some(_)) => {
            let mut b = String::with_capacity(BOUNDARY_PREFIX.len() + 32);
            b.push_str(BOUNDARY_PREFIX);
            push_hex(&mut b, rng.next_u64());
            push_hex(&mut b, rng.next_u64());
            Some(b)
        }
        _ => None,
    };
    // Single part: its content headers are the message's.
    let single = match (parts.text, parts.html) {
        (Some(_), Some(_)) => None,
        (None, Some(html)) => Some(("text/html", html)),
        (Some(text), None) => Some(("text/plain", text)),
        (None, None) => Some(("text/plain", "")),
    };
    let single_cte = single.map(|(_, body)| choose_encoding(body));
    match (&boundary, single, single_cte) {
        (Some(b), _, _) => {
            out.extend_from_slice(b"Content-Type: multipart/alternative;\r\n boundary=\"");
            out.extend_from_slice(b.as_bytes());
            out.extend_from_slice(b"\"\r\nContent-Transfer-Encoding: 7bit\r\n");
        }
        (None, Some((ctype, _)), Some(cte)) => write_content_headers(&mut out, ctype, cte),
        _ => unreachable!("either multipart or single"),
    }

    for (name, value) in parts.list_headers {
        let value = sanitize_header_value(value);
        let mut h = HeaderWriter::start(&mut out, name);
        h.text(value.trim());
        h.end();
    }
    for (name, value) in parts.headers {
        if !is_field_name(name)
            || OWN_HEADERS.iter().any(|o| o.eq_ignore_ascii_case(name))
            || parts
                .list_headers
                .iter()
                .any(|(o, _)| o.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let value = sanitize_header_value(value);
        let mut h = HeaderWriter::start(&mut out, name);
        h.unstructured(value.trim());
        h.end();
    }
    out.extend_from_slice(b"\r\n");

    match (boundary, single, single_cte) {
        (Some(b), _, _) => {
            for (ctype, body) in [
                ("text/plain", parts.text.unwrap_or_default()),
                ("text/html", parts.html.unwrap_or_default()),
            ] {
                out.extend_from_slice(b"--");
                out.extend_from_slice(b.as_bytes());
                out.extend_from_slice(b"\r\n");
                let cte = choose_encoding(body);
                write_content_headers(&mut out, ctype, cte);
                out.extend_from_slice(b"\r\n");
                write_body(&mut out, body, cte);
                // The CRLF before the delimiter belongs to the delimiter (RFC 2046 §5.1.1).
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"--");
            out.extend_from_slice(b.as_bytes());
            out.extend_from_slice(b"--\r\n");
        }
        (None, Some((_, body)), Some(cte)) => {
            write_body(&mut out, body, cte);
            if !out.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        _ => unreachable!("either multipart or single"),
    }
    (out, id)
}

fn is_atext_or_dot(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)
}

/// Makes an untrusted value safe as a header value: CR, LF and NUL (and other control
/// characters) can never start a new header; they become single spaces.
///
/// Every C0 control (including TAB, which is harmless but pointless in a value) and DEL
/// is replaced; a run of them becomes one space. Returns `Cow::Borrowed` when nothing
/// changes, which is the common case, so callers can sanitise unconditionally.
pub fn sanitize_header_value(value: &str) -> Cow<'_, str> {
    let is_ctl = |b: u8| b < 0x20 || b == 0x7f;
    let Some(first) = value.bytes().position(is_ctl) else {
        return Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(value.len());
    out.push_str(&value[..first]);
    let mut in_run = false;
    for c in value[first..].chars() {
        if c.is_ascii() && is_ctl(c as u8) {
            if !in_run {
                out.push(' ');
                in_run = true;
            }
        } else {
            out.push(c);
            in_run = false;
        }
    }
    Cow::Owned(out)
}

/// Parses a config value like `Acme News <news@acme.example>`, `"Acme, Inc." <a@b.example>`
/// or a bare `news@acme.example` into a [`NamedAddress`].
///
/// Control characters (CR, LF, NUL, …) are rejected outright rather than sanitised: this is
/// configuration, and a stray line break there is a mistake the user should see.
pub fn parse_named_address(s: &str) -> Result<NamedAddress, String> {
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "{s:?}: control characters (CR, LF, …) are not allowed"
        ));
    }
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address".to_owned());
    }
    let mailbox: lettre::message::Mailbox = match s.parse() {
        Ok(m) => m,
        // `Acme, Inc. <news@acme.example>`: RFC 5322 wants the name quoted (a comma separates
        // mailboxes), but what was meant is plain, so quote it rather than refuse it.
        Err(e) => quote_display_name(s)
            .and_then(|q| q.parse().ok())
            .ok_or_else(|| {
                format!(
                    "{s:?}: not a valid address ({e}); a display name with a comma or another \
                     special character needs quotes, e.g. '\"Acme, Inc.\" <news@acme.example>'"
                )
            })?,
    };
    // lettre accepts a few things a sending domain should not have.
    let domain = mailbox.email.domain();
    if !domain.contains('.') || domain.starts_with('[') {
        return Err(format!("{s:?}: the domain must be a fully qualified name"));
    }
    // A Unicode domain goes out as its A-label (envelope, header, default EHLO): only a
    // non-ASCII local part needs SMTPUTF8, and a relay without it refuses every message.
    let domain = idna::domain_to_ascii(domain)
        .map_err(|_| format!("{s:?}: {domain:?} is not a valid domain name"))?;
    Ok(NamedAddress {
        name: mailbox.name.unwrap_or_default(),
        address: format!("{}@{domain}", mailbox.email.user()),
    })
}

/// Whether an address can only be sent with SMTPUTF8 (RFC 6531): a non-ASCII local part. A
/// non-ASCII domain does not count: [`parse_named_address`] turns it into its A-label.
pub fn needs_smtputf8(address: &str) -> bool {
    !address.is_ascii()
}

/// `Name <addr>` with an unquoted name → `"Name" <addr>` (quotes and backslashes escaped);
/// `None` when `s` is not of that form or the name is already quoted.
fn quote_display_name(s: &str) -> Option<String> {
    let (name, rest) = s.rsplit_once('<')?;
    let name = name.trim();
    if name.is_empty() || name.starts_with('"') || !rest.ends_with('>') {
        return None;
    }
    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
    Some(format!("\"{escaped}\" <{rest}"))
}

/// RFC 5322 §3.3 date-time in UTC, e.g. `Tue, 14 Nov 2023 22:13:20 +0000`. Written by
/// hand: chrono's strftime re-parses its format string on every call.
fn write_date(out: &mut Vec<u8>, d: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let _ = write!(
        Buf(out),
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        DAYS[d.weekday().num_days_from_monday() as usize],
        d.day(),
        MONTHS[d.month0() as usize],
        d.year(),
        d.hour(),
        d.minute(),
        d.second()
    );
}

/// Appends `v` as 16 lowercase hex digits.
fn push_hex(s: &mut String, v: u64) {
    const LOWER: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        s.push(char::from(LOWER[((v >> (shift * 4)) & 15) as usize]));
    }
}

/// `io::Write`-less adapter so `write!` can append to a `Vec<u8>`.
struct Buf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// RFC 5322 field name: printable ASCII except `:`.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Content-Transfer-Encoding of a text body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cte {
    SevenBit,
    QuotedPrintable,
}

fn write_content_headers(out: &mut Vec<u8>, ctype: &str, cte: Cte) {
    let rest: &[u8] = match cte {
        Cte::SevenBit => b"; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n",
        Cte::QuotedPrintable => {
            b"; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
        }
    };
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(ctype.as_bytes());
    out.extend_from_slice(rest);
}

/// 7bit when the body is printable ASCII (plus TAB) with lines ≤ 998 octets and cannot
/// contain our boundary; quoted-printable otherwise.
fn choose_encoding(body: &str) -> Cte {
    let b = body.as_bytes();
    let ok = |c: u8| (0x20..=0x7e).contains(&c) || c == b'\t' || c == b'\r' || c == b'\n';
    // Non-short-circuiting fold: the compiler vectorises it, and bodies are small.
    if !b.iter().fold(true, |a, &c| a & ok(c)) {
        return Cte::QuotedPrintable;
    }
    if b.len() > MAX_7BIT_LINE {
        let mut rest = b;
        while let Some(i) = find_break(rest) {
            if i > MAX_7BIT_LINE {
                return Cte::QuotedPrintable;
            }
            rest = &rest[i + 1..];
        }
        if rest.len() > MAX_7BIT_LINE {
            return Cte::QuotedPrintable;
        }
    }
    if body.contains(BOUNDARY_PREFIX) {
        return Cte::QuotedPrintable;
    }
    Cte::SevenBit
}

/// Index of the first CR or LF. Scans 16 bytes at a time with a branch-free test the
/// compiler vectorises: bodies are scanned a few times per message, and this was the
/// hottest loop of [`build`].
fn find_break(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    for chunk in b.chunks_exact(16) {
        if chunk
            .iter()
            .fold(false, |a, &c| a | (c == b'\n') | (c == b'\r'))
        {
            break;
        }
        i += 16;
    }
    b[i..]
        .iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .map(|p| p + i)
}

/// Bytes that may stand for themselves in quoted-printable (RFC 2045 §6.7 rules 2 and 3):
/// printable ASCII except `=`, plus SP and TAB (which must still be encoded at line end).
fn is_qp_literal(c: u8) -> bool {
    ((0x20..=0x7e).contains(&c) && c != b'=') || c == b'\t'
}

/// End of the run of QP-literal bytes starting at `start` (vectorised like [`find_break`]).
fn literal_run_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    for chunk in b[start..].chunks_exact(16) {
        if !chunk.iter().fold(true, |a, &c| a & is_qp_literal(c)) {
            break;
        }
        i += 16;
    }
    i + b[i..]
        .iter()
        .position(|&c| !is_qp_literal(c))
        .unwrap_or(b.len() - i)
}

/// Splits a body at LF, CRLF or CR, returning the lines without their breaks. A trailing
/// break yields a final empty line, so joining with CRLF reproduces the body.
fn lines(body: &str) -> impl Iterator<Item = &[u8]> {
    let b = body.as_bytes();
    let mut pos = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let rest = &b[pos..];
        match find_break(rest) {
            Some(i) => {
                let line = &rest[..i];
                pos += i + if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                Some(line)
            }
            None => {
                done = true;
                Some(rest)
            }
        }
    })
}

/// Writes the encoded body: lines joined by CRLF (no CRLF after the last line; the caller
/// adds the one that ends the part).
fn write_body(out: &mut Vec<u8>, body: &str, cte: Cte) {
    let mut first = true;
    for line in lines(body) {
        if !first {
            out.extend_from_slice(b"\r\n");
        }
        first = false;
        match cte {
            Cte::SevenBit => out.extend_from_slice(line),
            Cte::QuotedPrintable => qp_line(out, line),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Quoted-printable encodes one line (RFC 2045 §6.7): encoded lines ≤ 76 characters
/// including the `=` of a soft break, `=` and non-printables as `=XX`, and whitespace at
/// the end of the line encoded so transports that strip trailing blanks cannot change it.
///
/// Runs of literal bytes are copied in slices rather than byte by byte: this loop is the
/// hottest part of building a message.
fn qp_line(out: &mut Vec<u8>, line: &[u8]) {
    let n = line.len();
    let mut col = 0usize;
    let mut i = 0usize;
    while i < n {
        let b = line[i];
        let trailing_ws = i + 1 == n && (b == b' ' || b == b'\t');
        if is_qp_literal(b) && !trailing_ws {
            let mut j = literal_run_end(line, i + 1);
            if j == n && (line[n - 1] == b' ' || line[n - 1] == b'\t') {
                j -= 1; // leave the trailing blank for the encoded branch
            }
            let ends_line = j == n;
            let mut run = &line[i..j];
            while !run.is_empty() {
                // The line's last character may use column 76: no soft break follows it.
                if ends_line && col + run.len() <= 76 {
                    out.extend_from_slice(run);
                    col += run.len();
                    break;
                }
                if col >= 75 {
                    out.extend_from_slice(b"=\r\n");
                    col = 0;
                    continue;
                }
                let take = (75 - col).min(run.len());
                out.extend_from_slice(&run[..take]);
                col += take;
                run = &run[take..];
            }
            i = j;
        } else {
            let limit = if i + 1 == n { 76 } else { 75 };
            if col + 3 > limit {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            col += 3;
            i += 1;
        }
    }
}

fn write_mailbox_header(out: &mut Vec<u8>, header: &str, mb: &NamedAddress) {
    let name = sanitize_header_value(&mb.name);
    let name = name.trim();
    let addr = sanitize_header_value(&mb.address);
    // An address cannot contain spaces; dropping them keeps the header parseable even if
    // a caller skipped validation.
    let addr: String = addr.split_whitespace().collect();
    let mut h = HeaderWriter::start(out, header);
    if name.is_empty() {
        h.text(&addr);
    } else {
        if !name.is_ascii() {
            h.encoded_words(name);
        } else if name.bytes().all(|b| is_atext(b) || b == b' ') {
            h.text(name);
        } else {
            let mut q = String::with_capacity(name.len() + 2);
            q.push('"');
            for c in name.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            h.text(&q);
        }
        h.token(&format!("<{addr}>"));
    }
    h.end();
}

/// RFC 5322 atext: may appear unquoted in a display name.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Writes one header, folding long values at whitespace.
struct HeaderWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Length of the current physical line so far.
    col: usize,
    /// Column right after `Name: ` (nothing to gain from folding before it).
    start: usize,
}

impl<'a> HeaderWriter<'a> {
    fn start(out: &'a mut Vec<u8>, name: &str) -> Self {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        let col = name.len() + 2;
        HeaderWriter {
            out,
            col,
            start: col,
        }
    }

    /// Appends without any folding (short, known-safe values).
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
        self.col += s.len();
    }

    fn newline(&mut self) {
        self.out.extend_from_slice(b"\r\n ");
        self.col = 1;
    }

    /// ASCII text, folded before whitespace when a line would pass 78 columns. Folding only
    /// inserts CRLF before existing whitespace, so unfolding gives back the exact value. A
    /// word too long for even a 998-octet line is split hard (last resort: the line limit
    /// is absolute, and such a value is broken anyway).
    fn text(&mut self, s: &str) {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            // A piece is a whitespace run plus the word after it.
            let ws_end = i + b[i..]
                .iter()
                .take_while(|c| **c == b' ' || **c == b'\t')
                .count();
            let end = ws_end
                + b[ws_end..]
                    .iter()
                    .take_while(|c| **c != b' ' && **c != b'\t')
                    .count();
            let piece = &b[i..end];
            if self.col + piece.len() > SOFT_LIMIT && self.col > self.start && ws_end > i {
                // The piece starts with whitespace, which becomes the continuation's WSP.
                self.out.extend_from_slice(b"\r\n");
                self.col = 0;
            }
            let mut rest = piece;
            while self.col + rest.len() > HARD_LIMIT {
                let take = HARD_LIMIT - self.col;
                self.out.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                self.newline();
            }
            self.out.extend_from_slice(rest);
            self.col += rest.len();
            i = end;
        }
    }

    /// An unbreakable token, preceded by a space (or a fold).
    fn token(&mut self, tok: &str) {
        if self.col + 1 + tok.len() > SOFT_LIMIT && self.col > self.start {
            self.newline();
        } else {
            self.raw(" ");
        }
        self.text(tok);
    }

    /// Unstructured text (Subject, extra headers): plain folded ASCII when possible;
    /// RFC 2047 encoded-words when it is not ASCII or has a word no line could hold.
    fn unstructured(&mut self, s: &str) {
        let longest_word = s.split([' ', '\t']).map(str::len).max().unwrap_or(0);
        if s.is_ascii() && longest_word + self.start <= HARD_LIMIT {
            self.text(s);
        } else {
            self.encoded_words(s);
        }
    }

    /// `=?UTF-8?B?…?=` words of at most 75 characters, never splitting a character, each
    /// on the current line if it fits within 78 columns, else on a continuation line. The
    /// whitespace between adjacent encoded-words is not part of the decoded text, so the
    /// text can be cut anywhere between characters.
    fn encoded_words(&mut self, s: &str) {
        const OVERHEAD: usize = "=?UTF-8?B??=".len();
        const MAX_B64: usize = 75 - OVERHEAD; // 63 → 60 usable (multiple of 4)
        let mut rest = s;
        let mut first = true;
        while !rest.is_empty() {
            let sep = usize::from(!first);
            let mut avail = SOFT_LIMIT
                .saturating_sub(self.col + sep + OVERHEAD)
                .min(MAX_B64);
            // A 4-byte character needs 8 base64 characters.
            if avail < 8 {
                self.newline();
                avail = MAX_B64;
            } else if !first {
                self.raw(" ");
            }
            let max_bytes = avail / 4 * 3;
            let mut cut = max_bytes.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (chunk, tail) = rest.split_at(cut);
            self.raw("=?UTF-8?B?");
            let enc = base64::engine::general_purpose::STANDARD.encode(chunk);
            self.raw(&enc);
            self.raw("?=");
            rest = tail;
            first = false;
        }
    }

    fn end(self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize() {
        assert!(matches!(sanitize_header_value("plain é"), Cow::Borrowed(_)));
        assert_eq!(sanitize_header_value("a\r\n\r\nb\0c\x7f"), "a b c ");
        assert_eq!(sanitize_header_value("\ré"), " é");
    }

    /// The obvious byte-at-a-time encoder, to check the run-copying one against.
    fn qp_line_reference(out: &mut Vec<u8>, line: &[u8]) {
        let mut col = 0usize;
        let last = line.len().wrapping_sub(1);
        for (i, &b) in line.iter().enumerate() {
            let literal = match b {
                b' ' | b'\t' => i != last,
                b'=' => false,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            let limit = if i == last { 76 } else { 75 };
            if col + width > limit {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            col += width;
        }
    }

    #[test]
    fn qp_matches_reference() {
        // Deterministic xorshift so failures reproduce.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"ab =\t\xc3\xa9.xyz-_~\x01";
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let mut line = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                line.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            qp_line(&mut a, &line);
            qp_line_reference(&mut b, &line);
            assert_eq!(a, b, "{line:?}");
        }
    }

    #[test]
    fn qp_soft_breaks() {
        let mut out = Vec::new();
        qp_line(&mut out, "x".repeat(200).as_bytes());
        for l in out.split(|&b| b == b'\n') {
            assert!(l.len() <= 77, "{}", l.len());
        }
        let mut out = Vec::new();
        qp_line(&mut out, b"a = b \t");
        assert_eq!(out, b"a =3D b =09");
    }

    #[test]
    fn parse_addresses() {
        let a = parse_named_address("Acme News <news@acme.example>").unwrap();
        assert_eq!(a.name, "Acme News");
        assert_eq!(a.address, "news@acme.example");
        let a = parse_named_address("news@acme.example").unwrap();
        assert_eq!(a.name, "");
        let a = parse_named_address("\"Acme, Inc.\" <a@acme.example>").unwrap();
        assert_eq!(a.name, "Acme, Inc.");
        let a = parse_named_address("Café Ünï <a@acme.example>").unwrap();
        assert_eq!(a.name, "Café Ünï");
        assert!(parse_named_address("A <a@acme.example>\r\nBcc: x@y.example").is_err());
        assert!(parse_named_address("not an address").is_err());
        assert!(parse_named_address("a@localhost").is_err());
    }

    /// Issue 11.6: a Unicode domain is kept as its A-label (what goes into MAIL FROM and
    /// the header); a Unicode local part is kept (it needs SMTPUTF8, see [`needs_smtputf8`]).
    #[test]
    fn idn_domains_become_a_labels() {
        let a = parse_named_address("Acme <news@acmé.example>").unwrap();
        assert_eq!(a.address, "news@xn--acm-dma.example");
        assert!(!needs_smtputf8(&a.address));
        let a = parse_named_address("jörg@Acmé.Example").unwrap();
        assert_eq!(a.address, "jörg@xn--acm-dma.example");
        assert!(needs_smtputf8(&a.address));
        assert!(parse_named_address("a@exa mple.com").is_err());
    }
}
