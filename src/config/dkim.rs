//! The `[dkim]` table of a campaign and the `[priority.dkim."domain"]` tables of blast.toml:
//! the same keys (`domain`, `selector`, `key`, `ed25519_selector`, `ed25519_key`, and
//! `[….selectors]` for keys kept for rotation). Keys are parsed here, once, so a bad key
//! is a config error naming the file and line before anything is sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{host_name, Locator};
use crate::error::Result;
use crate::sign::{KeySpec, Signer};

/// `[dkim]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDkim {
    domain: Option<Spanned<String>>,
    selector: Spanned<String>,
    key: Option<Spanned<String>>,
    ed25519_selector: Option<Spanned<String>>,
    ed25519_key: Option<Spanned<String>>,
    /// Other selectors and their key files: published, kept for rotation, never used to
    /// sign until `selector` names one of them.
    #[serde(default)]
    selectors: BTreeMap<String, Spanned<String>>,
}

/// A validated signing configuration.
#[derive(Debug, Clone)]
pub struct DkimSettings {
    /// Where the keys are.
    pub spec: KeySpec,
    /// The parsed keys.
    pub signer: Arc<Signer>,
    /// Something to tell the user (a slow key size), not an error.
    pub warning: Option<String>,
}

/// A selector is one or more dot-separated DNS labels (letters, digits, `-`, not at either
/// end of a label). `blast dkim keygen` checks its `--selector` with this too.
pub(crate) fn check_selector(s: &str) -> std::result::Result<(), String> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !s.is_empty() && s.split('.').all(label) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a selector (DNS labels: letters, digits, '-')"
        ))
    }
}

fn selector(loc: &Locator, v: &Spanned<String>, key: &str) -> Result<String> {
    let s = v.get_ref().trim();
    match check_selector(s) {
        Ok(()) => Ok(s.to_string()),
        Err(m) => loc.err(v.span(), key, m),
    }
}

/// Validates a dkim table; `section` names it in errors (`dkim`, `priority.dkim."acme.example"`);
/// `implied_domain` is `d=` when the table gives none (a priority table is keyed by it).
pub(crate) fn validate(
    loc: &Locator,
    raw: &RawDkim,
    section: &str,
    implied_domain: Option<&str>,
) -> Result<DkimSettings> {
    let k = |name: &str| format!("{section}.{name}");
    let domain = match (&raw.domain, implied_domain) {
        (Some(d), _) => {
            host_name(d.get_ref().trim()).or_else(|m| loc.err(d.span(), &k("domain"), m))?
        }
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            return loc.err(
                raw.selector.span(),
                section,
                "missing `domain` (the d= of the signature)",
            )
        }
    };
    let active = selector(loc, &raw.selector, &k("selector"))?;
    let mut standby = Vec::new();
    let mut active_key = None;
    for (name, path) in &raw.selectors {
        let key = format!("{}.{name}", k("selectors"));
        let n = selector(loc, &Spanned::new(path.span(), name.clone()), &key)?;
        let p = loc.resolve(path.get_ref());
        if n == active {
            active_key = Some((p, path.span()));
        } else {
            standby.push((n, p));
        }
    }
    let (key, key_span) = match (&raw.key, active_key) {
        (Some(v), None) => (loc.resolve(v.get_ref()), v.span()),
        (Some(v), Some(_)) => {
            return loc.err(v.span(), &k("key"), format!("selector {active:?} has a key in both `key` and `selectors`"))
        }
        (None, Some(a)) => a,
        (None, None) => {
            return loc.err(
                raw.selector.span(),
                &k("key"),
                format!("missing: the PEM file of selector {active:?} (`key = \"…\"`, or an entry in `selectors`)"),
            )
        }
    };
    let ed25519 = match (&raw.ed25519_selector, &raw.ed25519_key) {
        (None, None) => None,
        (Some(s), Some(p)) => Some((
            selector(loc, s, &k("ed25519_selector"))?,
            loc.resolve(p.get_ref()),
        )),
        (Some(s), None) => {
            return loc.err(
                s.span(),
                &k("ed25519_key"),
                "missing beside ed25519_selector",
            )
        }
        (None, Some(p)) => {
            return loc.err(
                p.span(),
                &k("ed25519_selector"),
                "missing beside ed25519_key",
            )
        }
    };
    let spec = KeySpec {
        domain,
        selector: active,
        key,
        ed25519,
        standby,
    };
    let signer = Signer::load(&spec).or_else(|m| loc.err(key_span.clone(), &k("key"), m))?;
    let warning = (signer.rsa_bits() > crate::sign::RSA_WARN_BITS).then(|| {
        format!(
            "{}:{}: {}: a {}-bit RSA key signs several times slower than a 2048-bit one; every message costs one signature",
            loc.path.display(),
            loc.line(key_span.start),
            k("key"),
            signer.rsa_bits()
        )
    });
    Ok(DkimSettings {
        spec,
        signer: Arc::new(signer),
        warning,
    })
}

#[cfg(test)]
mod tests {
    use crate::commands::dkim::Generated;

    const BASE: &str = "[campaign]\nid = \"c\"\nfrom = \"news@acme.example\"\nsubject = \"s\"\ntext = \"t.txt\"\nlists = [\"l.csv\"]\n[lane]\ntransport = \"outbox:out\"\n";

    fn load(dir: &std::path::Path, extra: &str) -> Result<crate::config::Settings, String> {
        let p = dir.join("c.toml");
        std::fs::write(&p, format!("{BASE}{extra}")).unwrap();
        crate::config::load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn dkim_table_errors_name_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("t.txt"), "hi").unwrap();
        std::fs::write(d.path().join("k.pem"), Generated::rsa(2048).unwrap().pem).unwrap();
        std::fs::write(d.path().join("ed.pem"), Generated::ed25519().unwrap().pem).unwrap();
        std::fs::write(d.path().join("junk.pem"), "not a key").unwrap();
        let ok = load(
            d.path(),
            "[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = \"k.pem\"\n",
        )
        .unwrap();
        let dk = ok.dkim.unwrap();
        assert_eq!(dk.spec.selector, "s1");
        assert_eq!(dk.signer.rsa_bits(), 2048);
        assert!(dk.warning.is_none());
        // Rotation: the active selector's key from [dkim.selectors], the other on standby.
        let rot = load(
            d.path(),
            "[dkim]\ndomain = \"acme.example\"\nselector = \"s2\"\n[dkim.selectors]\ns1 = \"k.pem\"\ns2 = \"k.pem\"\n",
        )
        .unwrap()
        .dkim
        .unwrap();
        assert_eq!(rot.spec.standby.len(), 1);
        assert_eq!(rot.spec.standby[0].0, "s1");
        let e = |extra: &str| load(d.path(), extra).unwrap_err();
        let m = e("[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = \"junk.pem\"\n");
        assert!(
            m.contains("c.toml:12: dkim.key:") && m.contains("not a PEM private key"),
            "{m}"
        );
        let m = e("[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = \"missing.pem\"\n");
        assert!(m.contains("dkim.key") && m.contains("cannot read"), "{m}");
        let m = e("[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\n");
        assert!(m.contains("dkim.key: missing"), "{m}");
        let m = e("[dkim]\ndomain = \"acme.example\"\nselector = \"bad sel\"\nkey = \"k.pem\"\n");
        assert!(m.contains("dkim.selector"), "{m}");
        let m = e("[dkim]\ndomain = \"acme.example\"\nselector = \"-s1\"\nkey = \"k.pem\"\n");
        assert!(
            m.contains("dkim.selector"),
            "the same label rules as keygen: {m}"
        );
        let m = e("[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = \"k.pem\"\ned25519_selector = \"e1\"\n");
        assert!(m.contains("dkim.ed25519_key: missing"), "{m}");
        let m = e("[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = \"ed.pem\"\n");
        assert!(
            m.contains("not a usable RSA key"),
            "an Ed25519 key as the RSA key: {m}"
        );
        let m = e("[dkim]\nselector = \"s1\"\nkey = \"k.pem\"\n");
        assert!(m.contains("missing `domain`"), "{m}");
        let m = e("[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = \"k.pem\"\nl = 1\n");
        assert!(m.contains("unknown field"), "{m}");
    }
}
