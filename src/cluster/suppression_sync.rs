//! The fleet's suppression list: every machine keeps its own durable list (the one it acts
//! on) and the machines tell each other their changes through one Redis Stream.
//!
//! - A change is durable in the machine's own list first ([`crate::owner`]), then waits in
//!   the state dir's outbox ([`super::outbox`]) until it is appended to the stream (`XADD`).
//! - Each machine reads the stream from the last entry it applied, which it remembers
//!   durably (`STATE_DIR/cluster/applied`), so one that was offline catches up. Entries are
//!   applied in stream order, its own included, so concurrent adds and removes of one address
//!   end the same on every machine.
//! - Each machine acknowledges what it applied (`HSET {blast:supp}:acks MACHINE ID`), and
//!   the stream is trimmed only behind the oldest acknowledgement (`XTRIM MINID`): a machine
//!   that is offline holds the trim back, never loses entries.
//! - An epoch key tells a Redis that lost its data: when it is missing (or not the one this
//!   machine last saw), the machine publishes its whole list again and reads the new stream
//!   from its start.

use std::path::PathBuf;
use std::time::Duration;

use redis::streams::StreamReadReply;

use super::outbox::{self, Change};
use super::Cluster;
use crate::owner::Global;

const STREAM: &str = "{blast:supp}:stream";
const ACKS: &str = "{blast:supp}:acks";
const EPOCH: &str = "{blast:supp}:epoch";
/// Entries read, or published, per round trip.
const BATCH: usize = 1000;
/// How often the list is synced while a process runs.
pub const EVERY: Duration = Duration::from_millis(500);

/// One state dir's side of the fleet's suppression list.
#[derive(Clone)]
pub struct SuppressionSync {
    cluster: Cluster,
    global: Global,
    state: PathBuf,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Changes this machine published.
    pub published: usize,
    /// Stream entries applied.
    pub applied: usize,
    /// The whole list was published again (first join, or Redis lost its data).
    pub republished: bool,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Stream ids compare as (ms, seq).
fn id_key(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

impl SuppressionSync {
    /// The sync of `global`'s list (its state dir) through `cluster`.
    pub fn new(cluster: Cluster, global: Global) -> SuppressionSync {
        let state = global.dir().to_path_buf();
        SuppressionSync {
            cluster,
            global,
            state,
        }
    }

    /// Syncs every [`EVERY`] until `stop`, then once more (what this run suppressed reaches
    /// the fleet before it exits). A round that fails (Redis down) is retried next time;
    /// meanwhile the list works locally.
    pub async fn run(self, stop: std::sync::Arc<crate::shutdown::Shutdown>) {
        loop {
            if let Err(e) = self.round().await {
                tracing_warn(&e);
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.wait() => break,
            }
        }
        let _ = self.round().await;
    }

    /// One sync: the epoch, this machine's outbox, the stream's new entries, the trim.
    pub async fn round(&self) -> Result<Round, String> {
        let mut round = Round::default();
        let st = self.state.clone();
        blocking(move || {
            std::fs::create_dir_all(outbox::dir(&st))
                .map_err(|e| crate::error::Error::io("cannot create the cluster state dir", e))
        })
        .await?;
        round.republished = self.check_epoch().await?;
        round.published = self.publish_outbox().await?;
        loop {
            let n = self.apply_new().await?;
            round.applied += n;
            if n < BATCH {
                break;
            }
        }
        self.trim().await?;
        Ok(round)
    }

    /// Publishes the whole list again when Redis's epoch is not the one this machine saw
    /// last. Returns whether it did.
    async fn check_epoch(&self) -> Result<bool, String> {
        let fresh = format!("{:016x}", rand::random::<u64>());
        let epoch: String = self
            .cluster
            .call(|mut c| async move {
                // SET NX then GET: the first machine after a data loss names the new epoch.
                let _: Option<String> = redis::cmd("SET")
                    .arg(EPOCH)
                    .arg(&fresh)
                    .arg("NX")
                    .query_async(&mut c)
                    .await?;
                redis::cmd("GET").arg(EPOCH).query_async(&mut c).await
            })
            .await?;
        if outbox::read_state(&self.state, "epoch").as_deref() == Some(epoch.as_str()) {
            return Ok(false);
        }
        let g = self.global.clone();
        let list = blocking(move || g.list()).await?;
        let changes: Vec<Change> = list
            .into_iter()
            .map(|(k, e)| Change::Add { k, e })
            .collect();
        for chunk in changes.chunks(BATCH) {
            self.xadd(chunk).await?;
        }
        let (st, ep) = (self.state.clone(), epoch.clone());
        blocking(move || {
            outbox::write_state(&st, "applied", "0-0")?;
            outbox::write_state(&st, "epoch", &ep)
        })
        .await?;
        Ok(true)
    }

    async fn xadd(&self, changes: &[Change]) -> Result<(), String> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for c in changes {
            let cmd = pipe
                .cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("m")
                .arg(self.cluster.machine());
            match c {
                Change::Add { k, e } => cmd
                    .arg("op")
                    .arg("add")
                    .arg("k")
                    .arg(k)
                    .arg("e")
                    .arg(serde_json::to_string(e).map_err(|e| e.to_string())?),
                Change::Del { k } => cmd.arg("op").arg("del").arg("k").arg(k),
            }
            .ignore();
        }
        self.cluster
            .call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    async fn publish_outbox(&self) -> Result<usize, String> {
        let st = self.state.clone();
        let (changes, files) = blocking(move || outbox::take(&st)).await?;
        for chunk in changes.chunks(BATCH) {
            // On failure the files stay: the next round publishes them (again, harmlessly).
            self.xadd(chunk).await?;
        }
        let n = changes.len();
        blocking(move || {
            for f in files {
                let _ = std::fs::remove_file(f);
            }
            Ok(())
        })
        .await?;
        Ok(n)
    }

    /// Applies up to [`BATCH`] entries after the last applied one, then remembers and
    /// acknowledges the last.
    async fn apply_new(&self) -> Result<usize, String> {
        let from = outbox::read_state(&self.state, "applied").unwrap_or_else(|| "0-0".into());
        let f2 = from.clone();
        let reply: StreamReadReply = self
            .cluster
            .call(|mut c| async move {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("STREAMS")
                    .arg(STREAM)
                    .arg(f2)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(key) = reply.keys.into_iter().next() else {
            return Ok(0);
        };
        let n = key.ids.len();
        let Some(last) = key.ids.last().map(|i| i.id.clone()) else {
            return Ok(0);
        };
        let changes: Vec<Change> = key
            .ids
            .iter()
            .filter_map(|i| {
                let k: String = i.get("k")?;
                match i.get::<String>("op")?.as_str() {
                    "add" => {
                        let e: String = i.get("e")?;
                        Some(Change::Add {
                            k,
                            e: serde_json::from_str(&e).ok()?,
                        })
                    }
                    "del" => Some(Change::Del { k }),
                    _ => None,
                }
            })
            .collect();
        let (g, st, l2) = (self.global.clone(), self.state.clone(), last.clone());
        blocking(move || {
            // In stream order; runs of adds (or removes) go to the owner as one request.
            let mut i = 0;
            while i < changes.len() {
                let add = matches!(changes[i], Change::Add { .. });
                let j = changes[i..]
                    .iter()
                    .position(|c| matches!(c, Change::Add { .. }) != add)
                    .map_or(changes.len(), |p| i + p);
                if add {
                    let entries: Vec<_> = changes[i..j]
                        .iter()
                        .filter_map(|c| match c {
                            Change::Add { k, e } => Some((k.clone(), e.clone())),
                            Change::Del { .. } => None,
                        })
                        .collect();
                    g.suppress_as(&entries, false, true)?;
                } else {
                    let keys: Vec<_> = changes[i..j]
                        .iter()
                        .filter_map(|c| match c {
                            Change::Del { k } => Some(k.clone()),
                            Change::Add { .. } => None,
                        })
                        .collect();
                    g.unsuppress_as(&keys, true)?;
                }
                i = j;
            }
            // Durable after the entries themselves: a crash in between applies them again.
            outbox::write_state(&st, "applied", &l2)
        })
        .await?;
        let machine = self.cluster.machine().to_string();
        self.cluster
            .call(|mut c| async move {
                redis::cmd("HSET")
                    .arg(ACKS)
                    .arg(machine)
                    .arg(last)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        Ok(n)
    }

    /// Trims the stream behind the oldest acknowledgement of every machine that joined.
    async fn trim(&self) -> Result<(), String> {
        let machine = self.cluster.machine().to_string();
        let acks: std::collections::HashMap<String, String> = self
            .cluster
            .call(|mut c| async move {
                // A machine that joined but applied nothing yet holds the trim at the start.
                let _: i64 = redis::cmd("HSETNX")
                    .arg(ACKS)
                    .arg(machine)
                    .arg("0-0")
                    .query_async(&mut c)
                    .await?;
                redis::cmd("HGETALL").arg(ACKS).query_async(&mut c).await
            })
            .await?;
        let Some(min) = acks.values().min_by_key(|v| id_key(v)).cloned() else {
            return Ok(());
        };
        if id_key(&min) == (0, 0) {
            return Ok(());
        }
        self.cluster
            .call(|mut c| async move {
                redis::cmd("XTRIM")
                    .arg(STREAM)
                    .arg("MINID")
                    .arg(min)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }
}

fn tracing_warn(e: &str) {
    // Quiet by design: the lane's progress line already says "waiting for Redis"; a sync
    // that fails for another reason is worth a line.
    if !e.contains("no answer") && !e.contains("refused") && !e.contains("broken pipe") {
        eprintln!("blast: warning: suppression sync with Redis: {e}");
    }
}
