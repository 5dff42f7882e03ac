//! `blast bounces import PATH`: bounces and feedback reports that reached a mailbox instead
//! of the bounce inbox (a provider's feedback loop into a shared mailbox, an old return
//! path, a forwarded DSN) go through the same store and the same [`super::inbox::process`]
//! as the inbox's own mail: an `.eml` file, a maildir (`cur/` and `new/`), a directory of
//! message files, an mbox, or stdin (`-`, one message or an mbox). Importing the same
//! message twice acts on it once (the store keeps every message's digest).
//!
//! A message's inbox address is read from the headers its delivery left (`Delivered-To`,
//! `X-Original-To`, `Envelope-To`, `X-Envelope-To`, then `To` and `Cc`): a VERP address
//! there attributes it as if it had come to the inbox. Without one it is attributed like a
//! feedback-loop report, by the token in the returned original.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::inbox::{process_and_record, InboxStore, Mailbox, Put, Rules, Stored};
use crate::owner::Global;

/// Largest message or mbox read: it bounds a mistaken path to a huge file.
const MAX_FILE: u64 = 256 * 1024 * 1024;
/// Largest single message imported: far above any bounce (a returned original with its
/// attachments), and what serve's control socket takes in one request.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Most messages taken from one PATH.
const MAX_MESSAGES: usize = 1_000_000;

/// What an import did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Messages read.
    pub messages: u64,
    /// Stored and processed now.
    pub new: u64,
    /// Stored before (by an earlier import or the inbox): not acted on again.
    pub duplicates: u64,
    /// Stored but not processed (the suppression list unreachable): done at the next import
    /// or serve start.
    pub unprocessed: u64,
    /// Stored earlier but left unprocessed (an import killed, the list unreachable then):
    /// processed now.
    #[serde(default)]
    pub resumed: u64,
    /// What processing did, a line per effect (`<message id>: …`).
    pub effects: Vec<String>,
    /// Files that could not be read.
    pub errors: Vec<String>,
}

/// Stores and processes one message (`name`: where it came from).
pub fn import_one(
    store: &InboxStore,
    global: &Global,
    rules: &Rules,
    name: &str,
    raw: Vec<u8>,
) -> Summary {
    let mut sum = Summary::default();
    add_one(&mut sum, store, global, rules, name, raw);
    sum
}

impl Summary {
    /// Adds another summary's counts and lines.
    pub fn add(&mut self, o: Summary) {
        self.messages += o.messages;
        self.new += o.new;
        self.duplicates += o.duplicates;
        self.unprocessed += o.unprocessed;
        self.resumed += o.resumed;
        self.effects.extend(o.effects);
        self.errors.extend(o.errors);
    }
}

fn add_one(
    sum: &mut Summary,
    store: &InboxStore,
    global: &Global,
    rules: &Rules,
    name: &str,
    raw: Vec<u8>,
) {
    sum.messages += 1;
    let stored = Stored {
        id: 0,
        at_ms: crate::store::now_ms(),
        mail_from: return_path(&raw).unwrap_or_default(),
        client: format!("import:{name}"),
        rcpts: mailboxes(rules, &raw),
        effects: Vec::new(),
    };
    match store.put(stored.clone(), &raw) {
        Ok(Put::Duplicate(_)) => sum.duplicates += 1,
        Ok(Put::New(id)) => {
            sum.new += 1;
            match process_and_record(store, global, rules, &Stored { id, ..stored }) {
                Ok(effects) => sum
                    .effects
                    .extend(effects.into_iter().map(|e| format!("{id:016x}: {e}"))),
                Err(e) => {
                    sum.unprocessed += 1;
                    sum.errors.push(format!("{name}: {e}"));
                }
            }
        }
        Err(e) => sum.errors.push(format!("{name}: cannot store it: {e}")),
    }
}

/// Deletes stored messages older than `[bounces] keep_days` (serve does it hourly; an
/// import without serve must too, or the messages are kept for ever).
pub fn purge_old(sum: &mut Summary, store: &InboxStore, rules: &Rules) {
    let keep = u64::from(rules.policy.keep_days) * 24 * 3600 * 1000;
    if let Err(e) = store.purge(crate::store::now_ms().saturating_sub(keep)) {
        sum.errors
            .push(format!("cannot delete messages older than keep_days: {e}"));
    }
}

/// Processes the stored messages that have no effects recorded (what serve does at start).
pub fn resume(sum: &mut Summary, store: &InboxStore, global: &Global, rules: &Rules) {
    let left = match store.list() {
        Ok(all) => all,
        Err(e) => {
            return sum
                .errors
                .push(format!("cannot list the stored messages: {e}"))
        }
    };
    for s in left
        .iter()
        .filter(|s| s.effects.is_empty() && !s.rcpts.is_empty())
    {
        let id = s.id;
        match process_and_record(store, global, rules, s) {
            Ok(effects) => {
                sum.resumed += 1;
                sum.effects
                    .extend(effects.into_iter().map(|e| format!("{id:016x}: {e}")));
            }
            Err(e) => {
                sum.unprocessed += 1;
                sum.errors.push(format!("stored message {id:016x}: {e}"));
            }
        }
    }
}

/// Reads every message at `path` (`-`: stdin) and hands each to `each` (name, bytes);
/// returns the files that could not be read.
pub fn read_messages(path: &Path, mut each: impl FnMut(&str, Vec<u8>)) -> Vec<String> {
    let label = path.display().to_string();
    let mut errors = Vec::new();
    if label == "-" {
        let mut data = Vec::new();
        match std::io::stdin().take(MAX_FILE + 1).read_to_end(&mut data) {
            Ok(_) if data.len() as u64 > MAX_FILE => errors.push(too_big("stdin")),
            Ok(_) => for_each_in_file("stdin", data, &mut each, &mut errors),
            Err(e) => errors.push(format!("stdin: {e}")),
        }
    } else if !path.exists() {
        errors.push(format!("{label}: no such file or directory"));
    } else {
        walk(path, &mut each, &mut errors);
    }
    errors
}

/// Imports every message at `path` (`-`: stdin) into this process's open inbox store.
/// Messages an earlier import stored but did not process (killed in between, or the list
/// unreachable) are processed first: importing them again finds them stored and would not.
pub fn import(store: &InboxStore, global: &Global, rules: &Rules, path: &Path) -> Summary {
    let mut sum = Summary::default();
    resume(&mut sum, store, global, rules);
    purge_old(&mut sum, store, rules);
    let errors = read_messages(path, |name, raw| {
        add_one(&mut sum, store, global, rules, name, raw)
    });
    sum.errors.extend(errors);
    sum
}

/// A maildir, a directory of messages (sorted by name), or one file.
fn walk(path: &Path, each: &mut impl FnMut(&str, Vec<u8>), errors: &mut Vec<String>) {
    if path.is_dir() {
        let sub: Vec<_> = ["new", "cur"].iter().map(|d| path.join(d)).collect();
        let dirs: Vec<&Path> = if sub.iter().any(|d| d.is_dir()) {
            sub.iter()
                .filter(|d| d.is_dir())
                .map(|d| d.as_path())
                .collect()
        } else {
            vec![path]
        };
        for dir in dirs {
            let mut files: Vec<_> = match std::fs::read_dir(dir) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    errors.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            files.sort();
            // Not walked into (a folder of folders is not one mailbox), but said: an import
            // of a directory that only holds directories must not report "0 messages" as if
            // there were nothing.
            for d in files.iter().filter(|f| !f.is_file()) {
                errors.push(if d.is_dir() {
                    format!(
                        "{}: a directory inside {}: not imported (give its own path)",
                        d.display(),
                        dir.display()
                    )
                } else {
                    format!(
                        "{}: not a regular file (a dangling link?): not imported",
                        d.display()
                    )
                });
            }
            files.retain(|f| f.is_file());
            for f in files {
                read_file(&f, each, errors);
            }
        }
    } else {
        read_file(path, each, errors);
    }
}

fn read_file(path: &Path, each: &mut impl FnMut(&str, Vec<u8>), errors: &mut Vec<String>) {
    let mut data = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut data));
    let name = path.display().to_string();
    match read {
        // Not cut short: the rest of an mbox would be lost without a word.
        Ok(_) if data.len() as u64 > MAX_FILE => errors.push(too_big(&name)),
        Ok(_) => for_each_in_file(&name, data, each, errors),
        Err(e) => errors.push(format!("{name}: {e}")),
    }
}

fn too_big(name: &str) -> String {
    format!(
        "{name}: larger than {} MiB: not read (split the mbox)",
        MAX_FILE >> 20
    )
}

/// An mbox (it starts with a `From ` line) gives its messages, anything else is one message.
/// A message over [`MAX_MESSAGE`] is not imported (said in `errors`).
fn for_each_in_file(
    name: &str,
    data: Vec<u8>,
    each: &mut impl FnMut(&str, Vec<u8>),
    errors: &mut Vec<String>,
) {
    let mut one = |name: &str, m: Vec<u8>| {
        if m.iter().all(u8::is_ascii_whitespace) {
            errors.push(format!("{name}: empty: not a message"));
        } else if m.len() > MAX_MESSAGE {
            errors.push(format!(
                "{name}: {} bytes, larger than {} MiB: not imported",
                m.len(),
                MAX_MESSAGE >> 20
            ));
        } else {
            each(name, m);
        }
    };
    // An mbox may start with blank lines (or a byte-order mark) before its first `From `.
    let body = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&data);
    let lead = body
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(body.len());
    if !body[lead..].starts_with(b"From ") {
        return one(name, data);
    }
    for (i, m) in split_mbox(&body[lead..])
        .into_iter()
        .take(MAX_MESSAGES)
        .enumerate()
    {
        one(&format!("{name}#{}", i + 1), m);
    }
}

/// The messages of an mbox: split at `From ` lines that follow a blank line (or start the
/// file), the `From ` line dropped, `>From ` (mboxrd and mboxo quoting) unquoted once.
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    let mut prev_blank = true;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if prev_blank && line.starts_with(b"From ") {
            if let Some(m) = cur.take() {
                out.push(trim_separator(m));
            }
            cur = Some(Vec::new());
            prev_blank = false;
            continue;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        prev_blank = body.is_empty() || body == b"\r";
        let Some(m) = cur.as_mut() else { continue };
        let gt = line.iter().take_while(|&&b| b == b'>').count();
        if gt > 0 && line[gt..].starts_with(b"From ") {
            m.extend_from_slice(&line[1..]);
        } else {
            m.extend_from_slice(line);
        }
    }
    if let Some(m) = cur {
        out.push(trim_separator(m));
    }
    out
}

/// The blank line before the next `From ` belongs to the mbox, not the message.
fn trim_separator(mut m: Vec<u8>) -> Vec<u8> {
    if m.ends_with(b"\n\n") {
        m.pop();
    } else if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    }
    m
}

/// The top-level header fields, unfolded, as (lower-case name, value).
fn headers(raw: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in raw.split(|&b| b == b'\n').take(2000) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// Addresses in a header value (`Name <a@b>, c@d`).
fn addresses(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')'))
        .filter(|t| t.contains('@') && !t.starts_with('@') && !t.ends_with('@'))
}

/// The `Return-Path` (the envelope sender a delivery recorded).
fn return_path(raw: &[u8]) -> Option<String> {
    let h = headers(raw);
    let (_, v) = h.iter().find(|(n, _)| n == "return-path")?;
    Some(v.trim_matches(['<', '>', ' ']).to_string())
}

/// The inbox addresses a delivered message was sent to; none: a report to attribute by
/// its contents.
pub fn mailboxes(rules: &Rules, raw: &[u8]) -> Vec<(String, Mailbox)> {
    let h = headers(raw);
    let mut out: Vec<(String, Mailbox)> = Vec::new();
    // Envelope headers first: `To` of a bounce is the return path too, but a forwarded
    // message's `To` is someone else's.
    for names in [
        &[
            "delivered-to",
            "x-original-to",
            "envelope-to",
            "x-envelope-to",
        ][..],
        &["to", "cc"][..],
    ] {
        for (_, v) in h.iter().filter(|(n, _)| names.contains(&n.as_str())) {
            for a in addresses(v) {
                if let Some(mb) = rules.mailbox(a) {
                    if !out.iter().any(|(x, _)| x.eq_ignore_ascii_case(a)) {
                        out.push((a.to_ascii_lowercase(), mb));
                    }
                }
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    vec![("(imported)".to_string(), Mailbox::Feedback)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_splits_at_from_lines_after_blank_lines_and_unquotes() {
        let mbox = b"From MAILER-DAEMON Mon Jan  1 00:00:00 2026\nSubject: a\n\nbody a\n>From here\nFrom inside a line\n\nFrom x@y Tue Jan  2 00:00:00 2026\nSubject: b\n\nbody b\n";
        let m = split_mbox(mbox);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(
            String::from_utf8_lossy(&m[0]),
            "Subject: a\n\nbody a\nFrom here\nFrom inside a line\n"
        );
        assert_eq!(String::from_utf8_lossy(&m[1]), "Subject: b\n\nbody b\n");
    }

    /// An import killed (or refused by the list's owner) after a message was stored and
    /// before it was acted on: importing the same file again finds it stored, so the next
    /// import must process what was left, not count it as done.
    #[test]
    fn the_next_import_processes_messages_an_earlier_one_left_unprocessed() {
        let dir = tempfile::tempdir().unwrap();
        let store = InboxStore::open(dir.path()).unwrap();
        let global = Global::shared(dir.path());
        let rules = Rules::new(
            None,
            "bounces.acme.example",
            &[],
            crate::bounce::policy::BouncePolicy::default(),
        );
        let raw = b"To: postmaster@bounces.acme.example\r\nSubject: hello\r\n\r\nhi\r\n".to_vec();
        let file = dir.path().join("m.eml");
        std::fs::write(&file, &raw).unwrap();
        // What the killed import left: stored, nothing done.
        let stored = Stored {
            id: 0,
            at_ms: crate::store::now_ms(),
            mail_from: String::new(),
            client: "import:m.eml".into(),
            rcpts: mailboxes(&rules, &raw),
            effects: Vec::new(),
        };
        let Put::New(id) = store.put(stored, &raw).unwrap() else {
            panic!("new")
        };
        let sum = import(&store, &global, &rules, &file);
        assert_eq!((sum.new, sum.duplicates, sum.resumed), (0, 1, 1), "{sum:?}");
        let done = store.get(id).unwrap().unwrap().effects;
        assert!(
            done.iter().any(|e| e.contains("kept for a person")),
            "{done:?}"
        );
        let sum = import(&store, &global, &rules, &file);
        assert_eq!(sum.resumed, 0, "done once: {sum:?}");
        // Older than keep_days: an import without serve deletes it too (its digest stays).
        let old = Stored {
            id: 0,
            at_ms: crate::store::now_ms() - 31 * 24 * 3600 * 1000,
            mail_from: String::new(),
            client: "import:old.eml".into(),
            rcpts: Vec::new(),
            effects: vec!["kept".into()],
        };
        // (In a store of its own: ids grow with arrival, and the purge stops at the first
        // message young enough.)
        let dir2 = tempfile::tempdir().unwrap();
        let store2 = InboxStore::open(dir2.path()).unwrap();
        let Put::New(old_id) = store2.put(old, b"Subject: old\r\n\r\nold\r\n").unwrap() else {
            panic!("new")
        };
        import(&store2, &Global::shared(dir2.path()), &rules, &file);
        assert!(store2.get(old_id).unwrap().is_none(), "kept past keep_days");
    }

    #[test]
    fn an_mbox_with_leading_blank_lines_is_an_mbox_and_subdirectories_are_said() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = b"\r\nFrom a@b Mon Nov 30 10:00:00 2026\r\nSubject: one\r\n\r\nx\r\n\r\nFrom a@b Mon Nov 30 10:00:00 2026\r\nSubject: two\r\n\r\ny\r\n";
        std::fs::write(dir.path().join("m.mbox"), mbox).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x.eml"), b"Subject: x\r\n\r\nx\r\n").unwrap();
        let mut got = Vec::new();
        let errors = read_messages(dir.path(), |name, raw| got.push((name.to_string(), raw)));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[1].1.starts_with(b"Subject: two"), "{got:?}");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("sub: a directory"), "{errors:?}");
        // Nothing to store: an empty file, a dangling link.
        std::fs::write(dir.path().join("sub/empty.eml"), b"\r\n").unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("sub/gone.eml")).unwrap();
        let mut got = 0;
        let errors = read_messages(&dir.path().join("sub"), |_, _| got += 1);
        assert_eq!(got, 1, "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("empty.eml: empty"))
                && errors
                    .iter()
                    .any(|e| e.contains("gone.eml: not a regular file")),
            "{errors:?}"
        );
    }

    #[test]
    fn headers_unfold_and_addresses_come_out_of_names() {
        let raw = b"To: \"Bounce\" <bounces+abc@b.example>,\r\n  other@x.example\r\nX-Original-To: Q@B.example\r\n\r\nTo: body@not.header\r\n";
        let h = headers(raw);
        assert_eq!(h.len(), 2);
        let to: Vec<_> = addresses(&h[0].1).collect();
        assert_eq!(to, vec!["bounces+abc@b.example", "other@x.example"]);
    }
}
