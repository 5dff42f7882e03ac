//! A write-ahead journal for the priority queue: the accept path's durability without a sled
//! flush. Under a bulk send's writeback a sled flush (log segments appended → file growth →
//! an ext4 journal commit shared with the other process) had a ~120 ms p99; overwriting a
//! pre-zeroed file changes no metadata, so its sync touches only the data blocks.
//!
//! Layout: segment files `journal.N` of [`SEGMENT_BYTES`], written full of real zeros and
//! fsync'd once when created. A group commit lays its records end to end in one 4096-aligned
//! buffer (zero padded to a block boundary) and writes it with one `pwrite` at a block
//! boundary: with `O_DIRECT|O_DSYNC` that write is the sync; on filesystems refusing
//! `O_DIRECT` (tmpfs) a buffered `pwrite` + `fdatasync`.
//!
//! Record: `magic u32 | crc32 u32 | seq u64 | len u32 | kind u8 | 3 zero bytes | payload`,
//! little endian; the crc covers everything after itself. Sequence numbers only grow, so a
//! record left over from an older lap over the same segment never has the expected next
//! number; replay stops at the first record that is torn (bad crc) or out of sequence.
//! Which segment, offset and sequence replay starts from is the caller's checkpoint (kept in
//! sled, see `queue.rs`).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Size of one segment file.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Block size for `O_DIRECT` (offsets, lengths and buffer addresses are multiples of it).
pub const BLOCK: usize = 4096;
const MAGIC: u32 = 0x214A_4C42; // "BLJ!"
const HEADER: usize = 24;

/// Where replay starts (and the journal writes next): a segment, a block-aligned offset in
/// it, and the sequence number the record there must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Segment number (file `journal.<segment>`).
    pub segment: u32,
    /// Byte offset, a multiple of [`BLOCK`].
    pub offset: u64,
    /// Sequence number of the record expected at `offset`.
    pub seq: u64,
}

impl Position {
    /// 20 bytes for the checkpoint in sled.
    pub fn encode(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&self.segment.to_le_bytes());
        b[4..12].copy_from_slice(&self.offset.to_le_bytes());
        b[12..].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    /// Inverse of [`Position::encode`].
    pub fn decode(b: &[u8]) -> Option<Position> {
        if b.len() != 20 {
            return None;
        }
        Some(Position {
            segment: u32::from_le_bytes(b[..4].try_into().ok()?),
            offset: u64::from_le_bytes(b[4..12].try_into().ok()?),
            seq: u64::from_le_bytes(b[12..].try_into().ok()?),
        })
    }
}

/// A block-aligned, zeroed heap buffer (what `O_DIRECT` needs), reused across groups.
struct AlignedBuf {
    ptr: *mut u8,
    cap: usize,
}

// SAFETY: the buffer is plain bytes owned by this value alone.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new() -> Self {
        AlignedBuf {
            ptr: std::ptr::null_mut(),
            cap: 0,
        }
    }

    /// A zeroed slice of `len` bytes (`len` a multiple of [`BLOCK`]).
    fn zeroed(&mut self, len: usize) -> &mut [u8] {
        if len > self.cap {
            self.free();
            let layout = Layout::from_size_align(len, BLOCK).expect("journal buffer layout");
            // SAFETY: len > 0 (len > cap >= 0) and the layout is valid.
            let p = unsafe { alloc_zeroed(layout) };
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            self.ptr = p;
            self.cap = len;
        }
        // SAFETY: ptr is valid for cap >= len bytes, exclusively borrowed through &mut self.
        let s = unsafe { std::slice::from_raw_parts_mut(self.ptr, len) };
        s.fill(0);
        s
    }

    fn free(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: allocated in `zeroed` with this exact layout.
            unsafe { dealloc(self.ptr, Layout::from_size_align(self.cap, BLOCK).unwrap()) };
            self.ptr = std::ptr::null_mut();
            self.cap = 0;
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        self.free();
    }
}

/// Result of [`Journal::append`].
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written and synced.
    Synced,
    /// The group does not fit in what is left of the segment: nothing was written; the caller
    /// checkpoints (which makes the group durable another way) and moves to the next segment.
    Full,
}

/// The journal's writing side: the open segment and where the next group goes.
pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    direct_allowed: bool,
    file: Option<(u32, File, bool)>,
    pos: Position,
    buf: AlignedBuf,
}

/// Path of segment `n` in `dir`.
pub fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("journal.{n}"))
}

impl Journal {
    /// A journal in `dir` writing at `pos`; `direct` false forces buffered writes (tests of the
    /// fallback path). Segment files are created when first needed.
    pub fn new(dir: &Path, segment_bytes: u64, pos: Position, direct: bool) -> Journal {
        Journal {
            dir: dir.to_path_buf(),
            segment_bytes,
            direct_allowed: direct,
            file: None,
            pos,
            buf: AlignedBuf::new(),
        }
    }

    /// Where the next group will be written.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Segment size in bytes.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Moves writing to `pos` (after a checkpoint). Creates the segment if it is missing, so
    /// a checkpoint never points at a file that does not exist.
    pub fn reset(&mut self, pos: Position) -> io::Result<()> {
        ensure_segment(&self.dir, pos.segment, self.segment_bytes)?;
        if self.file.as_ref().map(|f| f.0) != Some(pos.segment) {
            self.file = None;
        }
        self.pos = pos;
        Ok(())
    }

    /// Whether writes use `O_DIRECT|O_DSYNC` (false until the segment is opened, or after a
    /// fallback).
    pub fn is_direct(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.2)
    }

    /// Writes `records` (kind, payload) as one group and syncs it. On an error the position
    /// is unchanged; the caller must checkpoint before appending again, since part of the
    /// group may be on disk.
    pub fn append(&mut self, records: &[(u8, Vec<u8>)]) -> io::Result<Appended> {
        if records.is_empty() {
            return Ok(Appended::Synced);
        }
        let used: usize = records.iter().map(|(_, p)| HEADER + p.len()).sum();
        let len = used.div_ceil(BLOCK) * BLOCK;
        if self.pos.offset + len as u64 > self.segment_bytes {
            return Ok(Appended::Full);
        }
        let buf = self.buf.zeroed(len);
        let mut at = 0;
        let mut seq = self.pos.seq;
        for (kind, payload) in records {
            at += encode_into(&mut buf[at..], seq, *kind, payload);
            seq += 1;
        }
        self.write_synced(len)?;
        self.pos.offset += len as u64;
        self.pos.seq = seq;
        Ok(Appended::Synced)
    }

    fn write_synced(&mut self, len: usize) -> io::Result<()> {
        let (dir, bytes, n) = (&self.dir, self.segment_bytes, self.pos.segment);
        if self.file.is_none() {
            self.file = Some(open_segment(dir, bytes, n, self.direct_allowed)?);
        }
        let data = self.buf.view(len);
        let (_, file, direct) = self.file.as_ref().expect("segment open");
        match file.write_all_at(data, self.pos.offset) {
            Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
                // Some filesystems accept O_DIRECT at open and refuse it at write.
                let f = open_segment(dir, bytes, n, false)?;
                f.1.write_all_at(data, self.pos.offset)?;
                f.1.sync_data()?;
                self.file = Some(f);
                Ok(())
            }
            Err(e) => Err(e),
            Ok(()) if *direct => Ok(()), // O_DSYNC: durable on return
            Ok(()) => file.sync_data(),
        }
    }
}

fn open_segment(dir: &Path, bytes: u64, n: u32, direct: bool) -> io::Result<(u32, File, bool)> {
    let path = ensure_segment(dir, n, bytes)?;
    if direct {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(&path)
        {
            Ok(f) => return Ok((n, f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let f = OpenOptions::new().write(true).open(&path)?;
    Ok((n, f, false))
}

impl AlignedBuf {
    /// The first `len` bytes as filled after the last [`AlignedBuf::zeroed`] (no clearing).
    fn view(&self, len: usize) -> &[u8] {
        assert!(len <= self.cap);
        if len == 0 {
            return &[];
        }
        // SAFETY: ptr is valid for cap >= len initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, len) }
    }
}

/// Creates segment `n` full of zeros if it is missing or short (written through a temporary
/// name, fsync'd, renamed, directory fsync'd), so later overwrites change no metadata.
pub fn ensure_segment(dir: &Path, n: u32, bytes: u64) -> io::Result<PathBuf> {
    let path = segment_path(dir, n);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= bytes) {
        return Ok(path);
    }
    let tmp = dir.join(format!("journal.{n}.tmp"));
    let mut f = File::create(&tmp)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..k])?;
        left -= k as u64;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

fn encode_into(out: &mut [u8], seq: u64, kind: u8, payload: &[u8]) -> usize {
    out[..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[20] = kind;
    out[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    let crc = crc(&out[8..HEADER + payload.len()]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    HEADER + payload.len()
}

fn crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(b);
    h.finalize()
}

/// Reads segment `from.segment` and calls `apply(kind, payload)` for each valid record from
/// `from` on, in order; returns the position after the last one (block aligned). A missing
/// segment replays nothing.
pub fn replay(
    dir: &Path,
    from: Position,
    mut apply: impl FnMut(u8, &[u8]),
) -> io::Result<Position> {
    let bytes = match std::fs::read(segment_path(dir, from.segment)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(from),
        Err(e) => return Err(e),
    };
    let (end, seq) = scan(&bytes, from.offset as usize, from.seq, &mut apply);
    Ok(Position {
        segment: from.segment,
        offset: (end.div_ceil(BLOCK) * BLOCK) as u64,
        seq,
    })
}

/// Walks records in `seg` from `at` expecting `seq`; returns (end offset, next seq). Between
/// groups there is zero padding up to a block boundary: a non-record at an unaligned offset
/// skips to the next boundary; a non-record at a boundary ends the journal.
fn scan(
    seg: &[u8],
    mut at: usize,
    mut seq: u64,
    apply: &mut impl FnMut(u8, &[u8]),
) -> (usize, u64) {
    let mut end = at;
    while at + HEADER <= seg.len() {
        let h = &seg[at..at + HEADER];
        let magic = u32::from_le_bytes(h[..4].try_into().unwrap());
        if magic != MAGIC {
            if at % BLOCK == 0 {
                break;
            }
            at = at.div_ceil(BLOCK) * BLOCK;
            continue;
        }
        let rec_seq = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let len = u32::from_le_bytes(h[16..20].try_into().unwrap()) as usize;
        if rec_seq != seq || at + HEADER + len > seg.len() {
            break;
        }
        let stored = u32::from_le_bytes(h[4..8].try_into().unwrap());
        if crc(&seg[at + 8..at + HEADER + len]) != stored {
            break; // torn: never acknowledged
        }
        apply(h[20], &seg[at + HEADER..at + HEADER + len]);
        at += HEADER + len;
        end = at;
        seq += 1;
    }
    (end, seq)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
