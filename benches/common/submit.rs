//! A minimal SMTP submission client for the serve benches: one authenticated session,
//! reused for many messages (what a real application's mail library does). Every read has a
//! timeout so a stuck server ends the bench instead of hanging it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(30);

/// An open, authenticated submission session.
pub struct Session {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Session {
    /// Connects, says EHLO and authenticates with AUTH PLAIN (loopback: no TLS needed).
    pub async fn open(addr: SocketAddr, user: &str, pass: &str) -> std::io::Result<Session> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut s = Session {
            r: BufReader::new(r),
            w,
        };
        s.expect(2).await?;
        s.cmd("EHLO bench.example\r\n", 2).await?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        s.cmd(&format!("AUTH PLAIN {token}\r\n"), 2).await?;
        Ok(s)
    }

    async fn reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            let n = tokio::time::timeout(T, self.r.read_line(&mut l))
                .await
                .map_err(|_| std::io::Error::other("reply timeout"))??;
            if n == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    }

    async fn expect(&mut self, class: u8) -> std::io::Result<String> {
        let r = self.reply().await?;
        if r.as_bytes().first() != Some(&(b'0' + class)) {
            return Err(std::io::Error::other(format!("unexpected reply: {r}")));
        }
        Ok(r)
    }

    async fn cmd(&mut self, c: &str, class: u8) -> std::io::Result<String> {
        self.w.write_all(c.as_bytes()).await?;
        self.expect(class).await
    }

    /// Sends one message (MAIL, RCPT and DATA pipelined, RFC 2920); returns the 250 reply.
    pub async fn send(&mut self, from: &str, to: &str, subject: &str) -> std::io::Result<String> {
        let head = format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
        self.w.write_all(head.as_bytes()).await?;
        self.expect(2).await?;
        self.expect(2).await?;
        self.expect(3).await?;
        let body = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nYour one-time code is 424242.\r\n.\r\n"
        );
        self.w.write_all(body.as_bytes()).await?;
        self.expect(2).await
    }
}
