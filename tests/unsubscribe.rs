//! Issue 12 (serve side): the one-click unsubscribe endpoint of a real `blast serve` process,
//! with a real 0600 key file, spoken to over raw HTTP/1.1 on 127.0.0.1. POSTs (multipart,
//! urlencoded, empty) suppress the token's recipient id; GETs, forged, altered and
//! bounce-purpose tokens change nothing; a token under a retired key still works; the next
//! `blast send --config` skips the addresses and the list then shows them. An unsubscribe
//! while a send holds its campaign store still reaches the next campaign.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use blast::token::{rid_key, run_id, Keys, Purpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::serve::{free_port, term, wait_until, Setup, WAIT};

const SECRET_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const SECRET_B: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The key file serve runs with: key 1 retired (mail sent before the rotation), key 2 active.
fn key_file() -> String {
    format!("1 {SECRET_A} retired\n2 {SECRET_B}\n")
}

/// The keys before the rotation: key 1 active.
fn old_keys() -> Keys {
    Keys::parse(&format!("1 {SECRET_A}\n")).unwrap()
}

pub(crate) fn keys() -> Keys {
    Keys::parse(&key_file()).unwrap()
}

/// A serve set-up with `[serve] http` on port 0, the key file and `[unsubscribe] url`.
pub(crate) fn setup(relay: SocketAddr) -> Setup {
    let setup = Setup::new(relay);
    let config = setup.config();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[serve]\n",
        "[serve]\nhttp = \"127.0.0.1:0\"\nsecret_file = \"blast.secret\"\n",
    ) + "\n[unsubscribe]\nurl = \"https://news.acme.example/u\"\n\n[bounces]\ndomain = \"bounces.acme.example\"\n";
    std::fs::write(&config, text).unwrap();
    blast::token::write_private(&setup.dir.path().join("blast.secret"), &key_file()).unwrap();
    setup
}

/// Starts `blast serve`; returns the endpoint's address from its first line.
pub(crate) fn spawn(setup: &Setup) -> (Child, SocketAddr) {
    let (child, line) = setup.spawn_first_line();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no endpoint address in {line:?}"));
    assert!(line.contains(&format!("http://{addr}/u/ ")), "{line}");
    (child, addr)
}

/// One HTTP/1.1 request (`Connection: close`); returns the status and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: news.acme.example\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(c) = content_type {
        req.push_str(&format!("Content-Type: {c}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (code, body.unwrap_or_default())
}

const MULTIPART: &str = "multipart/form-data; boundary=----b1ast";
const MULTIPART_BODY: &str = "------b1ast\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n------b1ast--\r\n";
const FORM: &str = "application/x-www-form-urlencoded";

pub(crate) fn token(keys: &Keys, purpose: Purpose, addr: &str, run: &str) -> String {
    keys.issue(purpose, keys.recipient_id(addr), run_id(run))
}

/// `blast suppress list --config`: the command's output and its CSV rows.
pub(crate) fn suppress_rows(setup: &Setup) -> (std::process::Output, Vec<csv::StringRecord>) {
    let out = tokio::task::block_in_place(|| setup.blast(&["suppress", "list"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|rec| rec.unwrap())
        .collect();
    (out, rows)
}

/// Rows of [`suppress_rows`] as key → reason, a recipient-id key without its note.
pub(crate) fn reasons(rows: &[csv::StringRecord]) -> std::collections::BTreeMap<String, String> {
    rows.iter()
        .map(|rec| {
            let key = rec[0].split_whitespace().next().unwrap_or("").to_string();
            (key, rec[1].to_string())
        })
        .collect()
}

/// `blast suppress list --config`: key → source.
pub(crate) fn listed(setup: &Setup) -> std::collections::BTreeMap<String, String> {
    let (out, rows) = suppress_rows(setup);
    assert!(out.status.success(), "{out:?}");
    rows.iter()
        .map(|rec| (rec[0].to_string(), rec[3].to_string()))
        .collect()
}

/// A campaign file `<id>.toml` in `f` sending `list` to `relay`, DKIM-signed (a one-click
/// header must be covered by DKIM, RFC 8058 §4: `send` refuses otherwise).
pub(crate) fn signed_campaign(
    f: &crate::pipeline::Fixture,
    id: &str,
    relay: SocketAddr,
    list: &[String],
    lane_extra: &str,
) -> PathBuf {
    f.write(&format!("{id}.csv"), crate::pipeline::csv_list(list));
    let (key, _) = crate::dkim::keygen(f.dir.path(), "acme.example", id, false);
    let toml = crate::pipeline::campaign_toml(id, relay, &[&format!("{id}.csv")], lane_extra)
        + &format!("\n[dkim]\ndomain = \"acme.example\"\nselector = \"{id}\"\nkey = {key:?}\n");
    f.write(&format!("{id}.toml"), toml)
}

/// The one-click link (its path: `/u/TOKEN`) in the `List-Unsubscribe` header of each
/// message the sink received, by recipient.
fn one_click_paths(sink: &blast::sink::SinkHandle) -> std::collections::HashMap<String, String> {
    sink.received()
        .iter()
        .map(|r| {
            let h = crate::pipeline::header(&r.data, "List-Unsubscribe")
                .unwrap_or_else(|| panic!("no List-Unsubscribe to {:?}", r.rcpt_to));
            let path = h
                .split("<https://news.acme.example")
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or_else(|| panic!("no one-click link in {h:?}"));
            (r.rcpt_to[0].to_ascii_lowercase(), path.to_string())
        })
        .collect()
}

pub(crate) fn send_process(setup: &Setup, campaign: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blast"));
    c.args(["send", "--quiet", "--config"])
        .arg(setup.config())
        .arg(campaign);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_post_suppresses_and_the_next_send_skips_the_address() {
    let setup = setup(free_port());
    let (child, web) = spawn(&setup);
    let k = keys();
    // The links come from real mail: campaign "spring" sent with the server config.
    let gone = [
        "multi@x.example",
        "form@x.example",
        "empty@x.example",
        "retired@x.example",
    ];
    let mut all: Vec<String> = gone.iter().map(|a| a.to_string()).collect();
    all.extend(["get@x.example".to_string(), "keep@x.example".to_string()]);
    let first = crate::pipeline::start_sink(Vec::new()).await;
    let f = crate::pipeline::Fixture::new();
    let spring = signed_campaign(&f, "spring", first.addr, &all, "");
    let out = tokio::task::block_in_place(|| send_process(&setup, &spring).output().unwrap());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let links = one_click_paths(&first);
    assert_eq!(links.len(), all.len());
    for (a, path) in &links {
        let want = format!("/u/{}", token(&k, Purpose::Unsubscribe, a, "spring"));
        assert_eq!(
            *path, want,
            "{a}: the token names the recipient and the run"
        );
    }
    let u = |addr: &str| {
        links
            .get(addr)
            .cloned()
            .unwrap_or_else(|| format!("/u/{}", token(&k, Purpose::Unsubscribe, addr, "spring")))
    };

    // GET: the page with its one button, nothing changes.
    let (code, page) = http(web, "GET", &u("get@x.example"), None, b"").await;
    assert_eq!(code, 200, "{page}");
    let t = token(&k, Purpose::Unsubscribe, "get@x.example", "spring");
    assert!(
        page.contains(&format!("<form method=\"post\" action=\"{t}\">"))
            && page.contains("name=\"List-Unsubscribe\" value=\"One-Click\""),
        "{page}"
    );
    // Forged, altered, another purpose, a body that is not a one-click: refused.
    let forged = format!("/u/{}", "a".repeat(blast::token::TOKEN_LEN));
    let mut altered = u("altered@x.example").into_bytes();
    let last = altered.len() - 2;
    altered[last] = if altered[last] == b'a' { b'b' } else { b'a' };
    let altered = String::from_utf8(altered).unwrap();
    let bounce = format!(
        "/u/{}",
        token(&k, Purpose::Bounce, "bounce@x.example", "spring")
    );
    for (path, body) in [
        (forged.as_str(), ""),
        (&altered, "List-Unsubscribe=One-Click"),
        (&bounce, "List-Unsubscribe=One-Click"),
        ("/u/short", "List-Unsubscribe=One-Click"),
        ("/elsewhere", "List-Unsubscribe=One-Click"),
    ] {
        let (code, b) = http(web, "POST", path, Some(FORM), body.as_bytes()).await;
        assert!((400..500).contains(&code), "{path}: {code} {b}");
    }
    let (code, b) = http(web, "GET", &bounce, None, b"").await;
    assert_eq!(code, 404, "a bounce token has no page: {b}");
    let (code, _) = http(web, "POST", &u("other@x.example"), Some(FORM), b"x=y").await;
    assert_eq!(code, 400, "not a one-click body");
    let (code, _) = http(
        web,
        "POST",
        &u("big@x.example"),
        Some(FORM),
        &vec![b'a'; 64 << 10],
    )
    .await;
    assert_eq!(code, 413, "bodies are bounded");
    assert!(listed(&setup).is_empty(), "nothing changed");

    // The three RFC 8058 bodies, and a token of mail sent before the key rotation.
    let (code, b) = http(
        web,
        "POST",
        &u("multi@x.example"),
        Some(MULTIPART),
        MULTIPART_BODY.as_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{b}");
    assert!(b.contains("unsubscribed"), "{b}");
    let (code, _) = http(
        web,
        "POST",
        &u("form@x.example"),
        Some(FORM),
        b"List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = http(web, "POST", &u("empty@x.example"), None, b"").await;
    assert_eq!(code, 200);
    let old = format!(
        "/u/{}",
        token(
            &old_keys(),
            Purpose::Unsubscribe,
            "retired@x.example",
            "spring"
        )
    );
    let (code, _) = http(web, "POST", &old, Some(FORM), b"List-Unsubscribe=One-Click").await;
    assert_eq!(code, 200, "a retired key still verifies");
    // A second click is fine (the entry is kept).
    let (code, _) = http(web, "POST", &u("empty@x.example"), None, b"").await;
    assert_eq!(code, 200);

    let list = listed(&setup);
    // The campaign registered its run with serve: the list names it.
    let source = "spring".to_string();
    for a in gone {
        let key = format!("{} (address not yet seen)", rid_key(k.recipient_id(a)));
        assert_eq!(list.get(&key), Some(&source), "{a}: {list:?}");
    }
    assert_eq!(list.len(), gone.len(), "{list:?}");

    // The next campaign sent with the server config skips them, and the list then names
    // the addresses instead of the ids.
    let sink = crate::pipeline::start_sink(Vec::new()).await;
    let c = signed_campaign(&f, "next", sink.addr, &all, "");
    let out = tokio::task::block_in_place(|| send_process(&setup, &c).output().unwrap());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let got = crate::pipeline::by_rcpt(&sink);
    let mut got: Vec<&String> = got.keys().collect();
    got.sort();
    assert_eq!(got, ["get@x.example", "keep@x.example"]);
    let list = listed(&setup);
    let keys: Vec<&String> = list.keys().collect();
    let mut want: Vec<&str> = gone.to_vec();
    want.sort();
    assert_eq!(keys, want, "addresses in the ids' place");
    assert!(list.values().all(|s| *s == source), "{list:?}");

    // GETs and bad tokens are rate-limited per client; a valid one-click never is.
    let mut limited = false;
    for _ in 0..40 {
        let (code, _) = http(web, "GET", &u("get@x.example"), None, b"").await;
        limited |= code == 429;
    }
    assert!(limited, "40 GETs a minute from one client");
    let (code, _) = http(web, "POST", &forged, None, b"").await;
    assert_eq!(code, 429);
    let (code, _) = http(web, "POST", &u("late@x.example"), None, b"").await;
    assert_eq!(code, 200, "a valid one-click from a limited client");
    assert!(term(child).success(), "the endpoint stops with serve");
    // Durable before the 200: there after serve stopped (the store itself).
    let late = format!(
        "{} (address not yet seen)",
        rid_key(k.recipient_id("late@x.example"))
    );
    assert!(listed(&setup).contains_key(&late));
}

/// The endpoint never opens a campaign store: while a send holds its store (slow relay), an
/// unsubscribe through one of its tokens is recorded, and the next campaign skips the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_during_a_send_reaches_the_next_campaign() {
    use blast::sink::{Action, Rule};
    let setup = setup(free_port());
    let (serve, web) = spawn(&setup);
    let slow = crate::pipeline::start_sink(vec![Rule::new(
        "*",
        Action::Delay(Duration::from_millis(40)),
    )])
    .await;
    let f = crate::pipeline::Fixture::new();
    let list = crate::pipeline::addrs("r", "x.example", 300);
    let a = signed_campaign(&f, "a", slow.addr, &list, "connections = 1\n");
    let mut sending = send_process(&setup, &a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the send is under way", || slow.count() >= 5).await;
    let store = blast::send::store_dir(&blast::config::load(&a).unwrap());
    let locked = blast::store::campaign::CampaignStore::open(&store, Duration::ZERO);
    assert!(locked.is_err(), "the send holds its store");
    drop(locked);

    // The link in a message campaign "a" has just sent (to whoever went first).
    let (mailed, link) = one_click_paths(&slow)
        .into_iter()
        .next()
        .expect("a message was mailed");
    let (code, b) = http(
        web,
        "POST",
        &link,
        Some(MULTIPART),
        MULTIPART_BODY.as_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{b}");
    assert!(sending.try_wait().unwrap().is_none(), "still sending");
    unsafe {
        libc::kill(sending.id() as i32, libc::SIGTERM);
    }
    tokio::task::block_in_place(|| sending.wait().unwrap());

    let sink = crate::pipeline::start_sink(Vec::new()).await;
    let g = crate::pipeline::Fixture::new();
    let next = vec![mailed.clone(), "other@x.example".to_string()];
    let b = signed_campaign(&g, "b", sink.addr, &next, "");
    let out = tokio::task::block_in_place(|| send_process(&setup, &b).output().unwrap());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(sink.attempts(&mailed), 0, "unsubscribed");
    assert_eq!(sink.attempts("other@x.example"), 1);
    let list = listed(&setup);
    assert_eq!(
        list.get(&mailed),
        Some(&"a".to_string()),
        "the source names the campaign the token came from (it registered its run): {list:?}"
    );
    assert!(term(serve).success());
}

fn serve_output(setup: &Setup) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["serve", "--config"])
        .arg(setup.config())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A key file others may read: serve refuses to start, names the file, shows no secret.
#[test]
fn serve_refuses_a_world_readable_key_file() {
    let setup = setup(free_port());
    let secret: PathBuf = setup.dir.path().join("blast.secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = serve_output(&setup);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&secret.display().to_string()) && err.contains("chmod 600"),
        "{err}"
    );
    assert!(
        !err.contains(SECRET_B) && !err.contains(&SECRET_A[..16]),
        "{err}"
    );
    // `blast send --config` refuses it too, before sending anything.
    let f = crate::pipeline::Fixture::new();
    f.write(
        "l.csv",
        crate::pipeline::csv_list(&["a@x.example".to_string()]),
    );
    let c = f.write(
        "c.toml",
        crate::pipeline::campaign_toml("c", free_port(), &["l.csv"], ""),
    );
    let out = send_process(&setup, &c).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by others"));
}

/// `[serve] http` on an address in use: serve says which key and address.
#[test]
fn serve_says_when_the_endpoint_cannot_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let setup = setup(free_port());
    let config = setup.config();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0\"\nsecret", &format!("{addr}\"\nsecret"));
    std::fs::write(&config, text).unwrap();
    let out = serve_output(&setup);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("serve.http: cannot listen on {addr}")),
        "{err}"
    );
}

/// Scheduled runs inside serve issue tokens with serve's keys: a run skips an address whose
/// recipient id a one-click put on serve's list, and the list then names the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_skips_a_recipient_id_on_the_list() {
    use blast::schedule::claims::{Claims, RunRecord, RunStatus};
    use blast::schedule::TestClock;
    use blast::store::suppression::Entry;
    let f = crate::pipeline::Fixture::new();
    let sink = crate::pipeline::start_sink(vec![]).await;
    let list = crate::pipeline::addrs("k", "sched.example", 5);
    crate::schedule::scheduled(&f, "news", sink.addr, &list, "", "cron = \"0 * * * *\"");
    let state = f.path("serve");
    let k = keys();
    let gone = rid_key(k.recipient_id("k3@sched.example"));
    let entry = Entry {
        reason: "unsubscribe".into(),
        at_ms: 1,
        source: "news@20260105T090000Z".into(),
        detail: "one-click".into(),
    };
    blast::owner::Global::shared(&state)
        .suppress(&[(gone.clone(), entry)], false)
        .unwrap();
    // A claimed slot (as a crash right after the claim leaves it): launched at once.
    let slot = crate::schedule::utc("2026-01-05T10:00:00Z");
    {
        let c = Claims::open(&state, Duration::from_secs(5)).unwrap();
        let rec = RunRecord {
            id: "news@20260105T100000Z".into(),
            campaign: "news".into(),
            slot_ms: slot.timestamp_millis(),
            claimed_ms: slot.timestamp_millis(),
            finished_ms: None,
            status: RunStatus::Running,
            counts: Default::default(),
            attempts: 1,
            note: String::new(),
        };
        c.commit("news", rec.slot_ms, Some(&rec)).unwrap();
    }
    let tokens = blast::token::TokenSettings {
        keys: keys(),
        // No link, so no List-Unsubscribe-Post and no DKIM needed: the run still issues
        // tokens (VERP) and computes recipient ids.
        unsubscribe_url: None,
        bounce_domain: Some("bounces.acme.example".into()),
        click_url: None,
    };
    let clock = TestClock::new(crate::schedule::utc("2026-01-05T10:01:00Z"));
    let mut serve = crate::schedule::Serve::start_with(
        f.dir.path(),
        &state,
        clock,
        Duration::from_secs(3600),
        Some(std::sync::Arc::new(tokens)),
    );
    let run = serve
        .finished("news@20260105T100000Z", RunStatus::Done)
        .await;
    serve.stop().await;
    assert_eq!(run.counts.get("skipped"), Some(&1), "{run:?}");
    assert_eq!(sink.attempts("k3@sched.example"), 0);
    assert_eq!(sink.count(), 4);
    let listed: Vec<String> = blast::owner::Global::shared(&state)
        .list()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, ["k3@sched.example"]);
}
