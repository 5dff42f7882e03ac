//! `blast send` and `blast check`: load and validate, import the lists into the store
//! (idempotent), reconcile what a previous run left, send through the lane, summarise.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{InFlightPolicy, Settings};
use crate::error::{Error, Result};
use crate::lane::{self, Job, MessageSpec, Stats};
use crate::list::hygiene;
use crate::list::prune::PruneReport;
use crate::list::reader::{ListReader, RowIssue, RowRef};
use crate::owner::{Global, Snapshot};
use crate::render::{Row, Templates};
use crate::shutdown::Shutdown;
use crate::store::bulk::{self, BulkWriter};
use crate::store::campaign::{CampaignStore, Counts};
use crate::store::record::{Record, State};

/// Options of `blast send`.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Where to write the prune report (default: in the campaign's state dir).
    pub pruned: Option<PathBuf>,
    /// Retry deferred recipients now instead of at their retry time.
    pub retry_now: bool,
    /// No progress display.
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    /// Campaign id.
    pub campaign: String,
    /// Counts per state after the run.
    pub counts: Counts,
    /// Wall time of the whole command.
    pub elapsed: Duration,
    /// What the import phase read and added.
    pub imported: ImportStats,
    /// Wall time of the import phase (lists → store, reconcile).
    pub import_time: Duration,
    /// Messages accepted in this run.
    pub sent_this_run: u64,
    /// The prune report and its counts per reason.
    pub pruned: (PathBuf, BTreeMap<String, u64>),
    /// Rows previously imported that are no longer in the lists (not sent).
    pub removed: u64,
    /// Recipients found in flight from a crashed run, and what was done with them.
    pub recovered_in_flight: (u64, InFlightPolicy),
    /// Domains with sender/message-level permanent failures.
    pub warnings: BTreeMap<String, (u64, String)>,
    /// Addresses newly added to the suppression list.
    pub suppressed: u64,
    /// Why the lane stopped early, if it did.
    pub fatal: Option<String>,
    /// The destination stayed unavailable longer than `wait_for_retries`: the run ended
    /// early with everyone unsent still pending or deferred (exit 75; a rerun resumes).
    pub stalled: Option<String>,
    /// Ctrl-C.
    pub interrupted: bool,
}

impl Summary {
    /// Exit code per DESIGN.md: 0 complete, 75 deferred left, 130 interrupted, 1 lane failure,
    /// 2 when nobody could be sent (every recipient skipped, or no recipient at all: a run
    /// that sends nobody is not a success).
    pub fn exit_code(&self) -> i32 {
        use crate::error::*;
        if self.interrupted {
            EXIT_INTERRUPTED
        } else if self.fatal.is_some() {
            EXIT_FAILURE
        } else if self.counts.get(State::Deferred)
            + self.counts.get(State::Pending)
            + self.counts.get(State::InFlight)
            > 0
        {
            EXIT_DEFERRED
        } else if self.counts.total == self.counts.get(State::Skipped) {
            EXIT_CONFIG
        } else {
            EXIT_OK
        }
    }
}

/// The campaign's own directory inside the state dir.
pub fn campaign_dir(s: &Settings) -> PathBuf {
    s.state_dir.join(&s.id)
}

/// The sled store directory of a campaign.
pub fn store_dir(s: &Settings) -> PathBuf {
    campaign_dir(s).join("store")
}

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
    let fields: Vec<String> = templates.referenced_fields().into_iter().collect();
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

fn prune_path(s: &Settings, opt: &Option<PathBuf>) -> PathBuf {
    opt.clone()
        .unwrap_or_else(|| campaign_dir(s).join("pruned.csv"))
}

fn io(ctx: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let c = format!("{ctx} {}", p.display());
    move |e| Error::io(c, e)
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
    /// Fingerprints of every accepted address of this import (removed rows are the stored
    /// ones not in here).
    pub seen: HashSet<u64>,
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
/// `file_map` comes from [`register_files`]; `eligible` is raised as pending recipients are
/// written, so a send running beside the import knows its total.
pub fn import(
    s: &Settings,
    store: &CampaignStore,
    source: ImportSource<'_>,
    prune: &mut PruneReport,
    supp: Option<&Snapshot>,
    eligible: &AtomicU64,
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
        eligible.fetch_add(count_pending(batch), Ordering::Relaxed);
        if let Some(f) = &feed {
            for (key, rec) in batch.iter().filter(|(_, r)| r.state == State::Pending) {
                let job = Job {
                    key: key.clone(),
                    rec: rec.clone(),
                    requeues: 0,
                    claim: 0,
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
        let suppressed = match supp {
            Some(sp) => sp.lookup(&mb.key).cloned(),
            None => None,
        };
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
                        e.state = State::Skipped;
                        e.last_reply = format!("suppressed: {}", entry.reason);
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
    store.put_batch(fix.iter().map(|(k, r)| (k.as_str(), r)))?;
    store.clear_claims()?;
    store.flush()?;
    Ok(Reconciled {
        removed,
        recovered,
        eligible,
        bounced,
    })
}

fn message_id_domain(s: &Settings) -> String {
    s.from
        .address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_else(|| "localhost".into())
}

/// Makes sure every address-level bounce of the campaign is on the suppression list: the
/// backstop for a run that died (or could not reach the list's owner) after recording a
/// bounce. Returns how many were missing.
fn restore_suppressions(
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
                    crate::store::suppression::Entry {
                        reason: "bounce".into(),
                        at_ms: now,
                        source: campaign.to_string(),
                        detail: reply.clone(),
                    },
                )
            })
            .collect();
        added += global.suppress(&entries, false)?;
    }
    Ok(added)
}

/// Runs `blast send`.
pub async fn send(s: &Settings, opts: &SendOptions, shutdown: Arc<Shutdown>) -> Result<Summary> {
    let started = Instant::now();
    let (templates, reader, fields) = load_inputs(s)?;
    let dir = store_dir(s);
    let store = Arc::new(CampaignStore::open(&dir, Duration::from_millis(500))?);
    let ppath = prune_path(s, &opts.pruned);
    let mut prune =
        PruneReport::create(&ppath).map_err(io("cannot create prune report", &ppath))?;

    // Import (blocking work: CSV, hygiene, sled) off the reactor. Into an empty store it runs
    // beside the lane: the dispatcher picks up rows as they are written, so the CPU the
    // import needs overlaps with the network wait of sending. An existing store is imported
    // and reconciled first: rows a crashed run left in flight must be settled before anything
    // is sent.
    let fresh = store.is_empty();
    let stats = Arc::new(Stats::default());
    let (feed_tx, feed_rx) = if fresh {
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(10_000);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let file_map = register_files(&store, &reader)?;
    let global = Global::shared(s.suppression_state_dir());
    let import_started = Instant::now();
    let import_task = {
        let (s2, st, stats, global) = (s.clone(), store.clone(), stats.clone(), global.clone());
        let retry_now = opts.retry_now;
        tokio::task::spawn_blocking(move || -> Result<_> {
            // A copy, so the import does not hold the list (or serve) while it reads.
            let supp = global.snapshot()?;
            let imported = import(
                &s2,
                &st,
                ImportSource {
                    reader,
                    file_map: &file_map,
                    fields: &fields,
                    feed: feed_tx,
                },
                &mut prune,
                Some(&supp),
                &stats.eligible,
            )?;
            drop(supp);
            let (removed, recovered, restored) = if imported.fresh {
                (0, 0, 0)
            } else {
                let r = reconcile(&st, s2.in_flight, retry_now, &imported.seen)?;
                stats.eligible.store(r.eligible, Ordering::Relaxed);
                let restored = restore_suppressions(&global, &s2.id, r.bounced)?;
                (r.removed, r.recovered, restored)
            };
            Ok((
                prune,
                imported,
                (removed, recovered, restored),
                import_started.elapsed(),
            ))
        })
    };
    let finish_import = {
        let shutdown = shutdown.clone();
        async move {
            let r = import_task
                .await
                .map_err(|e| Error::Lane(format!("import task failed: {e}")))
                .and_then(|r| r);
            if r.is_err() {
                shutdown.stop();
            }
            r
        }
    };
    let mut finish_import = Some(Box::pin(finish_import));
    let mut imported_early = None;
    if !fresh {
        imported_early = Some(finish_import.take().expect("not yet awaited").await?);
    }

    let spec = Arc::new(MessageSpec {
        campaign: s.id.clone(),
        templates,
        files: store.files()?,
        from: s.from.clone(),
        reply_to: s.reply_to.clone(),
        message_id_domain: message_id_domain(s),
    });
    let progress = crate::report::progress::spawn(
        s.id.clone(),
        stats.clone(),
        opts.quiet,
        campaign_dir(s).join("status.json"),
        store.clone(),
    );
    let lane_run = lane::run(
        &s.lane,
        lane::Inputs {
            global,
            spec,
            store: store.clone(),
            shutdown: shutdown.clone(),
            stats: stats.clone(),
            feed: feed_rx,
        },
    );
    let (report, import_out) = match (imported_early, finish_import) {
        (Some(done), _) => (lane_run.await, done),
        (None, Some(fut)) => {
            let (report, done) = tokio::join!(lane_run, fut);
            (report, done?)
        }
        (None, None) => unreachable!("the import is either awaited or run beside the lane"),
    };
    let report = report?;
    let (prune, imported, (removed, recovered, restored), import_time) = import_out;
    let pruned = prune
        .finish()
        .map_err(io("cannot write prune report", &ppath))?;
    progress.finish().await;

    let suppressed = report.suppressed + restored;
    let counts = store.counts()?;
    let interrupted = shutdown.stopping();
    let summary = Summary {
        campaign: s.id.clone(),
        counts,
        elapsed: started.elapsed(),
        imported,
        import_time,
        sent_this_run: stats.sent.load(std::sync::atomic::Ordering::Relaxed),
        pruned,
        removed,
        recovered_in_flight: (recovered, s.in_flight),
        warnings: report.warnings,
        suppressed,
        fatal: report.fatal,
        stalled: report.stalled,
        interrupted,
    };
    crate::report::summary::write_snapshot(
        &campaign_dir(s).join("status.json"),
        &summary.campaign,
        &summary.counts,
        false,
    );
    Ok(summary)
}

/// What `blast check` found.
#[derive(Debug)]
pub struct CheckReport {
    /// Data rows read.
    pub rows: u64,
    /// Rows that would be sent (rendered fine, unique, valid).
    pub sendable: u64,
    /// The prune report and counts per reason.
    pub pruned: (PathBuf, BTreeMap<String, u64>),
}

/// Runs `blast check`: everything `send` validates, every row rendered, nothing sent and the
/// store untouched.
pub fn check(s: &Settings, pruned: &Option<PathBuf>) -> Result<CheckReport> {
    let (templates, mut reader, _fields) = load_inputs(s)?;
    let ppath = prune_path(s, pruned);
    let mut prune =
        PruneReport::create(&ppath).map_err(io("cannot create prune report", &ppath))?;
    let perr =
        |e: std::io::Error| Error::io(format!("writing prune report {}", ppath.display()), e);
    let paths = reader.paths().to_vec();
    let columns: Vec<Vec<String>> = (0..paths.len())
        .map(|i| reader.columns(i).to_vec())
        .collect();
    let mut seen: HashSet<u64> = HashSet::new();
    let (mut rows, mut sendable) = (0u64, 0u64);
    let mut values: Vec<String> = Vec::new();
    while let Some(row) = reader.next_row() {
        rows += 1;
        let Some((row, mb)) = screen(row, &paths, &s.policy, &mut prune).map_err(perr)? else {
            continue;
        };
        let file = &paths[row.file_idx];
        if !seen.insert(fingerprint(&mb.key)) {
            prune
                .record_duplicate(file, row.line, &mb.address)
                .map_err(perr)?;
            continue;
        }
        values.clear();
        values.extend(row.record.iter().map(str::to_string));
        if let Err(e) = templates.render(Row {
            columns: &columns[row.file_idx],
            values: &values,
        }) {
            prune
                .record(file, row.line, &mb.address, "missing_field", &e.to_string())
                .map_err(perr)?;
            continue;
        }
        note_flags(&mut prune, file, row.line, &mb).map_err(perr)?;
        sendable += 1;
    }
    let pruned = prune
        .finish()
        .map_err(io("cannot write prune report", &ppath))?;
    Ok(CheckReport {
        rows,
        sendable,
        pruned,
    })
}

/// Reports row-level problems (ragged, bad encoding) and hygiene rejections to the prune
/// report; returns the row with its mailbox when the address is usable.
fn screen<'r>(
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
fn note_flags(
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
