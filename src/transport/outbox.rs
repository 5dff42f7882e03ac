//! `outbox:DIR`: one .eml file per message. The default transport of the example campaign, so
//! `blast send` works on a fresh machine with no mail server.

use std::io::Write;
use std::path::{Path, PathBuf};

/// File name for a recipient: readable, and stable so a resend overwrites instead of
/// duplicating.
pub fn file_name(campaign: &str, key: &str) -> String {
    let mut safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    // Distinct keys may sanitise alike; a short hash of the real key keeps them apart.
    let h = key.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    safe.push_str(&format!("-{:08x}.eml", h as u32));
    format!("{campaign}-{safe}")
}

/// Writes `msg` atomically (temp file, fsync, rename) as `dir/name`.
pub fn write(dir: &Path, name: &str, msg: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(msg)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
