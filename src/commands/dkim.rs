//! `blast dkim keygen`: writes a new DKIM private key (PEM, mode 0600, never overwriting an
//! existing file) and prints the TXT record to publish, split into strings of at most 255
//! bytes (a TXT record's strings are length-prefixed with one byte; a 2048-bit key's record
//! is longer than one string holds).

use base64::Engine as _;
use mail_auth::dkim::generate::DkimKeyPair;

use crate::cli::DkimAction;
use crate::config::dkim::check_selector;
use crate::error::{Error, Result};

/// Runs a `blast dkim` action.
pub fn run(action: DkimAction) -> Result<i32> {
    match action {
        DkimAction::Keygen {
            domain,
            selector,
            ed25519,
            bits,
            out,
        } => {
            if domain.starts_with('[') {
                return Err(Error::Config(format!(
                    "--domain: {domain:?}: a DKIM domain is a domain, not an address literal"
                )));
            }
            let domain = crate::config::host_name(&domain)
                .map_err(|e| Error::Config(format!("--domain: {e}")))?;
            check_selector(&selector).map_err(|e| Error::Config(format!("--selector: {e}")))?;
            let key = if ed25519 {
                Generated::ed25519()?
            } else {
                if !(1024..=8192).contains(&bits) {
                    return Err(Error::Config(format!(
                        "--bits: {bits} is not an RSA key size blast signs with (2048 recommended)"
                    )));
                }
                if bits < 2048 {
                    eprintln!("warning: {bits}-bit RSA keys are weak; receivers are moving to require 2048");
                }
                if bits > crate::sign::RSA_WARN_BITS {
                    eprintln!(
                        "warning: {bits}-bit RSA keys sign several times slower than 2048-bit ones"
                    );
                }
                Generated::rsa(bits)?
            };
            crate::token::write_private(&out, &key.pem).map_err(|e| {
                Error::io(
                    format!("cannot write {} (it must not exist yet)", out.display()),
                    e,
                )
            })?;
            eprintln!(
                "wrote {} (mode 0600). Publish this record, then set in the campaign:",
                out.display()
            );
            eprintln!(
                "  [dkim] domain = \"{domain}\"  {}= \"{selector}\"  {}= \"{}\"",
                if ed25519 {
                    "ed25519_selector "
                } else {
                    "selector "
                },
                if ed25519 { "ed25519_key " } else { "key " },
                out.display()
            );
            println!("{}", txt_record(&selector, &domain, &key.record));
            Ok(0)
        }
    }
}

/// A new key: its PEM file text and its record's value (`v=DKIM1; k=…; p=…`).
pub struct Generated {
    /// The private key file's text.
    pub pem: String,
    /// The TXT record's value.
    pub record: String,
}

impl Generated {
    /// A new RSA key of `bits` bits.
    pub fn rsa(bits: usize) -> Result<Generated> {
        let pair = DkimKeyPair::generate_rsa(bits)
            .map_err(|e| Error::Config(format!("cannot generate an RSA key: {e}")))?;
        Ok(Generated {
            pem: pem("RSA PRIVATE KEY", pair.private_key()),
            // The record's p= is a SubjectPublicKeyInfo (what `openssl rsa -pubout` prints).
            record: format!("v=DKIM1; k=rsa; p={}", b64(&rsa_spki(pair.public_key()))),
        })
    }

    /// A new Ed25519 key.
    pub fn ed25519() -> Result<Generated> {
        let pair = DkimKeyPair::generate_ed25519()
            .map_err(|e| Error::Config(format!("cannot generate an Ed25519 key: {e}")))?;
        Ok(Generated {
            pem: pem("PRIVATE KEY", pair.private_key()),
            // RFC 8463: the bare 32-byte public key.
            record: format!("v=DKIM1; k=ed25519; p={}", b64(pair.public_key())),
        })
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// DER length octets.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (algorithm rsaEncryption).
pub(crate) fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const ALG: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8]; // no unused bits
    bits.extend_from_slice(pkcs1);
    let mut content = ALG.to_vec();
    content.extend(der(0x03, &bits));
    der(0x30, &content)
}

/// The zone-file line: `SELECTOR._domainkey.DOMAIN. IN TXT ( "…" "…" )`, each string at most
/// 255 bytes.
pub fn txt_record(selector: &str, domain: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", std::str::from_utf8(c).expect("record is ASCII")))
        .collect();
    format!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        strings.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_are_at_most_255_bytes_and_join_back() {
        let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(600));
        let line = txt_record("s1", "acme.example", &value);
        assert!(line.starts_with("s1._domainkey.acme.example. IN TXT ( \""));
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 3);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), value);
    }

    #[test]
    fn selectors_are_dns_labels() {
        assert!(check_selector("s2026").is_ok());
        assert!(check_selector("news.s1").is_ok());
        assert!(check_selector("bad sel").is_err());
        assert!(check_selector("").is_err());
        assert!(check_selector("-x").is_err());
    }

    #[test]
    fn generated_keys_load_and_sign() {
        let d = tempfile::tempdir().unwrap();
        for (g, rsa) in [
            (Generated::ed25519().unwrap(), false),
            (Generated::rsa(2048).unwrap(), true),
        ] {
            let p = d.path().join(if rsa { "rsa.pem" } else { "ed.pem" });
            crate::token::write_private(&p, &g.pem).unwrap();
            if rsa {
                let (_, bits) = crate::sign::load_rsa(&p).unwrap();
                assert_eq!(bits, 2048);
                assert!(
                    g.record.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"),
                    "{}",
                    g.record
                );
            } else {
                crate::sign::load_ed25519(&p).unwrap();
                assert!(g.record.starts_with("v=DKIM1; k=ed25519; p="));
            }
        }
    }
}
