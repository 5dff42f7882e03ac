//! The prune report: one CSV row per list row that was dropped (or kept with a warning).
//!
//! Columns: `file,line,address,reason,detail`. The report is read by people in a
//! spreadsheet and by scripts, so two things are guarded:
//! - one row per line: control characters in a cell (a CR/LF injection attempt, a NUL) are
//!   written as visible escapes (`\r`, `\n`, `\u0000`; a backslash as `\\`), so `wc -l`
//!   and `grep` work and nothing can forge a row;
//! - no formulas: a cell that starts with `=`, `+`, `-` or `@` gets a leading `'` (the
//!   OWASP advice for CSV injection), since list cells are untrusted and the report is
//!   opened in spreadsheet software.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// A prune report being written. Rows are buffered; call [`PruneReport::finish`] to flush.
pub struct PruneReport {
    path: PathBuf,
    out: csv::Writer<BufWriter<File>>,
    counts: BTreeMap<String, u64>,
    /// Reused escape buffers, one per escaped column.
    buf: [String; 3],
}

impl std::fmt::Debug for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PruneReport")
            .field("path", &self.path)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl PruneReport {
    /// Creates (truncates) the report, creating parent directories; writes the CSV header
    /// `file,line,address,reason,detail`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = File::create(path)?;
        let mut out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(BufWriter::with_capacity(64 * 1024, file));
        out.write_record(["file", "line", "address", "reason", "detail"])
            .map_err(csv_io)?;
        Ok(PruneReport {
            path: path.to_owned(),
            out,
            counts: BTreeMap::new(),
            buf: Default::default(),
        })
    }

    /// Records a row whose address came earlier in the lists (one wording for `send` and
    /// `check`, so their reports agree).
    pub fn record_duplicate(
        &mut self,
        file: &Path,
        line: u64,
        address: &str,
    ) -> std::io::Result<()> {
        self.record(
            file,
            line,
            address,
            "duplicate",
            "same address earlier in the list",
        )
    }

    /// Appends one row (buffered). `reason` is a stable code such as `invalid` or
    /// `kept:typo_suspect`; it is counted for [`PruneReport::counts`].
    pub fn record(
        &mut self,
        file: &Path,
        line: u64,
        address: &str,
        reason: &str,
        detail: &str,
    ) -> std::io::Result<()> {
        let [b_file, b_addr, b_detail] = &mut self.buf;
        let file = file.to_string_lossy();
        let file = escape_cell(&file, b_file);
        let address = escape_cell(address, b_addr);
        let detail = escape_cell(detail, b_detail);
        let mut digits = [0u8; 20];
        let line = decimal(line, &mut digits);
        self.out
            .write_record([
                file.as_bytes(),
                line,
                address.as_bytes(),
                reason.as_bytes(),
                detail.as_bytes(),
            ])
            .map_err(csv_io)?;
        match self.counts.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(reason.to_owned(), 1);
            }
        }
        Ok(())
    }

    /// Rows recorded so far, per reason.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Path of the report.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the report to disk; returns its path and the per-reason counts.
    pub fn finish(self) -> std::io::Result<(PathBuf, BTreeMap<String, u64>)> {
        let PruneReport {
            path, out, counts, ..
        } = self;
        let buffered = out.into_inner().map_err(|e| e.into_error())?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        Ok((path, counts))
    }
}

fn csv_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

/// Formats `n` in `buf` without allocating (this runs once per pruned row).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The prune counts as `send` and `check` print them: dropped rows under `pruned rows N`,
/// then rows kept with a warning (`kept:…`, sent and also in the report) counted apart, so
/// the reason lines under each heading add up to its number.
pub fn summary_lines(counts: &BTreeMap<String, u64>, report: &Path) -> Vec<String> {
    let (kept, dropped): (Vec<_>, Vec<_>) =
        counts.iter().partition(|(k, _)| k.starts_with("kept:"));
    let sum = |v: &[(&String, &u64)]| v.iter().map(|(_, n)| **n).sum::<u64>();
    let mut out = vec![format!(
        "  pruned rows {} (report: {})",
        sum(&dropped),
        report.display()
    )];
    out.extend(dropped.iter().map(|(r, n)| format!("    {r:<22} {n}")));
    if !kept.is_empty() {
        out.push(format!(
            "  kept with a warning {} (sent; listed in the report too)",
            sum(&kept)
        ));
        out.extend(kept.iter().map(|(r, n)| format!("    {r:<22} {n}")));
    }
    out
}

/// Makes `cell` safe for a one-row-per-line, formula-free report, borrowing it unchanged
/// in the common case. Also used by `blast suppress export|list`, whose keys and details come
/// from lists and replies just the same.
pub(crate) fn escape_cell<'a>(cell: &'a str, buf: &'a mut String) -> &'a str {
    let formula = matches!(cell.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@'));
    if !formula && !cell.chars().any(needs_escape) {
        return cell;
    }
    buf.clear();
    if formula {
        buf.push('\'');
    }
    for c in cell.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\r' => buf.push_str("\\r"),
            '\n' => buf.push_str("\\n"),
            '\t' => buf.push_str("\\t"),
            c if needs_escape(c) => {
                use std::fmt::Write as _;
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf
}

/// Reverses [`escape_cell`], so a file blast wrote reads back as the values it had (`blast
/// suppress import` of an export). A cell blast did not escape comes back unchanged unless it
/// holds one of the escapes (`'=`, `\\`, `\n`, …).
pub(crate) fn unescape_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    let cell = match cell.strip_prefix('\'') {
        Some(rest) if matches!(rest.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@')) => rest,
        _ => cell,
    };
    if !cell.contains('\\') {
        return std::borrow::Cow::Borrowed(cell);
    }
    let mut out = String::with_capacity(cell.len());
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) if hex.len() == 4 => out.push(ch),
                    _ => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Characters that would break a row across lines or hide in it: C0/C1 controls, DEL,
/// the Unicode line/paragraph separators, and the backslash used for the escapes.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_reverses_escape() {
        for cell in [
            "=cmd|' /C calc'!A0",
            "+1@x.example",
            "-x",
            "@acme.example",
            "a\r\nb\\c\u{0}d\u{2028}",
            "plain",
            "'quoted",
        ] {
            let mut buf = String::new();
            let e = escape_cell(cell, &mut buf).to_string();
            assert_eq!(unescape_cell(&e), cell, "{e:?}");
        }
    }

    #[test]
    fn writes_one_row_per_line_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/prune.csv");
        let mut r = PruneReport::create(&path).unwrap();
        let list = Path::new("lists/a, b.csv");
        r.record(
            list,
            7,
            "a@example.com\r\nBcc: x@evil",
            "control_char",
            "control",
        )
        .unwrap();
        r.record(
            list,
            8,
            "=HYPERLINK(\"x\")",
            "invalid",
            "not valid: \"quote\"",
        )
        .unwrap();
        r.record(list, 9, "jane@gmial.com", "kept:typo_suspect", "gmail.com?")
            .unwrap();
        r.record(list, 10, "a\0b\\c", "invalid", "x").unwrap();
        assert_eq!(r.counts()["invalid"], 2);
        let (p, counts) = r.finish().unwrap();
        assert_eq!(p, path);
        assert_eq!(counts.len(), 3);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], "file,line,address,reason,detail");
        assert_eq!(
            lines[1],
            "\"lists/a, b.csv\",7,a@example.com\\r\\nBcc: x@evil,control_char,control"
        );
        assert_eq!(
            lines[2],
            "\"lists/a, b.csv\",8,\"'=HYPERLINK(\"\"x\"\")\",invalid,\"not valid: \"\"quote\"\"\""
        );
        assert_eq!(lines[4], "\"lists/a, b.csv\",10,a\\u0000b\\\\c,invalid,x");

        // And it reads back as CSV with the same cells.
        let mut rd = csv::Reader::from_path(&path).unwrap();
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(&rows[2][2], "jane@gmial.com");
        assert_eq!(&rows[2][3], "kept:typo_suspect");
    }

    #[test]
    fn decimal_formats() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(1234, &mut b), b"1234");
        assert_eq!(decimal(u64::MAX, &mut b), u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn empty_report_has_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        let (_, counts) = PruneReport::create(&path).unwrap().finish().unwrap();
        assert!(counts.is_empty());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "file,line,address,reason,detail\n"
        );
    }
}
