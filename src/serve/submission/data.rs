//! DATA on the submission port: the body read to the real end of data, then every check
//! (size, bare CR/LF, NUL octets, lines over 998 octets, `From:` domains), the added
//! `Date:`/`Message-ID:`, and the hand-off to the queue: `250` only once the queue says the
//! message is durable.

use std::io;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::session::Session;
use super::{headers, AcceptRequest, Submission};
use crate::smtp_server::{read_data, take_data_txn, Conn, DataEnd, Flow};
use crate::store::queue::NewMessage;

/// A body still arriving after this many times the size limit is cut off.
const OVERSIZE_FACTOR: usize = 4;

/// Longest line SMTP may carry, without its CRLF (RFC 5321 §4.5.3.1.6).
const MAX_LINE: usize = 998;

/// What the reader saw in a body.
#[derive(Default)]
struct Body {
    data: Vec<u8>,
    size: usize,
    too_big: bool,
    cut_off: bool,
    /// A line ended in a bare LF or had a bare CR (SMTP smuggling material).
    bare: bool,
    /// First line with a NUL octet: no relay takes it, so it is refused here rather than
    /// accepted and bounced later (backscatter).
    nul_line: Option<usize>,
    /// First line longer than [`MAX_LINE`] octets, and its length (same reason).
    long_line: Option<(usize, usize)>,
    eight_bit: bool,
}

impl Session {
    pub(super) async fn data(&mut self, conn: &mut Conn, arg: &str) -> io::Result<Flow> {
        if !arg.trim().is_empty() {
            conn.reply("501 5.5.4 DATA takes no parameters");
            return Ok(Flow::Continue);
        }
        let Some(txn) = take_data_txn(conn, &mut self.txn, |t| !t.rcpts.is_empty()) else {
            return Ok(Flow::Continue);
        };
        conn.reply("354 End data with <CR><LF>.<CR><LF>");
        let shared = self.shared.clone();
        let max = shared.settings.max_message_size;
        let cut_off_at = max.saturating_mul(OVERSIZE_FACTOR).max(1 << 20);
        let limit = max.max(shared.settings.max_line) + 8;
        let mut b = Body::default();
        let end = read_data(conn, &mut self.line, limit, |l| {
            b.size += l.size;
            b.eight_bit |= l.eight_bit;
            if !l.crlf || l.bare_cr {
                b.bare = true;
            }
            if l.nul && b.nul_line.is_none() {
                b.nul_line = Some(l.number);
            }
            if l.content_len > MAX_LINE && b.long_line.is_none() {
                b.long_line = Some((l.number, l.content_len));
            }
            if b.size > max {
                b.too_big = true;
                if b.size > cut_off_at {
                    b.cut_off = true;
                    return false;
                }
            }
            // Nothing is kept of a body that will be rejected anyway.
            if b.too_big || b.bare || b.nul_line.is_some() || b.long_line.is_some() {
                b.data = Vec::new();
            } else {
                b.data.extend_from_slice(l.bytes);
            }
            true
        })
        .await?;
        if end == DataEnd::Eof {
            return Ok(Flow::Abort);
        }
        let stats = &shared.stats;
        let reject = |conn: &mut Conn, reply: &str| {
            stats.rejected_messages.fetch_add(1, Ordering::Relaxed);
            conn.reply(reply);
        };
        if b.too_big {
            reject(conn, "552 5.3.4 message size exceeds fixed limit");
            return Ok(if b.cut_off {
                Flow::Close
            } else {
                Flow::Continue
            });
        }
        if b.bare {
            reject(
                conn,
                "550 5.5.2 bare CR or LF in message: lines must end with CRLF",
            );
            return Ok(Flow::Continue);
        }
        // What the priority lane could never hand to a relay is refused now, with the
        // reason: a 250 followed by a DSN would be backscatter.
        if let Some(n) = b.nul_line {
            reject(
                conn,
                &format!("554 5.6.0 line {n} contains a NUL octet, which SMTP cannot carry"),
            );
            return Ok(Flow::Continue);
        }
        if let Some((n, len)) = b.long_line {
            reject(
                conn,
                &format!(
                    "554 5.6.0 line {n} is {len} octets; SMTP allows {MAX_LINE} (RFC 5321 4.5.3.1.6): \
                     encode the part as quoted-printable or base64"
                ),
            );
            return Ok(Flow::Continue);
        }
        if let Some(user) = &self.user {
            match headers::from_domains(&b.data) {
                Err(why) => {
                    reject(conn, &format!("550 5.7.1 {why}"));
                    return Ok(Flow::Continue);
                }
                Ok(domains) if !domains.iter().all(|d| shared.users.may_send_as(user, d)) => {
                    reject(
                        conn,
                        &format!("550 5.7.1 From: domain not permitted for user {user}"),
                    );
                    return Ok(Flow::Continue);
                }
                Ok(_) => {}
            }
        }
        let msg = Submission {
            msg: NewMessage {
                mail_from: txn.from,
                rcpt_to: txn.rcpts,
                // The inbox keeps a bounce as it came; submission completes what clients omit.
                data: if shared.settings.inbox.is_some() {
                    b.data
                } else {
                    headers::add_missing(b.data, &shared.settings.hostname)
                },
                user: self.user.clone(),
                smtputf8: txn.smtputf8,
                eight_bit: txn.body_8bitmime || b.eight_bit,
            },
            client: self.peer,
        };
        match self.enqueue(msg).await {
            Ok(id) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                conn.reply(&format!("250 2.0.0 Ok: queued as {id}"));
            }
            Err(why) => reject(conn, &format!("451 4.3.0 {why}")),
        }
        Ok(Flow::Continue)
    }

    /// Hands the message to the queue and waits for it to be durable (both bounded by the
    /// idle timeout: the client is waiting too).
    async fn enqueue(&self, msg: Submission) -> Result<String, String> {
        let wait = self.shared.settings.idle_timeout;
        let (reply, rx) = oneshot::channel();
        let req = AcceptRequest { msg, reply };
        match tokio::time::timeout(wait, self.shared.accept.send(req)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("queue unavailable, try again later".into()),
            Err(_) => return Err("queue busy, try again later".into()),
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(id))) => Ok(id),
            Ok(Ok(Err(why))) => Err(format!("message not queued: {}", one_line(&why))),
            Ok(Err(_)) => Err("message not queued, try again later".into()),
            Err(_) => Err("queue timed out, try again later".into()),
        }
    }
}

/// A reason safe to put in a reply line (no CR/LF, bounded).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}
