//! Bounce parsing: every message of the labelled corpus (`../shared/corpus/bounces/eml`),
//! reported as messages/s (the issue asks >= 5,000/s on one core), and one 100 KB and one 1 MB
//! mutated message, so the "10x the input takes at most ~20x the time" claim is measured.
//!
//!   cargo bench --bench bounce

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn corpus() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/bounces/eml");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

/// The same xorshift as the tests' mutation: corpus material repeated to `size`, then a few
/// byte flips, insertions and deletions.
fn big(files: &[Vec<u8>], size: usize, mut seed: u64) -> Vec<u8> {
    let mut next = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d) as usize
    };
    let mut out = files[next() % files.len()].clone();
    while out.len() < size {
        out.extend_from_slice(&files[next() % files.len()]);
    }
    out.truncate(size);
    for _ in 0..8 {
        let at = next() % out.len();
        match next() % 3 {
            0 => out[at] ^= 1 << (next() % 8),
            1 => out.insert(at, b"\r\n:;<>@.-"[next() % 9]),
            _ => {
                out.remove(at);
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let files = corpus();
    let mut g = c.benchmark_group("bounce");
    g.throughput(Throughput::Elements(files.len() as u64));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("corpus (elements = messages)", |b| {
        b.iter(|| {
            let mut n = 0;
            for f in &files {
                n += blast::bounce::parse(f).len();
            }
            n
        })
    });
    for (name, size) in [
        ("mutated 100 KB", 100 * 1024),
        ("mutated 1 MB", 1024 * 1024),
    ] {
        let m = big(&files, size, 7);
        g.throughput(Throughput::Bytes(m.len() as u64));
        g.bench_function(name, |b| b.iter(|| blast::bounce::parse(&m).len()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
