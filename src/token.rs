//! Recipient tokens: one design for the VERP return path (`bounces+TOKEN@`), the
//! `mailto:unsub+TOKEN@` address and the https one-click link.
//!
//! A token is 21 bytes, written as 34 characters of lowercase base32 (MTAs may lower-case
//! local parts; `bounces+` + 34 = 42 octets, inside the 64-octet local-part limit):
//!
//! | bytes | what |
//! |-------|------|
//! | 1     | key id (which secret signed it) |
//! | 8     | recipient id: HMAC-SHA256 of the normalised address under the file's first key, truncated — the same in every run and every shard |
//! | 4     | run id: SHA-256 of the run's name (`spring`, `weekly@2026-12-01T09:00Z`), truncated |
//! | 8     | tag: HMAC-SHA256 over a purpose byte and the 13 bytes above, truncated to 64 bits |
//!
//! The purpose byte is inside the tag only, so a bounce token can never be replayed as an
//! unsubscribe (or the other way round). The address itself is never in a token: `blast
//! serve` acts on the recipient id, which the suppression list holds until an import meets
//! the address.

use std::fmt;
use std::path::{Path, PathBuf};

use ring::{digest, hmac};

/// What a token may be used for. Bound into the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The one-click link and the `mailto:unsub+` address.
    Unsubscribe = 1,
    /// The VERP return path (and the Message-ID, which feedback reports keep).
    Bounce = 2,
    /// A tracked link: the tag also covers the link's URL ([`Keys::issue_bound`]).
    Click = 3,
}

/// A verified (or freshly issued) token's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The key that signed it.
    pub key_id: u8,
    /// The recipient id ([`Keys::recipient_id`]).
    pub rid: u64,
    /// The run id ([`run_id`]).
    pub run: u32,
}

impl Token {
    /// The recipient id as the suppression list keys it (`id:` + 16 hex digits).
    pub fn rid_key(&self) -> String {
        rid_key(self.rid)
    }
}

/// The suppression-list key of a recipient id.
pub fn rid_key(rid: u64) -> String {
    format!("id:{rid:016x}")
}

/// Why a token was refused. Deliberately coarse: a caller learns nothing about which part
/// of a forged token was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not 34 base32 characters.
    Malformed,
    /// Its key id is not in the key file.
    UnknownKey,
    /// The tag does not verify (altered, forged, or issued for the other purpose).
    BadTag,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::UnknownKey => "token signed by an unknown key",
            TokenError::BadTag => "token does not verify",
        })
    }
}

impl std::error::Error for TokenError {}

/// Bytes in a token.
const RAW_LEN: usize = 21;
/// Characters of its base32 form.
pub const TOKEN_LEN: usize = 34;
/// Shortest secret accepted (bytes).
const MIN_SECRET: usize = 32;

struct Key {
    id: u8,
    key: hmac::Key,
    retired: bool,
}

/// The HMAC keys of a secret file: one active key that issues, any number of retired keys
/// that still verify (links in mail sent months ago keep working).
pub struct Keys {
    keys: Vec<Key>,
    /// Keys recipient ids: the file's first key, retired or not, so ids never change when
    /// keys rotate.
    rid_key: hmac::Key,
    active: usize,
}

impl fmt::Debug for Keys {
    // Never the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|k| k.id).collect();
        f.debug_struct("Keys")
            .field("ids", &ids)
            .field("active", &self.keys[self.active].id)
            .finish()
    }
}

impl Keys {
    /// Reads a secret file. Its lines are `ID SECRET [retired]`: `ID` 0–255, `SECRET` at
    /// least 32 bytes as hex, exactly one line not `retired`; `#` starts a comment. The file
    /// must not be readable by group or others. Errors name the file and line, never a secret.
    pub fn load(path: &Path) -> Result<Keys, String> {
        let shown = path.display();
        check_private(path)?;
        let src = std::fs::read_to_string(path)
            .map_err(|e| format!("{shown}: cannot read secret file: {e}"))?;
        Keys::parse(&src).map_err(|(line, m)| format!("{shown}:{line}: {m}"))
    }

    /// Parses the text of a secret file; an error is `(line, message)`.
    pub fn parse(src: &str) -> Result<Keys, (usize, String)> {
        let mut keys: Vec<Key> = Vec::new();
        let mut first: Option<Vec<u8>> = None;
        for (i, line) in src.lines().enumerate() {
            let n = i + 1;
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut f = line.split_whitespace();
            let (id, secret, flag) = (f.next(), f.next(), f.next());
            let id: u8 = id
                .and_then(|s| s.parse().ok())
                .ok_or((n, "key id must be a number 0-255".to_string()))?;
            let secret = secret
                .and_then(hex_decode)
                .ok_or((n, format!("key {id}: secret must be hex")))?;
            if secret.len() < MIN_SECRET {
                return Err((
                    n,
                    format!("key {id}: secret must be at least {MIN_SECRET} bytes (64 hex digits)"),
                ));
            }
            let retired = match flag {
                None => false,
                Some("retired") => true,
                Some(other) => {
                    return Err((
                        n,
                        format!("key {id}: unknown flag {other:?} (only `retired`)"),
                    ))
                }
            };
            if f.next().is_some() {
                return Err((n, format!("key {id}: extra words after the flag")));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err((n, format!("key {id} appears twice")));
            }
            first.get_or_insert_with(|| secret.clone());
            keys.push(Key {
                id,
                key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
                retired,
            });
        }
        let active: Vec<usize> = (0..keys.len()).filter(|&i| !keys[i].retired).collect();
        let active = match active.as_slice() {
            [one] => *one,
            [] => {
                return Err((
                    0,
                    "no active key (every key is retired, or the file is empty)".into(),
                ))
            }
            _ => {
                return Err((
                    0,
                    "more than one active key: mark all but one `retired`".into(),
                ))
            }
        };
        let first = first.expect("an active key exists");
        Ok(Keys {
            keys,
            rid_key: hmac::Key::new(
                hmac::HMAC_SHA256,
                &[b"blast-recipient-id:", &first[..]].concat(),
            ),
            active,
        })
    }

    /// A key file with one fresh random key, the text to write (0600) to a new secret file.
    pub fn generate_file(id: u8) -> String {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        format!(
            "# blast token keys: ID SECRET [retired]. Exactly one key is active; retire old keys\n\
             # instead of deleting them (mail already sent carries their tokens), and never delete\n\
             # the first line: it also keys recipient ids.\n{id} {}\n",
            hex_encode(&secret)
        )
    }

    /// The recipient id of a normalised address (the store key).
    pub fn recipient_id(&self, normalised: &str) -> u64 {
        let t = hmac::sign(&self.rid_key, normalised.as_bytes());
        u64::from_be_bytes(t.as_ref()[..8].try_into().expect("8 bytes"))
    }

    /// Issues a token with the active key.
    pub fn issue(&self, purpose: Purpose, rid: u64, run: u32) -> String {
        self.sign(purpose, rid, run, None)
    }

    /// Issues a token whose tag also covers `bound` (a tracked link's URL): the token is
    /// only good together with exactly those bytes.
    pub fn issue_bound(&self, purpose: Purpose, rid: u64, run: u32, bound: &[u8]) -> String {
        self.sign(purpose, rid, run, Some(bound))
    }

    fn sign(&self, purpose: Purpose, rid: u64, run: u32, bound: Option<&[u8]>) -> String {
        let k = &self.keys[self.active];
        let mut raw = [0u8; RAW_LEN];
        raw[0] = k.id;
        raw[1..9].copy_from_slice(&rid.to_be_bytes());
        raw[9..13].copy_from_slice(&run.to_be_bytes());
        let tag = tag(&k.key, purpose, &raw[..13], bound);
        raw[13..].copy_from_slice(&tag);
        base32_encode(&raw)
    }

    /// Checks a token issued by [`Keys::issue_bound`] with `bound`.
    pub fn verify_bound(
        &self,
        purpose: Purpose,
        token: &str,
        bound: &[u8],
    ) -> Result<Token, TokenError> {
        self.check(purpose, token, Some(bound))
    }

    /// Checks a token for `purpose` (case-insensitive: MTAs may change the case of a local
    /// part). Retired keys verify too.
    pub fn verify(&self, purpose: Purpose, token: &str) -> Result<Token, TokenError> {
        self.check(purpose, token, None)
    }

    fn check(
        &self,
        purpose: Purpose,
        token: &str,
        bound: Option<&[u8]>,
    ) -> Result<Token, TokenError> {
        let raw = base32_decode(token).ok_or(TokenError::Malformed)?;
        let k = self
            .keys
            .iter()
            .find(|k| k.id == raw[0])
            .ok_or(TokenError::UnknownKey)?;
        let want = tag(&k.key, purpose, &raw[..13], bound);
        if !constant_time_eq(&want, &raw[13..]) {
            return Err(TokenError::BadTag);
        }
        Ok(Token {
            key_id: raw[0],
            rid: u64::from_be_bytes(raw[1..9].try_into().expect("8 bytes")),
            run: u32::from_be_bytes(raw[9..13].try_into().expect("4 bytes")),
        })
    }
}

/// What a campaign sent with `--config blast.toml` (or scheduled by serve) issues tokens
/// with: the keys of `[serve] secret_file`, `[unsubscribe] url` and `[bounces] domain`.
#[derive(Debug)]
pub struct TokenSettings {
    /// The HMAC keys.
    pub keys: Keys,
    /// Public base URL of the one-click endpoint, https, ending in `/` (a token is appended).
    pub unsubscribe_url: Option<String>,
    /// The VERP domain: `bounces+TOKEN@` and `unsub+TOKEN@` it.
    pub bounce_domain: Option<String>,
    /// `[tracking] url`: public base of the click redirect, ending in `/` (`None`: no click
    /// tracking).
    pub click_url: Option<String>,
}

/// The key a mailbox's soft-bounce count is kept under: its recipient id when there are
/// token keys (a bounce that comes back names only its token, so a count kept by address
/// could never meet it), else the normalised address.
pub fn mailbox_key(tokens: Option<&TokenSettings>, normalised: &str) -> String {
    match tokens {
        Some(t) => rid_key(t.keys.recipient_id(normalised)),
        None => normalised.to_string(),
    }
}

/// The run id of a run's name: the same name gives the same id on every machine.
pub fn run_id(name: &str) -> u32 {
    let d = digest::digest(&digest::SHA256, name.as_bytes());
    u32::from_be_bytes(d.as_ref()[..4].try_into().expect("4 bytes"))
}

/// HMAC-SHA256 over the purpose byte, the token body and — for a bound token — the bound
/// bytes, length-prefixed so no two (body, bound) pairs collide; truncated to 64 bits.
fn tag(key: &hmac::Key, purpose: Purpose, body: &[u8], bound: Option<&[u8]>) -> [u8; 8] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&[purpose as u8]);
    ctx.update(body);
    if let Some(b) = bound {
        ctx.update(&(b.len() as u64).to_be_bytes());
        ctx.update(b);
    }
    ctx.sign().as_ref()[..8].try_into().expect("8 bytes")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a file that group or others may read (or write).
pub fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("{}: cannot read secret file: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: secret file is readable by others (mode {mode:03o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Writes `text` to a new file that only its owner can read (0600 from the start: never
/// wider, not even between create and chmod). Refuses to overwrite.
pub fn write_private(path: &PathBuf, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32_encode(raw: &[u8; RAW_LEN]) -> String {
    let mut out = String::with_capacity(TOKEN_LEN);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(s: &str) -> Option<[u8; RAW_LEN]> {
    if s.len() != TOKEN_LEN {
        return None;
    }
    let mut raw = [0u8; RAW_LEN];
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for c in s.bytes() {
        let v = match c.to_ascii_lowercase() {
            c @ b'a'..=b'z' => c - b'a',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            raw[n] = (acc >> bits) as u8;
            n += 1;
        }
    }
    // 34 × 5 = 170 bits: 168 of data and 2 that must be zero (one spelling per token).
    (n == RAW_LEN && acc & ((1 << bits) - 1) == 0).then_some(raw)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    const A_RETIRED_B: &str = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f retired\n\
                               2 ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    fn keys(s: &str) -> Keys {
        Keys::parse(s).unwrap()
    }

    #[test]
    fn deterministic_and_unique_per_recipient_and_run() {
        let k = keys(A);
        let r1 = k.recipient_id("ann@example.com");
        let r2 = k.recipient_id("bob@example.com");
        assert_ne!(r1, r2);
        assert_eq!(r1, keys(A).recipient_id("ann@example.com"));
        let t = k.issue(Purpose::Unsubscribe, r1, run_id("spring"));
        assert_eq!(t, k.issue(Purpose::Unsubscribe, r1, run_id("spring")));
        assert_ne!(t, k.issue(Purpose::Unsubscribe, r2, run_id("spring")));
        assert_ne!(t, k.issue(Purpose::Unsubscribe, r1, run_id("summer")));
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t.bytes().all(|c| ALPHABET.contains(&c)), "{t}");
        assert!("bounces+".len() + t.len() <= 64);
    }

    #[test]
    fn verifies_and_rejects_alteration_and_other_purpose() {
        let k = keys(A);
        let rid = k.recipient_id("ann@example.com");
        let t = k.issue(Purpose::Unsubscribe, rid, 7);
        let got = k.verify(Purpose::Unsubscribe, &t).unwrap();
        assert_eq!((got.rid, got.run, got.key_id), (rid, 7, 1));
        assert_eq!(k.verify(Purpose::Unsubscribe, &t.to_uppercase()), Ok(got));
        assert_eq!(k.verify(Purpose::Bounce, &t), Err(TokenError::BadTag));
        // Flip every character in turn: none verifies.
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let s = String::from_utf8(b).unwrap();
            assert!(
                k.verify(Purpose::Unsubscribe, &s).is_err(),
                "altered at {i}: {s}"
            );
        }
        assert_eq!(
            k.verify(Purpose::Unsubscribe, "short"),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            k.verify(Purpose::Unsubscribe, &"0".repeat(TOKEN_LEN)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn retired_keys_verify_but_never_issue_and_ids_survive_rotation() {
        let old = keys(A);
        let new = keys(A_RETIRED_B);
        let rid = old.recipient_id("ann@example.com");
        assert_eq!(
            new.recipient_id("ann@example.com"),
            rid,
            "ids survive rotation"
        );
        let t_old = old.issue(Purpose::Bounce, rid, 1);
        assert_eq!(new.verify(Purpose::Bounce, &t_old).unwrap().key_id, 1);
        let t_new = new.issue(Purpose::Bounce, rid, 1);
        assert_eq!(new.verify(Purpose::Bounce, &t_new).unwrap().key_id, 2);
        assert_eq!(
            old.verify(Purpose::Bounce, &t_new),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn key_file_errors_name_the_line() {
        let e = |s: &str| Keys::parse(s).err().unwrap();
        assert_eq!(e("1 abcd\n").0, 1);
        assert!(e("# c\n\n1 zz\n").1.contains("hex"));
        assert_eq!(e("# c\n\nx 00\n").0, 3);
        assert!(e("").1.contains("no active key"));
        let two = format!("{A}2 {}\n", "11".repeat(32));
        assert!(e(&two).1.contains("more than one active"));
        let dup = format!("{A}1 {} retired\n", "11".repeat(32));
        assert!(e(&dup).1.contains("twice"));
        assert!(e(&format!("1 {} old\n", "11".repeat(32)))
            .1
            .contains("unknown flag"));
        // A generated file parses and has one active key.
        assert!(Keys::parse(&Keys::generate_file(1)).is_ok());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = format!("{:?}", keys(A));
        assert!(!s.contains("0a0b"), "{s}");
    }

    #[test]
    fn private_file_checks() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        write_private(&p, A).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(Keys::load(&p).is_ok());
        assert!(write_private(&p, A).is_err(), "never overwrites");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Keys::load(&p).unwrap_err().contains("chmod 600"));
    }
}
