//! Scanning helpers shared by the bounce parsers: addresses, SMTP codes and enhanced status
//! codes in free text. Each is one linear pass with no backtracking, so a hostile 1 MB body
//! costs no more than reading it.

use crate::classify::Enhanced;

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b)
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'
}

/// Every plausible address in `text`, in order, lower-cased, with the byte offset where it
/// starts. Quoted local parts and comments are not understood (bounces rarely carry them).
pub fn addresses(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // `floor` keeps each byte in at most one local part, so the scan stays linear even on
    // `a@a@a@…`.
    let mut floor = 0;
    while i < bytes.len() {
        if bytes[i] != b'@' {
            i += 1;
            continue;
        }
        let mut s = i;
        while s > floor && is_local_byte(bytes[s - 1]) {
            s -= 1;
        }
        let mut e = i + 1;
        while e < bytes.len() && is_domain_byte(bytes[e]) {
            e += 1;
        }
        floor = i + 1;
        // Trim what sentence punctuation leaves on either side.
        while s < i && matches!(bytes[s], b'.' | b'\'' | b'`' | b'/' | b'{' | b'|') {
            s += 1;
        }
        let mut de = e;
        while de > i + 1 && matches!(bytes[de - 1], b'.' | b'-') {
            de -= 1;
        }
        let local = &text[s..i];
        let domain = &text[i + 1..de];
        if !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && domain.len() <= 255
            && !domain.starts_with('.')
            && !domain.contains("..")
            && domain
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            out.push((s, text[s..de].to_ascii_lowercase()));
        }
        i = e.max(i + 1);
    }
    out
}

/// The first address in `text`.
pub fn first_address(text: &str) -> Option<String> {
    addresses(text).into_iter().next().map(|(_, a)| a)
}

fn word_split(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '#' | '(' | ')' | '[' | ']' | '<' | '>' | '"' | ';' | ',' | '='
        )
}

/// An enhanced status code anywhere in `text` (`5.1.1`, `#5.1.1`, `(4.4.7)`): the first of
/// class 4 or 5, else the first of class 2 (a transcript quotes the 250s before the failure).
pub fn find_enhanced(text: &str) -> Option<Enhanced> {
    let mut success = None;
    for e in text.split(word_split).filter_map(enhanced_word) {
        if e.0 != 2 {
            return Some(e);
        }
        success = success.or(Some(e));
    }
    success
}

fn enhanced_word(w: &str) -> Option<Enhanced> {
    {
        let w = w
            .trim_start_matches(':')
            .trim_end_matches([',', ';', ':', '.']);
        let mut it = w.split('.');
        let (a, b, c) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || a.len() != 1 || b.is_empty() || c.is_empty() {
            return None;
        }
        if b.len() > 3 || c.len() > 3 {
            return None;
        }
        let a: u8 = a.parse().ok()?;
        if !matches!(a, 2 | 4 | 5) {
            return None;
        }
        Some(Enhanced(a, b.parse().ok()?, c.parse().ok()?))
    }
}

/// A three-digit SMTP reply code (`550`, `550-`, `550:`) as a word in `text`: 2xx, 4xx or
/// 5xx with a second digit 0–5 (so years, IP parts and ports rarely pass).
/// The first 4xx/5xx wins over an earlier 2xx, as for [`find_enhanced`].
pub fn find_code(text: &str) -> Option<u16> {
    let mut success = None;
    let codes = text
        .split(|c: char| {
            c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '<' | '>' | '"' | ';' | ',')
        })
        .filter_map(|w| {
            // `550-5.1.1`: a multi-line reply's code glued to its enhanced code.
            let w = match w.as_bytes().get(3) {
                Some(b'-') => &w[..3],
                _ => w.trim_end_matches(['-', ':', '.']),
            };
            let b = w.as_bytes();
            if b.len() != 3
                || !matches!(b[0], b'2' | b'4' | b'5')
                || !(b'0'..=b'5').contains(&b[1])
                || !b[2].is_ascii_digit()
            {
                return None;
            }
            w.parse::<u16>().ok()
        });
    for c in codes {
        if c >= 400 {
            return Some(c);
        }
        success = success.or(Some(c));
    }
    success
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` with runs of whitespace collapsed to one space, at most `max` bytes.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for w in s.split_whitespace() {
        if out.len() + w.len() + 1 > max {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// The address inside an address field value (`rfc822; <a@b>`, `"Name" <a@b>`).
pub fn address_in(value: &str) -> Option<String> {
    first_address(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_addresses() {
        let a = addresses("<kijitora@example.jp>: host said. Mail to a.b@c.example.");
        let list: Vec<_> = a.into_iter().map(|(_, a)| a).collect();
        assert_eq!(list, ["kijitora@example.jp", "a.b@c.example"]);
        assert!(addresses("a@b a@@ @x.y foo@bar").is_empty());
        assert_eq!(addresses(&"a@".repeat(1000)).len(), 0);
    }

    #[test]
    fn scans_codes() {
        assert_eq!(find_code("host x said: 550-5.1.1 no"), Some(550));
        assert_eq!(find_code("on 2013-04-24 at 192.0.2.1"), None);
        assert_eq!(find_enhanced("blah (#5.1.1) x"), Some(Enhanced(5, 1, 1)));
        assert_eq!(find_enhanced("192.0.2.1 Exim 4.72"), None);
        assert_eq!(prefix("héllo", 2), "h");
    }
}
