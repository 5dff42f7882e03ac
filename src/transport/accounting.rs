//! The accounting file of direct delivery: one JSON line per attempt (time, recipient, source
//! IP, MX host and address, TLS, reply), as PowerMTA's accounting files are, so a postmaster
//! can answer "what did Yahoo say to us at 10:14?" with `grep`. Appended through a buffer
//! (never an fsync per line); flushed at least every second while attempts come in, and when
//! the lane ends.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often buffered lines reach the file while a lane is busy.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One attempt, as a line of the file.
#[derive(Debug, serde::Serialize)]
pub struct Attempt<'a> {
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
    /// RCPT TO.
    pub rcpt: &'a str,
    /// The address we connected from (`None`: no connection was made).
    pub source_ip: Option<IpAddr>,
    /// The MX host's name (`None`: DNS decided before any connection).
    pub mx_host: Option<&'a str>,
    /// The address connected to.
    pub mx_addr: Option<SocketAddr>,
    /// The session was encrypted.
    pub tls: bool,
    /// The reply (code, enhanced status, text), or why nothing was sent.
    pub reply: &'a str,
}

/// An open accounting file.
pub struct Accounting {
    path: PathBuf,
    out: Mutex<(BufWriter<File>, Instant)>,
}

impl Accounting {
    /// Opens `path` for appending (creating it and its directory).
    pub fn open(path: &Path) -> std::io::Result<Accounting> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Accounting {
            path: path.to_path_buf(),
            out: Mutex::new((BufWriter::with_capacity(64 * 1024, f), Instant::now())),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one attempt. A write error is reported once per flush and otherwise ignored:
    /// the accounting file must never stop mail.
    pub fn record(&self, a: &Attempt<'_>) {
        let mut g = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let (w, last) = &mut *g;
        if serde_json::to_writer(&mut *w, a).is_ok() {
            let _ = w.write_all(b"\n");
        }
        if last.elapsed() >= FLUSH_EVERY {
            if let Err(e) = w.flush() {
                eprintln!("warning: accounting file {}: {e}", self.path.display());
            }
            *last = Instant::now();
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        let mut g = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = g.0.flush();
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Now, as the accounting file writes it.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
