//! Who may do what: relay networks, where AUTH may be offered, connection counts per IP and
//! the failed-AUTH block list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whether AUTH may be used on this session: only over TLS or from loopback, so a password
/// never crosses a network in the clear (RFC 4954 §4; otherwise `538 5.7.11`).
pub fn auth_permitted(tls: bool, client: IpAddr) -> bool {
    tls || client.to_canonical().is_loopback()
}

/// Whether `ip` is in one of the `(network, prefix length)` CIDRs. An IPv4-mapped IPv6
/// client is matched as IPv4.
pub fn in_networks(ip: IpAddr, networks: &[(IpAddr, u8)]) -> bool {
    let ip = ip.to_canonical();
    networks
        .iter()
        .any(|&(net, len)| match (ip, net.to_canonical()) {
            (IpAddr::V4(a), IpAddr::V4(n)) => prefix_eq(&a.octets(), &n.octets(), len),
            (IpAddr::V6(a), IpAddr::V6(n)) => prefix_eq(&a.octets(), &n.octets(), len),
            _ => false,
        })
}

/// The first `len` bits of `a` and `b` are equal (`len` beyond the address length: all bits).
fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let bits = usize::from(len).min(a.len() * 8);
    let (full, rest) = (bits / 8, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// Open connections per client IP, released by dropping the [`IpSlot`].
#[derive(Default)]
pub(super) struct ConnCounts {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection.
pub(super) struct IpSlot<'a> {
    counts: &'a ConnCounts,
    ip: IpAddr,
}

impl ConnCounts {
    /// Counts a connection from `ip` unless it already has `max` open.
    pub(super) fn try_take(&self, ip: IpAddr, max: usize) -> Option<IpSlot<'_>> {
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { counts: self, ip })
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.counts.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Failed AUTH attempts per client IP: `limit` failures within `window` block further AUTH
/// from that IP for `window` (counted per IP, not per connection, so reconnecting does not
/// reset it; a success does not reset it either, or one known account would let an
/// attacker keep guessing others).
pub(super) struct AuthFailures {
    limit: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

/// Above this many tracked IPs, entries whose window has passed are dropped (bounds memory
/// under a distributed attack).
const MAX_TRACKED: usize = 10_000;

/// The unit failures are counted per: an IPv4 address, or an IPv6 /64 (one host usually
/// owns a whole /64, so counting single v6 addresses would never block it).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

impl AuthFailures {
    pub(super) fn new(limit: u32, window: Duration) -> Self {
        AuthFailures {
            limit: limit.max(1),
            window,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Whether AUTH from `ip` is blocked now.
    pub(super) fn blocked(&self, ip: IpAddr) -> bool {
        let ip = client_key(ip);
        let m = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&ip)
            .and_then(|f| f.blocked_until)
            .is_some_and(|t| Instant::now() < t)
    }

    /// Records a failure; returns whether `ip` is now blocked.
    pub(super) fn fail(&self, ip: IpAddr) -> bool {
        let ip = client_key(ip);
        let now = Instant::now();
        let mut m = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_TRACKED && !m.contains_key(&ip) {
            let window = self.window;
            m.retain(|_, f| {
                now.duration_since(f.since) < window || f.blocked_until.is_some_and(|t| now < t)
            });
            if m.len() >= MAX_TRACKED {
                // Still full: forget the oldest unblocked entry, so memory stays bounded.
                let oldest = m
                    .iter()
                    .filter(|(_, f)| f.blocked_until.is_none())
                    .min_by_key(|(_, f)| f.since)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    m.remove(&k);
                }
            }
        }
        let f = m.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
            blocked_until: None,
        });
        if now.duration_since(f.since) >= self.window {
            (f.count, f.since) = (0, now);
        }
        f.count += 1;
        if f.count >= self.limit {
            f.blocked_until = Some(now + self.window);
            (f.count, f.since) = (0, now);
        }
        f.blocked_until.is_some_and(|t| now < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_failures_count_per_64() {
        let a = AuthFailures::new(2, Duration::from_secs(60));
        assert!(!a.fail(ip("2001:db8:1:2::1")));
        assert!(
            a.fail(ip("2001:db8:1:2::ffff")),
            "same /64: second failure blocks"
        );
        assert!(a.blocked(ip("2001:db8:1:2:abcd::9")));
        assert!(
            !a.blocked(ip("2001:db8:1:3::1")),
            "another /64 is not blocked"
        );
    }

    #[test]
    fn auth_needs_tls_off_loopback() {
        assert!(auth_permitted(false, ip("127.0.0.1")));
        assert!(auth_permitted(false, ip("::1")));
        assert!(auth_permitted(false, ip("::ffff:127.0.0.1")));
        assert!(!auth_permitted(false, ip("192.0.2.7")));
        assert!(!auth_permitted(false, ip("2001:db8::1")));
        assert!(auth_permitted(true, ip("192.0.2.7")));
    }

    #[test]
    fn cidrs() {
        let nets = [
            (ip("10.1.0.0"), 16),
            (ip("2001:db8::"), 32),
            (ip("192.0.2.9"), 32),
        ];
        assert!(in_networks(ip("10.1.200.3"), &nets));
        assert!(in_networks(ip("::ffff:10.1.0.1"), &nets));
        assert!(!in_networks(ip("10.2.0.1"), &nets));
        assert!(in_networks(ip("2001:db8:ff::1"), &nets));
        assert!(!in_networks(ip("2001:db9::1"), &nets));
        assert!(in_networks(ip("192.0.2.9"), &nets));
        assert!(!in_networks(ip("192.0.2.8"), &nets));
        assert!(!in_networks(ip("127.0.0.1"), &nets));
        assert!(in_networks(ip("10.9.9.9"), &[(ip("10.0.0.0"), 7)]));
        assert!(in_networks(ip("203.0.113.1"), &[(ip("0.0.0.0"), 0)]));
    }

    #[test]
    fn per_ip_slots() {
        let c = ConnCounts::default();
        let a = c.try_take(ip("127.0.0.1"), 2).unwrap();
        let _b = c.try_take(ip("127.0.0.1"), 2).unwrap();
        assert!(c.try_take(ip("127.0.0.1"), 2).is_none());
        assert!(c.try_take(ip("127.0.0.2"), 2).is_some());
        drop(a);
        assert!(c.try_take(ip("127.0.0.1"), 2).is_some());
    }

    #[test]
    fn blocks_after_limit() {
        let f = AuthFailures::new(3, Duration::from_secs(300));
        assert!(!f.fail(ip("127.0.0.1")));
        assert!(!f.fail(ip("127.0.0.1")));
        assert!(!f.blocked(ip("127.0.0.1")));
        assert!(f.fail(ip("127.0.0.1")));
        assert!(f.blocked(ip("127.0.0.1")));
        assert!(!f.blocked(ip("127.0.0.2")));
    }
}
