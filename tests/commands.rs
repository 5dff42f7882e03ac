//! `blast suppress import|export|list` and `blast status` warnings (issue 4, items 5 and 7),
//! against the real `blast` binary as a child process, campaign files and state on temp dirs,
//! and (where SMTP replies matter) a real sink on 127.0.0.1:0 in this process:
//!
//! - import of a CSV with ragged and invalid rows: counts, `file:line` for each bad row,
//!   idempotent; export/list print proper CSV
//! - export → import into a fresh state dir gives the same entries
//! - a suppressed address (and a suppressed domain) is skipped by `blast send`
//! - 5.7.26 for every gmail.com recipient: a status warning, nobody suppressed
//! - two campaigns sharing a state dir send at once; both bounce lists end up suppressed

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::pipeline::start_sink;
use blast::sink::{Action, Rule};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_blast");
const LIMIT: Duration = Duration::from_secs(90);

/// A temp dir with a template; campaigns in it share `state/` unless told otherwise.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("t.txt.hbs"), "Hello {{first_name}}.\n").unwrap();
        Dir { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes `ID.toml` (list `ID.csv`, state in `state_dir`, the given transport) and returns
    /// its path.
    fn campaign(&self, id: &str, state_dir: &str, transport: &str, lane_extra: &str) -> String {
        let p = self.write(
            &format!("{id}.toml"),
            &format!(
                r#"[campaign]
id = "{id}"
from = "Acme News <news@acme.example>"
subject = "Hello {{{{first_name}}}}"
text = "t.txt.hbs"
lists = ["{id}.csv"]
state_dir = "{state_dir}"

[lane]
transport = "{transport}"
helo = "blast.test"
connect_timeout = "5s"
{lane_extra}
"#
            ),
        );
        p.to_str().unwrap().to_string()
    }

    fn list(&self, id: &str, addrs: &[String]) {
        let mut s = String::from("email,first_name\n");
        for (i, a) in addrs.iter().enumerate() {
            s.push_str(&format!("{a},Name{i}\n"));
        }
        self.write(&format!("{id}.csv"), &s);
    }
}

/// Runs the binary to the end (bounded).
async fn run(args: &[&str]) -> Output {
    let fut = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("blast {args:?} did not finish within {LIMIT:?}"))
        .expect("run blast")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the binary and expects exit 0.
async fn ok(args: &[&str]) -> Output {
    let o = run(args).await;
    assert_eq!(o.status.code(), Some(0), "blast {args:?}: {}", show(&o));
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses export CSV (header checked) into rows of five fields.
fn parse_export(text: &str) -> Vec<[String; 5]> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let h = r.headers().expect("header").clone();
    assert_eq!(
        h.iter().collect::<Vec<_>>(),
        ["address", "reason", "at_ms", "source", "detail"],
        "{text}"
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap_or_else(|e| panic!("export is not CSV ({e}): {text}"));
            assert_eq!(rec.len(), 5, "{text}");
            std::array::from_fn(|i| rec[i].to_string())
        })
        .collect()
}

async fn export(toml: &str) -> Vec<[String; 5]> {
    let o = ok(&["suppress", "--campaign", toml, "export"]).await;
    parse_export(&stdout(&o))
}

fn addresses(rows: &[[String; 5]]) -> Vec<String> {
    rows.iter().map(|r| r[0].clone()).collect()
}

async fn status_json(toml: &str) -> serde_json::Value {
    let o = ok(&["status", "--json", toml]).await;
    serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}): {}", show(&o)))
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("status JSON has no numeric {key:?}: {v}"))
}

fn outbox_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".eml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ------------------------------------------------------------------ import / export

const IMPORT_CSV: &str = "address,reason,at_ms,source,detail\n\
Ann@Example.com,bounce,1700000000000,spring,\"550 5.1.1 <ann@example.com>: no such user, sorry\"\n\
bob@example.com,,,,\n\
carol@example.com,complaint,1\n\
not-an-address,manual,5,x,y\n\
@Spam.Example,manual,7,ops,\"whole domain, \"\"quoted\"\"\"\n\
dave@example.com,manual,yesterday,x,y\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_bad_rows_with_file_and_line_and_is_idempotent() {
    let d = Dir::new();
    let toml = d.campaign("imp", "state", "outbox:out", "");
    let file = d.write("supp.csv", IMPORT_CSV);
    let file = file.to_str().unwrap();

    let o = ok(&["suppress", "--campaign", &toml, "import", file]).await;
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        out.contains("3 added, 0 already present, 3 invalid"),
        "{}",
        show(&o)
    );
    for line in [4, 5, 7] {
        assert!(
            err.contains(&format!("{file}:{line}: ")),
            "no report for line {line}: {}",
            show(&o)
        );
    }
    assert!(err.contains(":4: 3 fields, the header has 5"), "{err}");
    assert!(err.contains(":7: at_ms \"yesterday\""), "{err}");
    assert_eq!(err.lines().count(), 3, "{err}");

    let rows = export(&toml).await;
    // A domain key starts with `@`, which a spreadsheet takes for a formula: escaped with a
    // `'` as in pruned.csv (and read back without it).
    assert_eq!(
        addresses(&rows),
        ["'@spam.example", "ann@example.com", "bob@example.com"]
    );
    assert_eq!(
        rows[1],
        [
            "ann@example.com",
            "bounce",
            "1700000000000",
            "spring",
            "550 5.1.1 <ann@example.com>: no such user, sorry"
        ]
        .map(String::from)
    );
    assert_eq!(rows[0][4], "whole domain, \"quoted\"");
    // Defaults: reason manual, source the file name, at_ms now.
    assert_eq!(rows[2][1], "manual");
    assert_eq!(rows[2][3], "supp.csv");
    assert!(rows[2][2].parse::<u64>().unwrap() > 1_700_000_000_000);

    // `list` prints the same CSV as `export`.
    let o = ok(&["suppress", "--campaign", &toml, "list"]).await;
    assert_eq!(parse_export(&stdout(&o)), rows);

    // Again: nothing changes.
    let o = ok(&["suppress", "--campaign", &toml, "import", file]).await;
    assert!(
        stdout(&o).contains("0 added, 3 already present, 3 invalid"),
        "{}",
        show(&o)
    );
    assert_eq!(export(&toml).await, rows);

    // A bare column of addresses (header `email`), with a repeat of a listed one.
    let bare = d.write(
        "bare.csv",
        "email\r\nEve@example.org\r\nann@example.com\r\n",
    );
    let o = ok(&[
        "suppress",
        "--campaign",
        &toml,
        "import",
        bare.to_str().unwrap(),
        "--reason",
        "unsubscribe",
    ])
    .await;
    assert!(
        stdout(&o).contains("1 added, 1 already present, 0 invalid"),
        "{}",
        show(&o)
    );
    let rows2 = export(&toml).await;
    assert_eq!(rows2.len(), 4);
    let eve = rows2.iter().find(|r| r[0] == "eve@example.org").unwrap();
    assert_eq!(
        (eve[1].as_str(), eve[3].as_str()),
        ("unsubscribe", "bare.csv")
    );
    // The existing bounce entry was kept, not overwritten by the bare import.
    assert_eq!(
        rows2.iter().find(|r| r[0] == "ann@example.com"),
        Some(&rows[1])
    );

    // A file with no address column is an error naming it, and changes nothing.
    let wrong = d.write("wrong.csv", "name,phone\nx,y\n");
    let o = run(&[
        "suppress",
        "--campaign",
        &toml,
        "import",
        wrong.to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("wrong.csv:1: expected the header"),
        "{}",
        show(&o)
    );
    assert_eq!(export(&toml).await, rows2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_state_dir_gives_the_same_entries() {
    let d = Dir::new();
    let a = d.campaign("a", "state-a", "outbox:out", "");
    let b = d.campaign("b", "state-b", "outbox:out", "");
    // Export of a state dir with no list yet: the header only, and no store created.
    assert!(export(&a).await.is_empty());
    assert!(!d.path("state-a").join("suppression").exists());

    let file = d.write("supp.csv", IMPORT_CSV);
    ok(&[
        "suppress",
        "--campaign",
        &a,
        "import",
        file.to_str().unwrap(),
    ])
    .await;
    ok(&[
        "suppress",
        "--campaign",
        &a,
        "add",
        "Üser@bücher.example",
        "--reason",
        "complaint",
    ])
    .await;
    let before = export(&a).await;
    assert_eq!(before.len(), 4, "{before:?}");

    let out = d.path("exported.csv");
    let o = ok(&[
        "suppress",
        "--campaign",
        &a,
        "export",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(stdout(&o).is_empty(), "export to a file printed to stdout");
    let o = ok(&[
        "suppress",
        "--campaign",
        &b,
        "import",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(
        stdout(&o).contains("4 added, 0 already present, 0 invalid"),
        "{}",
        show(&o)
    );
    assert_eq!(export(&b).await, before);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        stdout(&ok(&["suppress", "--campaign", &b, "export"]).await)
    );
}

// ------------------------------------------------------------------ send skips suppressed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressed_address_and_domain_are_skipped_by_send() {
    let d = Dir::new();
    let toml = d.campaign("skip", "state", "outbox:out", "");
    let list: Vec<String> = [
        "keep1@example.com",
        "Gone@Example.com",
        "keep2@example.com",
        "x@blocked.example",
        "y@blocked.example",
    ]
    .map(String::from)
    .to_vec();
    d.list("skip", &list);
    let file = d.write("s.csv", "address\ngone@example.com\n@blocked.example\n");
    ok(&[
        "suppress",
        "--campaign",
        &toml,
        "import",
        file.to_str().unwrap(),
    ])
    .await;

    ok(&["send", &toml, "--quiet"]).await;
    let st = status_json(&toml).await;
    assert_eq!(num(&st, "total"), 5, "{st}");
    assert_eq!(num(&st, "sent"), 2, "{st}");
    assert_eq!(num(&st, "skipped"), 3, "{st}");

    let expected: Vec<String> = ["keep1@example.com", "keep2@example.com"]
        .iter()
        .map(|k| blast::transport::outbox::file_name("skip", k))
        .collect();
    assert_eq!(outbox_files(&d.path("out")), expected);
    let o = ok(&["status", &toml]).await;
    assert!(!stdout(&o).contains("warning:"), "{}", show(&o));
}

/// Issue 11 item 13: export/list escape cells a spreadsheet would run (`=cmd@x.com`), as
/// pruned.csv does; an import of the export reads the original values back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_escapes_formula_cells_and_import_reads_them_back() {
    let d = Dir::new();
    let a = d.campaign("fa", "state-a", "outbox:out", "");
    let b = d.campaign("fb", "state-b", "outbox:out", "");
    let file = d.write(
        "evil.csv",
        "address,reason,at_ms,source,detail\n\
         =cmd@x.example,bounce,1,=HYPERLINK(\"http://evil\"),\"-2+3\"\n\
         +1@x.example,manual,2,cli,\"line\\one\"\n\
         -x@x.example,manual,3,cli,@SUM(A1)\n",
    );
    ok(&[
        "suppress",
        "--campaign",
        &a,
        "import",
        file.to_str().unwrap(),
    ])
    .await;
    let o = ok(&["suppress", "--campaign", &a, "export"]).await;
    let text = stdout(&o);
    let rows = parse_export(&text);
    assert_eq!(
        addresses(&rows),
        ["'+1@x.example", "'-x@x.example", "'=cmd@x.example"],
        "{text}"
    );
    assert_eq!(rows[2][3], "'=HYPERLINK(\"http://evil\")");
    assert_eq!(rows[2][4], "'-2+3");
    assert_eq!(rows[1][4], "'@SUM(A1)");
    assert_eq!(
        rows[0][4], "line\\\\one",
        "a backslash is escaped like in pruned.csv"
    );
    for line in text.lines() {
        for cell in line.split(',') {
            let cell = cell.trim_start_matches('"');
            assert!(
                !matches!(cell.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@')),
                "unescaped cell {cell:?} in {text}"
            );
        }
    }
    // `list` escapes the same way.
    let o = ok(&["suppress", "--campaign", &a, "list"]).await;
    assert_eq!(parse_export(&stdout(&o)), rows);

    // Import of the export: the original values, not the escaped ones.
    let out = d.write("exported.csv", &text);
    ok(&[
        "suppress",
        "--campaign",
        &b,
        "import",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(export(&b).await, rows);
    let o = ok(&["suppress", "--campaign", &b, "remove", "=cmd@x.example"]).await;
    assert!(
        stdout(&o).contains("removed =cmd@x.example"),
        "{}",
        show(&o)
    );
}

// ------------------------------------------------------------------ issue 11: list output

/// Item 10: two columns with one name are refused, naming both positions (the second
/// `email` used to be ignored and the last `first_name` to win).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_list_columns_are_refused_naming_both() {
    let d = Dir::new();
    let toml = d.campaign("dup", "state", "outbox:out", "");
    for (header, want) in [
        (
            "email,first_name,email",
            "has two `email` columns (columns 1 and 3)",
        ),
        (
            "email,first_name,first_name",
            "has two `first_name` columns (columns 2 and 3)",
        ),
    ] {
        d.write("dup.csv", &format!("{header}\na@x.example,A,B\n"));
        for cmd in ["check", "send"] {
            let o = run(&[cmd, &toml, "--quiet"][..if cmd == "send" { 3 } else { 2 }]).await;
            assert_eq!(o.status.code(), Some(2), "{cmd}: {}", show(&o));
            assert!(stderr(&o).contains(want), "{cmd}: {}", show(&o));
        }
        assert!(!d.path("out").exists(), "nothing may be sent");
    }
}

/// Item 14: `pruned rows N` is followed by reason lines that add up to N; rows kept with a
/// warning are counted apart under their own heading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_rows_and_kept_warnings_are_counted_apart() {
    let d = Dir::new();
    let toml = d.campaign("pr", "state", "outbox:out", "");
    d.write(
        "pr.csv",
        "email,first_name\na@x.example,A\na@x.example,A\nnot-an-address,B\njane@gmial.com,J\n",
    );
    for cmd in ["check", "send"] {
        let o = run(&[cmd, &toml, "--quiet"][..if cmd == "send" { 3 } else { 2 }]).await;
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", show(&o));
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("  pruned rows "))
            .unwrap_or_else(|| panic!("{cmd}: no pruned rows line: {err}"));
        let n: u64 = lines[at]["  pruned rows ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let reasons: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("    "))
            .copied()
            .collect();
        let sum: u64 = reasons
            .iter()
            .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!((n, sum), (2, 2), "{cmd}: {err}");
        assert!(reasons.iter().all(|r| !r.contains("kept:")), "{cmd}: {err}");
        let kept = lines[at + 1 + reasons.len()];
        assert!(
            kept.starts_with("  kept with a warning 1 (sent; listed in the report too)"),
            "{cmd}: {err}"
        );
        assert!(
            lines[at + 2 + reasons.len()].contains("kept:typo_suspect"),
            "{cmd}: {err}"
        );
    }
}

// ------------------------------------------------------------------ status warnings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_level_rejections_warn_per_domain_and_suppress_nobody() {
    let sink = start_sink(vec![
        Rule::new(
            "*@gmail.com",
            Action::RcptReply(550, "5.7.26 unauthenticated".into()),
        ),
        Rule::new(
            "gone*@yahoo.com",
            Action::RcptReply(550, "5.1.1 no such user".into()),
        ),
    ])
    .await;
    let d = Dir::new();
    let toml = d.campaign("warn", "state", &format!("smtp://{}", sink.addr), "");
    let mut list: Vec<String> = (0..12).map(|i| format!("g{i}@gmail.com")).collect();
    list.extend((0..3).map(|i| format!("ok{i}@yahoo.com")));
    list.extend((0..2).map(|i| format!("gone{i}@yahoo.com")));
    d.list("warn", &list);

    let o = ok(&["send", &toml, "--quiet"]).await;
    assert!(stderr(&o).contains("warning: gmail.com"), "{}", show(&o));

    let st = status_json(&toml).await;
    for k in [
        "campaign",
        "total",
        "pending",
        "in_flight",
        "sent",
        "deferred",
        "bounced",
        "failed",
        "skipped",
        "unknown",
        "running",
    ] {
        assert!(st.get(k).is_some(), "status --json lost {k:?}: {st}");
    }
    assert_eq!(num(&st, "sent"), 3, "{st}");
    assert_eq!(num(&st, "bounced"), 14, "{st}");
    assert_eq!(
        st["warnings"],
        serde_json::json!([{"domain": "gmail.com", "count": 12, "last": "550 5.7.26 unauthenticated"}]),
        "{st}"
    );

    let o = ok(&["status", &toml]).await;
    assert!(
        stdout(&o).contains(
            "warning: gmail.com: 12 sender/message-level rejections (not suppressed), last: 550 5.7.26 unauthenticated"
        ),
        "{}",
        show(&o)
    );
    assert!(!stdout(&o).contains("warning: yahoo.com"), "{}", show(&o));

    // Only the address-level bounces are suppressed.
    assert_eq!(
        addresses(&export(&toml).await),
        ["gone0@yahoo.com", "gone1@yahoo.com"]
    );
}

// ------------------------------------------------------------------ shared store

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_campaigns_sending_at_once_share_the_suppression_list() {
    let sink = start_sink(vec![Rule::new(
        "bad*",
        Action::RcptReply(550, "5.1.1 no such user".into()),
    )])
    .await;
    let d = Dir::new();
    let relay = format!("smtp://{}", sink.addr);
    let mut tomls = Vec::new();
    let mut bad = Vec::new();
    for id in ["alpha", "beta"] {
        tomls.push(d.campaign(id, "state", &relay, "rate = \"100/s\""));
        let mut list: Vec<String> = (0..60)
            .map(|i| format!("{id}{i}@d{}.example", i % 3))
            .collect();
        for i in 0..4 {
            let a = format!("bad-{id}{i}@d{i}.example");
            list.insert(i * 15, a.clone());
            bad.push(a);
        }
        list.push("shared@both.example".into());
        d.list(id, &list);
    }
    // Both imports read the list at the same time (it exists, so both open it).
    let file = d.write("s.csv", "address\nshared@both.example\n");
    ok(&[
        "suppress",
        "--campaign",
        &tomls[0],
        "import",
        file.to_str().unwrap(),
    ])
    .await;

    let spawn = |toml: &str, log: &str| {
        let err = std::fs::File::create(d.path(log)).unwrap();
        Command::new(BIN)
            .args(["send", toml, "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn blast send")
    };
    let mut a = spawn(&tomls[0], "alpha.err");
    let mut b = spawn(&tomls[1], "beta.err");
    let (ra, rb) = tokio::time::timeout(LIMIT, async { tokio::join!(a.wait(), b.wait()) })
        .await
        .expect("the two sends did not finish in time");
    let log = |n: &str| std::fs::read_to_string(d.path(n)).unwrap_or_default();
    assert_eq!(ra.unwrap().code(), Some(0), "alpha: {}", log("alpha.err"));
    assert_eq!(rb.unwrap().code(), Some(0), "beta: {}", log("beta.err"));
    assert_eq!(sink.count(), 120, "each good address once");

    for toml in &tomls {
        let st = status_json(toml).await;
        assert_eq!(num(&st, "sent"), 60, "{st}");
        assert_eq!(num(&st, "bounced"), 4, "{st}");
        assert_eq!(num(&st, "skipped"), 1, "{st}");
        assert_eq!(st["warnings"], serde_json::json!([]), "{st}");
    }
    let mut want = bad.clone();
    want.push("shared@both.example".into());
    want.sort();
    let rows = export(&tomls[1]).await;
    assert_eq!(addresses(&rows), want);
    for r in rows.iter().filter(|r| r[0].starts_with("bad-")) {
        assert_eq!(r[1], "bounce", "{r:?}");
        assert!(r[4].contains("5.1.1"), "{r:?}");
        let id = r[0].trim_start_matches("bad-");
        assert!(id.starts_with(&r[3]), "source {:?} for {}", r[3], r[0]);
    }
}

// ------------------------------------------------------------------ issue 11: hardening

/// Issue 11.3 through `blast check`: an unclosed quote is one reported row (on the line it
/// opened), the rows after it are read; bare-CR line ends split rows instead of merging them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_an_unclosed_quote_and_reads_bare_cr_rows() {
    let d = Dir::new();
    let toml = d.campaign("q", "state", "outbox:out", "");
    d.write(
        "q.csv",
        "email,first_name\na@example.com,Ann\nb@example.com,\"Bob,Paris\nc@example.com,Cy\nd@example.com,Di\re@example.com,Eve\n",
    );
    let o = ok(&["check", &toml]).await;
    let err = stderr(&o);
    assert!(err.contains("rows 5, sendable 4"), "{}", show(&o));
    assert!(err.contains("unterminated_quote"), "{}", show(&o));
    let report = std::fs::read_to_string(d.path("state/q/pruned.csv")).unwrap();
    let row = report
        .lines()
        .find(|l| l.contains("unterminated_quote"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        row.contains(",3,") && row.contains("b@example.com"),
        "{row}"
    );
}

/// Issue 11.4: a template using a partial nobody defined is a config error in `check` and
/// `send` (exit 2, naming the partial), and nothing is written to the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_partial_fails_check_and_send_before_anything_is_sent() {
    let d = Dir::new();
    d.write("t.txt.hbs", "Hello {{first_name}}.\n{{> footer}}\n");
    let toml = d.campaign("p", "state", "outbox:out", "");
    d.list("p", &["a@example.com".into(), "b@example.com".into()]);
    for cmd in ["check", "send"] {
        let o = run(&[cmd, &toml]).await;
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", show(&o));
        let err = stderr(&o);
        assert!(
            err.contains("footer") && err.contains("t.txt.hbs"),
            "{cmd}: {err}"
        );
    }
    assert!(outbox_files(&d.path("out")).is_empty());
}

/// Issue 11.4: when nobody in the lists can be sent (every row pruned), `check` and `send`
/// exit 2 and say why, instead of 0 with "sendable 0" and a run that "completed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_that_can_send_nobody_is_not_a_success() {
    let d = Dir::new();
    let toml = d.campaign("n", "state", "outbox:out", "");
    d.list("n", &["not-an-address".into(), "also@".into()]);
    let o = run(&["check", &toml]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("nobody"), "{}", show(&o));
    let o = run(&["send", &toml, "--quiet"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("nobody"), "{}", show(&o));
    assert!(outbox_files(&d.path("out")).is_empty());
}

/// Issue 11.5: a helo with CR/LF (it would put a command on the relay's wire) is refused at
/// load with `file:line: key:`, by `check` and `send` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helo_with_crlf_is_refused_at_load() {
    let d = Dir::new();
    let toml = d.write(
        "h.toml",
        "[campaign]\nid = \"h\"\nfrom = \"news@acme.example\"\nsubject = \"s\"\ntext = \"t.txt.hbs\"\nlists = [\"h.csv\"]\n\n[lane]\ntransport = \"outbox:out\"\nhelo = \"bad helo\\r\\nMAIL FROM\"\n",
    );
    d.list("h", &["a@example.com".into()]);
    let toml = toml.to_str().unwrap();
    for cmd in ["check", "send"] {
        let o = run(&[cmd, toml]).await;
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", show(&o));
        assert!(stderr(&o).contains("h.toml:10: lane.helo:"), "{}", show(&o));
    }
    assert!(outbox_files(&d.path("out")).is_empty());
}

/// Issue 11.6: a From whose local part is not ASCII needs SMTPUTF8 for every message:
/// `check` refuses it unless the lane enables SMTPUTF8, and then says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_when_the_from_needs_smtputf8() {
    let d = Dir::new();
    let write = |extra: &str| {
        d.write(
            "u.toml",
            &format!("[campaign]\nid = \"u\"\nfrom = \"Jörg <jörg@acme.example>\"\nsubject = \"s\"\ntext = \"t.txt.hbs\"\nlists = [\"u.csv\"]\n\n[lane]\ntransport = \"outbox:out\"\n{extra}"),
        )
    };
    d.list("u", &["a@example.com".into()]);
    let toml = write("");
    let toml = toml.to_str().unwrap();
    let o = run(&["check", toml]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.contains("u.toml:3: campaign.from:") && err.contains("SMTPUTF8"),
        "{err}"
    );
    write("smtputf8 = true\n");
    let o = ok(&["check", toml]).await;
    assert!(stderr(&o).contains("SMTPUTF8"), "{}", show(&o));
}

/// Issue 11.7: a closed stdout/stderr (`blast check x.toml 2>&1 | head -1`) ends the command
/// quietly, never with a panic (exit 101). The pipe's read end is closed before blast
/// writes, so every write fails: deterministic, not 2 runs in 40.
#[test]
fn check_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = Dir::new();
    let toml = d.campaign("c", "state", "outbox:out", "");
    d.list("c", &["a@example.com".into()]);
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    let status = std::process::Command::new(BIN)
        .args(["check", &toml])
        .stdin(Stdio::null())
        .stdout(w.try_clone().unwrap())
        .stderr(w)
        .status()
        .unwrap();
    assert_ne!(status.code(), Some(101), "panicked: {status:?}");
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status:?}"
    );
}
