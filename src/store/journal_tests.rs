use super::*;

const SEG: u64 = 64 << 10;

fn start(seq: u64) -> Position {
    Position {
        segment: 0,
        offset: 0,
        seq,
    }
}

fn rec(kind: u8, n: usize, fill: u8) -> (u8, Vec<u8>) {
    (kind, vec![fill; n])
}

fn read_all(dir: &Path, from: Position) -> (Vec<(u8, Vec<u8>)>, Position) {
    let mut out = Vec::new();
    let end = replay(dir, from, |k, p| out.push((k, p.to_vec()))).unwrap();
    (out, end)
}

fn round_trip(dir: &Path, direct: bool) -> bool {
    let mut j = Journal::new(dir, SEG, start(1), direct);
    j.reset(start(1)).unwrap();
    let g1 = vec![rec(1, 100, 0xAA), rec(2, 5000, 0xBB)];
    let g2 = vec![rec(3, 8, 0xCC)];
    assert_eq!(j.append(&g1).unwrap(), Appended::Synced);
    assert_eq!(j.append(&g2).unwrap(), Appended::Synced);
    assert_eq!(j.append(&[]).unwrap(), Appended::Synced);
    let (got, end) = read_all(dir, start(1));
    assert_eq!(got, [g1, g2].concat());
    assert_eq!(end, j.position());
    assert_eq!(end.seq, 4);
    assert_eq!(end.offset % BLOCK as u64, 0);
    j.is_direct()
}

#[test]
fn append_sync_replay_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(dir.path(), true);
    // Replay from the middle: only what follows.
    let mid = Position {
        segment: 0,
        offset: 8192,
        seq: 3,
    };
    let (got, _) = read_all(dir.path(), mid);
    assert_eq!(got, vec![rec(3, 8, 0xCC)]);
}

#[test]
fn buffered_fallback_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!round_trip(dir.path(), false), "forced buffered mode");
    // Older tmpfs refuses O_DIRECT at open (EINVAL; newer kernels accept it): either way
    // the journal works there.
    if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
        round_trip(shm.path(), true);
    }
}

#[test]
fn torn_tail_ends_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::new(dir.path(), SEG, start(1), true);
    let g1 = vec![rec(1, 300, 1)];
    j.append(&g1).unwrap();
    let after_g1 = j.position();
    j.append(&[rec(1, 300, 2), rec(2, 300, 3)]).unwrap();
    // Crash mid-write: the last record's tail never reached the disk.
    let path = segment_path(dir.path(), 0);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let last = after_g1.offset + (HEADER + 300 + HEADER + 200) as u64;
    f.write_all_at(&[0u8; 100], last).unwrap();
    let (got, end) = read_all(dir.path(), start(1));
    assert_eq!(got, vec![g1[0].clone(), rec(1, 300, 2)]);
    assert_eq!(end.seq, 3, "stops before the torn record");
    // A torn first record of a group: nothing of it.
    f.write_all_at(&[0xFFu8; 4], after_g1.offset + HEADER as u64)
        .unwrap();
    let (got, end) = read_all(dir.path(), start(1));
    assert_eq!(got, g1);
    assert_eq!(end, after_g1);
}

#[test]
fn stale_records_of_an_older_lap_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::new(dir.path(), SEG, start(1), true);
    // Lap 1 fills the segment.
    let mut n = 0;
    while j.append(&[rec(1, 1000, 7)]).unwrap() == Appended::Synced {
        n += 1;
    }
    assert_eq!(n, SEG as usize / BLOCK, "one block per group, then Full");
    let (got, _) = read_all(dir.path(), start(1));
    assert_eq!(got.len(), n);
    // Lap 2 over the same segment: one group, then old records with lower numbers.
    let lap2 = start(1 << 32);
    j.reset(lap2).unwrap();
    let g = vec![rec(2, 5000, 9)];
    j.append(&g).unwrap();
    let (got, end) = read_all(dir.path(), lap2);
    assert_eq!(got, g);
    assert_eq!(end.seq, lap2.seq + 1);
}

#[test]
fn full_segment_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::new(dir.path(), SEG, start(1), true);
    assert_eq!(
        j.append(&[rec(1, SEG as usize, 1)]).unwrap(),
        Appended::Full
    );
    assert_eq!(j.position(), start(1));
    assert_eq!(read_all(dir.path(), start(1)).0, vec![]);
}

#[test]
fn position_codec() {
    let p = Position {
        segment: 1,
        offset: 4096 * 7,
        seq: u64::MAX - 3,
    };
    assert_eq!(Position::decode(&p.encode()), Some(p));
    assert_eq!(Position::decode(&[0; 3]), None);
}
