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
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/bounces"
    ))
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
        let ours = results
            .get(row.file.as_str())
            .map_or(&[][..], Vec::as_slice);
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

// ------------------------------------------------------------------ hand-written messages

const TOKEN: &str = "abcdefghijklmnopqrstuvwxyz23456723";

fn dsn(status: &str, diagnostic: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.net\r\n\
To: bounces+{TOKEN}@news.example.org\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\
\r\n\
--B\r\n\
Content-Type: text/plain\r\n\
\r\n\
Your message could not be delivered.\r\n\
--B\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.net\r\n\
\r\n\
Final-Recipient: rfc822; Someone@Example.COM\r\n\
Action: failed\r\n\
Status: {status}\r\n\
Remote-MTA: dns; mx.example.com\r\n\
Diagnostic-Code: smtp; {diagnostic}\r\n\
\r\n\
--B\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: news@example.org\r\n\
To: someone@example.com\r\n\
Message-ID: <{TOKEN}@example.org>\r\n\
\r\n\
--B--\r\n"
    )
}

fn one(raw: &[u8]) -> Bounce {
    let mut r = parse(raw);
    assert_eq!(r.len(), 1, "{r:#?}");
    r.remove(0)
}

#[test]
fn minimal_dsn_user_unknown_is_hard() {
    let b = one(dsn("5.1.1", "550 5.1.1 <someone@example.com>: user unknown").as_bytes());
    assert_eq!(b.recipient.as_deref(), Some("someone@example.com"));
    assert_eq!(b.class, BounceClass::Hard);
    assert_eq!(b.category, blast::bounce::Category::InvalidRecipient);
    assert_eq!(b.action, blast::bounce::Action::Suppress);
    assert_eq!(b.status.as_deref(), Some("5.1.1"));
    assert_eq!(b.code, Some(550));
    assert_eq!(b.reporting_mta.as_deref(), Some("mx.example.net"));
    assert_eq!(b.remote_mta.as_deref(), Some("mx.example.com"));
    assert_eq!(
        b.original_message_id.as_deref(),
        Some(&*format!("{TOKEN}@example.org"))
    );
    assert_eq!(b.verp_token.as_deref(), Some(TOKEN));
}

#[test]
fn blocklist_5xx_is_soft_spam_block_not_hard() {
    let b = one(dsn(
        "5.7.1",
        "550 5.7.1 Service unavailable; blocked by Spamhaus",
    )
    .as_bytes());
    assert_eq!(b.class, BounceClass::Soft);
    assert_eq!(b.category, blast::bounce::Category::SpamBlock);
    assert_eq!(b.action, blast::bounce::Action::Alert);
    // Even under an address-level enhanced code, a blocklist text is about the sender.
    let b = one(dsn("5.1.1", "550 5.1.1 your IP is listed at zen.spamhaus.org").as_bytes());
    assert_eq!(b.class, BounceClass::Soft);
    assert_eq!(b.category, blast::bounce::Category::SpamBlock);
}

#[test]
fn delivered_dsn_is_none() {
    let raw = dsn("2.0.0", "250 2.0.0 Ok").replace("Action: failed", "Action: delivered");
    assert_eq!(one(raw.as_bytes()).class, BounceClass::None);
}

#[test]
fn arf_complaint() {
    let raw = "From: staff@fbl.example.net\n\
To: fbl@example.org\n\
Subject: FW: spam report\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"X\"\n\
\n\
--X\n\
Content-Type: text/plain\n\
\n\
This is an email abuse report.\n\
--X\n\
Content-Type: message/feedback-report\n\
\n\
Feedback-Type: abuse\n\
User-Agent: SomeGenerator/1.0\n\
Version: 1\n\
Original-Rcpt-To: <Reader@Example.net>\n\
\n\
--X\n\
Content-Type: message/rfc822\n\
\n\
From: news@example.org\n\
To: reader@example.net\n\
Message-ID: <m1@example.org>\n\
Subject: news\n\
\n\
hello\n\
--X--\n";
    let b = one(raw.as_bytes());
    assert_eq!(b.class, BounceClass::Complaint);
    assert_eq!(b.recipient.as_deref(), Some("reader@example.net"));
    assert_eq!(b.feedback_type.as_deref(), Some("abuse"));
    assert_eq!(b.original_message_id.as_deref(), Some("m1@example.org"));
    assert_eq!(b.action, blast::bounce::Action::Suppress);
}

#[test]
fn postfix_text_bounce() {
    let raw = "From: MAILER-DAEMON (Mail Delivery System)\n\
To: bounces+x@example.org\n\
Subject: Undelivered Mail Returned to Sender\n\
\n\
This is the mail system at host mx.example.org.\n\
\n\
I'm sorry to have to inform you that your message could not\n\
be delivered to one or more recipients.\n\
\n\
<gone@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1\n\
    <gone@example.com>: Recipient address rejected: User unknown in virtual\n\
    mailbox table (in reply to RCPT TO command)\n\
\n\
<full@example.com>: host mx.example.com[192.0.2.1] said: 552 5.2.2\n\
    <full@example.com>: Mailbox full (in reply to RCPT TO command)\n";
    let r = parse(raw.as_bytes());
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(r[0].recipient.as_deref(), Some("gone@example.com"));
    assert_eq!(r[0].class, BounceClass::Hard);
    assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
    assert_eq!(r[1].recipient.as_deref(), Some("full@example.com"));
    assert_eq!(r[1].class, BounceClass::Soft);
    assert_eq!(r[1].category, blast::bounce::Category::QuotaIssues);
}

#[test]
fn autoreply_is_none() {
    let raw = "From: Reader <reader@example.net>\n\
To: news@example.org\n\
Subject: Out of Office: spring news\n\
Auto-Submitted: auto-replied\n\
\n\
I am away until Monday; your message could not be read before then.\n";
    let b = one(raw.as_bytes());
    assert_eq!(b.class, BounceClass::None);
    assert_eq!(b.category, blast::bounce::Category::AutoReply);
    assert_eq!(b.recipient.as_deref(), Some("reader@example.net"));
}

#[test]
fn ordinary_mail_gives_nothing() {
    let raw = "From: a@example.net\nTo: b@example.org\nSubject: lunch?\n\nsee you at noon, c@example.com too\n";
    assert!(parse(raw.as_bytes()).is_empty());
    assert!(parse(b"").is_empty());
    assert!(parse(b"\x00\xff garbage").len() <= 1);
}

// ------------------------------------------------------------------ robustness

/// xorshift64*: deterministic, so a failing mutation can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the parsers: MIME and header syntax, DSN punctuation.
const INTERESTING: &[u8] = b"\r\n:;<>@.-=\"\\ \t\x1b$B0123455";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(m.len() + 1);
        match rng.below(6) {
            0 if at < m.len() => m[at] ^= 1 << rng.below(8),
            1 => m.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < m.len() => {
                let end = (at + rng.below(64)).min(m.len());
                m.drain(at..end);
            }
            3 => m.truncate(at),
            4 if at < m.len() => {
                // Duplicate a slice: repeated parts, fields and boundaries.
                let end = (at + rng.below(256)).min(m.len());
                let piece = m[at..end].to_vec();
                m.splice(at..at, piece);
            }
            _ => {
                let b = rng.below(256) as u8;
                m.insert(at, b);
            }
        }
    }
    m
}

#[test]
fn mutations_never_panic() {
    let files = corpus_files();
    let mut rng = Rng(0x5eed_b0a1_ce00_0001);
    let started = Instant::now();
    let budget = Duration::from_secs(20);
    let mut count = 0usize;
    // Bounded both ways: at most 12 mutations per file, and a time budget for slow machines.
    'outer: for round in 0..12 {
        for (name, bytes) in &files {
            if started.elapsed() > budget {
                break 'outer;
            }
            let m = mutate(&mut rng, bytes);
            let caught = std::panic::catch_unwind(|| parse(&m));
            assert!(
                caught.is_ok(),
                "panic on a mutation of {name} (round {round})"
            );
            count += 1;
        }
    }
    println!("{count} mutated messages parsed without a panic");
    assert!(
        count >= files.len(),
        "not even one round in the time budget"
    );
}

/// A mutated message grown to `size` bytes by repeating corpus material.
pub fn big_message(size: usize, seed: u64) -> Vec<u8> {
    let files = corpus_files();
    let mut rng = Rng(seed);
    let mut out = files[rng.below(files.len())].1.clone();
    while out.len() < size {
        let (_, f) = &files[rng.below(files.len())];
        out.extend_from_slice(f);
    }
    out.truncate(size);
    mutate(&mut rng, &out)
}

#[test]
fn large_mutated_message_parses() {
    // Timing is printed, not asserted: machines here are shared. The bench measures it.
    for size in [100 * 1024, 1024 * 1024, 10 * 1024 * 1024] {
        let m = big_message(size, 7);
        let t = Instant::now();
        let r = parse(&m);
        println!(
            "{} KB mutated message: {} results in {:?} (debug build)",
            size / 1024,
            r.len(),
            t.elapsed()
        );
    }
}

#[test]
fn cli_parse_json() {
    let file = corpus_dir().join("eml/arf-16.eml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["bounces", "parse"])
        .arg(&file)
        .arg("--json")
        .output()
        .expect("run blast");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON array");
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 7);
    for key in [
        "recipient",
        "class",
        "category",
        "reason",
        "status",
        "action",
    ] {
        assert!(arr[0].get(key).is_some(), "missing key {key}");
    }
    assert_eq!(arr[0]["class"], "complaint");

    // The table, from stdin.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["bounces", "parse", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run blast");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dsn("5.1.1", "550 5.1.1 user unknown").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("someone@example.com") && text.contains("hard"),
        "{text}"
    );
}
