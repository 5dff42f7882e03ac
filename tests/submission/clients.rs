//! Real clients and well-behaved sessions: lettre and swaks over STARTTLS + AUTH, pipelining,
//! the headers a submission server adds, and `blast user add`.

use super::*;

/// Authenticated submission through lettre (STARTTLS required, self-signed certificate),
/// with PLAIN and LOGIN: queued with the right envelope and data, 250 carrying the queue id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_submits_over_starttls_with_auth() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let fx = start(tls_settings(), Queue::Ok).await;
    for (i, mech) in [Mechanism::Plain, Mechanism::Login].into_iter().enumerate() {
        let tls = TlsParameters::builder("127.0.0.1".into())
            .dangerous_accept_invalid_certs(true)
            .build_rustls()
            .unwrap();
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(fx.h.local_addr.port())
            .tls(Tls::Required(tls))
            .credentials(Credentials::new("ann".into(), "pw-ann".into()))
            .authentication(vec![mech])
            .timeout(Some(READ))
            .build();
        let email = Message::builder()
            .from("Ann <ann@mail.a.test>".parse().unwrap())
            .to("Bob <bob@rcpt.test>".parse().unwrap())
            .subject(format!("receipt {i}"))
            .body(String::from("Thanks!\r\n.leading dot\r\n"))
            .unwrap();
        let resp = tokio::time::timeout(READ, mailer.send(email))
            .await
            .expect("lettre within the timeout")
            .expect("lettre send");
        let text: Vec<&str> = resp.message().collect();
        assert!(
            text.concat().contains(&format!("queued as Q{}", i + 1)),
            "{text:?}"
        );
    }
    let got = fx.got();
    assert_eq!(got.len(), 2);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.msg.mail_from, "ann@mail.a.test");
        assert_eq!(m.msg.rcpt_to, vec!["bob@rcpt.test".to_string()]);
        assert_eq!(m.msg.user.as_deref(), Some("ann"));
        assert!(m.client.ip().is_loopback());
        let data = String::from_utf8(m.msg.data.clone()).unwrap();
        assert!(
            data.contains(&format!("Subject: receipt {i}\r\n")),
            "{data}"
        );
        assert!(data.contains("\r\n.leading dot\r\n"), "{data}");
        assert!(data.ends_with("\r\n") && !data.ends_with(".\r\n"), "{data}");
        assert!(data.contains("Date: ") && data.to_lowercase().contains("message-id: "));
    }
    assert_eq!(fx.stat(|s| &s.accepted), 2);
    fx.h.shutdown().await;
}

/// swaks as a second real client (AUTH LOGIN over STARTTLS). Skipped with a note when swaks
/// is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits() {
    if std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: swaks not installed; skipping (apt-get install swaks)");
        return;
    }
    let fx = start(tls_settings(), Queue::Ok).await;
    let server = fx.h.local_addr.to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("swaks")
            .args(["--server", &server, "--tls", "--auth", "LOGIN"])
            .args(["--auth-user", "bob", "--auth-password", "pw-bob"])
            .args(["--from", "bob@b.test", "--to", "x@rcpt.test"])
            .args(["--h-Subject", "via swaks", "--timeout", "20"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("swaks within the timeout")
    .expect("run swaks");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("queued as Q1"), "{log}");
    let got = fx.got();
    assert_eq!(got[0].msg.user.as_deref(), Some("bob"));
    assert!(String::from_utf8_lossy(&got[0].msg.data).contains("Subject: via swaks"));
    fx.h.shutdown().await;
}

/// Several transactions pipelined in one write are answered in order, each queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_transactions_are_answered_in_order() {
    let fx = start(settings(), Queue::Ok).await;
    let mut c = fx.connect().await;
    let mut all = format!(
        "EHLO client.test\r\nAUTH PLAIN {}\r\n",
        plain_token("ann", "pw-ann")
    );
    for i in 0..3 {
        all += &format!(
            "MAIL FROM:<ann@a.test>\r\nRCPT TO:<r{i}@rcpt.test>\r\nDATA\r\n{}RSET\r\n",
            message("ann@a.test", &format!("p{i}"))
        );
    }
    all += "QUIT\r\n";
    c.send(&all).await;
    assert!(c.reply().await.starts_with("250"));
    assert!(c.reply().await.starts_with("235"));
    for i in 0..3 {
        for want in ["250 2.1.0", "250 2.1.5", "354"] {
            assert!(c.reply().await.starts_with(want));
        }
        let r = c.reply().await;
        assert_eq!(r, format!("250 2.0.0 Ok: queued as Q{}", i + 1));
        assert!(c.reply().await.starts_with("250 2.0.0"));
    }
    assert!(c.reply().await.starts_with("221"));
    let rcpts: Vec<String> = fx.got().iter().map(|m| m.msg.rcpt_to[0].clone()).collect();
    assert_eq!(rcpts, ["r0@rcpt.test", "r1@rcpt.test", "r2@rcpt.test"]);
    fx.h.shutdown().await;
}

/// Date: and Message-ID: are added at the top when missing; a message that has them is
/// passed on byte for byte (no header is rewritten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_and_message_id_added_only_when_missing() {
    let fx = start(settings(), Queue::Ok).await;
    let mut c = fx.login().await;
    let bare = "From: ann@a.test\r\nSubject: no date\r\nX-Odd:  kept  as is \r\n\r\nhi\r\n";
    let full = message("ann@a.test", "full");
    for body in [bare.to_string() + ".\r\n", full.clone()] {
        assert!(transaction(&mut c, "ann@a.test", &body)
            .await
            .starts_with("250"));
    }
    let got = fx.got();
    let first = String::from_utf8(got[0].msg.data.clone()).unwrap();
    let mut lines = first.lines();
    assert!(lines.next().unwrap().starts_with("Date: "), "{first}");
    let mid = lines.next().unwrap();
    assert!(
        mid.starts_with("Message-ID: <") && mid.ends_with(&format!("@{HOST}>")),
        "{first}"
    );
    assert!(first.ends_with(bare), "{first}");
    let unstuffed = full.replace("\r\n..dot", "\r\n.dot");
    assert_eq!(
        got[1].msg.data,
        unstuffed.strip_suffix(".\r\n").unwrap().as_bytes()
    );
    fx.h.shutdown().await;
}

/// `blast user add` takes the password from --password-file, $BLAST_PASSWORD or a stdin
/// line — never from arguments — writes the file 0600 and replaces a user in place. (Run
/// through the library entry `main` calls, with its environment and stdin passed in.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_command() {
    use blast::cli::{Cli, Command};
    use clap::Parser;

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "from-file-secret\n").unwrap();
    let run = |name: &str, extra: &[&str], env: Option<&str>, stdin: &str| {
        let args = [
            "blast",
            "user",
            "add",
            name,
            "--users",
            users.to_str().unwrap(),
        ];
        let cli = Cli::try_parse_from(args.iter().chain(extra)).map_err(|e| e.to_string())?;
        let Command::User { action } = cli.command else {
            panic!("not a user command")
        };
        let env = env.map(String::from);
        blast::commands::user::run_with(action, env, &mut stdin.as_bytes())
            .map_err(|e| e.to_string())
    };
    let pf = [
        "--domain",
        "a.test",
        "--password-file",
        pw_file.to_str().unwrap(),
    ];
    run("ann", &pf, None, "").unwrap();
    run("bob", &["--domain", "b.test"], Some("env-secret"), "").unwrap();
    let cat = ["--domain", "c.test", "--domain", ".c.test"];
    run("cat", &cat, None, "stdin-secret\r\n").unwrap();
    run("ann", &["--domain", "a2.test"], None, "new-ann-secret\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&users).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let u = Users::load(&users).unwrap();
    assert_eq!(u.len(), 3);
    assert!(u.verify("ann", "new-ann-secret").await);
    assert!(!u.verify("ann", "from-file-secret").await);
    assert!(u.verify("bob", "env-secret").await);
    assert!(u.verify("cat", "stdin-secret").await);
    assert!(u.may_send_as("ann", "a2.test") && !u.may_send_as("ann", "a.test"));
    assert!(u.may_send_as("cat", "x.c.test"));
    // No password, no domain, or a password on the command line: refused, file unchanged.
    let before = std::fs::read(&users).unwrap();
    let e = run("dan", &["--domain", "d.test"], None, "").unwrap_err();
    assert!(e.contains("no password"), "{e}");
    assert!(run("dan", &[], Some("pw"), "").is_err());
    assert!(run("dan", &["--domain", "d.test", "--password", "pw"], None, "").is_err());
    assert_eq!(std::fs::read(&users).unwrap(), before);
    let text = String::from_utf8(before).unwrap();
    assert!(!text.contains("secret"), "{text}");
}
