//! Command-line definitions (clap). `main` parses these and calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// blast: bulk email campaigns through a throttled blast lane.
#[derive(Parser, Debug)]
#[command(
    name = "blast",
    version,
    about,
    long_about = None,
    after_help = "Example:\n  blast check campaigns/spring.toml && blast preview campaigns/spring.toml --row 1 \\\n    && blast send campaigns/spring.toml\n\n`blast COMMAND --help` shows each command's options and an example."
)]
pub struct Cli {
    /// Print every SMTP reply blast reads (also `BLAST_VERBOSE=1`, or `RUST_LOG=debug`).
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// All commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import the lists, prune, render and send (resumes if run again).
    #[command(
        after_help = "Example:\n  blast send campaigns/spring.toml\n  blast send campaigns/spring.toml --quiet --json-progress > progress.jsonl\n  blast send campaigns/spring.toml --proof me@acme.example --row 3\n  blast send campaigns/spring.toml --shard 2/4 --config blast.toml"
    )]
    Send {
        /// The campaign file.
        campaign: PathBuf,
        /// Write the prune report here (default: inside the state dir).
        #[arg(long)]
        pruned: Option<PathBuf>,
        /// Retry deferred recipients now instead of at their retry time.
        #[arg(long)]
        retry_now: bool,
        /// No progress display on stderr (errors and the summary still go there).
        #[arg(long, short)]
        quiet: bool,
        /// One JSON object per line every second on stdout (done, total, importing, sent,
        /// deferred, bounced, failed, skipped, rate_now, rate_avg, eta_s, limit, domains…),
        /// and a last one with `"final": true` whose figures are the store's counts.
        #[arg(long)]
        json_progress: bool,
        /// Send even when the circuit breaker stops the run (more than `[lane] breaker_share`
        /// of the first recipients bounced as unknown addresses): only for a list you know.
        #[arg(long)]
        override_breaker: bool,
        /// A campaign with a `[schedule]` is run by `blast serve`; `--now` sends one run of it
        /// now, as its own run `<campaign>@<now>` in the campaign's state dir.
        #[arg(long)]
        now: bool,
        /// With `--now`: resume that earlier run (`20260105T080000Z`, the part after `@` of
        /// its id) instead of starting a new one.
        #[arg(long, requires = "now")]
        run: Option<String>,
        /// The server config (blast.toml) whose state dir holds the global suppression list
        /// shared with `blast serve` and its scheduled runs (default: the campaign's state dir).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Send one proof of a row's message to ADDRESS (subject "[PROOF] …", placeholder
        /// unsubscribe links) through the lane, and nothing else: no campaign state changes.
        #[arg(long, value_name = "ADDRESS")]
        proof: Option<String>,
        /// With `--proof`: the Nth data row (default: the first that can be sent).
        #[arg(long, requires = "proof")]
        row: Option<u64>,
        /// Send only shard K of N (1-based): the recipients whose SHA-256 of the normalised
        /// address, first 8 bytes big-endian, modulo N is K-1. Each shard keeps its own state
        /// (`STATE/ID/shard-K-of-N`), so rerunning a shard resumes it.
        #[arg(long, value_name = "K/N", conflicts_with = "proof")]
        shard: Option<crate::shard::Shard>,
    },
    /// Validate config, lists and templates (every row rendered); sends nothing.
    #[command(
        after_help = "Examples:\n  blast check campaigns/spring.toml --config blast.toml\n  blast check --dns campaigns/spring.toml --config blast.toml"
    )]
    Check {
        /// The campaign file.
        campaign: PathBuf,
        /// Write the prune report here (default: inside the state dir).
        #[arg(long)]
        pruned: Option<PathBuf>,
        /// The server config whose priority lane and users the campaign's lane is compared
        /// with (default `blast.toml` when it exists; warns about a shared From domain,
        /// source IP, relay or HELO name).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The deliverability doctor instead: SPF, DKIM, DMARC, PTR, DNSBL and MX as
        /// receivers see them for `[lane] egress_ip`, asked through `[dns] nameservers`.
        /// One row per check (PASS / WARN / FAIL and a fix); exit 0 when nothing FAILs, 1
        /// otherwise.
        #[arg(long)]
        dns: bool,
        /// With --dns: a JSON array of {check, status, detail, fix}.
        #[arg(long, requires = "dns")]
        json: bool,
    },
    /// Counts per state (works while a send runs).
    #[command(after_help = "Example:\n  blast status campaigns/spring.toml --json")]
    Status {
        /// The campaign file.
        campaign: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The server config the campaign was sent with (`blast send --config`): its global
        /// list holds the campaign's bounces, unsubscribes and complaints, and its
        /// `[bounces]` policy sets the warning lines.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    #[command(
        after_help = "Example:\n  blast report campaigns/spring.toml --config blast.toml\n  blast report campaigns/spring.toml --format csv --recipients -o spring.csv"
    )]
    /// A campaign's report: sends over time against the configured rate, outcomes, top
    /// domains, bounce categories, the complaint rate against the 0.1% / 0.3% lines, the
    /// prune summary. HTML is one self-contained file (inline SVG, no external assets).
    Report {
        /// The campaign file.
        campaign: PathBuf,
        /// `html` (default), `csv` or `json`.
        #[arg(long, default_value = "html", value_parser = ["html", "csv", "json"])]
        format: String,
        /// Where to write it (default: html to STATE/ID/report.html, csv and json to stdout).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// One row per recipient too.
        #[arg(long)]
        recipients: bool,
        /// The server config the campaign was sent with (its global list and `[bounces]`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print one row's message as it will go out (headers, both parts, DKIM signature), with
    /// placeholder tokens; which columns it used goes to stderr. Changes nothing.
    #[command(
        after_help = "Example:\n  blast preview campaigns/spring.toml --to ann@example.com --html ann.html --open > ann.eml"
    )]
    Preview {
        /// The campaign file.
        campaign: PathBuf,
        /// The Nth data row of the lists (1 = the first after the header, counting on through
        /// several lists); default: the first row that can be sent.
        #[arg(long, conflicts_with = "to")]
        row: Option<u64>,
        /// The row of this address.
        #[arg(long, value_name = "ADDRESS")]
        to: Option<String>,
        /// Also write the rendered HTML part to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Open the HTML part in a browser ($BROWSER, else xdg-open).
        #[arg(long)]
        open: bool,
    },
    /// Manage the suppression list (addresses never mailed again).
    #[command(
        after_help = "Example:\n  blast suppress --campaign campaigns/spring.toml add ann@example.com --reason asked\n  blast suppress --config blast.toml export suppressed.csv"
    )]
    Suppress {
        /// The campaign file whose state dir holds the list.
        #[arg(long, global = true, conflicts_with = "config")]
        campaign: Option<PathBuf>,
        /// Or: the server config, whose state dir holds the global list (serve, scheduled
        /// runs, and `blast send --config`).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: SuppressAction,
    },
    /// Response-rule holds: sites a receiver asked this IP to stop (or slow down) sending to.
    #[command(
        after_help = "Example:\n  blast holds --campaign campaigns/spring.toml list\n  blast holds --config blast.toml lift mx1.yahoo.example,mx2.yahoo.example"
    )]
    Holds {
        /// The campaign file whose state dir holds the global state.
        #[arg(long, global = true, conflicts_with = "config")]
        campaign: Option<PathBuf>,
        /// Or: the server config, whose state dir holds it.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: HoldsAction,
    },
    /// Scheduled campaigns: upcoming slots, past runs, pause/resume.
    #[command(
        after_help = "Example:\n  blast schedule list --config blast.toml\n  blast schedule runs weekly --config blast.toml --json"
    )]
    Schedule {
        /// The server config whose `state_dir` and `campaigns_dir` to use (default
        /// `blast.toml` when it exists; `--state-dir`/`--campaigns-dir` override it).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Run a local SMTP sink that writes .eml files (for trying blast out).
    #[command(
        after_help = "Example:\n  blast sink --listen 127.0.0.1:2525 --maildir out/ --rule 'rcpt:*@bad.example=550 5.1.1 no such user'"
    )]
    Sink(crate::sink::SinkArgs),
    /// Run the server: SMTP submission for transactional mail, delivered through the
    /// priority lane (and scheduled campaigns through the blast lane).
    #[command(after_help = "Example:\n  blast serve --config blast.toml")]
    Serve {
        /// The server config.
        #[arg(long, default_value = "blast.toml")]
        config: PathBuf,
    },
    /// The priority queue of `blast serve`: list, retry or drop queued messages.
    #[command(
        after_help = "Example:\n  blast queue list --config blast.toml\n  blast queue retry 0123456789abcdef --config blast.toml"
    )]
    Queue {
        /// The server config (names the state dir).
        #[arg(long, default_value = "blast.toml", global = true)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: QueueAction,
    },
    /// DKIM keys: `blast dkim keygen` writes a private key and prints the DNS record.
    #[command(
        after_help = "Example:\n  blast dkim keygen --domain news.acme.example --selector s2026 -o keys/s2026.pem"
    )]
    Dkim {
        /// What to do.
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Bounce messages: `blast bounces parse FILE` shows what one message says, changing nothing.
    #[command(after_help = "Example:\n  blast bounces parse bounce.eml --json")]
    Bounces {
        /// What to do.
        #[command(subcommand)]
        action: BouncesAction,
    },
    /// Manage the users allowed to submit mail to `blast serve`.
    #[command(
        after_help = "Example:\n  blast user add app --domain acme.example --password-file app.pw"
    )]
    User {
        /// What to do.
        #[command(subcommand)]
        action: UserAction,
    },
}

/// `blast queue` actions.
#[derive(Subcommand, Debug)]
pub enum QueueAction {
    /// Every queued message with its recipients' states.
    #[command(after_help = "Example:\n  blast queue list --json --config blast.toml")]
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Try deferred messages now (one id, or all).
    #[command(
        after_help = "Example:\n  blast queue retry --config blast.toml     # every deferred message"
    )]
    Retry {
        /// Queue id (as `list` prints it); all when omitted.
        id: Option<String>,
    },
    /// Remove a message from the queue without delivering it.
    #[command(after_help = "Example:\n  blast queue drop 0123456789abcdef --config blast.toml")]
    Drop {
        /// Queue id.
        id: String,
    },
    /// The priority lane's counters.
    #[command(after_help = "Example:\n  blast queue stats --config blast.toml")]
    Stats,
}

/// `blast bounces` actions.
#[derive(Subcommand, Debug)]
pub enum BouncesAction {
    /// Parse one message (a DSN, a feedback report, an MTA's text bounce, an auto-reply) and
    /// print its results: recipient, class (hard | soft | complaint | none), category, action,
    /// reason, status. Changes nothing.
    #[command(after_help = "Example:\n  blast bounces parse - --json < bounce.eml")]
    Parse {
        /// The message file (.eml, raw RFC 5322); `-` reads stdin.
        file: PathBuf,
        /// A JSON array of result objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    #[command(
        after_help = "Example:\n  blast bounces import ~/Maildir/.bounces --config blast.toml\n  blast bounces import - --config blast.toml < fbl.mbox"
    )]
    /// Store and act on bounces and feedback reports that reached a mailbox instead of the
    /// bounce inbox: an .eml file, a maildir, a directory of messages, an mbox, or `-`
    /// (stdin). The same message twice is acted on once.
    Import {
        /// The message file, maildir, directory or mbox; `-` reads stdin.
        path: PathBuf,
        /// The server config (its state dir, token keys and `[bounces]` policy).
        #[arg(long)]
        config: PathBuf,
        /// A JSON summary instead of lines.
        #[arg(long)]
        json: bool,
    },
    #[command(after_help = "Example:\n  blast bounces list --config blast.toml")]
    /// The bounce inbox's stored messages (kept for `[bounces] keep_days`), oldest first.
    List {
        /// The server config.
        #[arg(long)]
        config: PathBuf,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    #[command(after_help = "Example:\n  blast bounces show 00000000001e8480 --config blast.toml")]
    /// One stored message: its envelope, what was done with it, and the raw message.
    Show {
        /// Its id (as `blast bounces list` prints it).
        id: String,
        /// The server config.
        #[arg(long)]
        config: PathBuf,
    },
}

/// `blast dkim` actions.
#[derive(Subcommand, Debug)]
pub enum DkimAction {
    /// Write a new private key (mode 0600, never overwriting) and print the TXT record to
    /// publish at SELECTOR._domainkey.DOMAIN.
    #[command(
        after_help = "Example:\n  blast dkim keygen --domain news.acme.example --selector ed2026 --ed25519 -o keys/ed2026.pem"
    )]
    Keygen {
        /// The signing domain (`d=`), normally the From domain or its parent.
        #[arg(long)]
        domain: String,
        /// The selector the record is published under.
        #[arg(long)]
        selector: String,
        /// An Ed25519 key (the optional second signature) instead of RSA.
        #[arg(long)]
        ed25519: bool,
        /// RSA key size: 2048 (the default) or more; 4096-bit keys sign several times slower.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where to write the private key (PEM).
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
    },
}

/// `blast user` actions.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Add a user, or replace its password and domains. The password is read from
    /// --password-file, else $BLAST_PASSWORD, else one line of stdin (never from arguments).
    #[command(
        after_help = "Example:\n  blast user add app --domain acme.example --domain .acme.example --password-file app.pw"
    )]
    Add {
        /// The login name.
        name: String,
        /// A domain the user may send as (repeatable); `.example.com` means its subdomains.
        #[arg(long = "domain", value_name = "DOMAIN", required = true)]
        domains: Vec<String>,
        /// Read the password from the first line of this file.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// The users file (created if missing, written with mode 0600).
        #[arg(long, value_name = "FILE", default_value = "users.txt")]
        users: PathBuf,
    },
}

/// `blast suppress` actions.
#[derive(Subcommand, Debug)]
pub enum SuppressAction {
    /// Add addresses (or `@domain` for a whole domain).
    #[command(
        after_help = "Example:\n  blast suppress --campaign campaigns/spring.toml add ann@example.com @spam.example"
    )]
    Add {
        /// Addresses.
        addresses: Vec<String>,
        /// Reason recorded with the entry.
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    /// Remove addresses.
    #[command(
        after_help = "Example:\n  blast suppress --campaign campaigns/spring.toml remove ann@example.com"
    )]
    Remove {
        /// Addresses.
        addresses: Vec<String>,
    },
    /// List every entry as CSV (`address,reason,at_ms,source,detail`) on stdout.
    #[command(after_help = "Example:\n  blast suppress --config blast.toml list")]
    List,
    /// Import a CSV: the `export` header (`address,reason,at_ms,source,detail`), or a single
    /// `address`/`email` column. Invalid rows are reported with file:line and skipped;
    /// addresses already listed keep their entry. Safe to run again.
    #[command(
        after_help = "Example:\n  blast suppress --config blast.toml import unsubscribed.csv --reason unsubscribed"
    )]
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Reason for rows that give none.
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    /// Export every entry as CSV (`address,reason,at_ms,source,detail`).
    #[command(after_help = "Example:\n  blast suppress --config blast.toml export suppressed.csv")]
    Export {
        /// Write here instead of stdout.
        file: Option<PathBuf>,
    },
}

/// `blast holds` actions.
#[derive(Subcommand, Debug)]
pub enum HoldsAction {
    /// The holds in force: site, what, until when, the rule and the reply.
    #[command(after_help = "Example:\n  blast holds --config blast.toml list --json")]
    List {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Lift the holds of a site (its key as `list` shows it), before their end.
    #[command(
        after_help = "Example:\n  blast holds --campaign campaigns/spring.toml lift mx.yahoo.example --ip 203.0.113.25"
    )]
    Lift {
        /// The site.
        site: String,
        /// Only the hold of this source IP (default: every IP's).
        #[arg(long)]
        ip: Option<String>,
    },
}

/// `blast schedule` actions.
#[derive(Subcommand, Debug)]
pub enum ScheduleAction {
    /// The next 5 slots of each scheduled campaign, in its time zone and in UTC.
    #[command(after_help = "Example:\n  blast schedule list --campaigns-dir campaigns/")]
    List {
        /// The directory of campaign files `blast serve` watches.
        #[arg(long)]
        campaigns_dir: Option<PathBuf>,
        /// The serve state dir (to mark paused campaigns).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Past runs of a campaign with their counts (reads serve's snapshot while serve runs).
    #[command(after_help = "Example:\n  blast schedule runs weekly --config blast.toml")]
    Runs {
        /// Campaign id.
        campaign: String,
        /// The serve state dir.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop running a campaign's slots (they are recorded as skipped) until `resume`.
    #[command(after_help = "Example:\n  blast schedule pause weekly --config blast.toml")]
    Pause {
        /// Campaign id.
        campaign: String,
        /// The serve state dir.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Run a paused campaign again from its next slot.
    #[command(after_help = "Example:\n  blast schedule resume weekly --config blast.toml")]
    Resume {
        /// Campaign id.
        campaign: String,
        /// The serve state dir.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every command's `--help` ends with an example: a person copies a working line
    /// instead of assembling one from the option list.
    #[test]
    fn every_help_ends_with_an_example() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", c.get_name());
            let ok = c.get_after_help().is_some_and(|h| {
                h.to_string().starts_with("Example:\n  blast ")
                    || h.to_string().contains("\n  blast ")
            });
            if !ok && c.get_name() != "help" {
                missing.push(here.clone());
            }
            for sub in c.get_subcommands() {
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
        Cli::command().debug_assert();
    }
}
