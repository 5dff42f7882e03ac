//! A lane's pool of source IPs and relays (`[lane] source_ips`, `[lane] relays`).
//!
//! **Which IP a recipient leaves from** is a documented, stable function of its normalised
//! address (the store key, the same one [`crate::shard`] hashes), so a retry — in this run or
//! the next — leaves from the same IP, which greylisting needs: weighted rendezvous hashing.
//! For each IP, `x` = the first 8 bytes, big-endian, of SHA-256(`address` ‖ `"\n"` ‖ the IP as
//! written in canonical text form); `u = (x + 1) / (2^64 + 1)`; score = `weight / −ln(u)`. The
//! highest score wins (ties: the first listed). Adding an IP moves only the recipients it now
//! wins (about its weight's share); removing one moves only its own.
//!
//! **Which relay a connection goes to**: any relay that is in, the one with the fewest open
//! sessions for its weight (relays are interchangeable smart hosts, so a recipient is not
//! tied to one). A relay that fails — connection refused, 421 greeting or mid-session, TLS
//! failure, lost connection — is taken out for a backoff (doubling, capped), logged once;
//! the others carry on, and when every relay is out the lane waits.
//!
//! **An IP is taken out only for local errors** (its address is not available on this
//! machine: `EADDRNOTAVAIL` at bind); a receiver's 421s hold that (IP, site) pair in
//! [`super::sites`] and never move the site's mail to another IP.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::retry::doubling;
use crate::config::{LaneSettings, TransportSpec};
use crate::transport::smtp::{Endpoint, SmtpError};

/// A failed relay is first out this long (connection refused, lost connection, TLS).
const RELAY_BACKOFF: Duration = Duration::from_secs(2);
/// No relay is out longer than this at a time.
const RELAY_BACKOFF_CAP: Duration = Duration::from_secs(300);
/// An IP whose address is not available is out this long before it is tried again.
const IP_BACKOFF: Duration = Duration::from_secs(30);

/// The rendezvous score of `member` (weight `weight`) for `key`.
pub fn score(key: &str, member: &str, weight: u32) -> f64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(key.as_bytes());
    ctx.update(b"\n");
    ctx.update(member.as_bytes());
    let d = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    let x = u64::from_be_bytes(first) as f64;
    // (x + 1) / (2^64 + 1) lies in (0, 1): −ln of it is positive and finite.
    let u = (x + 1.0) / (18_446_744_073_709_551_616.0 + 1.0);
    f64::from(weight) / -u.ln()
}

/// The member of `members` (name, weight) that `key` goes to: the highest [`score`].
pub fn pick(key: &str, members: &[(String, u32)]) -> usize {
    if members.len() <= 1 {
        return 0;
    }
    let mut best = (0, f64::MIN);
    for (i, (m, w)) in members.iter().enumerate() {
        let s = score(key, m, *w);
        if s > best.1 {
            best = (i, s);
        }
    }
    best.0
}

/// One source IP of the pool.
pub struct PoolIp {
    /// Its holds' key ([`super::sites::ip_key`]).
    pub name: String,
    /// Bind address.
    pub ip: Option<IpAddr>,
    /// Its EHLO name.
    pub helo: String,
    /// Its rendezvous weight.
    pub weight: u32,
    /// The workers (connections) it has.
    pub workers: usize,
    /// Dispatched and not yet finished.
    pub queued: AtomicUsize,
    out_until: Mutex<Option<Instant>>,
    /// Its removal has been said (once per run: it is the same cause every time).
    said: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct RelayState {
    out_until: Option<Instant>,
    level: u32,
    sessions: usize,
    /// Consecutive failures (connects that failed, sessions lost).
    failures: u32,
    /// The last failure was one that no retry fixes (5xx greeting, policy).
    fatal: bool,
    last: String,
}

/// One relay of the pool.
pub struct Relay {
    /// As configured (`smtp://a:25`).
    pub url: String,
    host: String,
    port: u16,
    implicit_tls: bool,
    weight: u32,
    state: Mutex<RelayState>,
}

/// How a relay failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused, timed out, lost, TLS: out from [`RELAY_BACKOFF`], doubling.
    Down,
    /// 421: out from the lane's `backoff`, doubling.
    Throttled,
    /// A 5xx greeting, EHLO or AUTH, or a policy mismatch: out for the cap.
    Refusing,
}

/// The pool of one lane run.
pub struct Pool {
    /// The source IPs (one entry, the lane's `source_ip` or none, without `source_ips`).
    pub ips: Vec<PoolIp>,
    /// The relays (one entry, `transport`, without `relays`).
    pub relays: Vec<Relay>,
    members: Vec<(String, u32)>,
    template: Endpoint,
    backoff: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    /// The pool of a lane whose settings list `source_ips` or `relays` and whose connector is
    /// a relay (`template`: its endpoint, the one all members copy). `None`: no pool.
    pub fn for_lane(s: &LaneSettings, template: &Endpoint) -> Option<Pool> {
        if s.source_ips.is_empty() && s.relays.is_empty() {
            return None;
        }
        let ips: Vec<(Option<IpAddr>, String, u32)> = if s.source_ips.is_empty() {
            vec![(s.source_ip, s.helo.clone(), 1)]
        } else {
            s.source_ips
                .iter()
                .map(|p| (Some(p.ip), p.helo.clone(), p.weight))
                .collect()
        };
        let workers = split(s.connections, &ips.iter().map(|i| i.2).collect::<Vec<_>>());
        let ips: Vec<PoolIp> = ips
            .into_iter()
            .zip(workers)
            .map(|((ip, helo, weight), workers)| PoolIp {
                name: super::sites::ip_key(ip),
                ip,
                helo,
                weight,
                workers,
                queued: AtomicUsize::new(0),
                out_until: Mutex::new(None),
                said: Default::default(),
            })
            .collect();
        let relays = if s.relays.is_empty() {
            vec![(
                format!("smtp://{}:{}", template.host, template.port),
                template.host.clone(),
                template.port,
                template.implicit_tls,
                1,
            )]
        } else {
            s.relays
                .iter()
                .filter_map(|r| match &r.transport {
                    TransportSpec::Smtp {
                        host,
                        port,
                        implicit_tls,
                    } => Some((r.url.clone(), host.clone(), *port, *implicit_tls, r.weight)),
                    _ => None,
                })
                .collect()
        };
        Some(Pool {
            members: ips.iter().map(|i| (i.name.clone(), i.weight)).collect(),
            ips,
            relays: relays
                .into_iter()
                .map(|(url, host, port, implicit_tls, weight)| Relay {
                    url,
                    host,
                    port,
                    implicit_tls,
                    weight,
                    state: Mutex::default(),
                })
                .collect(),
            template: template.clone(),
            backoff: s.backoff,
        })
    }

    /// The IPs' holds keys, in pool order.
    pub fn ip_names(&self) -> Vec<String> {
        self.ips.iter().map(|i| i.name.clone()).collect()
    }

    /// The IP (pool index) the recipient with store key `key` leaves from.
    pub fn ip_of(&self, key: &str) -> usize {
        pick(key, &self.members)
    }

    /// Whether IP `i` may take one more dispatched job now (its workers' queue has room and
    /// its address is not out). `Err`: how long to wait, and whether the IP is out.
    pub fn ip_ready(&self, i: usize) -> Result<(), (Duration, bool)> {
        let ip = &self.ips[i];
        if let Some(until) = *lock(&ip.out_until) {
            let now = Instant::now();
            if until > now {
                return Err(((until - now).min(Duration::from_millis(50)), true));
            }
        }
        if ip.queued.load(Ordering::Relaxed) >= Self::queue_cap(ip.workers) {
            return Err((Duration::from_millis(2), false));
        }
        Ok(())
    }

    /// Jobs dispatched to an IP and not yet finished, at most (its channel holds as many, so
    /// one IP's backlog never blocks the claimer for the others). Claims are committed in
    /// paced groups (one fsync every ~12 ms), so the cap must let a group carry hundreds: at
    /// `workers * 4` alone a 3-relay pool ran at 0.38× one relay (64 claims per fsync).
    pub fn queue_cap(workers: usize) -> usize {
        workers * 4 + 1024
    }

    /// IP `i`'s address cannot be bound here: out for a while (then tried again: an address
    /// may be added while the run goes on), said once.
    pub fn ip_unavailable(&self, i: usize, e: &SmtpError) {
        let ip = &self.ips[i];
        let mut out = lock(&ip.out_until);
        let now = Instant::now();
        if !ip.said.swap(true, Ordering::Relaxed) {
            eprintln!(
                "blast: source IP {} taken out for {}s: {e} (the address is not configured on this \
                 machine; its recipients wait for it, they are never moved to another IP)",
                ip.name,
                IP_BACKOFF.as_secs()
            );
        }
        *out = Some(now + IP_BACKOFF);
    }

    /// The relay a new session goes to: of the relays that are in, the one with the fewest
    /// sessions for its weight; the session is counted from here (so workers connecting at
    /// the same moment spread), and [`Pool::closed`] must follow, whether it opened or not.
    /// `Err`: every relay is out, for at least this long.
    pub fn choose_relay(&self) -> Result<usize, Duration> {
        let r = self.least_loaded()?;
        lock(&self.relays[r].state).sessions += 1;
        Ok(r)
    }

    fn least_loaded(&self) -> Result<usize, Duration> {
        let now = Instant::now();
        let mut best: Option<(usize, f64)> = None;
        let mut wait = RELAY_BACKOFF_CAP;
        for (i, r) in self.relays.iter().enumerate() {
            let st = lock(&r.state);
            if let Some(u) = st.out_until.filter(|u| *u > now) {
                wait = wait.min(u - now);
                continue;
            }
            let load = (st.sessions + 1) as f64 / f64::from(r.weight);
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i).ok_or(wait)
    }

    /// How long until a relay is in again, when every relay is out.
    pub fn all_out(&self) -> Option<Duration> {
        self.least_loaded().err()
    }

    /// The endpoint of IP `ip` to relay `relay`.
    pub fn endpoint(&self, ip: usize, relay: usize) -> Endpoint {
        let (i, r) = (&self.ips[ip], &self.relays[relay]);
        Endpoint {
            host: r.host.clone(),
            port: r.port,
            implicit_tls: r.implicit_tls,
            source_ip: i.ip,
            helo: i.helo.clone(),
            ..self.template.clone()
        }
    }

    /// A session to `relay` opened.
    pub fn opened(&self, relay: usize) {
        let mut st = lock(&self.relays[relay].state);
        st.failures = 0;
        st.fatal = false;
    }

    /// A session to `relay` ended (or never opened).
    pub fn closed(&self, relay: usize) {
        let mut st = lock(&self.relays[relay].state);
        st.sessions = st.sessions.saturating_sub(1);
    }

    /// A message went through `relay`: it is healthy (a later failure backs off from the
    /// start again). Says so when it had been out.
    pub fn delivered(&self, relay: usize) {
        let r = &self.relays[relay];
        let mut st = lock(&r.state);
        if st.level > 0 {
            eprintln!("blast: relay {} is back in the pool", r.url);
        }
        st.level = 0;
        st.failures = 0;
    }

    /// `relay` failed: out for its backoff, said once when it goes out (not again for each
    /// session that fails while it is out). Returns the line for the progress display.
    pub fn relay_failed(&self, relay: usize, how: Failure, why: &str) -> String {
        let r = &self.relays[relay];
        let mut st = lock(&r.state);
        let now = Instant::now();
        let was_out = st.out_until.is_some_and(|u| u > now);
        st.failures += 1;
        st.fatal = how == Failure::Refusing;
        st.last = why.to_string();
        if was_out {
            // Sessions opened before it went out fail one after the other: one backoff step.
            return format!("relay {} out: {why}", r.url);
        }
        let d = match how {
            Failure::Down => doubling(RELAY_BACKOFF, st.level, RELAY_BACKOFF_CAP),
            Failure::Throttled => doubling(self.backoff, st.level, Duration::from_secs(1800)),
            Failure::Refusing => RELAY_BACKOFF_CAP,
        };
        st.level += 1;
        st.out_until = Some(now + d);
        let others = self.relays.len() - 1;
        eprintln!(
            "blast: relay {} taken out for {}s ({why}); {}",
            r.url,
            d.as_secs_f64().ceil() as u64,
            if others == 0 {
                "it is the only relay: the lane waits".to_string()
            } else {
                format!("the other {others} carry on; its recipients are re-queued")
            }
        );
        format!("relay {} out: {why}", r.url)
    }

    /// Every relay keeps failing and none ever took a message: a configuration problem
    /// (wrong host or port, a relay that refuses us), not a blip. The reason, if so.
    pub fn hopeless(&self) -> Option<String> {
        let mut why = Vec::new();
        for r in &self.relays {
            let st = lock(&r.state);
            if !(st.fatal || st.failures >= 3) {
                return None;
            }
            why.push(format!("{}: {}", r.url, st.last));
        }
        Some(why.join("; "))
    }

    /// One line on the pool for `describe`: `relay pool smtp://a:25, smtp://b:25`.
    pub fn describe(&self) -> String {
        let urls: Vec<&str> = self.relays.iter().map(|r| r.url.as_str()).collect();
        format!("relay pool {}", urls.join(", "))
    }
}

/// `total` connections split over members by weight (largest remainder), at least one each.
pub fn split(total: usize, weights: &[u32]) -> Vec<usize> {
    let n = weights.len();
    let total = total.max(n);
    let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum::<u64>().max(1);
    // One each first, then the rest by weight.
    let rest = (total - n) as u64;
    let mut out: Vec<usize> = vec![1; n];
    let mut rems: Vec<(u64, usize)> = Vec::with_capacity(n);
    let mut given = 0u64;
    for (i, w) in weights.iter().enumerate() {
        let share = rest * u64::from(*w);
        out[i] += (share / sum) as usize;
        given += share / sum;
        rems.push((share % sum, i));
    }
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rems.into_iter().take((rest - given) as usize) {
        out[i] += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's test vector (computed with Python's hashlib and math.log).
    #[test]
    fn the_documented_vector() {
        let pool = vec![
            ("203.0.113.25".to_string(), 2),
            ("203.0.113.26".to_string(), 1),
        ];
        let near = |a: f64, b: f64| (a - b).abs() < 1e-4;
        assert!(near(score("ann@example.com", "203.0.113.25", 2), 34.728998));
        assert!(near(score("ann@example.com", "203.0.113.26", 1), 5.093042));
        assert_eq!(pick("ann@example.com", &pool), 0);
        assert!(near(
            score("user0@example.com", "203.0.113.25", 2),
            1.330967
        ));
        assert!(near(
            score("user0@example.com", "203.0.113.26", 1),
            28.225113
        ));
        assert_eq!(pick("user0@example.com", &pool), 1);
    }

    #[test]
    fn weights_share_and_adding_an_ip_moves_few() {
        let two = vec![("10.0.0.1".to_string(), 2), ("10.0.0.2".to_string(), 1)];
        let three = vec![
            ("10.0.0.1".to_string(), 2),
            ("10.0.0.2".to_string(), 1),
            ("10.0.0.3".to_string(), 1),
        ];
        let keys: Vec<String> = (0..6000).map(|i| format!("u{i}@example.com")).collect();
        let first = keys.iter().filter(|k| pick(k, &two) == 0).count();
        assert!((3600..4400).contains(&first), "weight 2 of 3: {first}");
        let moved: Vec<_> = keys
            .iter()
            .filter(|k| pick(k, &two) != pick(k, &three))
            .collect();
        // Only to the new IP (a quarter of the weight), never between the old ones.
        assert!(moved.iter().all(|k| pick(k, &three) == 2));
        assert!((1200..1800).contains(&moved.len()), "{}", moved.len());
    }

    #[test]
    fn connections_split_by_weight_with_one_each_at_least() {
        assert_eq!(split(16, &[1, 1]), vec![8, 8]);
        assert_eq!(split(16, &[2, 1, 1]), vec![8, 4, 4]);
        assert_eq!(split(2, &[5, 1, 1]), vec![1, 1, 1]);
        assert_eq!(split(10, &[1, 1, 1]).iter().sum::<usize>(), 10);
    }
}
