//! `blast suppress add|remove|list|import|export`: the global suppression list of the
//! campaign's state dir, in and out as CSV (`address,reason,at_ms,source,detail`).
//!
//! Through the list's one owner ([`crate::owner::Global`]): a running `blast serve` on that
//! state dir when there is one (never waiting on sled's lock), else the store opened for the
//! length of the command (waiting while a send holds it).

use std::io::Write;
use std::path::Path;

use crate::cli::SuppressAction;
use crate::error::{Error, Result};
use crate::list::hygiene;
use crate::owner::Global;
use crate::store::now_ms;
use crate::store::suppression::Entry;

/// The CSV header of `list` and `export` (and the full form `import` reads).
pub const HEADER: [&str; 5] = ["address", "reason", "at_ms", "source", "detail"];

/// What `list` adds to a recipient-id key: the import that meets the address lists it by
/// address instead. (`export` writes the bare key; `import` and `remove` accept both.)
const NOT_YET_SEEN: &str = " (address not yet seen)";

/// At most this many invalid rows are listed one by one; the count covers all.
const MAX_LISTED: usize = 100;

/// Normalises what a user (or a file) gives as a suppression key: an address (checked and
/// normalised like list addresses, role accounts and non-ASCII local parts allowed) or
/// `@domain` for a whole domain (lower-cased, A-label).
pub fn normalise(raw: &str) -> std::result::Result<String, String> {
    let raw = raw.trim();
    if let Some(id) = raw
        .get(..3)
        .filter(|p| p.eq_ignore_ascii_case("id:"))
        .map(|_| &raw[3..])
    {
        // A recipient id (a one-click unsubscribe whose address no import has met yet), as
        // `list` shows it.
        let id = id.strip_suffix(NOT_YET_SEEN).unwrap_or(id).trim();
        return crate::owner::parse_rid_key(&format!("id:{}", id.to_ascii_lowercase()))
            .map(crate::token::rid_key)
            .ok_or_else(|| format!("{raw:?}: a recipient id is `id:` and 16 hex digits"));
    }
    let policy = hygiene::Policy {
        allow_role: true,
        smtputf8: true,
    };
    if let Some(d) = raw.strip_prefix('@') {
        if d.is_empty() {
            return Err("empty domain".into());
        }
        return hygiene::check(&format!("x@{d}"), &policy)
            .map(|m| format!("@{}", m.domain))
            .map_err(|r| format!("{raw:?} is not a valid domain: {r}"));
    }
    hygiene::check(raw, &policy)
        .map(|m| m.key)
        .map_err(|r| format!("{raw:?}: {r}"))
}

/// One sync with the fleet's Redis (`[cluster]` of blast.toml) right after an edit, so what
/// was added or removed reaches the other machines now. Bounded (5 s); when Redis does not
/// answer, the change stays in this machine's outbox and goes with its next sync (`blast
/// serve`, or a `blast send --config`), which is said.
pub async fn sync_fleet(cs: &crate::cluster::ClusterSettings, state_dir: &Path) {
    let round = async {
        let cluster = crate::cluster::Cluster::new(cs).map_err(|e| e.to_string())?;
        let global = Global::shared(state_dir);
        crate::cluster::suppression_sync::SuppressionSync::new(cluster, global)
            .round()
            .await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), round).await {
        Ok(Ok(r)) => eprintln!(
            "fleet: synced with {} ({} change(s) published, {} applied)",
            cs.redis, r.published, r.applied
        ),
        Ok(Err(e)) => eprintln!(
            "fleet: Redis ({}) did not answer ({e}); the change is kept here and reaches the \
             fleet with this machine's next sync (blast serve, or blast send --config)",
            cs.redis
        ),
        Err(_) => eprintln!(
            "fleet: Redis ({}) did not answer within 5 s; the change is kept here and reaches \
             the fleet with this machine's next sync (blast serve, or blast send --config)",
            cs.redis
        ),
    }
}

/// Runs `blast suppress …`.
pub fn run(state_dir: &Path, action: SuppressAction) -> Result<i32> {
    match action {
        SuppressAction::Add { addresses, reason } => {
            let keys = keys_of(&addresses)?;
            let entries: Vec<(String, Entry)> = keys
                .into_iter()
                .map(|k| {
                    let e = Entry {
                        reason: reason.clone(),
                        at_ms: now_ms(),
                        source: "cli".into(),
                        detail: String::new(),
                    };
                    (k, e)
                })
                .collect();
            Global::shared(state_dir).suppress(&entries, true)?;
            for (k, _) in &entries {
                println!("suppressed {k}");
            }
        }
        SuppressAction::Remove { addresses } => {
            let keys = keys_of(&addresses)?;
            let removed = Global::shared(state_dir).unsuppress(&keys)?;
            for (k, was) in keys.iter().zip(removed) {
                if was {
                    println!("removed {k}");
                } else {
                    println!("not listed: {k}");
                }
            }
        }
        SuppressAction::List => {
            let mut entries = entries(state_dir)?;
            for (k, _) in &mut entries {
                if crate::owner::parse_rid_key(k).is_some() {
                    k.push_str(NOT_YET_SEEN);
                }
            }
            let out = std::io::stdout().lock();
            write_csv(out, &entries).map_err(|e| Error::io("writing to stdout", e))?;
        }
        SuppressAction::Export { file } => {
            let entries = entries(state_dir)?;
            match file {
                None => write_csv(std::io::stdout().lock(), &entries)
                    .map_err(|e| Error::io("writing to stdout", e))?,
                Some(path) => {
                    let ctx = || format!("writing {}", path.display());
                    let f = std::fs::File::create(&path).map_err(|e| Error::io(ctx(), e))?;
                    let mut w = std::io::BufWriter::new(f);
                    write_csv(&mut w, &entries).map_err(|e| Error::io(ctx(), e))?;
                    w.into_inner()
                        .map_err(|e| Error::io(ctx(), e.into_error()))?
                        .sync_all()
                        .map_err(|e| Error::io(ctx(), e))?;
                    eprintln!("exported {} entries to {}", entries.len(), path.display());
                }
            }
        }
        SuppressAction::Import { file, reason } => {
            // Read and check the whole file before taking the store: a send waiting for it
            // is held up only for the writes.
            let parsed = parse_csv(&file, &reason)?;
            let global = Global::shared(state_dir);
            let mut added = 0u64;
            for chunk in parsed.rows.chunks(5_000) {
                added += global.suppress(chunk, false)?;
            }
            drop(global);
            let present = parsed.rows.len() as u64 - added;
            for msg in parsed.invalid.iter().take(MAX_LISTED) {
                eprintln!("{msg}");
            }
            if parsed.invalid.len() > MAX_LISTED {
                eprintln!(
                    "{}: … and {} more invalid rows",
                    file.display(),
                    parsed.invalid.len() - MAX_LISTED
                );
            }
            println!(
                "{}: {added} added, {present} already present, {} invalid (skipped)",
                file.display(),
                parsed.invalid.len()
            );
        }
    }
    Ok(0)
}

fn keys_of(addresses: &[String]) -> Result<Vec<String>> {
    if addresses.is_empty() {
        return Err(Error::Config("no addresses given".into()));
    }
    addresses
        .iter()
        .map(|a| normalise(a).map_err(Error::Config))
        .collect()
}

/// Every entry, without creating a store when the state dir has none yet.
fn entries(state_dir: &Path) -> Result<Vec<(String, Entry)>> {
    Global::shared(state_dir).list()
}

/// Writes the entries as CSV with [`HEADER`], cells escaped as in the prune report (a
/// leading `=`, `+`, `-` or `@` gets a `'`, controls become visible escapes): keys and
/// details come from lists and replies, and the file is opened in spreadsheets. `import`
/// reverses the escapes.
pub fn write_csv<W: Write>(w: W, entries: &[(String, Entry)]) -> std::io::Result<()> {
    use crate::list::prune::escape_cell;
    let mut c = csv::Writer::from_writer(w);
    c.write_record(HEADER)?;
    let mut bufs: [String; 4] = Default::default();
    for (k, e) in entries {
        let [b0, b1, b2, b3] = &mut bufs;
        c.write_record([
            escape_cell(k, b0),
            escape_cell(&e.reason, b1),
            &e.at_ms.to_string(),
            escape_cell(&e.source, b2),
            escape_cell(&e.detail, b3),
        ])?;
    }
    c.flush()
}

/// A parsed import file.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid rows: (key, entry), in file order (repeats included: the first one wins).
    pub rows: Vec<(String, Entry)>,
    /// One `FILE:LINE: why` per invalid row.
    pub invalid: Vec<String>,
}

/// Column positions of an import file.
struct Columns {
    address: usize,
    reason: Option<usize>,
    at_ms: Option<usize>,
    source: Option<usize>,
    detail: Option<usize>,
    width: usize,
}

/// Reads an import CSV. A header is required unless the file is a bare column of addresses;
/// it must name an `address` (or `email`) column, and may name `reason`, `at_ms`, `source`
/// and `detail` (other columns are ignored). A file that cannot be read at all, or whose
/// header names no address column, is an error; single bad rows are listed and skipped.
pub fn parse_csv(path: &Path, default_reason: &str) -> Result<Parsed> {
    let name = path.display().to_string();
    let source = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.clone());
    let f = std::fs::File::open(path).map_err(|e| Error::io(format!("reading {name}"), e))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(f));
    let mut rec = csv::ByteRecord::new();
    let mut out = Parsed::default();
    let mut cols: Option<Columns> = None;
    let now = now_ms();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Err(Error::Config(format!("{name}:{line}: cannot read: {e}")));
                }
                out.invalid.push(format!("{name}:{line}: {e}"));
                continue;
            }
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let c = match &cols {
            Some(c) => c,
            None => {
                let (c, is_data) = header(&rec).ok_or_else(|| {
                    Error::Config(format!(
                        "{name}:{line}: expected the header `{}` or a single `address` (or `email`) column, got {:?}",
                        HEADER.join(","),
                        String::from_utf8_lossy(rec.as_slice())
                    ))
                })?;
                cols = Some(c);
                if !is_data {
                    continue;
                }
                cols.as_ref().expect("just set")
            }
        };
        match row(&rec, c, default_reason, &source, now) {
            Ok(r) => out.rows.push(r),
            Err(why) => out.invalid.push(format!("{name}:{line}: {why}")),
        }
    }
    if cols.is_none() {
        return Err(Error::Config(format!("{name}: empty file, no header")));
    }
    Ok(out)
}

/// Reads the first record: a header naming the columns, or (a single cell holding an `@`) the
/// first row of a bare address column. Returns the columns and whether the record is data.
fn header(rec: &csv::ByteRecord) -> Option<(Columns, bool)> {
    let names: Vec<String> = rec
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = if i == 0 {
                f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
            } else {
                f
            };
            String::from_utf8_lossy(f).trim().to_ascii_lowercase()
        })
        .collect();
    let find = |n: &str| names.iter().position(|c| c == n);
    if let Some(address) = find("address").or_else(|| find("email")) {
        return Some((
            Columns {
                address,
                reason: find("reason"),
                at_ms: find("at_ms"),
                source: find("source"),
                detail: find("detail"),
                width: names.len(),
            },
            false,
        ));
    }
    if names.len() == 1 && names[0].contains('@') {
        return Some((
            Columns {
                address: 0,
                reason: None,
                at_ms: None,
                source: None,
                detail: None,
                width: 1,
            },
            true,
        ));
    }
    None
}

fn row(
    rec: &csv::ByteRecord,
    c: &Columns,
    default_reason: &str,
    source: &str,
    now: u64,
) -> std::result::Result<(String, Entry), String> {
    if rec.len() != c.width {
        return Err(format!(
            "{} fields, the header has {} (row skipped)",
            rec.len(),
            c.width
        ));
    }
    use crate::list::prune::unescape_cell;
    let field = |i: Option<usize>| -> std::result::Result<std::borrow::Cow<'_, str>, String> {
        match i {
            None => Ok("".into()),
            Some(i) => std::str::from_utf8(&rec[i])
                .map(|v| unescape_cell(v.trim()))
                .map_err(|_| format!("field {} is not valid UTF-8", i + 1)),
        }
    };
    let address = field(Some(c.address))?;
    if address.is_empty() {
        return Err("empty address".into());
    }
    let key = normalise(&address)?;
    let at_ms = match &*field(c.at_ms)? {
        "" => now,
        v => v
            .parse::<u64>()
            .map_err(|_| format!("at_ms {v:?} is not a number of milliseconds"))?,
    };
    let reason = field(c.reason)?;
    let reason = if reason.is_empty() {
        default_reason
    } else {
        &reason
    };
    let src = field(c.source)?;
    let src = if src.is_empty() { source } else { &src };
    // `detail` is kept as written (a reply text may end in spaces; quoting preserved them).
    let detail = match c.detail {
        None => String::new(),
        Some(i) => unescape_cell(
            std::str::from_utf8(&rec[i])
                .map_err(|_| format!("field {} is not valid UTF-8", i + 1))?,
        )
        .into_owned(),
    };
    Ok((
        key,
        Entry {
            reason: reason.to_string(),
            at_ms,
            source: src.to_string(),
            detail,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_addresses_and_domains() {
        assert_eq!(normalise(" Ann@Example.COM ").unwrap(), "ann@example.com");
        assert_eq!(normalise("@Example.COM").unwrap(), "@example.com");
        assert_eq!(
            normalise("@bücher.example").unwrap(),
            "@xn--bcher-kva.example"
        );
        assert!(normalise("@").is_err());
        assert!(normalise("not an address").is_err());
        assert!(normalise("postmaster@example.com").is_ok());
        // Recipient ids, bare (export) or as `list` shows them.
        let id = "id:0123456789abcdef";
        assert_eq!(normalise("ID:0123456789ABCDEF").unwrap(), id);
        assert_eq!(normalise(&format!("{id}{NOT_YET_SEEN}")).unwrap(), id);
        assert!(normalise("id:0123").is_err());
    }

    #[test]
    fn parses_full_and_single_column_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(
            &p,
            "address,reason,at_ms,source,detail\n\
             a@x.example,bounce,5,camp,\"550 5.1.1 no, such user\"\n\
             b@x.example,,,,\n\
             c@x.example,only three,1\n\
             bad,manual,1,s,d\n\
             d@x.example,manual,soon,s,d\n",
        )
        .unwrap();
        let r = parse_csv(&p, "manual").unwrap();
        assert_eq!(r.rows.len(), 2, "{r:?}");
        assert_eq!(r.rows[0].1.detail, "550 5.1.1 no, such user");
        assert_eq!(r.rows[0].1.at_ms, 5);
        assert_eq!(r.rows[1].1.reason, "manual");
        assert_eq!(r.rows[1].1.source, "s.csv");
        assert_eq!(r.invalid.len(), 3, "{r:?}");
        assert!(r.invalid[0].ends_with("s.csv:4: 3 fields, the header has 5 (row skipped)"));
        assert!(r.invalid[1].contains("s.csv:5: "));
        assert!(r.invalid[2].contains("s.csv:6: at_ms"));

        std::fs::write(&p, "Email\r\nA@X.example\r\n@Y.example\r\n").unwrap();
        let r = parse_csv(&p, "complaint").unwrap();
        let keys: Vec<_> = r.rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(keys, ["a@x.example", "@y.example"]);
        assert_eq!(r.rows[0].1.reason, "complaint");

        std::fs::write(&p, "a@x.example\nb@x.example\n").unwrap();
        assert_eq!(parse_csv(&p, "manual").unwrap().rows.len(), 2);

        std::fs::write(&p, "name,phone\nx,y\n").unwrap();
        assert!(parse_csv(&p, "manual").is_err());
    }
}
