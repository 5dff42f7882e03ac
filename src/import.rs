//! Import: the lists streamed into the campaign store (hygiene, suppression, dedupe — first
//! occurrence wins — and the prune report), idempotent on a rerun; and reconcile: what a
//! previous run left (rows removed from the lists, recipients in flight when it stopped,
//! address-level bounces the suppression list must hold).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::config::{InFlightPolicy, Settings};
use crate::error::{Error, Result};
use crate::lane::Job;
use crate::list::hygiene;
use crate::list::prune::PruneReport;
use crate::list::reader::{ListReader, RowIssue, RowRef};
use crate::owner::{Global, Snapshot};
use crate::render::Templates;
use crate::store::bulk::{self, BulkWriter};
use crate::store::campaign::CampaignStore;
use crate::store::record::{Record, State};

/// Compiles the templates and opens the lists, checking that every field a template uses is
/// a column of every list (a config error before anything is sent).
pub fn load_inputs(s: &Settings) -> Result<(Templates, ListReader, Vec<String>)> {
    let templates = Templates::compile_with_headers(
        &s.subject,
        s.text.as_ref().map(|(p, src)| (p.as_path(), src.as_str())),
        s.html.as_ref().map(|(p, src)| (p.as_path(), src.as_str())),
        &s.headers,
    )
    .map_err(|e| Error::Config(format!("{}: template {e}", s.file.display())))?;
    let reader =
        ListReader::open(&s.lists, &s.email_column).map_err(|e| Error::Config(e.to_string()))?;
    // blast's own variables are not columns ({{unsubscribe_url}} needs tokens: see check).
    let fields: Vec<String> = templates
        .referenced_fields()
        .into_iter()
        .filter(|f| !crate::render::BUILTINS.contains(&f.as_str()))
        .collect();
    // `{{#if unsubscribe_url}}…{{/if}}` renders without one; a bare use cannot.
    let wants_unsubscribe = templates.required_fields().contains("unsubscribe_url");
    if wants_unsubscribe && unsubscribe_base(s).is_none() {
        return Err(Error::Config(format!(
            "{}: templates use {{{{unsubscribe_url}}}}, but this send has no unsubscribe URL: \
             send with --config blast.toml whose [serve] secret_file and [unsubscribe] url are set",
            s.file.display()
        )));
    }
    for (i, path) in reader.paths().iter().enumerate() {
        let cols = reader.columns(i);
        for f in &fields {
            if !cols.iter().any(|c| c == f) {
                return Err(Error::Config(format!(
                    "{}: templates use {{{{{f}}}}} but {} has no column {f:?} (columns: {})",
                    s.file.display(),
                    path.display(),
                    cols.join(", ")
                )));
            }
        }
    }
    Ok((templates, reader, fields))
}

/// The one-click base URL this send's tokens go under, if it has tokens and a URL.
pub fn unsubscribe_base(s: &Settings) -> Option<&str> {
    s.tokens.as_ref()?.unsubscribe_url.as_deref()
}

/// Field indices (per file) of the fields templates use, to check rows for empty values.
fn field_indices(reader: &ListReader, fields: &[String]) -> Vec<Vec<(usize, String)>> {
    (0..reader.paths().len())
        .map(|i| {
            let cols = reader.columns(i);
            fields
                .iter()
                .filter_map(|f| cols.iter().position(|c| c == f).map(|p| (p, f.clone())))
                .collect()
        })
        .collect()
}

/// Counts of an import.
#[derive(Debug, Default)]
pub struct ImportStats {
    /// Data rows read.
    pub rows: u64,
    /// New recipients added.
    pub added: u64,
    /// Existing recipients seen again (state kept).
    pub kept: u64,
    /// The store was empty before this import (nothing to reconcile).
    pub fresh: bool,
    /// New recipients added as pending.
    pub pending_added: u64,
    /// Rows whose address belongs to another shard (`--shard K/N`): not imported, not pruned.
    pub other_shard: u64,
    /// Fingerprints of every accepted address of this import (removed rows are the stored
    /// ones not in here).
    pub seen: HashSet<u64>,
    /// Addresses (normalised key) suppressed by their recipient id, with the id and its
    /// entry: [`settle_id_hits`] puts the address on the list in the id's place.
    pub id_hits: Vec<(String, u64, crate::store::suppression::Entry)>,
}

/// What an import reads: the opened lists, their store file indices ([`register_files`]) and
/// the fields templates use (rows missing one are pruned).
pub struct ImportSource<'a> {
    /// The opened lists.
    pub reader: ListReader,
    /// Store file index per reader file index.
    pub file_map: &'a [u16],
    /// Template fields.
    pub fields: &'a [String],
    /// A lane sending while this import runs: new pending recipients are handed to it once
    /// written (blocking when it is behind, which bounds memory).
    pub feed: Option<tokio::sync::mpsc::Sender<Job>>,
}

/// Streams the lists into the store: hygiene, suppression, dedupe (first occurrence wins),
/// prune report. Idempotent: existing recipients keep their state.
/// `file_map` comes from [`register_files`]; `stats.eligible` is raised as pending recipients
/// are written (and `stats.skipped_import` as suppressed new ones are), so a send running
/// beside the import knows its total so far.
pub fn import(
    s: &Settings,
    store: &CampaignStore,
    source: ImportSource<'_>,
    prune: &mut PruneReport,
    supp: Option<&Snapshot>,
    stats: &crate::lane::Stats,
) -> Result<ImportStats> {
    let ImportSource {
        mut reader,
        file_map,
        fields,
        feed,
    } = source;
    // Runs on a writer thread once (a share of) a batch is stored: only stored recipients may
    // be sent.
    let handover = |batch: &bulk::Batch| {
        stats
            .eligible
            .fetch_add(count_pending(batch), Ordering::Relaxed);
        let skipped = batch
            .iter()
            .filter(|(_, r)| r.state == State::Skipped)
            .count() as u64;
        stats.skipped_import.fetch_add(skipped, Ordering::Relaxed);
        if let Some(f) = &feed {
            for (key, rec) in batch.iter().filter(|(_, r)| r.state == State::Pending) {
                let job = Job {
                    key: key.clone(),
                    rec: rec.clone(),
                    requeues: 0,
                    claim: 0,
                    claim_ms: 0,
                    site: None,
                };
                // A closed feed means the lane stopped: the rows stay pending for the next run.
                let _ = f.blocking_send(job);
            }
        }
    };
    let gen = store.next_import_gen()?;
    std::thread::scope(|scope| {
        let mut writer = BulkWriter::start(scope, store, &handover);
        let st = import_rows(
            s,
            store,
            &mut reader,
            file_map,
            fields,
            prune,
            supp,
            gen,
            &mut writer,
        )?;
        writer.finish()?;
        store.flush()?;
        Ok(st)
    })
}

/// Records per store batch: sorted, one `apply_batch`. Larger batches gained nothing (sled's
/// node per insert is the cost) and held sled's batch lock longer.
const BATCH: usize = 1024;

/// The import's reading side: every row checked, deduplicated and handed to `writer` in
/// key-sorted batches.
#[allow(clippy::too_many_arguments)]
fn import_rows(
    s: &Settings,
    store: &CampaignStore,
    reader: &mut ListReader,
    file_map: &[u16],
    fields: &[String],
    prune: &mut PruneReport,
    supp: Option<&Snapshot>,
    gen: u32,
    writer: &mut BulkWriter<'_>,
) -> Result<ImportStats> {
    let idx = field_indices(reader, fields);
    let paths = reader.paths().to_vec();
    let mut st = ImportStats::default();
    let mut batch: bulk::Batch = Vec::with_capacity(BATCH);
    let mut batch_keys: HashSet<String> = HashSet::new();
    // On a first import nothing is stored yet, so the per-row store lookup only matters for an
    // address seen earlier in this import: a fingerprint set says when to look (exactly: a
    // fingerprint hit is confirmed against the batches not yet stored and the store).
    st.fresh = store.is_empty();
    let now = crate::store::now_ms();
    let prune_file = prune_path_of(prune);
    let perr = |e: std::io::Error| Error::io(format!("writing prune report {prune_file}"), e);
    while let Some(row) = reader.next_row() {
        st.rows += 1;
        let Some((row, mb)) = screen(row, &paths, &s.policy, prune).map_err(perr)? else {
            continue;
        };
        // Another shard's recipient: not pruned (that shard sends it), only counted.
        if s.shard.is_some_and(|sh| !sh.holds(&mb.key)) {
            st.other_shard += 1;
            continue;
        }
        let file = &paths[row.file_idx];
        if let Some(missing) = idx[row.file_idx]
            .iter()
            .find(|(i, _)| row.record.get(*i).is_none_or(|v| v.trim().is_empty()))
        {
            prune
                .record(
                    file,
                    row.line,
                    &mb.address,
                    "missing_field",
                    &format!("no value for {:?}, which the templates use", missing.1),
                )
                .map_err(perr)?;
            continue;
        }
        // First occurrence wins. Into an empty store a fingerprint hit is confirmed against
        // the batch and the store (exact). Into a populated store, unchanged recipients are not
        // rewritten (a rewrite per row doubled the state dir and halved the re-import speed),
        // so the fingerprint set alone says "seen earlier in this import": two different
        // addresses of one list collide with probability ~n²/2⁶⁵ (~3·10⁻⁸ at 1M rows).
        let fp = fingerprint(&mb.key);
        let first_time = st.seen.insert(fp);
        // A key of this import is in the batch being built, in one the writer has not applied
        // yet, or in the store.
        let in_batch = (st.fresh && !first_time)
            && (batch_keys.contains(&mb.key) || writer.is_unapplied(&mb.key));
        let existing = if in_batch || (st.fresh && first_time) || (!st.fresh && !first_time) {
            None
        } else {
            store.get(&mb.key)?
        };
        let duplicate = in_batch
            || (!st.fresh && !first_time)
            || existing.as_ref().is_some_and(|e| e.import_gen == gen);
        if duplicate {
            prune
                .record_duplicate(file, row.line, &mb.address)
                .map_err(perr)?;
            continue;
        }
        note_flags(prune, file, row.line, &mb).map_err(perr)?;
        let mut suppressed = match supp {
            Some(sp) => sp.lookup(&mb.key).cloned(),
            None => None,
        };
        if let (None, Some(sp), Some(t)) = (&suppressed, supp, &s.tokens) {
            // A one-click unsubscribe names a recipient id, not an address: one HMAC per row,
            // and only while the list holds ids at all.
            if sp.has_ids() {
                let rid = t.keys.recipient_id(&mb.key);
                if let Some(e) = sp.lookup_id(rid) {
                    st.id_hits.push((mb.key.clone(), rid, e.clone()));
                    suppressed = Some(e.clone());
                }
            }
        }
        let values: Vec<String> = row.record.iter().map(str::to_string).collect();
        let rec = match existing {
            Some(e)
                if suppressed.is_none()
                    && e.values == values
                    && e.file_idx == file_map[row.file_idx]
                    && e.line == row.line =>
            {
                // Unchanged: nothing to write.
                st.kept += 1;
                continue;
            }
            Some(mut e) => {
                st.kept += 1;
                e.import_gen = gen;
                e.values = values;
                e.file_idx = file_map[row.file_idx];
                e.line = row.line;
                if let Some(entry) = &suppressed {
                    if matches!(e.state, State::Pending | State::Deferred) {
                        if entry.reason == "bounce" && entry.source == s.id {
                            // This campaign's own 5.1.1, on the list before a crash kept its
                            // result from being recorded (the list is written first): the
                            // recipient bounced, and says so.
                            e.state = State::Bounced;
                            e.last_reply = entry.detail.clone();
                            e.class = Some(crate::classify::Class::AddressPermanent);
                        } else {
                            e.state = State::Skipped;
                            e.last_reply = format!("suppressed: {}", entry.reason);
                        }
                    }
                }
                e
            }
            None => {
                st.added += 1;
                st.pending_added += u64::from(suppressed.is_none());
                Record {
                    state: if suppressed.is_some() {
                        State::Skipped
                    } else {
                        State::Pending
                    },
                    attempts: 0,
                    file_idx: file_map[row.file_idx],
                    line: row.line,
                    import_gen: gen,
                    first_attempt_ms: 0,
                    retry_at_ms: 0,
                    updated_ms: now,
                    address: mb.address.clone(),
                    last_reply: suppressed
                        .as_ref()
                        .map(|e| format!("suppressed: {}", e.reason))
                        .unwrap_or_default(),
                    class: None,
                    values,
                }
            }
        };
        if let Some(entry) = &suppressed {
            prune
                .record(
                    file,
                    row.line,
                    &mb.address,
                    "suppressed",
                    &format!("{}: {}", entry.reason, entry.detail),
                )
                .map_err(perr)?;
        }
        batch_keys.insert(mb.key.clone());
        batch.push((mb.key, rec));
        if batch.len() >= BATCH {
            // In key order, a batch touches neighbouring tree nodes instead of 1024 random ones.
            batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            writer.write(full, std::mem::take(&mut batch_keys))?;
        }
    }
    batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    writer.write(batch, batch_keys)?;
    Ok(st)
}

fn count_pending(batch: &[(String, Record)]) -> u64 {
    batch
        .iter()
        .filter(|(_, r)| matches!(r.state, State::Pending | State::Deferred))
        .count() as u64
}

/// Records the list files (path and columns) in the store and maps reader file indices to
/// store file indices. Done before sending starts: workers render with these columns.
pub fn register_files(store: &CampaignStore, reader: &ListReader) -> Result<Vec<u16>> {
    reader
        .paths()
        .iter()
        .enumerate()
        .map(|(i, p)| store.register_file(p, reader.columns(i)))
        .collect()
}

fn prune_path_of(p: &PruneReport) -> String {
    p.path().display().to_string()
}

/// What [`reconcile`] did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Rows no longer in the lists, skipped.
    pub removed: u64,
    /// Rows left in flight by a crashed run, settled by the policy.
    pub recovered: u64,
    /// Pending + deferred afterwards.
    pub eligible: u64,
    /// Every address-level bounce with its reply: what the suppression list must hold.
    pub bounced: Vec<(String, String)>,
}

/// After import: stored rows whose fingerprint is not in `seen` (this import) are skipped as
/// removed; rows left in flight
/// by a crashed run follow the campaign's policy; `retry_now` makes deferred rows due.
/// Returns what it found ([`Reconciled`]).
pub fn reconcile(
    store: &CampaignStore,
    policy: InFlightPolicy,
    retry_now: bool,
    seen: &HashSet<u64>,
) -> Result<Reconciled> {
    let mut eligible = 0;
    let mut fix = Vec::new();
    let (mut removed, mut recovered) = (0, 0);
    let mut bounced = Vec::new();
    // Recipients under a claim marker were in flight when the last run stopped.
    let claimed = store.claimed_keys()?;
    for kv in store.iter() {
        let (k, mut r) = kv?;
        if CampaignStore::in_flight_under(&claimed, &k, &r) {
            r.state = State::InFlight;
        }
        if r.is_address_bounce() {
            bounced.push((k.clone(), r.last_reply.clone()));
        }
        let mut changed = false;
        if r.state == State::InFlight {
            recovered += 1;
            match policy {
                InFlightPolicy::Skip => {
                    r.state = State::Unknown;
                    r.last_reply =
                        "in flight when a previous run stopped; not resent (in_flight = \"skip\")"
                            .into();
                }
                InFlightPolicy::Resend => r.state = State::Pending,
            }
            changed = true;
        }
        if matches!(r.state, State::Pending | State::Deferred) && !seen.contains(&fingerprint(&k)) {
            r.state = State::Skipped;
            r.last_reply = "removed from the list".into();
            removed += 1;
            changed = true;
        }
        if retry_now && r.state == State::Deferred {
            r.retry_at_ms = 0;
            changed = true;
        }
        if matches!(r.state, State::Pending | State::Deferred) {
            eligible += 1;
        }
        if changed {
            fix.push((k, r));
        }
    }
    store.put_each(fix.iter().map(|(k, r)| (k.as_str(), r)))?;
    store.clear_claims()?;
    store.flush()?;
    Ok(Reconciled {
        removed,
        recovered,
        eligible,
        bounced,
    })
}

/// Makes sure every address-level bounce of the campaign is on the suppression list: the
/// backstop for a run that died (or could not reach the list's owner) after recording a
/// bounce. Returns how many were missing.
pub(crate) fn restore_suppressions(
    global: &Global,
    campaign: &str,
    bounced: Vec<(String, String)>,
) -> Result<u64> {
    let now = crate::store::now_ms();
    let mut added = 0;
    // In chunks: each is one request to serve when it owns the list.
    for chunk in bounced.chunks(5_000) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|(k, reply)| {
                (
                    k.clone(),
                    crate::store::suppression::Entry::bounce(campaign, reply.clone(), now),
                )
            })
            .collect();
        added += global.suppress(&entries, false)?;
    }
    Ok(added)
}

/// After an import met addresses whose recipient id is on the list (a one-click unsubscribe
/// before any import saw them): the address is listed with the id's entry (same reason,
/// source, detail), then the `id:` entry is removed, so `blast suppress list` shows who it
/// was. The address first: a crash in between leaves both, never neither. Returns how many
/// addresses were new on the list. Blocking; after the import, never during it.
pub(crate) fn settle_id_hits(
    global: &Global,
    hits: Vec<(String, u64, crate::store::suppression::Entry)>,
) -> Result<u64> {
    let mut added = 0;
    for chunk in hits.chunks(5_000) {
        let moves: Vec<_> = chunk
            .iter()
            .map(|(k, rid, e)| (crate::token::rid_key(*rid), k.clone(), e.clone()))
            .collect();
        added += global.move_entries(&moves)?;
    }
    Ok(added)
}

/// Reports row-level problems (ragged, bad encoding) and hygiene rejections to the prune
/// report; returns the row with its mailbox when the address is usable.
pub(crate) fn screen<'r>(
    row: std::result::Result<RowRef<'r>, RowIssue>,
    paths: &[PathBuf],
    policy: &hygiene::Policy,
    prune: &mut PruneReport,
) -> std::io::Result<Option<(RowRef<'r>, hygiene::Mailbox)>> {
    let row = match row {
        Ok(r) => r,
        Err(issue) => {
            let file = &paths[issue.file_idx];
            let detail = issue.kind.to_string();
            prune.record(
                file,
                issue.line,
                &issue.raw_email,
                issue.kind.code(),
                &detail,
            )?;
            return Ok(None);
        }
    };
    match hygiene::check(row.email, policy) {
        Ok(mb) => Ok(Some((row, mb))),
        Err(reason) => {
            let file = &paths[row.file_idx];
            prune.record(
                file,
                row.line,
                row.email,
                reason.code(),
                &reason.to_string(),
            )?;
            Ok(None)
        }
    }
}

/// Kept-but-flagged addresses (likely typo, disposable domain) go in the report too.
pub(crate) fn note_flags(
    prune: &mut PruneReport,
    file: &Path,
    line: u64,
    mb: &hygiene::Mailbox,
) -> std::io::Result<()> {
    if let Some(t) = mb.flags.typo_of {
        prune.record(
            file,
            line,
            &mb.address,
            "kept:typo_suspect",
            &format!("did you mean {t}?"),
        )?;
    }
    if mb.flags.disposable {
        prune.record(
            file,
            line,
            &mb.address,
            "kept:disposable",
            "disposable mailbox domain",
        )?;
    }
    Ok(())
}

/// 64-bit fingerprint for dedupe without keeping addresses (FNV-1a; collisions at 10M rows
/// are ~3 in a million runs, and cost one skipped duplicate-looking row in `check` only).
pub fn fingerprint(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    //! The dedupe decision against a real store on a temp dir: first occurrence wins (in one
    //! import and in one list), a re-import keeps every recipient's state, and rows removed
    //! from the lists are skipped by [`reconcile`] unless they were already sent.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        settings: Settings,
        store: CampaignStore,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("t.txt.hbs"), "Hi {{first_name}}\n").unwrap();
            let toml = dir.path().join("c.toml");
            std::fs::write(
                &toml,
                r#"[campaign]
id = "dedupe"
from = "News <news@acme.example>"
subject = "Hello"
text = "t.txt.hbs"
lists = ["list.csv"]
state_dir = "state"

[lane]
transport = "outbox:out"
"#,
            )
            .unwrap();
            let settings = crate::config::load(&toml).expect("campaign");
            let store =
                CampaignStore::open(&dir.path().join("store"), Duration::from_secs(5)).unwrap();
            Fixture {
                dir,
                settings,
                store,
            }
        }

        /// Writes `rows` (`email,first_name`) as the list and imports it; returns the stats
        /// and the prune report's counts per reason.
        fn import(&self, rows: &[(&str, &str)]) -> (ImportStats, BTreeMap<String, u64>) {
            self.import_with(rows, None)
        }

        /// [`Fixture::import`] checked against a suppression snapshot.
        fn import_with(
            &self,
            rows: &[(&str, &str)],
            supp: Option<&Snapshot>,
        ) -> (ImportStats, BTreeMap<String, u64>) {
            let mut csv = String::from("email,first_name\n");
            for (e, n) in rows {
                csv.push_str(&format!("{e},{n}\n"));
            }
            std::fs::write(self.dir.path().join("list.csv"), csv).unwrap();
            let (_templates, reader, fields) = load_inputs(&self.settings).unwrap();
            let file_map = register_files(&self.store, &reader).unwrap();
            let mut prune = PruneReport::create(&self.dir.path().join("pruned.csv")).unwrap();
            let st = import(
                &self.settings,
                &self.store,
                ImportSource {
                    reader,
                    file_map: &file_map,
                    fields: &fields,
                    feed: None,
                },
                &mut prune,
                supp,
                &crate::lane::Stats::default(),
            )
            .unwrap();
            (st, prune.finish().unwrap().1)
        }

        fn get(&self, key: &str) -> Record {
            self.store.get(key).unwrap().expect(key)
        }

        fn set_state(&self, key: &str, state: State) {
            let mut r = self.get(key);
            r.state = state;
            self.store.put_each([(key, &r)]).unwrap();
        }
    }

    #[test]
    fn first_occurrence_wins_within_one_import() {
        let f = Fixture::new();
        let (st, pruned) = f.import(&[
            ("ann@a.example", "First"),
            ("bob@b.example", "Bob"),
            ("ANN@A.example", "Second"),
        ]);
        assert_eq!((st.rows, st.added, st.kept), (3, 2, 0));
        assert_eq!(pruned.get("duplicate"), Some(&1), "{pruned:?}");
        let ann = f.get("ann@a.example");
        assert_eq!(ann.line, 2, "the first row is the one stored");
        assert_eq!(ann.values[1], "First");
        assert_eq!(ann.state, State::Pending);
    }

    #[test]
    fn reimport_keeps_state_and_still_dedupes() {
        let f = Fixture::new();
        let rows = [("ann@a.example", "Ann"), ("bob@b.example", "Bob")];
        f.import(&rows);
        f.set_state("ann@a.example", State::Sent);
        // Into a populated store: the same rows, plus a repeat of one of them.
        let (st, pruned) = f.import(&[rows[0], rows[1], ("Bob@b.example", "Again")]);
        assert!(!st.fresh);
        assert_eq!((st.added, st.kept), (0, 2));
        assert_eq!(pruned.get("duplicate"), Some(&1), "{pruned:?}");
        assert_eq!(
            f.get("ann@a.example").state,
            State::Sent,
            "a re-import never resends"
        );
        assert_eq!(
            f.get("bob@b.example").values[1],
            "Bob",
            "the repeat overwrote the first"
        );
        let r = reconcile(&f.store, InFlightPolicy::Skip, false, &st.seen).unwrap();
        let (removed, recovered, eligible) = (r.removed, r.recovered, r.eligible);
        assert_eq!((removed, recovered, eligible), (0, 0, 1));
    }

    #[test]
    fn removed_rows_are_skipped_unless_already_sent() {
        let f = Fixture::new();
        f.import(&[
            ("ann@a.example", "Ann"),
            ("bob@b.example", "Bob"),
            ("cat@c.example", "Cat"),
        ]);
        f.set_state("cat@c.example", State::Sent);
        let (st, _) = f.import(&[("ann@a.example", "Ann")]);
        let r = reconcile(&f.store, InFlightPolicy::Skip, false, &st.seen).unwrap();
        let (removed, _, eligible) = (r.removed, r.recovered, r.eligible);
        assert_eq!((removed, eligible), (1, 1));
        let bob = f.get("bob@b.example");
        assert_eq!(bob.state, State::Skipped);
        assert_eq!(bob.last_reply, "removed from the list");
        assert_eq!(f.get("cat@c.example").state, State::Sent);
        assert_eq!(f.get("ann@a.example").state, State::Pending);
    }

    #[test]
    fn in_flight_rows_follow_the_policy() {
        for (policy, want) in [
            (InFlightPolicy::Skip, State::Unknown),
            (InFlightPolicy::Resend, State::Pending),
        ] {
            let f = Fixture::new();
            f.import(&[("ann@a.example", "Ann")]);
            f.set_state("ann@a.example", State::InFlight);
            let (st, _) = f.import(&[("ann@a.example", "Ann")]);
            let recovered = reconcile(&f.store, policy, false, &st.seen)
                .unwrap()
                .recovered;
            assert_eq!(recovered, 1);
            assert_eq!(f.get("ann@a.example").state, want, "{policy:?}");
        }
    }

    /// A recipient under a claim marker left by a crashed run is in flight (the skip policy
    /// makes it `unknown`); one whose result was committed after the claim keeps it.
    #[test]
    fn claim_markers_left_by_a_crash_are_settled_by_the_policy() {
        let f = Fixture::new();
        f.import(&[("ann@a.example", "Ann"), ("bob@b.example", "Bob")]);
        let at = f.get("ann@a.example").updated_ms + 1;
        f.store
            .put_claim(at, ["ann@a.example", "bob@b.example"])
            .unwrap();
        let mut bob = f.get("bob@b.example");
        bob.state = State::Deferred;
        bob.updated_ms = at;
        f.store.put_each([("bob@b.example", &bob)]).unwrap();
        let (st, _) = f.import(&[("ann@a.example", "Ann"), ("bob@b.example", "Bob")]);
        let r = reconcile(&f.store, InFlightPolicy::Skip, false, &st.seen).unwrap();
        assert_eq!(r.recovered, 1);
        assert_eq!(f.get("ann@a.example").state, State::Unknown);
        assert_eq!(f.get("bob@b.example").state, State::Deferred);
        assert!(
            f.store.claimed_keys().unwrap().is_empty(),
            "markers cleared"
        );
    }

    /// A crash between the suppression write and the result commit: the rerun's import finds
    /// this campaign's own bounce on the list and records the recipient as bounced (with the
    /// reply), not as skipped; another source's entry still skips it.
    #[test]
    fn own_bounce_on_the_list_is_recorded_as_bounced() {
        let f = Fixture::new();
        f.import(&[("ann@a.example", "Ann"), ("bob@b.example", "Bob")]);
        let mut snap = std::collections::HashMap::new();
        let e = |source: &str| {
            crate::store::suppression::Entry::bounce(source, "550 5.1.1 gone".into(), 1)
        };
        snap.insert("ann@a.example".to_string(), e(&f.settings.id));
        snap.insert("bob@b.example".to_string(), e("another-campaign"));
        let snap = Snapshot::from_entries(snap);
        f.import_with(
            &[("ann@a.example", "Ann"), ("bob@b.example", "Bob")],
            Some(&snap),
        );
        let ann = f.get("ann@a.example");
        assert_eq!(ann.state, State::Bounced);
        assert_eq!(ann.last_reply, "550 5.1.1 gone");
        assert!(ann.is_address_bounce());
        assert_eq!(f.get("bob@b.example").state, State::Skipped);
    }

    /// A one-click unsubscribe listed a recipient id: with the token keys set, the import
    /// skips the address it belongs to and reports the hit; without them it cannot tell.
    #[test]
    fn a_suppressed_recipient_id_skips_its_address() {
        use crate::token::{Keys, TokenSettings};
        let mut f = Fixture::new();
        let keys =
            Keys::parse("1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n")
                .unwrap();
        let rid = keys.recipient_id("ann@a.example");
        let entry = crate::store::suppression::Entry {
            reason: "unsubscribe".into(),
            at_ms: 1,
            source: "run:0000002a".into(),
            detail: "one-click".into(),
        };
        let snap = Snapshot::from_entries(
            [(crate::token::rid_key(rid), entry.clone())]
                .into_iter()
                .collect(),
        );
        let run = |f: &Fixture| {
            let rows = [("Ann@A.example", "Ann"), ("bob@b.example", "Bob")];
            f.import_with(&rows, Some(&snap)).0
        };
        let st = run(&f);
        assert!(st.id_hits.is_empty(), "no keys, no ids");
        assert_eq!(f.get("ann@a.example").state, State::Pending);
        f.settings.tokens = Some(std::sync::Arc::new(TokenSettings {
            keys,
            unsubscribe_url: None,
            bounce_domain: None,
            click_url: None,
        }));
        let st = run(&f);
        assert_eq!(st.id_hits, vec![("ann@a.example".to_string(), rid, entry)]);
        let ann = f.get("ann@a.example");
        assert_eq!(ann.state, State::Skipped);
        assert_eq!(ann.last_reply, "suppressed: unsubscribe");
        assert_eq!(f.get("bob@b.example").state, State::Pending);

        // The hit moves to the address on the list.
        let global = Global::shared(&f.dir.path().join("state"));
        global
            .suppress(
                &[(crate::token::rid_key(rid), st.id_hits[0].2.clone())],
                false,
            )
            .unwrap();
        assert_eq!(settle_id_hits(&global, st.id_hits).unwrap(), 1);
        let listed = global.list().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].0, "ann@a.example");
        assert_eq!(listed[0].1.source, "run:0000002a");
    }
}
