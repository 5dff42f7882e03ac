//! What bounces add up to, end to end with the real binary: `blast bounces import` of an
//! .eml, a maildir and an mbox (acted on once however often imported; stored for `list` and
//! `show`; through serve's socket while serve runs an inbox), and soft bounces that suppress
//! a mailbox only after full-mailbox replies on several campaigns in a row.

use crate::inbox::{arf, dsn, inbox_setup, message_id_of, send_campaign, spawn, verp_of};
use crate::serve::{free_port, term, Setup};
use crate::unsubscribe::{keys, reasons, send_process, signed_campaign, suppress_rows};

/// The suppression list as key → reason (a recipient-id key without its note).
fn listed(setup: &Setup) -> std::collections::BTreeMap<String, String> {
    let (out, rows) = suppress_rows(setup);
    assert!(out.status.success(), "{out:?}");
    reasons(&rows)
}

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `blast send --config` of campaign `c` (and `extra` arguments); expects exit 0.
fn send_ok(setup: &Setup, c: &std::path::Path, extra: &[&str]) {
    let out = tokio::task::block_in_place(|| send_process(setup, c).args(extra).output().unwrap());
    assert_eq!(out.status.code(), Some(0), "{}", out_text(&out));
}

fn import(setup: &Setup, path: &std::path::Path) -> String {
    let o =
        tokio::task::block_in_place(|| setup.blast(&["bounces", "import", path.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    out_text(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_acts_once_on_eml_maildir_and_mbox_and_goes_through_a_running_serve() {
    let setup = inbox_setup(free_port());
    let k = keys();
    let rid = |a: &str| blast::token::rid_key(k.recipient_id(a));
    let list: Vec<String> = [
        "hard@x.example",
        "full@x.example",
        "complainer@yahoo.com",
        "late@x.example",
        "keep@yahoo.com",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let f = crate::pipeline::Fixture::new();
    let got = send_campaign(&setup, &f, "spring", &list).await;
    let verp = |a: &str| verp_of(&got, a);
    let mid = |a: &str| message_id_of(&got, a);
    let dir = f.dir.path();

    // One .eml: a hard bounce delivered to the VERP address.
    let eml = dir.join("hard.eml");
    let hard = dsn(
        &verp("hard@x.example"),
        "hard@x.example",
        "5.1.1",
        "550 5.1.1 user unknown",
    );
    std::fs::write(
        &eml,
        format!("Delivered-To: {}\r\n{hard}", verp("hard@x.example")),
    )
    .unwrap();
    // A maildir: a full mailbox (counted, not suppressed) and a message that is no bounce.
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join("Maildir").join(d)).unwrap();
    }
    let full = dsn(
        &verp("full@x.example"),
        "full@x.example",
        "4.2.2",
        "452 4.2.2 mailbox full",
    );
    std::fs::write(dir.join("Maildir/new/1.eml"), full).unwrap();
    std::fs::write(
        dir.join("Maildir/cur/2.eml"),
        "From: a@b.example\r\nSubject: hello\r\n\r\nhi\r\n",
    )
    .unwrap();
    // An mbox: a feedback report attributed by the original's Message-ID (the recipient is
    // redacted), and a report nobody can attribute.
    let mbox = dir.join("fbl.mbox");
    let complaint = arf(&mid("complainer@yahoo.com")).replace("\r\n", "\n");
    let stray = arf("<not-a-token@acme.example>").replace("\r\n", "\n");
    std::fs::write(
        &mbox,
        format!("From fbl@provider.example Mon Nov 30 10:00:00 2026\n{complaint}\nFrom fbl@provider.example Mon Nov 30 10:01:00 2026\n{stray}"),
    )
    .unwrap();

    let o = import(&setup, &eml);
    assert!(o.contains("1 messages: 1 new"), "{o}");
    // Forwarded by a person: no VERP address left, no token in it; the Final-Recipient
    // is one the campaign mailed (acted on) or one it never mailed (changes nothing).
    let forwarded = |rcpt: &str| {
        dsn(
            "postmaster@acme.example",
            rcpt,
            "5.1.1",
            "550 5.1.1 user unknown",
        )
        .replace("To: <postmaster@acme.example>", "To: ops@acme.example")
    };
    let fwd = dir.join("fwd");
    std::fs::create_dir_all(&fwd).unwrap();
    std::fs::write(fwd.join("a.eml"), forwarded("full@x.example")).unwrap();
    std::fs::write(fwd.join("b.eml"), forwarded("stranger@x.example")).unwrap();
    let o = import(&setup, &fwd);
    assert!(
        o.contains("suppressed") && o.contains("no run of ours sent to stranger@x.example"),
        "{o}"
    );
    assert_eq!(
        listed(&setup)
            .get(&rid("full@x.example"))
            .map(String::as_str),
        Some("bounce")
    );
    let o = tokio::task::block_in_place(|| {
        setup.blast(&["suppress", "remove", &rid("full@x.example")])
    });
    assert!(o.status.success(), "{}", out_text(&o));
    let o = import(&setup, &dir.join("Maildir"));
    assert!(
        o.contains("2 messages: 2 new") && o.contains("soft bounce counted"),
        "{o}"
    );
    let o = import(&setup, &mbox);
    assert!(
        o.contains("2 messages: 2 new") && o.contains("unattributed"),
        "{o}"
    );
    let l = listed(&setup);
    let reason = |a: &str| l.get(&rid(a)).cloned();
    assert_eq!(reason("hard@x.example").as_deref(), Some("bounce"), "{l:?}");
    assert_eq!(
        reason("complainer@yahoo.com").as_deref(),
        Some("complaint"),
        "{l:?}"
    );
    assert_eq!(
        l.len(),
        2,
        "the full mailbox and the stray report suppress nothing: {l:?}"
    );

    // Again: every message recognised, nothing acted on twice.
    for p in [&eml, &mbox] {
        let o = import(&setup, p);
        assert!(
            o.contains("new, ") && o.contains(" 0 new") && o.contains("imported before"),
            "{o}"
        );
    }
    let counts = tokio::task::block_in_place(|| setup.blast(&["suppress", "list"]));
    assert_eq!(listed(&setup).len(), 2, "{}", out_text(&counts));

    // The campaign's rates: two hard bounces in 5 (the one removed by hand still happened),
    // one complaint among the 2 delivered to a
    // receiver that sends feedback reports (Yahoo), an alarm.
    let status = f.dir.path().join("spring.toml");
    let o = tokio::task::block_in_place(|| {
        setup.blast(&["status", status.to_str().unwrap(), "--json"])
    });
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out_text(&o)));
    let r = &v["rates"];
    assert_eq!(r["hard_bounces"], 2, "{v}");
    assert_eq!(r["complaints"], 1, "{v}");
    assert_eq!(r["feedback_delivered"], 2, "{v}");
    assert_eq!(r["complaint_rate"], 0.5, "{v}");
    assert!(
        r["alerts"][0]
            .as_str()
            .unwrap()
            .starts_with("warning: hard bounce rate 40.00%"),
        "{v}"
    );
    assert!(
        r["alerts"][1]
            .as_str()
            .unwrap()
            .starts_with("ALARM: complaint rate 50.00%"),
        "{v}"
    );
    let o = tokio::task::block_in_place(|| setup.blast(&["status", status.to_str().unwrap()]));
    let text = out_text(&o);
    assert!(
        text.contains("complaints 1 (50.00% of 2 delivered to feedback-loop receivers)"),
        "{text}"
    );

    // list and show read what was stored.
    let o = tokio::task::block_in_place(|| setup.blast(&["bounces", "list"]));
    let text = out_text(&o);
    assert_eq!(
        text.lines().count(),
        1 + 7,
        "a header and 7 messages: {text}"
    );
    let first_id = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let o = tokio::task::block_in_place(|| setup.blast(&["bounces", "show", &first_id]));
    let shown = out_text(&o);
    assert!(
        shown.contains("suppressed") && shown.contains("Final-Recipient: rfc822; hard@x.example"),
        "{shown}"
    );

    // With serve running (it holds the inbox store), the import goes through it.
    let (child, _) = spawn(&setup);
    let late = dir.join("late.eml");
    std::fs::write(
        &late,
        dsn(
            &verp("late@x.example"),
            "late@x.example",
            "5.1.1",
            "550 5.1.1 gone",
        ),
    )
    .unwrap();
    let o = import(&setup, &late);
    assert!(o.contains("1 new"), "{o}");
    let o = import(&setup, &late);
    assert!(o.contains("0 new"), "{o}");
    assert_eq!(
        listed(&setup)
            .get(&rid("late@x.example"))
            .map(String::as_str),
        Some("bounce")
    );
    let o = tokio::task::block_in_place(|| setup.blast(&["bounces", "list"]));
    assert_eq!(out_text(&o).lines().count(), 1 + 8);
    term(child);

    // A path that is not there is an error that names it.
    let o = tokio::task::block_in_place(|| setup.blast(&["bounces", "import", "/nonexistent/box"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out_text(&o).contains("/nonexistent/box"),
        "{}",
        out_text(&o)
    );
}

/// `[bounces] soft_days = 0` so that three campaigns in a row count at once (the 15-day
/// spread is the store's unit test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailbox_on_three_campaigns_in_a_row_suppresses_and_a_success_resets() {
    let setup = inbox_setup(free_port());
    let cfg = std::fs::read_to_string(setup.config())
        .unwrap()
        .replace("[bounces]\n", "[bounces]\nsoft_limit = 3\nsoft_days = 0\n");
    std::fs::write(setup.config(), cfg).unwrap();
    let k = keys();
    let rid = |a: &str| blast::token::rid_key(k.recipient_id(a));
    let list: Vec<String> = ["full@x.example", "flaky@x.example", "ok@x.example"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let f = crate::pipeline::Fixture::new();
    let full = |a: &str| {
        blast::sink::Rule::new(
            a.to_string(),
            blast::sink::Action::RcptReply(552, "5.2.2 mailbox full".into()),
        )
    };
    // flaky@ is full in campaigns 1, 3 and 4 and takes mail in campaign 2: its count restarts.
    for (n, flaky_full) in [(1, true), (2, false), (3, true)] {
        let mut rules = vec![full("full@x.example")];
        if flaky_full {
            rules.push(full("flaky@x.example"));
        }
        let sink = crate::pipeline::start_sink(rules).await;
        let c = signed_campaign(&f, &format!("c{n}"), sink.addr, &list, "");
        send_ok(&setup, &c, &[]);
        let l = listed(&setup);
        if n < 3 {
            assert!(l.is_empty(), "campaign {n}: nothing suppressed yet: {l:?}");
        } else {
            assert_eq!(
                l.get(&rid("full@x.example")).map(String::as_str),
                Some("bounce"),
                "{l:?}"
            );
            assert_eq!(l.len(), 1, "flaky@ has 2 in a row since its success: {l:?}");
        }
    }
    // The fourth campaign skips full@; flaky@ is full again, its second in a row since the
    // success: still not suppressed.
    let sink = crate::pipeline::start_sink(vec![full("flaky@x.example")]).await;
    let c = signed_campaign(&f, "c4", sink.addr, &list, "");
    send_ok(&setup, &c, &[]);
    let mut to: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.rcpt_to[0].clone())
        .collect();
    to.sort();
    assert_eq!(
        to,
        ["ok@x.example"],
        "flaky@ refused at RCPT, full@ skipped"
    );
    let l = listed(&setup);
    assert!(!l.contains_key(&rid("flaky@x.example")), "{l:?}");
    assert_eq!(l.len(), 1, "{l:?}");
}

/// Complaints that arrive for a campaign stop its next run before it sends anything
/// (exit 75 with the reason); `--override-breaker` sends the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaint_breaker_stops_the_run_and_the_override_resumes_it() {
    let setup = inbox_setup(free_port());
    let first: Vec<String> = (0..10).map(|i| format!("r{i}@yahoo.com")).collect();
    let f = crate::pipeline::Fixture::new();
    let sink = crate::pipeline::start_sink(Vec::new()).await;
    let c = signed_campaign(&f, "hot", sink.addr, &first, "");
    send_ok(&setup, &c, &[]);
    // Five of the ten complain (the reports carry the messages' Message-IDs).
    let mut mbox = String::new();
    for r in sink.received().iter().take(5) {
        let mid = crate::pipeline::header(&r.data, "Message-ID").unwrap();
        mbox.push_str("From fbl@yahoo.com Mon Nov 30 10:00:00 2026\n");
        mbox.push_str(&arf(mid.trim()).replace("\r\n", "\n"));
        mbox.push('\n');
    }
    let path = f.dir.path().join("fbl.mbox");
    std::fs::write(&path, mbox).unwrap();
    let o = import(&setup, &path);
    assert!(o.contains("5 messages: 5 new"), "{o}");

    // Ten more rows: the rerun imports them and stops before sending any.
    let mut all = first.clone();
    all.extend((10..20).map(|i| format!("r{i}@yahoo.com")));
    f.write("hot.csv", crate::pipeline::csv_list(&all));
    let out = tokio::task::block_in_place(|| send_process(&setup, &c).output().unwrap());
    let text = out_text(&out);
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(
        text.contains("complaint breaker: 5 complaints for 10 messages delivered")
            && text.contains("--override-breaker"),
        "{text}"
    );
    assert_eq!(sink.received().len(), 10, "nothing more sent");

    send_ok(&setup, &c, &["--override-breaker"]);
    let mut to: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.rcpt_to[0].clone())
        .collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 20, "the 10 new rows sent");
    assert_eq!(sink.received().len(), 20, "nobody twice");
}

/// A bounce that returns its original with attachments is large: serve's own inbox takes
/// 25 MiB, and so must an import through serve's control socket. Before, a 13 MB message
/// broke the socket's request limit and the whole import ended on "Broken pipe", the
/// messages after it never imported and no summary printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_imports_through_a_running_serve_and_the_rest_follow() {
    let setup = inbox_setup(free_port());
    let (child, _) = spawn(&setup);
    let dir = tempfile::tempdir().unwrap();
    let head = "To: postmaster@bounces.acme.example\r\nSubject: big\r\n\r\n";
    let body = format!("{}\r\n", "A".repeat(76)).repeat(13 << 20 >> 7 << 1);
    std::fs::write(dir.path().join("a.eml"), format!("{head}{body}")).unwrap();
    std::fs::write(
        dir.path().join("b.eml"),
        "To: postmaster@bounces.acme.example\r\nSubject: small\r\n\r\nhi\r\n",
    )
    .unwrap();
    let o = import(&setup, dir.path());
    assert!(o.contains("2 messages: 2 new"), "{o}");
    assert_eq!(term(child).code(), Some(0));
}

/// serve started while an import without it runs (a cron job importing a mailbox): the
/// import held the inbox store, so serve refused to start at all ("could not acquire
/// lock on .blast/inbox/db"). Now the import lets go of the store every few seconds,
/// serve waits for it and takes it, and the rest of the import goes through serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_while_an_import_runs_and_the_import_finishes_through_it() {
    let setup = inbox_setup(free_port());
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("many.mbox");
    let n = 3000;
    let text: String = (0..n)
        .map(|i| {
            format!(
                "From x@y Mon Nov 30 10:00:00 2026\nTo: postmaster@bounces.acme.example\nSubject: m{i}\n\nhi {i}\n\n"
            )
        })
        .collect();
    std::fs::write(&mbox, text).unwrap();
    let importer = std::process::Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["bounces", "import", mbox.to_str().unwrap(), "--config"])
        .arg(setup.config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let (child, _) = tokio::task::block_in_place(|| spawn(&setup));
    let o = tokio::task::block_in_place(|| importer.wait_with_output().unwrap());
    let text = out_text(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("{n} messages: {n} new")), "{text}");
    let o = import(&setup, &mbox);
    assert!(o.contains(&format!("{n} messages: 0 new")), "{o}");
    assert_eq!(term(child).code(), Some(0));
}
