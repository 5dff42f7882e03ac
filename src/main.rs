//! Thin entry point: parse arguments, call the library, map errors to exit codes.

use std::process::ExitCode;
use std::sync::Arc;

use blast::cli::{Cli, Command};
use blast::error::Error;
use blast::run_status::RunStatus;
use blast::shutdown::Shutdown;
use blast::{commands, config, report, send};
use clap::Parser;

/// sled copies a tree node per insert: with glibc malloc allocation was ~30% of an import
/// (arena locks, frees from sled's flusher threads); mimalloc makes the store ~1.4x faster.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    blast::verbose::init(cli.verbose);
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Sink(_) | Command::Send { .. }
    ) {
        default_sigpipe();
    }
    if let Command::Serve { config } = &cli.command {
        // serve builds its own runtimes: one for the priority lane, one for blast work.
        let code = blast::serve::main(config).unwrap_or_else(|e| {
            eprintln!("blast: {e}");
            e.exit_code()
        });
        return ExitCode::from(code as u8);
    }
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

/// Rust ignores SIGPIPE, so a write to a closed pipe (`blast check x.toml 2>&1 | head -1`)
/// fails and `println!`/`eprintln!` panic (exit 101). A command's output going nowhere should
/// end it quietly, as it does any Unix tool: the default action. Only for the short commands
/// that print and hold no network connections: `serve`, `sink` and `send` talk SMTP, and a
/// vectored write (TLS) to a socket the peer closed would raise SIGPIPE and kill them.
fn default_sigpipe() {
    // SAFETY: called once at start, before any thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// First Ctrl-C or SIGTERM: stop taking new recipients, finish in-flight transactions, save, exit 130.
/// Second: exit at once (the store is consistent; in-flight rows follow the policy next run).
fn install_interrupt(shutdown: Arc<Shutdown>) {
    tokio::spawn(async move {
        blast::shutdown::signal().await;
        eprintln!("\nblast: stopping after transactions in progress (Ctrl-C again to quit now)");
        shutdown.stop();
        blast::shutdown::signal().await;
        std::process::exit(RunStatus::Interrupted.exit_code());
    });
}

async fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Send {
            campaign,
            pruned,
            retry_now,
            quiet,
            json_progress,
            override_breaker,
            now,
            run: resume,
            config: server,
            proof,
            row,
            shard,
        } => {
            let mut s = config::load(&campaign)?;
            if let Some(server) = server {
                // One suppression list for every campaign and for serve: the global one; and
                // serve's token keys, so a link or bounce of this campaign reaches serve.
                let serve = blast::serve::config::load(&server)?;
                s.tokens = serve.token_settings()?.map(Arc::new);
                s.bounce_policy = serve.bounce_policy.clone();
                s.suppression_dir = Some(serve.state_dir);
                s.cluster = serve.cluster;
            }
            if let Some(to) = proof {
                // Before anything that touches state: a proof opens no store.
                let pick = commands::preview::pick(row, None);
                return commands::preview::proof(&s, &to, &pick).await;
            }
            let mut run_slot = None;
            if s.schedule.is_some() {
                if !now {
                    commands::schedule::refuse_send(&s)?;
                }
                let slot = match &resume {
                    Some(r) => commands::schedule::parse_slot_id(r)?,
                    None => chrono::Utc::now(),
                };
                let suppression = s.suppression_dir.clone();
                s = blast::schedule::run_settings(&s, &s.state_dir.clone(), slot, None);
                if suppression.is_some() {
                    s.suppression_dir = suppression;
                }
                eprintln!("blast: sending run {} now", s.id);
                run_slot = Some(blast::schedule::slot_id(slot));
            }
            s.shard = shard;
            // A bulk send gives way to transactional mail on a shared machine.
            for p in blast::niceness::yield_to_others(s.lane.nice) {
                eprintln!("blast: warning: cannot lower priority: {p}");
            }
            let shutdown = Arc::new(Shutdown::default());
            install_interrupt(shutdown.clone());
            let opts = send::SendOptions {
                pruned,
                retry_now,
                quiet,
                json_progress,
                override_breaker,
            };
            let summary = send::send(&s, &opts, shutdown).await?;
            report::summary::print(&summary);
            if let (Some(slot), true) = (run_slot, summary.status().is_resumable()) {
                eprintln!(
                    "  (this run: `blast send {} --now --run {slot}` resumes it)",
                    campaign.display()
                );
            }
            Ok(summary.exit_code())
        }
        Command::Check {
            campaign,
            config,
            dns: true,
            json,
            ..
        } => blast::doctor::run(&campaign, config.as_deref(), json).await,
        Command::Check {
            campaign,
            pruned,
            config,
            ..
        } => commands::check::run(&campaign, pruned, config.as_deref()).await,
        Command::Status {
            campaign,
            json,
            config,
        } => commands::status::run(&campaign, json, config.as_deref()),
        Command::Report {
            campaign,
            format,
            output,
            recipients,
            config,
        } => commands::report::run(
            &campaign,
            &format,
            output.as_deref(),
            recipients,
            config.as_deref(),
        ),
        Command::Preview {
            campaign,
            row,
            to,
            html,
            open,
        } => commands::preview::run(
            &campaign,
            &commands::preview::PreviewOptions {
                pick: commands::preview::pick(row, to),
                html,
                open,
            },
        ),
        Command::Suppress {
            campaign,
            config,
            action,
        } => {
            // In a fleet, the change reaches Redis now, not with the next serve or send.
            let fleet = match (&campaign, &config) {
                (None, Some(c)) => blast::serve::config::load(c)?.cluster,
                _ => None,
            };
            let dir = global_state_dir(campaign, config, "list")?;
            let code = commands::suppress::run(&dir, action)?;
            if let Some(cs) = fleet {
                commands::suppress::sync_fleet(&cs, &dir).await;
            }
            Ok(code)
        }
        Command::Holds {
            campaign,
            config,
            action,
        } => {
            let dir = global_state_dir(campaign, config, "state")?;
            commands::holds::run(&dir, action)
        }
        Command::Queue { config, action } => commands::queue::run(&config, action).await,
        Command::Serve { .. } => unreachable!("handled before the runtime starts"),
        Command::User { action } => commands::user::run(action),
        Command::Dkim { action } => commands::dkim::run(action),
        Command::Bounces { action } => commands::bounces::run(action),
        Command::Schedule { config, action } => commands::schedule::run(config.as_deref(), action),
        Command::Sink(args) => {
            blast::sink::run(args)
                .await
                .map_err(|e| Error::io("sink", e))?;
            Ok(0)
        }
    }
}

/// The state dir of the global state (the suppression list, the holds): the campaign's, or
/// serve's for scheduled runs and `send --config`. `what` names it in the error.
fn global_state_dir(
    campaign: Option<std::path::PathBuf>,
    config: Option<std::path::PathBuf>,
    what: &str,
) -> Result<std::path::PathBuf, Error> {
    match (campaign, config) {
        (Some(c), _) => Ok(config::load(&c)?.suppression_state_dir().to_path_buf()),
        (None, Some(c)) => Ok(blast::serve::config::load(&c)?.state_dir),
        (None, None) => Err(Error::Config(format!(
            "which {what}? give --campaign CAMPAIGN.toml or --config blast.toml"
        ))),
    }
}
