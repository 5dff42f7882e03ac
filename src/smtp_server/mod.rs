//! Server-side SMTP pieces shared by the test sink ([`crate::sink`]) and the submission
//! listener ([`crate::serve::submission`]): the connection ([`Conn`]: line reading with
//! limits, pipelined replies, STARTTLS), the DATA reader ([`read_data`], smuggling-safe end
//! of data), and command argument parsing (paths, AUTH responses).

mod conn;
mod data;

use std::sync::Arc;

use base64::Engine;

pub use conn::{Conn, Line, Stream};
pub use data::{read_data, DataEnd, DataLine};

/// How a command leaves the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Send what is queued, then close politely (QUIT, 421).
    Close,
    /// Drop the socket now without another word (EOF, injected faults).
    Abort,
}

/// Splits a command line into its verb (upper-cased) and argument. `None` (reply queued):
/// the argument is not UTF-8.
pub fn parse_command<'a>(conn: &mut Conn, line: &'a [u8]) -> Option<(String, &'a str)> {
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    let Ok(arg) = std::str::from_utf8(arg) else {
        conn.reply("501 5.5.2 syntax error: invalid UTF-8");
        return None;
    };
    Some((String::from_utf8_lossy(verb).to_ascii_uppercase(), arg))
}

/// Answers the commands both servers treat alike: NOOP, QUIT, VRFY, the ones neither
/// implements, and unknown ones (`500`).
pub fn other_command(conn: &mut Conn, verb: &str) -> Flow {
    match verb {
        "NOOP" => conn.reply("250 2.0.0 OK"),
        "QUIT" => {
            conn.reply("221 2.0.0 bye");
            return Flow::Close;
        }
        "VRFY" => conn.reply("252 2.5.0 cannot verify"),
        "BDAT" | "EXPN" | "HELP" | "ETRN" | "TURN" => {
            conn.reply("502 5.5.1 command not implemented")
        }
        _ => conn.reply("500 5.5.2 command unrecognized"),
    }
    Flow::Continue
}

/// What an EHLO reply advertises (both servers list in the same order).
pub struct Ehlo<'a> {
    /// Our name.
    pub hostname: &'a str,
    /// The name the client gave.
    pub client: &'a str,
    /// SIZE limit.
    pub size: usize,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Advertise SMTPUTF8.
    pub smtputf8: bool,
    /// Advertise STARTTLS.
    pub starttls: bool,
    /// The AUTH mechanisms to advertise, if any (`"PLAIN LOGIN"`).
    pub auth: Option<&'a str>,
}

impl Ehlo<'_> {
    /// Queues the multi-line `250` reply.
    pub fn reply(&self, conn: &mut Conn) {
        conn.reply(&format!("250-{} hello {}", self.hostname, self.client));
        if self.pipelining {
            conn.reply("250-PIPELINING");
        }
        conn.reply("250-8BITMIME");
        if self.smtputf8 {
            conn.reply("250-SMTPUTF8");
        }
        conn.reply(&format!("250-SIZE {}", self.size));
        if self.starttls {
            conn.reply("250-STARTTLS");
        }
        if let Some(mechs) = self.auth {
            conn.reply(&format!("250-AUTH {mechs}"));
        }
        conn.reply("250 ENHANCEDSTATUSCODES");
    }
}

/// STARTTLS (RFC 3207) up to a finished handshake: refuses it when TLS is not offered
/// (`cfg` is `None`), already active, or given a parameter (`Ok(None)`, reply queued);
/// otherwise answers `220` and upgrades, returning how many bytes the client pipelined
/// after the command (dropped unread). The caller then resets its session state.
pub async fn starttls(
    conn: &mut Conn,
    cfg: Option<Arc<rustls::ServerConfig>>,
    active: bool,
    arg: &str,
) -> std::io::Result<Option<usize>> {
    let refuse = match cfg {
        None => "502 5.5.1 command not implemented",
        Some(_) if active => "503 5.5.1 TLS already active",
        Some(_) if !arg.trim().is_empty() => "501 5.5.4 STARTTLS takes no parameters",
        Some(cfg) => {
            conn.reply("220 2.0.0 Ready to start TLS");
            return conn.start_tls(cfg).await.map(Some);
        }
    };
    conn.reply(refuse);
    Ok(None)
}

/// DATA's precondition: an open transaction with a recipient. Takes the transaction (DATA
/// ends it either way) or queues the refusal and returns `None`. After a refusal, a
/// pipelining client's body is read as commands and draws 500s, as with real servers.
pub fn take_data_txn<T>(
    conn: &mut Conn,
    txn: &mut Option<T>,
    has_rcpts: impl Fn(&T) -> bool,
) -> Option<T> {
    let Some(t) = txn.take() else {
        conn.reply("503 5.5.1 need MAIL and RCPT before DATA");
        return None;
    };
    if !has_rcpts(&t) {
        conn.reply("554 5.5.1 no valid recipients");
        return None;
    }
    Some(t)
}

/// `FROM:<a@b> SIZE=1` → `("a@b", " SIZE=1")`. Tolerates a space after the colon.
pub fn parse_path<'a>(arg: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start().strip_prefix('<')?;
    let end = rest.find('>')?;
    let params = &rest[end + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return None;
    }
    Some((&rest[..end], params))
}

/// What MAIL FROM said beyond the address.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MailParams {
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `BODY=8BITMIME` (RFC 6152).
    pub body_8bitmime: bool,
}

/// Parses a MAIL FROM command: the path and its parameters (`SIZE` checked against
/// `max_size`, `BODY`, `SMTPUTF8` if offered, `AUTH=` accepted and ignored). `Err` is the
/// reply to give. A non-ASCII address requires `SMTPUTF8`.
pub fn parse_mail(
    arg: &str,
    max_size: usize,
    smtputf8_offered: bool,
) -> Result<(&str, MailParams), &'static str> {
    let (addr, params) = parse_path(arg, "FROM:").ok_or("501 5.5.4 syntax: MAIL FROM:<address>")?;
    let mut p = MailParams::default();
    for param in params.split_ascii_whitespace() {
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        if k.eq_ignore_ascii_case("SIZE") {
            match v.parse::<u64>() {
                Ok(n) if n > max_size as u64 => {
                    return Err("552 5.3.4 message size exceeds fixed limit")
                }
                Ok(_) => {}
                Err(_) => return Err("501 5.5.4 bad SIZE parameter"),
            }
        } else if k.eq_ignore_ascii_case("BODY") {
            if v.eq_ignore_ascii_case("8BITMIME") {
                p.body_8bitmime = true;
            } else if !v.eq_ignore_ascii_case("7BIT") {
                return Err("555 5.5.4 unsupported BODY type");
            }
        } else if k.eq_ignore_ascii_case("SMTPUTF8") && v.is_empty() && smtputf8_offered {
            p.smtputf8 = true;
        } else if !k.eq_ignore_ascii_case("AUTH") || v.is_empty() {
            // AUTH=<mailbox> (RFC 4954 §5) is only informational here.
            return Err("555 5.5.4 unsupported MAIL parameter");
        }
    }
    if !addr.is_ascii() && !p.smtputf8 {
        return Err("553 5.6.7 non-ASCII address requires SMTPUTF8");
    }
    Ok((addr, p))
}

/// Parses a RCPT TO command (no parameters supported). `Err` is the reply to give.
pub fn parse_rcpt(arg: &str, smtputf8: bool) -> Result<&str, &'static str> {
    let (addr, params) = parse_path(arg, "TO:").ok_or("501 5.5.4 syntax: RCPT TO:<address>")?;
    if addr.is_empty() || !addr.contains('@') {
        return Err("501 5.1.3 bad recipient address syntax");
    }
    if !params.trim().is_empty() {
        return Err("555 5.5.4 unsupported RCPT parameter");
    }
    if !addr.is_ascii() && !smtputf8 {
        return Err("553 5.6.7 non-ASCII address requires SMTPUTF8");
    }
    Ok(addr)
}

/// An AUTH response line as the client sent it (RFC 4954 §4).
#[derive(Debug, PartialEq, Eq)]
pub enum AuthResponse {
    /// `*`: the client cancelled the exchange.
    Cancelled,
    /// Valid base64 (`=` is the empty response), decoded.
    Data(Vec<u8>),
    /// Not base64.
    Invalid,
}

/// Decodes one AUTH response (initial response or the line after a `334`).
pub fn decode_auth_response(response: &str) -> AuthResponse {
    match response.trim() {
        "*" => AuthResponse::Cancelled,
        "=" => AuthResponse::Data(Vec::new()),
        r => match base64::engine::general_purpose::STANDARD.decode(r.as_bytes()) {
            Ok(d) => AuthResponse::Data(d),
            Err(_) => AuthResponse::Invalid,
        },
    }
}

/// Splits a decoded AUTH PLAIN response `authzid NUL authcid NUL passwd` (RFC 4616) into
/// `(authzid, authcid, passwd)`.
pub fn split_plain(decoded: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut it = decoded.split(|&b| b == 0);
    let (authz, authc, pass) = (it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some((authz, authc, pass))
}

/// Sends `334 <prompt>` and reads and decodes the client's response line (`None`: EOF).
/// A line over `limit` is no valid response: [`AuthResponse::Invalid`].
pub async fn auth_challenge(
    conn: &mut Conn,
    prompt: &str,
    limit: usize,
) -> std::io::Result<Option<AuthResponse>> {
    conn.reply(&format!("334 {prompt}"));
    let mut line = Vec::new();
    let l = conn.read_line(&mut line, limit).await?;
    if !l.complete {
        return Ok(None);
    }
    if line.len() < l.total {
        return Ok(Some(AuthResponse::Invalid));
    }
    Ok(Some(decode_auth_response(&String::from_utf8_lossy(&line))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("FROM:<a@b> SIZE=1", "FROM:"),
            Some(("a@b", " SIZE=1"))
        );
        assert_eq!(parse_path("from: <>", "FROM:"), Some(("", "")));
        assert_eq!(parse_path("TO:<a@b>x", "TO:"), None);
        assert_eq!(parse_path("TO:a@b", "TO:"), None);
    }

    #[test]
    fn auth_plain() {
        assert_eq!(decode_auth_response("*"), AuthResponse::Cancelled);
        assert_eq!(decode_auth_response("!!"), AuthResponse::Invalid);
        let AuthResponse::Data(d) = decode_auth_response("AHUAcA==") else {
            panic!("valid base64")
        };
        assert_eq!(split_plain(&d), Some((&b""[..], &b"u"[..], &b"p"[..])));
        assert_eq!(split_plain(b"u\0p"), None);
    }
}
