//! Errors a person can act on (issue 15, item 4), through the real `blast` binary: a config
//! error names `file:line: key:` and shows the offending line with a caret under the value;
//! every `--help` ends with an example.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_blast");

#[test]
fn a_config_error_shows_the_line_and_a_caret_under_the_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("t.txt.hbs"), "Hi\n").unwrap();
    std::fs::write(dir.path().join("l.csv"), "email\na@example.com\n").unwrap();
    let toml = dir.path().join("c.toml");
    std::fs::write(
        &toml,
        "[campaign]\nid = \"c\"\nfrom = \"news@acme.example\"\nsubject = \"s\"\n\
         text = \"t.txt.hbs\"\nlists = [\"l.csv\"]\n\n[lane]\ntransport = \"outbox:out\"\n\
         rate =   \"fast\"\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["check", toml.to_str().unwrap()])
        .output()
        .expect("run blast check");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let want = format!("{}:10: lane.rate: ", toml.display());
    assert!(err.contains(&want), "{err}");
    // The line as written, and a caret under exactly the value `"fast"` (column 10).
    assert!(
        err.contains("\n 10 | rate =   \"fast\"\n    |          ^^^^^^\n"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "nothing is sent");
}

#[test]
fn every_help_ends_with_an_example() {
    for args in [
        &["--help"][..],
        &["send", "--help"],
        &["preview", "--help"],
        &["status", "--help"],
        &["queue", "list", "--help"],
        &["suppress", "add", "--help"],
    ] {
        let o = Command::new(BIN).args(args).output().expect("run blast");
        assert!(o.status.success(), "{args:?}");
        let out = String::from_utf8_lossy(&o.stdout);
        let tail = out.trim_end().rsplit("Example:").next().unwrap_or("");
        assert!(
            out.contains("Example:\n  blast ") && !tail.contains("Options:"),
            "{args:?}: the help does not end with an example:\n{out}"
        );
    }
}

/// `--verbose` (and `BLAST_VERBOSE=1`) prints every SMTP reply read, so a failure can be
/// traced to what the server said; without it, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_prints_the_servers_replies() {
    let f = crate::pipeline::Fixture::new();
    // One address per run: the campaigns share a state dir, so a bounced one is suppressed.
    let bad: Vec<String> = (0..3).map(|i| format!("gone{i}@x.example")).collect();
    let sink = crate::pipeline::start_sink(crate::pipeline::user_unknown(&bad)).await;
    for (i, (args, env)) in [
        (&["--verbose"][..], None),
        (&[][..], Some("1")),
        (&[][..], None),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("v{i}");
        f.write(&format!("{id}.csv"), crate::pipeline::csv_list(&bad[i..=i]));
        let toml = crate::pipeline::campaign_toml(&id, sink.addr, &[&format!("{id}.csv")], "");
        let c = f.write(&format!("{id}.toml"), toml);
        let mut cmd = Command::new(BIN);
        cmd.arg("send")
            .arg("--quiet")
            .args(args)
            .arg(&c)
            .env_remove("RUST_LOG");
        match env {
            Some(v) => cmd.env("BLAST_VERBOSE", v),
            None => cmd.env_remove("BLAST_VERBOSE"),
        };
        let o = tokio::task::block_in_place(|| cmd.output().unwrap());
        let err = String::from_utf8_lossy(&o.stderr);
        let shown = err.contains("blast: smtp <- 550 5.1.1 no such user");
        assert_eq!(shown, i < 2, "{args:?} {env:?}: {err}");
        assert_eq!(err.contains("smtp <- 220 "), i < 2, "{err}");
    }
}
