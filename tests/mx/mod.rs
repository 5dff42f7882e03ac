//! `transport = "mx"` against a real DNS server: dnsmasq, started by each test on 127.0.0.1
//! with its records on the command line, and blast's sink listening on 127.0.0.2 and
//! 127.0.0.3 (one port for both, given to the lane as `mx_port`). SERVFAIL comes from a tiny
//! UDP responder that dnsmasq forwards one zone to.
//!
//! - `mod.rs`    dnsmasq, the SERVFAIL responder, the two sinks, the campaign file
//! - `deliver.rs` preference, fallback, implicit MX, null MX, confirmed NXDOMAIN, SERVFAIL,
//!   shared hosts, exactly once, accounting; the NXDOMAIN-share pause; opportunistic TLS
//! - `tls.rs`    a failed handshake retried in plaintext; `starttls = "required"` verifies
//! - `priority.rs` the priority lane: one transaction per domain, a DSN for a null MX
//! - `shaping.rs` limits per MX site and provider rollup; a response rule's durable hold
//! - `ready.rs`  a site's sessions within its cap, each carrying many recipients
//! - `zone.rs`   an in-process hickory-proto responder (a table of records, SERVFAIL zones)
//! - `servfail.rs` SERVFAIL for one domain through it: deferred, never bounced or suppressed

mod deliver;
mod priority;
mod ready;
mod servfail;
mod shaping;
mod tls;
mod zone;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blast::sink::{self, SinkConfig, SinkHandle};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A dnsmasq serving the given records on 127.0.0.1; killed when dropped.
pub struct Dns {
    child: Child,
    pub addr: SocketAddr,
    /// dnsmasq's query log (`--log-queries`).
    log: tempfile::NamedTempFile,
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port free right now on 127.0.0.1 (dnsmasq binds it a moment later).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

impl Dns {
    /// Starts dnsmasq authoritative for `.test` (a name it has no record for is NXDOMAIN)
    /// with `args` (`--mx-host=…`, `--host-record=…`, `--server=/zone/…`). Fails the test
    /// when dnsmasq is not installed: the DNS tests must never pass by not running.
    pub fn start(args: &[String]) -> Dns {
        assert!(
            Path::new(DNSMASQ).exists(),
            "{DNSMASQ} not found: the MX tests need dnsmasq (apt-get install -y dnsmasq-base; \
             .ci/run installs it)"
        );
        // The port is free for UDP when picked, but dnsmasq also listens on TCP, and another
        // test may take either before dnsmasq binds: then it exits with "Address already in
        // use", and another port is tried (bounded).
        let mut last = String::new();
        for _ in 0..10 {
            match Dns::try_start(args, free_udp_port()) {
                Ok(dns) => return dns,
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free port for dnsmasq after 10 tries: {last}");
    }

    /// One attempt on `port`: `Err` says why dnsmasq exited.
    fn try_start(args: &[String], port: u16) -> Result<Dns, String> {
        let log = tempfile::NamedTempFile::new().expect("dnsmasq log file");
        let child = Command::new(DNSMASQ)
            .args([
                "-k",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--local=/test/",
                &format!("--port={port}"),
                "--log-queries",
                &format!("--log-facility={}", log.path().display()),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut dns = Dns { child, addr, log };
        // Ready once it accepts TCP on its port (it listens on both); bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(st)) = dns.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = dns.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("dnsmasq exited ({st}): {err}"));
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(dns)
    }
}

impl Dns {
    /// How many queries of `qtype` for `name` dnsmasq has logged.
    pub fn queries(&self, qtype: &str, name: &str) -> usize {
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let needle = format!("query[{qtype}] {name} from");
        log.lines().filter(|l| l.contains(&needle)).count()
    }
}

/// `--mx-host` and `--host-record` arguments.
pub fn mx(domain: &str, host: &str, pref: u16) -> String {
    format!("--mx-host={domain},{host},{pref}")
}

pub fn a(host: &str, ip: &str) -> String {
    format!("--host-record={host},{ip}")
}

/// A UDP DNS responder answering SERVFAIL to every query, until dropped (bounded: it stops
/// after 2 minutes whatever happens).
pub struct ServFail {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServFail {
    pub fn start() -> ServFail {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind SERVFAIL responder");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(resp) = servfail(&buf[..n]) {
                    let _ = sock.send_to(&resp, from);
                }
            }
        });
        ServFail {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ServFail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The SERVFAIL answer to a query: its id and question, QR and RA set, RCODE 2, no records.
fn servfail(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    // The question's name: labels up to the root (bounded by the packet).
    while *q.get(i)? != 0 {
        i += usize::from(q[i]) + 1;
    }
    let end = i + 5; // root label, QTYPE, QCLASS
    q.get(..end)?;
    let mut r = Vec::with_capacity(end);
    r.extend_from_slice(&q[..2]);
    r.push(0x80 | (q[2] & 0x01));
    r.push(0x80 | 2);
    r.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..end]);
    Some(r)
}

/// Sinks on 127.0.0.2 and 127.0.0.3, on one port (that of the first; retried when the
/// second address has it taken).
pub async fn two_sinks(config: impl Fn() -> SinkConfig) -> (SinkHandle, SinkHandle, u16) {
    for _ in 0..20 {
        let s2 = sink::start("127.0.0.2:0".parse().unwrap(), config())
            .await
            .expect("start sink on 127.0.0.2 (loopback 127.0.0.0/8)");
        let port = s2.addr.port();
        if let Ok(s3) = sink::start(format!("127.0.0.3:{port}").parse().unwrap(), config()).await {
            return (s2, s3, port);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3 in 20 tries");
}

/// A campaign file sending `lists` directly to MX hosts on `port`, resolving through `dns`.
pub fn campaign_toml(id: &str, dns: SocketAddr, port: u16, lane_extra: &str) -> String {
    format!(
        r#"[campaign]
id = "{id}"
from = "Acme News <news@acme.example>"
subject = "Hello {{{{first_name}}}}"
text = "t.txt.hbs"
lists = ["list.csv"]
state_dir = "state"

[lane]
transport = "mx"
mx_port = {port}
helo = "blast.test"
source_ip = "127.0.0.1"
connect_timeout = "2s"
backoff = "300ms"
{lane_extra}

[dns]
nameservers = ["{dns}"]
"#
    )
}
