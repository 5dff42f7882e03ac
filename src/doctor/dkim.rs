//! DKIM: the TXT record at `selector._domainkey.domain` exists and its `p=` is the public
//! half of the configured private key (RSA, and the optional Ed25519).

use super::{DkimKey, Dns, Row, Target};
use crate::sign::KeySpec;

use base64::Engine;
use rustls::pki_types::PrivateKeyDer;

/// The public keys of `spec`'s signing keys, as their records should carry them.
pub fn configured(spec: &KeySpec) -> Result<Vec<DkimKey>, String> {
    let mut out = Vec::new();
    let der = crate::sign::read_key(&spec.key)?;
    let pair = match &der {
        PrivateKeyDer::Pkcs1(k) => ring::rsa::KeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => ring::rsa::KeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => return Err(format!("{}: not an RSA key", spec.key.display())),
    }
    .map_err(|e| format!("{}: not a usable RSA key: {e}", spec.key.display()))?;
    out.push(DkimKey {
        domain: spec.domain.to_ascii_lowercase(),
        selector: spec.selector.clone(),
        kind: "rsa",
        public: crate::commands::dkim::rsa_spki(pair.public().as_ref()),
    });
    if let Some((sel, path)) = &spec.ed25519 {
        let der = crate::sign::read_key(path)?;
        let PrivateKeyDer::Pkcs8(k) = &der else {
            return Err(format!("{}: an Ed25519 key must be PKCS#8", path.display()));
        };
        use ring::signature::KeyPair;
        let pair =
            ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der())
                .map_err(|e| format!("{}: not a usable Ed25519 key: {e}", path.display()))?;
        out.push(DkimKey {
            domain: spec.domain.to_ascii_lowercase(),
            selector: sel.clone(),
            kind: "ed25519",
            public: pair.public_key().as_ref().to_vec(),
        });
    }
    Ok(out)
}

/// The value of tag `name` in a `tag=value; …` record.
pub fn tag<'a>(rec: &'a str, name: &str) -> Option<&'a str> {
    rec.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The DKIM rows.
pub async fn check(t: &Target, dns: &Dns) -> Vec<Row> {
    if t.dkim.is_empty() {
        return vec![Row::fail(
            "dkim",
            "no [dkim] keys: messages go out unsigned",
            "`blast dkim keygen`, publish its record, add [dkim] to the campaign",
        )];
    }
    let mut rows = Vec::new();
    for k in &t.dkim {
        let at = format!("{}._domainkey.{}", k.selector, k.domain);
        let name = format!("dkim {at}");
        let want = base64::engine::general_purpose::STANDARD.encode(&k.public);
        let publish = format!(
            "publish TXT \"v=DKIM1; k={}; p={want}\" at {at} (`blast dkim keygen` prints it)",
            k.kind
        );
        let recs = match dns.txt(&at).await {
            Err(e) => {
                rows.push(Row::unchecked(name, e));
                continue;
            }
            Ok(r) => r,
        };
        let Some(rec) = recs.iter().find(|r| tag(r, "p").is_some()) else {
            rows.push(Row::fail(name, format!("no DKIM record at {at}"), publish));
            continue;
        };
        let p: String = tag(rec, "p")
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let got = base64::engine::general_purpose::STANDARD
            .decode(&p)
            .unwrap_or_default();
        if p.is_empty() {
            rows.push(Row::fail(
                name,
                format!("the key at {at} is revoked (empty p=)"),
                publish,
            ));
        } else if got == k.public {
            rows.push(Row::pass(
                name,
                format!("p= matches the configured {} key", k.kind),
            ));
        } else {
            rows.push(Row::fail(
                name,
                format!(
                    "key mismatch: p= at {at} is not the configured {} key's public key",
                    k.kind
                ),
                publish,
            ));
        }
    }
    rows
}
