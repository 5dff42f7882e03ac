//! Transports: an SMTP client connection of our own ([`smtp`], with PIPELINING, STARTTLS and
//! AUTH over a socket we create: TCP_NODELAY and the lane's source IP), the `outbox:` writer
//! ([`outbox`]), and the wire encoding both rely on ([`wire`]).

pub mod outbox;
pub mod smtp;
pub mod stream;
pub mod tls;
pub mod wire;
