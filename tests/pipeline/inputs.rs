//! What comes in: list cells that try header injection, bad CSV rows, config errors with
//! file:line, templates using a missing column, and a rerun of a finished campaign.

use std::path::Path;

use blast::send::SendOptions;
use blast::store::record::State;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_from_a_list_cell_creates_no_header() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let long_name = format!("{} end", "a".repeat(2000));
    let csv = format!(
        "email,first_name,code\r\n\
         inj@t.example,\"x\r\nBcc: victim@example.com\",1\r\n\
         lf@t.example,\"y\nBcc: victim2@example.com\nX-Evil: 1\",2\r\n\
         cr@t.example,\"z\rBcc: victim3@example.com\",3\r\n\
         long@t.example,{long_name},4\r\n\
         plain@t.example,Plain,5\r\n"
    );
    f.write("list.csv", csv);
    let s = f.campaign("t6", &campaign_toml("t6", sink.addr, &["list.csv"], ""));
    let summary = send_ok(&s).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    let list: Vec<String> = ["inj", "lf", "cr", "long", "plain"]
        .iter()
        .map(|l| format!("{l}@t.example"))
        .collect();
    assert_exactly_once(&sink, &list);
    for v in [
        "victim@example.com",
        "victim2@example.com",
        "victim3@example.com",
    ] {
        assert_eq!(sink.attempts(v), 0, "{v} became a recipient");
    }
    for r in sink.received() {
        let headers = header_block(&r.data);
        for line in headers.split("\r\n") {
            let l = line.to_ascii_lowercase();
            assert!(
                !l.starts_with("bcc:") && !l.starts_with("x-evil:"),
                "{:?}: injected header line {line:?} in\n{headers}",
                r.rcpt_to
            );
        }
        // No bare CR/LF, no NUL, no line over 998 octets anywhere in the message.
        assert!(
            r.violations.is_empty(),
            "{:?}: {:?}",
            r.rcpt_to,
            r.violations
        );
        assert!(headers.lines().all(|l| l.len() <= 998));
    }
    let got = by_rcpt(&sink);
    let subject = header(&got["inj@t.example"][0].data, "Subject").unwrap();
    eprintln!("injected subject arrives as {subject:?}");
    assert!(subject.starts_with("Hello x"), "{subject:?}");
    let long_subject = header(&got["long@t.example"][0].data, "Subject").unwrap();
    assert!(
        long_subject.len() >= 2000,
        "long subject was cut: {} octets",
        long_subject.len()
    );
}

/// Reads the prune report: (file, line, address, reason) rows.
fn prune_rows(path: &Path) -> Vec<(String, u64, String, String)> {
    let mut rd = csv::Reader::from_path(path).expect("open prune report");
    assert_eq!(
        rd.headers().unwrap().iter().collect::<Vec<_>>(),
        ["file", "line", "address", "reason", "detail"]
    );
    rd.records()
        .map(|r| {
            let r = r.expect("prune report row");
            (
                r[0].to_string(),
                r[1].parse().unwrap(),
                r[2].to_string(),
                r[3].to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csv_rows_are_reported_with_file_and_line_and_good_rows_sent() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let mut csv: Vec<u8> = Vec::new();
    csv.extend_from_slice(b"email,first_name,code\n"); // line 1
    csv.extend_from_slice(b"good1@t.example,Ann,1\n"); // 2
    csv.extend_from_slice(b"ragged@t.example,Bob\n"); // 3: too few cells
    csv.extend_from_slice(b"latin@t.example,Ren\xe9e,3\n"); // 4: latin-1, not UTF-8
    csv.extend_from_slice(b"multi@t.example,\"Doe, Jane\nsecond line\",4\n"); // 5-6: valid
    csv.extend_from_slice(b"ragged2@t.example,Eve,5,extra\n"); // 7: too many cells
    csv.extend_from_slice(b"not-an-address,Fay,6\n"); // 8: invalid address
    csv.extend_from_slice(b"good2@t.example,Gus,7\n"); // 9
    f.write("list.csv", &csv);
    let report = f.path("pruned.csv");
    let s = f.campaign("t7", &campaign_toml("t7", sink.addr, &["list.csv"], ""));
    let summary = send_with(
        &s,
        SendOptions {
            pruned: Some(report.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("send");
    eprintln!(
        "bad rows: {:?}, pruned {:?}",
        summary.counts.by_state, summary.pruned
    );
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.pruned.0, report);

    let good = ["good1@t.example", "multi@t.example", "good2@t.example"].map(String::from);
    assert_exactly_once(&sink, &good);
    let multi = &by_rcpt(&sink)["multi@t.example"][0];
    assert!(
        flat_text(&multi.data).contains("Hello Doe, Jane"),
        "quoted cell with a comma"
    );

    let rows = prune_rows(&report);
    eprintln!("prune report rows: {rows:#?}");
    let find = |line: u64| {
        rows.iter()
            .find(|r| r.1 == line)
            .unwrap_or_else(|| panic!("no prune row for line {line}: {rows:?}"))
    };
    for r in &rows {
        assert!(
            Path::new(&r.0).ends_with("list.csv"),
            "file column {:?}",
            r.0
        );
    }
    assert_eq!(find(3).3, "ragged_row");
    assert_eq!(find(3).2, "ragged@t.example");
    assert_eq!(find(4).3, "bad_encoding");
    assert_eq!(find(7).3, "ragged_row");
    assert_eq!(find(8).2, "not-an-address");
    assert!(
        !rows.iter().any(|r| [2, 5, 6, 9].contains(&r.1)),
        "good rows reported: {rows:?}"
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
}

/// Campaign text whose line numbers the tests below rely on (line 1 is `[campaign]`).
fn numbered(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

#[test]
fn config_errors_name_file_line_and_key() {
    let f = Fixture::new();
    f.write("list.csv", "email,first_name,code\n");
    let path = f.path("file.toml");
    let base = [
        "[campaign]",                            // 1
        "id = \"t8\"",                           // 2
        "from = \"Acme <news@acme.example>\"",   // 3
        "subject = \"Hi {{first_name}}\"",       // 4
        "text = \"t.txt.hbs\"",                  // 5
        "lists = [\"list.csv\"]",                // 6
        "",                                      // 7
        "[lane]",                                // 8
        "transport = \"smtp://127.0.0.1:2525\"", // 9
        "rate = \"100/s\"",                      // 10
    ];
    let parse = |lines: &[&str]| blast::config::parse(&path, &numbered(lines));
    parse(&base).expect("the base campaign is valid");
    let loc = |line: usize| format!("{}:{line}", path.display());

    // Unknown key in [campaign], line 7.
    let mut l = base.to_vec();
    l[6] = "colour = \"blue\"";
    let e = parse(&l).unwrap_err();
    eprintln!("unknown key: {e}");
    assert!(e.is_config());
    assert!(e.to_string().contains(&format!("{}:", loc(7))), "{e}");
    assert!(e.to_string().contains("colour"), "{e}");

    // Unknown key in [lane], line 11.
    let mut l = base.to_vec();
    l.push("conections = 4");
    let e = parse(&l).unwrap_err();
    eprintln!("unknown lane key: {e}");
    assert!(e.to_string().contains(&format!("{}:", loc(11))), "{e}");
    assert!(e.to_string().contains("conections"), "{e}");

    // A bad rate, line 10.
    let mut l = base.to_vec();
    l[9] = "rate = \"fast\"";
    let e = parse(&l).unwrap_err();
    eprintln!("bad rate: {e}");
    assert!(
        e.to_string().contains(&format!("{}: lane.rate", loc(10))),
        "{e}"
    );

    // A bad per-domain rate, line 13.
    let mut l = base.to_vec();
    l.extend(["", "[lane.per_domain]", "\"gmail.com\" = \"9/fortnight\""]);
    let e = parse(&l).unwrap_err();
    eprintln!("bad per-domain rate: {e}");
    assert!(e.to_string().contains(&loc(13)), "{e}");
    assert!(e.to_string().contains("lane.per_domain.gmail.com"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_using_a_missing_column_fails_before_any_connection() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    f.write(
        "t.txt.hbs",
        "Hello {{first_name}}, your {{loyalty_tier}} offer.\n",
    );
    f.write("list.csv", csv_list(&addrs("ok", "t.example", 5)));
    let s = f.campaign("t9", &campaign_toml("t9", sink.addr, &["list.csv"], ""));
    let e = send(&s)
        .await
        .expect_err("a template using a missing column must fail");
    eprintln!("missing column: {e}");
    assert!(matches!(e, blast::error::Error::Config(_)), "{e:?}");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("loyalty_tier"), "{e}");
    assert_eq!(sink.connections(), 0, "the relay was contacted");
    assert_eq!(sink.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_of_a_completed_campaign_sends_nothing() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    let list = addrs("ok", "t.example", 25);
    f.write("list.csv", csv_list(&list));
    let s = f.campaign("t10", &campaign_toml("t10", sink.addr, &["list.csv"], ""));
    let first = send_ok(&s).await;
    assert_eq!(first.exit_code(), 0, "{first:?}");
    assert_eq!(first.sent_this_run, 25);
    assert_exactly_once(&sink, &list);

    let again = send_ok(&s).await;
    eprintln!(
        "rerun: {:?}, sent this run {}",
        again.counts.by_state, again.sent_this_run
    );
    assert_eq!(again.exit_code(), 0, "{again:?}");
    assert_eq!(again.sent_this_run, 0);
    assert_eq!(again.counts.get(State::Sent), 25);
    assert_eq!(sink.count(), 25, "a rerun sent again");
    assert_exactly_once(&sink, &list);
}

/// Issue 11.6: a From domain in Unicode (`news@acmé.example`) goes out as its A-label in the
/// envelope, the `From:` header and the default EHLO name, so a relay without SMTPUTF8
/// takes every message (it used to bounce them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_from_domain_goes_out_as_punycode() {
    let sink = start_sink_with(SinkConfig {
        smtputf8: false,
        ..Default::default()
    })
    .await;
    let f = Fixture::new();
    let list = addrs("u", "t.example", 3);
    f.write("list.csv", csv_list(&list));
    let toml = campaign_toml("idn", sink.addr, &["list.csv"], "")
        .replace("news@acme.example", "news@acmé.example");
    let s = f.campaign("idn", &toml);
    assert_eq!(s.from.address, "news@xn--acm-dma.example");
    let sum = send_ok(&s).await;
    assert_eq!(sum.exit_code(), 0, "{sum:?}");
    assert_exactly_once(&sink, &list);
    for got in sink.received() {
        assert!(!got.smtputf8, "SMTPUTF8 was not needed");
        assert!(got.mail_from.is_ascii(), "{}", got.mail_from);
        let from = header(&got.data, "From").unwrap();
        assert!(from.contains("news@xn--acm-dma.example"), "{from}");
    }
}

/// Issue 11 item 11: a display name with a comma is taken (and sent quoted); header values
/// are templates, rendered per recipient and sanitised like every header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comma_in_from_name_and_templated_extra_headers() {
    let sink = start_sink(vec![]).await;
    let f = Fixture::new();
    f.write(
        "list.csv",
        "email,first_name,code\r\njane@t.example,Jane,1\r\ninj@t.example,\"x\r\nBcc: victim@example.com\",2\r\n",
    );
    let toml = campaign_toml("t11", sink.addr, &["list.csv"], "")
        .replace("Acme News <news@", "Acme, Inc. <news@")
        .replace(
            "\"X-Campaign\" = \"t11\"",
            "\"X-Campaign\" = \"t11\"\n\"X-User\" = \"{{first_name}} ({{code}})\"",
        );
    let s = f.campaign("t11", &toml);
    assert_eq!(s.from.name, "Acme, Inc.");
    let summary = send_ok(&s).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    let got = by_rcpt(&sink);
    let jane = &got["jane@t.example"][0].data;
    assert_eq!(
        header(jane, "From").as_deref(),
        Some("\"Acme, Inc.\" <news@acme.example>")
    );
    assert_eq!(header(jane, "X-User").as_deref(), Some("Jane (1)"));
    assert_eq!(header(jane, "X-Campaign").as_deref(), Some("t11"));
    let inj = &got["inj@t.example"][0].data;
    let head = header_block(inj);
    assert!(
        !head.to_ascii_lowercase().contains("\r\nbcc:"),
        "injected header through X-User:\n{head}"
    );
    assert_eq!(
        header(inj, "X-User").as_deref(),
        Some("x Bcc: victim@example.com (2)")
    );
    assert_eq!(sink.attempts("victim@example.com"), 0);

    // A malformed address still fails, and the message says how to quote a name.
    let bad = toml.replace("Acme, Inc. <news@acme.example>", "Acme, Inc. news@acme");
    let p = f.write("bad.toml", &bad);
    let e = blast::config::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("campaign.from") && e.contains("needs quotes"),
        "{e}"
    );
}
