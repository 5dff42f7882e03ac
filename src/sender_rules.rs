//! What a bulk sender must get right before anything goes out (Gmail's and Yahoo's 2024
//! sender rules, RFC 8058): an aligned DKIM signature, one-click unsubscribe covered by it,
//! an https unsubscribe URL. `blast check` and `blast send` apply the same rules: errors stop
//! both (exit 2, nothing sent), warnings are printed.

use crate::config::Settings;

/// The verdict on a campaign as it would be sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Each stops the send.
    pub errors: Vec<String>,
    /// Each is printed.
    pub warnings: Vec<String>,
}

/// The organisational domain (RFC 7489 §3.2) of `domain`, by the Public Suffix List.
pub use crate::dns::organisational;

/// Whether a template source shows the reader a way to unsubscribe.
fn shows_unsubscribe(src: &str) -> bool {
    src.contains("unsubscribe_url") || src.to_ascii_lowercase().contains("unsubscribe")
}

/// Applies the rules to `s` as it would be sent (its tokens come from `--config`).
pub fn judge(s: &Settings) -> Verdict {
    let mut v = Verdict::default();
    let file = s.file.display();
    let from = s.from.domain().unwrap_or_default().to_ascii_lowercase();
    match &s.dkim {
        None => v.warnings.push(format!(
            "{file}: messages go out unsigned: Gmail and Yahoo reject or spam-folder bulk mail without an aligned DKIM signature; add [dkim] (keys from `blast dkim keygen`)"
        )),
        Some(d) => {
            if organisational(&d.spec.domain) != organisational(&from) {
                v.errors.push(format!(
                    "{file}: dkim.domain {} is not aligned with the From domain {from} (DMARC needs the same organisational domain)",
                    d.spec.domain
                ));
            }
            if let Some(w) = &d.warning {
                v.warnings.push(w.clone());
            }
        }
    }
    match &s.tokens {
        None => v.warnings.push(format!(
            "{file}: messages go out without List-Unsubscribe (no tokens): send with --config blast.toml whose [serve] secret_file, [unsubscribe] url and [bounces] domain are set"
        )),
        Some(t) => {
            match &t.unsubscribe_url {
                None => v.warnings.push(format!(
                    "{file}: no one-click unsubscribe: set [unsubscribe] url in blast.toml (Gmail and Yahoo require List-Unsubscribe-Post for bulk mail)"
                )),
                Some(u) => {
                    if !u.starts_with("https://") {
                        v.errors.push(format!(
                            "{file}: the unsubscribe URL {u} is not https (RFC 8058 requires an https URI for one-click)"
                        ));
                    }
                    if s.dkim.is_none() {
                        v.errors.push(format!(
                            "{file}: List-Unsubscribe-Post would be sent without a DKIM signature covering it (RFC 8058 §4): add [dkim], or remove [unsubscribe] url from blast.toml"
                        ));
                    }
                }
            }
            if t.bounce_domain.is_none() {
                v.warnings.push(format!(
                    "{file}: no [bounces] domain in blast.toml: no VERP return path and no mailto: unsubscribe; bounces go to the From address"
                ));
            }
        }
    }
    if s.track_clicks {
        match s.tokens.as_ref().and_then(|t| t.click_url.as_deref()) {
            None => v.errors.push(format!(
                "{file}: campaign.track_clicks needs [tracking] url in blast.toml (send with --config blast.toml): links go through serve's redirect"
            )),
            Some(u) => {
                let host = u["https://".len()..]
                    .split(['/', ':'])
                    .next()
                    .unwrap_or_default();
                if organisational(host) != organisational(&from) {
                    v.errors.push(format!(
                        "{file}: the tracking host {host} is not aligned with the From domain {from}: links to another organisation's domain are a phishing signal; use a host under {}",
                        organisational(&from)
                    ));
                }
            }
        }
        if s.html.is_none() {
            v.warnings.push(format!(
                "{file}: campaign.track_clicks: no html part, nothing to track (text links are not rewritten)"
            ));
        }
    }
    for (part, src) in [("text", &s.text), ("html", &s.html)] {
        if let Some((path, src)) = src {
            if !shows_unsubscribe(src) {
                v.warnings.push(format!(
                    "{}: the {part} body has no visible unsubscribe link (use {{{{unsubscribe_url}}}})",
                    path.display()
                ));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisational_domains() {
        assert_eq!(organisational("news.acme.example"), "acme.example");
        assert_eq!(organisational("acme.example"), "acme.example");
        assert_eq!(organisational("mail.acme.co.uk"), "acme.co.uk");
        assert_ne!(organisational("acme.co.uk"), organisational("other.co.uk"));
    }
}
