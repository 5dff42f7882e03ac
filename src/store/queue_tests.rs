use super::*;

fn msg(to: &[&str]) -> NewMessage {
    NewMessage {
        mail_from: "app@acme.example".into(),
        rcpt_to: to.iter().map(|s| s.to_string()).collect(),
        data: b"Subject: hi\r\n\r\nbody\r\n".to_vec(),
        user: Some("app".into()),
        smtputf8: false,
        eight_bit: false,
    }
}

/// How long a reopen right after dropping a handle may wait for its lock: sled's background
/// threads release it when they end, a moment after the drop (the same wait a restart has).
const REOPEN_WAIT: Duration = Duration::from_secs(5);
#[test]
fn survives_reopen_and_leaves_when_done() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let q = QueueStore::open(dir.path(), Duration::ZERO).unwrap();
        let e = q.insert(msg(&["a@x.example", "b@y.example"])).unwrap();
        q.flush_now().unwrap();
        e.id
    };
    // The dropped handle's sled threads may hold the file lock a moment longer.
    let q = QueueStore::open(dir.path(), REOPEN_WAIT).unwrap();
    let mut e = q.get(id).unwrap().expect("durable");
    assert_eq!(e.rcpts.len(), 2);
    assert_eq!(q.data(id).unwrap().unwrap(), b"Subject: hi\r\n\r\nbody\r\n");
    e.rcpts[0].status = RcptStatus::Sent;
    q.update(&e).unwrap();
    assert_eq!(q.list().unwrap().len(), 1);
    e.rcpts[1].status = RcptStatus::Bounced;
    q.update(&e).unwrap();
    assert!(q.list().unwrap().is_empty());
    assert!(q.data(id).unwrap().is_none());
    assert_eq!(parse_id(&format_id(id)), Some(id));
}

/// One id format: what `format_id` prints parses back, and nothing shorter does (a decimal
/// `10` once dropped message 16).
#[test]
fn queue_ids_parse_only_in_the_printed_form() {
    assert_eq!(format_id(16), "0000000000000010");
    assert_eq!(parse_id("0000000000000010"), Some(16));
    assert_eq!(parse_id("000000000000000a"), Some(10));
    assert_eq!(parse_id("10"), None);
    assert_eq!(parse_id("999999"), None);
    assert_eq!(parse_id("+000000000000010"), None);
    assert_eq!(parse_id("00000000000000010"), None);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn acknowledged_changes_survive_a_crash_without_a_sled_flush() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    // No background sled flush: after open's checkpoint only the journal reaches disk.
    let opts = QueueOptions {
        sled_flush_every_ms: None,
        ..QueueOptions::default()
    };
    let q = QueueStore::open_with(dir.path(), Duration::ZERO, opts).unwrap();
    let a = q.insert(msg(&["a@x.example", "b@x.example"])).unwrap();
    let b = q.insert(msg(&["c@x.example"])).unwrap();
    q.flush().await.unwrap();
    let mut a2 = a.clone();
    a2.rcpts[0].status = RcptStatus::Sent;
    q.update(&a2).unwrap();
    q.remove(b.id).unwrap();
    let c = q.insert(msg(&["d@x.example"])).unwrap();
    q.flush().await.unwrap();
    // The crash: the files as they are now, the store never closed.
    copy_dir(&path_in(dir.path()), &path_in(crashed.path()));
    {
        let raw = sled::open(path_in(crashed.path())).unwrap();
        let entries = raw.open_tree("entries").unwrap();
        assert!(
            entries.is_empty(),
            "sled alone lost them: the journal must bring them back"
        );
    }
    let r = QueueStore::open(crashed.path(), Duration::ZERO).unwrap();
    assert_eq!(r.get(a.id).unwrap(), Some(a2));
    assert_eq!(
        r.data(a.id).unwrap().unwrap(),
        b"Subject: hi\r\n\r\nbody\r\n"
    );
    assert_eq!(r.get(b.id).unwrap(), None);
    assert_eq!(r.data(b.id).unwrap(), None);
    assert_eq!(r.get(c.id).unwrap(), Some(c.clone()));
    assert_eq!(r.list().unwrap().len(), 2);
    drop(r);
    // Replayed then checkpointed: a second open finds the same, and new ids are new.
    let r = QueueStore::open(crashed.path(), Duration::ZERO).unwrap();
    assert_eq!(r.list().unwrap().len(), 2);
    let d = r.insert(msg(&["e@x.example"])).unwrap();
    assert!(d.id != a.id && d.id != c.id);
}

#[tokio::test]
async fn a_full_segment_checkpoints_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions {
        sled_flush_every_ms: None,
        direct: false,
        segment_bytes: 16 << 10,
    };
    let mut ids = Vec::new();
    {
        let q = QueueStore::open_with(dir.path(), Duration::ZERO, opts.clone()).unwrap();
        for i in 0..20 {
            let mut m = msg(&["a@x.example"]);
            m.data = vec![b'x'; 3000 + i * 500]; // some groups bigger than a segment's rest
            ids.push(q.insert(m).unwrap().id);
            q.flush().await.unwrap();
        }
        let big = NewMessage {
            data: vec![b'y'; 40 << 10], // bigger than a whole segment
            ..msg(&["b@x.example"])
        };
        ids.push(q.insert(big).unwrap().id);
        q.flush().await.unwrap();
    }
    let q = QueueStore::open_with(dir.path(), REOPEN_WAIT, opts).unwrap();
    for id in &ids {
        assert!(q.get(*id).unwrap().is_some(), "{id}");
    }
    assert_eq!(q.data(ids[20]).unwrap().unwrap().len(), 40 << 10);
}

#[test]
fn second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _q = QueueStore::open(dir.path(), Duration::ZERO).unwrap();
    // sled's lock is per process (flock); a second handle in the same process gets the
    // same error a second `blast serve` would.
    match QueueStore::open(dir.path(), Duration::from_millis(100)) {
        Err(Error::Locked(m)) => assert!(m.contains("blast serve"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened twice"),
    }
}
