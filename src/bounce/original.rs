//! The returned original (an attached message/rfc822 or text/rfc822-headers, or the headers
//! quoted after a bounce's "copy of the message" line): its Message-ID, its recipient, and a
//! recipient-token candidate (`bounces+TOKEN@` in an envelope address, or a Message-ID whose
//! left part is a token). Tokens are only extracted here; verifying them is
//! [`crate::token`]'s job.

use super::{dsn, mime::Parts, scan, text};
use crate::token::TOKEN_LEN;

/// What the returned original tells.
#[derive(Debug, Default, Clone)]
pub struct Original {
    /// Its Message-ID, without `<>`.
    pub message_id: Option<String>,
    /// The first address of its `To`.
    pub to: Option<String>,
    /// A recipient-token candidate.
    pub verp_token: Option<String>,
}

/// The first address in header `name` of a header block.
pub fn header_address(headers: &str, name: &str) -> Option<String> {
    dsn::fields(headers)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| scan::address_in(&v))
}

fn is_token(s: &str) -> bool {
    s.len() == TOKEN_LEN && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
}

/// The token in `bounces+TOKEN@domain` (any tag before `+`), lower-cased, when it has a
/// token's shape.
fn verp_tag(addr: &str) -> Option<String> {
    let local = addr.split('@').next()?;
    let (_, tag) = local.split_once('+')?;
    let tag = tag.to_ascii_lowercase();
    is_token(&tag).then_some(tag)
}

impl Original {
    /// Finds the original in the flattened message.
    pub fn find(parts: &Parts) -> Original {
        let headers: &str = if parts.original.is_empty() {
            text::split_original(&parts.text).1.unwrap_or("")
        } else {
            &parts.original
        };
        let fields = dsn::fields(scan::prefix(headers, 64 * 1024));
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let message_id = get("message-id").map(|v| {
            let v = v.trim();
            let v = v.strip_prefix('<').unwrap_or(v);
            let v = v.split('>').next().unwrap_or(v);
            scan::prefix(v.trim(), 250).to_owned()
        });
        let message_id = message_id.filter(|m| !m.is_empty());
        let to = get("to").and_then(scan::address_in);
        let envelope = parts
            .to
            .iter()
            .chain(&parts.envelope)
            .cloned()
            .chain(get("return-path").and_then(scan::address_in));
        let verp_token = envelope.filter_map(|a| verp_tag(&a)).next().or_else(|| {
            let id = message_id.as_deref()?;
            let left = id.split('@').next()?;
            is_token(left).then(|| left.to_owned())
        });
        Original {
            message_id,
            to,
            verp_token,
        }
    }
}
