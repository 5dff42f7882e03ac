//! The domains of the links in a campaign's templates, for the domain blocklists: every
//! `http://` / `https://` URL in the text and HTML sources (an `href="…"` is a URL like any
//! other), by host. A host that is or contains a handlebars placeholder (`{{link}}`,
//! `https://{{host}}/x`) is not known until rendering and is skipped; so is an IP literal
//! (the IP blocklists are another check).

use std::path::Path;

/// One link domain and where it first appears (`t.html:12`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDomain {
    /// Lower-case A-label host, no trailing dot.
    pub domain: String,
    /// `FILE:LINE` of its first link.
    pub at: String,
}

/// The distinct link domains of `sources` (path, text), in order of first appearance.
pub fn domains<'a>(sources: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Vec<LinkDomain> {
    let mut out: Vec<LinkDomain> = Vec::new();
    for (path, src) in sources {
        let file = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        for (n, line) in src.lines().enumerate() {
            for host in hosts(line) {
                if !out.iter().any(|d| d.domain == host) {
                    out.push(LinkDomain {
                        domain: host,
                        at: format!("{file}:{}", n + 1),
                    });
                }
            }
        }
    }
    out
}

/// The host of every http(s) URL on `line` that is a domain name.
fn hosts(line: &str) -> Vec<String> {
    let lower = line.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = lower[from..].find("http") {
        let start = from + i;
        from = start + 4;
        let rest = &line[start..];
        let after = if lower[start..].starts_with("https://") {
            &rest[8..]
        } else if lower[start..].starts_with("http://") {
            &rest[7..]
        } else {
            continue;
        };
        // The authority ends at the path, query, fragment, port, or where the URL ends in
        // its surroundings (quotes, brackets, whitespace, markdown, punctuation).
        let end = after
            .find(|c: char| c.is_whitespace() || "/?#:\"'<>()[]|\\,;`".contains(c))
            .unwrap_or(after.len());
        let authority = &after[..end];
        // userinfo@host: the host is after the last `@`.
        let host = authority.rsplit('@').next().unwrap_or(authority);
        if let Some(h) = domain(host) {
            out.push(h);
        }
    }
    out
}

/// `host` as a lower-case A-label domain, or `None` for a placeholder, an IP literal or
/// something that is not a domain name.
fn domain(host: &str) -> Option<String> {
    if host.contains('{') || host.contains('}') {
        return None;
    }
    let host = host.trim_end_matches(['.', '!']).trim_end_matches('.');
    if host.is_empty() || !host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let ascii = idna::domain_to_ascii(host).ok()?.to_ascii_lowercase();
    let ok = ascii.split('.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    // A last label of digits only is an IPv4 address spelled oddly, not a domain.
    let tld_alpha = ascii
        .rsplit('.')
        .next()
        .is_some_and(|t| !t.bytes().all(|b| b.is_ascii_digit()));
    (ok && tld_alpha).then_some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(src: &str) -> Vec<String> {
        domains([(Path::new("dir/t.html"), src)])
            .into_iter()
            .map(|d| d.domain)
            .collect()
    }

    #[test]
    fn hosts_of_urls_in_text_and_html() {
        let src = "Hi {{first_name}}, see https://Shop.Acme.test/a?b=1.\n\
                   <a href=\"http://track.example.net:8080/x\">x</a> \
                   <a href='https://user@cdn.example.org'>y</a>\n\
                   (https://shop.acme.test/again) [z](https://docs.example.com/p#f), \
                   HTTPS://UPPER.example.com.";
        assert_eq!(
            of(src),
            [
                "shop.acme.test",
                "track.example.net",
                "cdn.example.org",
                "docs.example.com",
                "upper.example.com"
            ]
        );
        let d = domains([(Path::new("dir/t.html"), src)]);
        assert_eq!(d[0].at, "t.html:1");
        assert_eq!(d[1].at, "t.html:2");
    }

    #[test]
    fn placeholders_ip_literals_and_non_urls_are_skipped() {
        let src = "<a href=\"{{unsubscribe_url}}\">u</a> https://{{host}}/x \
                   https://{{sub}}.acme.test/ http://127.0.0.1/x http://[::1]/ \
                   http://localhost/ see httpbin and http:/broken mailto:a@b.test \
                   https://ok.example.com/{{token}}";
        assert_eq!(of(src), ["ok.example.com"]);
    }

    #[test]
    fn international_hosts_become_a_labels() {
        assert_eq!(of("https://bücher.example/"), ["xn--bcher-kva.example"]);
    }
}
