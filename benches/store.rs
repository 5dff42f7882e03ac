//! Store bench: importing a list into the campaign store, and the store's size on disk.
//!
//! `cargo bench --bench store` generates a 1,000,000-row list (`email,first_name,city`, ~2%
//! invalid cells, ~1% case-variant duplicates, ~50,000 domains with big providers dominating)
//! and a campaign (outbox transport: nothing is sent, no server needed), then:
//!
//! 1. imports it into an empty store the way `blast send` does for a fresh store (first
//!    import: no per-row lookups), without a lane beside it (`feed: None`) — target
//!    ≥ 100,000 rows/s;
//! 2. imports the same list again into the now-populated store (the rerun path: one store
//!    lookup per row, then the reconcile scan `send` runs after it);
//! 3. reports the state directory's size (apparent bytes and allocated blocks) — target
//!    < 300 MB for 1,000,000 recipients.
//!
//! 4. the store's share of sending (store on vs off; target: sending with the store on ≤ 10%
//!    slower): the dispatcher's scan and the claim and result commits the lane makes per
//!    message, for SEND_N recipients of the populated store (`store/send_path.rs`), as µs per
//!    message and as a share of the ~80 µs of CPU a message costs in `bash benches/e2e.sh`.
//!
//! Environment: ROWS (default 1_000_000), SEND_N (default 100_000), GROUP (records per
//! commit in step 4, default 50: the lane's group at 12.5k msg/s), KEEP=1 (keep the temp dir
//! and print its path), LIMIT_SECS (abort the bench after this long, default 1200).

#[path = "common/mod.rs"]
mod common;
#[path = "store/send_path.rs"]
mod send_path;
use blast::import::{self, ImportSource, ImportStats};
use blast::list::prune::PruneReport;
use blast::send;
use blast::store::campaign::CampaignStore;
use common::Rng;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The allocator of the `blast` binary (src/main.rs), so the figures are what `blast send` does.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIRST: &[&str] = &[
    "Anna", "Ben", "Carla", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Maria", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Viktor",
    "Wen", "Xavier", "Yusuf", "Zoë",
];
const LAST: &[&str] = &[
    "fischer", "garcia", "okafor", "nguyen", "smith", "kowalski", "rossi", "tanaka", "silva",
    "mueller", "dubois", "jensen", "ivanova", "haddad", "oconnor", "berg", "lopez", "patel",
];
const BIG: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "aol.com",
    "gmx.de",
    "web.de",
    "orange.fr",
    "libero.it",
    "yandex.ru",
    "qq.com",
];
const CITIES: &[&str] = &[
    "Berlin",
    "Lyon",
    "\"Washington, D.C.\"",
    "Osaka",
    "São Paulo",
    "Cork",
    "Nairobi",
    "Lima",
];
/// Invalid shapes from real exports; `{}` is replaced by a valid address.
const BAD: &[&str] = &[
    "",
    "N/A",
    "\"Jane Doe <{}>\"",
    "mailto:{}",
    "{}.",
    "jane doe@example.com",
    "\"{}; other@example.org\"",
    "someone@localhost",
    "x@[10.0.0.1]",
    "a..b@example.com",
    "+44 7700 900123",
    "{}@",
];

/// Writes `rows` data rows of `email,first_name,city`.
fn generate(path: &Path, rows: u64) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(b"email,first_name,city\n")?;
    let mut addr = String::with_capacity(96);
    for i in 0..rows {
        addr.clear();
        // ~1% duplicates: an earlier row's address again, upper-cased (same dedupe key).
        let dup = i > 100 && rng.below(100) == 0;
        let n = if dup { rng.below(i) } else { i };
        let first = FIRST[(n % FIRST.len() as u64) as usize];
        let last = LAST[(n / 7 % LAST.len() as u64) as usize];
        // The domain follows the row number too, so a duplicate repeats the whole address.
        let _ = write!(
            addr,
            "{}.{last}{n}@",
            first.to_lowercase().replace('ë', "e")
        );
        if n % 10 < 6 {
            addr.push_str(BIG[(n / 10 % BIG.len() as u64) as usize]);
        } else {
            let _ = write!(addr, "corp{}.example.com", n % 50_000);
        }
        if dup {
            addr.make_ascii_uppercase();
        }
        let email = if rng.below(50) == 0 {
            rng.pick(BAD).replace("{}", &addr)
        } else {
            addr.clone()
        };
        let city = rng.pick(CITIES);
        writeln!(out, "{email},{first},{city}")?;
    }
    out.flush()
}

fn write_campaign(dir: &Path) -> std::io::Result<PathBuf> {
    let mut text = String::from(
        "Hello {{first_name}},\n\nSpring has arrived in {{city}}, and with it our offers.\n\n",
    );
    for i in 1..=5 {
        text.push_str(&format!(
            "  * Offer {i} for {{{{first_name}}}} in {{{{city}}}}: 20% off garden furniture.\n"
        ));
    }
    text.push_str("\nSee you soon,\nThe Acme team\n");
    std::fs::write(dir.join("body.txt.hbs"), text)?;
    let toml = r#"[campaign]
id = "store-bench"
from = "Acme News <news@acme.example>"
subject = "Spring offers for {{first_name}} in {{city}}"
text = "body.txt.hbs"
lists = ["list.csv"]
state_dir = "state"

[lane]
transport = "outbox:outbox"
"#;
    let path = dir.join("campaign.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// A timed phase, printed with this bench's label width.
struct Clock(common::Clock);

impl Clock {
    fn start() -> Self {
        Clock(common::Clock::start())
    }
    fn report(&self, what: &str, rows: u64) -> f64 {
        self.0.report_padded(what, 30, rows)
    }
}

/// (apparent bytes, allocated bytes, files) under `dir`.
fn dir_size(dir: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut alloc, mut files) = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
                alloc += m.blocks() * 512;
                files += 1;
            }
        }
    }
    (bytes, alloc, files)
}

/// Prints the size of `dir`; returns the larger of apparent and allocated bytes.
fn print_size(what: &str, dir: &Path, recipients: u64) -> u64 {
    let (bytes, alloc, files) = dir_size(dir);
    let per = |b: u64| b as f64 / recipients.max(1) as f64;
    println!(
        "{what:<30} {:.1} MB apparent ({:.0} B/recipient), {:.1} MB allocated ({:.0} B/recipient), {files} files",
        bytes as f64 / 1e6,
        per(bytes),
        alloc as f64 / 1e6,
        per(alloc)
    );
    bytes.max(alloc)
}

/// One import, as `send()` runs it but with no lane beside it.
fn run_import(
    s: &blast::config::Settings,
    store: &CampaignStore,
    prune_path: &Path,
) -> (ImportStats, u64, std::collections::BTreeMap<String, u64>) {
    let (_templates, reader, fields) = send::load_inputs(s).expect("load inputs");
    let file_map = import::register_files(store, &reader).expect("register files");
    let mut prune = PruneReport::create(prune_path).expect("prune report");
    let live = blast::lane::Stats::default();
    let stats = import::import(
        s,
        store,
        ImportSource {
            reader,
            file_map: &file_map,
            fields: &fields,
            feed: None,
        },
        &mut prune,
        None,
        &live,
    )
    .expect("import");
    let (_, counts) = prune.finish().expect("finish prune report");
    (stats, live.eligible.into_inner(), counts)
}

/// A number from the environment (`_` separators allowed), or `default`.
fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rows = env_num("ROWS", 1_000_000);
    let keep = std::env::var("KEEP").is_ok_and(|v| v == "1");
    let limit = std::env::var("LIMIT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1200u64);
    // Bound the whole bench: a hang (lock wait, runaway sled) must not run forever.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(limit));
        eprintln!("store bench: still running after {limit}s (LIMIT_SECS), aborting");
        std::process::exit(2);
    });

    let tmp = tempfile::Builder::new()
        .prefix("blast-store-bench.")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let t0 = Instant::now();
    generate(&dir.join("list.csv"), rows).expect("generate");
    let campaign = write_campaign(&dir).expect("campaign");
    let size = std::fs::metadata(dir.join("list.csv")).map_or(0, |m| m.len());
    println!(
        "generated {rows} rows, {:.1} MB of CSV in {:.1}s",
        size as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );

    let s = blast::config::load(&campaign).expect("load campaign");
    let store_dir = send::store_dir(&s);
    let store = CampaignStore::open(&store_dir, Duration::from_millis(500)).expect("open store");
    assert!(store.is_empty(), "a fresh temp dir has an empty store");

    // 1. First import into the empty store (includes the final flush).
    let clock = Clock::start();
    let (st, eligible, pruned) = run_import(&s, &store, &dir.join("pruned-1.csv"));
    let first_rate = clock.report("import into empty store:", st.rows);
    assert!(st.fresh, "first import must take the fresh path");
    println!(
        "  read {}, added {} ({} pending, eligible {eligible}), kept {}; pruned {:?}",
        st.rows, st.added, st.pending_added, st.kept, pruned
    );
    let recipients = store.len() as u64;
    assert_eq!(recipients, st.added, "store holds what was added");
    print_size("state dir after import:", &s.state_dir, recipients);

    // 2. The same list again into the populated store: a store lookup per row, then the
    //    reconcile scan `send()` runs after a non-fresh import.
    let clock = Clock::start();
    let (st2, _, _) = run_import(&s, &store, &dir.join("pruned-2.csv"));
    let re_rate = clock.report("re-import (lookup per row):", st2.rows);
    assert!(!st2.fresh, "second import must take the lookup path");
    println!(
        "  read {}, added {}, kept {}",
        st2.rows, st2.added, st2.kept
    );
    assert_eq!(
        (st2.added, st2.kept),
        (0, st.added),
        "re-import must keep every recipient and add none"
    );
    let clock = Clock::start();
    let import::Reconciled {
        removed,
        recovered,
        eligible: eligible2,
        ..
    } = import::reconcile(&store, s.in_flight, false, &st2.seen).expect("reconcile");
    clock.report("  reconcile scan after it:", recipients);
    assert_eq!(
        (removed, recovered, eligible2),
        (0, 0, eligible),
        "reconcile after an identical re-import changes nothing"
    );
    print_size("state dir after re-import:", &s.state_dir, recipients);
    drop(store);
    let size = print_size("state dir after close:", &s.state_dir, recipients);
    // Scaled to 1,000,000 recipients when ROWS differs.
    let per_million = size as f64 * 1e6 / recipients.max(1) as f64;

    // 4. The store's share of sending.
    let send_n = env_num("SEND_N", 100_000) as usize;
    let group = env_num("GROUP", 50).max(1) as usize;
    let store = CampaignStore::open(&store_dir, Duration::from_millis(500)).expect("reopen store");
    let clock = Clock::start();
    let sent = send_path::run(&store, send_n, group);
    let (wall, cpu) = (clock.0.elapsed().as_secs_f64(), clock.0.cpu());
    let us = |secs: f64| secs * 1e6 / sent.max(1) as f64;
    let share = us(cpu) / send_path::E2E_CPU_US;
    println!(
        "store per sent message:        {sent} msgs, {group}/commit (scan + claim + result): wall {:.1} µs/msg | cpu {:.1} µs/msg = {:.1}% of the ~{:.0} µs/msg e2e CPU",
        us(wall),
        us(cpu),
        share * 100.0,
        send_path::E2E_CPU_US
    );
    drop(store);

    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "targets: import {first_rate:.0} rows/s (>= 100000: {}); state dir {:.1} MB per 1M recipients (< 300 MB: {}); re-import {re_rate:.0} rows/s; store on vs off {:.1}% of sending CPU (<= 10%: {})",
        verdict(first_rate >= 100_000.0),
        per_million / 1e6,
        verdict(per_million < 300e6),
        share * 100.0,
        verdict(share <= 0.10)
    );
    if keep {
        println!("kept {}", tmp.keep().display());
    }
}
