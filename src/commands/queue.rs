//! `blast queue list|retry|drop|stats`: the priority queue of `blast serve`. While serve runs
//! it owns the queue (sled: one process at a time), so requests go through its control
//! socket; when it is stopped, `list` and `drop` open the queue directly.

use std::path::Path;
use std::time::Duration;

use crate::cli::QueueAction;
use crate::error::{Error, Result};
use crate::serve::config as serve_config;
use crate::serve::control::{self, Request, Response};
use crate::store::queue::{self, format_id, parse_id, Entry, QueueStore};

/// Runs a `blast queue` action for the server config at `config`.
pub async fn run(config: &Path, action: QueueAction) -> Result<i32> {
    let s = serve_config::load(config)?;
    let dir = s.state_dir;
    let req = match &action {
        QueueAction::List { .. } => Request::List,
        QueueAction::Retry { id } => Request::Retry {
            id: id.as_deref().map(id_arg).transpose()?,
        },
        QueueAction::Drop { id } => Request::Drop { id: id_arg(id)? },
        QueueAction::Stats => Request::Stats,
    };
    let resp = match control::request(&dir, &req)
        .await
        .map_err(|e| Error::io(format!("{}", control::path_in(&dir).display()), e))?
    {
        Some(r) => r,
        None => offline(&dir, &req)?,
    };
    if let Some(e) = resp.error {
        return Err(Error::Lane(format!("blast serve: {e}")));
    }
    match action {
        QueueAction::List { json } => print_list(&resp.entries, json),
        QueueAction::Retry { id: Some(id) } if !resp.queued => {
            return Err(Error::Config(format!("{id}: not in the queue")));
        }
        QueueAction::Retry { id } => match id {
            Some(id) => println!("{id}: due now"),
            None => println!("every queued message is due now"),
        },
        QueueAction::Drop { id } if resp.dropped => println!("{id}: dropped"),
        QueueAction::Drop { id } => {
            return Err(Error::Config(format!("{id}: not in the queue")));
        }
        QueueAction::Stats => {
            for (k, v) in resp.stats {
                println!("{k:<20} {v}");
            }
        }
    }
    Ok(0)
}

fn id_arg(s: &str) -> Result<u64> {
    parse_id(s).ok_or_else(|| {
        Error::Config(format!(
            "{s:?} is not a queue id (16 hex digits, as `blast queue list` prints them)"
        ))
    })
}

/// Serve is not running: answer from the store itself.
fn offline(dir: &Path, req: &Request) -> Result<Response> {
    let mut resp = Response::default();
    if !queue::path_in(dir).exists() {
        return match req {
            Request::List => Ok(resp),
            _ => Err(Error::Config(format!(
                "{}: no priority queue here (has `blast serve` run with this config?)",
                dir.display()
            ))),
        };
    }
    match req {
        Request::List => {
            let q = QueueStore::open(dir, Duration::from_secs(2))?;
            resp.entries = q.list()?;
        }
        Request::Drop { id } => {
            let q = QueueStore::open(dir, Duration::from_secs(2))?;
            resp.dropped = q.remove(*id)?;
            q.flush_now()?;
        }
        Request::Retry { id } => {
            if let Some(id) = id {
                let q = QueueStore::open(dir, Duration::from_secs(2))?;
                resp.queued = q.contains(*id)?;
                if !resp.queued {
                    return Ok(resp);
                }
            }
            println!("blast serve is not running; it tries every queued message when it starts");
        }
        Request::Stats => {
            return Err(Error::Lane(
                "blast serve is not running (counters live in the running server)".into(),
            ))
        }
        Request::SuppressAdd { .. }
        | Request::SuppressRemove { .. }
        | Request::SuppressList
        | Request::SuppressMove { .. }
        | Request::RegisterRun { .. }
        | Request::RunDirs
        | Request::WarmupReserve { .. }
        | Request::WarmupSettle { .. }
        | Request::WarmupDays { .. }
        | Request::CountEvents { .. }
        | Request::RunName { .. }
        | Request::SourceCounts { .. }
        | Request::SoftHits { .. }
        | Request::SoftReset { .. }
        | Request::SoftCounts
        | Request::HoldPut { .. }
        | Request::Holds
        | Request::HoldLift { .. }
        | Request::InboxPut { .. }
        | Request::InboxList
        | Request::InboxProbe
        | Request::InboxShow { .. } => {
            unreachable!("`blast queue` sends only queue requests")
        }
    }
    Ok(resp)
}

fn print_list(entries: &[Entry], json: bool) {
    if json {
        // The id as the text listing, the 250 reply and `drop`/`retry` spell it (a JSON
        // number would be decimal, and `drop` reads hex).
        let shown: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["id"] = serde_json::Value::String(format_id(e.id));
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).unwrap_or_default()
        );
        return;
    }
    if entries.is_empty() {
        println!("queue is empty");
        return;
    }
    println!(
        "{:<16}  {:<19}  {:>8}  {:<30}  recipients (state, attempts, last reply)",
        "id", "received (UTC)", "size", "sender"
    );
    for e in entries {
        let at = crate::report::summary::utc_time(e.received_ms);
        let from = if e.mail_from.is_empty() {
            "<>"
        } else {
            &e.mail_from
        };
        println!(
            "{:<16}  {at:<19}  {:>8}  {from:<30}",
            format_id(e.id),
            e.size
        );
        for r in &e.rcpts {
            println!(
                "    {} ({}, {}) {}",
                r.addr,
                r.status.name(),
                r.attempts,
                r.last_reply
            );
        }
    }
}
