//! Render + build throughput: subject, text and html templates for a row of six columns,
//! then the full multipart message (~2 KB). One message per iteration, single thread, so
//! messages/s = 1 / (time per iteration).
//!
//! `cargo bench --bench render`

use std::hint::black_box;
use std::path::Path;

use blast::message::{build, NamedAddress, Parts};
use blast::render::{Row, Templates};
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

fn bench(c: &mut Criterion) {
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
    let columns = strings(&["email", "first_name", "last_name", "city", "member_since", "code"]);
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
        ("List-Unsubscribe-Post".to_string(), "List-Unsubscribe=One-Click".to_string()),
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

criterion_group!(benches, bench);
criterion_main!(benches);
