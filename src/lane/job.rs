//! What travels through the lane: a claimed recipient ([`Job`]), how its attempt ended
//! ([`Outcome`]), and how to turn it into a message ([`MessageSpec`]).

use std::sync::Arc;

use crate::classify::Class;
use crate::config::Settings;
use crate::message::{self, NamedAddress, Parts};
use crate::render::{Row, Templates};
use crate::sign::Signer;
use crate::store::campaign::ListFile;
use crate::store::record::Record;
use crate::token::{Purpose, TokenSettings};

/// A recipient claimed (durably `in_flight`) for one delivery attempt.
#[derive(Debug, Clone)]
pub struct Job {
    /// Store key (normalised address).
    pub key: String,
    /// The record as claimed.
    pub rec: Record,
    /// Times this job came back after a lost connection in this run.
    pub requeues: u8,
    /// The claim marker it was claimed under (0 before the claim is durable).
    pub claim: u64,
    /// That claim's time: its result is written no earlier (so a rerun tells a committed
    /// result from a recipient still in flight under the marker).
    pub claim_ms: u64,
    /// The destination site it was dispatched to (set by the dispatcher).
    pub site: Option<super::sites::Site>,
}

impl Job {
    /// The key of the site it was dispatched to (its domain before dispatch).
    pub fn site_key(&self) -> &str {
        self.site.as_ref().map_or(self.rec.domain(), |s| &s.key)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 250 after the final dot (or written to the outbox).
    Sent(String),
    /// A reply that is not success, classified.
    Failed {
        /// Classification.
        class: Class,
        /// The reply (code and text).
        reply: String,
    },
    /// The connection broke before a final reply: try again on a new connection.
    Requeue(String),
    /// The destination is unavailable (421, refused connection, backoff): back to pending,
    /// no attempt or requeue spent.
    Postponed(String),
    /// Taken from the queue but never started (stop requested): back to pending.
    Unclaimed,
    /// Could not be built (render error): skipped with this reason.
    Skipped(String),
}

/// A job and its outcome, on the way to the writer.
#[derive(Debug)]
pub struct Done {
    /// The job.
    pub job: Job,
    /// The outcome.
    pub outcome: Outcome,
}

/// Everything needed to build a recipient's message.
pub struct MessageSpec {
    /// Campaign id (outbox file names, the run's name in tokens).
    pub campaign: String,
    /// Compiled templates.
    pub templates: Templates,
    /// The store's file table (columns per list file).
    pub files: Vec<ListFile>,
    /// From.
    pub from: NamedAddress,
    /// Reply-To.
    pub reply_to: Option<NamedAddress>,
    /// Domain for Message-IDs.
    pub message_id_domain: String,
    /// The run id tokens carry ([`crate::token::run_id`] of the campaign id).
    pub run: u32,
    /// Token keys, unsubscribe URL, VERP domain (`None`: no tokens, no List-Unsubscribe).
    pub tokens: Option<Arc<TokenSettings>>,
    /// `List-Id:` value (`<name.domain>`), unless the campaign's headers set one.
    pub list_id: Option<String>,
    /// `Feedback-ID:` value (`campaign:list:sender`), unless the campaign's headers set one.
    pub feedback_id: Option<String>,
    /// DKIM keys (`None`: unsigned).
    pub signer: Option<Arc<Signer>>,
    /// `[campaign] track_clicks` with serve's `[tracking] url`: the HTML part's links are
    /// rewritten ([`crate::clicks`]).
    pub track_clicks: bool,
    /// Build previews and proofs: no working token anywhere ([`Proof`]).
    pub proof: Proof,
}

/// Whether a message is built for the list or to be looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proof {
    /// The real message, with the recipient's tokens.
    #[default]
    Off,
    /// `blast preview`: the message as it goes out, but every token (unsubscribe link and
    /// mailto, VERP return path, Message-ID) is [`PROOF_TOKEN`], which no verifier accepts.
    Preview,
    /// `blast send --proof`: as `Preview`, and the subject starts with `[PROOF] ` and an
    /// `X-Blast-Proof` header says what it is.
    Proof,
}

/// What stands in for a token in previews and proofs: clearly marked, and not 34 base32
/// characters, so [`crate::token::Keys::verify`] refuses it as malformed — a colleague who
/// clicks "unsubscribe" in a proof unsubscribes nobody.
pub const PROOF_TOKEN: &str = "proof-not-a-token";

/// A message ready for the transport.
#[derive(Debug, Clone)]
pub struct Built {
    /// The bytes (CRLF, signed when the campaign signs, not dot-stuffed).
    pub msg: Vec<u8>,
    /// The envelope sender: the VERP address `bounces+TOKEN@domain`, or From.
    pub mail_from: String,
    /// RFC 3461 ENVID (the Message-ID's left part), sent when the server offers DSN.
    pub envid: String,
}

impl MessageSpec {
    /// The spec of campaign `s`, whose store lists `files`.
    pub fn new(s: &Settings, templates: Templates, files: Vec<ListFile>) -> MessageSpec {
        let from_domain = s
            .from
            .domain()
            .map_or_else(|| "localhost".into(), str::to_ascii_lowercase);
        // Scheduled runs are `name@slot`: the list is the same one every run.
        let name = s.id.split('@').next().unwrap_or(&s.id);
        let has = |h: &str| s.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(h));
        let list = s
            .lists
            .first()
            .and_then(|p| p.file_stem())
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_else(|| "list".into());
        MessageSpec {
            campaign: s.id.clone(),
            templates,
            files,
            from: s.from.clone(),
            reply_to: s.reply_to.clone(),
            message_id_domain: from_domain.clone(),
            run: crate::token::run_id(&s.id),
            tokens: s.tokens.clone(),
            list_id: (!has("List-Id")).then(|| format!("<{}.{from_domain}>", dot_atom(name))),
            feedback_id: (!has("Feedback-ID"))
                .then(|| format!("{}:{}:{from_domain}", dot_atom(name), dot_atom(&list))),
            signer: s.dkim.as_ref().map(|d| d.signer.clone()),
            track_clicks: s.track_clicks,
            proof: Proof::Off,
        }
    }

    /// Renders and builds the message for a stored recipient.
    pub fn build(&self, key: &str, rec: &Record) -> Result<Built, String> {
        let columns = self
            .files
            .get(rec.file_idx as usize)
            .map(|f| f.columns.as_slice())
            .ok_or_else(|| format!("unknown list file #{}", rec.file_idx))?;
        self.build_row(key, &rec.address, columns, &rec.values)
    }

    /// Renders and builds the message for recipient `address` (store key `key`) whose row
    /// is `values` under `columns`.
    pub fn build_row(
        &self,
        key: &str,
        address: &str,
        columns: &[String],
        values: &[String],
    ) -> Result<Built, String> {
        self.build_row_rendered(key, address, columns, values)
            .map(|(b, _)| b)
    }

    /// [`MessageSpec::build_row`], also returning the rendered parts (`blast preview --html`
    /// writes the HTML part as rendered, before MIME encoding).
    pub fn build_row_rendered(
        &self,
        key: &str,
        address: &str,
        columns: &[String],
        values: &[String],
    ) -> Result<(Built, crate::render::Rendered), String> {
        let t = self.tokens_for(key);
        let unsub_url = t.as_ref().and_then(|t| t.url.as_deref());
        let extra: Vec<(&str, &str)> = unsub_url
            .map(|u| ("unsubscribe_url", u))
            .into_iter()
            .collect();
        let mut rendered = self
            .templates
            .render_with(Row { columns, values }, &extra)
            .map_err(|e| format!("render: {e}"))?;
        let tracked = self.track_clicks && self.proof == Proof::Off;
        if let (true, Some(t), Some(ts)) = (tracked, &t, &self.tokens) {
            if let (Some(base), Some(html)) = (ts.click_url.as_deref(), rendered.html.as_deref()) {
                let tracker = crate::clicks::Tracker {
                    keys: &ts.keys,
                    base,
                    rid: t.rid,
                    run: self.run,
                    skip: ts.unsubscribe_url.as_deref(),
                };
                rendered.html = Some(crate::clicks::rewrite(html, &tracker));
            }
        }
        let mut list_headers: Vec<(&str, String)> = Vec::with_capacity(4);
        if let Some(v) = &self.list_id {
            list_headers.push(("List-Id", v.clone()));
        }
        if let Some(t) = &t {
            let mut targets = Vec::with_capacity(2);
            if let Some(u) = &t.url {
                targets.push(format!("<{u}>"));
            }
            if let Some(m) = &t.mailto {
                targets.push(format!("<mailto:{m}>"));
            }
            if !targets.is_empty() {
                list_headers.push(("List-Unsubscribe", targets.join(", ")));
            }
            // RFC 8058: one-click needs an https URI (and a DKIM signature over both headers,
            // which `check` and `send` insist on before a message is built).
            if t.url.is_some() {
                list_headers.push(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into()));
            }
        }
        if let Some(v) = &self.feedback_id {
            list_headers.push(("Feedback-ID", v.clone()));
        }
        if self.proof == Proof::Proof {
            list_headers.push((
                "X-Blast-Proof",
                format!(
                    "a proof of campaign {}; not sent to the list, links are placeholders",
                    self.campaign
                ),
            ));
        }
        let proof_subject;
        let subject = if self.proof == Proof::Proof {
            proof_subject = format!("[PROOF] {}", rendered.subject);
            &proof_subject
        } else {
            &rendered.subject
        };
        let id = match &t {
            Some(t) => t.bounce.clone(),
            None => stable_id(&self.campaign, key),
        };
        let parts = Parts {
            from: &self.from,
            reply_to: self.reply_to.as_ref(),
            to: address,
            subject,
            text: rendered.text.as_deref(),
            html: rendered.html.as_deref(),
            headers: &rendered.headers,
            message_id_domain: &self.message_id_domain,
            date: chrono::Utc::now().timestamp(),
            message_id: Some(&id),
            list_headers: &list_headers,
        };
        let mut msg = message::build(&parts).0;
        if let Some(signer) = &self.signer {
            msg = signer.signed(msg)?;
        }
        let mail_from = match t.as_ref().and_then(|t| t.verp.clone()) {
            Some(v) => v,
            None => self.from.address.clone(),
        };
        Ok((
            Built {
                msg,
                mail_from,
                envid: id,
            },
            rendered,
        ))
    }

    fn tokens_for(&self, key: &str) -> Option<RecipientTokens> {
        let ts = self.tokens.as_ref()?;
        if self.proof != Proof::Off {
            let p = PROOF_TOKEN;
            return Some(RecipientTokens {
                // Never used: a proof's links are not tracked (a click would be counted).
                rid: 0,
                url: ts.unsubscribe_url.as_ref().map(|u| format!("{u}{p}")),
                mailto: ts.bounce_domain.as_ref().map(|d| format!("unsub+{p}@{d}")),
                verp: ts
                    .bounce_domain
                    .as_ref()
                    .map(|d| format!("bounces+{p}@{d}")),
                bounce: format!("{p}.{}", stable_id(&self.campaign, key)),
            });
        }
        let rid = ts.keys.recipient_id(key);
        let bounce = ts.keys.issue(Purpose::Bounce, rid, self.run);
        let unsub = ts.keys.issue(Purpose::Unsubscribe, rid, self.run);
        Some(RecipientTokens {
            rid,
            url: ts.unsubscribe_url.as_ref().map(|u| format!("{u}{unsub}")),
            mailto: ts
                .bounce_domain
                .as_ref()
                .map(|d| format!("unsub+{unsub}@{d}")),
            verp: ts
                .bounce_domain
                .as_ref()
                .map(|d| format!("bounces+{bounce}@{d}")),
            bounce,
        })
    }
}

/// One recipient's token-bearing addresses.
struct RecipientTokens {
    rid: u64,
    url: Option<String>,
    mailto: Option<String>,
    verp: Option<String>,
    bounce: String,
}

/// `s` with everything but letters, digits, `-` and `_` replaced by `-` (a List-Id label, a
/// Feedback-ID field: no dots, colons or spaces of its own).
fn dot_atom(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        "campaign".into()
    } else {
        out
    }
}

/// A Message-ID left part without tokens: the same for a recipient on every retry of the
/// run, different across runs and recipients, and revealing neither.
fn stable_id(campaign: &str, key: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{campaign}\0{key}").as_bytes(),
    );
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Keys, TokenSettings};

    /// A preview's (and a proof's) tokens are the placeholder, which the verifier refuses;
    /// the real build's token verifies.
    #[test]
    fn previews_carry_no_working_token() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("t.txt"),
            "Hi {{first_name}} {{unsubscribe_url}}\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("l.csv"),
            "email,first_name\nann@a.example,Ann\n",
        )
        .unwrap();
        let src = "[campaign]\nid = \"p\"\nfrom = \"news@acme.example\"\nsubject = \"S {{first_name}}\"\n\
                   text = \"t.txt\"\nlists = [\"l.csv\"]\n\n[lane]\ntransport = \"outbox:out\"\n";
        let mut s = crate::config::parse(&d.path().join("c.toml"), src).unwrap();
        let file = Keys::generate_file(1);
        let keys = Keys::parse(&file).unwrap();
        s.tokens = Some(Arc::new(TokenSettings {
            keys: Keys::parse(&file).unwrap(),
            unsubscribe_url: Some("https://u.example/u/".into()),
            bounce_domain: Some("b.example".into()),
            click_url: None,
        }));
        let (templates, _, _) = crate::import::load_inputs(&s).unwrap();
        let mut spec = MessageSpec::new(&s, templates, Vec::new());
        let cols = ["email".to_string(), "first_name".to_string()];
        let vals = ["ann@a.example".to_string(), "Ann".to_string()];
        let build = |spec: &MessageSpec| {
            let (b, r) = spec
                .build_row_rendered("ann@a.example", "ann@a.example", &cols, &vals)
                .unwrap();
            (b, r.text.unwrap())
        };
        let (real, text) = build(&spec);
        let token = text.trim().rsplit('/').next().unwrap().to_string();
        assert!(keys.verify(Purpose::Unsubscribe, &token).is_ok(), "{text}");
        assert!(real.mail_from.starts_with("bounces+") && !real.mail_from.contains(PROOF_TOKEN));

        for mode in [Proof::Preview, Proof::Proof] {
            spec.proof = mode;
            let (b, text) = build(&spec);
            let msg = String::from_utf8_lossy(&b.msg);
            assert!(
                text.contains(&format!("https://u.example/u/{PROOF_TOKEN}")),
                "{text}"
            );
            assert!(!msg.contains(&token), "no real token in a {mode:?}");
            assert_eq!(b.mail_from, format!("bounces+{PROOF_TOKEN}@b.example"));
            assert!(
                msg.contains(&format!("<mailto:unsub+{PROOF_TOKEN}@b.example>")),
                "{msg}"
            );
            assert!(keys.verify(Purpose::Unsubscribe, PROOF_TOKEN).is_err());
            assert!(keys.verify(Purpose::Bounce, PROOF_TOKEN).is_err());
            assert_eq!(
                msg.contains("Subject: [PROOF] S Ann"),
                mode == Proof::Proof,
                "{msg}"
            );
        }
    }
}
