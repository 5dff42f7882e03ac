//! A small SMTP client connection over a socket we create ourselves: TCP_NODELAY set (lettre
//! never sets it, which caps a pooled loopback connection at ~23 msg/s), bound to the lane's
//! dedicated source IP, with STARTTLS, AUTH PLAIN and the capabilities the lane needs to
//! pipeline (RFC 2920). The lane drives MAIL/RCPT/DATA itself so each recipient gets its own
//! result. Every read has a timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::classify::{classify, Class, Stage};
use crate::config::{Auth, StartTls, Timeouts};

/// One SMTP reply (all lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit code.
    pub code: u16,
    /// Text of all lines, joined with a space.
    pub text: String,
}

impl Reply {
    /// 2xx.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Why a connection or command failed.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// Network failure (connect refused, reset, EOF).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No reply within the timeout.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The server said no during connection set-up (greeting, EHLO, STARTTLS, AUTH).
    #[error("{stage} refused: {reply}")]
    Refused {
        /// What we were doing.
        stage: &'static str,
        /// The reply.
        reply: Reply,
    },
    /// A reply we could not parse.
    #[error("malformed reply: {0:?}")]
    Protocol(String),
    /// Configuration and server do not fit (STARTTLS required but not offered, AUTH not offered).
    #[error("{0}")]
    Policy(String),
    /// An opportunistic TLS handshake failed (the connection is unusable; a plaintext retry
    /// on a new one may work).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

impl SmtpError {
    /// The lane cannot work with this relay at all: stop the run instead of retrying.
    pub fn is_fatal(&self) -> bool {
        match self {
            SmtpError::Policy(_) => true,
            // A 5xx to greeting, EHLO, STARTTLS or AUTH will not change by retrying.
            SmtpError::Refused { reply, .. } => reply.code >= 500,
            _ => false,
        }
    }

    /// How a set-up failure should be treated for the messages waiting on it.
    pub fn class(&self) -> Class {
        match self {
            SmtpError::Refused { reply, .. } => classify(Stage::Connect, reply.code, &reply.text),
            _ => Class::Transient,
        }
    }
}

/// Plain TCP or TLS (client side).
pub type Stream = super::stream::MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// What the server offered in its EHLO reply.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3461 delivery status notifications (NOTIFY, ORCPT, RET, ENVID).
    pub dsn: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 6152.
    pub eightbitmime: bool,
    /// SIZE limit, 0 = none given.
    pub size: u64,
    /// AUTH mechanisms (upper-case).
    pub auth: Vec<String>,
}

/// How to reach and greet the relay.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name (for TLS verification) or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS from the first byte.
    pub implicit_tls: bool,
    /// STARTTLS policy.
    pub starttls: StartTls,
    /// Bind address (the lane's dedicated IP).
    pub source_ip: Option<IpAddr>,
    /// EHLO name.
    pub helo: String,
    /// Credentials.
    pub auth: Option<Auth>,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl Endpoint {
    /// The relay endpoint of a lane, or `None` when the lane writes to an outbox.
    pub fn for_lane(s: &crate::config::LaneSettings) -> Option<Endpoint> {
        match &s.transport {
            crate::config::TransportSpec::Smtp {
                host,
                port,
                implicit_tls,
            } => Some(Endpoint {
                host: host.clone(),
                port: *port,
                implicit_tls: *implicit_tls,
                starttls: s.starttls,
                source_ip: s.source_ip,
                helo: s.helo.clone(),
                auth: s.auth.clone(),
                timeouts: s.timeouts,
            }),
            crate::config::TransportSpec::Outbox(_) | crate::config::TransportSpec::Mx => None,
        }
    }
}

/// An open, greeted (and possibly TLS-protected and authenticated) SMTP connection.
pub struct Connection {
    stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    /// What the server offers.
    pub caps: Capabilities,
    /// The connection is encrypted.
    pub tls: bool,
}

const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 200;

impl Connection {
    /// Connects, reads the greeting, says EHLO, upgrades with STARTTLS and authenticates as
    /// the endpoint says.
    pub async fn open(ep: &Endpoint) -> Result<Connection, SmtpError> {
        let t = ep.timeouts.connect;
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(t, tokio::net::lookup_host((ep.host.as_str(), ep.port)))
                .await
                .map_err(|_| SmtpError::Timeout("DNS lookup"))??
                .collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolves to no address", ep.host),
        );
        let mut tcp = None;
        for addr in addrs {
            // Only try addresses of the same family as the source IP.
            if let Some(src) = ep.source_ip {
                if src.is_ipv4() != addr.is_ipv4() {
                    continue;
                }
            }
            match connect_tcp(addr, ep.source_ip, t).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(last)?;
        Connection::establish(tcp, ep).await
    }

    /// The SMTP set-up on a connected socket: greeting, EHLO, STARTTLS, AUTH as `ep` says
    /// (its `host` is the TLS server name).
    pub async fn establish(tcp: TcpStream, ep: &Endpoint) -> Result<Connection, SmtpError> {
        let t = ep.timeouts.connect;
        let mut stream = Stream::Plain(tcp);
        let mut tls = false;
        if ep.implicit_tls {
            stream = upgrade(stream, &ep.host, true, t).await?;
            tls = true;
        }
        let mut c = Connection {
            stream,
            rbuf: Vec::with_capacity(8192),
            rpos: 0,
            caps: Capabilities::default(),
            tls,
        };
        let greet = c.read_reply(t, "greeting").await?;
        if greet.code != 220 {
            return Err(SmtpError::Refused {
                stage: "greeting",
                reply: greet,
            });
        }
        c.ehlo(&ep.helo, ep.timeouts.command).await?;
        if !c.tls && ep.starttls != StartTls::Off {
            if c.caps.starttls {
                c.send(b"STARTTLS\r\n").await?;
                let r = c.read_reply(ep.timeouts.command, "STARTTLS").await?;
                if r.code != 220 {
                    if ep.starttls == StartTls::Required {
                        return Err(SmtpError::Refused {
                            stage: "STARTTLS",
                            reply: r,
                        });
                    }
                } else {
                    // RFC 3207 §4.2: forget everything learned before the handshake, including any
                    // bytes the server sent early (command-injection defence), and EHLO again.
                    c.rbuf.clear();
                    c.rpos = 0;
                    let s = std::mem::replace(&mut c.stream, Stream::Detached);
                    c.stream = upgrade(s, &ep.host, ep.starttls == StartTls::Required, t).await?;
                    c.tls = true;
                    c.caps = Capabilities::default();
                    // TLS 1.3 servers refuse a client (say, for want of a client certificate)
                    // after our side of the handshake is done: the alert arrives with the
                    // first read. That is a failed handshake too, not a lost connection.
                    c.ehlo(&ep.helo, ep.timeouts.command)
                        .await
                        .map_err(|e| match e {
                            SmtpError::Io(io) if ep.starttls == StartTls::Opportunistic => {
                                SmtpError::Tls(format!(
                                    "{}: {io} (right after the handshake)",
                                    ep.host
                                ))
                            }
                            e => e,
                        })?;
                }
            } else if ep.starttls == StartTls::Required {
                return Err(SmtpError::Policy(format!(
                    "{}:{} does not offer STARTTLS and lane.starttls = \"required\"",
                    ep.host, ep.port
                )));
            }
        }
        if let Some(auth) = &ep.auth {
            let loopback = c.peer_is_loopback();
            if !c.tls && !loopback {
                return Err(SmtpError::Policy(
                    "refusing to send AUTH without TLS to a non-loopback relay".into(),
                ));
            }
            if !c.caps.auth.iter().any(|m| m == "PLAIN") {
                return Err(SmtpError::Policy(format!(
                    "relay offers no AUTH PLAIN (offers: {:?})",
                    c.caps.auth
                )));
            }
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "\0{}\0{}",
                auth.username,
                auth.password.expose()
            ));
            c.send(format!("AUTH PLAIN {token}\r\n").as_bytes()).await?;
            let r = c.read_reply(ep.timeouts.command, "AUTH").await?;
            if r.code != 235 {
                return Err(SmtpError::Refused {
                    stage: "AUTH",
                    reply: r,
                });
            }
        }
        Ok(c)
    }

    fn peer_is_loopback(&self) -> bool {
        self.peer().is_some_and(|a| a.ip().is_loopback())
    }

    /// The server's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        match &self.stream {
            Stream::Plain(s) => s.peer_addr().ok(),
            Stream::Tls(s) => s.get_ref().0.peer_addr().ok(),
            Stream::Detached => None,
        }
    }

    /// The address this side is bound to (the source IP the server sees, before any NAT).
    pub fn local(&self) -> Option<SocketAddr> {
        match &self.stream {
            Stream::Plain(s) => s.local_addr().ok(),
            Stream::Tls(s) => s.get_ref().0.local_addr().ok(),
            Stream::Detached => None,
        }
    }

    async fn ehlo(&mut self, helo: &str, t: Duration) -> Result<(), SmtpError> {
        self.send(format!("EHLO {helo}\r\n").as_bytes()).await?;
        let (r, lines) = self.read_reply_lines(t, "EHLO").await?;
        if r.code == 250 {
            let mut caps = Capabilities::default();
            for l in lines.iter().skip(1) {
                let up = l.to_ascii_uppercase();
                let mut words = up.split_whitespace();
                match words.next() {
                    Some("PIPELINING") => caps.pipelining = true,
                    Some("SMTPUTF8") => caps.smtputf8 = true,
                    Some("STARTTLS") => caps.starttls = true,
                    Some("8BITMIME") => caps.eightbitmime = true,
                    Some("DSN") => caps.dsn = true,
                    Some("SIZE") => {
                        caps.size = words.next().and_then(|n| n.parse().ok()).unwrap_or(0)
                    }
                    Some("AUTH") => caps.auth = words.map(str::to_string).collect(),
                    _ => {}
                }
            }
            self.caps = caps;
            return Ok(());
        }
        if r.code == 421 {
            // Closing, not pre-ESMTP: a HELO would only meet a closed connection, and the
            // 421 (throttling) would be lost as a connection error.
            return Err(SmtpError::Refused {
                stage: "EHLO",
                reply: r,
            });
        }
        // Pre-ESMTP server: HELO, no extensions.
        self.send(format!("HELO {helo}\r\n").as_bytes()).await?;
        let r2 = self.read_reply(t, "HELO").await?;
        if r2.code != 250 {
            return Err(SmtpError::Refused {
                stage: "EHLO",
                reply: r,
            });
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// Writes bytes (a command group or a message body) and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads one (possibly multi-line) reply within `t`.
    pub async fn read_reply(
        &mut self,
        t: Duration,
        what: &'static str,
    ) -> Result<Reply, SmtpError> {
        Ok(self.read_reply_lines(t, what).await?.0)
    }

    async fn read_reply_lines(
        &mut self,
        t: Duration,
        what: &'static str,
    ) -> Result<(Reply, Vec<String>), SmtpError> {
        tokio::time::timeout(t, self.read_reply_inner())
            .await
            .map_err(|_| SmtpError::Timeout(what))?
    }

    async fn read_line(&mut self) -> Result<String, SmtpError> {
        loop {
            if let Some(nl) = self.rbuf[self.rpos..].iter().position(|&b| b == b'\n') {
                let end = self.rpos + nl;
                let line = String::from_utf8_lossy(&self.rbuf[self.rpos..end])
                    .trim_end_matches('\r')
                    .to_string();
                self.rpos = end + 1;
                if self.rpos == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rpos = 0;
                }
                return Ok(line);
            }
            if self.rbuf.len() - self.rpos > MAX_REPLY_LINE {
                return Err(SmtpError::Protocol("reply line too long".into()));
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let mut tmp = [0u8; 8192];
            let n = self.stream.read(&mut tmp).await?;
            if n == 0 {
                return Err(SmtpError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by server",
                )));
            }
            self.rbuf.extend_from_slice(&tmp[..n]);
        }
    }

    async fn read_reply_inner(&mut self) -> Result<(Reply, Vec<String>), SmtpError> {
        let mut lines = Vec::new();
        let mut text = String::new();
        loop {
            let line = self.read_line().await?;
            if crate::verbose::on() {
                eprintln!("blast: smtp <- {}", line.escape_debug());
            }
            let b = line.as_bytes();
            if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
                return Err(SmtpError::Protocol(line));
            }
            let code: u16 = line[..3]
                .parse()
                .map_err(|_| SmtpError::Protocol(line.clone()))?;
            let more = b.get(3) == Some(&b'-');
            let rest = line.get(4..).unwrap_or("").to_string();
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&rest);
            lines.push(rest);
            if !more {
                return Ok((Reply { code, text }, lines));
            }
            if lines.len() > MAX_REPLY_LINES {
                return Err(SmtpError::Protocol("reply with too many lines".into()));
            }
        }
    }

    /// Politely ends the session (best effort, short timeout).
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            self.send(b"QUIT\r\n").await?;
            self.read_reply(Duration::from_secs(5), "QUIT").await
        })
        .await;
        let _ = self.stream.shutdown().await;
    }
}

async fn upgrade(s: Stream, host: &str, verify: bool, t: Duration) -> Result<Stream, SmtpError> {
    let Stream::Plain(tcp) = s else {
        return Ok(s);
    };
    let cfg = if verify {
        super::tls::verified()
    } else {
        super::tls::opportunistic()
    };
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| SmtpError::Policy(format!("bad TLS server name {host:?}: {e}")))?;
    let tls = tokio::time::timeout(t, tokio_rustls::TlsConnector::from(cfg).connect(name, tcp))
        .await
        .map_err(|_| SmtpError::Timeout("TLS handshake"))?
        .map_err(|e| {
            if verify {
                SmtpError::Policy(format!("TLS handshake with {host} failed: {e}"))
            } else {
                SmtpError::Tls(format!("{host}: {e}"))
            }
        })?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// A TCP connection to `addr` with TCP_NODELAY, bound to `source` when given, within `t`.
pub async fn connect_tcp(
    addr: SocketAddr,
    source: Option<IpAddr>,
    t: Duration,
) -> io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_nodelay(true)?;
    if let Some(src) = source {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    match tokio::time::timeout(t, sock.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {addr} timed out"),
        )),
    }
}
