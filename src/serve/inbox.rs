//! The bounce inbox of `blast serve` (`[serve] bounce_inbox`): SMTP for the VERP domain. It
//! runs on the submission listener's code (same smuggling, line-length, size and connection
//! defences) in inbox mode: no AUTH, the null sender accepted, never a relay, never a DSN
//! of its own. RCPT decides ([`Rules::mailbox`]):
//!
//! - `bounces+TOKEN@DOMAIN` with a valid bounce token: a bounce for that recipient;
//! - `unsub+TOKEN@DOMAIN` with a valid unsubscribe token: the List-Unsubscribe mailto:;
//! - a `[bounces] feedback_addresses` entry: feedback-loop reports;
//! - `postmaster@` and `abuse@` the domain (RFC 5321 §4.5.1, RFC 2142): kept for a person;
//! - anything else: `550 5.1.1`, so a forged token or a relay attempt gets nothing.
//!
//! Each message is stored durably ([`InboxStore`]) before the 250 and acted on after it
//! ([`process`], through the one owner of the suppression list): a mailto: unsubscribe
//! suppresses the token's recipient id, a hard bounce or a complaint too (parsed by
//! [`crate::bounce`]). Raw messages stay in the store for audit.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::bounce::policy::BouncePolicy;
use crate::bounce::{Bounce, BounceClass};
use crate::owner::Global;
use crate::serve::submission::AcceptRequest;
use crate::store::campaign::CampaignStore;
use crate::store::suppression::{Entry, SoftHit};
use crate::token::{Purpose, Token, TokenSettings};

/// Old messages are looked for at most this often (and at start).
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// What an inbox address is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mailbox {
    /// A VERP return path: a bounce (or a late DSN) for the token's recipient.
    Bounce {
        /// The token's recipient id (suppression key form).
        rid: String,
        /// Its run id.
        run: u32,
    },
    /// The List-Unsubscribe mailto: address.
    Unsubscribe {
        /// The token's recipient id (suppression key form).
        rid: String,
        /// Its run id.
        run: u32,
    },
    /// A feedback-loop address.
    Feedback,
    /// postmaster@ or abuse@: for a person to read.
    Role,
}

/// Which addresses the inbox accepts, and what their mail adds up to.
pub struct Rules {
    /// `None` (an import without `[serve] secret_file`): no token verifies.
    tokens: Option<Arc<TokenSettings>>,
    domain: String,
    feedback: Vec<String>,
    /// `[bounces]`: soft-bounce counting and how long messages are kept.
    pub policy: BouncePolicy,
}

impl Rules {
    /// Rules for `domain` (the `[bounces] domain`), with the token keys and the feedback-loop
    /// addresses.
    pub fn new(
        tokens: Option<Arc<TokenSettings>>,
        domain: &str,
        feedback: &[String],
        policy: BouncePolicy,
    ) -> Rules {
        Rules {
            tokens,
            domain: domain.to_ascii_lowercase(),
            feedback: feedback.to_vec(),
            policy,
        }
    }

    /// What `rcpt` is, or `None` (answered `550`).
    pub fn mailbox(&self, rcpt: &str) -> Option<Mailbox> {
        let lower = rcpt.to_ascii_lowercase();
        if self.feedback.contains(&lower) {
            return Some(Mailbox::Feedback);
        }
        let (local, domain) = lower.rsplit_once('@')?;
        if domain != self.domain {
            return None;
        }
        let token = |prefix: &str, purpose: Purpose| -> Option<Token> {
            let t = local.strip_prefix(prefix)?;
            self.tokens.as_ref()?.keys.verify(purpose, t).ok()
        };
        if let Some(t) = token("bounces+", Purpose::Bounce) {
            return Some(Mailbox::Bounce {
                rid: t.rid_key(),
                run: t.run,
            });
        }
        if let Some(t) = token("unsub+", Purpose::Unsubscribe) {
            return Some(Mailbox::Unsubscribe {
                rid: t.rid_key(),
                run: t.run,
            });
        }
        matches!(local, "postmaster" | "abuse").then_some(Mailbox::Role)
    }
}

/// One stored message's envelope and what was done with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// Store id (increasing: sorts by arrival).
    pub id: u64,
    /// When it arrived (ms since the epoch).
    pub at_ms: u64,
    /// MAIL FROM (empty: the null sender, as bounces have).
    pub mail_from: String,
    /// The client's address.
    pub client: String,
    /// Each accepted recipient and what it is.
    pub rcpts: Vec<(String, Mailbox)>,
    /// What processing did (`suppressed id:… (unsubscribe)`, `kept for a person`, …).
    pub effects: Vec<String>,
}

/// The inbox's sled store in the serve state dir (`inbox/`): envelopes and raw messages,
/// and the digest of every message ever stored, so the same message twice (a sender that
/// retried after a lost 250, an mbox imported again) is acted on once.
pub struct InboxStore {
    db: sled::Db,
    meta: sled::Tree,
    raw: sled::Tree,
    seen: sled::Tree,
}

/// What [`InboxStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Stored under this id: to be processed.
    New(u64),
    /// The same bytes were stored before (under this id): nothing to do again.
    Duplicate(u64),
}

impl InboxStore {
    /// Opens (or creates) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> crate::error::Result<InboxStore> {
        Self::open_wait(state_dir, std::time::Duration::ZERO)
    }

    /// [`InboxStore::open`], waiting up to `wait` while another process holds the store (a
    /// `blast bounces import` lets go of it every few seconds for a serve that is starting).
    pub fn open_wait(
        state_dir: &Path,
        wait: std::time::Duration,
    ) -> crate::error::Result<InboxStore> {
        let dir = state_dir.join("inbox");
        let err = |e: sled::Error| crate::error::Error::Store {
            path: dir.clone(),
            message: e.to_string(),
        };
        let deadline = std::time::Instant::now() + wait;
        let db = loop {
            match sled::Config::new()
                .path(&dir)
                .cache_capacity(16 << 20)
                .open()
            {
                Ok(db) => break db,
                Err(e) if crate::store::is_lock_error(&e) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(crate::error::Error::Locked(format!(
                            "the bounce inbox's store {} is held by another blast process \
                             (a `blast bounces import` still running?){}",
                            dir.display(),
                            if wait.is_zero() {
                                String::new()
                            } else {
                                format!(" and was not let go within {wait:?}")
                            }
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(err(e)),
            }
        };
        let meta = db.open_tree("meta").map_err(err)?;
        let raw = db.open_tree("raw").map_err(err)?;
        let seen = db.open_tree("seen").map_err(err)?;
        Ok(InboxStore {
            db,
            meta,
            raw,
            seen,
        })
    }

    /// Stores a message durably (flushed) unless the same bytes were stored before.
    pub fn put(&self, mut s: Stored, data: &[u8]) -> Result<Put, String> {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        if let Some(id) = self.seen.get(digest.as_ref()).map_err(|e| e.to_string())? {
            let id = <[u8; 8]>::try_from(&id[..]).map_or(0, u64::from_be_bytes);
            return Ok(Put::Duplicate(id));
        }
        // Monotonic across restarts (sled persists it): ids sort by arrival.
        s.id = self.db.generate_id().map_err(|e| e.to_string())?;
        let key = s.id.to_be_bytes();
        let meta = serde_json::to_vec(&s).map_err(|e| e.to_string())?;
        self.raw.insert(key, data).map_err(|e| e.to_string())?;
        self.meta.insert(key, meta).map_err(|e| e.to_string())?;
        self.seen
            .insert(digest.as_ref(), &key)
            .map_err(|e| e.to_string())?;
        self.db.flush().map_err(|e| e.to_string())?;
        Ok(Put::New(s.id))
    }

    /// Deletes messages (raw and envelope) that arrived before `before_ms`; their digests
    /// stay, so a late copy of one is still recognised. Returns how many went.
    pub fn purge(&self, before_ms: u64) -> Result<u64, String> {
        let mut n = 0;
        for kv in self.meta.iter() {
            let (k, v) = kv.map_err(|e| e.to_string())?;
            let old = serde_json::from_slice::<Stored>(&v).map_or(true, |s| s.at_ms < before_ms);
            // Ids grow with arrival: the first one young enough ends the scan.
            if !old {
                break;
            }
            self.raw.remove(&k).map_err(|e| e.to_string())?;
            self.meta.remove(&k).map_err(|e| e.to_string())?;
            n += 1;
        }
        if n > 0 {
            self.db.flush().map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    /// One stored envelope.
    pub fn get(&self, id: u64) -> Result<Option<Stored>, String> {
        match self.meta.get(id.to_be_bytes()).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }

    /// Records what processing did with message `id`.
    pub fn set_effects(&self, id: u64, effects: Vec<String>) -> Result<(), String> {
        let key = id.to_be_bytes();
        let Some(v) = self.meta.get(key).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let mut s: Stored = serde_json::from_slice(&v).map_err(|e| e.to_string())?;
        s.effects = effects;
        self.meta
            .insert(key, serde_json::to_vec(&s).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        self.db.flush().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Every stored envelope, oldest first.
    pub fn list(&self) -> Result<Vec<Stored>, String> {
        self.meta
            .iter()
            .map(|kv| {
                let (_, v) = kv.map_err(|e| e.to_string())?;
                serde_json::from_slice(&v).map_err(|e| e.to_string())
            })
            .collect()
    }

    /// A stored raw message.
    pub fn raw(&self, id: u64) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .raw
            .get(id.to_be_bytes())
            .map_err(|e| e.to_string())?
            .map(|v| v.to_vec()))
    }
}

/// What a parsed report does to a recipient id: the suppression reason, or `None`
/// (recorded only). Complaints act by their Feedback-Type: `abuse`, `fraud` (and a report
/// that gives none) suppress as a complaint, `opt-out` as an unsubscribe; `auth-failure`,
/// `not-spam` and `virus` are recorded only.
fn reason_for(b: &Bounce) -> Option<&'static str> {
    match b.class {
        BounceClass::Hard => Some("bounce"),
        BounceClass::Complaint => match b.feedback_type.as_deref().map(str::to_ascii_lowercase) {
            None => Some("complaint"),
            Some(t) if t == "abuse" || t == "fraud" => Some("complaint"),
            Some(t) if t == "opt-out" || t == "opt_out" => Some("unsubscribe"),
            Some(_) => None,
        },
        BounceClass::Soft | BounceClass::None => None,
    }
}

fn describe(b: &Bounce) -> String {
    let mut d = format!("{:?} {:?}", b.class, b.category).to_ascii_lowercase();
    if let Some(s) = &b.status {
        d.push(' ');
        d.push_str(s);
    }
    if let Some(t) = &b.feedback_type {
        d.push_str(" feedback-type ");
        d.push_str(t);
    }
    if !b.reason.is_empty() {
        d.push_str(": ");
        d.extend(b.reason.chars().filter(|c| !c.is_control()).take(200));
    }
    d
}

/// Acts on a stored message `raw` (envelope `s`) through the one owner of the suppression
/// list. Attribution: the token of the address it was sent to wins — a VERP bounce acts on
/// that token's recipient only, whatever recipient its body names (a forged body must not
/// suppress others); a report sent to a registered feedback address (or imported without
/// its envelope) is attributed by the token in the returned original (its Message-ID or
/// Return-Path, which feedback loops keep while they redact the recipient); a report
/// without a valid token changes nothing and is recorded as unattributed. Hard bounces and
/// complaints suppress; a full or inactive mailbox counts towards the soft-bounce policy;
/// blocklist and policy rejections never suppress. Returns what was done.
pub fn process(
    global: &Global,
    rules: &Rules,
    s: &Stored,
    raw: &[u8],
) -> Result<Vec<String>, String> {
    let mut acts = Acts::new(global, s.at_ms);
    let mut parsed: Option<Vec<Bounce>> = None;
    let mut stores: Option<Vec<(String, CampaignStore)>> = None;
    for (rcpt, mb) in &s.rcpts {
        match mb {
            Mailbox::Unsubscribe { rid, run } => {
                let source = acts.run_name(*run);
                acts.suppress(rcpt, rid, source, "unsubscribe", "mailto".into());
            }
            Mailbox::Bounce { rid, run } => {
                let results = parsed.get_or_insert_with(|| crate::bounce::parse(raw));
                if results.is_empty() {
                    acts.effects
                        .push(format!("{rcpt}: not a bounce report; kept"));
                }
                // The strongest verdict of the report, for the token's recipient only.
                let strongest = results
                    .iter()
                    .find(|b| reason_for(b).is_some())
                    .or_else(|| results.iter().find(|b| counts_as_soft(b)))
                    .or(results.first());
                if let Some(b) = strongest {
                    let source = acts.run_name(*run);
                    acts.act(rcpt, rid, source, b);
                }
            }
            Mailbox::Feedback => {
                let results = parsed.get_or_insert_with(|| crate::bounce::parse(raw));
                if results.is_empty() {
                    acts.effects
                        .push(format!("{rcpt}: not a bounce or feedback report; kept"));
                }
                for b in results.iter() {
                    let token = b.verp_token.as_deref().and_then(|t| {
                        let keys = &rules.tokens.as_ref()?.keys;
                        keys.verify(Purpose::Bounce, t).ok()
                    });
                    if let Some(t) = token {
                        let source = acts.run_name(t.run);
                        acts.act(rcpt, &t.rid_key(), source, b);
                        continue;
                    }
                    // No token: the Final-Recipient, if a run of ours sent to it.
                    let sent = b
                        .recipient
                        .as_deref()
                        .and_then(|a| sent_to(global, rules, a, &mut stores));
                    match sent {
                        Some((key, run)) => acts.act(rcpt, &key, run, b),
                        None => acts.effects.push(format!(
                            "{rcpt}: unattributed (no valid token, and no run of ours sent to {}): {}",
                            b.recipient.as_deref().unwrap_or("an unnamed recipient"),
                            describe(b)
                        )),
                    }
                }
            }
            Mailbox::Role => acts
                .effects
                .push(format!("{rcpt}: kept for a person to read")),
        }
    }
    acts.commit(rules)
}

/// Runs looked at for a bounce without a token: the most recently started ones.
const RECENT_RUNS: usize = 20;

/// The suppression key of `address` and the run that sent to it, if one of the
/// [`RECENT_RUNS`] most recent runs did (its store has the address as sent). A run whose
/// store is open elsewhere (still sending) is not looked at: the bounce stays unattributed
/// rather than waiting on it. `stores` keeps the opened stores for the rest of a message.
fn sent_to(
    global: &Global,
    rules: &Rules,
    address: &str,
    stores: &mut Option<Vec<(String, CampaignStore)>>,
) -> Option<(String, String)> {
    let policy = crate::list::hygiene::Policy {
        allow_role: true,
        smtputf8: true,
    };
    let key = crate::list::hygiene::check(address, &policy).ok()?.key;
    let open = stores.get_or_insert_with(|| {
        global
            .run_dirs()
            .unwrap_or_default()
            .into_iter()
            .take(RECENT_RUNS)
            .filter_map(|(name, d)| {
                let st = CampaignStore::open(&d.dir, std::time::Duration::from_millis(50)).ok()?;
                Some((name, st))
            })
            .collect()
    });
    let run = open.iter().find_map(|(name, st)| {
        let r = st.get(&key).ok()??;
        (r.attempts > 0 && r.state != crate::store::record::State::Pending).then(|| name.clone())
    })?;
    // With token keys, the list and the soft counts key a mailbox by its recipient id.
    Some((
        crate::token::mailbox_key(rules.tokens.as_deref(), &key),
        run,
    ))
}

fn counts_as_soft(b: &Bounce) -> bool {
    b.class == BounceClass::Soft && b.category.counts_as_soft()
}

/// What one message does, gathered, then applied through the owner in one go.
struct Acts<'a> {
    global: &'a Global,
    at_ms: u64,
    suppress: Vec<(String, Entry)>,
    soft: Vec<SoftHit>,
    effects: Vec<String>,
}

impl<'a> Acts<'a> {
    fn new(global: &'a Global, at_ms: u64) -> Acts<'a> {
        Acts {
            global,
            at_ms,
            suppress: Vec::new(),
            soft: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// The run's name (a campaign id, `campaign@slot`), or its number when not registered.
    fn run_name(&self, run: u32) -> String {
        self.global.run_label(run)
    }

    fn suppress(&mut self, rcpt: &str, rid: &str, source: String, reason: &str, detail: String) {
        self.effects
            .push(format!("{rcpt}: suppressed {rid} ({reason}: {detail})"));
        let e = Entry {
            reason: reason.into(),
            at_ms: self.at_ms,
            source,
            detail,
        };
        self.suppress.push((rid.to_string(), e));
    }

    /// One parsed result for the recipient `rid` (a suppression key) of run `source`.
    fn act(&mut self, rcpt: &str, rid: &str, source: String, b: &Bounce) {
        if let Some(reason) = reason_for(b) {
            self.suppress(rcpt, rid, source, reason, describe(b));
        } else if counts_as_soft(b) {
            self.soft.push(SoftHit {
                key: rid.to_string(),
                campaign: source,
                at_ms: self.at_ms,
                detail: describe(b),
            });
            self.effects.push(format!(
                "{rcpt}: {rid} soft bounce counted ({})",
                describe(b)
            ));
        } else {
            self.effects.push(format!(
                "{rcpt}: {rid} recorded, not suppressed ({})",
                describe(b)
            ));
        }
    }

    fn commit(mut self, rules: &Rules) -> Result<Vec<String>, String> {
        if !self.suppress.is_empty() {
            // An entry already there (an earlier bounce, a manual one) is kept.
            self.global
                .suppress(&self.suppress, false)
                .map_err(|e| e.to_string())?;
        }
        let n = self
            .global
            .soft_hits(&self.soft, rules.policy.soft)
            .map_err(|e| e.to_string())?;
        if n > 0 {
            self.effects.push(format!(
                "suppressed {n}: full or inactive on {} campaigns in a row over at least {} days",
                rules.policy.soft.campaigns, rules.policy.soft.min_days
            ));
        }
        Ok(self.effects)
    }
}

/// Processes a stored message and records what was done. `Err`: not processed (stored
/// without effects, so it is done again at the next start).
pub(crate) fn process_and_record(
    store: &InboxStore,
    global: &Global,
    rules: &Rules,
    stored: &Stored,
) -> Result<Vec<String>, String> {
    let id = stored.id;
    let raw = store
        .raw(id)
        .map_err(|e| format!("cannot read it back: {e}"))?
        .unwrap_or_default();
    let effects =
        process(global, rules, stored, &raw).map_err(|e| format!("not processed yet: {e}"))?;
    if let Err(e) = store.set_effects(id, effects.clone()) {
        eprintln!("blast: inbox {id:016x}: cannot record what was done: {e}");
    }
    Ok(effects)
}

/// [`process_and_record`], logged.
fn process_logged(store: &InboxStore, global: &Global, rules: &Rules, stored: &Stored) {
    let id = stored.id;
    match process_and_record(store, global, rules, stored) {
        Ok(effects) => {
            for e in &effects {
                eprintln!("blast serve: inbox {id:016x}: {e}");
            }
        }
        Err(e) => eprintln!("blast serve: inbox {id:016x}: {e}"),
    }
}

/// Drops what is older than `[bounces] keep_days`, logged.
fn purge_logged(store: &InboxStore, rules: &Rules) {
    let keep = u64::from(rules.policy.keep_days) * 24 * 3600 * 1000;
    match store.purge(crate::store::now_ms().saturating_sub(keep)) {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "blast serve: inbox: {n} messages older than {} days deleted",
            rules.policy.keep_days
        ),
        Err(e) => eprintln!("blast serve: inbox: cannot delete old messages: {e}"),
    }
}

/// Stores each message the inbox listener accepted (durable before its 250), then acts on
/// it off the reactor. Messages a crash or an unreachable owner left unprocessed (stored,
/// no effects recorded) are processed first.
pub async fn run(
    store: Arc<InboxStore>,
    global: Global,
    rules: Arc<Rules>,
    mut rx: mpsc::Receiver<AcceptRequest>,
) {
    {
        let (st, g, r) = (store.clone(), global.clone(), rules.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for s in st.list().unwrap_or_default() {
                if s.effects.is_empty() && !s.rcpts.is_empty() {
                    process_logged(&st, &g, &r, &s);
                }
            }
            purge_logged(&st, &r);
        })
        .await;
    }
    let mut last_purge = std::time::Instant::now();
    while let Some(req) = rx.recv().await {
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = std::time::Instant::now();
            let (st, r) = (store.clone(), rules.clone());
            tokio::task::spawn_blocking(move || purge_logged(&st, &r));
        }
        let m = req.msg;
        let stored = Stored {
            id: 0,
            at_ms: crate::store::now_ms(),
            mail_from: m.msg.mail_from,
            client: m.client.to_string(),
            rcpts: m
                .msg
                .rcpt_to
                .iter()
                .filter_map(|r| Some((r.clone(), rules.mailbox(r)?)))
                .collect(),
            effects: Vec::new(),
        };
        let (st, g, r) = (store.clone(), global.clone(), rules.clone());
        let data = m.msg.data;
        let reply = req.reply;
        tokio::task::spawn_blocking(move || match st.put(stored.clone(), &data) {
            Ok(Put::New(id)) => {
                let _ = reply.send(Ok(format!("{id:016x}")));
                process_logged(&st, &g, &r, &Stored { id, ..stored });
            }
            // A sender retrying after a lost 250: accepted again, acted on once.
            Ok(Put::Duplicate(id)) => {
                let _ = reply.send(Ok(format!("{id:016x} (already received)")));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Keys;

    #[test]
    fn rules_accept_valid_tokens_roles_and_feedback_only() {
        let keys =
            Keys::parse("1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n")
                .unwrap();
        let rid = keys.recipient_id("ann@x.example");
        let b = keys.issue(Purpose::Bounce, rid, 7);
        let u = keys.issue(Purpose::Unsubscribe, rid, 7);
        let r = Rules::new(
            Some(Arc::new(TokenSettings {
                keys,
                unsubscribe_url: None,
                bounce_domain: Some("bounces.acme.example".into()),
                click_url: None,
            })),
            "Bounces.Acme.Example",
            &["fbl@acme.example".to_string()],
            BouncePolicy::default(),
        );
        let d = "@bounces.acme.example";
        assert_eq!(
            r.mailbox(&format!("bounces+{b}{d}")),
            Some(Mailbox::Bounce {
                rid: crate::token::rid_key(rid),
                run: 7
            })
        );
        // MTAs may change the case of a local part.
        assert!(r
            .mailbox(&format!("BOUNCES+{}{d}", b.to_uppercase()))
            .is_some());
        assert!(matches!(
            r.mailbox(&format!("unsub+{u}{d}")),
            Some(Mailbox::Unsubscribe { .. })
        ));
        assert_eq!(
            r.mailbox(&format!("unsub+{b}{d}")),
            None,
            "a bounce token does not unsubscribe"
        );
        assert_eq!(r.mailbox(&format!("bounces+{u}{d}")), None);
        assert_eq!(r.mailbox(&format!("bounces+{b}@elsewhere.example")), None);
        assert_eq!(r.mailbox(&format!("postmaster{d}")), Some(Mailbox::Role));
        assert_eq!(r.mailbox(&format!("abuse{d}")), Some(Mailbox::Role));
        assert_eq!(r.mailbox(&format!("info{d}")), None);
        assert_eq!(r.mailbox("FBL@acme.example"), Some(Mailbox::Feedback));
        assert_eq!(
            r.mailbox("postmaster@acme.example"),
            None,
            "not the inbox's domain"
        );
    }
}
