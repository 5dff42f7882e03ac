//! `blast bounces`:
//! - `parse FILE [--json]`: what one received message says about its recipients (the results
//!   of [`crate::bounce::parse`]), printed and nothing else — no store is opened, so it is
//!   safe on any message, any time;
//! - `import PATH --config blast.toml`: bounces and reports from a mailbox, acted on as the
//!   bounce inbox acts on its own mail ([`crate::serve::inbox_import`]);
//! - `list` and `show ID`: the stored messages, kept for `[bounces] keep_days`.
//!
//! While `blast serve` runs an inbox it holds the store: these go through its control
//! socket; otherwise the store is opened here.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::bounce::{self, Bounce};
use crate::cli::BouncesAction;
use crate::control::{self, Request};
use crate::error::{Error, Result};
use crate::owner::Global;
use crate::serve::control::NO_INBOX;
use crate::serve::inbox::{InboxStore, Mailbox, Rules, Stored};
use crate::serve::inbox_import::{self, Summary};

/// Largest message read: far above any bounce, and it bounds a mistaken `-` on a huge pipe.
const MAX_MESSAGE: u64 = 64 * 1024 * 1024;

/// Runs a `blast bounces` action.
pub fn run(action: BouncesAction) -> Result<i32> {
    match action {
        BouncesAction::Parse { file, json } => {
            let mut raw = Vec::new();
            let name = file.display().to_string();
            let read = if name == "-" {
                std::io::stdin().take(MAX_MESSAGE).read_to_end(&mut raw)
            } else {
                std::fs::File::open(&file).and_then(|f| f.take(MAX_MESSAGE).read_to_end(&mut raw))
            };
            read.map_err(|e| Error::io(format!("cannot read {name}"), e))?;
            let results = bounce::parse(&raw);
            if json {
                let text = serde_json::to_string_pretty(&results)
                    .map_err(|e| Error::io("json", std::io::Error::other(e)))?;
                println!("{text}");
            } else {
                print_table(&name, &results);
            }
            Ok(0)
        }
        BouncesAction::Import { path, config, json } => import(&path, &config, json),
        BouncesAction::List { config, json } => list(&config, json),
        BouncesAction::Show { id, config } => show(&id, &config),
    }
}

fn print_table(name: &str, results: &[Bounce]) {
    if results.is_empty() {
        println!("{name}: not a bounce, a complaint or an auto-reply (no results)");
        return;
    }
    println!(
        "{:<36} {:<9} {:<20} {:<20} {:<7} reason",
        "recipient", "class", "category", "action", "status"
    );
    for b in results {
        let action = serde_json::to_value(b.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:<36} {:<9} {:<20} {:<20} {:<7} {}",
            b.recipient.as_deref().unwrap_or("(unknown)"),
            b.class.as_str(),
            format!("{:?}", b.category),
            action,
            b.status.as_deref().unwrap_or("-"),
            crate::bounce::scan::one_line(&b.reason, 120),
        );
    }
    if let Some(id) = results
        .iter()
        .find_map(|b| b.original_message_id.as_deref())
    {
        println!("original Message-ID: {id}");
    }
    if let Some(t) = results.iter().find_map(|b| b.verp_token.as_deref()) {
        println!("token candidate: {t}");
    }
}

/// Where the bounce inbox is: serve's (through its control socket) while serve runs one,
/// else the store opened here.
enum Inbox {
    Serve(PathBuf),
    Local(InboxStore, Global, Rules),
}

impl Inbox {
    fn open(config: &Path) -> Result<Inbox> {
        let s = crate::serve::config::load(config)?;
        let probe = control::request_blocking(&s.state_dir, &Request::InboxProbe);
        match probe {
            Ok(Some(r)) if r.error.as_deref() != Some(NO_INBOX) => {
                if let Some(e) = r.error {
                    return Err(Error::Lane(format!("blast serve refused: {e}")));
                }
                return Ok(Inbox::Serve(s.state_dir));
            }
            _ => {}
        }
        let tokens = s.token_settings()?.map(std::sync::Arc::new);
        let rules = Rules::new(
            tokens,
            s.bounce_domain.as_deref().unwrap_or(""),
            &s.feedback_addresses,
            s.bounce_policy.clone(),
        );
        let store = InboxStore::open(&s.state_dir)?;
        Ok(Inbox::Local(store, Global::shared(&s.state_dir), rules))
    }

    fn ask(dir: &Path, req: &Request) -> Result<control::Response> {
        match control::request_blocking(dir, req) {
            Ok(Some(r)) => match r.error {
                Some(e) => Err(Error::Lane(format!("blast serve refused: {e}"))),
                None => Ok(r),
            },
            Ok(None) => Err(Error::Lane("blast serve stopped during the command".into())),
            Err(e) => Err(Error::io("blast serve's control socket", e)),
        }
    }

    /// Imports every message at `path`. Opened here, the store is let go every
    /// [`crate::owner::MAX_HOLD`]: a serve starting meanwhile waits for it (and for the
    /// global state), takes it, and the rest of the import goes through serve's socket.
    fn import(self, path: &Path) -> Result<Summary> {
        let mut sum = Summary::default();
        let errors = match self {
            Inbox::Local(store, global, rules) => {
                let dir = global.dir().to_path_buf();
                inbox_import::resume(&mut sum, &store, &global, &rules);
                inbox_import::purge_old(&mut sum, &store, &rules);
                let mut store = Some(store);
                let mut since = std::time::Instant::now();
                let (mut via_serve, mut gone) = (false, false);
                inbox_import::read_messages(path, |name, raw| {
                    if !via_serve && since.elapsed() >= crate::owner::MAX_HOLD {
                        store = None;
                        match reacquire(&dir) {
                            Ok(Some(st)) => store = Some(st),
                            Ok(None) => via_serve = true,
                            Err(e) => sum.errors.push(format!("{name}: {e}")),
                        }
                        since = std::time::Instant::now();
                    }
                    if via_serve {
                        put_via_serve(&dir, name, raw, &mut sum, &mut gone);
                    } else if let Some(st) = &store {
                        sum.add(inbox_import::import_one(st, &global, &rules, name, raw));
                    } else {
                        sum.messages += 1;
                        sum.errors.push(format!(
                            "{name}: not imported: the bounce inbox's store could not be \
                             opened again (run the import again)"
                        ));
                    }
                })
            }
            Inbox::Serve(dir) => {
                let mut gone = false;
                inbox_import::read_messages(path, |name, raw| {
                    put_via_serve(&dir, name, raw, &mut sum, &mut gone)
                })
            }
        };
        sum.errors.extend(errors);
        Ok(sum)
    }

    fn list(&self) -> Result<Vec<Stored>> {
        match self {
            Inbox::Local(store, ..) => store.list().map_err(Error::Lane),
            Inbox::Serve(dir) => Ok(Self::ask(dir, &Request::InboxList)?.inbox),
        }
    }

    fn show(&self, id: u64) -> Result<Option<(Stored, Vec<u8>)>> {
        match self {
            Inbox::Local(store, ..) => {
                let env = store.get(id).map_err(Error::Lane)?;
                let raw = store.raw(id).map_err(Error::Lane)?.unwrap_or_default();
                Ok(env.map(|e| (e, raw)))
            }
            Inbox::Serve(dir) => {
                let r = Self::ask(dir, &Request::InboxShow { id })?;
                let raw = r
                    .raw_b64
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default();
                Ok(r.inbox.into_iter().next().map(|e| (e, raw)))
            }
        }
    }
}

/// Whether serve runs an inbox on `dir` (and answers).
fn serve_has_inbox(dir: &Path) -> bool {
    matches!(
        control::request_blocking(dir, &Request::InboxProbe),
        Ok(Some(r)) if r.error.is_none()
    )
}

/// After letting go of the inbox store: the store again (`Some`), or `None` when a serve
/// took it meanwhile and answers on its socket.
fn reacquire(dir: &Path) -> Result<Option<InboxStore>> {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if serve_has_inbox(dir) {
            return Ok(None);
        }
        match InboxStore::open(dir) {
            Ok(st) => return Ok(Some(st)),
            Err(e @ Error::Locked(_)) if std::time::Instant::now() >= deadline => return Err(e),
            Err(Error::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(e) => return Err(e),
        }
    }
}

/// One message through serve's socket. A message serve refuses is said and the rest go
/// on; once serve is gone (`gone`) the rest are not tried, and the summary says what was
/// done before.
fn put_via_serve(dir: &Path, name: &str, raw: Vec<u8>, sum: &mut Summary, gone: &mut bool) {
    if *gone {
        return;
    }
    let req = Request::InboxPut {
        name: name.to_string(),
        data_b64: base64::engine::general_purpose::STANDARD.encode(raw),
    };
    match control::request_blocking(dir, &req) {
        Ok(Some(r)) => match r.error {
            Some(e) => {
                sum.messages += 1;
                sum.errors
                    .push(format!("{name}: blast serve refused it: {e}"));
            }
            None => sum.add(r.import.unwrap_or_default()),
        },
        other => {
            *gone = true;
            let why = match other {
                Err(e) => format!(" ({e})"),
                _ => String::new(),
            };
            sum.errors.push(format!(
                "{name} and the rest: not imported: blast serve stopped during the \
                 import{why} (run it again)"
            ));
        }
    }
}

fn import(path: &Path, config: &Path, json: bool) -> Result<i32> {
    let inbox = Inbox::open(config)?;
    let sum = inbox.import(path)?;
    if json {
        let text = serde_json::to_string_pretty(&sum)
            .map_err(|e| Error::io("json", std::io::Error::other(e)))?;
        println!("{text}");
    } else {
        for e in &sum.effects {
            println!("{e}");
        }
        for e in &sum.errors {
            eprintln!("blast: {e}");
        }
        if sum.resumed > 0 {
            println!(
                "{} messages stored earlier but not processed then (an import interrupted, or \
                 the suppression list unreachable): processed now",
                sum.resumed
            );
        }
        println!(
            "{} messages: {} new, {} imported before (not acted on again){}",
            sum.messages,
            sum.new,
            sum.duplicates,
            if sum.unprocessed > 0 {
                format!(
                    ", {} stored but not processed (done at the next import or serve start)",
                    sum.unprocessed
                )
            } else {
                String::new()
            }
        );
    }
    Ok(if sum.errors.is_empty() { 0 } else { 1 })
}

fn kind(mb: &Mailbox) -> &'static str {
    match mb {
        Mailbox::Bounce { .. } => "bounce",
        Mailbox::Unsubscribe { .. } => "unsubscribe",
        Mailbox::Feedback => "feedback",
        Mailbox::Role => "role",
    }
}

fn list(config: &Path, json: bool) -> Result<i32> {
    let all = Inbox::open(config)?.list()?;
    if json {
        for s in &all {
            println!("{}", serde_json::to_string(s).unwrap_or_default());
        }
        return Ok(0);
    }
    if all.is_empty() {
        println!("no stored messages");
        return Ok(0);
    }
    println!(
        "{:<16} {:<19} {:<12} what was done",
        "id", "received (UTC)", "to"
    );
    for s in &all {
        let to = s.rcpts.first().map_or("-", |(_, mb)| kind(mb));
        let done = match s.effects.first() {
            None => "not processed yet".to_string(),
            Some(e) if s.effects.len() > 1 => format!("{e} (+{} more)", s.effects.len() - 1),
            Some(e) => e.clone(),
        };
        println!(
            "{:016x} {:<19} {:<12} {}",
            s.id,
            crate::report::summary::utc_time(s.at_ms),
            to,
            crate::bounce::scan::one_line(&done, 120)
        );
    }
    Ok(0)
}

fn show(id: &str, config: &Path) -> Result<i32> {
    let n = u64::from_str_radix(id.trim(), 16).map_err(|_| {
        Error::Config(format!(
            "{id:?}: not a message id (16 hex digits, as `blast bounces list` prints)"
        ))
    })?;
    let Some((s, raw)) = Inbox::open(config)?.show(n)? else {
        return Err(Error::Config(format!(
            "no stored message {n:016x} (deleted after [bounces] keep_days, or never received)"
        )));
    };
    println!("id:        {:016x}", s.id);
    println!(
        "received:  {} UTC from {}",
        crate::report::summary::utc_time(s.at_ms),
        s.client
    );
    println!("mail from: <{}>", s.mail_from);
    for (r, mb) in &s.rcpts {
        println!("to:        {r} ({})", kind(mb));
    }
    for e in &s.effects {
        println!("done:      {e}");
    }
    println!();
    std::io::stdout()
        .write_all(&raw)
        .map_err(|e| Error::io("stdout", e))?;
    Ok(0)
}
