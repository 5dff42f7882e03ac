//! Render + build throughput: subject, text and html templates for a row of six columns,
//! then the full multipart message (~2 KB). One message per iteration, single thread, so
//! the reported elem/s is messages/s on one core.
//!
//! `cargo bench --bench render` measures **thread CPU time** (on Linux): the bench machines
//! are shared 2-core boxes where concurrent builds inflate wall-clock figures several-fold,
//! and the question is "how many messages can one core render", which CPU time answers.
//! `BLAST_BENCH_WALL=1 cargo bench --bench render` measures wall-clock time instead.

use std::hint::black_box;
use std::path::Path;

use blast::message::{build, NamedAddress, Parts};
use blast::render::{Row, Templates};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SUBJECT: &str = "{{first_name}}, your spring offer from {{city}} is here";

const TEXT: &str = "Hi {{first_name}} {{last_name}},

Spring is here, and so is our seasonal sale. As a member since {{member_since}}
you get early access: use the code {{code}} at checkout for 20% off everything in
the store, including the new collection that arrived in {{city}} this week.

The offer runs until the end of the month. Shipping is free on orders over 50 EUR.

Questions? Just reply to this message; a human reads every answer.

Thanks for being with us,
The Acme team

You receive this because {{email}} subscribed to Acme News.
";

const HTML: &str = "<!doctype html>
<html><body style=\"font-family: sans-serif\">
<p>Hi {{first_name}} {{last_name}},</p>
<p>Spring is here, and so is our seasonal sale. As a member since {{member_since}}
you get early access: use the code <b>{{code}}</b> at checkout for 20% off everything in
the store, including the new collection that arrived in {{city}} this week.</p>
<p>The offer runs until the end of the month. Shipping is free on orders over 50 EUR.</p>
<p>Questions? Just reply to this message; a human reads every answer.</p>
<p>Thanks for being with us,<br>The Acme team</p>
<p style=\"font-size: small\">You receive this because {{email}} subscribed to Acme News.</p>
</body></html>
";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn bench(c: &mut Criterion<CpuTime>) {
    let templates = Templates::compile(
        SUBJECT,
        Some((Path::new("spring.txt"), TEXT)),
        Some((Path::new("spring.html"), HTML)),
    )
    .expect("templates compile");
    // The engine path: a conditional block forces handlebars proper for the html part.
    let html_engine = HTML.replace("{{code}}", "{{#if code}}{{code}}{{/if}}");
    let templates_engine = Templates::compile(
        SUBJECT,
        Some((Path::new("spring.txt"), TEXT)),
        Some((Path::new("spring.html"), &html_engine)),
    )
    .expect("templates compile");
    let columns = strings(&[
        "email",
        "first_name",
        "last_name",
        "city",
        "member_since",
        "code",
    ]);
    let values = strings(&[
        "ann.example@example.com",
        "Ann",
        "Müller",
        "Köln",
        "2019",
        "SPRING-7F3K",
    ]);
    let from = NamedAddress {
        name: "Acme News".into(),
        address: "news@acme.example".into(),
    };
    let headers = vec![
        (
            "List-Unsubscribe".to_string(),
            "<https://acme.example/u/8f3a9c>, <mailto:unsub+8f3a9c@acme.example>".to_string(),
        ),
        (
            "List-Unsubscribe-Post".to_string(),
            "List-Unsubscribe=One-Click".to_string(),
        ),
    ];
    let row = Row {
        columns: &columns,
        values: &values,
    };
    let message = |t: &Templates| {
        let r = t.render(black_box(row)).expect("renders");
        let parts = Parts {
            from: &from,
            reply_to: None,
            to: &values[0],
            subject: &r.subject,
            text: r.text.as_deref(),
            html: r.html.as_deref(),
            headers: &headers,
            message_id_domain: "acme.example",
            date: 1_700_000_000,
            message_id: None,
            list_headers: &[],
        };
        build(&parts)
    };
    let size = message(&templates).0.len();
    eprintln!("message size: {size} bytes");

    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Elements(1));
    g.bench_function("render_only", |b| {
        b.iter(|| templates.render(black_box(row)).expect("renders"))
    });
    g.bench_function("render_and_build", |b| b.iter(|| message(&templates)));
    g.bench_function("render_and_build_engine_html", |b| {
        b.iter(|| message(&templates_engine))
    });
    g.finish();
}

/// Thread CPU time (or wall time with `BLAST_BENCH_WALL=1`), in nanoseconds.
struct CpuTime {
    wall: bool,
    origin: std::time::Instant,
}

impl CpuTime {
    fn new() -> Self {
        let wall = std::env::var_os("BLAST_BENCH_WALL").is_some() || !cfg!(target_os = "linux");
        eprintln!(
            "measuring {}",
            if wall {
                "wall-clock time"
            } else {
                "thread CPU time"
            }
        );
        CpuTime {
            wall,
            origin: std::time::Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        if self.wall {
            return self.origin.elapsed().as_nanos() as u64;
        }
        thread_cpu_ns()
    }
}

#[cfg(target_os = "linux")]
fn thread_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: std::ffi::c_long,
        tv_nsec: std::ffi::c_long,
    }
    extern "C" {
        fn clock_gettime(clock: std::ffi::c_int, ts: *mut Timespec) -> std::ffi::c_int;
    }
    const CLOCK_THREAD_CPUTIME_ID: std::ffi::c_int = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass; this clock always exists
    // on Linux, so the return value is 0.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_ns() -> u64 {
    unreachable!("wall-clock time is used off Linux")
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        self.now_ns()
    }
    fn end(&self, start: u64) -> u64 {
        self.now_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

/// Nanoseconds as ns/µs/ms, throughput as elements (messages) per second.
struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e-3, "µs"),
            _ => (1e-6, "ms"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per_iter = match *t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Elements(n) => n,
        } as f64;
        values
            .iter_mut()
            .for_each(|v| *v = per_iter * 1e9 / *v / 1e3);
        match t {
            Throughput::Elements(_) => "Kelem/s",
            _ => "KB/s",
        }
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime::new());
    targets = bench
}
criterion_main!(benches);
