//! SMTP wire encoding of a message body (RFC 5321 §4.5.2): CRLF line endings, dot-stuffing,
//! the final `.`, and the checks that keep a malformed message off the wire.

/// RFC 5321 §4.5.3.1.6: 1000 octets including CRLF.
pub const MAX_LINE: usize = 998;

/// Why a message cannot go on the wire as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A line longer than 998 octets (the builder should have folded or encoded it).
    #[error("line {0} is longer than 998 octets")]
    LineTooLong(usize),
    /// A NUL byte.
    #[error("NUL byte on line {0}")]
    Nul(usize),
}

/// Appends `msg` to `out` dot-stuffed and terminated with `.\r\n`. Bare LF and bare CR are
/// turned into CRLF, so the data never carries them (they are what SMTP smuggling rides on).
pub fn encode_data(msg: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    out.reserve(msg.len() + msg.len() / 64 + 8);
    let mut line_no = 1usize;
    let mut rest = msg;
    // Line by line with slice operations (not byte pushes): this runs for every byte of every
    // message, so it is on the lane's hot path.
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        if line.len() > MAX_LINE {
            return Err(WireError::LineTooLong(line_no));
        }
        if line.contains(&0) {
            return Err(WireError::Nul(line_no));
        }
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        // CRLF counts once; a lone CR or LF becomes a line break too.
        let skip = match rest.get(end) {
            Some(b'\r') if rest.get(end + 1) == Some(&b'\n') => 2,
            Some(_) => 1,
            None => 0,
        };
        rest = &rest[end + skip..];
        line_no += 1;
    }
    out.extend_from_slice(b".\r\n");
    Ok(())
}

/// True when an address or parameter is safe inside an SMTP command line (no CR/LF/NUL,
/// no spaces or angle brackets that would end the path early).
pub fn safe_path(addr: &str) -> bool {
    !addr.is_empty()
        && addr.len() <= 320
        && !addr
            .bytes()
            .any(|b| b < 0x21 || b == 0x7f || b == b'<' || b == b'>')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(m: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        encode_data(m, &mut o).unwrap();
        o
    }

    #[test]
    fn stuffing_and_line_endings() {
        assert_eq!(enc(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(enc(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(enc(b"a\nb\rc"), b"a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(enc(b"x\r\n\n.\n"), b"x\r\n\r\n..\r\n.\r\n");
        assert_eq!(enc(b""), b".\r\n");
    }

    #[test]
    fn refuses_malformed() {
        let mut o = Vec::new();
        let long = vec![b'a'; 999];
        assert_eq!(encode_data(&long, &mut o), Err(WireError::LineTooLong(1)));
        assert_eq!(encode_data(b"a\r\nb\0", &mut o), Err(WireError::Nul(2)));
        assert!(encode_data(&vec![b'a'; 998], &mut o).is_ok());
    }

    #[test]
    fn paths() {
        assert!(safe_path("a@b.example"));
        assert!(!safe_path("a@b.example>\r\nRCPT TO:<x@y"));
        assert!(!safe_path("a b@c"));
    }
}
