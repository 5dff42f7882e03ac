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
