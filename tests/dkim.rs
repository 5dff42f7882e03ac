//! DKIM, List-Unsubscribe and VERP as receivers see them: messages captured by a real sink
//! are verified by dkimpy (Python, independent of mail-auth) with the public keys `blast dkim
//! keygen` printed. Both lanes: the blast lane signs every campaign message (RSA and
//! Ed25519), the priority lane signs by From domain.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blast::lane::priority::{self, Cmd, PriorityLane, Stats};
use blast::sink::SinkHandle;
use blast::store::queue::{NewMessage, QueueStore};
use blast::token::{Keys, Purpose, TokenSettings};

use crate::pipeline::{addrs, campaign_toml, csv_list, header, send_ok, start_sink, Fixture};

const KEYS: &str = "1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

/// Runs `blast dkim keygen` into `dir`; returns the key file and the record's value (the
/// printed TXT strings joined).
pub fn keygen(dir: &Path, domain: &str, selector: &str, ed25519: bool) -> (PathBuf, String) {
    let out = dir.join(format!("{selector}.pem"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blast"));
    cmd.args([
        "dkim",
        "keygen",
        "--domain",
        domain,
        "--selector",
        selector,
        "-o",
    ])
    .arg(&out);
    if ed25519 {
        cmd.arg("--ed25519");
    }
    let o = cmd.output().expect("run blast dkim keygen");
    assert!(
        o.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = String::from_utf8(o.stdout).unwrap();
    let prefix = format!("{selector}._domainkey.{domain}. IN TXT ( ");
    assert!(line.starts_with(&prefix), "{line}");
    let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
    assert!(
        strings.iter().all(|s| s.len() <= 255),
        "TXT strings of at most 255 bytes"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode");
    (out, strings.concat())
}

/// One message's signatures as dkimpy saw them.
#[derive(Debug)]
pub struct Sig {
    pub a: String,
    pub c: String,
    pub l: Option<String>,
    pub h: Vec<String>,
    pub ok: bool,
}

/// Verifies `messages` with dkimpy; `records` maps `selector._domainkey.domain.` to the TXT
/// value. Fails (never skips) when Python or dkimpy is missing: `.ci/run` installs them.
pub fn dkimpy(dir: &Path, records: &[(String, String)], messages: &[Vec<u8>]) -> Vec<Vec<Sig>> {
    let keys: serde_json::Map<String, serde_json::Value> = records
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let kp = dir.join("dkim-keys.json");
    std::fs::write(&kp, serde_json::to_vec(&keys).unwrap()).unwrap();
    let mut files = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let p = dir.join(format!("captured-{i}.eml"));
        std::fs::write(&p, m).unwrap();
        files.push(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/dkim_verify.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(&kp)
        .args(&files)
        .output()
        .expect("python3 (with dkimpy and pynacl: pip install dkimpy pynacl) must be installed");
    assert!(
        o.status.success(),
        "dkim_verify.py failed (pip install dkimpy pynacl): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["signatures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sig {
                    a: s["a"].as_str().unwrap_or("").into(),
                    c: s["c"].as_str().unwrap_or("").into(),
                    l: s["l"].as_str().map(String::from),
                    h: s["h"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap().to_ascii_lowercase())
                        .collect(),
                    ok: s["ok"].as_bool().unwrap(),
                })
                .collect()
        })
        .collect()
}

fn count(h: &[String], name: &str) -> usize {
    h.iter().filter(|x| *x == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_messages_verify_with_dkimpy_and_carry_one_click_unsubscribe() {
    let f = Fixture::new();
    let (rsa, rsa_txt) = keygen(f.dir.path(), "acme.example", "s2026", false);
    let (ed, ed_txt) = keygen(f.dir.path(), "acme.example", "ed2026", true);
    // Folded, encoded, two parts, a visible unsubscribe link.
    f.write(
        "t.txt.hbs",
        "Hej {{first_name}}, din kode er {{code}}. Æøå.\nUnsubscribe: {{unsubscribe_url}}\n",
    );
    let to = addrs("dk", "example.net", 6);
    f.write("list.csv", csv_list(&to));
    let sink = start_sink(vec![]).await;
    let toml = campaign_toml("dk", sink.addr, &["list.csv"], "")
        .replace(
            "from = \"Acme News <news@acme.example>\"",
            "from = \"Ærlige Nyheder fra Acme — Nyhedsbrev <news@acme.example>\"",
        )
        .replace(
            "subject = \"Hello {{first_name}}\"",
            "subject = \"Sæsonens største udsalg er her, {{first_name}} — op til 70 % på alt i butikken, kun i denne uge\"",
        )
        + &format!(
            "\n[dkim]\ndomain = \"acme.example\"\nselector = \"s2026\"\nkey = {:?}\ned25519_selector = \"ed2026\"\ned25519_key = {:?}\n",
            rsa, ed
        );
    let mut s = f.campaign("dk", &toml);
    let keys = Keys::parse(KEYS).unwrap();
    s.tokens = Some(Arc::new(TokenSettings {
        keys,
        unsubscribe_url: Some("https://news.acme.example/u/".into()),
        bounce_domain: Some("bounces.acme.example".into()),
        click_url: None,
    }));
    let sum = send_ok(&s).await;
    assert_eq!(sum.counts.get(blast::store::record::State::Sent), 6);
    let got = sink.received();
    assert_eq!(got.len(), 6);
    let keys = Keys::parse(KEYS).unwrap();
    let run = blast::token::run_id("dk");
    for r in &got {
        let rcpt = r.rcpt_to[0].to_ascii_lowercase();
        let rid = keys.recipient_id(&rcpt);
        // VERP: bounces+TOKEN@ the bounce domain, a token for bounces only.
        let token = r
            .mail_from
            .strip_prefix("bounces+")
            .and_then(|t| t.strip_suffix("@bounces.acme.example"))
            .unwrap_or_else(|| panic!("VERP return path: {}", r.mail_from));
        let t = keys
            .verify(Purpose::Bounce, token)
            .expect("bounce token verifies");
        assert_eq!((t.rid, t.run), (rid, run));
        assert!(keys.verify(Purpose::Unsubscribe, token).is_err());
        assert!(
            header(&r.data, "Return-Path").is_none(),
            "the sender writes no Return-Path"
        );
        // Message-ID carries the recipient's token.
        let mid = header(&r.data, "Message-ID").unwrap();
        assert_eq!(mid.trim(), format!("<{token}@acme.example>"));
        // List-Unsubscribe: https and mailto, the same unsubscribe token in both.
        let lu = header(&r.data, "List-Unsubscribe").unwrap();
        let lu: String = lu.split_whitespace().collect::<Vec<_>>().join(" ");
        let url_tok = lu
            .split("https://news.acme.example/u/")
            .nth(1)
            .and_then(|x| x.split('>').next())
            .unwrap_or_else(|| panic!("https URL in {lu}"));
        assert_eq!(keys.verify(Purpose::Unsubscribe, url_tok).unwrap().rid, rid);
        assert!(
            lu.contains(&format!("<mailto:unsub+{url_tok}@bounces.acme.example>")),
            "{lu}"
        );
        assert_eq!(
            header(&r.data, "List-Unsubscribe-Post").unwrap().trim(),
            "List-Unsubscribe=One-Click"
        );
        assert_eq!(
            header(&r.data, "List-Id").unwrap().trim(),
            "<dk.acme.example>"
        );
        assert_eq!(
            header(&r.data, "Feedback-ID").unwrap().trim(),
            "dk:list:acme.example"
        );
        // {{unsubscribe_url}} in the body is the same link (QP may fold it).
        let body = String::from_utf8_lossy(&r.data).replace("=\r\n", "");
        assert!(body.contains(url_tok), "body link");
    }
    let records = vec![
        ("s2026._domainkey.acme.example.".to_string(), rsa_txt),
        ("ed2026._domainkey.acme.example.".to_string(), ed_txt),
    ];
    let mut messages: Vec<Vec<u8>> = got.iter().map(|r| r.data.clone()).collect();
    let verdicts = dkimpy(f.dir.path(), &records, &messages);
    for (i, sigs) in verdicts.iter().enumerate() {
        assert_eq!(sigs.len(), 2, "two signatures: {sigs:?}");
        assert_eq!(sigs[0].a, "ed25519-sha256");
        assert_eq!(sigs[1].a, "rsa-sha256");
        for sig in sigs {
            assert!(sig.ok, "message {i}: {} does not verify: {sig:?}", sig.a);
            assert_eq!(sig.c, "relaxed/relaxed");
            assert!(sig.l.is_none(), "never l=");
            for name in [
                "from",
                "to",
                "subject",
                "date",
                "message-id",
                "mime-version",
                "content-type",
                "list-id",
                "feedback-id",
                "reply-to",
            ] {
                assert!(
                    sig.h.contains(&name.to_string()),
                    "{name} signed: {:?}",
                    sig.h
                );
            }
            // Oversigned: once more than present.
            for name in [
                "from",
                "subject",
                "reply-to",
                "list-unsubscribe",
                "list-unsubscribe-post",
            ] {
                assert_eq!(count(&sig.h, name), 2, "{name} oversigned: {:?}", sig.h);
            }
            assert_eq!(
                count(&sig.h, "cc"),
                0,
                "absent, not oversigned headers are not listed"
            );
        }
    }
    // The verifier can fail: a changed subject breaks both signatures, and so does a
    // List-Unsubscribe added by someone else.
    let m = String::from_utf8(messages[0].clone()).unwrap();
    messages[0] = m.replacen("Subject: ", "Subject: FREE ", 1).into_bytes();
    let mut added = b"List-Unsubscribe: <https://evil.example/x>\r\n".to_vec();
    added.extend_from_slice(&messages[1]);
    messages[1] = added;
    let verdicts = dkimpy(f.dir.path(), &records, &messages[..2]);
    for sigs in verdicts {
        assert!(
            sigs.iter().all(|s| !s.ok),
            "tampered message verified: {sigs:?}"
        );
    }
}

const WAIT: Duration = Duration::from_secs(20);

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn transactional(from: &str, to: &str, subject: &str, pre: &str) -> NewMessage {
    NewMessage {
        mail_from: from.into(),
        rcpt_to: vec![to.into()],
        data: format!(
            "{pre}From: Bütik Ødegård <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYour code is 123456.\r\n"
        )
        .into_bytes(),
        user: Some("app".into()),
        smtputf8: false,
        eight_bit: true,
    }
}

async fn accept(lane: &PriorityLane, m: NewMessage) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    lane.tx
        .send(Cmd::Accept { msg: m, reply: tx })
        .await
        .unwrap();
    rx.await.unwrap().expect("accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_lane_signs_by_from_domain() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_txt) = keygen(dir.path(), "acme.example", "tx1", false);
    let sink: SinkHandle = start_sink(vec![]).await;
    let src = format!(
        "[serve]\n[priority]\ntransport = \"smtp://{}\"\nhelo = \"mx.acme.example\"\n[priority.dkim.\"acme.example\"]\nselector = \"tx1\"\nkey = {:?}\n",
        sink.addr, rsa
    );
    let cfg = blast::serve::config::parse(&dir.path().join("blast.toml"), &src).expect("config");
    let signers = Arc::new(blast::sign::Signers::from_settings(&cfg.priority_dkim));
    let qdir = dir.path().join("queue");
    let store = Arc::new(QueueStore::open(&qdir, Duration::from_secs(5)).unwrap());
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = logs.clone();
    let lane = priority::start(
        cfg.priority.clone(),
        store,
        "mx.acme.example".into(),
        Arc::new(move |m| l2.lock().unwrap().push(m)),
        signers,
    )
    .unwrap();
    accept(
        &lane,
        transactional("app@acme.example", "u1@x.example", "reset1", ""),
    )
    .await;
    accept(
        &lane,
        transactional("app@other.example", "u2@x.example", "reset2", ""),
    )
    .await;
    accept(
        &lane,
        transactional("app@other.example", "u3@x.example", "reset3", ""),
    )
    .await;
    let pre = "DKIM-Signature: v=1; a=rsa-sha256; d=acme.example; s=app; h=from; bh=x; b=y\r\n";
    accept(
        &lane,
        transactional("app@acme.example", "u4@x.example", "reset4", pre),
    )
    .await;
    wait_until("4 deliveries", || Stats::get(&lane.stats.delivered) == 4).await;
    lane.shutdown(Duration::from_secs(5)).await;
    let mut got = sink.received();
    got.sort_by_key(|r| r.rcpt_to[0].clone());
    let sigs = |r: &blast::sink::Received| {
        String::from_utf8_lossy(&r.data)
            .matches("DKIM-Signature:")
            .count()
    };
    assert_eq!(sigs(&got[0]), 1, "acme.example signed");
    assert_eq!(sigs(&got[1]), 0, "no key for other.example");
    assert_eq!(sigs(&got[2]), 0);
    assert_eq!(
        sigs(&got[3]),
        1,
        "already signed for acme.example: left as submitted"
    );
    assert!(String::from_utf8_lossy(&got[3].data)
        .starts_with("DKIM-Signature: v=1; a=rsa-sha256; d=acme.example; s=app;"));
    let records = vec![("tx1._domainkey.acme.example.".to_string(), rsa_txt)];
    let v = dkimpy(dir.path(), &records, &[got[0].data.clone()]);
    assert!(v[0][0].ok, "{:?}", v[0]);
    assert!(v[0][0].h.contains(&"from".to_string()));
    let logs = logs.lock().unwrap();
    let warned: Vec<_> = logs
        .iter()
        .filter(|l| l.contains("no DKIM key for From domain other.example"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning per domain: {logs:?}");
}

/// Where the `b=` value ends decides whether mail-auth folds right before the closing `;`,
/// and that position depends only on which headers `h=` names. dkimpy (like any verifier
/// that keeps the whitespace after the value, RFC 6376 §3.5 `[FWS]` outside the tag value)
/// then hashes `b= ;` where the signer hashed `b=;`. Every shape of message must verify: all
/// combinations of the optional signed headers, each signed RSA and Ed25519.
#[test]
fn signatures_verify_whatever_headers_the_message_has() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_txt) = keygen(dir.path(), "acme.example", "s1", false);
    let (ed, ed_txt) = keygen(dir.path(), "acme.example", "e1", true);
    let spec = blast::sign::KeySpec {
        domain: "acme.example".into(),
        selector: "s1".into(),
        key: rsa,
        ed25519: Some(("e1".into(), ed)),
        standby: vec![],
    };
    let signer = blast::sign::Signer::load(&spec).unwrap();
    let optional = [
        "Reply-To: <r@acme.example>",
        "Cc: <cc@x.example>",
        "In-Reply-To: <a@x.example>",
        "References: <a@x.example>",
        "List-Id: <news.acme.example>",
        "List-Unsubscribe: <https://news.acme.example/u/abc>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "Feedback-ID: news:list:acme.example",
    ];
    let mut messages = Vec::new();
    for mask in 0..(1u32 << optional.len()) {
        let mut m = String::from("Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nFrom: <news@acme.example>\r\nTo: <u@x.example>\r\nSubject: hi\r\nMessage-ID: <m@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n");
        for (i, h) in optional.iter().enumerate() {
            if mask >> i & 1 == 1 {
                m.push_str(h);
                m.push_str("\r\n");
            }
        }
        m.push_str("\r\nbody\r\n");
        messages.push(signer.signed(m.into_bytes()).unwrap());
    }
    let records = vec![
        ("s1._domainkey.acme.example.".to_string(), rsa_txt),
        ("e1._domainkey.acme.example.".to_string(), ed_txt),
    ];
    let verdicts = dkimpy(dir.path(), &records, &messages);
    let bad: Vec<String> = verdicts
        .iter()
        .enumerate()
        .flat_map(|(i, sigs)| {
            assert_eq!(sigs.len(), 2);
            sigs.iter()
                .filter(|s| !s.ok)
                .map(move |s| format!("#{i} {}: h={}", s.a, s.h.join(":")))
        })
        .collect();
    assert!(bad.is_empty(), "{} do not verify: {bad:#?}", bad.len());
}
