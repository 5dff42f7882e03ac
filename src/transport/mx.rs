//! `transport = "mx"`: direct delivery to each recipient domain's mail exchangers, through
//! the same SMTP client and transaction as a relay ([`super::smtp`], [`super::session`]).
//! What is particular to it: the hosts come from DNS ([`crate::dns`]) and are tried by
//! preference (random within one), the next host when one refuses or times out; STARTTLS is
//! opportunistic with any certificate, and a host whose handshake fails is retried once in
//! plaintext (RFC 7435: an MX that cannot do TLS right still gets mail); `starttls =
//! "required"` verifies the certificate against the MX host name. Sessions are kept per MX
//! host ([`Pool`]) so domains sharing one host share its connections, and every attempt is
//! written to the accounting file ([`super::accounting`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::accounting::{Accounting, Attempt};
use super::smtp::{connect_tcp, Connection, Endpoint, SmtpError};
use super::{Peer, Session};
use crate::classify::{classify, Class, Stage};
use crate::config::{LaneSettings, StartTls};
use crate::dns::{Answer, MxSet, Resolver};

/// Direct delivery: the resolver, how to greet MX hosts, the accounting file.
pub struct Mx {
    /// MX lookups and their cache.
    pub resolver: Arc<Resolver>,
    /// Greeting, TLS policy, source IP and timeouts of every MX connection (`host` is set per
    /// host).
    template: Endpoint,
    /// One line per attempt.
    pub accounting: Option<Accounting>,
}

/// What to do with a recipient domain, from its DNS answer.
#[derive(Debug, Clone)]
pub enum Route {
    /// Deliver to one of these hosts.
    Hosts(Arc<MxSet>),
    /// Final without a connection: null MX, confirmed NXDOMAIN (bounce), or a temporary DNS
    /// failure (defer). The reply is what the accounting file and the record say.
    Refuse {
        /// The reply's class.
        class: Class,
        /// A reply in SMTP form.
        reply: String,
    },
    /// Not decided yet (a lookup running, an NXDOMAIN waiting for its confirmation).
    Wait(String),
}

impl Route {
    /// What an answer means for delivery.
    pub fn of(domain: &str, a: Option<Answer>) -> Route {
        let refuse = |code: u16, text: String| Route::Refuse {
            class: classify(Stage::Rcpt, code, &text),
            reply: format!("{code} {text}"),
        };
        match a {
            None => Route::Wait(format!("looking up the MX of {domain}")),
            Some(Answer::Hosts(set)) => Route::Hosts(set),
            Some(Answer::NullMx) => refuse(
                550,
                format!("5.1.10 {domain} accepts no mail (null MX, RFC 7505)"),
            ),
            Some(Answer::NoSuchDomain {
                why,
                confirmed: true,
                ..
            }) => refuse(550, format!("5.1.2 {why} (confirmed by a second lookup)")),
            Some(Answer::NoSuchDomain { why, .. }) => {
                Route::Wait(format!("{why}; waiting to confirm it with a second lookup"))
            }
            Some(Answer::Temporary(why)) => Route::Refuse {
                class: Class::Transient,
                reply: format!("451 4.4.3 {why}"),
            },
        }
    }
}

impl Mx {
    /// The MX transport of a lane: its resolver (`[dns] nameservers`), the MX port, and the
    /// accounting file when the settings name one.
    pub fn for_lane(s: &LaneSettings) -> Result<Mx, String> {
        let ipv4_only = s.source_ip.is_some_and(|ip| ip.is_ipv4());
        let resolver = Resolver::new(&s.nameservers, ipv4_only, s.backoff)?;
        let accounting = match &s.accounting {
            Some(p) => Some(
                Accounting::open(p)
                    .map_err(|e| format!("cannot open the accounting file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Mx {
            resolver,
            template: Endpoint {
                host: String::new(),
                port: s.mx_port,
                implicit_tls: false,
                starttls: s.starttls,
                source_ip: s.source_ip,
                helo: s.helo.clone(),
                auth: None,
                timeouts: s.timeouts,
            },
            accounting,
        })
    }

    /// The route of `domain` now (from the cache; starts a lookup when there is none).
    pub fn route(&self, domain: &str) -> Route {
        Route::of(domain, self.resolver.poll(domain))
    }

    /// The port MX hosts are reached on.
    pub fn port(&self) -> u16 {
        self.template.port
    }

    /// Connects to the first host of `set` that takes a session: by preference, random
    /// within one; each address of a host in turn; a host that refuses, times out or says
    /// no in its greeting gives way to the next. The error is the last host's.
    pub async fn connect(&self, set: &MxSet) -> Result<(Connection, Peer), SmtpError> {
        let t = self.template.timeouts.connect;
        let source = self.template.source_ip;
        let mut last: Option<SmtpError> = None;
        for host in set.ordered() {
            let ep = Endpoint {
                host: host.name.clone(),
                ..self.template.clone()
            };
            for &ip in &host.addrs {
                if source.is_some_and(|s| s.is_ipv4() != ip.is_ipv4()) {
                    continue;
                }
                let addr = SocketAddr::new(ip, ep.port);
                match self.greet(addr, &ep, t).await {
                    Ok(c) => {
                        let peer = Peer {
                            host: Arc::from(host.name.as_str()),
                            addr: Some(addr),
                            local: c.local().map(|a| a.ip()),
                            tls: c.tls,
                        };
                        return Ok((c, peer));
                    }
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            SmtpError::Policy(format!(
                "no MX host address of the source IP's family ({})",
                source.map_or("any".into(), |s| s.to_string())
            ))
        }))
    }

    async fn greet(
        &self,
        addr: SocketAddr,
        ep: &Endpoint,
        t: Duration,
    ) -> Result<Connection, SmtpError> {
        let source = ep.source_ip;
        let tcp = connect_tcp(addr, source, t).await?;
        match Connection::establish(tcp, ep).await {
            Err(SmtpError::Tls(why)) if ep.starttls == StartTls::Opportunistic => {
                // Once more without STARTTLS: a host with a broken TLS stack still takes
                // mail in plaintext, as it would from any MTA.
                let plain = Endpoint {
                    starttls: StartTls::Off,
                    ..ep.clone()
                };
                let tcp = connect_tcp(addr, source, t).await?;
                Connection::establish(tcp, &plain).await.map_err(|e| {
                    SmtpError::Protocol(format!("{e} (after a failed TLS handshake: {why})"))
                })
            }
            r => r,
        }
    }

    /// Writes one attempt to the accounting file (when there is one).
    pub fn account(&self, rcpt: &str, peer: Option<&Peer>, reply: &str) {
        let Some(acc) = &self.accounting else { return };
        acc.record(&Attempt {
            time: super::accounting::now(),
            rcpt,
            source_ip: peer.and_then(|p| p.local).or(self.template.source_ip),
            mx_host: peer.map(|p| &*p.host),
            mx_addr: peer.and_then(|p| p.addr),
            tls: peer.is_some_and(|p| p.tls),
            reply,
        });
    }
}

/// Idle sessions kept per MX host, and the cap on sessions open at once: each session holds a
/// permit of one semaphore of `connections` permits, so idle ones count against the cap and
/// the oldest idle one is closed when a new one is needed.
pub struct Pool<T> {
    idle: Mutex<Vec<(Instant, Session<T>)>>,
    permits: Arc<Semaphore>,
}

impl<T> Pool<T> {
    /// A pool of at most `connections` sessions.
    pub fn new(connections: usize) -> Pool<T> {
        Pool {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(connections.max(1))),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, Session<T>)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle session to one of `set`'s hosts (the most preferred host first).
    pub fn take(&self, set: &MxSet) -> Option<Session<T>> {
        let mut idle = self.idle();
        let best = set.hosts.iter().find_map(|h| {
            idle.iter()
                .position(|(_, s)| s.peer().is_some_and(|p| *p.host == h.name))
        })?;
        Some(idle.swap_remove(best).1)
    }

    /// Keeps a session for reuse. Returns the ones to close: sessions idle longer than
    /// `max_idle`.
    pub fn put(&self, s: Session<T>, max_idle: Duration) -> Vec<Session<T>> {
        let mut idle = self.idle();
        idle.push((Instant::now(), s));
        let (keep, old): (Vec<_>, Vec<_>) = std::mem::take(&mut *idle)
            .into_iter()
            .partition(|(at, _)| at.elapsed() < max_idle);
        *idle = keep;
        old.into_iter().map(|(_, s)| s).collect()
    }

    /// Sessions idle longer than `max_idle`, to close.
    pub fn expired(&self, max_idle: Duration) -> Vec<Session<T>> {
        let mut idle = self.idle();
        let (keep, old): (Vec<_>, Vec<_>) = std::mem::take(&mut *idle)
            .into_iter()
            .partition(|(at, _)| at.elapsed() < max_idle);
        *idle = keep;
        old.into_iter().map(|(_, s)| s).collect()
    }

    /// A permit for a new session. When all are taken, the oldest idle session is handed
    /// back to be closed (its permit is freed when it is dropped) and the wait is bounded.
    pub async fn permit(&self) -> (Option<OwnedSemaphorePermit>, Option<Session<T>>) {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return (Some(p), None);
        }
        let oldest = {
            let mut idle = self.idle();
            let i = idle
                .iter()
                .enumerate()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(i, _)| i);
            i.map(|i| idle.swap_remove(i).1)
        };
        if let Some(mut s) = oldest {
            // Its permit moves to the new session; the old one is closed by the caller.
            return (s.permit.take(), Some(s));
        }
        let p = tokio::time::timeout(
            Duration::from_secs(30),
            self.permits.clone().acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok);
        (p, None)
    }

    /// Opens a session to `set` through `mx` under the pool's cap; an idle session it had to
    /// give up for the cap is closed first.
    pub async fn open(&self, mx: &Mx, set: &MxSet) -> Result<Session<T>, SmtpError> {
        let (permit, evicted) = self.permit().await;
        if let Some(s) = evicted {
            s.close().await;
        }
        let (conn, peer) = mx.connect(set).await?;
        let mut s = Session::smtp(conn, mx.template.timeouts, Some(peer));
        s.permit = permit;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(prefs: &[(&str, u16)]) -> MxSet {
        MxSet::of(prefs)
    }

    /// A session that says it is connected to `host` (a stub underneath: no network).
    async fn session(host: &str, permit: Option<OwnedSemaphorePermit>) -> Session<()> {
        let stub = super::super::Connector::Stub(Default::default());
        let mut s: Session<()> = stub.open().await.unwrap();
        s.peer = Some(Peer {
            host: Arc::from(host),
            addr: None,
            local: None,
            tls: false,
        });
        s.permit = permit;
        s
    }

    #[test]
    fn dns_answers_become_routes() {
        use crate::dns::Answer;
        let now = Instant::now();
        let refused = |a: Option<Answer>| match Route::of("d.test", a) {
            Route::Refuse { class, reply } => (class, reply),
            r => panic!("{r:?}"),
        };
        let (class, reply) = refused(Some(Answer::NullMx));
        assert_eq!(
            class,
            Class::AddressPermanent,
            "a null MX suppresses: {reply}"
        );
        assert!(reply.starts_with("550 5.1.10"), "{reply}");
        let nx = |confirmed| Answer::NoSuchDomain {
            why: "d.test: NXDOMAIN".into(),
            confirmed,
            retry_at: now,
        };
        let (class, reply) = refused(Some(nx(true)));
        assert_eq!(class, Class::AddressPermanent);
        assert!(reply.starts_with("550 5.1.2"), "{reply}");
        assert!(matches!(
            Route::of("d.test", Some(nx(false))),
            Route::Wait(_)
        ));
        assert!(matches!(Route::of("d.test", None), Route::Wait(_)));
        let (class, reply) = refused(Some(Answer::Temporary("SERVFAIL".into())));
        assert_eq!(class, Class::Transient);
        assert!(reply.starts_with("451 4.4.3"), "{reply}");
    }

    #[tokio::test]
    async fn an_idle_session_to_the_most_preferred_host_is_taken_first() {
        let pool: Pool<()> = Pool::new(4);
        let hour = Duration::from_secs(3600);
        assert!(pool.put(session("mx2.a.test", None).await, hour).is_empty());
        assert!(pool.put(session("mx1.a.test", None).await, hour).is_empty());
        let a = set(&[("mx1.a.test", 10), ("mx2.a.test", 20)]);
        let got = pool.take(&a).unwrap();
        assert_eq!(&*got.peer().unwrap().host, "mx1.a.test");
        assert!(pool.take(&set(&[("other.test", 10)])).is_none());
        assert_eq!(&*pool.take(&a).unwrap().peer().unwrap().host, "mx2.a.test");
        assert!(pool.take(&a).is_none());
    }

    #[tokio::test]
    async fn the_cap_counts_idle_sessions_and_evicts_the_oldest() {
        let pool: Pool<()> = Pool::new(2);
        let hour = Duration::from_secs(3600);
        let (p1, none) = pool.permit().await;
        assert!(p1.is_some() && none.is_none());
        pool.put(session("old.test", p1).await, hour);
        let (p2, _) = pool.permit().await;
        pool.put(session("new.test", p2).await, hour);
        // Both permits are held by idle sessions: the oldest gives its permit up.
        let (p3, evicted) = pool.permit().await;
        assert!(p3.is_some());
        assert_eq!(&*evicted.unwrap().peer().unwrap().host, "old.test");
        assert!(pool.take(&set(&[("new.test", 0)])).is_some());
    }
}
