//! Streaming CSV reader over one or many list files.
//!
//! The list is never held in memory: one record buffer is reused for every row of every file,
//! so a 10-million-row list costs the same memory as a ten-row one. Problems with a single row
//! (ragged row, invalid UTF-8, a CSV error) come back as [`RowIssue`]s and reading goes on —
//! one bad row in a spreadsheet export must not stop a campaign import. Problems with a whole
//! file (missing, no header, no email column) are [`ListError`]s from [`ListReader::open`],
//! before anything is imported.

use csv::{ByteRecord, StringRecord};
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Read buffer per file. Larger than csv's 8 KiB default: fewer syscalls on big lists.
const BUFFER: usize = 64 * 1024;

/// A whole list file cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// No list files were given at all.
    #[error("no list files given")]
    NoFiles,
    /// The file could not be opened.
    #[error("cannot open list {}: {source}", path.display())]
    Open {
        /// The list file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The header row could not be read (I/O error, a directory, …).
    #[error("cannot read the header row of list {}: {source}", path.display())]
    Header {
        /// The list file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },
    /// The file is empty: there is no header row to find the email column in.
    #[error("list {} is empty: it has no header row", path.display())]
    NoHeader {
        /// The list file.
        path: PathBuf,
    },
    /// The header row is not UTF-8, so column names cannot be matched.
    #[error("the header row of list {} is not valid UTF-8 (column {column})", path.display())]
    HeaderEncoding {
        /// The list file.
        path: PathBuf,
        /// 1-based column number of the first bad header cell.
        column: usize,
    },
    /// Two header cells have the same name: which one a template (or the address) would use
    /// is a guess, so the file is refused. For the email column, names that differ only in
    /// case count too (it is matched without case).
    #[error("list {} has two `{name}` columns (columns {first} and {second}): rename or remove one", path.display())]
    DuplicateColumn {
        /// The list file.
        path: PathBuf,
        /// The repeated name (as the second cell spells it).
        name: String,
        /// 1-based position of the first cell with that name.
        first: usize,
        /// 1-based position of the second one.
        second: usize,
    },
    /// No header cell names the email column.
    #[error("list {} has no `{column}` column (columns: {})", path.display(), found.join(", "))]
    NoEmailColumn {
        /// The list file.
        path: PathBuf,
        /// The column that was asked for.
        column: String,
        /// The header names the file does have.
        found: Vec<String>,
    },
}

/// One data row, borrowed from the reader until the next call to [`ListReader::next_row`].
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    /// Index into [`ListReader::paths`].
    pub file_idx: usize,
    /// 1-based line where the record starts (a quoted cell may span several lines).
    pub line: u64,
    /// Raw cell of the email column (untrimmed; hygiene decides what to trim).
    pub email: &'a str,
    /// All cells, in header order (see [`ListReader::columns`]).
    pub record: &'a StringRecord,
}

/// A row that was skipped, and why. Reading continues after it.
#[derive(Debug, Clone)]
pub struct RowIssue {
    /// Index into [`ListReader::paths`].
    pub file_idx: usize,
    /// 1-based line where the record starts (0 when the problem is not tied to a row).
    pub line: u64,
    /// What was wrong.
    pub kind: RowIssueKind,
    /// The email cell as far as it could be recovered (lossy UTF-8; empty if absent).
    pub raw_email: String,
}

/// What was wrong with a skipped row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowIssueKind {
    /// The row has a different number of cells than the header.
    Ragged {
        /// Cells in the header.
        expected: usize,
        /// Cells in this row.
        got: usize,
    },
    /// A cell is not valid UTF-8.
    BadEncoding {
        /// Header name of the (first) bad cell.
        column: String,
    },
    /// The CSV reader failed (typically I/O); the message is the reader's.
    Csv(String),
    /// A quoted field opened on `line` is never closed where the writer meant it to be: it
    /// runs to the end of the file, or its closing quote is followed by more text after a line
    /// break. csv would read every following row into that one cell; instead the row is
    /// skipped and reading resumes at the next line.
    UnterminatedQuote {
        /// 1-based line of the opening quote.
        line: u64,
        /// Reading resumed at `line + 1` (false: nothing followed it).
        resumed: bool,
    },
}

impl RowIssueKind {
    /// Stable short code for the prune report's `reason` column.
    pub fn code(&self) -> &'static str {
        match self {
            RowIssueKind::Ragged { .. } => "ragged_row",
            RowIssueKind::BadEncoding { .. } => "bad_encoding",
            RowIssueKind::Csv(_) => "csv_error",
            RowIssueKind::UnterminatedQuote { .. } => "unterminated_quote",
        }
    }
}

impl fmt::Display for RowIssueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowIssueKind::Ragged { expected, got } => {
                write!(f, "row has {got} cells but the header has {expected}")
            }
            RowIssueKind::BadEncoding { column } => {
                write!(f, "cell in column `{column}` is not valid UTF-8")
            }
            RowIssueKind::Csv(msg) => write!(f, "CSV error: {msg}"),
            RowIssueKind::UnterminatedQuote { line, resumed } => {
                write!(
                    f,
                    "the quoted field opened on line {line} is never closed: row skipped, "
                )?;
                if *resumed {
                    write!(f, "reading resumed at line {}", line + 1)
                } else {
                    write!(f, "nothing follows it")
                }
            }
        }
    }
}

impl fmt::Display for RowIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for RowIssue {}

/// What `open` learned about one file.
#[derive(Debug)]
struct FileInfo {
    columns: Vec<String>,
    email_idx: usize,
    size: u64,
    layout: Layout,
}

/// Line-ending facts sniffed at open, needed to report correct line numbers.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Whether the last byte of the file ends a line (LF, or a bare CR that [`Scan`] turns
    /// into one): the last record is then terminated.
    ends_with_lf: bool,
}

/// Looks at the last byte of a file.
fn sniff(path: &Path) -> Result<Layout, ListError> {
    use std::io::{Seek, SeekFrom};
    let open_err = |source| ListError::Open {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(open_err)?;
    let mut last = [0u8; 1];
    // Directories and the like fail here quietly: the csv reader reports them as a header
    // error.
    let ends_with_lf = f.seek(SeekFrom::End(-1)).is_ok()
        && f.read_exact(&mut last).is_ok()
        && matches!(last[0], b'\n' | b'\r');
    Ok(Layout { ends_with_lf })
}

/// A quoted field that [`Scan`] found never properly closed.
#[derive(Debug, Clone, Copy)]
struct BadQuote {
    /// Offset of the opening quote, from the scan's start.
    open_byte: u64,
    /// 1-based line of the opening quote, from the scan's start.
    open_line: u64,
    /// Offset just past the first line end after the opening quote (where reading resumes);
    /// `None` when the file ends on the quote's line.
    resume_byte: Option<u64>,
    /// The field runs to the end of the file (its record has no terminator of its own: a
    /// last LF is inside the cell).
    to_eof: bool,
}

/// Where [`Scan`] is in csv's quoting grammar (csv-core's defaults: `,` and `"`, doubled
/// quotes as escapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: an escaped quote or the closing one.
    QuoteInQuoted,
}

/// The bytes of a list file on their way to csv, with two repairs csv cannot make itself:
///
/// - a bare CR (old Mac and some Excel exports, also mixed into LF files) becomes LF, so it
///   ends the line instead of merging two rows; CRLF is left alone (the CR is removed from
///   the last cell later). One byte in, one byte out: csv's offsets stay file offsets.
/// - it follows csv's quoting to find a quoted field that was never closed: one that reaches
///   the end of the file, or whose closing quote is followed by more text after a line
///   break (the closing quote was really the opening quote of a later cell). csv would read
///   all the rows in between as one cell, and report nothing.
struct Scan<R> {
    inner: R,
    /// A byte read ahead to see what follows a CR.
    peeked: Option<u8>,
    /// Bytes handed out so far.
    pos: u64,
    /// 1-based line of the next byte.
    line: u64,
    state: Quoting,
    /// The quoted field being read: (offset, line, offset after its first line end).
    open: Option<(u64, u64, Option<u64>)>,
    /// Fields found broken, oldest first (csv returns their records later).
    bad: VecDeque<BadQuote>,
    at_eof: bool,
}

impl<R: Read> Scan<R> {
    fn new(inner: R) -> Self {
        Scan {
            inner,
            peeked: None,
            pos: 0,
            line: 1,
            state: Quoting::FieldStart,
            open: None,
            bad: VecDeque::new(),
            at_eof: false,
        }
    }

    fn read_retrying(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// One byte through csv's quoting grammar.
    fn step(&mut self, b: u8) {
        use Quoting::*;
        self.state = match (self.state, b) {
            (FieldStart, b'"') => {
                self.open = Some((self.pos, self.line, None));
                Quoted
            }
            (FieldStart | Unquoted, b',' | b'\n') => FieldStart,
            (FieldStart | Unquoted, _) => Unquoted,
            (Quoted, b'"') => QuoteInQuoted,
            (Quoted, b'\n') => {
                if let Some((_, _, resume @ None)) = &mut self.open {
                    *resume = Some(self.pos + 1);
                }
                Quoted
            }
            (Quoted, _) => Quoted,
            (QuoteInQuoted, b'"') => Quoted,
            // The CR of a CRLF ends the field too (a bare CR is already LF here).
            (QuoteInQuoted, b',' | b'\n' | b'\r') => {
                self.open = None;
                FieldStart
            }
            (QuoteInQuoted, _) => {
                // Text after a closing quote: csv goes on with an unquoted field. Across a
                // line break that means the field swallowed rows.
                if let Some((open_byte, open_line, Some(resume))) = self.open.take() {
                    self.bad.push_back(BadQuote {
                        open_byte,
                        open_line,
                        resume_byte: Some(resume),
                        to_eof: false,
                    });
                }
                Unquoted
            }
        };
        if b == b'\n' {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn finish(&mut self) {
        if self.state == Quoting::Quoted {
            if let Some((open_byte, open_line, resume_byte)) = self.open.take() {
                self.bad.push_back(BadQuote {
                    open_byte,
                    open_line,
                    resume_byte,
                    to_eof: true,
                });
            }
        }
    }
}

impl<R: Read> Read for Scan<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        if let Some(b) = self.peeked.take() {
            out[0] = b;
            n = 1;
        }
        if n < out.len() && !self.at_eof {
            let k = self.read_retrying(&mut out[n..])?;
            self.at_eof = k == 0;
            n += k;
        }
        for i in 0..n {
            if out[i] == b'\r' {
                let next = if i + 1 < n {
                    Some(out[i + 1])
                } else if self.at_eof {
                    None
                } else {
                    let mut one = [0u8; 1];
                    let k = self.read_retrying(&mut one)?;
                    self.at_eof = k == 0;
                    self.peeked = (k == 1).then_some(one[0]);
                    self.peeked
                };
                if next != Some(b'\n') {
                    out[i] = b'\n';
                }
            }
            self.step(out[i]);
        }
        if self.at_eof && self.peeked.is_none() {
            self.finish();
        }
        Ok(n)
    }
}

/// Streams the rows of several CSV list files, one after another.
pub struct ListReader {
    paths: Vec<PathBuf>,
    files: Vec<FileInfo>,
    /// The file being read; `paths.len()` when done.
    current: usize,
    /// Reader of `current`. Only one file is open at a time, so a campaign with thousands of
    /// list files does not run out of file descriptors.
    rdr: Option<csv::Reader<Scan<File>>>,
    /// Where `rdr` started in its file: (byte offset, lines before it). Not `(0, 0)` only
    /// after resuming past an unterminated quote.
    base: (u64, u64),
    /// Bytes of the files before `current`, for [`ListReader::progress`].
    done_bytes: u64,
    /// The two states of the one reused record buffer: raw bytes while reading, validated
    /// text once handed out. `Option` so moving between them never allocates.
    raw: Option<ByteRecord>,
    text: Option<StringRecord>,
    /// Reused copy of a last cell while its trailing CR is removed.
    scratch: Vec<u8>,
}

impl fmt::Debug for ListReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListReader")
            .field("paths", &self.paths)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// A csv reader over `path` from byte `from` (0: the header row first).
fn csv_reader(path: &Path, from: u64) -> Result<csv::Reader<Scan<File>>, ListError> {
    use std::io::{Seek, SeekFrom};
    let open_err = |source| ListError::Open {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    if from > 0 {
        file.seek(SeekFrom::Start(from)).map_err(open_err)?;
    }
    // Records end at LF only (a CR before it is removed from the last cell by `next_row`,
    // and `Scan` turns a bare CR into LF): csv's own CRLF handling leaves each record's line
    // number one behind, and an Excel export is CRLF.
    Ok(csv::ReaderBuilder::new()
        .has_headers(from == 0)
        // Ragged rows are reported per row by us, with file and line, instead of failing.
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .buffer_capacity(BUFFER)
        .from_reader(Scan::new(file)))
}

/// Reads and checks the header row; returns the trimmed names.
fn read_header(rdr: &mut csv::Reader<Scan<File>>, path: &Path) -> Result<Vec<String>, ListError> {
    let header = rdr.byte_headers().map_err(|source| ListError::Header {
        path: path.to_owned(),
        source,
    })?;
    let names = header
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let name = std::str::from_utf8(cell).map_err(|_| ListError::HeaderEncoding {
                path: path.to_owned(),
                column: i + 1,
            })?;
            // csv strips a BOM at the very start; strip it again in case the file went
            // through a tool that put one in front of a later cell or doubled it.
            Ok(name.trim_start_matches('\u{feff}').trim().to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    // An empty file, or one whose first line is blank (a CRLF one leaves a lone CR).
    if names.iter().all(String::is_empty) {
        return Err(ListError::NoHeader {
            path: path.to_owned(),
        });
    }
    // Unnamed cells (a trailing comma) are never looked up, so only named ones must be unique.
    for (j, name) in names.iter().enumerate().filter(|(_, n)| !n.is_empty()) {
        if let Some(i) = names[..j].iter().position(|n| n == name) {
            return Err(duplicate(path, name, i, j));
        }
    }
    Ok(names)
}

fn duplicate(path: &Path, name: &str, i: usize, j: usize) -> ListError {
    ListError::DuplicateColumn {
        path: path.to_owned(),
        name: name.to_owned(),
        first: i + 1,
        second: j + 1,
    }
}

/// Exact header match first; then ASCII case-insensitive, because exports write `Email`,
/// `EMAIL` and `email` for the same thing and a mismatch here would stop the whole import.
fn find_column(columns: &[String], wanted: &str) -> Option<usize> {
    let wanted = wanted.trim();
    columns
        .iter()
        .position(|c| c == wanted)
        .or_else(|| columns.iter().position(|c| c.eq_ignore_ascii_case(wanted)))
}

impl ListReader {
    /// Opens every file (errors: missing file, unreadable, no header row, no `email_column` in header → ListError naming the file).
    ///
    /// Every file's header is read and checked here, so a bad file fails the import before
    /// any row is read; only the first file stays open.
    pub fn open(paths: &[PathBuf], email_column: &str) -> Result<Self, ListError> {
        if paths.is_empty() {
            return Err(ListError::NoFiles);
        }
        let mut files = Vec::with_capacity(paths.len());
        let mut first = None;
        for (i, path) in paths.iter().enumerate() {
            let layout = sniff(path)?;
            let mut rdr = csv_reader(path, 0)?;
            let columns = read_header(&mut rdr, path)?;
            let email_idx =
                find_column(&columns, email_column).ok_or_else(|| ListError::NoEmailColumn {
                    path: path.clone(),
                    column: email_column.to_owned(),
                    found: columns.clone(),
                })?;
            // `Email` and `email` would both be taken for the address column.
            let wanted = email_column.trim();
            let mut matches =
                (0..columns.len()).filter(|&i| columns[i].eq_ignore_ascii_case(wanted));
            if let (Some(i), Some(j)) = (matches.next(), matches.next()) {
                return Err(duplicate(path, &columns[j], i, j));
            }
            let size = rdr.get_ref().inner.metadata().map(|m| m.len()).unwrap_or(0);
            files.push(FileInfo {
                columns,
                email_idx,
                size,
                layout,
            });
            if i == 0 {
                first = Some(rdr);
            }
        }
        Ok(ListReader {
            paths: paths.to_vec(),
            files,
            current: 0,
            rdr: first,
            base: (0, 0),
            done_bytes: 0,
            raw: Some(ByteRecord::new()),
            text: None,
            scratch: Vec::new(),
        })
    }

    /// Header names of file `file_idx` (BOM stripped, trimmed).
    pub fn columns(&self, file_idx: usize) -> &[String] {
        &self.files[file_idx].columns
    }

    /// Index of the email column in file `file_idx`'s header.
    pub fn email_index(&self, file_idx: usize) -> usize {
        self.files[file_idx].email_idx
    }

    /// Paths, by file_idx.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// `(bytes read so far, total bytes of all files)`, for a progress bar.
    pub fn progress(&self) -> (u64, u64) {
        let total = self.files.iter().map(|f| f.size).sum();
        let here = self
            .rdr
            .as_ref()
            .map_or(0, |r| self.base.0 + r.position().byte());
        (self.done_bytes + here, total)
    }

    /// Moves on to the next file (after EOF, or after an error that ends this one).
    fn next_file(&mut self) {
        self.rdr = None;
        self.base = (0, 0);
        if let Some(f) = self.files.get(self.current) {
            self.done_bytes += f.size;
        }
        self.current += 1;
    }

    /// Reopens file `current` (files after the first are opened lazily) and checks that its
    /// header is still the one `open` saw.
    fn reopen(&mut self) -> Result<(), RowIssue> {
        let idx = self.current;
        let issue = |msg: String| RowIssue {
            file_idx: idx,
            line: 0,
            kind: RowIssueKind::Csv(msg),
            raw_email: String::new(),
        };
        let path = &self.paths[idx];
        let mut rdr = csv_reader(path, 0).map_err(|e| issue(e.to_string()))?;
        let columns = read_header(&mut rdr, path).map_err(|e| issue(e.to_string()))?;
        if columns != self.files[idx].columns {
            return Err(issue(format!(
                "the header of {} changed after the import started; file skipped",
                path.display()
            )));
        }
        self.rdr = Some(rdr);
        Ok(())
    }

    /// Goes on reading the current file at byte `at`, the start of the line after `lines`
    /// lines (past an unterminated quote). A file that cannot be reopened is left for the
    /// next one: its broken row was reported already.
    fn resume(&mut self, at: u64, lines: u64) {
        match csv_reader(&self.paths[self.current], at) {
            Ok(rdr) => {
                self.rdr = Some(rdr);
                self.base = (at, lines);
            }
            Err(_) => self.next_file(),
        }
    }

    /// Next row of the current file, moving on to the next file at EOF. None when all files are done.
    /// Row-level problems (ragged row, invalid UTF-8, csv errors) come back as Err(RowIssue) and reading continues.
    pub fn next_row(&mut self) -> Option<Result<RowRef<'_>, RowIssue>> {
        // Take the buffer back from the text state of the previous row: no allocation.
        let mut raw = match self.text.take() {
            Some(text) => text.into_byte_record(),
            None => self.raw.take().unwrap_or_default(),
        };
        let mut line;
        let mut broken = None;
        loop {
            if self.current >= self.paths.len() {
                self.raw = Some(raw);
                return None;
            }
            if self.rdr.is_none() {
                if let Err(issue) = self.reopen() {
                    self.next_file();
                    self.raw = Some(raw);
                    return Some(Err(issue));
                }
            }
            let rdr = self.rdr.as_mut().expect("reader opened above");
            match rdr.read_byte_record(&mut raw) {
                Ok(true) => {
                    let info = &self.files[self.current];
                    let (base_byte, base_line) = self.base;
                    // csv's start position skips blank lines uncounted, so work back from
                    // the end: the reader is past this record's LF (unless it is the
                    // unterminated last line), minus the LFs inside quoted cells.
                    let end = rdr.position().clone();
                    let cells = raw.as_slice();
                    // memchr first: almost no row has a line break inside a cell.
                    let inner = if cells.contains(&b'\n') {
                        cells.iter().filter(|&&b| b == b'\n').count() as u64
                    } else {
                        0
                    };
                    let unterminated =
                        base_byte + end.byte() >= info.size && !info.layout.ends_with_lf;
                    line = base_line + end.line().saturating_sub(inner + u64::from(!unterminated));
                    // Scan has read at least as far as csv: a broken quote in this record is
                    // already known.
                    let scan = rdr.get_mut();
                    if scan.bad.front().is_some_and(|b| b.open_byte < end.byte()) {
                        broken = scan.bad.pop_front();
                        if broken.is_some_and(|b| b.to_eof) && !unterminated {
                            line += 1; // the file's last LF was counted as the terminator
                        }
                        break;
                    }
                    if strip_cr(&mut raw, &mut self.scratch) && raw.len() == 1 && raw[0].is_empty()
                    {
                        continue; // a blank CRLF line, which csv skips in LF files
                    }
                    break;
                }
                Ok(false) => self.next_file(),
                Err(e) => {
                    let file_idx = self.current;
                    let line = self.base.1
                        + e.position()
                            .or(Some(rdr.position()))
                            .map_or(0, |p| p.line());
                    // An I/O error would repeat forever: give up on this file, keep the others.
                    if e.is_io_error() {
                        self.next_file();
                    }
                    self.raw = Some(raw);
                    return Some(Err(RowIssue {
                        file_idx,
                        line,
                        kind: RowIssueKind::Csv(e.to_string()),
                        raw_email: String::new(),
                    }));
                }
            }
        }

        let file_idx = self.current;
        if let Some(bad) = broken {
            let found = RowIssue {
                file_idx,
                line,
                kind: RowIssueKind::UnterminatedQuote {
                    line: self.base.1 + bad.open_line,
                    resumed: bad.resume_byte.is_some(),
                },
                raw_email: raw
                    .get(self.files[file_idx].email_idx)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            };
            if let Some(at) = bad.resume_byte {
                self.resume(self.base.0 + at, self.base.1 + bad.open_line);
            }
            self.raw = Some(raw);
            return Some(Err(found));
        }
        let info = &self.files[file_idx];
        let issue = |kind, raw: &ByteRecord| RowIssue {
            file_idx,
            line,
            kind,
            raw_email: raw
                .get(info.email_idx)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        };
        if raw.len() != info.columns.len() {
            let found = issue(
                RowIssueKind::Ragged {
                    expected: info.columns.len(),
                    got: raw.len(),
                },
                &raw,
            );
            self.raw = Some(raw);
            return Some(Err(found));
        }
        match StringRecord::from_byte_record(raw) {
            Ok(text) => {
                let record: &StringRecord = self.text.insert(text);
                Some(Ok(RowRef {
                    file_idx,
                    line,
                    email: &record[info.email_idx],
                    record,
                }))
            }
            Err(e) => {
                let column = info.columns[e.utf8_error().field()].clone();
                let raw = e.into_byte_record();
                let found = issue(RowIssueKind::BadEncoding { column }, &raw);
                self.raw = Some(raw);
                Some(Err(found))
            }
        }
    }
}

/// Removes the CR of a CRLF line ending from the last cell; true if there was one.
fn strip_cr(raw: &mut ByteRecord, scratch: &mut Vec<u8>) -> bool {
    let Some(last) = raw.len().checked_sub(1) else {
        return false;
    };
    match raw[last].strip_suffix(b"\r") {
        Some(cell) => {
            scratch.clear();
            scratch.extend_from_slice(cell);
            raw.truncate(last);
            raw.push_field(scratch);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    /// Reads everything: `Ok((file, line, email, cells))` or `Err((file, line, code, raw))`.
    #[allow(clippy::type_complexity)]
    fn drain(
        r: &mut ListReader,
    ) -> Vec<Result<(usize, u64, String, usize), (usize, u64, String, String)>> {
        let mut out = Vec::new();
        while let Some(row) = r.next_row() {
            out.push(match row {
                Ok(row) => Ok((
                    row.file_idx,
                    row.line,
                    row.email.to_owned(),
                    row.record.len(),
                )),
                Err(i) => Err((i.file_idx, i.line, i.kind.code().to_owned(), i.raw_email)),
            });
        }
        out
    }

    #[test]
    fn duplicate_header_names_are_refused_naming_both_positions() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "d.csv",
            b"email,first_name,email\na@x.example,A,b@x.example\n",
        );
        let e = ListReader::open(&[p], "email").unwrap_err().to_string();
        assert!(
            e.contains("d.csv has two `email` columns (columns 1 and 3)"),
            "{e}"
        );
        let p = write(
            &dir,
            "f.csv",
            b"email,first_name,code,first_name\na@x.example,A,1,B\n",
        );
        let e = ListReader::open(&[p], "email").unwrap_err().to_string();
        assert!(
            e.contains("two `first_name` columns (columns 2 and 4)"),
            "{e}"
        );
        // The email column is matched without case, so `Email` and `EMAIL` clash too.
        let p = write(
            &dir,
            "c.csv",
            b"Email,name,EMAIL\na@x.example,A,b@x.example\n",
        );
        let e = ListReader::open(&[p], "email").unwrap_err().to_string();
        assert!(e.contains("two `EMAIL` columns (columns 1 and 3)"), "{e}");
        // Other names differing in case are different template fields; blank cells are fine.
        let p = write(&dir, "ok.csv", b"email,Name,name,,\na@x.example,A,B,,\n");
        ListReader::open(&[p], "email").unwrap();
    }

    #[test]
    fn bom_crlf_quotes_and_multiline() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "a.csv",
            b"\xef\xbb\xbf Email ,name\r\na@example.com,\"Doe, Jane\"\r\n\"b@example.com\",\"two\nlines\"\r\nc@example.com,x\r\n",
        );
        let mut r = ListReader::open(&[p], "email").unwrap();
        assert_eq!(r.columns(0), ["Email", "name"]);
        let rows = drain(&mut r);
        assert_eq!(
            rows,
            vec![
                Ok((0, 2, "a@example.com".into(), 2)),
                Ok((0, 3, "b@example.com".into(), 2)),
                Ok((0, 5, "c@example.com".into(), 2)),
            ]
        );
        assert!(r.next_row().is_none(), "stays done");
    }

    #[test]
    fn line_numbers_survive_blank_lines_and_line_endings() {
        let dir = tempfile::tempdir().unwrap();
        let lf = write(
            &dir,
            "lf.csv",
            b"email,n\n\na@x.org,1\n\n\n\"b@x.org\",\"2\n2\"\nc@x.org,3",
        );
        let crlf = write(
            &dir,
            "crlf.csv",
            b"email,n\r\na@x.org,1\r\n\r\n\"b@x.org\",\"2\r\n2\"\r\nc@x.org,\"3\"\r\n",
        );
        let cr = write(&dir, "cr.csv", b"email,n\ra@x.org,1\rb@x.org,2\r");
        let mut r = ListReader::open(&[lf, crlf, cr], "email").unwrap();
        assert_eq!(r.columns(1), ["email", "n"]);
        let mut got = Vec::new();
        while let Some(row) = r.next_row() {
            let row = row.unwrap();
            got.push((
                row.file_idx,
                row.line,
                row.email.to_owned(),
                row.record[1].to_owned(),
            ));
        }
        let want = [
            (0, 3, "a@x.org", "1"),
            (0, 6, "b@x.org", "2\n2"),
            (0, 8, "c@x.org", "3"),
            (1, 2, "a@x.org", "1"),
            (1, 4, "b@x.org", "2\r\n2"),
            (1, 6, "c@x.org", "3"),
            (2, 2, "a@x.org", "1"),
            (2, 3, "b@x.org", "2"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(f, l, e, n)| (*f, *l, e.to_string(), n.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn record_cells_in_header_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "a.csv", b"name,email\nJane,j@example.com\n");
        let mut r = ListReader::open(&[p], "email").unwrap();
        let row = r.next_row().unwrap().unwrap();
        assert_eq!(row.email, "j@example.com");
        assert_eq!(&row.record[0], "Jane");
    }

    #[test]
    fn ragged_rows_are_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "a.csv",
            b"email,name,city\na@example.com,A\nb@example.com,B,X,extra\nc@example.com,C,Y\n",
        );
        let mut r = ListReader::open(&[p], "email").unwrap();
        let first = r.next_row().unwrap().unwrap_err();
        assert_eq!(
            first.kind,
            RowIssueKind::Ragged {
                expected: 3,
                got: 2
            }
        );
        assert_eq!((first.line, first.raw_email.as_str()), (2, "a@example.com"));
        let second = r.next_row().unwrap().unwrap_err();
        assert_eq!(
            second.kind,
            RowIssueKind::Ragged {
                expected: 3,
                got: 4
            }
        );
        assert_eq!(second.kind.code(), "ragged_row");
        let ok = r.next_row().unwrap().unwrap();
        assert_eq!((ok.line, ok.email), (4, "c@example.com"));
        assert!(r.next_row().is_none());
    }

    #[test]
    fn invalid_utf8_is_a_row_issue_naming_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "a.csv",
            b"email,name\na@example.com,M\xfcller\nb\xff@example.com,B\nc@example.com,C\n",
        );
        let mut r = ListReader::open(&[p], "email").unwrap();
        let e = r.next_row().unwrap().unwrap_err();
        assert_eq!(
            e.kind,
            RowIssueKind::BadEncoding {
                column: "name".into()
            }
        );
        assert_eq!((e.line, e.raw_email.as_str()), (2, "a@example.com"));
        assert!(e.to_string().contains("`name`"));
        let e = r.next_row().unwrap().unwrap_err();
        assert_eq!(
            e.kind,
            RowIssueKind::BadEncoding {
                column: "email".into()
            }
        );
        assert_eq!(e.raw_email, "b\u{fffd}@example.com");
        assert_eq!(r.next_row().unwrap().unwrap().email, "c@example.com");
        assert!(r.next_row().is_none());
    }

    #[test]
    fn several_files_in_order_with_their_own_headers() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(&dir, "a.csv", b"email\na@example.com\n");
        let b = write(&dir, "b.csv", b"name,EMAIL\n");
        let c = write(&dir, "c.csv", b"name,email\nC,c@example.com\n");
        let mut r = ListReader::open(&[a, b, c], "email").unwrap();
        assert_eq!(r.columns(1), ["name", "EMAIL"]);
        assert_eq!(r.email_index(2), 1);
        assert_eq!(
            drain(&mut r),
            vec![
                Ok((0, 2, "a@example.com".into(), 1)),
                Ok((2, 2, "c@example.com".into(), 2))
            ]
        );
        let (done, total) = r.progress();
        assert_eq!(done, total);
    }

    #[test]
    fn file_level_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(&dir, "good.csv", b"email\na@example.com\n");
        let empty = write(&dir, "empty.csv", b"");
        let nocol = write(&dir, "nocol.csv", b"name,phone\nA,1\n");
        let missing = dir.path().join("missing.csv");

        let e = ListReader::open(&[good.clone(), missing], "email").unwrap_err();
        assert!(matches!(e, ListError::Open { .. }));
        assert!(e.to_string().contains("missing.csv"), "{e}");

        let e = ListReader::open(&[good.clone(), empty], "email").unwrap_err();
        assert!(matches!(e, ListError::NoHeader { .. }), "{e:?}");
        assert!(e.to_string().contains("empty.csv"), "{e}");

        let e = ListReader::open(&[nocol, good], "email").unwrap_err();
        assert!(
            e.to_string().contains("nocol.csv") && e.to_string().contains("name, phone"),
            "{e}"
        );

        assert!(matches!(
            ListReader::open(&[], "email"),
            Err(ListError::NoFiles)
        ));

        let bad = write(&dir, "bad.csv", b"em\xffail\nx\n");
        let e = ListReader::open(&[bad], "email").unwrap_err();
        assert!(
            matches!(e, ListError::HeaderEncoding { column: 1, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn file_removed_after_open_is_a_row_issue() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(&dir, "a.csv", b"email\na@example.com\n");
        let b = write(&dir, "b.csv", b"email\nb@example.com\n");
        let c = write(&dir, "c.csv", b"email\nc@example.com\n");
        let mut r = ListReader::open(&[a, b.clone(), c], "email").unwrap();
        std::fs::remove_file(&b).unwrap();
        let rows = drain(&mut r);
        assert_eq!(rows.len(), 3);
        assert!(matches!(&rows[1], Err((1, 0, code, _)) if code == "csv_error"));
        assert_eq!(rows[2], Ok((2, 2, "c@example.com".into(), 1)));
    }

    /// Issue 11.3: an unclosed quote used to swallow every following row silently. It is
    /// reported on the line it opened on and reading resumes at the next line.
    #[test]
    fn unterminated_quote_is_reported_and_reading_resumes_at_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "a.csv",
            b"email,name\na@example.com,Ann\nb@example.com,\"Bob,Paris\nc@example.com,Cy\nd@example.com,\"Di\"\n",
        );
        let mut r = ListReader::open(&[p], "email").unwrap();
        let rows = drain(&mut r);
        assert_eq!(
            rows,
            vec![
                Ok((0, 2, "a@example.com".into(), 2)),
                Err((0, 3, "unterminated_quote".into(), "b@example.com".into())),
                Ok((0, 4, "c@example.com".into(), 2)),
                Ok((0, 5, "d@example.com".into(), 2)),
            ]
        );
        // The message says where the quote opened and what was done.
        let p = write(&dir, "b.csv", b"email,name\n\"a@x.org,A\nb@x.org,B\n");
        let mut r = ListReader::open(&[p], "email").unwrap();
        let issue = r.next_row().unwrap().unwrap_err();
        let text = issue.to_string();
        assert!(
            text.contains("line 2") && text.contains("never closed"),
            "{text}"
        );
        let ok = r.next_row().unwrap().unwrap();
        assert_eq!((ok.line, ok.email), (3, "b@x.org"));
        assert!(r.next_row().is_none());
        // A quote opened on the last line has nothing after it to resume at.
        let p = write(&dir, "c.csv", b"email,name\na@x.org,\"A");
        let mut r = ListReader::open(&[p], "email").unwrap();
        let issue = r.next_row().unwrap().unwrap_err();
        assert_eq!((issue.line, issue.kind.code()), (2, "unterminated_quote"));
        assert!(r.next_row().is_none());
    }

    /// Issue 11.3: a bare CR (old Mac/Excel) ends a line even in a file that also has LF or
    /// CRLF line ends; it used to merge rows into one ragged row.
    #[test]
    fn a_bare_cr_ends_a_line_in_any_file() {
        let dir = tempfile::tempdir().unwrap();
        let lf = write(
            &dir,
            "lf.csv",
            b"email,n\na@x.org,1\rb@x.org,2\rc@x.org,3\n",
        );
        let crlf = write(
            &dir,
            "crlf.csv",
            b"email,n\r\na@x.org,1\rb@x.org,2\r\nc@x.org,3\r",
        );
        let mut r = ListReader::open(&[lf, crlf], "email").unwrap();
        let rows = drain(&mut r);
        let want: Vec<_> = [
            (0, 2, "a@x.org"),
            (0, 3, "b@x.org"),
            (0, 4, "c@x.org"),
            (1, 2, "a@x.org"),
            (1, 3, "b@x.org"),
            (1, 4, "c@x.org"),
        ]
        .iter()
        .map(|(f, l, e)| Ok((*f, *l, e.to_string(), 2)))
        .collect();
        assert_eq!(rows, want);
    }

    /// A CR at the end of one read is decided by the next byte (CRLF stays, a bare CR
    /// becomes LF), however the underlying reader splits the bytes.
    #[test]
    fn scan_decides_a_cr_across_reads() {
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                match self.0.split_first() {
                    Some((&x, rest)) if !b.is_empty() => {
                        b[0] = x;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let mut out = Vec::new();
        Scan::new(OneByte(b"a\rb\r\nc\r\r"))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"a\nb\r\nc\n\n");
    }
}
