//! `blast serve` as a child process for the serve benches: a temp dir with blast.toml and one
//! submission user (`app` / `bench-pass`, domain acme.example), the priority lane pointed at a
//! sink inside the bench process, and the helpers both benches need.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use blast::sink::{SinkConfig, SinkHandle};

/// The submission user every bench logs in as.
pub const USER: (&str, &str) = ("app", "bench-pass");

/// An integer from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The blast binary cargo built for this bench.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_blast")
}

/// A recording sink on 127.0.0.1:0 (the priority relay).
pub async fn recording_sink() -> SinkHandle {
    blast::sink::start(
        "127.0.0.1:0".parse().unwrap(),
        SinkConfig {
            record: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// A running `blast serve`.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// Its submission address.
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
}

impl Serve {
    /// Writes blast.toml (`serve_extra` goes into `[serve]`) and the users file in `dir`,
    /// starts serve with its log in `dir/serve.log`, and reads the submission address.
    pub fn start(dir: &Path, relay: SocketAddr, serve_extra: &str) -> Serve {
        let config = dir.join("blast.toml");
        std::fs::write(
            &config,
            format!(
                "[serve]\nsubmission = \"127.0.0.1:0\"\n{serve_extra}\n[priority]\ntransport = \"smtp://{relay}\"\nhelo = \"mx.acme.example\"\n"
            ),
        )
        .unwrap();
        blast::serve::users::add_user(
            &dir.join("users.txt"),
            USER.0,
            USER.1,
            &["acme.example".to_string()],
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let mut child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start blast serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("serve said {line:?}"));
        Serve {
            child,
            addr,
            config,
        }
    }

    /// `blast queue stats` lines.
    pub fn stats(&self) -> Vec<String> {
        let out = Command::new(bin())
            .args(["queue", "stats", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// SIGTERM and wait; returns the last lines of serve's log.
    pub fn stop(mut self, log_lines: usize) -> Vec<String> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let log =
            std::fs::read_to_string(self.config.with_file_name("serve.log")).unwrap_or_default();
        let lines: Vec<String> = log.lines().map(str::to_string).collect();
        lines[lines.len().saturating_sub(log_lines)..].to_vec()
    }
}
