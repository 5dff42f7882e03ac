//! Click tracking (`[campaign] track_clicks = true`): each `http(s)` link of the HTML part is
//! rewritten to `blast serve`'s redirect, `[tracking] url` + `TOKEN?u=URL`, where the URL is
//! base64url and the token ([`Purpose::Click`]) names the recipient and the run and is bound
//! to exactly that URL: a link whose URL or token was changed redirects nowhere (404), so
//! the redirect can never be used to send people elsewhere (no open redirect).
//!
//! Left alone: `mailto:` and other schemes, the unsubscribe link (a tracked unsubscribe link
//! would break one-click and look like phishing), and the text part (rewritten text links
//! are long and read as spam). No open pixel: since Apple Mail Privacy Protection most
//! "opens" are proxies.

use base64::Engine;

use crate::token::{Keys, Purpose, Token};

/// The longest URL rewritten (anything longer is left as it is).
const MAX_URL: usize = 2048;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// What [`rewrite`] needs for one recipient.
pub struct Tracker<'a> {
    /// The token keys.
    pub keys: &'a Keys,
    /// `[tracking] url`, ending in `/`.
    pub base: &'a str,
    /// The recipient id.
    pub rid: u64,
    /// The run id.
    pub run: u32,
    /// URLs never rewritten (the unsubscribe link).
    pub skip: Option<&'a str>,
}

impl Tracker<'_> {
    /// The redirect URL for `url`.
    pub fn link(&self, url: &str) -> String {
        let token = self
            .keys
            .issue_bound(Purpose::Click, self.rid, self.run, url.as_bytes());
        format!("{}{token}?u={}", self.base, b64().encode(url))
    }
}

/// Decodes the HTML entities a URL in an attribute may carry (`&amp;` is the one that
/// matters: the browser follows the decoded URL, so that is what the redirect must send to).
fn unescape(v: &str) -> String {
    v.replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// Rewrites the `href` of every `http://` and `https://` link in `html`.
pub fn rewrite(html: &str, t: &Tracker) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() + 256);
    let mut at = 0;
    while let Some(i) = lower[at..].find("href") {
        let start = at + i;
        let mut j = start + 4;
        let bytes = lower.as_bytes();
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'=' {
            out.push_str(&html[at..start + 4]);
            at = start + 4;
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let quote = bytes.get(j).copied();
        let (v_start, v_end) = match quote {
            Some(q @ (b'"' | b'\'')) => match lower[j + 1..].find(q as char) {
                Some(e) => (j + 1, j + 1 + e),
                None => break,
            },
            _ => {
                let e = lower[j..]
                    .find(|c: char| c.is_ascii_whitespace() || c == '>')
                    .unwrap_or(lower.len() - j);
                (j, j + e)
            }
        };
        let raw = &html[v_start..v_end];
        let url = unescape(raw.trim());
        let lurl = url.to_ascii_lowercase();
        let tracked = (lurl.starts_with("http://") || lurl.starts_with("https://"))
            && url.len() <= MAX_URL
            && !url.contains("{{")
            && t.skip.is_none_or(|s| !url.starts_with(s));
        out.push_str(&html[at..v_start]);
        if tracked {
            out.push_str(&t.link(&url));
        } else {
            out.push_str(raw);
        }
        at = v_end;
    }
    out.push_str(&html[at..]);
    out
}

/// Checks a redirect's token and URL: the recipient's token and the URL to send them to,
/// or `None` (tampered, forged, not a click token).
pub fn verify(keys: &Keys, token: &str, u: &str) -> Option<(Token, String)> {
    let url = String::from_utf8(b64().decode(u.trim()).ok()?).ok()?;
    let lurl = url.to_ascii_lowercase();
    if !(lurl.starts_with("http://") || lurl.starts_with("https://"))
        || url.len() > MAX_URL
        || url.contains(['\r', '\n'])
    {
        return None;
    }
    let t = keys
        .verify_bound(Purpose::Click, token, url.as_bytes())
        .ok()?;
    Some((t, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::parse("1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n").unwrap()
    }

    #[test]
    fn rewrites_http_links_only_and_round_trips() {
        let k = keys();
        let t = Tracker {
            keys: &k,
            base: "https://click.acme.example/c/",
            rid: 7,
            run: 9,
            skip: Some("https://news.acme.example/u/"),
        };
        let html = "<a href=\"https://shop.acme.example/a?x=1&amp;y=2\">A</a> <A HREF='http://b.example/'>B</A> \
                    <a href=mailto:x@y.example>m</a> <a href=\"https://news.acme.example/u/TOKEN\">unsub</a> \
                    <p>href is a word</p> <a href=https://c.example/z>C</a>";
        let out = rewrite(html, &t);
        assert_eq!(
            out.matches("https://click.acme.example/c/").count(),
            3,
            "{out}"
        );
        assert!(
            out.contains("mailto:x@y.example") && out.contains("https://news.acme.example/u/TOKEN")
        );
        assert!(out.contains("<p>href is a word</p>"));
        // Each rewritten link verifies to its own URL, entity-decoded.
        let mut urls = Vec::new();
        for part in out.split("https://click.acme.example/c/").skip(1) {
            let (token, rest) = part.split_once("?u=").unwrap();
            let u: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            let (tok, url) = verify(&k, token, &u).expect("verifies");
            assert_eq!((tok.rid, tok.run), (7, 9));
            urls.push(url);
        }
        assert_eq!(
            urls,
            [
                "https://shop.acme.example/a?x=1&y=2",
                "http://b.example/",
                "https://c.example/z"
            ]
        );
    }

    #[test]
    fn a_changed_url_or_token_verifies_nothing() {
        let k = keys();
        let t = Tracker {
            keys: &k,
            base: "https://c.example/c/",
            rid: 1,
            run: 2,
            skip: None,
        };
        let link = t.link("https://shop.example/");
        let (token, u) = link["https://c.example/c/".len()..]
            .split_once("?u=")
            .unwrap();
        assert!(verify(&k, token, u).is_some());
        let evil = b64().encode("https://evil.example/");
        assert!(verify(&k, token, &evil).is_none(), "no open redirect");
        let other = k.issue(Purpose::Unsubscribe, 1, 2);
        assert!(verify(&k, &other, u).is_none(), "another purpose");
        assert!(verify(&k, token, "!!").is_none());
        let js = b64().encode("javascript:alert(1)");
        let jt = k.issue_bound(Purpose::Click, 1, 2, b"javascript:alert(1)");
        assert!(verify(&k, &jt, &js).is_none(), "http(s) only");
    }
}
