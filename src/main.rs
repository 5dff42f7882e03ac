//! Thin entry point: parse arguments, call the library, map errors to exit codes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use blast::cli::{Cli, Command, SuppressAction};
use blast::error::{Error, EXIT_INTERRUPTED};
use blast::lane::Shutdown;
use blast::{config, report, send, store};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("blast: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(run(cli)).unwrap_or_else(|e| {
        eprintln!("blast: {e}");
        e.exit_code()
    });
    ExitCode::from(code as u8)
}

/// First Ctrl-C: stop taking new recipients, finish in-flight transactions, save, exit 130.
/// Second: exit at once (the store is consistent; in-flight rows follow the policy next run).
fn install_interrupt(shutdown: Arc<Shutdown>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\nblast: stopping after transactions in progress (Ctrl-C again to quit now)"
            );
            shutdown.stop();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(EXIT_INTERRUPTED);
            }
        }
    });
}

async fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Send {
            campaign,
            pruned,
            retry_now,
            quiet,
        } => {
            let s = config::load(&campaign)?;
            let shutdown = Arc::new(Shutdown::default());
            install_interrupt(shutdown.clone());
            let opts = send::SendOptions {
                pruned,
                retry_now,
                quiet,
            };
            let summary = send::send(&s, &opts, shutdown).await?;
            report::summary::print(&summary);
            Ok(summary.exit_code())
        }
        Command::Check { campaign, pruned } => {
            let s = config::load(&campaign)?;
            let r = tokio::task::spawn_blocking(move || send::check(&s, &pruned))
                .await
                .map_err(|e| Error::Lane(e.to_string()))??;
            eprintln!("{}: config, templates and lists OK", campaign.display());
            eprintln!("  rows {}, sendable {}", r.rows, r.sendable);
            eprintln!("  prune report: {}", r.pruned.0.display());
            for (reason, n) in &r.pruned.1 {
                eprintln!("    {reason:<22} {n}");
            }
            Ok(0)
        }
        Command::Status { campaign, json } => status(&campaign, json),
        Command::Preview { campaign } => preview(&campaign),
        Command::Suppress { campaign, action } => suppress(&campaign, action),
        Command::Sink(args) => {
            blast::sink::run(args)
                .await
                .map_err(|e| Error::io("sink", e))?;
            Ok(0)
        }
    }
}

fn status(campaign: &Path, json: bool) -> Result<i32, Error> {
    let s = config::load(campaign)?;
    let dir = send::store_dir(&s);
    if !dir.exists() {
        return Err(Error::Config(format!(
            "{}: campaign {} has not been sent yet (no state in {})",
            campaign.display(),
            s.id,
            dir.display()
        )));
    }
    match store::campaign::CampaignStore::open(&dir, Duration::from_millis(200)) {
        Ok(st) => {
            let c = st.counts()?;
            if json {
                println!("{}", report::summary::counts_json(&s.id, &c, false));
            } else {
                println!("campaign {}: {} recipients", s.id, c.total);
                for state in store::record::State::ALL {
                    println!("  {:<10} {:>10}", state.name(), c.get(state));
                }
                let mut domains: std::collections::BTreeMap<String, [u64; 3]> = Default::default();
                let mut errors = Vec::new();
                for kv in st.iter() {
                    let (_, r) = kv?;
                    let e = domains.entry(r.domain().to_string()).or_default();
                    match r.state {
                        store::record::State::Sent => e[0] += 1,
                        store::record::State::Deferred => e[1] += 1,
                        store::record::State::Bounced => e[2] += 1,
                        _ => {}
                    }
                    if matches!(
                        r.state,
                        store::record::State::Bounced
                            | store::record::State::Deferred
                            | store::record::State::Failed
                    ) && errors.len() < 10
                    {
                        errors.push(format!(
                            "{} ({}): {}",
                            r.address,
                            r.state.name(),
                            r.last_reply
                        ));
                    }
                }
                let mut top: Vec<_> = domains.into_iter().collect();
                top.sort_by_key(|d| std::cmp::Reverse(d.1.iter().sum::<u64>()));
                println!(
                    "  {:<30} {:>8} {:>8} {:>8}",
                    "domain", "sent", "deferred", "bounced"
                );
                for (d, [a, b, c]) in top.iter().take(10) {
                    println!("  {d:<30} {a:>8} {b:>8} {c:>8}");
                }
                if !errors.is_empty() {
                    println!("  last errors:");
                    for e in errors {
                        println!("    {e}");
                    }
                }
            }
            Ok(0)
        }
        Err(Error::Locked(_)) => {
            // A send is running: report its snapshot.
            let snap = send::campaign_dir(&s).join("status.json");
            let text = std::fs::read_to_string(&snap).map_err(|e| {
                Error::io(
                    format!("a send is running; reading its snapshot {}", snap.display()),
                    e,
                )
            })?;
            println!("{text}");
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

fn preview(campaign: &Path) -> Result<i32, Error> {
    let s = config::load(campaign)?;
    let (templates, mut reader, _) = send::load_inputs(&s)?;
    let all_columns: Vec<Vec<String>> = (0..reader.paths().len())
        .map(|i| reader.columns(i).to_vec())
        .collect();
    while let Some(row) = reader.next_row() {
        let Ok(row) = row else { continue };
        let Ok(mb) = blast::list::hygiene::check(row.email, &s.policy) else {
            continue;
        };
        let values: Vec<String> = row.record.iter().map(str::to_string).collect();
        let columns = &all_columns[row.file_idx];
        let Ok(r) = templates.render(blast::render::Row {
            columns,
            values: &values,
        }) else {
            continue;
        };
        let (msg, _) = blast::message::build(&blast::message::Parts {
            from: &s.from,
            reply_to: s.reply_to.as_ref(),
            to: &mb.address,
            subject: &r.subject,
            text: r.text.as_deref(),
            html: r.html.as_deref(),
            headers: &s.headers,
            message_id_domain: s
                .from
                .address
                .rsplit_once('@')
                .map(|(_, d)| d)
                .unwrap_or("localhost"),
            date: chrono::Utc::now().timestamp(),
        });
        print!("{}", String::from_utf8_lossy(&msg));
        return Ok(0);
    }
    Err(Error::Config(format!(
        "{}: no sendable row in the lists",
        campaign.display()
    )))
}

fn suppress(campaign: &Path, action: SuppressAction) -> Result<i32, Error> {
    let s = config::load(campaign)?;
    let sp = store::suppression::Suppression::open(&s.state_dir, Duration::from_secs(10))?;
    let key = |a: &str| -> Result<String, Error> {
        let a = a.trim();
        if let Some(d) = a.strip_prefix('@') {
            return Ok(format!("@{}", d.to_ascii_lowercase()));
        }
        let policy = blast::list::hygiene::Policy {
            allow_role: true,
            smtputf8: true,
        };
        blast::list::hygiene::check(a, &policy)
            .map(|m| m.key)
            .map_err(|r| Error::Config(format!("{a:?}: {r}")))
    };
    match action {
        SuppressAction::Add { addresses, reason } => {
            for a in addresses {
                let k = key(&a)?;
                sp.add(
                    &k,
                    &store::suppression::Entry {
                        reason: reason.clone(),
                        at_ms: store::now_ms(),
                        source: "cli".into(),
                        detail: String::new(),
                    },
                )?;
                println!("suppressed {k}");
            }
        }
        SuppressAction::Remove { addresses } => {
            for a in addresses {
                let k = key(&a)?;
                println!(
                    "{} {k}",
                    if sp.remove(&k)? {
                        "removed"
                    } else {
                        "not listed:"
                    }
                );
            }
        }
        SuppressAction::List => {
            println!("address,reason,at_ms,source,detail");
            for (k, e) in sp.list()? {
                println!("{k},{},{},{},{:?}", e.reason, e.at_ms, e.source, e.detail);
            }
        }
    }
    sp.flush()?;
    Ok(0)
}
