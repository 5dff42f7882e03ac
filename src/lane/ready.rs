//! Ready queues of direct delivery (`transport = "mx"`), one per (source IP, site), the way
//! MTAs built for volume (KumoMTA's "ready queue", Postfix's per-destination queues) hand
//! work to connections: a claimed recipient waits in its site's queue, and a session to
//! that site carries the queue's recipients one after another, pipelined. So the per-site
//! connection cap counts *sessions* (at most `per_site` workers serve one site at once) and
//! a site behind one MX host goes as fast as a relay does, while recipients of sites behind
//! many different hosts gather in their queues while no session serves them and then leave
//! together on one session instead of one connection change each.
//!
//! Bounded: at most `cap` recipients wait here in all ([`Ready::push`] waits for room), so
//! the claimed-but-unsent recipients of a `kill -9` are as few as with the relay's channel.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::Job;

/// A ready queue's key: the pool IP and the site key.
pub(crate) type SiteId = (usize, Arc<str>);

/// Recipients in flight per connection of a site's cap (the dispatcher's cap is
/// `per_domain_connections × DEPTH`): enough to keep each session's pipeline fed across the
/// claim's fsync.
pub(crate) const DEPTH: usize = 32;

/// Recipients waiting in the ready queues per worker, at most.
pub(crate) const QUEUED_PER_WORKER: usize = 256;

/// Recipients a session takes from one site before it lets a waiting site have the worker.
pub(crate) const QUANTUM: usize = 128;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Workers serving this site now.
    sessions: usize,
    /// In `State::servable` now.
    listed: bool,
    provider: Option<usize>,
}

#[derive(Default)]
struct State {
    queues: HashMap<SiteId, Queue>,
    /// Sites with waiting recipients and a free session slot, oldest first.
    servable: VecDeque<SiteId>,
    /// Sessions open per provider rollup, and the sites waiting only for their provider.
    provider_sessions: Vec<usize>,
    provider_waiting: Vec<VecDeque<SiteId>>,
    total: usize,
    closed: bool,
}

/// The lane's ready queues.
pub(crate) struct Ready {
    state: Mutex<State>,
    /// A site became servable, or the queues closed.
    work: Notify,
    /// A recipient left (room to push).
    room: Notify,
    cap: usize,
    per_site: usize,
    /// Per provider rollup: sessions across all its sites.
    provider_caps: Vec<usize>,
}

/// What [`Ready::take`] found.
pub(crate) enum Take {
    /// A site to serve and its first recipient; [`Ready::leave`] when done with it.
    Site(SiteId, Box<Job>),
    /// Nothing within the idle time.
    Idle,
    /// Closed and empty: the worker ends.
    Closed,
}

fn id_of(job: &Job) -> (SiteId, Option<usize>) {
    match &job.site {
        Some(s) => ((s.ip, s.key.clone()), s.provider),
        None => ((0, Arc::from(job.rec.domain())), None),
    }
}

impl Ready {
    /// Queues holding at most `cap` recipients, served by at most `per_site` sessions per
    /// site and `provider_caps[p]` across provider `p`'s sites.
    pub fn new(cap: usize, per_site: usize, provider_caps: Vec<usize>) -> Ready {
        let n = provider_caps.len();
        Ready {
            state: Mutex::new(State {
                provider_sessions: vec![0; n],
                provider_waiting: vec![VecDeque::new(); n],
                ..State::default()
            }),
            work: Notify::new(),
            room: Notify::new(),
            cap: cap.max(1),
            per_site: per_site.max(1),
            provider_caps,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a claimed recipient behind its site, waiting while the queues are full.
    pub async fn push(&self, job: Job) {
        // Bounded: each pass ends on room or a 50 ms tick (a stop empties the queues).
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the look, so room made in between is not missed.
            room.as_mut().enable();
            if self.lock().total < self.cap {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), room).await;
        }
        let (id, provider) = id_of(&job);
        let mut st = self.lock();
        st.total += 1;
        // The provider is the queue's for its lifetime (a slot is given back to the provider
        // it was taken from), so it is set when the queue is made: domains of one MX set
        // could otherwise name different providers.
        let q = st.queues.entry(id.clone()).or_insert_with(|| Queue {
            provider,
            ..Queue::default()
        });
        q.jobs.push_back(job);
        if !q.listed && q.sessions < self.per_site {
            q.listed = true;
            st.servable.push_back(id);
            drop(st);
            self.work.notify_one();
        }
    }

    /// No more recipients will be pushed: workers end once the queues are empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_waiters();
    }

    /// The next site to serve, waiting up to `idle` for one.
    pub async fn take(&self, idle: Duration) -> Take {
        let deadline = tokio::time::Instant::now() + idle;
        loop {
            let work = self.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            if let Some(t) = self.try_take() {
                return t;
            }
            if tokio::time::timeout_at(deadline, work).await.is_err() {
                return self.try_take().unwrap_or(Take::Idle);
            }
        }
    }

    fn try_take(&self) -> Option<Take> {
        let mut st = self.lock();
        while let Some(id) = st.servable.pop_front() {
            let Some(q) = st.queues.get_mut(&id) else {
                continue;
            };
            q.listed = false;
            let dead = q.jobs.is_empty() && q.sessions == 0;
            if dead {
                st.queues.remove(&id);
                continue;
            }
            if q.jobs.is_empty() || q.sessions >= self.per_site {
                continue;
            }
            if let Some(p) = q.provider {
                if st.provider_sessions[p] >= self.provider_caps[p] {
                    st.provider_waiting[p].push_back(id);
                    continue;
                }
                st.provider_sessions[p] += 1;
            }
            let q = st.queues.get_mut(&id).expect("just found");
            q.sessions += 1;
            let job = q.jobs.pop_front().expect("not empty");
            let again = !q.jobs.is_empty() && q.sessions < self.per_site;
            if again {
                // Another worker may join this site while this one opens its session.
                q.listed = true;
                st.servable.push_back(id.clone());
            }
            st.total -= 1;
            drop(st);
            self.room.notify_one();
            if again {
                self.work.notify_one();
            }
            return Some(Take::Site(id, Box::new(job)));
        }
        (st.closed && st.total == 0).then_some(Take::Closed)
    }

    /// The next recipient of a site this worker serves.
    pub fn next(&self, id: &SiteId) -> Option<Job> {
        let mut st = self.lock();
        let job = st.queues.get_mut(id)?.jobs.pop_front()?;
        st.total -= 1;
        let ended = st.closed && st.total == 0;
        drop(st);
        self.room.notify_one();
        if ended {
            // The last one: idle workers end now rather than at their idle timeout.
            self.work.notify_waiters();
        }
        Some(job)
    }

    /// Every recipient waiting for a site (its sessions failed or it must back off).
    pub fn drain(&self, id: &SiteId) -> Vec<Job> {
        let mut st = self.lock();
        let jobs: Vec<Job> = st
            .queues
            .get_mut(id)
            .map(|q| q.jobs.drain(..).collect())
            .unwrap_or_default();
        st.total -= jobs.len();
        let ended = st.closed && st.total == 0;
        drop(st);
        self.room.notify_waiters();
        if ended {
            self.work.notify_waiters();
        }
        jobs
    }

    /// Workers serving site `id` now.
    pub fn sessions(&self, id: &SiteId) -> usize {
        self.lock().queues.get(id).map_or(0, |q| q.sessions)
    }

    /// Whether another site waits for a worker (then a long-served site yields).
    pub fn others_waiting(&self) -> bool {
        !self.lock().servable.is_empty()
    }

    /// The worker is done with a site: its slot (and its provider's) is free again.
    pub fn leave(&self, id: &SiteId) {
        let mut st = self.lock();
        let mut wake = 0;
        let Some(q) = st.queues.get_mut(id) else {
            return;
        };
        q.sessions = q.sessions.saturating_sub(1);
        let provider = q.provider;
        if !q.jobs.is_empty() && !q.listed {
            q.listed = true;
            st.servable.push_back(id.clone());
            wake += 1;
        } else if q.jobs.is_empty() && q.sessions == 0 && !q.listed {
            st.queues.remove(id);
        }
        if let Some(p) = provider {
            st.provider_sessions[p] = st.provider_sessions[p].saturating_sub(1);
            // The sites that waited for this provider's slot get another look.
            let waiting: Vec<SiteId> = st.provider_waiting[p].drain(..).collect();
            for w in waiting {
                if let Some(q) = st.queues.get_mut(&w) {
                    if !q.listed && !q.jobs.is_empty() {
                        q.listed = true;
                        st.servable.push_back(w);
                        wake += 1;
                    }
                }
            }
        }
        drop(st);
        for _ in 0..wake {
            self.work.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane::sites::Site;
    use crate::store::record::Record;

    fn job(addr: &str, site: &str, provider: Option<usize>) -> Job {
        Job {
            key: addr.into(),
            rec: Record::pending(addr),
            requeues: 0,
            claim: 1,
            claim_ms: 1,
            site: Some(Site {
                key: Arc::from(site),
                provider,
                ip: 0,
            }),
        }
    }

    fn site_of(t: Take) -> (SiteId, Job) {
        match t {
            Take::Site(id, j) => (id, *j),
            _ => panic!("expected a site"),
        }
    }

    #[tokio::test]
    async fn one_site_is_served_by_at_most_per_site_sessions_and_drained_in_order() {
        let r = Ready::new(100, 2, vec![]);
        for i in 0..5 {
            r.push(job(&format!("u{i}@a.test"), "mx.a", None)).await;
        }
        let (a, first) = site_of(r.take(Duration::from_millis(10)).await);
        let (b, second) = site_of(r.take(Duration::from_millis(10)).await);
        assert_eq!(
            (first.key.as_str(), second.key.as_str()),
            ("u0@a.test", "u1@a.test")
        );
        assert_eq!(a, b);
        // Two sessions serve the site: a third worker finds nothing to take.
        assert!(matches!(
            r.take(Duration::from_millis(10)).await,
            Take::Idle
        ));
        assert_eq!(r.next(&a).unwrap().key, "u2@a.test");
        r.leave(&a);
        // A slot is free and jobs wait: the site is servable again.
        let (_, j) = site_of(r.take(Duration::from_millis(10)).await);
        assert_eq!(j.key, "u3@a.test");
        assert_eq!(r.drain(&a).len(), 1);
        r.leave(&a);
        r.leave(&a);
        r.close();
        assert!(matches!(
            r.take(Duration::from_millis(10)).await,
            Take::Closed
        ));
    }

    #[tokio::test]
    async fn a_provider_cap_holds_its_other_sites_until_a_session_ends() {
        let r = Ready::new(100, 4, vec![1]);
        r.push(job("u@a.test", "mx.a", Some(0))).await;
        r.push(job("u@b.test", "mx.b", Some(0))).await;
        r.push(job("u@c.test", "mx.c", None)).await;
        let (a, _) = site_of(r.take(Duration::from_millis(10)).await);
        // mx.b waits for the provider; mx.c (no provider) goes.
        let (c, _) = site_of(r.take(Duration::from_millis(10)).await);
        assert_eq!(&*c.1, "mx.c");
        assert!(matches!(
            r.take(Duration::from_millis(10)).await,
            Take::Idle
        ));
        r.leave(&a);
        let (b, _) = site_of(r.take(Duration::from_millis(10)).await);
        assert_eq!(&*b.1, "mx.b");
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let r = Arc::new(Ready::new(2, 1, vec![]));
        r.push(job("u0@a.test", "mx.a", None)).await;
        r.push(job("u1@a.test", "mx.a", None)).await;
        let r2 = r.clone();
        let pushed = tokio::spawn(async move { r2.push(job("u2@a.test", "mx.a", None)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!pushed.is_finished(), "the queues are full");
        let (id, _) = site_of(r.take(Duration::from_millis(10)).await);
        tokio::time::timeout(Duration::from_secs(2), pushed)
            .await
            .expect("room made")
            .unwrap();
        assert_eq!(r.drain(&id).len(), 2);
    }
}
