//! Delivery status notifications (RFC 3464): when the priority lane gives up on recipients
//! (a 5xx, or the retry schedule ran out), the envelope sender gets a bounce — from the null
//! sender, so a bounce can never bounce back (RFC 5321 §6.1).

use crate::classify::parse_enhanced;
use crate::store::queue::{format_id, Entry, NewMessage, RcptStatus};

/// At most this much of the original header block is returned.
const MAX_HEADERS: usize = 64 * 1024;

/// Builds the DSN for `failed` (indexes into `entry.rcpts`) of a message whose bytes are
/// `data`.
pub fn build(hostname: &str, entry: &Entry, failed: &[usize], data: &[u8]) -> NewMessage {
    let now = chrono::Utc::now();
    let boundary = format!("=_blast_dsn_{}", format_id(entry.id));
    let id = format!(
        "<dsn.{}.{}@{}>",
        format_id(entry.id),
        now.timestamp_millis(),
        hostname
    );
    let arrival = chrono::DateTime::from_timestamp_millis(entry.received_ms as i64)
        .unwrap_or(now)
        .to_rfc2822();
    let mut human = String::new();
    let mut per_rcpt = String::new();
    for &i in failed {
        let r = &entry.rcpts[i];
        // Replies are ours or a relay's; keep them on one line with no control characters.
        let reply: String = r
            .last_reply
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(900)
            .collect();
        let status = parse_enhanced(&reply)
            .map(|e| e.to_string())
            .unwrap_or_else(|| "5.0.0".into());
        let why = if r.status == RcptStatus::Failed {
            "gave up after retrying"
        } else {
            "the receiving server refused it"
        };
        human.push_str(&format!("<{}>: {why}:\r\n    {reply}\r\n\r\n", r.addr));
        per_rcpt.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {reply}\r\n",
            r.addr
        ));
    }
    let headers_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(data.len())
        .min(MAX_HEADERS);
    let original_headers = String::from_utf8_lossy(&data[..headers_end]);
    let msg = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
To: <{to}>\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Date: {date}\r\n\
Message-ID: {id}\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\
\r\n\
This is a delivery status notification (RFC 3464).\r\n\
\r\n\
--{boundary}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Your message {qid} could not be delivered to one or more recipients.\r\n\
\r\n\
{human}\
--{boundary}\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; {hostname}\r\n\
X-Blast-Queue-ID: {qid}\r\n\
Arrival-Date: {arrival}\r\n\
{per_rcpt}\
\r\n\
--{boundary}\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
{original_headers}\
--{boundary}--\r\n",
        to = entry.mail_from,
        date = now.to_rfc2822(),
        qid = format_id(entry.id),
    );
    NewMessage {
        mail_from: String::new(),
        rcpt_to: vec![entry.mail_from.clone()],
        data: msg.into_bytes(),
        user: None,
        smtputf8: !entry.mail_from.is_ascii(),
        eight_bit: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::Rcpt;

    #[test]
    fn dsn_names_the_failed_recipient_and_goes_to_the_sender_from_null() {
        let e = Entry {
            id: 7,
            mail_from: "app@acme.example".into(),
            rcpts: vec![
                Rcpt {
                    addr: "gone@x.example".into(),
                    status: RcptStatus::Bounced,
                    attempts: 1,
                    next_ms: 0,
                    last_reply: "550 5.1.1 user unknown\r\nInjected: yes".into(),
                },
                Rcpt {
                    addr: "ok@x.example".into(),
                    status: RcptStatus::Sent,
                    attempts: 1,
                    next_ms: 0,
                    last_reply: "250 ok".into(),
                },
            ],
            received_ms: 1_700_000_000_000,
            user: None,
            smtputf8: false,
            eight_bit: false,
            size: 10,
        };
        let d = build(
            "mx.acme.example",
            &e,
            &[0],
            b"Subject: reset\r\nFrom: a@b\r\n\r\nsecret body\r\n",
        );
        assert_eq!(d.mail_from, "");
        assert_eq!(d.rcpt_to, vec!["app@acme.example"]);
        let text = String::from_utf8(d.data).unwrap();
        assert!(text.contains(
            "Final-Recipient: rfc822; gone@x.example\r\nAction: failed\r\nStatus: 5.1.1"
        ));
        assert!(!text.contains("ok@x.example"));
        assert!(text.contains("Subject: reset"));
        assert!(!text.contains("secret body"), "only headers are returned");
        assert!(
            !text.contains("\r\nInjected: yes"),
            "reply text cannot add header lines"
        );
        assert!(text.lines().all(|l| l.len() <= 998));
    }
}
