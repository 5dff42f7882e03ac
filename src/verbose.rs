//! `blast --verbose` (or `BLAST_VERBOSE=1`, or `RUST_LOG` at `debug`/`trace`): every SMTP
//! reply blast reads, on stderr, so a postmaster can see what a relay or an MX host said
//! when a run defers or bounces. Only replies, never what blast writes: a command group can
//! carry AUTH credentials and a body the recipients' data.

use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

/// Turns verbose output on (from the flag or the environment).
pub fn init(flag: bool) {
    let env = std::env::var("BLAST_VERBOSE").is_ok_and(|v| v != "0" && !v.is_empty())
        || std::env::var("RUST_LOG").is_ok_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("debug") || v.contains("trace")
        });
    ON.store(flag || env, Ordering::Relaxed);
}

/// Whether verbose output is on.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}
