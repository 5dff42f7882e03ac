//! What the listener reads from and adds to a submitted message's header: the `From:`
//! domains (RFC 6409 §6.1) and the `Date:` / `Message-ID:` fields a submission server adds
//! when missing (RFC 6409 §8.1.2, §8.3). Nothing else in the header is touched.
//!
//! The data given here already passed the bare-CR/LF check, so lines end in CRLF.

/// Iterates the header fields of `data` as `(name, unfolded value)`. The header ends at
/// the first empty line. A field name is matched with trailing blanks removed
/// (obsolete `From :` syntax), so such a field cannot slip past the checks.
fn fields(data: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = out.last_mut() {
                v.push_str(&text);
            }
            continue;
        }
        match text.split_once(':') {
            Some((name, value)) => out.push((name.trim_end().to_string(), value.to_string())),
            // Not a field: keep it so a continuation after it is not glued to the one before.
            None => out.push((String::new(), String::new())),
        }
    }
    out
}

/// Whether the header has a field `name` (case-insensitive).
pub(super) fn has_field(data: &[u8], name: &str) -> bool {
    fields(data)
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// The domains of every address in the `From:` field (lower-case). `Err` (with a reason)
/// for no `From:`, several `From:` fields, or an address that cannot be read.
pub(super) fn from_domains(data: &[u8]) -> Result<Vec<String>, &'static str> {
    let from: Vec<String> = fields(data)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("From"))
        .map(|(_, v)| v)
        .collect();
    let value = match &from[..] {
        [v] => v,
        [] => return Err("message has no From: header"),
        _ => return Err("message has more than one From: header"),
    };
    let mut domains = Vec::new();
    for addr in addresses(value) {
        let (_, domain) = addr.rsplit_once('@').ok_or("unreadable From: address")?;
        if domain.is_empty() {
            return Err("unreadable From: address");
        }
        domains.push(domain.to_ascii_lowercase());
    }
    if domains.is_empty() {
        return Err("unreadable From: address");
    }
    Ok(domains)
}

/// The addresses in an address-list value: quoted strings and comments skipped, the part
/// in `<>` when there is one, else the mailbox text. Group names (`name:` … `;`) are
/// separators.
fn addresses(value: &str) -> Vec<String> {
    let (mut out, mut plain, mut angle) = (Vec::new(), String::new(), None::<String>);
    let (mut quoted, mut escaped, mut comment) = (false, false, 0u32);
    let mut end = |plain: &mut String, angle: &mut Option<String>| {
        let a = angle.take().unwrap_or_else(|| plain.trim().to_string());
        if !a.trim().is_empty() {
            out.push(a.trim().to_string());
        }
        plain.clear();
    };
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            _ if quoted => {}
            '(' => comment += 1,
            ')' if comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '<' => angle = Some(String::new()),
            '>' => {}
            ',' | ';' => end(&mut plain, &mut angle),
            // A group name ends here: what came before was a display name, not an address.
            ':' if angle.is_none() => plain.clear(),
            c => match &mut angle {
                Some(a) => a.push(c),
                None => plain.push(c),
            },
        }
    }
    end(&mut plain, &mut angle);
    out
}

/// Prepends `Date:` and `Message-ID: <random@hostname>` when the header lacks them.
pub(super) fn add_missing(data: Vec<u8>, hostname: &str) -> Vec<u8> {
    let mut top = String::new();
    if !has_field(&data, "Date") {
        top.push_str(&format!("Date: {}\r\n", chrono::Utc::now().to_rfc2822()));
    }
    if !has_field(&data, "Message-ID") {
        let id: u128 = rand::random();
        top.push_str(&format!("Message-ID: <{id:032x}@{hostname}>\r\n"));
    }
    if top.is_empty() {
        return data;
    }
    let mut out = Vec::with_capacity(top.len() + data.len());
    out.extend_from_slice(top.as_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_addresses() {
        let d =
            |h: &str| from_domains(format!("{h}\r\nTo: x@y\r\n\r\nFrom: z@evil\r\n").as_bytes());
        assert_eq!(d("From: a@A.test"), Ok(vec!["a.test".to_string()]));
        assert_eq!(
            d("From: \"Evil, <x@evil>\" (c@evil) <a@a.test>"),
            Ok(vec!["a.test".to_string()])
        );
        assert_eq!(
            d("from : A <a@a.test>,\r\n b@b.test"),
            Ok(vec!["a.test".to_string(), "b.test".to_string()])
        );
        assert_eq!(
            d("From: grp: a@a.test, B <b@b.test>;"),
            Ok(vec!["a.test".to_string(), "b.test".to_string()])
        );
        assert!(d("From: nobody").is_err());
        assert!(d("Subject: x").is_err());
        assert!(d("From: a@a.test\r\nFROM: b@b.test").is_err());
    }

    #[test]
    fn adds_date_and_message_id_only_when_missing() {
        let m = add_missing(b"Subject: x\r\n\r\nDate: body\r\n".to_vec(), "h.test");
        let s = String::from_utf8(m).unwrap();
        assert!(s.starts_with("Date: "), "{s}");
        let mid = s.lines().nth(1).unwrap();
        assert!(
            mid.starts_with("Message-ID: <") && mid.ends_with("@h.test>"),
            "{mid}"
        );
        assert!(s.ends_with("Subject: x\r\n\r\nDate: body\r\n"));
        let keep = b"date: d\r\nMessage-Id: <m@x>\r\n\r\nb\r\n".to_vec();
        assert_eq!(add_missing(keep.clone(), "h.test"), keep);
    }
}
