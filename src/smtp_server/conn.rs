//! One server-side SMTP connection: buffered line reading with a length limit, replies
//! queued and flushed only when the input buffer is empty (so pipelined commands get their
//! replies in one write), the STARTTLS upgrade and a graceful close.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Flow;

/// Read buffer per connection; pipelined input up to this size is answered in one write.
const READ_BUFFER: usize = 64 * 1024;
/// Longest a STARTTLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection: cleartext, or TLS after STARTTLS.
pub type Stream = crate::transport::stream::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// Result of reading one line.
#[derive(Clone, Copy, Debug)]
pub struct Line {
    /// Bytes the line really had (more than stored when truncated); 0 at EOF.
    pub total: usize,
    /// Ended with LF (false: EOF in the middle of a line).
    pub complete: bool,
    /// Ended with CRLF, judged on the real line even when the stored copy is truncated.
    pub crlf: bool,
}

/// A server connection with its read buffer and pending replies.
pub struct Conn {
    /// Reads are buffered; writes go straight to the stream (`get_mut`).
    io: BufReader<Stream>,
    out: Vec<u8>,
    /// Every read and write waits at most this long, so a stuck client never pins a task.
    idle: Duration,
}

impl Conn {
    /// Wraps an accepted TCP stream (sets TCP_NODELAY: replies are small and
    /// latency-bound, Nagle would stall lock-step clients).
    pub fn new(stream: TcpStream, idle: Duration) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            io: BufReader::with_capacity(READ_BUFFER, Stream::Plain(stream)),
            out: Vec::with_capacity(4096),
            idle,
        }
    }

    /// Queues a reply line; it is sent at the next flush.
    pub fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes the queued replies.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let s = self.io.get_mut();
            with_timeout(self.idle, async {
                s.write_all(&self.out).await?;
                // A TLS stream buffers records until flushed.
                s.flush().await
            })
            .await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Whether input is already buffered (a pipelined command waits to be read).
    pub fn has_input(&self) -> bool {
        !self.io.buffer().is_empty()
    }

    /// Waits until input is available (`false`: EOF), without flushing. Cancel-safe:
    /// nothing is consumed or written, so it can race a shutdown signal between commands
    /// (flush first).
    pub async fn wait_input(&mut self) -> io::Result<bool> {
        if self.has_input() {
            return Ok(true);
        }
        Ok(!with_timeout(self.idle, self.io.fill_buf())
            .await?
            .is_empty())
    }

    /// Reads through the next LF into `buf` (cleared first), storing at most `limit`
    /// bytes but consuming the whole line. Flushes pending replies first if it must
    /// wait for input.
    pub async fn read_line(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<Line> {
        buf.clear();
        let mut total = 0;
        // Last byte of the previous chunk: a CR there and the LF in the next still make CRLF.
        let mut prev = 0u8;
        loop {
            let avail = if self.io.buffer().is_empty() {
                self.flush().await?;
                with_timeout(self.idle, self.io.fill_buf()).await?
            } else {
                self.io.buffer()
            };
            if avail.is_empty() {
                return Ok(Line {
                    total,
                    complete: false,
                    crlf: false,
                });
            }
            let (n, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            let room = limit.saturating_sub(buf.len());
            buf.extend_from_slice(&avail[..n.min(room)]);
            let before_lf = if n >= 2 { avail[n - 2] } else { prev };
            prev = avail[n - 1];
            total += n;
            self.io.consume(n);
            if done {
                return Ok(Line {
                    total,
                    complete: true,
                    crlf: before_lf == b'\r',
                });
            }
        }
    }

    /// Reads the next command line into `buf` without its line ending. Lines over `limit`
    /// are answered `500 5.5.2` here and skipped. `None`: EOF (possibly mid-line); otherwise
    /// whether the line ended with CRLF (false: a bare LF).
    pub async fn read_command(
        &mut self,
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> io::Result<Option<bool>> {
        loop {
            let l = self.read_line(buf, limit).await?;
            if !l.complete {
                return Ok(None);
            }
            if buf.len() < l.total {
                self.reply("500 5.5.2 line too long");
                continue;
            }
            buf.truncate(buf.len() - if l.crlf { 2 } else { 1 });
            return Ok(Some(l.crlf));
        }
    }

    /// Ends a session the way its command loop left it: a polite close after a final reply
    /// ([`Flow::Close`]), `421 4.4.2` and close after the idle timeout, else (EOF, abort, a
    /// broken connection) just drops the socket.
    pub async fn finish(mut self, end: io::Result<Flow>) {
        match end {
            Ok(Flow::Close) => self.close_gracefully().await,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                self.reply("421 4.4.2 idle timeout, closing");
                self.close_gracefully().await;
            }
            _ => {}
        }
    }

    /// Graceful close after a final reply (421, 221): send it, half-close, and read
    /// what the client still sends for a moment, so that the kernel does not answer
    /// unread input with a RST that could destroy our last reply in flight.
    pub async fn close_gracefully(mut self) {
        if self.flush().await.is_err() {
            return;
        }
        let _ = self.io.get_mut().shutdown().await;
        let mut sink = [0u8; 8192];
        let drain = async {
            let mut left: usize = 256 * 1024;
            while left > 0 {
                match self.io.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }

    /// STARTTLS after the `220` (or TLS from the first byte): sends pending replies, drops
    /// whatever the client pipelined after the command (RFC 3207 §4.2, CVE-2011-0411: it
    /// was sent in the clear and must not be acted on) and runs the handshake. Returns how
    /// many bytes were dropped.
    pub async fn start_tls(&mut self, cfg: Arc<rustls::ServerConfig>) -> io::Result<usize> {
        self.flush().await?;
        let dropped = self.io.buffer().len();
        let old = std::mem::replace(&mut self.io, BufReader::with_capacity(1, Stream::Detached));
        let Stream::Plain(tcp) = old.into_inner() else {
            return Err(io::Error::other(
                "STARTTLS on a stream that is not plain TCP",
            ));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "TLS handshake timed out",
                ))
            }
        };
        self.io = BufReader::with_capacity(READ_BUFFER, Stream::Tls(Box::new(tls)));
        Ok(dropped)
    }
}

async fn with_timeout<T>(
    idle: Duration,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(idle, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
    }
}
