//! The sender rules `blast check` and `blast send` share (RFC 8058, DMARC alignment): the real
//! binary on a temp dir with a campaign, a `blast.toml` with token keys, and DKIM keys from
//! `blast dkim keygen`.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::dkim::keygen;

const BIN: &str = env!("CARGO_BIN_EXE_blast");
const KEY: &str = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

/// A campaign sending as news@acme.example into an outbox, with `dkim` appended and a text
/// template `text`; a `blast.toml` whose token settings are `serve_extra`.
fn setup(dir: &Path, text: &str, dkim: &str, serve_extra: &str) {
    std::fs::write(dir.join("t.txt.hbs"), text).unwrap();
    std::fs::write(dir.join("c.csv"), "email,first_name\nann@example.net,Ann\n").unwrap();
    std::fs::write(
        dir.join("c.toml"),
        format!(
            "[campaign]\nid = \"c\"\nfrom = \"Acme News <news@acme.example>\"\nsubject = \"Hi\"\n\
             text = \"t.txt.hbs\"\nlists = [\"c.csv\"]\n\n[lane]\ntransport = \"outbox:out\"\n{dkim}"
        ),
    )
    .unwrap();
    blast::token::write_private(&dir.join("keys.txt"), KEY).ok();
    std::fs::write(
        dir.join("blast.toml"),
        format!("[serve]\nsecret_file = \"keys.txt\"\n{serve_extra}\n[priority]\ntransport = \"outbox:pq\"\n"),
    )
    .unwrap();
}

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run blast");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const TOKENS: &str = "[unsubscribe]\nurl = \"https://news.acme.example/u/\"\n[bounces]\ndomain = \"bounces.acme.example\"\n";

#[test]
fn one_click_without_dkim_fails_check_and_send() {
    let d = tempfile::tempdir().unwrap();
    setup(
        d.path(),
        "Hi {{first_name}}. Unsubscribe: {{unsubscribe_url}}\n",
        "",
        TOKENS,
    );
    let (code, err) = run(d.path(), &["check", "c.toml", "--config", "blast.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sender rules: error:")
            && err.contains("List-Unsubscribe-Post would be sent without a DKIM signature"),
        "{err}"
    );
    let (code, err) = run(
        d.path(),
        &["send", "c.toml", "--config", "blast.toml", "--quiet"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        !d.path().join("out").exists()
            || std::fs::read_dir(d.path().join("out"))
                .unwrap()
                .next()
                .is_none(),
        "nothing sent"
    );
}

#[test]
fn misaligned_dkim_domain_fails_and_aligned_passes() {
    let d = tempfile::tempdir().unwrap();
    let (key, _) = keygen(d.path(), "other.example", "s1", false);
    let text = "Hi {{first_name}}. Unsubscribe: {{unsubscribe_url}}\n";
    setup(
        d.path(),
        text,
        &format!("[dkim]\ndomain = \"other.example\"\nselector = \"s1\"\nkey = {key:?}\n"),
        TOKENS,
    );
    let (code, err) = run(d.path(), &["check", "c.toml", "--config", "blast.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("dkim.domain other.example is not aligned with the From domain acme.example"),
        "{err}"
    );
    // A parent domain of the From address is aligned; with tokens and DKIM, no sender-rule
    // error or warning, and the send goes out.
    setup(
        d.path(),
        text,
        &format!("[dkim]\ndomain = \"acme.example\"\nselector = \"s1\"\nkey = {key:?}\n"),
        TOKENS,
    );
    let (code, err) = run(d.path(), &["check", "c.toml", "--config", "blast.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("sender rules:"), "{err}");
    let (code, err) = run(
        d.path(),
        &["send", "c.toml", "--config", "blast.toml", "--quiet"],
    );
    assert_eq!(code, 0, "{err}");
    let sent: Vec<_> = std::fs::read_dir(d.path().join("out")).unwrap().collect();
    assert_eq!(sent.len(), 1);
}

#[test]
fn warnings_for_what_is_missing() {
    let d = tempfile::tempdir().unwrap();
    // No DKIM, no tokens (no --config), a body without a way to unsubscribe.
    setup(d.path(), "Hi {{first_name}}.\n", "", "");
    std::fs::remove_file(d.path().join("blast.toml")).unwrap();
    let (code, err) = run(d.path(), &["check", "c.toml"]);
    assert_eq!(code, 0, "warnings do not fail a check: {err}");
    for w in [
        "messages go out unsigned",
        "without List-Unsubscribe (no tokens)",
        "has no visible unsubscribe link",
    ] {
        assert!(err.contains(w), "{w}: {err}");
    }
    // {{unsubscribe_url}} without tokens cannot render: refused before anything is read.
    setup(d.path(), "Hi. {{unsubscribe_url}}\n", "", "");
    std::fs::remove_file(d.path().join("blast.toml")).unwrap();
    let (code, err) = run(d.path(), &["send", "c.toml", "--quiet"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("templates use {{unsubscribe_url}}"), "{err}");
}

#[test]
fn a_plain_http_unsubscribe_url_is_refused() {
    let d = tempfile::tempdir().unwrap();
    setup(
        d.path(),
        "Hi\n",
        "",
        "[unsubscribe]\nurl = \"http://news.acme.example/u/\"\n",
    );
    let (code, err) = run(d.path(), &["check", "c.toml", "--config", "blast.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unsubscribe.url") && err.contains("https"),
        "{err}"
    );
}
