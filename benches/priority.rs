//! Throughput of the priority lane alone (`cargo bench --bench priority`): `blast serve` as
//! its own process, CLIENTS (default 8) concurrent submitting clients each reusing one
//! authenticated session, N messages in all (default 20,000), every 250 given only after the
//! message is flushed to the queue store; delivered through the priority lane to a sink in
//! this process. Prints accepted msg/s (all 250s received) and accepted+delivered msg/s
//! (the sink has every message), plus serve's CPU time.

#[path = "common/mod.rs"]
mod common;
#[path = "common/serve.rs"]
mod serve;
#[path = "common/submit.rs"]
mod submit;

use std::time::{Duration, Instant};

use serve::env_u64;

/// user + system CPU seconds of a process, from /proc (clock ticks of 100 Hz).
fn proc_cpu(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_u64("N", 20_000);
    let clients = env_u64("CLIENTS", 8).max(1);
    let dir = tempfile::tempdir().unwrap();
    let sink = serve::recording_sink().await;
    let server = serve::Serve::start(dir.path(), sink.addr, "");
    let addr = server.addr;

    let cpu0 = proc_cpu(server.child.id());
    let t0 = Instant::now();
    let per = n / clients;
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut s = submit::Session::open(addr, serve::USER.0, serve::USER.1)
                .await
                .unwrap();
            for i in 0..per {
                s.send(
                    "app@acme.example",
                    &format!("u{c}-{i}@x{}.example", i % 50),
                    "t",
                )
                .await
                .expect("submission");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = t0.elapsed().as_secs_f64();
    let total = per * clients;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (sink.count() as u64) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu(server.child.id()) - cpu0;
    println!("priority lane: {total} messages, {clients} clients reusing sessions, durable accept");
    println!(
        "  accepted:            {:>8.0} msg/s ({accepted:.2} s)",
        total as f64 / accepted
    );
    println!(
        "  accepted+delivered:  {:>8.0} msg/s ({delivered:.2} s, sink has {})",
        total as f64 / delivered,
        sink.count()
    );
    println!(
        "  serve CPU:           {cpu:.2} s = {:.0} µs/message",
        cpu * 1e6 / total as f64
    );
    for l in server.stats() {
        println!("  {l}");
    }
    server.stop(0);
}
