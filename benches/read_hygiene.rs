//! Import throughput: `ListReader` → `hygiene::check` → dedupe, on a generated list.
//!
//! `cargo bench --bench read_hygiene` runs 1,000,000 rows; `ROWS=10000000 cargo bench --bench
//! read_hygiene` runs ten million and is the memory check (peak RSS, VmHWM, must stay far
//! below the list size: the reader streams, only 8 bytes per distinct address are kept).
//!
//! The list: `email,first_name,last_name,city`, ~2% invalid cells of the shapes seen in real
//! exports, ~1% case-variant duplicates, a few thousand domains with big providers dominating,
//! some quoted cells with commas, CRLF line endings (Excel's).

#[path = "common/mod.rs"]
mod common;
use blast::list::hygiene::{self, Policy};
use blast::list::reader::ListReader;
use common::Rng;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const FIRST: &[&str] = &[
    "anna", "ben", "carla", "dmitri", "eva", "farid", "grace", "hiro", "ines", "jonas", "kemal",
    "lena", "maria", "nils", "olga", "pedro", "quinn", "rosa", "sam", "tariq", "uma", "viktor",
    "wen", "xavier", "yusuf", "zoe",
];
const LAST: &[&str] = &[
    "fischer", "garcia", "okafor", "nguyen", "smith", "kowalski", "rossi", "tanaka", "silva",
    "müller", "dubois", "jensen", "ivanova", "haddad", "oconnor", "berg", "lopez", "patel",
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
];
/// Invalid shapes from real exports; `{}` is replaced by a valid address.
const BAD: &[&str] = &[
    "",
    "N/A",
    "\"Jane Doe <{}>\"",
    "mailto:{}",
    "{}.",
    "jane doe@example.com",
    "{}\u{a0}",
    "\"{}; other@example.org\"",
    "someone@localhost",
    "x@[10.0.0.1]",
    "a..b@example.com",
    "+44 7700 900123",
    "{}@",
];

/// Writes `rows` data rows.
fn generate(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(b"email,first_name,last_name,city\r\n")?;
    let mut addr = String::with_capacity(96);
    for i in 0..rows {
        addr.clear();
        // ~1% duplicates: an earlier row's address again, upper-cased (same dedupe key).
        let dup = i > 100 && rng.below(100) == 0;
        let n = if dup { rng.below(i) } else { i };
        // Names follow the row number so that a duplicate repeats the whole address.
        let first = FIRST[(n % FIRST.len() as u64) as usize];
        let last = LAST[(n / 7 % LAST.len() as u64) as usize];
        let domain_roll = rng.below(10);
        use std::fmt::Write as _;
        let _ = write!(addr, "{first}.{}{n}@", last.replace('ü', "ue"));
        if domain_roll < 6 {
            addr.push_str(BIG[(n % BIG.len() as u64) as usize]);
        } else {
            let _ = write!(addr, "corp{}.example.com", n % 5000);
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
        writeln!(out, "{email},{first},{last},{city}\r")?;
    }
    out.flush()
}

/// 64-bit fingerprint of a dedupe key (FxHash-style fold + murmur3 finaliser). At 10M keys the
/// chance of any collision is ~3·10⁻⁶, fine for a bench stand-in for the store's dedupe.
fn fingerprint(key: &str) -> u64 {
    let mut h: u64 = key.len() as u64;
    let bytes = key.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The fingerprints are already well mixed: hashing them again would only cost time.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Default, Debug)]
struct Tally {
    rows: u64,
    kept: u64,
    dupes: u64,
    pruned: u64,
    issues: u64,
}

fn read_only(paths: &[PathBuf]) -> u64 {
    let mut reader = ListReader::open(paths, "email").expect("open");
    let mut n = 0u64;
    let mut bytes = 0usize;
    while let Some(row) = reader.next_row() {
        if let Ok(row) = row {
            bytes += row.email.len();
        }
        n += 1;
    }
    std::hint::black_box(bytes);
    n
}

/// A timed phase, printed with this bench's label width.
struct Clock(common::Clock);

impl Clock {
    fn start() -> Self {
        Clock(common::Clock::start())
    }
    fn report(&self, what: &str, rows: u64) -> f64 {
        self.0.report_padded(what, 26, rows)
    }
}

fn hygiene_only(paths: &[PathBuf]) -> u64 {
    let policy = Policy::default();
    let mut reader = ListReader::open(paths, "email").expect("open");
    let (mut n, mut ok) = (0u64, 0u64);
    while let Some(row) = reader.next_row() {
        n += 1;
        if let Ok(row) = row {
            ok += u64::from(hygiene::check(row.email, &policy).is_ok());
        }
    }
    std::hint::black_box(ok);
    n
}

/// Dedupe by 64-bit fingerprint of the key.
///
/// The table outgrows the caches, so an insert is a DRAM miss plus, on this VM (nested
/// paging, no huge pages), a page-walk miss: ~0.5 µs when inserts come one per row with a
/// row's work between them, ~0.1 µs when many come back to back and the misses overlap.
/// So with `batch > 1` fingerprints are queued and inserted in order in runs of `batch`: the
/// verdicts are the same, just known a few rows later.
struct Dedupe {
    seen: HashSet<u64, BuildHasherDefault<Identity>>,
    pending: Vec<u64>,
    batch: usize,
    kept: u64,
    dupes: u64,
}

impl Dedupe {
    fn new(rows: u64, batch: usize) -> Self {
        Dedupe {
            // Pre-sized from the row count (an importer can estimate it from the file size):
            // growing a 10M-entry table doubles it, and both copies exist for a moment.
            seen: HashSet::with_capacity_and_hasher(rows as usize, Default::default()),
            pending: Vec::with_capacity(batch),
            batch,
            kept: 0,
            dupes: 0,
        }
    }

    fn push(&mut self, fp: u64) {
        self.pending.push(fp);
        if self.pending.len() >= self.batch {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for fp in self.pending.drain(..) {
            if self.seen.insert(fp) {
                self.kept += 1;
            } else {
                self.dupes += 1;
            }
        }
    }
}

fn full(paths: &[PathBuf], rows: u64, batch: usize) -> Tally {
    let policy = Policy::default();
    let mut reader = ListReader::open(paths, "email").expect("open");
    let mut dedupe = Dedupe::new(rows, batch);
    let mut t = Tally::default();
    while let Some(row) = reader.next_row() {
        t.rows += 1;
        match row {
            Ok(row) => match hygiene::check(row.email, &policy) {
                Ok(mailbox) => dedupe.push(fingerprint(&mailbox.key)),
                Err(_) => t.pruned += 1,
            },
            Err(_) => t.issues += 1,
        }
    }
    dedupe.flush();
    t.kept = dedupe.kept;
    t.dupes = dedupe.dupes;
    t
}

fn main() {
    let rows: u64 = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("list.csv");
    let t0 = Instant::now();
    generate(&path, rows).expect("generate");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {rows} rows, {:.1} MB in {:.1}s",
        size as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let paths = [path];

    let clock = Clock::start();
    let n = read_only(&paths);
    clock.report("read only:", n);
    println!(
        "  ({:.0} MB/s of CSV)",
        size as f64 / 1e6 / clock.0.elapsed().as_secs_f64()
    );
    let clock = Clock::start();
    let n = hygiene_only(&paths);
    clock.report("read + hygiene:", n);
    let clock = Clock::start();
    let t1 = full(&paths, rows, 1);
    clock.report("read + hygiene + dedupe:", t1.rows);
    let clock = Clock::start();
    let t = full(&paths, rows, 256);
    clock.report("  same, inserts batched:", t.rows);
    assert_eq!(
        (t.kept, t.dupes),
        (t1.kept, t1.dupes),
        "batching changed verdicts"
    );
    println!(
        "  kept {} distinct, {} duplicates, {} pruned by hygiene, {} row issues",
        t.kept, t.dupes, t.pruned, t.issues
    );
    match peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MB", kib as f64 / 1024.0),
        None => println!("peak RSS: unavailable (no /proc/self/status)"),
    }
}
