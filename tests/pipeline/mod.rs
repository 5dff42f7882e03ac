//! The core pipeline end to end (issue 3, "Must show"): campaign files, templates and CSV lists
//! in a temp dir, `blast::send::send` against a real SMTP sink on 127.0.0.1:0 with fault
//! injection, and assertions on what the sink received and what the store recorded.
//!
//! - `mod.rs`     fixtures (campaign files, lists), sink and send helpers, message inspection
//! - `rate.rs`    10,000 recipients / 50 domains: exactly once, content, per-domain and global rates
//! - `faults.rs`  4xx retries, 5.1.1 suppression, 5.7.x warnings, dropped connections, no PIPELINING,
//!   unreachable relay
//! - `pools.rs`   relay pools (one relay killed mid-run), source-IP pools (127.0.0.2/.3), pool config errors
//! - `inputs.rs`  header injection, bad CSV rows, config errors with file:line, missing columns, resume

mod faults;
mod inputs;
mod pools;
mod rate;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blast::config::Settings;
use blast::report::summary::Summary;
use blast::send::SendOptions;
use blast::shutdown::Shutdown;
use blast::sink::{self, Received, Rule, SinkConfig, SinkHandle};
use blast::store::campaign::CampaignStore;
use blast::store::record::Record;

/// Upper bound for one whole `send` (import, sending, retries).
pub const SEND_LIMIT: Duration = Duration::from_secs(120);

/// Lane settings every test campaign uses: short retry schedule, bounded waits.
pub const LANE_BASE: &str = r#"helo = "blast.test"
retry = ["200ms", "400ms"]
wait_for_retries = "30s"
backoff = "300ms"
connect_timeout = "5s"
"#;

pub const SUBJECT: &str = "Hello {{first_name}}";
pub const TEXT: &str = "Hello {{first_name}}, your code is {{code}}.\n";
pub const HTML: &str = "<p>Hello {{first_name}}, your code is {{code}}.</p>\n";

/// A temp dir holding one or more campaigns (templates, lists, campaign files, state).
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A temp dir with the default templates `t.txt.hbs` / `t.html.hbs`.
    pub fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        f.write("t.txt.hbs", TEXT);
        f.write("t.html.hbs", HTML);
        f
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (bytes as given: lists may hold CRLF and invalid UTF-8 on purpose).
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, bytes).expect("write fixture file");
        p
    }

    /// Writes `name.toml` from [`campaign_toml`] and loads it.
    pub fn campaign(&self, name: &str, toml: &str) -> Settings {
        let p = self.write(&format!("{name}.toml"), toml);
        blast::config::load(&p).unwrap_or_else(|e| panic!("{name}.toml does not load: {e}\n{toml}"))
    }
}

/// A campaign file: `id`, the relay, the lists (relative to the fixture), extra `[lane]` keys
/// (`lane_extra` may end with a `[lane.per_domain]` table). State lives in `state/`, shared by
/// every campaign of the fixture (so the global suppression list is shared too).
pub fn campaign_toml(id: &str, relay: SocketAddr, lists: &[&str], lane_extra: &str) -> String {
    let lists = lists
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[campaign]
id = "{id}"
from = "Acme News <news@acme.example>"
reply_to = "support@acme.example"
subject = "{SUBJECT}"
text = "t.txt.hbs"
html = "t.html.hbs"
lists = [{lists}]
state_dir = "state"

[campaign.headers]
"X-Campaign" = "{id}"

[lane]
transport = "smtp://{relay}"
{LANE_BASE}{lane_extra}
"#
    )
}

/// A CSV list `email,first_name,code` with one row per address (`Name<i>`, `C-<i>`).
pub fn csv_list(addrs: &[String]) -> String {
    let mut s = String::from("email,first_name,code\n");
    for (i, a) in addrs.iter().enumerate() {
        s.push_str(&format!("{a},Name{i},C-{i:06}\n"));
    }
    s
}

/// `n` addresses `u<i>@domain`.
pub fn addrs(prefix: &str, domain: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@{domain}")).collect()
}

/// Sink rules answering every one of `addrs` with `550 5.1.1` at RCPT (user unknown).
pub fn user_unknown(addrs: &[String]) -> Vec<Rule> {
    addrs
        .iter()
        .map(|a| {
            Rule::new(
                a.clone(),
                sink::Action::RcptReply(550, "5.1.1 no such user".into()),
            )
        })
        .collect()
}

pub async fn start_sink(rules: Vec<Rule>) -> SinkHandle {
    start_sink_with(SinkConfig {
        rules,
        ..Default::default()
    })
    .await
}

pub async fn start_sink_with(config: SinkConfig) -> SinkHandle {
    sink::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("start sink")
}

/// Runs `blast send` (quiet), bounded by [`SEND_LIMIT`].
pub async fn send(s: &Settings) -> blast::error::Result<Summary> {
    send_with(s, SendOptions::default()).await
}

pub async fn send_with(s: &Settings, opts: SendOptions) -> blast::error::Result<Summary> {
    send_within(s, opts, SEND_LIMIT).await
}

/// Runs `blast send` (quiet), bounded by `limit`.
pub async fn send_within(
    s: &Settings,
    opts: SendOptions,
    limit: Duration,
) -> blast::error::Result<Summary> {
    let opts = SendOptions {
        quiet: true,
        ..opts
    };
    tokio::time::timeout(
        limit,
        blast::send::send(s, &opts, Arc::new(Shutdown::default())),
    )
    .await
    .unwrap_or_else(|_| panic!("send of {} did not finish within {limit:?}", s.id))
}

/// Runs `blast send` and expects it to return a summary.
pub async fn send_ok(s: &Settings) -> Summary {
    send(s)
        .await
        .unwrap_or_else(|e| panic!("send of {} failed: {e}", s.id))
}

/// The campaign's records by address (opens the store after the send released it).
pub fn records(s: &Settings) -> BTreeMap<String, Record> {
    let store = CampaignStore::open(&blast::send::store_dir(s), Duration::from_secs(10))
        .expect("open campaign store");
    let mut out = BTreeMap::new();
    for kv in store.iter() {
        let (_, r) = kv.expect("read record");
        out.insert(r.address.clone(), r);
    }
    out
}

/// Received messages per accepted recipient (lower-cased).
pub fn by_rcpt(sink: &SinkHandle) -> HashMap<String, Vec<Received>> {
    let mut m: HashMap<String, Vec<Received>> = HashMap::new();
    for r in sink.received() {
        for to in &r.rcpt_to {
            m.entry(to.to_ascii_lowercase())
                .or_default()
                .push(r.clone());
        }
    }
    m
}

/// Asserts each address was received exactly once and nothing else was received.
pub fn assert_exactly_once(sink: &SinkHandle, expected: &[String]) {
    let got = by_rcpt(sink);
    let mut missing = Vec::new();
    let mut dups = Vec::new();
    for a in expected {
        match got.get(&a.to_ascii_lowercase()).map(Vec::len) {
            None => missing.push(a.clone()),
            Some(1) => {}
            Some(n) => dups.push(format!("{a} ×{n}")),
        }
    }
    let expected_set: std::collections::HashSet<String> =
        expected.iter().map(|a| a.to_ascii_lowercase()).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !expected_set.contains(*k)).collect();
    assert!(
        missing.is_empty() && dups.is_empty() && extra.is_empty(),
        "missing {} {:?}…, duplicated {} {:?}…, unexpected {} {:?}…",
        missing.len(),
        &missing[..missing.len().min(5)],
        dups.len(),
        &dups[..dups.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
    );
}

/// The header block of a message (up to the first empty line), lossy UTF-8.
pub fn header_block(data: &[u8]) -> String {
    let s = String::from_utf8_lossy(data);
    match s.find("\r\n\r\n") {
        Some(i) => s[..i + 2].to_string(),
        None => s.into_owned(),
    }
}

/// The message text with quoted-printable soft line breaks removed (enough to search bodies
/// for ASCII fragments).
pub fn flat_text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).replace("=\r\n", "")
}

/// A header's unfolded value (first occurrence), if present.
pub fn header(data: &[u8], name: &str) -> Option<String> {
    let block = header_block(data);
    let unfolded = block.replace("\r\n ", " ").replace("\r\n\t", " ");
    let prefix = format!("{}:", name.to_ascii_lowercase());
    unfolded
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
}

/// Every wire violation the sink saw, with the recipients of the message.
pub fn violations(sink: &SinkHandle) -> Vec<String> {
    sink.received()
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| format!("{:?}: {:?}", r.rcpt_to, r.violations))
        .collect()
}
