//! The organisational domain (RFC 7489 §3.2): the registrable domain under the Public Suffix
//! List, from the `psl` crate (the list compiled in, so no download at run time and the same
//! answer on every machine). DMARC's policy lookup and alignment, the sender rules and the
//! doctor all ask here, so they never disagree about what "the same organisation" is.

/// The organisational domain of `domain` (lower case, no trailing dot): `acme.co.uk` for
/// `news.mail.acme.co.uk`. A name that is itself a public suffix (or has no registrable
/// part) is its own organisational domain. A TLD the list does not know counts as a
/// one-label suffix (the list's implicit `*` rule), so `news.acme.test` gives `acme.test`.
pub fn organisational(domain: &str) -> String {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    match psl::domain_str(&d) {
        Some(org) => org.to_string(),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::organisational;

    #[test]
    fn registrable_domains_under_the_public_suffix_list() {
        assert_eq!(organisational("news.acme.example"), "acme.example");
        assert_eq!(organisational("acme.example"), "acme.example");
        assert_eq!(organisational("Mail.Acme.CO.UK."), "acme.co.uk");
        assert_eq!(organisational("sub.acme.co.uk"), "acme.co.uk");
        assert_ne!(organisational("acme.co.uk"), organisational("other.co.uk"));
        // Suffixes a two-label heuristic gets wrong: private and deeper public suffixes.
        assert_eq!(organisational("a.b.acme.github.io"), "acme.github.io");
        assert_eq!(organisational("x.city.kawasaki.jp"), "city.kawasaki.jp");
        assert_eq!(organisational("shop.acme.com.br"), "acme.com.br");
        assert_eq!(organisational("news.acme.test"), "acme.test");
        // A public suffix alone has no registrable part: itself.
        assert_eq!(organisational("co.uk"), "co.uk");
    }
}
