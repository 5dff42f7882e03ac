//! `blast status` of a sharded campaign (`blast send --shard K/N`): every shard directory
//! under the campaign's (`STATE/ID/shard-K-of-N`) is read — its store, or its `status.json`
//! while a send holds the store — and the counts are shown per shard and summed.
//!
//! Only the per-state counts are summed: the bounce, unsubscribe and complaint rates come
//! from the global list, which counts per campaign id (all shards together), so adding them
//! up per shard would count each event once per shard.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::shard::Shard;
use crate::store::campaign::CampaignStore;
use crate::store::record::State;

/// The shard directories of a campaign, ordered by N then K.
pub fn find(s: &Settings) -> Vec<(Shard, PathBuf)> {
    let dir = s.state_dir.join(&s.id);
    let mut out: Vec<(Shard, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let sh = Shard::from_dir_name(e.file_name().to_str()?)?;
            e.path().join("store").is_dir().then(|| (sh, e.path()))
        })
        .collect();
    out.sort_by_key(|(sh, _)| (sh.n, sh.k));
    out
}

/// One shard's counts as JSON (the keys of [`crate::report::summary::counts_json`], and
/// `shard`): from its store, or from its snapshot while a send runs.
pub fn shard_json(s: &Settings, shard: Shard, dir: &Path) -> Result<serde_json::Value> {
    let mut v = match CampaignStore::open(&dir.join("store"), Duration::from_millis(200)) {
        Ok(st) => crate::report::summary::counts_json(&s.id, &st.counts()?, false),
        Err(Error::Locked(_)) => {
            let snap = dir.join("status.json");
            let text = std::fs::read_to_string(&snap).map_err(|e| {
                Error::io(
                    format!(
                        "shard {shard}: a send is running; reading its snapshot {}",
                        snap.display()
                    ),
                    e,
                )
            })?;
            serde_json::from_str(&text).map_err(|e| {
                Error::io(
                    format!("shard {shard}: snapshot {} is not JSON", snap.display()),
                    e.into(),
                )
            })?
        }
        Err(e) => return Err(e),
    };
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("shard".into(), shard.to_string().into());
    }
    Ok(v)
}

/// The counts of several shards added up: `total` and one key per state.
pub fn sum(shards: &[serde_json::Value]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    let keys = std::iter::once("total").chain(State::ALL.iter().map(|st| st.name()));
    for k in keys {
        let n: u64 = shards
            .iter()
            .filter_map(|v| v.get(k).and_then(serde_json::Value::as_u64))
            .sum();
        m.insert(k.into(), n.into());
    }
    m.insert(
        "running".into(),
        shards
            .iter()
            .any(|v| v.get("running").and_then(serde_json::Value::as_bool) == Some(true))
            .into(),
    );
    serde_json::Value::Object(m)
}

/// `blast status` of a sharded campaign: one row per shard, then the total.
pub fn run(s: &Settings, shards: &[(Shard, PathBuf)], json: bool) -> Result<i32> {
    let rows = shards
        .iter()
        .map(|(sh, dir)| shard_json(s, *sh, dir))
        .collect::<Result<Vec<_>>>()?;
    let total = sum(&rows);
    if json {
        let v = serde_json::json!({"campaign": s.id, "shards": rows, "total": total});
        println!("{v}");
        return Ok(0);
    }
    let n = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    println!(
        "campaign {}: {} recipients in {} shards",
        s.id,
        n(&total, "total").unwrap_or(0),
        rows.len()
    );
    let mut head = format!("  {:<8} {:>9}", "shard", "total");
    for st in State::ALL {
        head.push_str(&format!(" {:>9}", st.name()));
    }
    println!("{head}");
    for v in rows.iter().chain(std::iter::once(&total)) {
        let name = v
            .get("shard")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("total");
        let mut line = format!(
            "  {name:<8} {:>9}",
            n(v, "total").map_or_else(|| "?".into(), |x| x.to_string())
        );
        for st in State::ALL {
            line.push_str(&format!(" {:>9}", n(v, st.name()).unwrap_or(0)));
        }
        if v.get("running").and_then(serde_json::Value::as_bool) == Some(true)
            && v.get("shard").is_some()
        {
            line.push_str("  (sending)");
        }
        println!("{line}");
    }
    Ok(0)
}
