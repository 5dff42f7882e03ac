//! `blast preview` (one row's message on stdout, exactly as it would go out, tokens aside) and
//! `blast send --proof` (that message sent once to a colleague through the lane's transport).
//!
//! Both build with the lane's own [`MessageSpec`] (headers, both parts, List-Unsubscribe,
//! DKIM signature), read only the config and the lists, and change no state: no store, no
//! suppression list, no run registered. Every token in them is [`PROOF_TOKEN`], which the
//! verifier refuses, so a preview or a proof unsubscribes nobody and a bounce of a proof
//! is ignored.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{self, Settings};
use crate::error::{Error, Result};
use crate::lane::job::{Built, PROOF_TOKEN};
use crate::lane::{MessageSpec, Proof};
use crate::list::hygiene;
use crate::render::Rendered;
use crate::send;
use crate::transport::{outbox, Connector, Envelope, RcptOutcome};

/// Which row a preview or proof is of.
#[derive(Debug, Clone, Default)]
pub enum Pick {
    /// The first row that can be sent.
    #[default]
    First,
    /// The Nth data row (1: the first after the header; through several lists in order).
    Row(u64),
    /// The row of this address (compared normalised, as the store keys it).
    To(String),
}

/// Options of `blast preview`.
#[derive(Debug, Clone, Default)]
pub struct PreviewOptions {
    /// Which row.
    pub pick: Pick,
    /// Write the rendered HTML part here.
    pub html: Option<PathBuf>,
    /// Open the HTML part in a browser (`$BROWSER`, else `xdg-open`/`open`).
    pub open: bool,
}

/// One row's message and what went into it.
pub struct Preview {
    /// The list file and the line the row starts on.
    pub file: PathBuf,
    /// That line.
    pub line: u64,
    /// Its data row number ([`Pick::Row`]).
    pub row: u64,
    /// The row's address.
    pub address: String,
    /// The columns the templates use, in order, with this row's values.
    pub used: Vec<(String, String)>,
    /// Warnings for this row (columns that are empty).
    pub warnings: Vec<String>,
    /// The message, or why the row cannot be rendered.
    pub built: std::result::Result<(Built, Rendered), String>,
}

/// Finds the row and builds its message with `proof` tokens (never working ones).
pub fn build(s: &Settings, pick: &Pick, proof: Proof, to: Option<&str>) -> Result<Preview> {
    let (templates, mut reader, fields) = send::load_inputs(s)?;
    let required = templates.required_fields();
    let mut spec = MessageSpec::new(s, templates, Vec::new());
    spec.proof = if proof == Proof::Off {
        Proof::Preview
    } else {
        proof
    };
    let want = match pick {
        Pick::To(a) => Some(
            hygiene::check(a, &s.policy)
                .map(|m| m.key)
                .unwrap_or_else(|_| a.trim().to_ascii_lowercase()),
        ),
        _ => None,
    };
    let paths = reader.paths().to_vec();
    let all_columns: Vec<Vec<String>> = (0..paths.len())
        .map(|i| reader.columns(i).to_vec())
        .collect();
    let mut n = 0u64;
    while let Some(row) = reader.next_row() {
        n += 1;
        let row = match row {
            Ok(r) => r,
            Err(issue) => {
                if matches!(pick, Pick::Row(k) if *k == n) {
                    return Err(Error::Config(format!("row {n}: {issue:?}")));
                }
                continue;
            }
        };
        let checked = hygiene::check(row.email, &s.policy);
        let hit = match pick {
            Pick::First => checked.is_ok(),
            Pick::Row(k) => *k == n,
            Pick::To(_) => checked
                .as_ref()
                .is_ok_and(|m| Some(&m.key) == want.as_ref()),
        };
        if !hit {
            continue;
        }
        let file = paths[row.file_idx].clone();
        let mb = checked.map_err(|why| {
            Error::Config(format!(
                "{}:{}: row {n}: {:?} cannot be sent: {why:?}",
                file.display(),
                row.line,
                row.email
            ))
        })?;
        let columns = all_columns[row.file_idx].clone();
        let values: Vec<String> = row.record.iter().map(str::to_string).collect();
        let mut used = Vec::new();
        let mut warnings = Vec::new();
        for f in &fields {
            let v = columns
                .iter()
                .position(|c| c == f)
                .and_then(|i| values.get(i))
                .cloned()
                .unwrap_or_default();
            if v.trim().is_empty() {
                warnings.push(if required.contains(f) {
                    format!(
                        "column {f:?} is empty for this row: it cannot be rendered, and \
                         `blast send` prunes it (missing_field)"
                    )
                } else {
                    format!("column {f:?} is empty for this row (used inside {{{{#if}}}}: renders as nothing)")
                });
            }
            used.push((f.clone(), v));
        }
        let address = to.map_or_else(|| mb.address.clone(), str::to_string);
        let built = spec.build_row_rendered(&mb.key, &address, &columns, &values);
        return Ok(Preview {
            file,
            line: row.line,
            row: n,
            address: mb.address,
            used,
            warnings,
            built,
        });
    }
    Err(Error::Config(match pick {
        Pick::First => format!("{}: no sendable row in the lists", s.file.display()),
        Pick::Row(k) => format!("the lists have {n} data rows, not {k}"),
        Pick::To(a) => format!("no row of the lists has the address {a:?}"),
    }))
}

/// Prints what the preview is of (to stderr, so stdout is the message alone).
fn describe(p: &Preview) {
    eprintln!(
        "preview: {}:{} (row {}): {}",
        p.file.display(),
        p.line,
        p.row,
        p.address
    );
    if p.used.is_empty() {
        eprintln!("columns used: none");
    } else {
        let cols: Vec<String> = p.used.iter().map(|(c, v)| format!("{c}={v:?}")).collect();
        eprintln!("columns used: {}", cols.join(", "));
    }
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
}

/// `blast preview`: the row's message on stdout.
pub fn run(campaign: &Path, o: &PreviewOptions) -> Result<i32> {
    let s = config::load(campaign)?;
    let p = build(&s, &o.pick, Proof::Preview, None)?;
    describe(&p);
    let (built, rendered) = p
        .built
        .map_err(|e| Error::Config(format!("row {}: {e}", p.row)))?;
    if s.tokens.is_some() {
        eprintln!("note: unsubscribe links and the return path carry {PROOF_TOKEN:?} instead of a working token");
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&built.msg)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("writing to stdout", e))?;
    if o.html.is_some() || o.open {
        let html = rendered.html.ok_or_else(|| {
            Error::Config(format!(
                "{}: the campaign has no html part",
                campaign.display()
            ))
        })?;
        let path = match &o.html {
            Some(p) => p.clone(),
            None => std::env::temp_dir().join(format!("blast-preview-{}.html", std::process::id())),
        };
        std::fs::write(&path, html).map_err(send::io("cannot write", &path))?;
        eprintln!("html part written to {}", path.display());
        if o.open {
            open_in_browser(&path);
        }
    }
    Ok(0)
}

/// Starts the user's browser on `path` without waiting for it; says so when none starts.
fn open_in_browser(path: &Path) {
    let opener = std::env::var("BROWSER").unwrap_or_else(|_| {
        if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        }
        .to_string()
    });
    if let Err(e) = std::process::Command::new(&opener)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        eprintln!(
            "warning: cannot start {opener:?} to open {}: {e}",
            path.display()
        );
    }
}

/// `blast send --proof ADDRESS`: one real message of the row, sent to `address` through the
/// lane's transport (relay, TLS, AUTH as configured), changing no campaign state.
pub async fn proof(s: &Settings, address: &str, pick: &Pick) -> Result<i32> {
    let to = hygiene::check(address, &s.policy)
        .map_err(|why| {
            Error::Config(format!(
                "--proof {address:?}: not an address blast can send to: {why:?}"
            ))
        })?
        .address;
    let p = build(s, pick, Proof::Proof, Some(&to))?;
    describe(&p);
    let (built, _) = p
        .built
        .map_err(|e| Error::Config(format!("row {}: {e}", p.row)))?;
    let connector = Connector::for_lane(&s.lane)?;
    if matches!(connector, Connector::Mx(_)) {
        return Err(Error::Config(format!(
            "{}: --proof goes through a relay or an outbox: with transport = \"mx\", send the proof \
             through your relay (a copy of the campaign with transport = \"smtp://…\")",
            s.file.display()
        )));
    }
    let env = Envelope {
        mail_from: built.mail_from,
        rcpts: vec![to.clone()],
        eight_bit: false,
        smtputf8: false,
        envid: Some(built.envid),
        label: match connector {
            Connector::Outbox(_) => outbox::file_name(&format!("{}-proof", s.id), &to),
            _ => String::new(),
        },
    };
    let t = &s.lane.timeouts;
    let limit = t.connect + t.command * 4 + t.data_end;
    let sent = tokio::time::timeout(limit, async {
        let mut sess = connector
            .open::<()>()
            .await
            .map_err(|e| Error::Lane(format!("{}: {e}", connector.describe())))?;
        sess.submit((), &env, built.msg).await;
        let r = sess.next_result().await;
        sess.close().await;
        Ok::<_, Error>(r.and_then(|(_, mut v)| v.pop()))
    })
    .await
    .map_err(|_| Error::Lane(format!("proof: no answer within {limit:?}")))??;
    match sent {
        Some(RcptOutcome::Delivered(reply)) => {
            eprintln!(
                "proof of row {} sent to {to} through {}: {reply}",
                p.row,
                connector.describe()
            );
            Ok(0)
        }
        Some(other) => Err(Error::Lane(format!(
            "proof to {to} not accepted: {other:?}"
        ))),
        None => Err(Error::Lane(format!("proof to {to}: no result"))),
    }
}

/// Reads `--row N` / `--to ADDRESS` into a [`Pick`].
pub fn pick(row: Option<u64>, to: Option<String>) -> Pick {
    match (row, to) {
        (Some(n), _) => Pick::Row(n),
        (None, Some(a)) => Pick::To(a),
        (None, None) => Pick::First,
    }
}
