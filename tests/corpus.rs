//! List hygiene against the labelled address corpus in `../shared/corpus/addresses/`.
//!
//! The corpus judges syntax only, so the agreement run allows role accounts (sending to them
//! is a policy choice, not a syntax verdict). Each disagreement is printed so a regression
//! says which address changed, not just that a percentage dropped.

use blast::list::hygiene::{check, Mailbox, Policy, Reason};
use std::collections::HashMap;
use std::path::PathBuf;

/// Syntax verdicts must agree on at least this share of rows.
const MIN_AGREEMENT: f64 = 0.99;
/// Advisory flags are a small hand-made table; they must agree on this share of kept rows.
const MIN_FLAG_AGREEMENT: f64 = 0.95;

struct Row {
    line: u64,
    address: String,
    label: String,
    flags: Vec<String>,
    reason: String,
}

fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/addresses/addresses.csv")
}

fn load() -> Vec<Row> {
    let path = corpus_path();
    let mut rdr = csv::Reader::from_path(&path)
        .unwrap_or_else(|e| panic!("cannot open the corpus {}: {e}", path.display()));
    let headers = rdr.headers().expect("corpus header").clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("corpus has no `{name}` column"))
    };
    let (c_addr, c_label, c_flags, c_reason) =
        (col("address"), col("label"), col("flags"), col("reason"));
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.expect("corpus row");
        let line = rec.position().map_or(0, |p| p.line());
        // The cell is a JSON string literal so that control characters stay visible.
        let address: String = serde_json::from_str(&rec[c_addr])
            .unwrap_or_else(|e| panic!("line {line}: address is not a JSON string: {e}"));
        rows.push(Row {
            line,
            address,
            label: rec[c_label].to_owned(),
            flags: rec[c_flags]
                .split(';')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
            reason: rec[c_reason].to_owned(),
        });
    }
    rows
}

fn describe(r: &Result<Mailbox, Reason>) -> String {
    match r {
        Ok(m) => format!("accept {}", m.address),
        Err(reason) => format!("reject {} ({reason})", reason.code()),
    }
}

/// Whether `check` agrees with the row's label; `Err` carries what we said instead.
fn agrees(row: &Row) -> Result<(), String> {
    let roles_ok = Policy {
        allow_role: true,
        smtputf8: false,
    };
    let verdict = check(&row.address, &roles_ok);
    let ok = match row.label.as_str() {
        "accept" | "accept_after_trim" | "dup_case" => verdict.is_ok(),
        "accept_smtputf8" => {
            let with_utf8 = check(
                &row.address,
                &Policy {
                    smtputf8: true,
                    ..roles_ok
                },
            );
            if verdict != Err(Reason::NeedsSmtputf8) || with_utf8.is_err() {
                return Err(format!(
                    "default: {}; smtputf8: {}",
                    describe(&verdict),
                    describe(&with_utf8)
                ));
            }
            true
        }
        "reject" => verdict.is_err(),
        other => panic!("line {}: unknown label {other:?}", row.line),
    };
    if ok {
        Ok(())
    } else {
        Err(describe(&verdict))
    }
}

fn flag_set(m: &Mailbox) -> Vec<&'static str> {
    let mut v = Vec::new();
    if m.flags.role {
        v.push("role");
    }
    if m.flags.typo_of.is_some() {
        v.push("typo_suspect");
    }
    if m.flags.disposable {
        v.push("disposable");
    }
    if m.flags.idn {
        v.push("idn");
    }
    v
}

#[test]
fn hygiene_corpus_agreement() {
    let rows = load();
    assert!(!rows.is_empty(), "the corpus is empty");

    // Syntax verdicts.
    let mut agree = 0usize;
    for row in &rows {
        match agrees(row) {
            Ok(()) => agree += 1,
            Err(ours) => eprintln!(
                "DISAGREE line {}: {:?} labelled {} — we say {ours}",
                row.line, row.address, row.label
            ),
        }
    }
    let share = agree as f64 / rows.len() as f64;
    eprintln!(
        "hygiene corpus agreement: {agree}/{} = {:.1}%",
        rows.len(),
        share * 100.0
    );

    // Advisory flags on the rows that are kept.
    let lax = Policy {
        allow_role: true,
        smtputf8: true,
    };
    let (mut flag_rows, mut flag_agree) = (0usize, 0usize);
    for row in rows.iter().filter(|r| r.label != "reject") {
        let Ok(m) = check(&row.address, &lax) else {
            continue; // already reported above
        };
        flag_rows += 1;
        let mut expected: Vec<&str> = row.flags.iter().map(String::as_str).collect();
        let mut ours = flag_set(&m);
        expected.sort_unstable();
        ours.sort_unstable();
        if expected == ours {
            flag_agree += 1;
        } else {
            eprintln!(
                "FLAGS line {}: {:?} expected {expected:?}, we say {ours:?}",
                row.line, row.address
            );
        }
    }
    let flag_share = flag_agree as f64 / flag_rows.max(1) as f64;
    eprintln!(
        "hygiene flag agreement: {flag_agree}/{flag_rows} = {:.1}%",
        flag_share * 100.0
    );

    // dup_case rows must dedupe onto the address their reason names, when that one is here.
    let keys: HashMap<&str, String> = rows
        .iter()
        .filter_map(|r| {
            check(&r.address, &lax)
                .ok()
                .map(|m| (r.address.as_str(), m.key))
        })
        .collect();
    let (mut dup_checked, mut dup_bad) = (0usize, 0usize);
    for row in rows.iter().filter(|r| r.label == "dup_case") {
        let Some(named) = row
            .reason
            .split("same as ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        else {
            continue;
        };
        let Some(named_key) = keys.get(named) else {
            eprintln!(
                "dup_case line {}: {named:?} is not in this file; skipped",
                row.line
            );
            continue;
        };
        dup_checked += 1;
        let ours = keys.get(row.address.as_str());
        if ours != Some(named_key) {
            dup_bad += 1;
            eprintln!(
                "DUP line {}: key of {:?} is {ours:?}, key of {named:?} is {named_key:?}",
                row.line, row.address
            );
        }
    }
    eprintln!(
        "hygiene dup_case keys: {}/{dup_checked} equal",
        dup_checked - dup_bad
    );

    assert!(
        share >= MIN_AGREEMENT,
        "syntax agreement {:.1}% is below {:.0}%",
        share * 100.0,
        MIN_AGREEMENT * 100.0
    );
    assert!(
        flag_share >= MIN_FLAG_AGREEMENT,
        "flag agreement {:.1}% is below {:.0}%",
        flag_share * 100.0,
        MIN_FLAG_AGREEMENT * 100.0
    );
    assert_eq!(dup_bad, 0, "dup_case rows must share their original's key");
}
