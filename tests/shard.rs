//! Shards (issue 16, item 3): `blast send --shard K/N` against real sinks on 127.0.0.1:0,
//! with the shard of every address computed independently by Python's `hashlib` (the
//! formula the README documents), and `blast status` merging the shards' state.
//!
//! - the README's test vector, recomputed by Python
//! - 4 shards of a 10,000-row list: every recipient exactly once in total, each shard exactly
//!   the addresses the formula gives it, duplicates pruned only in their own shard, other
//!   shards' rows counted and not pruned, a rerun of a shard resumes it (sends nothing new),
//!   `blast status --json` lists the four shards and their sum
//! - bad `--shard` values are refused with a clear error

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use crate::pipeline::{by_rcpt, campaign_toml, send_ok, start_sink, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_blast");

/// Python's shard (1-based) of each normalised address among `n`: SHA-256 of the UTF-8
/// bytes, first 8 bytes big-endian, modulo n, plus one. Normalised by Python too: local part
/// lower-cased, domain lower-cased and IDNA-encoded. Fails when python3 is missing.
fn python_shards(addrs: &[String], n: u32) -> Vec<(String, u32)> {
    let script = format!(
        r#"import sys, hashlib
for line in sys.stdin.read().splitlines():
    local, domain = line.rsplit("@", 1)
    key = local.lower() + "@" + domain.lower().encode("idna").decode("ascii")
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    print(key, h % {n} + 1)
"#
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the shard tests (.ci/run installs it)");
    let input = addrs.join("\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, s) = l.rsplit_once(' ').unwrap();
            (k.to_string(), s.parse().unwrap())
        })
        .collect()
}

/// The README's test vector: `Ann.Example@Bücher.DE` normalises to
/// `ann.example@xn--bcher-kva.de`, whose hash is 0x9babbeae5604fd8e, shard 3 of 4.
#[test]
fn the_documented_test_vector_agrees_with_python() {
    let policy = blast::list::hygiene::Policy::default();
    let key = blast::list::hygiene::check("Ann.Example@Bücher.DE", &policy)
        .unwrap()
        .key;
    assert_eq!(key, "ann.example@xn--bcher-kva.de");
    assert_eq!(blast::shard::hash(&key), 0x9bab_beae_5604_fd8e);
    assert_eq!(blast::shard::hash(&key), 11217268952873106830);
    assert_eq!(blast::shard::shard_of(&key, 4), 3);
    let py = python_shards(&["Ann.Example@Bücher.DE".to_string()], 4);
    assert_eq!(py, vec![(key, 3)]);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for needle in [
        "ann.example@xn--bcher-kva.de",
        "9babbeae5604fd8e",
        "11217268952873106830",
    ] {
        assert!(
            readme.contains(needle),
            "README lacks the test vector's {needle}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_shards_deliver_everyone_once_each_the_addresses_the_formula_gives_it() {
    const ROWS: usize = 10_000;
    const DUPS: usize = 10;
    let f = Fixture::new();
    // Mixed case and internationalised domains, so the normalisation is part of the test.
    let addrs: Vec<String> = (0..ROWS)
        .map(|i| match i % 10 {
            0 => format!("User{i}@Bücher{}.Example", i % 3),
            1 | 2 => format!("Mixed.Case{i}@Domain{}.EXAMPLE", i % 7),
            _ => format!("u{i}@d{}.example", i % 50),
        })
        .collect();
    let mut csv = String::from("email,first_name,code\n");
    for (i, a) in addrs.iter().enumerate() {
        csv.push_str(&format!("{a},Name{i},C-{i:06}\n"));
    }
    // Duplicates in another case: pruned as duplicates, in their own shard only.
    for (i, a) in addrs.iter().take(DUPS).enumerate() {
        csv.push_str(&format!("{},Dup{i},D-{i}\n", a.to_uppercase()));
    }
    f.write("big.csv", &csv);
    let expected = python_shards(&addrs, 4);
    let mut want: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for (k, s) in &expected {
        want.entry(*s).or_default().insert(k.clone());
    }
    assert_eq!(want.len(), 4, "10,000 addresses fill all four shards");
    let dup_keys: BTreeSet<&String> = expected.iter().take(DUPS).map(|(k, _)| k).collect();

    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    let mut duplicates = 0;
    for k in 1..=4u32 {
        let sink = start_sink(vec![]).await;
        let mut s = f.campaign(
            "big",
            &campaign_toml("big", sink.addr, &["big.csv"], "connections = 8\n"),
        );
        s.shard = Some(format!("{k}/4").parse().unwrap());
        let sum = send_ok(&s).await;
        assert_eq!(sum.exit_code(), 0, "shard {k}: {sum:?}");
        let got: BTreeSet<String> = by_rcpt(&sink).keys().cloned().collect();
        // Each delivered once within the shard…
        for (a, msgs) in by_rcpt(&sink) {
            assert_eq!(
                msgs.len(),
                1,
                "shard {k}: {a} received {} times",
                msgs.len()
            );
            *total.entry(a).or_default() += 1;
        }
        // …and exactly the shard's addresses by the documented formula.
        assert_eq!(
            got,
            want[&k],
            "shard {k}: delivered set differs from Python's ({} vs {})",
            got.len(),
            want[&k].len()
        );
        assert_eq!(sum.sent_this_run as usize, want[&k].len());
        assert_eq!(sum.counts.total as usize, want[&k].len());
        let dups_here = dup_keys.iter().filter(|d| want[&k].contains(**d)).count();
        let pruned = &sum.pruned.1;
        assert_eq!(
            pruned.get("duplicate").copied().unwrap_or(0) as usize,
            dups_here,
            "shard {k}: only its own duplicates are pruned: {pruned:?}"
        );
        assert_eq!(
            pruned.values().sum::<u64>() as usize,
            dups_here,
            "shard {k}: other shards' rows are not in the prune report: {pruned:?}"
        );
        duplicates += dups_here;
        assert_eq!(
            sum.imported.other_shard as usize,
            ROWS + DUPS - want[&k].len() - dups_here,
            "shard {k}: the other shards' rows are counted as such"
        );
        assert!(blast::send::store_dir(&s).ends_with(format!("big/shard-{k}-of-4/store")));

        // A rerun of the shard resumes it: nothing new is sent.
        let again = send_ok(&s).await;
        assert_eq!(again.sent_this_run, 0, "shard {k} rerun");
        assert_eq!(again.counts.total as usize, want[&k].len());
        assert_eq!(sink.received().len(), want[&k].len());
    }
    assert_eq!(duplicates, DUPS);
    assert_eq!(total.len(), ROWS, "every recipient delivered by some shard");
    assert!(total.values().all(|n| *n == 1), "nobody delivered twice");

    // `blast status` merges the shards: per shard rows and the total.
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .arg(f.path("big.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shards = v["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4, "{v}");
    for (i, sh) in shards.iter().enumerate() {
        let k = i as u32 + 1;
        assert_eq!(sh["shard"], format!("{k}/4"));
        assert_eq!(sh["sent"].as_u64().unwrap() as usize, want[&k].len());
    }
    assert_eq!(v["total"]["total"], ROWS as u64);
    assert_eq!(v["total"]["sent"], ROWS as u64);
    assert_eq!(v["total"]["pending"], 0);
    let text = Command::new(BIN)
        .arg("status")
        .arg(f.path("big.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("10000 recipients in 4 shards"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("total") && l.contains("10000")),
        "{text}"
    );
}

#[test]
fn bad_shard_values_are_refused_with_a_clear_error() {
    let f = Fixture::new();
    f.write("c.csv", "email,first_name,code\na@b.example,A,1\n");
    let campaign = f.write(
        "c.toml",
        campaign_toml("c", "127.0.0.1:9".parse().unwrap(), &["c.csv"], ""),
    );
    for (bad, why) in [
        ("0/4", "numbered from 1"),
        ("5/4", "shard 5 of only 4"),
        ("1/0", "N must be at least 1"),
        ("two/4", "is not a number"),
        ("3", "expected K/N"),
    ] {
        let out = Command::new(BIN)
            .args(["send", "--quiet", "--shard", bad])
            .arg(&campaign)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--shard {bad}: {err}");
        assert!(
            err.contains(why) && err.contains("--shard"),
            "--shard {bad}: {err}"
        );
        assert!(
            !f.path("state").join("c").exists(),
            "--shard {bad} touched state"
        );
    }
}
