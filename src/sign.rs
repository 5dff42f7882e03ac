//! DKIM signing (RFC 6376, RFC 8463) through mail-auth: an RSA-SHA256 signature always, and an
//! optional second Ed25519-SHA256 one (never Ed25519 alone: many receivers still verify
//! only RSA). relaxed/relaxed, no `l=` (a body-length limit lets anyone append content).
//!
//! Keys are parsed once ([`Signer::load`]) and shared by every message; a message is signed
//! by [`Signer::sign`], which returns the `DKIM-Signature` header lines to put in front of
//! it. The headers signed are the ones in [`SIGNED`] the message carries, plus one more
//! instance of each of [`OVERSIGNED`] (RFC 6376 §8.15: an extra name in `h=` for a header
//! that is not there signs its absence, so nobody can add a second `From` or a
//! `List-Unsubscribe` of their own without breaking the signature).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_auth::common::crypto::{Algorithm, Ed25519Key, HashImpl, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// Headers signed when the message has them.
pub const SIGNED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// Headers listed once more than the message has them.
pub const OVERSIGNED: &[&str] = &[
    "From",
    "Subject",
    "Reply-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// RSA keys above this size are slow to sign with (4096 bits: several times slower).
pub const RSA_WARN_BITS: usize = 2048;

/// A key shared between the signer built per message and every other message.
struct Shared<K>(Arc<K>);

impl<K: SigningKey> SigningKey for Shared<K> {
    type Hasher = K::Hasher;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// One selector's key.
struct Selector<K> {
    name: String,
    key: Arc<K>,
}

/// The signing keys of one domain (`d=`).
pub struct Signer {
    domain: String,
    rsa: Selector<RsaKey<Sha256>>,
    rsa_bits: usize,
    ed25519: Option<Selector<Ed25519Key>>,
}

impl fmt::Debug for Signer {
    // Never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("domain", &self.domain)
            .field("selector", &self.rsa.name)
            .field("rsa_bits", &self.rsa_bits)
            .field("ed25519_selector", &self.ed25519.as_ref().map(|s| &s.name))
            .finish()
    }
}

/// Where a domain's keys are, as configured (`[dkim]` of a campaign, or one
/// `[priority.dkim."domain"]` of blast.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// `d=`.
    pub domain: String,
    /// The active RSA selector.
    pub selector: String,
    /// Its PEM file (PKCS#1 or PKCS#8).
    pub key: PathBuf,
    /// The optional second signature: selector and PEM file (PKCS#8).
    pub ed25519: Option<(String, PathBuf)>,
    /// Other selectors kept for rotation (published, never used to sign): name, PEM file.
    pub standby: Vec<(String, PathBuf)>,
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "{}: not a PEM private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`)",
            path.display()
        )
    })
}

/// Loads an RSA key file; returns the key and its size in bits.
pub fn load_rsa(path: &Path) -> Result<(RsaKey<Sha256>, usize), String> {
    let der = read_key(path)?;
    let key = RsaKey::<Sha256>::from_key_der(der)
        .map_err(|e| format!("{}: not a usable RSA key: {e}", path.display()))?;
    // One signature tells the modulus size (and that the key signs at all).
    let bits = key
        .sign(&b"blast"[..])
        .map_err(|e| format!("{}: cannot sign with this key: {e}", path.display()))?
        .len()
        * 8;
    if bits < 1024 {
        return Err(format!(
            "{}: a {bits}-bit RSA key is too short (receivers ignore signatures under 1024 bits; use 2048)",
            path.display()
        ));
    }
    Ok((key, bits))
}

/// Loads an Ed25519 key file (PKCS#8, as `blast dkim keygen --ed25519` or
/// `openssl genpkey -algorithm ed25519` write it).
pub fn load_ed25519(path: &Path) -> Result<Ed25519Key, String> {
    let der = read_key(path)?;
    let bytes = match &der {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
        _ => {
            return Err(format!(
                "{}: an Ed25519 key must be PKCS#8 (`PRIVATE KEY`)",
                path.display()
            ))
        }
    };
    Ed25519Key::from_pkcs8_maybe_unchecked_der(bytes)
        .map_err(|e| format!("{}: not a usable Ed25519 key: {e}", path.display()))
}

impl Signer {
    /// Parses the keys of `spec` (standby keys too, so a broken one is found before it is
    /// made active).
    pub fn load(spec: &KeySpec) -> Result<Signer, String> {
        let (rsa, rsa_bits) = load_rsa(&spec.key)?;
        for (name, path) in &spec.standby {
            load_rsa(path).map_err(|e| format!("standby selector {name}: {e}"))?;
        }
        let ed25519 = match &spec.ed25519 {
            None => None,
            Some((name, path)) => Some(Selector {
                name: name.clone(),
                key: Arc::new(load_ed25519(path)?),
            }),
        };
        Ok(Signer {
            domain: spec.domain.clone(),
            rsa: Selector {
                name: spec.selector.clone(),
                key: Arc::new(rsa),
            },
            rsa_bits,
            ed25519,
        })
    }

    /// `d=`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The RSA key's size.
    pub fn rsa_bits(&self) -> usize {
        self.rsa_bits
    }

    /// The `DKIM-Signature` header lines (CRLF-terminated, Ed25519 first when configured)
    /// to put in front of `msg` (CRLF line endings, not dot-stuffed).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let h = headers_to_sign(msg);
        if h.is_empty() {
            return Err("message has no header to sign".into());
        }
        let mut out = Vec::with_capacity(1024);
        if let Some(ed) = &self.ed25519 {
            sign_with(&mut out, &self.domain, ed, &h, msg)?;
        }
        sign_with(&mut out, &self.domain, &self.rsa, &h, msg)?;
        Ok(out)
    }

    /// `msg` with its signatures in front.
    pub fn signed(&self, msg: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut out = self.sign(&msg)?;
        out.reserve(msg.len());
        out.extend_from_slice(&msg);
        Ok(out)
    }
}

fn sign_with<K>(
    out: &mut Vec<u8>,
    domain: &str,
    sel: &Selector<K>,
    h: &[&str],
    msg: &[u8],
) -> Result<(), String>
where
    K: SigningKey,
    K::Hasher: HashImpl,
{
    let sig = DkimSigner::from_key(Shared(sel.key.clone()))
        .domain(domain)
        .selector(sel.name.as_str())
        .headers(h.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(msg)
        .map_err(|e| format!("DKIM signing failed: {e}"))?;
    out.extend_from_slice(unfold_before_final_semicolon(&sig.to_header()).as_bytes());
    Ok(())
}

/// mail-auth folds the header when the `b=` value fills a line exactly, putting `CRLF TAB`
/// between the value and the closing `;` — whitespace it did not hash (it hashed `b=;`).
/// Verifiers that keep the whitespace outside the tag value (dkimpy; RFC 6376 §3.5 puts
/// `[FWS]` after the value) then hash `b= ;` and the signature fails, for every message
/// whose `h=` happens to put `b=` there. With nothing between the value and `;`, every
/// reading of §3.7 hashes the same bytes.
fn unfold_before_final_semicolon(h: &str) -> String {
    match h.strip_suffix(";\r\n") {
        Some(head) => format!("{};\r\n", head.trim_end_matches([' ', '\t', '\r', '\n'])),
        None => h.to_string(),
    }
}

/// The names for `h=`: each [`SIGNED`] header the message has (once: mail-auth signs every
/// instance of a listed name), then [`OVERSIGNED`] again.
fn headers_to_sign(msg: &[u8]) -> Vec<&'static str> {
    let mut present: Vec<&'static str> = Vec::with_capacity(SIGNED.len() + OVERSIGNED.len());
    for name in header_names(msg) {
        if let Some(s) = SIGNED
            .iter()
            .find(|s| s.as_bytes().eq_ignore_ascii_case(name))
        {
            if !present.contains(s) {
                present.push(s);
            }
        }
    }
    if present.is_empty() {
        return present;
    }
    present.extend_from_slice(OVERSIGNED);
    present
}

/// The field names of the header block (up to the first empty line).
pub fn header_names(msg: &[u8]) -> impl Iterator<Item = &[u8]> {
    header_fields(msg).map(|(name, _)| name)
}

/// The header fields of `msg` as (name, raw value including continuation lines).
pub fn header_fields(msg: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let end = find(msg, b"\r\n\r\n").map_or(msg.len(), |i| i + 2);
    let block = &msg[..end];
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < block.len() {
            let start = pos;
            // A field runs to the CRLF not followed by a space or tab.
            let mut e = start;
            loop {
                match find(&block[e..], b"\r\n") {
                    Some(i) => {
                        e += i + 2;
                        if e < block.len() && (block[e] == b' ' || block[e] == b'\t') {
                            continue;
                        }
                    }
                    None => e = block.len(),
                }
                break;
            }
            pos = e;
            let field = &block[start..e];
            if let Some(colon) = field.iter().position(|&b| b == b':') {
                let name = field[..colon].trim_ascii();
                if !name.is_empty() && !name.contains(&b' ') {
                    return Some((name, &field[colon + 1..]));
                }
            }
        }
        None
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `msg` already carries a DKIM signature whose `d=` is `domain` (the priority lane
/// leaves such a message as submitted).
pub fn has_signature_for(msg: &[u8], domain: &str) -> bool {
    header_fields(msg).any(|(name, value)| {
        name.eq_ignore_ascii_case(b"DKIM-Signature")
            && String::from_utf8_lossy(value)
                .split(';')
                .filter_map(|tag| tag.split_once('='))
                .any(|(k, v)| {
                    let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
                    k.trim() == "d" && v.eq_ignore_ascii_case(domain)
                })
    })
}

/// The domain of the first `From:` address (lower case), for choosing a key.
pub fn from_domain(msg: &[u8]) -> Option<String> {
    let (_, v) = header_fields(msg).find(|(n, _)| n.eq_ignore_ascii_case(b"From"))?;
    let v = String::from_utf8_lossy(v);
    let addr = match (v.rfind('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.trim().to_string(),
    };
    let d = addr.rsplit_once('@')?.1.trim();
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

/// Signers by From domain (the priority lane's `[priority.dkim."domain"]` tables).
#[derive(Debug, Default)]
pub struct Signers {
    by_domain: std::collections::HashMap<String, Arc<Signer>>,
}

/// What the priority lane did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Signed {
    /// Signed with the key of this domain.
    Yes(Vec<u8>),
    /// Already carried a signature for its From domain: left as submitted.
    AlreadySigned,
    /// No key for its From domain (or no From): sent unsigned.
    NoKey(Option<String>),
}

impl Signers {
    /// The signers of validated config tables (keys already parsed), by From domain.
    pub fn from_settings(tables: &[(String, crate::config::dkim::DkimSettings)]) -> Signers {
        Signers {
            by_domain: tables
                .iter()
                .map(|(from, t)| (from.to_ascii_lowercase(), t.signer.clone()))
                .collect(),
        }
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// Signs `msg` with the key of its From domain, unless it carries a signature for that
    /// domain already.
    pub fn sign(&self, msg: &[u8]) -> Result<Signed, String> {
        let Some(domain) = from_domain(msg) else {
            return Ok(Signed::NoKey(None));
        };
        let Some(signer) = self.by_domain.get(&domain) else {
            return Ok(Signed::NoKey(Some(domain)));
        };
        if has_signature_for(msg, &domain) || has_signature_for(msg, signer.domain()) {
            return Ok(Signed::AlreadySigned);
        }
        signer.sign(msg).map(Signed::Yes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_handle_folding_and_stop_at_the_body() {
        let m = b"From: a@x.example\r\nSubject: one\r\n two\r\nTo: b@y.example\r\n\r\nFrom: not a header\r\n";
        let f: Vec<(String, String)> = header_fields(m)
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect();
        assert_eq!(f.len(), 3);
        assert_eq!(f[1], ("Subject".into(), " one\r\n two\r\n".into()));
        assert_eq!(from_domain(m).as_deref(), Some("x.example"));
    }

    #[test]
    fn h_lists_present_headers_once_then_the_oversigned() {
        let m = b"Date: x\r\nFrom: a@x.example\r\nTo: b@y.example\r\nSubject: s\r\nX-Other: 1\r\n\r\nbody\r\n";
        let h = headers_to_sign(m);
        assert_eq!(
            h,
            [
                "Date",
                "From",
                "To",
                "Subject",
                "From",
                "Subject",
                "Reply-To",
                "List-Unsubscribe",
                "List-Unsubscribe-Post"
            ]
        );
        assert!(headers_to_sign(b"X-Only: 1\r\n\r\n").is_empty());
    }

    #[test]
    fn existing_signature_detected_by_domain() {
        let m = b"DKIM-Signature: v=1; a=rsa-sha256; d=Acme.Example;\r\n s=s1; b=abc\r\nFrom: <a@acme.example>\r\n\r\n";
        assert!(has_signature_for(m, "acme.example"));
        assert!(!has_signature_for(m, "other.example"));
    }
}
