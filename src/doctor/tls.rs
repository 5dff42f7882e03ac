//! The lane's TLS to its relay (`transport = "smtp://…"`, `"smtps://…"`): connect as the
//! lane would (bound to `source_ip`, EHLO with its name; no AUTH, no mail), see whether
//! STARTTLS is offered and its handshake succeeds, and — when `starttls = "required"` or
//! for `smtps://` — whether the certificate is valid for the relay's host name (Mozilla
//! roots, as the lane verifies). Direct delivery (`transport = "mx"`) has no one relay: its
//! TLS is per receiving host and policy, so there is no row; nor for an outbox.

use std::time::Duration;

use super::Row;
use crate::config::StartTls;
use crate::transport::smtp::{Connection, Endpoint, SmtpError};

/// A probe waits at most this long to connect and greet, and this long per command: a
/// doctor run must not hang on a silent relay for the lane's minutes-long timeouts.
const CONNECT: Duration = Duration::from_secs(10);
const COMMAND: Duration = Duration::from_secs(30);

/// The relay to probe: the lane's endpoint without credentials (the doctor never logs in).
pub fn probe_endpoint(lane_ep: Option<Endpoint>) -> Option<Endpoint> {
    lane_ep.map(|mut ep| {
        ep.auth = None;
        ep.timeouts.connect = ep.timeouts.connect.min(CONNECT);
        ep.timeouts.command = ep.timeouts.command.min(COMMAND);
        ep
    })
}

/// Connects with `starttls` instead of the lane's policy.
async fn open(ep: &Endpoint, starttls: StartTls) -> Result<Connection, SmtpError> {
    let mut ep = ep.clone();
    ep.starttls = starttls;
    let c = Connection::open(&ep).await?;
    Ok(c)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The one `tls HOST:PORT` row.
pub async fn check(ep: &Endpoint) -> Row {
    let at = format!("{}:{}", ep.host, ep.port);
    let name = format!("tls {at}");
    let cant = |e: SmtpError| {
        Row::warn(
            name.clone(),
            format!("could not check: {e}"),
            "check [lane] transport and that the relay is reachable from here, then rerun",
        )
    };
    let untrusted = |e: String| {
        Row::fail(
            name.clone(),
            format!("the certificate is not valid for {}: {e}", ep.host),
            format!(
                "install a certificate for {} from a public CA on the relay (or set [lane] starttls = \"opportunistic\")",
                ep.host
            ),
        )
    };
    if ep.implicit_tls {
        // smtps:// always verifies: a bad certificate fails the handshake, so no mail goes.
        return match open(ep, ep.starttls).await {
            Ok(c) => {
                c.quit().await;
                Row::pass(
                    name,
                    format!("implicit TLS, certificate valid for {}", ep.host),
                )
            }
            Err(SmtpError::Policy(e)) => untrusted(e),
            Err(e) => cant(e),
        };
    }
    if ep.starttls == StartTls::Off && is_loopback(&ep.host) {
        return Row::pass(
            name,
            "loopback relay with starttls = \"off\": nothing crosses a network",
        );
    }
    // First: is STARTTLS offered, and does its handshake work at all (any certificate)?
    let offered = match open(ep, StartTls::Opportunistic).await {
        Ok(c) => {
            let tls = c.tls;
            c.quit().await;
            tls
        }
        Err(SmtpError::Tls(e)) if ep.starttls != StartTls::Off => {
            return Row::fail(
                name,
                format!("STARTTLS is offered but the handshake fails: {e}"),
                "fix the relay's TLS set-up (certificate and key, protocol versions); the lane cannot send until then",
            )
        }
        Err(SmtpError::Tls(e)) => {
            return Row::warn(
                name,
                format!("STARTTLS is offered but its handshake fails ({e}); starttls = \"off\" sends in cleartext"),
                "fix the relay's TLS set-up, then set [lane] starttls = \"opportunistic\"",
            )
        }
        Err(e) => return cant(e),
    };
    match (offered, ep.starttls) {
        (false, StartTls::Required) => Row::fail(
            name,
            format!("{at} does not offer STARTTLS and [lane] starttls = \"required\": nothing can be sent"),
            "enable STARTTLS on the relay (or use smtps://)",
        ),
        (false, _) => Row::warn(
            name,
            format!("{at} does not offer STARTTLS: mail (and any AUTH) crosses in cleartext"),
            "enable STARTTLS on the relay, or use smtps://",
        ),
        (true, StartTls::Off) => Row::warn(
            name,
            format!("{at} offers STARTTLS but [lane] starttls = \"off\": mail crosses in cleartext"),
            "set [lane] starttls = \"opportunistic\" (or \"required\")",
        ),
        (true, StartTls::Opportunistic) => Row::pass(
            name,
            "STARTTLS offered, handshake succeeds (certificate not verified: starttls = \"opportunistic\")",
        ),
        // Then, as the lane will: verified against the Mozilla roots and the host name.
        (true, StartTls::Required) => match open(ep, StartTls::Required).await {
            Ok(c) => {
                c.quit().await;
                Row::pass(name, format!("STARTTLS, certificate valid for {}", ep.host))
            }
            Err(SmtpError::Policy(e)) => untrusted(e),
            Err(e) => cant(e),
        },
    }
}
