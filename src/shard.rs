//! Shards: `blast send CAMPAIGN --shard K/N` sends only the recipients of shard K of N, so
//! several machines (or processes) can split one list without talking to each other.
//!
//! A recipient's shard is a documented function of its address, so other tools and SQL can
//! compute it too (never Rust's `DefaultHasher`, whose output may change between releases):
//! the SHA-256 of the normalised address as UTF-8 bytes — the dedupe key of
//! [`crate::list::hygiene::check`]: local part lower-cased, domain lower-cased and as its
//! IDNA A-label — first 8 bytes as a big-endian `u64`, modulo N; shard K holds the
//! addresses whose remainder is K−1.
//!
//! Each shard keeps its own state under the campaign's directory
//! (`STATE_DIR/ID/shard-K-of-N/`, see [`Shard::dir_name`]); `blast status` merges them.

use std::fmt;
use std::str::FromStr;

/// One shard of a campaign: `k` of `n`, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, 1..=n.
    pub k: u32,
    /// How many shards the list is split into, at least 1.
    pub n: u32,
}

/// The 64-bit value a shard is chosen by: the first 8 bytes of SHA-256(`key`), big-endian.
/// `key` is a normalised address ([`crate::list::hygiene::Mailbox::key`]).
pub fn hash(key: &str) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The 1-based shard of `key` among `n` (`n` ≥ 1).
pub fn shard_of(key: &str, n: u32) -> u32 {
    (hash(key) % u64::from(n.max(1))) as u32 + 1
}

impl Shard {
    /// Whether the normalised address `key` belongs to this shard.
    pub fn holds(&self, key: &str) -> bool {
        shard_of(key, self.n) == self.k
    }

    /// The directory of this shard's state inside the campaign's: `shard-K-of-N`.
    pub fn dir_name(&self) -> String {
        format!("shard-{}-of-{}", self.k, self.n)
    }

    /// Parses a directory name made by [`Shard::dir_name`].
    pub fn from_dir_name(name: &str) -> Option<Shard> {
        let (k, n) = name.strip_prefix("shard-")?.split_once("-of-")?;
        format!("{k}/{n}").parse().ok()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `K/N`: two decimal numbers, 1 ≤ K ≤ N.
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad =
            |why: &str| format!("--shard {s:?}: {why}; expected K/N with 1 <= K <= N, e.g. 2/4");
        let (k, n) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let num = |v: &str, what: &str| -> Result<u32, String> {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("{what} {v:?} is not a number")));
            }
            v.parse::<u32>()
                .map_err(|_| bad(&format!("{what} {v} is too large")))
        };
        let (k, n) = (num(k, "K")?, num(n, "N")?);
        if n == 0 {
            return Err(bad("N must be at least 1"));
        }
        if k == 0 {
            return Err(bad("shards are numbered from 1"));
        }
        if k > n {
            return Err(bad(&format!("shard {k} of only {n}")));
        }
        Ok(Shard { k, n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n_and_refuses_the_rest() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { k: 2, n: 4 });
        assert_eq!("1/1".parse::<Shard>().unwrap(), Shard { k: 1, n: 1 });
        for (bad, why) in [
            ("0/4", "numbered from 1"),
            ("5/4", "shard 5 of only 4"),
            ("1/0", "N must be at least 1"),
            ("0/0", "N must be at least 1"),
            ("x/4", "K \"x\" is not a number"),
            ("2", "no '/'"),
            ("-1/4", "not a number"),
            ("1/99999999999", "too large"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(why) && e.contains("--shard"), "{bad}: {e}");
        }
    }

    #[test]
    fn dir_names_round_trip() {
        let s = Shard { k: 3, n: 8 };
        assert_eq!(s.dir_name(), "shard-3-of-8");
        assert_eq!(Shard::from_dir_name("shard-3-of-8"), Some(s));
        assert_eq!(Shard::from_dir_name("shard-9-of-8"), None);
        assert_eq!(Shard::from_dir_name("store"), None);
    }
}
