//! One owner of global state: the suppression list, the unsubscribes, the bounce and
//! complaint log, per-site holds and the warm-up counters ([`crate::store::warmup`]).
//!
//! sled lets one process open a store at a time. While `blast serve` runs it owns the global
//! stores ([`Global::held`]) and every other process reaches them through its control socket;
//! without serve, a process opens the store only while it uses it ([`Global::shared`]: kept
//! open while busy, closed after a short idle spell and at least every
//! [`MAX_HOLD`], so another campaign sending at the same time gets its turn).
//!
//! Every write returns only once it is durable (flushed by this process, or acknowledged by
//! serve after its flush): a lane commits a group's results only after that group's
//! address-level suppressions are on the list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::outbox;
use crate::control::{self, Request, Response};
use crate::error::{Error, Result};
use crate::store::suppression::{self, Entry, RunDir, SoftCount, SoftHit, SoftPolicy, Suppression};

/// How long an open attempt waits for another process to let go of the store.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// A shared handle closes the store after this long unused…
const IDLE: Duration = Duration::from_millis(300);
/// …and after holding it this long, then waits `COOLDOWN` before opening it again.
pub const MAX_HOLD: Duration = Duration::from_secs(2);
const COOLDOWN: Duration = Duration::from_millis(200);

/// The global state of one state dir, reached the right way for this process.
#[derive(Clone)]
pub struct Global {
    dir: PathBuf,
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    /// This process owns the store for its lifetime (serve).
    Held(Arc<Suppression>),
    /// serve's socket when it listens, else the store opened while in use.
    Shared(Arc<Mutex<Cache>>),
}

#[derive(Default)]
struct Cache {
    open: Option<(Suppression, Instant)>,
    last_used: Option<Instant>,
    not_before: Option<Instant>,
    reaper: bool,
}

/// A point-in-time copy of the suppression list (what an import checks rows against, so it
/// does not hold the store while it reads the lists). Recipient-id entries (`id:<hex>`, from
/// a one-click unsubscribe before any import met the address) are kept apart, by number.
#[derive(Debug, Default)]
pub struct Snapshot {
    entries: HashMap<String, Entry>,
    ids: HashMap<u64, Entry>,
}

impl Snapshot {
    /// A snapshot of these entries (tests; [`Global::snapshot`] reads the list).
    pub fn from_entries(entries: HashMap<String, Entry>) -> Snapshot {
        let mut s = Snapshot::default();
        for (k, e) in entries {
            match parse_rid_key(&k) {
                Some(rid) => {
                    s.ids.insert(rid, e);
                }
                None => {
                    s.entries.insert(k, e);
                }
            }
        }
        s
    }

    /// Whether an address (normalised key) or its domain is suppressed.
    pub fn lookup(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).or_else(|| {
            let (_, d) = key.rsplit_once('@')?;
            self.entries.get(&format!("@{d}"))
        })
    }

    /// Whether any recipient id is listed (when none is, an import need not compute ids).
    pub fn has_ids(&self) -> bool {
        !self.ids.is_empty()
    }

    /// The entry of a recipient id ([`crate::token::Keys::recipient_id`]), if listed.
    pub fn lookup_id(&self, rid: u64) -> Option<&Entry> {
        self.ids.get(&rid)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len() + self.ids.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.ids.is_empty()
    }
}

/// The recipient id of a suppression key `id:<16 hex>` ([`crate::token::rid_key`]).
pub fn parse_rid_key(key: &str) -> Option<u64> {
    let hex = key.strip_prefix("id:")?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

impl Global {
    /// serve: opens the store and keeps it for the life of the process.
    pub fn held(dir: &Path) -> Result<Global> {
        Ok(Global {
            dir: dir.to_path_buf(),
            mode: Mode::Held(Arc::new(Suppression::open(dir, LOCK_WAIT)?)),
        })
    }

    /// Everyone else: through serve when it runs on `dir`, else the store directly.
    pub fn shared(dir: &Path) -> Global {
        Global {
            dir: dir.to_path_buf(),
            mode: Mode::Shared(Arc::new(Mutex::new(Cache::default()))),
        }
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds entries (kept when already listed, unless `replace`), durably. Returns how many
    /// were new. Blocking.
    pub fn suppress(&self, entries: &[(String, Entry)], replace: bool) -> Result<u64> {
        self.suppress_as(entries, replace, false)
    }

    /// [`Global::suppress`]; `from_fleet`: the entries came from another machine of the fleet
    /// ([`crate::cluster::suppression_sync`]), so they are not published again.
    pub fn suppress_as(
        &self,
        entries: &[(String, Entry)],
        replace: bool,
        from_fleet: bool,
    ) -> Result<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let req = || Request::SuppressAdd {
            entries: entries.to_vec(),
            replace,
            from_fleet,
        };
        self.with(
            req,
            |r| Ok(r.added),
            |sp| {
                let mut added = 0;
                for (k, e) in entries {
                    if replace {
                        added += u64::from(sp.get(k)?.is_none());
                        sp.add(k, e)?;
                    } else if sp.add_if_absent(k, e)? {
                        added += 1;
                    }
                }
                sp.flush()?;
                // Durable here first; the fleet hears of it after (the outbox is read by
                // whichever process of this state dir syncs with Redis).
                if !from_fleet {
                    outbox::add(&self.dir, entries)?;
                }
                Ok(added)
            },
        )
    }

    /// Removes keys, durably; per key whether it was listed. Blocking.
    pub fn unsuppress(&self, keys: &[String]) -> Result<Vec<bool>> {
        self.unsuppress_as(keys, false)
    }

    /// [`Global::unsuppress`]; `from_fleet` as for [`Global::suppress_as`].
    pub fn unsuppress_as(&self, keys: &[String], from_fleet: bool) -> Result<Vec<bool>> {
        let req = || Request::SuppressRemove {
            keys: keys.to_vec(),
            from_fleet,
        };
        self.with(
            req,
            |r| Ok(r.removed),
            |sp| {
                let out = keys
                    .iter()
                    .map(|k| sp.remove(k))
                    .collect::<Result<Vec<_>>>()?;
                sp.flush()?;
                if !from_fleet {
                    outbox::remove(&self.dir, keys)?;
                }
                Ok(out)
            },
        )
    }

    /// Lists each entry under its new key in place of the old one (recipient ids met as
    /// addresses), durably, without counting them again. Returns how many new keys.
    /// Blocking.
    pub fn move_entries(&self, moves: &[(String, String, Entry)]) -> Result<u64> {
        if moves.is_empty() {
            return Ok(0);
        }
        self.with(
            || Request::SuppressMove {
                moves: moves.to_vec(),
            },
            |r| Ok(r.added),
            |sp| {
                let mut n = 0;
                for (from, to, e) in moves {
                    n += u64::from(sp.move_entry(from, to, e)?);
                }
                sp.flush()?;
                Ok(n)
            },
        )
    }

    /// Records that run `name` issues tokens (its run id → its name), durably, so a
    /// one-click can name the campaign instead of a number. Blocking.
    /// `dir`: the run's campaign store, so a bounce without a token can be matched to a
    /// message the run sent ([`Global::run_dirs`]).
    pub fn register_run(&self, name: &str, dir: Option<&Path>) -> Result<()> {
        let req = || Request::RegisterRun {
            name: name.to_string(),
            dir: dir.map(Path::to_path_buf),
        };
        self.with(
            req,
            |_| Ok(()),
            |sp| {
                if sp.run_name(crate::token::run_id(name))?.as_deref() != Some(name) {
                    sp.register_run(name)?;
                }
                if let Some(d) = dir {
                    sp.register_run_dir(name, d, crate::store::now_ms())?;
                }
                sp.flush()
            },
        )
    }

    /// Counts events that are not list entries (clicks), per (run name, event). Blocking.
    pub fn count_events(&self, events: &[(String, String)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.with(
            || Request::CountEvents {
                events: events.to_vec(),
            },
            |_| Ok(()),
            |sp| {
                for (source, what) in events {
                    sp.bump(source, what)?;
                }
                sp.flush()
            },
        )
    }

    /// Every registered run's store dir, most recently started first. Blocking.
    pub fn run_dirs(&self) -> Result<Vec<(String, RunDir)>> {
        if self.nothing_yet() {
            return Ok(Vec::new());
        }
        self.with(|| Request::RunDirs, |r| Ok(r.run_dirs), |sp| sp.run_dirs())
    }

    /// How a run id is named on the list and in counts: its registered name, else
    /// `run:<hex>` (a run sent without registering, or the list unreachable). Blocking.
    pub fn run_label(&self, id: u32) -> String {
        match self.run_name(id) {
            Ok(Some(name)) => name,
            _ => format!("run:{id:08x}"),
        }
    }

    /// The name of a run id registered by [`Global::register_run`]. Blocking.
    pub fn run_name(&self, id: u32) -> Result<Option<String>> {
        self.with(
            || Request::RunName { id },
            |r| Ok(r.run_name),
            |sp| sp.run_name(id),
        )
    }

    /// Per-reason counts of what run `source` ever added to the list. Blocking.
    pub fn source_counts(&self, source: &str) -> Result<Vec<(String, u64)>> {
        if self.nothing_yet() {
            return Ok(Vec::new());
        }
        self.with(
            || Request::SourceCounts {
                source: source.to_string(),
            },
            |r| Ok(r.counts),
            |sp| sp.source_counts(source),
        )
    }

    /// Counts soft failures, durably, and suppresses each mailbox whose failures complete
    /// `policy`. Returns how many were suppressed. Blocking.
    pub fn soft_hits(&self, hits: &[SoftHit], policy: SoftPolicy) -> Result<u64> {
        if hits.is_empty() {
            return Ok(0);
        }
        self.with(
            || Request::SoftHits {
                hits: hits.to_vec(),
                policy,
            },
            |r| Ok(r.added),
            |sp| {
                let mut n = 0;
                for h in hits {
                    n += u64::from(sp.soft_hit(h, policy)?.is_some());
                }
                sp.flush()?;
                Ok(n)
            },
        )
    }

    /// Forgets the soft failures of mailboxes that accepted mail again, durably. Blocking.
    pub fn soft_reset(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.with(
            || Request::SoftReset {
                keys: keys.to_vec(),
            },
            |_| Ok(()),
            |sp| {
                sp.soft_reset(keys)?;
                sp.flush()
            },
        )
    }

    /// Every mailbox with soft failures counted. Blocking.
    pub fn soft_counts(&self) -> Result<Vec<(String, SoftCount)>> {
        if self.nothing_yet() {
            return Ok(Vec::new());
        }
        self.with(
            || Request::SoftCounts,
            |r| Ok(r.soft),
            |sp| sp.soft_counts(),
        )
    }

    /// Records a response rule's hold on a (source IP, site), durably. Blocking.
    pub fn put_hold(&self, hold: &suppression::SiteHold) -> Result<()> {
        self.with(
            || Request::HoldPut { hold: hold.clone() },
            |_| Ok(()),
            |sp| {
                sp.put_hold(hold, crate::store::now_ms())?;
                sp.flush()
            },
        )
    }

    /// The holds in force now (without creating a store where there is none). Blocking.
    pub fn holds(&self) -> Result<Vec<suppression::SiteHold>> {
        if self.nothing_yet() {
            return Ok(Vec::new());
        }
        self.with(
            || Request::Holds,
            |r| Ok(r.holds),
            |sp| sp.holds(crate::store::now_ms()),
        )
    }

    /// Lifts the holds of `site` (every IP's without `ip`); returns how many. Blocking.
    pub fn lift_holds(&self, site: &str, ip: Option<&str>) -> Result<u64> {
        self.with(
            || Request::HoldLift {
                site: site.to_string(),
                ip: ip.map(str::to_string),
            },
            |r| Ok(r.added),
            |sp| {
                let n = sp.lift_holds(site, ip)?;
                sp.flush()?;
                Ok(n)
            },
        )
    }

    /// Takes up to `want` of a warm-up day's cap, durably before it answers (so a crash can
    /// only leave the count above what was sent, never below). Blocking.
    pub fn warmup_reserve(
        &self,
        ip: &str,
        scope: &str,
        day: &str,
        want: u64,
        cap: Option<u64>,
    ) -> Result<u64> {
        self.with(
            || Request::WarmupReserve {
                ip: ip.to_string(),
                scope: scope.to_string(),
                day: day.to_string(),
                want,
                cap,
            },
            |r| Ok(r.added),
            |sp| {
                let n = sp.warmup_reserve(ip, scope, day, want, cap)?;
                sp.flush()?;
                Ok(n)
            },
        )
    }

    /// Gives back unspent warm-up reservations and adds attempts' outcomes, durably. Blocking.
    pub fn warmup_settle(&self, settles: &[crate::store::warmup::Settle]) -> Result<()> {
        if settles.is_empty() {
            return Ok(());
        }
        self.with(
            || Request::WarmupSettle {
                settles: settles.to_vec(),
            },
            |_| Ok(()),
            |sp| {
                for s in settles {
                    sp.warmup_settle(s)?;
                }
                sp.flush()
            },
        )
    }

    /// The warm-up days recorded for `ip` (every IP's without). Blocking.
    pub fn warmup_days(&self, ip: Option<&str>) -> Result<Vec<crate::store::warmup::WarmupDay>> {
        if self.nothing_yet() {
            return Ok(Vec::new());
        }
        self.with(
            || Request::WarmupDays {
                ip: ip.map(str::to_string),
            },
            |r| Ok(r.warmup),
            |sp| sp.warmup_days(ip),
        )
    }

    /// No store and no serve: a read has nothing to find (and must not create a store).
    fn nothing_yet(&self) -> bool {
        matches!(self.mode, Mode::Shared(_))
            && !suppression::exists_in(&self.dir)
            && !control::path_in(&self.dir).exists()
    }

    /// Every entry in key order (without creating a store where there is none). Blocking.
    pub fn list(&self) -> Result<Vec<(String, Entry)>> {
        if self.nothing_yet() {
            return Ok(Vec::new());
        }
        self.with(
            || Request::SuppressList,
            |r| Ok(r.suppressed),
            |sp| sp.list(),
        )
    }

    /// A copy of the list to check an import against. Blocking.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot::from_entries(self.list()?.into_iter().collect()))
    }

    /// Runs an operation: on the held store, through serve's socket, or on the store opened
    /// for it.
    fn with<T>(
        &self,
        req: impl Fn() -> Request,
        remote: impl Fn(Response) -> Result<T>,
        local: impl Fn(&Suppression) -> Result<T>,
    ) -> Result<T> {
        let cache = match &self.mode {
            Mode::Held(sp) => return local(sp),
            Mode::Shared(c) => c,
        };
        // serve owns the store while it runs: ask it. The socket is tried on every call, so a
        // serve started in the middle of a send takes over at once.
        let sock = control::path_in(&self.dir);
        if sock.exists() {
            match control::request_blocking(&self.dir, &req()) {
                Ok(Some(r)) => {
                    return match r.error {
                        Some(e) => Err(Error::Lane(format!(
                            "blast serve ({}) refused: {e}",
                            sock.display()
                        ))),
                        None => remote(r),
                    }
                }
                Ok(None) => {} // a stale socket: serve is gone
                Err(e) => {
                    return Err(Error::io(
                        format!("blast serve's control socket {}", sock.display()),
                        e,
                    ))
                }
            }
        }
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.open.is_none() {
            if let Some(t) = c.not_before.take() {
                std::thread::sleep(t.saturating_duration_since(Instant::now()));
            }
            c.open = Some((Suppression::open(&self.dir, LOCK_WAIT)?, Instant::now()));
            if !c.reaper {
                c.reaper = true;
                spawn_reaper(Arc::downgrade(cache));
            }
        }
        let out = local(&c.open.as_ref().expect("opened").0);
        c.last_used = Some(Instant::now());
        if c.open
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= MAX_HOLD)
        {
            c.open = None;
            c.not_before = Some(Instant::now() + COOLDOWN);
        }
        out
    }
}

/// Closes an idle shared store so other processes can open it; ends with the handle.
fn spawn_reaper(cache: std::sync::Weak<Mutex<Cache>>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(IDLE / 3);
        let Some(c) = cache.upgrade() else { return };
        let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
        if c.open.is_some() && c.last_used.is_some_and(|t| t.elapsed() >= IDLE) {
            c.open = None;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reason: &str) -> Entry {
        Entry {
            reason: reason.into(),
            at_ms: 1,
            source: "test".into(),
            detail: String::new(),
        }
    }

    /// Two handles on one state dir (two campaigns without serve) both write, each durable,
    /// and the store is let go between uses.
    #[test]
    fn shared_handles_take_turns_and_keep_existing_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Global::shared(dir.path()), Global::shared(dir.path()));
        let e = |k: &str, r: &str| (k.to_string(), entry(r));
        assert_eq!(a.suppress(&[e("x@a.example", "bounce")], false).unwrap(), 1);
        // `a` holds the store until it is idle; `b` waits its turn (same process here, so the
        // lock is sled's in-process one: a second open of a held store waits on it).
        drop(a);
        assert_eq!(
            b.suppress(
                &[e("x@a.example", "manual"), e("@d.example", "manual")],
                false
            )
            .unwrap(),
            1
        );
        let snap = b.snapshot().unwrap();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.lookup("x@a.example").unwrap().reason, "bounce");
        assert_eq!(snap.lookup("anyone@d.example").unwrap().reason, "manual");
        assert!(snap.lookup("y@a.example").is_none());
        assert_eq!(b.unsuppress(&["x@a.example".into()]).unwrap(), vec![true]);
        assert_eq!(b.suppress(&[e("@d.example", "bounce")], true).unwrap(), 0);
        assert_eq!(b.list().unwrap()[0].1.reason, "bounce");
    }

    #[test]
    fn recipient_ids_are_kept_apart_in_a_snapshot() {
        let rid = 0x0123_4567_89ab_cdef_u64;
        let key = crate::token::rid_key(rid);
        assert_eq!(parse_rid_key(&key), Some(rid));
        for bad in ["id:123", "id:0123456789abcdeg", "x@id:0123456789abcdef"] {
            assert_eq!(parse_rid_key(bad), None, "{bad}");
        }
        let snap = Snapshot::from_entries(
            [
                (key, entry("unsubscribe")),
                ("a@b.example".into(), entry("bounce")),
            ]
            .into_iter()
            .collect(),
        );
        assert!(snap.has_ids());
        assert_eq!(snap.lookup_id(rid).unwrap().reason, "unsubscribe");
        assert!(snap.lookup_id(rid + 1).is_none());
        assert_eq!(snap.len(), 2);
        assert!(!Snapshot::from_entries([("a@b.example".into(), entry("x"))].into()).has_ids());
    }

    #[test]
    fn listing_a_dir_without_a_store_creates_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Global::shared(dir.path()).list().unwrap().is_empty());
        assert!(!suppression::exists_in(dir.path()));
    }
}
