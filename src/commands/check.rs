//! `blast check CAMPAIGN [--config blast.toml]`: validate the campaign (config, templates,
//! every list row: [`check`]), then compare its lane with `blast serve`'s
//! priority lane and submission users ([`super::lanes`]) and warn about what they share.
//!
//! Exit 2 when the campaign is invalid, or valid but nobody in its lists can be sent (every
//! row pruned). Lane warnings do not change the exit code (0 when the campaign itself is
//! valid): sharing an IP or a domain is a deployment choice a small sender may make on
//! purpose, and scripts gate on `blast check` for "will this campaign send"; the warnings are
//! for the human.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::import::{fingerprint, note_flags, screen};
use crate::list::prune::PruneReport;
use crate::render::Row;
use crate::send::{io, load_inputs, prune_path};

use super::lanes::{self, Warning};
use crate::config::{self, Settings};
use crate::error::{Error, Result};
use crate::serve::config::ServeSettings;
use crate::serve::users::Users;

/// What the campaign was compared with.
enum Compared {
    /// No `--config` and no `./blast.toml`.
    Nothing,
    /// The serve config, and the users file's state.
    Serve {
        file: PathBuf,
        users: PathBuf,
        /// Why the users file was not used, if it was not.
        users_note: Option<String>,
        warnings: Vec<Warning>,
    },
}

/// Runs `blast check`; returns the exit code.
pub async fn run(campaign: &Path, pruned: Option<PathBuf>, config: Option<&Path>) -> Result<i32> {
    let mut s = config::load(campaign)?;
    // Loading refused it without `smtputf8 = true`; with it, say what that costs.
    let utf8_from = crate::message::needs_smtputf8(&s.from.address).then(|| s.from.address.clone());
    // Before the lists: a bad --config should not wait for a million rows to be read.
    let serve = super::schedule::serve_settings(config)?;
    // Judged as `send --config` would send it: with the server config's tokens.
    if let Some(sv) = &serve {
        s.tokens = sv.token_settings()?.map(std::sync::Arc::new);
    }
    let verdict = crate::sender_rules::judge(&s);
    let (lane, state_dir) = (s.lane.clone(), s.suppression_state_dir().to_path_buf());
    let (r, compared) = tokio::task::spawn_blocking(move || {
        let compared = compare(&s, serve);
        check(&s, &pruned).map(|r| (r, compared))
    })
    .await
    .map_err(|e| Error::Lane(e.to_string()))??;
    eprintln!("{}: config, templates and lists OK", campaign.display());
    eprintln!("  rows {}, sendable {}", r.rows, r.sendable);
    if let Some(from) = utf8_from {
        eprintln!(
            "  from: {from} has a non-ASCII local part: every message needs SMTPUTF8, and a relay without it refuses them all"
        );
    }
    for line in crate::list::prune::summary_lines(&r.pruned.1, &r.pruned.0) {
        eprintln!("{line}");
    }
    if lane.warmup.is_some() {
        for line in warmup_finish(&lane, &state_dir, &r.by_provider) {
            eprintln!("  {line}");
        }
    }
    // A campaign that can send nobody must not pass: scripts gate `send` on `check`.
    let code = if r.sendable > 0 {
        0
    } else if r.rows == 0 {
        eprintln!("  error: nobody can be sent: the lists have no rows");
        crate::run_status::RunStatus::Config.exit_code()
    } else {
        eprintln!(
            "  error: nobody can be sent: all {} rows are pruned (reasons above)",
            r.rows
        );
        crate::run_status::RunStatus::Config.exit_code()
    };
    for w in &verdict.warnings {
        eprintln!("  sender rules: warning: {w}");
    }
    for e in &verdict.errors {
        eprintln!("  sender rules: error: {e}");
    }
    let code = if verdict.errors.is_empty() {
        code
    } else {
        crate::run_status::RunStatus::Config.exit_code()
    };
    match compared {
        Compared::Nothing => {
            eprintln!(
                "  lanes: not compared with a priority lane (no ./blast.toml; --config names one)"
            )
        }
        Compared::Serve {
            file,
            users,
            users_note,
            warnings,
        } => {
            let users = match users_note {
                None => format!("users file {}", users.display()),
                Some(n) => format!(
                    "users file {}: {n}, From domain not compared",
                    users.display()
                ),
            };
            eprintln!(
                "  lanes: compared with {} ([priority], {users}): {}",
                file.display(),
                tally(&warnings)
            );
            for w in &warnings {
                eprintln!("{w}");
            }
        }
    }
    Ok(code)
}

/// `nothing shared`, `2 warnings`, `1 warning, 1 hint`.
fn tally(warnings: &[Warning]) -> String {
    let hints = warnings.iter().filter(|w| w.is_hint()).count();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match (warnings.len() - hints, hints) {
        (0, 0) => "nothing shared".into(),
        (w, 0) => plural(w, "warning"),
        (0, h) => plural(h, "hint"),
        (w, h) => format!("{}, {}", plural(w, "warning"), plural(h, "hint")),
    }
}

/// Loads the users file (if any) and runs the comparison. Blocking: the users file costs
/// one argon2 hash (its dummy).
fn compare(s: &Settings, serve: Option<ServeSettings>) -> Compared {
    let Some(serve) = serve else {
        return Compared::Nothing;
    };
    // `blast serve` runs without a users file when allow_networks is set; a bad one stops
    // serve, but it is not this campaign's problem, so it is only noted here.
    let (users, users_note) = if serve.users.exists() {
        match Users::load(&serve.users) {
            Ok(u) => (Some(u), None),
            Err(e) => (None, Some(format!("unreadable ({e})"))),
        }
    } else {
        (None, Some("missing".to_string()))
    };
    Compared::Serve {
        warnings: lanes::compare(s, &serve.priority, users.as_ref()),
        file: serve.file,
        users: serve.users,
        users_note,
    }
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
    /// Sendable rows per (pool IP index, provider rollup found by recipient domain; `None`:
    /// no rollup), for the warm-up's finish date.
    pub by_provider: BTreeMap<(usize, Option<usize>), u64>,
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
    let mut by_provider: BTreeMap<(usize, Option<usize>), u64> = BTreeMap::new();
    let mut values: Vec<String> = Vec::new();
    // blast's own variables, as the lane gives them (the link's token varies per recipient,
    // its presence is what a template can depend on).
    let url = crate::import::unsubscribe_base(s)
        .map(|u| format!("{u}{}", "a".repeat(crate::token::TOKEN_LEN)));
    let builtins: Vec<(&str, &str)> = url
        .as_deref()
        .map(|u| ("unsubscribe_url", u))
        .into_iter()
        .collect();
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
        if let Err(e) = templates.render_with(
            Row {
                columns: &columns[row.file_idx],
                values: &values,
            },
            &builtins,
        ) {
            prune
                .record(file, row.line, &mb.address, "missing_field", &e.to_string())
                .map_err(perr)?;
            continue;
        }
        note_flags(&mut prune, file, row.line, &mb).map_err(perr)?;
        sendable += 1;
        if s.lane.warmup.is_some() {
            let domain = mb.key.rsplit_once('@').map_or("", |(_, d)| d);
            let ip = crate::lane::warmup::ip_index(&s.lane, &mb.key);
            *by_provider
                .entry((ip, s.lane.shaping.provider_of(domain, [])))
                .or_default() += 1;
        }
    }
    let pruned = prune
        .finish()
        .map_err(io("cannot write prune report", &ppath))?;
    Ok(CheckReport {
        rows,
        sendable,
        pruned,
        by_provider,
    })
}

/// Per warm-up scope: how many of the list's recipients it caps and the day the last of them
/// is expected to go (sending every day from today, no brake). Recipients are matched to
/// providers by domain only (check does no MX lookups), so a provider known by its MX hosts
/// alone is counted under the IP's own schedule here.
fn warmup_finish(
    lane: &crate::config::LaneSettings,
    state_dir: &Path,
    by_provider: &BTreeMap<(usize, Option<usize>), u64>,
) -> Vec<String> {
    use crate::lane::warmup;
    let Some(w) = &lane.warmup else {
        return Vec::new();
    };
    let records = match crate::owner::Global::shared(state_dir).warmup_days(None) {
        Ok(r) => r,
        Err(e) => {
            return vec![format!(
                "warm-up: cannot read the counts ({e}); no finish date"
            )]
        }
    };
    let today = crate::clock::today();
    let mut per_scope: BTreeMap<(usize, &str), u64> = BTreeMap::new();
    let mut uncapped = 0;
    for ((ip, p), n) in by_provider {
        match warmup::scope_of(w, *p) {
            Some((scope, _)) => *per_scope.entry((*ip, scope)).or_default() += n,
            None => uncapped += n,
        }
    }
    let ips = warmup::ips_of(lane);
    let mut out = Vec::new();
    for t in warmup::today(lane, &records, today) {
        let ip = ips.iter().position(|i| *i == t.ip).unwrap_or(0);
        let n = per_scope.get(&(ip, t.scope.as_str())).copied().unwrap_or(0);
        let steps = match warmup::scope_of(
            w,
            lane.shaping
                .providers
                .iter()
                .position(|p| p.name == t.scope),
        ) {
            Some((_, s)) => s,
            None => continue,
        };
        let from = today.max(w.start);
        let used = if from == today { t.used } else { 0 };
        let finish = warmup::finish_date(steps, t.plan, used, n, from);
        let today_cap = t
            .plan
            .cap
            .map_or_else(|| "no cap".into(), |c| format!("cap {c}/d, {used} used"));
        out.push(format!(
            "warm-up: {} {}: {n} recipients, expected to finish on {finish} (today {today_cap}; \
             assuming mail goes every day and the brake never holds)",
            t.ip,
            warmup::scope_label(&t.scope),
        ));
    }
    if uncapped > 0 {
        out.push(format!(
            "warm-up: {uncapped} recipients go to destinations no schedule caps"
        ));
    }
    out
}
