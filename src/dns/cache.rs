//! The answer cache of [`super::Resolver`]: TTLs with a floor and a cap, negative answers
//! kept too, and the rule that an NXDOMAIN is final only when a second lookup at least
//! `backoff` after the first agrees. Pure — time comes in as an argument — so the rules are
//! unit-tested without a clock or a network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Answer, Found, TTL_CAP, TTL_FLOOR};

struct Entry {
    answer: Answer,
    expires: Instant,
}

/// Answers by domain.
pub struct Cache {
    entries: HashMap<String, Entry>,
    /// First NXDOMAIN of a domain not yet confirmed or contradicted.
    nx_since: HashMap<String, Instant>,
    backoff: Duration,
}

impl Cache {
    /// An empty cache; `backoff` is how long an NXDOMAIN waits for its confirming lookup and
    /// how long a temporary failure is cached.
    pub fn new(backoff: Duration) -> Cache {
        Cache {
            entries: HashMap::new(),
            nx_since: HashMap::new(),
            backoff,
        }
    }

    /// The cached answer for `domain`, unless there is none or it expired.
    pub fn get(&self, domain: &str, now: Instant) -> Option<Answer> {
        self.entries
            .get(domain)
            .filter(|e| e.expires > now)
            .map(|e| e.answer.clone())
    }

    /// Records a lookup's result (TTL `ttl` from the records) and returns the answer to act on.
    pub fn put(&mut self, domain: &str, found: Found, ttl: Duration, now: Instant) -> Answer {
        let kept = ttl.clamp(TTL_FLOOR, TTL_CAP);
        let (answer, expires) = match found {
            Found::Hosts(set) => {
                self.nx_since.remove(domain);
                (Answer::Hosts(Arc::new(set)), now + kept)
            }
            Found::NullMx => {
                self.nx_since.remove(domain);
                (Answer::NullMx, now + kept)
            }
            Found::NoSuchDomain(why) => {
                let first = *self.nx_since.entry(domain.to_string()).or_insert(now);
                let retry_at = first + self.backoff;
                if now >= retry_at {
                    self.nx_since.remove(domain);
                    let a = Answer::NoSuchDomain {
                        why,
                        confirmed: true,
                        retry_at,
                    };
                    (a, now + kept)
                } else {
                    // Expires when the confirming lookup is due, whatever the negative TTL: a
                    // cached first answer must never count as the second.
                    let a = Answer::NoSuchDomain {
                        why,
                        confirmed: false,
                        retry_at,
                    };
                    (a, retry_at)
                }
            }
            Found::Temporary(why) => (Answer::Temporary(why), now + self.backoff.min(TTL_FLOOR)),
        };
        if self.entries.len() > 200_000 {
            // Bounded: drop what expired (a run over millions of domains).
            self.entries.retain(|_, e| e.expires > now);
        }
        self.entries.insert(
            domain.to_string(),
            Entry {
                answer: answer.clone(),
                expires,
            },
        );
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::MxSet;

    fn set(prefs: &[(&str, u16)]) -> MxSet {
        MxSet::of(prefs)
    }

    #[test]
    fn ttl_has_a_floor_and_expires() {
        let t0 = Instant::now();
        let mut c = Cache::new(Duration::from_secs(1));
        let a = c.put(
            "a.test",
            Found::Hosts(set(&[("mx", 1)])),
            Duration::ZERO,
            t0,
        );
        assert!(matches!(a, Answer::Hosts(_)));
        assert_eq!(
            c.get("a.test", t0 + TTL_FLOOR - Duration::from_secs(1)),
            Some(a)
        );
        assert_eq!(c.get("a.test", t0 + TTL_FLOOR), None);
        // A long TTL is kept as given.
        c.put("b.test", Found::NullMx, Duration::from_secs(3600), t0);
        assert_eq!(
            c.get("b.test", t0 + Duration::from_secs(3599)),
            Some(Answer::NullMx)
        );
        assert_eq!(c.get("b.test", t0 + Duration::from_secs(3600)), None);
    }

    #[test]
    fn nxdomain_needs_a_second_lookup_after_backoff() {
        let t0 = Instant::now();
        let backoff = Duration::from_secs(10);
        let mut c = Cache::new(backoff);
        let nx = || Found::NoSuchDomain("NXDOMAIN".into());
        let first = c.put("x.test", nx(), Duration::from_secs(3600), t0);
        assert!(matches!(
            first,
            Answer::NoSuchDomain {
                confirmed: false,
                ..
            }
        ));
        // Cached (negative caching) until the confirming lookup is due, not for the TTL.
        assert_eq!(c.get("x.test", t0 + Duration::from_secs(9)), Some(first));
        assert_eq!(c.get("x.test", t0 + backoff), None);
        // A second lookup too early does not confirm.
        let early = c.put("x.test", nx(), Duration::ZERO, t0 + Duration::from_secs(5));
        assert!(matches!(
            early,
            Answer::NoSuchDomain {
                confirmed: false,
                ..
            }
        ));
        let second = c.put("x.test", nx(), Duration::ZERO, t0 + backoff);
        assert!(matches!(
            second,
            Answer::NoSuchDomain {
                confirmed: true,
                ..
            }
        ));
        // The confirmed answer is cached with the floor.
        assert!(c.get("x.test", t0 + backoff + TTL_FLOOR / 2).is_some());
    }

    #[test]
    fn an_answer_between_resets_the_nxdomain_clock() {
        let t0 = Instant::now();
        let backoff = Duration::from_secs(10);
        let mut c = Cache::new(backoff);
        let nx = || Found::NoSuchDomain("NXDOMAIN".into());
        c.put("x.test", nx(), Duration::ZERO, t0);
        c.put("x.test", Found::NullMx, Duration::ZERO, t0 + backoff);
        let again = c.put("x.test", nx(), Duration::ZERO, t0 + backoff * 2);
        assert!(matches!(
            again,
            Answer::NoSuchDomain {
                confirmed: false,
                ..
            }
        ));
    }

    #[test]
    fn temporary_failures_are_cached_briefly() {
        let t0 = Instant::now();
        let mut c = Cache::new(Duration::from_secs(5));
        let a = c.put(
            "s.test",
            Found::Temporary("SERVFAIL".into()),
            Duration::ZERO,
            t0,
        );
        assert_eq!(c.get("s.test", t0 + Duration::from_secs(4)), Some(a));
        assert_eq!(c.get("s.test", t0 + Duration::from_secs(5)), None);
    }
}
