//! `blast check` compares the campaign's lane with `blast serve`'s priority lane (issue 5):
//! the real binary on a temp dir holding a campaign, a list, `blast.toml` and a users file.
//!
//! - shared From domain and source IP (`--config`): both warned about, exit still 0
//! - a news. subdomain, separate relays, IPs and HELO names (`./blast.toml` found by
//!   itself): nothing shared, no warning
//! - no `--config` and no `./blast.toml`: no comparison, no warning

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_blast");

/// Writes `c.toml` (sending as `from`, with `lane` as its `[lane]`) and its list into `dir`.
fn campaign(dir: &Path, from: &str, lane: &str) {
    std::fs::write(dir.join("t.txt.hbs"), "Hello {{first_name}}.\n").unwrap();
    std::fs::write(dir.join("c.csv"), "email,first_name\nann@example.net,Ann\n").unwrap();
    let toml = format!(
        "[campaign]\nid = \"c\"\nfrom = \"Acme News <{from}>\"\nsubject = \"Hi\"\n\
         text = \"t.txt.hbs\"\nlists = [\"c.csv\"]\n\n[lane]\n{lane}\n"
    );
    std::fs::write(dir.join("c.toml"), toml).unwrap();
}

/// Writes `blast.toml` (with `lane` as `[priority]`) and a users file whose one user, `app`,
/// may send as `acme.example`.
fn serve_config(dir: &Path, lane: &str) {
    let toml = format!("[serve]\nusers = \"users.txt\"\n\n[priority]\n{lane}\n");
    std::fs::write(dir.join("blast.toml"), toml).unwrap();
    blast::serve::users::add_user(
        &dir.join("users.txt"),
        "app",
        "secret",
        &["acme.example".to_string()],
    )
    .unwrap();
}

/// Runs `blast ARGS` in `dir`; expects exit 0 (lane warnings do not fail a check) and
/// returns stderr.
fn check(dir: &Path, args: &[&str]) -> String {
    let o: Output = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run blast");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "blast {args:?}:\n{err}");
    assert!(err.contains("config, templates and lists OK"), "{err}");
    err
}

#[test]
fn shared_from_domain_and_ip_warn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    campaign(
        d,
        "news@Acme.example",
        "transport = \"smtp://relay-a.test:587\"\nsource_ip = \"192.0.2.7\"\nhelo = \"news.acme.example\"",
    );
    let conf = d.join("conf");
    std::fs::create_dir(&conf).unwrap();
    serve_config(
        &conf,
        "transport = \"smtp://relay-b.test:587\"\nsource_ip = \"192.0.2.7\"\nhelo = \"mail.acme.example\"",
    );
    let err = check(d, &["check", "c.toml", "--config", "conf/blast.toml"]);
    assert!(
        err.contains("conf/blast.toml ([priority], users file ") && err.contains("): 2 warnings\n"),
        "{err}"
    );
    assert!(
        err.contains("warning: transactional and bulk mail share the From domain acme.example (submission users may send as it: app (acme.example))"),
        "{err}"
    );
    assert!(
        err.contains("mailbox providers score the From/DKIM domain, not only the IP"),
        "{err}"
    );
    assert!(
        err.contains("fix: send newsletters from a subdomain such as news.acme.example"),
        "{err}"
    );
    assert!(
        err.contains("warning: both lanes connect from source_ip 192.0.2.7"),
        "{err}"
    );
    assert!(!err.contains("relay-a.test"), "different relays: {err}");
    assert!(!err.contains("hint:"), "different HELO names: {err}");
}

#[test]
fn subdomain_and_separate_ips_do_not_warn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    campaign(
        d,
        "hello@news.acme.example",
        "transport = \"smtp://relay-a.test:587\"\nsource_ip = \"192.0.2.7\"\nhelo = \"news.acme.example\"",
    );
    serve_config(
        d,
        "transport = \"smtp://relay-b.test:587\"\nsource_ip = \"192.0.2.8\"\nhelo = \"mail.acme.example\"",
    );
    // No --config: ./blast.toml is found by itself.
    let err = check(d, &["check", "c.toml"]);
    assert!(
        err.contains("lanes: compared with blast.toml ([priority], users file "),
        "{err}"
    );
    assert!(err.contains("): nothing shared\n"), "{err}");
    let lanes = lane_lines(&err);
    assert!(
        !lanes.contains("warning") && !lanes.contains("hint:"),
        "{err}"
    );
}

#[test]
fn without_a_serve_config_nothing_is_compared() {
    let dir = tempfile::tempdir().unwrap();
    campaign(
        dir.path(),
        "news@acme.example",
        "transport = \"smtp://relay-a.test:587\"",
    );
    let err = check(dir.path(), &["check", "c.toml"]);
    assert!(err.contains("lanes: not compared"), "{err}");
    assert!(!lane_lines(&err).contains("warning"), "{err}");
}

/// `check`'s output without the sender-rule lines (DKIM, List-Unsubscribe), which have their
/// own tests: what the lane comparison said.
fn lane_lines(err: &str) -> String {
    err.lines()
        .filter(|l| !l.starts_with("  sender rules: "))
        .collect::<Vec<_>>()
        .join("\n")
}
