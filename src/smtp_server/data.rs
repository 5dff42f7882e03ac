//! The DATA body reader shared by the sink and the submission listener.
//!
//! Only CRLF "." CRLF ends the data: a "." line after a bare LF, or one ending in a bare
//! LF, is *not* the end. Accepting `\n.\n`, `\n.\r\n` or `\r\n.\n` as the end is what made
//! SMTP smuggling possible (2023 advisories); `\r.\r` never even forms a line here, since
//! lines are split at LF only. The caller sees every line with what is odd about it and
//! decides: the sink records violations, the submission listener rejects the message.

use std::io;

use super::conn::Conn;

/// One body line as read.
#[derive(Debug)]
pub struct DataLine<'a> {
    /// Line number in the body, from 1.
    pub number: usize,
    /// The line dot-unstuffed, with its line ending as sent (truncated to the reader's
    /// `limit` if longer).
    pub bytes: &'a [u8],
    /// Length without the line ending (the real one, even when `bytes` is truncated).
    pub content_len: usize,
    /// Octets this line adds to the message: dot-unstuffed, line ending included.
    pub size: usize,
    /// Ended with CRLF (false: a bare LF).
    pub crlf: bool,
    /// A CR not followed by LF somewhere in the line.
    pub bare_cr: bool,
    /// A NUL octet in the line.
    pub nul: bool,
    /// An octet >= 0x80 in the line.
    pub eight_bit: bool,
    /// A lone "." that does not end the data: after a bare LF (`\n.\r\n`), or itself
    /// ending in a bare LF (`.\n`). It is kept as sent.
    pub false_end: bool,
}

/// How reading a body ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DataEnd {
    /// CRLF "." CRLF was read.
    Complete,
    /// The client closed the connection first.
    Eof,
    /// The callback asked to stop (the rest of the body is left unread).
    Stopped,
}

/// Reads a DATA body through the final CRLF "." CRLF, calling `on_line` for every line
/// before it (return `false` to stop reading). `buf` is a reused line buffer; lines are
/// stored up to `limit` bytes (the rest is consumed and counted, not kept).
pub async fn read_data(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
    limit: usize,
    mut on_line: impl FnMut(&DataLine<'_>) -> bool,
) -> io::Result<DataEnd> {
    let (mut number, mut prev_crlf) = (0usize, true);
    loop {
        let l = conn.read_line(buf, limit).await?;
        if !l.complete {
            return Ok(DataEnd::Eof);
        }
        number += 1;
        let line = &buf[..];
        if line == b".\r\n" && prev_crlf {
            return Ok(DataEnd::Complete);
        }
        let ending = if l.crlf { 2 } else { 1 };
        let content_len = l.total - ending;
        let content = &line[..line.len().min(content_len)];
        let (mut nul, mut bare_cr, mut eight_bit) = (false, false, false);
        for &b in content {
            match b {
                0 => nul = true,
                b'\r' => bare_cr = true,
                0x80.. => eight_bit = true,
                _ => {}
            }
        }
        // RFC 5321 4.5.2: the leading dot goes only if other characters follow; a lone
        // dot that is not the end (see above) is kept as sent.
        let stuffed = usize::from(content.first() == Some(&b'.') && content_len > 1);
        let dl = DataLine {
            number,
            bytes: &line[stuffed..],
            content_len: content_len - stuffed,
            size: l.total - stuffed,
            crlf: l.crlf,
            bare_cr,
            nul,
            eight_bit,
            false_end: line == b".\r\n" || line == b".\n",
        };
        if !on_line(&dl) {
            return Ok(DataEnd::Stopped);
        }
        prev_crlf = l.crlf;
    }
}
