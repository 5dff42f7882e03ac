//! `blast preview` and `blast send --proof` (issue 15, item 2), through the real binary:
//!
//! - `--row N` / `--to ADDRESS`: that row's message on stdout (headers, both parts), the
//!   columns used on stderr; `--html FILE` writes the rendered HTML part; `--open` starts
//!   `$BROWSER` on it; an empty referenced column is warned about
//! - with `[dkim]`, the previewed message carries the DKIM-Signature
//! - `--proof ADDRESS`: one message arrives at a real sink on 127.0.0.1:0, marked as a proof;
//!   the campaign's store and the suppression list are the same afterwards

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::pipeline::{header, start_sink};
use blast::sink::{Action, Rule};

const BIN: &str = env!("CARGO_BIN_EXE_blast");

const TEXT: &str = "Hello {{first_name}}, your code is {{code}}.\n";
const HTML: &str = "<p>Hello <b>{{first_name}}</b>, code {{code}}.</p>\n";

/// A campaign `c.toml` in `dir` over three rows (the third has an empty `code`).
fn campaign(dir: &Path, transport: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("t.txt.hbs"), TEXT).unwrap();
    std::fs::write(dir.join("t.html.hbs"), HTML).unwrap();
    std::fs::write(
        dir.join("l.csv"),
        "email,first_name,code\nann@a.example,Ann,A-1\nbob@b.example,Bob,B-2\ncy@c.example,Cy,\n",
    )
    .unwrap();
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[campaign]\nid = \"pv\"\nfrom = \"Acme <news@acme.example>\"\n\
             subject = \"Hi {{{{first_name}}}}\"\ntext = \"t.txt.hbs\"\nhtml = \"t.html.hbs\"\n\
             lists = [\"l.csv\"]\nstate_dir = \"state\"\n{extra}\n[lane]\ntransport = \"{transport}\"\n\
             helo = \"blast.test\"\n"
        ),
    )
    .unwrap();
    p
}

fn blast(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run blast")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn preview_a_row_by_number_or_address_with_its_html_part() {
    let d = tempfile::tempdir().unwrap();
    let toml = campaign(d.path(), "outbox:out", "");
    let t = toml.to_str().unwrap();
    let html = d.path().join("bob.html");
    let o = blast(
        &["preview", t, "--row", "2", "--html", html.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let msg = &o.stdout;
    assert_eq!(
        header(msg, "To").as_deref(),
        Some("bob@b.example"),
        "{}",
        show(&o)
    );
    assert_eq!(header(msg, "Subject").as_deref(), Some("Hi Bob"));
    let text = String::from_utf8_lossy(msg);
    assert!(
        text.contains("multipart/alternative") && text.contains("text/html"),
        "{text}"
    );
    assert!(text.contains("your code is B-2"), "{text}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("(row 2): bob@b.example"), "{err}");
    assert!(
        err.contains(r#"columns used: code="B-2", first_name="Bob""#),
        "{err}"
    );
    assert!(!err.contains("warning: column"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&html).unwrap(),
        "<p>Hello <b>Bob</b>, code B-2.</p>\n"
    );

    let o = blast(&["preview", t, "--to", "ANN@a.example"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(header(&o.stdout, "Subject").as_deref(), Some("Hi Ann"));
    let o = blast(&["preview", t, "--to", "nobody@x.example"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));

    // --open: the browser is started on the HTML part (a script standing in for one).
    let opened = d.path().join("opened");
    let browser = d.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" > {}\n", opened.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = blast(
        &["preview", t, "--open"],
        &[("BROWSER", browser.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !opened.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let path = std::fs::read_to_string(&opened).expect("the browser was started");
    let shown = std::fs::read_to_string(path.trim()).unwrap();
    assert!(shown.contains("<b>Ann</b>"), "{shown}");
    // A preview changes nothing: no state dir, no outbox.
    assert!(!d.path().join("state").exists() && !d.path().join("out").exists());
}

#[test]
fn preview_warns_about_an_empty_column() {
    let d = tempfile::tempdir().unwrap();
    let toml = campaign(d.path(), "outbox:out", "");
    let o = blast(&["preview", toml.to_str().unwrap(), "--row", "3"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(r#"warning: column "code" is empty for this row"#)
            && err.contains("missing_field"),
        "{}",
        show(&o)
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "the row cannot be rendered: {}",
        show(&o)
    );
}

#[test]
fn preview_is_signed_when_dkim_is_configured() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("s1.pem");
    let o = blast(
        &[
            "dkim",
            "keygen",
            "--domain",
            "acme.example",
            "--selector",
            "s1",
            "-o",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));
    let toml = campaign(
        d.path(),
        "outbox:out",
        "\n[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = \"s1.pem\"\n",
    );
    let o = blast(&["preview", toml.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let sig = header(&o.stdout, "DKIM-Signature").expect("a DKIM-Signature header");
    assert!(
        sig.contains("d=acme.example") && sig.contains("s=s1"),
        "{sig}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_arrives_marked_and_changes_no_state() {
    let sink = start_sink(vec![Rule::new(
        "cy@c.example",
        Action::RcptReply(550, "5.1.1 no such user".into()),
    )])
    .await;
    let d = tempfile::tempdir().unwrap();
    let toml = campaign(d.path(), &format!("smtp://{}", sink.addr), "");
    let t = toml.to_str().unwrap().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            blast(&a, &[])
        })
    };
    // A real send first, so there is a store and a suppression list to keep unchanged.
    std::fs::write(
        d.path().join("l.csv"),
        "email,first_name,code\nann@a.example,Ann,A-1\nbob@b.example,Bob,B-2\ncy@c.example,Cy,C-3\n",
    )
    .unwrap();
    let o = run(vec!["send".into(), t.clone(), "--quiet".into()])
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(sink.count(), 2);
    let state = |t: String| async move {
        let s = run(vec!["status".into(), t.clone(), "--json".into()])
            .await
            .unwrap();
        let l = run(vec![
            "suppress".into(),
            "--campaign".into(),
            t,
            "list".into(),
        ])
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&s.stdout).expect("status --json");
        (v, String::from_utf8_lossy(&l.stdout).into_owned())
    };
    let before = state(t.clone()).await;
    assert!(before.1.contains("cy@c.example"), "{}", before.1);

    let o = run(vec![
        "send".into(),
        t.clone(),
        "--proof".into(),
        "colleague@acme.example".into(),
        "--row".into(),
        "2".into(),
    ])
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("proof of row 2 sent to colleague@acme.example"),
        "{}",
        show(&o)
    );
    let got = sink.received();
    assert_eq!(got.len(), 3);
    let p = got.last().unwrap();
    assert_eq!(p.rcpt_to, vec!["colleague@acme.example".to_string()]);
    assert_eq!(
        header(&p.data, "Subject").as_deref(),
        Some("[PROOF] Hi Bob")
    );
    assert!(header(&p.data, "X-Blast-Proof").is_some());
    assert_eq!(
        header(&p.data, "To").as_deref(),
        Some("colleague@acme.example")
    );
    assert!(String::from_utf8_lossy(&p.data).contains("your code is B-2"));

    let after = state(t).await;
    assert_eq!(before.0, after.0, "the campaign store is unchanged");
    assert_eq!(before.1, after.1, "the suppression list is unchanged");
}
