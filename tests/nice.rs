//! `blast send` gives way: every thread of the process runs at `[lane] nice` (default 10);
//! `nice = 0` leaves the priority alone. Read back from `/proc/PID/task/*/stat` of the real
//! binary while it sends into a sink that holds each message for a while.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blast::niceness::process_nice;

use crate::pipeline::{addrs, campaign_toml, csv_list, start_sink, Fixture};

async fn nice_of_send(lane_extra: &str) -> Vec<i32> {
    let f = Fixture::new();
    f.write("list.csv", csv_list(&addrs("n", "example.net", 2)));
    let sink = start_sink(vec!["delay:*=3s".parse().unwrap()]).await;
    let toml = campaign_toml("nice", sink.addr, &["list.csv"], lane_extra);
    let path = f.write("nice.toml", toml);
    let mut child = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["send", "--quiet"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn blast send");
    let pid = child.id();
    // The sink holds each message 3 s, so 1.5 s in the send is under way: the runtime, the
    // store and the lane have started their threads, and none has ended.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("blast send exited early: {st}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nice = process_nice(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert!(nice.len() > 2, "threads read: {nice:?}");
    nice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_runs_at_the_configured_nice_value() {
    let default = nice_of_send("").await;
    assert!(
        default.iter().all(|&n| n == 10),
        "default nice 10 on every thread: {default:?}"
    );
    let seven = nice_of_send("nice = 7\n").await;
    assert!(seven.iter().all(|&n| n == 7), "{seven:?}");
    let mine = process_nice(std::process::id());
    let base = *mine.iter().min().unwrap();
    let zero = nice_of_send("nice = 0\n").await;
    assert!(
        zero.iter().all(|&n| n == base),
        "nice = 0 leaves it at {base}: {zero:?}"
    );
}

/// `blast serve`: the priority lane's threads run at nice -5 when the process may raise
/// priorities (root here; CAP_SYS_NICE), at the default otherwise — never lower; the
/// threads of blast work inside serve at nice 19.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_raises_the_priority_lane_only_when_permitted() {
    let setup = crate::serve::Setup::new(crate::serve::free_port());
    let (mut child, line) = setup.spawn_first_line();
    assert!(line.contains("submission on"), "{line}");
    let pid = child.id();
    let mut by_name: Vec<(String, i32)> = Vec::new();
    let mut sched: Vec<(String, (u32, u64))> = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = e.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let name =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        if let Some(n) = blast::niceness::thread_nice(pid, tid) {
            by_name.push((name.trim().to_string(), n));
        }
        if let Some(p) = blast::sched::thread_sched(pid, tid) {
            sched.push((name.trim().to_string(), p));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let want = if root { -5 } else { 0 };
    let prio: Vec<_> = by_name
        .iter()
        .filter(|(n, _)| n == "blast-priority")
        .collect();
    assert!(!prio.is_empty(), "{by_name:?}");
    assert!(
        prio.iter().all(|(_, n)| *n == want),
        "priority lane at {want}: {by_name:?}"
    );
    let lane: Vec<_> = by_name.iter().filter(|(n, _)| n == "blast-lane").collect();
    assert!(
        !lane.is_empty() && lane.iter().all(|(_, n)| *n == 19),
        "{by_name:?}"
    );
    // The priority lane asks for the shortest slice; scheduled runs run under SCHED_IDLE.
    for (name, (policy, slice)) in &sched {
        match name.as_str() {
            "blast-priority" => assert_eq!(
                (*policy, *slice),
                (libc::SCHED_OTHER as u32, blast::sched::PRIORITY_SLICE_NS),
                "{sched:?}"
            ),
            "blast-lane" => assert_eq!(*policy, libc::SCHED_IDLE as u32, "{sched:?}"),
            _ => {}
        }
    }
    assert!(sched.iter().any(|(n, _)| n == "blast-lane"), "{sched:?}");
}
