//! Rendering and message building: strict templates, header injection, wire-format limits,
//! quoted-printable and RFC 2047 round trips, MIME structure.
//!
//! The decoders here are deliberately small and independent of `blast::message`, so a bug
//! in the encoder cannot hide behind the same bug in the decoder.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use blast::message::{build, parse_named_address, sanitize_header_value, NamedAddress, Parts};
use blast::render::{Row, Templates};

// ---------------------------------------------------------------- helpers

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn from() -> NamedAddress {
    NamedAddress {
        name: "Acme News".into(),
        address: "news@acme.example".into(),
    }
}

fn parts<'a>(from: &'a NamedAddress, subject: &'a str) -> Parts<'a> {
    Parts {
        from,
        reply_to: None,
        to: "ann@example.com",
        subject,
        text: Some("Hello\n"),
        html: None,
        headers: &[],
        message_id_domain: "acme.example",
        date: 1_700_000_000,
        message_id: None,
        list_headers: &[],
    }
}

/// Wire rules: CRLF only, no line over 998 octets, and a header block where every line is
/// `Name: value` or a continuation starting with SP/HTAB. Returns (headers, body).
fn check_wire(msg: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    for (i, &b) in msg.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        if b == b'\n' {
            assert!(i > 0 && msg[i - 1] == b'\r', "bare LF at {i}");
        }
        assert_ne!(b, 0, "NUL at {i}");
    }
    assert!(msg.ends_with(b"\r\n"), "message must end with CRLF");
    for line in msg.split(|&b| b == b'\n') {
        assert!(line.len() <= 998 + 1, "line of {} octets", line.len() - 1);
    }
    let split = find(msg, b"\r\n\r\n").expect("header/body separator");
    let head = std::str::from_utf8(&msg[..split]).expect("headers are ASCII");
    assert!(head.is_ascii(), "headers must be ASCII");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            let last = headers.last_mut().expect("continuation without header");
            // Unfolding removes only the CRLF (RFC 5322 §2.2.3).
            last.1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("header line without colon");
            assert!(
                !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)),
                "bad field name {name:?}"
            );
            headers.push((
                name.to_string(),
                value.strip_prefix(' ').unwrap_or(value).into(),
            ));
        }
    }
    (headers, msg[split + 4..].to_vec())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn one<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    let v = header(h, name);
    assert_eq!(v.len(), 1, "exactly one {name}: {v:?}");
    v[0]
}

/// RFC 2047 decoder: B and Q encoded-words, whitespace between adjacent words dropped.
fn decode_2047(v: &str) -> String {
    let mut out = String::new();
    let mut pending_ws = String::new();
    let mut prev_encoded = false;
    let mut rest = v;
    while !rest.is_empty() {
        let ws = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        if ws > 0 {
            pending_ws.push_str(&rest[..ws]);
            rest = &rest[ws..];
            continue;
        }
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        if let Some(decoded) = decode_word(word) {
            if !prev_encoded {
                out.push_str(&pending_ws);
            }
            out.push_str(&decoded);
            prev_encoded = true;
        } else {
            out.push_str(&pending_ws);
            out.push_str(word);
            prev_encoded = false;
        }
        pending_ws.clear();
    }
    out + &pending_ws
}

fn decode_word(w: &str) -> Option<String> {
    assert!(
        w.len() <= 75 || !w.starts_with("=?"),
        "encoded-word over 75: {w}"
    );
    let inner = w.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut it = inner.splitn(3, '?');
    let (charset, enc, text) = (it.next()?, it.next()?, it.next()?);
    assert!(charset.eq_ignore_ascii_case("utf-8"));
    let bytes = match enc {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64"),
        "Q" | "q" => qp_decode(&text.replace('_', " ")),
        _ => return None,
    };
    // Each encoded-word must hold whole characters (RFC 2047 §5).
    Some(String::from_utf8(bytes).expect("encoded-word splits a character"))
}

/// Quoted-printable decoder (RFC 2045 §6.7); also checks the encoder's line rules.
fn qp_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in s.split("\r\n") {
        assert!(line.len() <= 76, "QP line of {}: {line:?}", line.len());
        assert!(
            !line.ends_with(' ') && !line.ends_with('\t'),
            "unencoded trailing whitespace: {line:?}"
        );
        let b = line.as_bytes();
        let mut i = 0;
        let mut soft = false;
        while i < b.len() {
            if b[i] == b'=' {
                if i + 1 == b.len() {
                    soft = true;
                    break;
                }
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).expect("=XX"));
                i += 3;
            } else {
                assert!(
                    b[i] == b'\t' || (32..=126).contains(&b[i]),
                    "raw byte {}",
                    b[i]
                );
                out.push(b[i]);
                i += 1;
            }
        }
        if !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    // The split gives one more "line" than there are line breaks.
    out.truncate(out.len() - 2);
    out
}

fn normalise_newlines(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n")
}

/// Decodes a single-part body according to its Content-Transfer-Encoding.
fn decode_body(cte: &str, body: &[u8]) -> String {
    let body = std::str::from_utf8(body).unwrap();
    match cte.to_ascii_lowercase().as_str() {
        "7bit" => body.to_string(),
        "quoted-printable" => String::from_utf8(qp_decode(body)).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
}

/// Splits a multipart body into its parts' (headers, body) using the boundary.
/// One MIME part: unfolded headers and raw (still encoded) body.
type MimePart = (Vec<(String, String)>, Vec<u8>);

fn multipart(body: &[u8], boundary: &str) -> Vec<MimePart> {
    let body = std::str::from_utf8(body).unwrap();
    let delim = format!("--{boundary}");
    assert!(
        body.starts_with(&format!("{delim}\r\n")),
        "no preamble expected"
    );
    let close = format!("\r\n{delim}--\r\n");
    assert!(body.ends_with(&close), "closing delimiter");
    let inner = &body[delim.len() + 2..body.len() - close.len()];
    inner
        .split(&format!("\r\n{delim}\r\n"))
        .map(|p| check_wire(format!("{p}\r\n").as_bytes()))
        .map(|(h, mut b)| {
            b.truncate(b.len() - 2);
            (h, b)
        })
        .collect()
}

fn boundary_of(ct: &str) -> String {
    let b = ct.split("boundary=\"").nth(1).expect("quoted boundary");
    b[..b.find('"').unwrap()].to_string()
}

// ---------------------------------------------------------------- header injection

#[test]
fn header_injection_from_row_never_creates_headers() {
    let templates = Templates::compile(
        "News for {{first_name}}",
        Some((Path::new("t.txt"), "Hi {{first_name}}\n")),
        None,
    )
    .unwrap();
    let columns = strings(&["email", "first_name"]);
    for evil in [
        "x\r\nBcc: victim@example.com",
        "x\nBcc: victim@example.com",
        "x\rBcc: victim@example.com",
        "x\0Bcc: victim@example.com",
        "x\r\n\r\nBcc: victim@example.com",
        "x\r\n Bcc: victim@example.com",
        "\r\nBcc: victim@example.com\r\n",
    ] {
        let values = strings(&["ann@example.com", evil]);
        let r = templates
            .render(Row {
                columns: &columns,
                values: &values,
            })
            .unwrap();
        let extra = vec![
            ("X-Note".to_string(), format!("about {evil}")),
            ("X-Plain".to_string(), evil.to_string()),
        ];
        let evil_from = NamedAddress {
            name: evil.to_string(),
            address: "news@acme.example".into(),
        };
        let to = format!("ann@example.com{evil}");
        let p = Parts {
            to: &to,
            headers: &extra,
            reply_to: Some(&evil_from),
            ..parts(&evil_from, &r.subject)
        };
        let (msg, _) = build(&p);
        let (headers, _) = check_wire(&msg);
        let head = std::str::from_utf8(&msg[..find(&msg, b"\r\n\r\n").unwrap()]).unwrap();
        for line in head.split("\r\n") {
            assert!(
                !line.to_ascii_lowercase().starts_with("bcc"),
                "injected line {line:?} for {evil:?}"
            );
        }
        assert!(header(&headers, "Bcc").is_empty());
        let subject = one(&headers, "Subject");
        assert!(subject.contains("Bcc: victim@example.com"), "{subject}");
        assert!(!subject.contains('\r') && !subject.contains('\n'));
        one(&headers, "To");
        one(&headers, "From");
        one(&headers, "Reply-To");
        one(&headers, "X-Note");
        one(&headers, "X-Plain");
    }
}

#[test]
fn sanitize_replaces_controls_and_borrows_clean_values() {
    use std::borrow::Cow;
    assert!(matches!(
        sanitize_header_value("Grüße, Ann"),
        Cow::Borrowed(_)
    ));
    assert_eq!(sanitize_header_value("a\r\nb"), "a b");
    assert_eq!(sanitize_header_value("a\rb\nc\0d\x7fe\x1bf"), "a b c d e f");
    assert_eq!(sanitize_header_value("a\r\n\0\r\nb"), "a b");
}

#[test]
fn parse_named_address_accepts_config_forms_and_rejects_line_breaks() {
    assert_eq!(
        parse_named_address("Acme News <news@acme.example>").unwrap(),
        NamedAddress {
            name: "Acme News".into(),
            address: "news@acme.example".into()
        }
    );
    assert_eq!(parse_named_address("news@acme.example").unwrap().name, "");
    assert!(parse_named_address("Acme <news@acme.example>\r\nBcc: v@x.example").is_err());
    assert!(parse_named_address("Acme <news@acme.example>\n").is_err());
    assert!(parse_named_address("Acme News").is_err());
    assert!(parse_named_address("").is_err());
}

// ---------------------------------------------------------------- line limits, RFC 2047

#[test]
fn long_single_line_body_and_long_subjects_stay_within_limits() {
    let f = from();
    let body = "a".repeat(5_000);
    let html = format!("<p>{}</p>", "x=y ".repeat(1_500));
    let long_words = "word ".repeat(400);
    let one_token = "z".repeat(1_500);
    let non_ascii = "Grüße aus Köln — 春のセール 🎉 ".repeat(20);
    for subject in [long_words.trim(), one_token.as_str(), non_ascii.trim()] {
        for (text, html) in [
            (Some(body.as_str()), None),
            (Some(body.as_str()), Some(html.as_str())),
        ] {
            let p = Parts {
                text,
                html,
                ..parts(&f, subject)
            };
            let (msg, _) = build(&p);
            let (headers, _) = check_wire(&msg);
            assert_eq!(decode_2047(one(&headers, "Subject")), subject);
        }
    }
    // Folded ASCII subjects keep every line within the soft limit.
    let (msg, _) = build(&parts(&f, long_words.trim()));
    let head = &msg[..find(&msg, b"\r\n\r\n").unwrap()];
    for line in head.split(|&b| b == b'\n') {
        assert!(line.len() <= 79, "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn non_ascii_subject_and_names_round_trip() {
    let f = NamedAddress {
        name: "Café Ünïcode, Ltd.".into(),
        address: "news@acme.example".into(),
    };
    let r = NamedAddress {
        name: "Support \"Team\" <x>".into(),
        address: "help@acme.example".into(),
    };
    for subject in [
        "Grüße, Ann! 🎉",
        "日本語の件名",
        "plain ascii",
        "a  b\tc",
        "=?UTF-8?B?x?=",
    ] {
        let p = Parts {
            reply_to: Some(&r),
            ..parts(&f, subject)
        };
        let (msg, _) = build(&p);
        let (headers, _) = check_wire(&msg);
        let s = one(&headers, "Subject");
        if subject.is_ascii() {
            // TAB is a control character: sanitised to a space like the others.
            assert_eq!(
                s,
                subject.replace('\t', " "),
                "ASCII subjects go out unencoded"
            );
        } else {
            assert_eq!(decode_2047(s), subject);
        }
        let from = one(&headers, "From");
        assert!(from.ends_with(" <news@acme.example>"), "{from}");
        assert_eq!(
            decode_2047(from.trim_end_matches(" <news@acme.example>")),
            "Café Ünïcode, Ltd."
        );
        assert_eq!(
            one(&headers, "Reply-To"),
            r#""Support \"Team\" <x>" <help@acme.example>"#
        );
    }
}

#[test]
fn standard_headers_are_present_and_well_formed() {
    let f = from();
    let (msg, id) = build(&parts(&f, "Hi"));
    let (headers, _) = check_wire(&msg);
    assert_eq!(one(&headers, "Date"), "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_eq!(one(&headers, "From"), "Acme News <news@acme.example>");
    assert_eq!(one(&headers, "To"), "ann@example.com");
    assert_eq!(one(&headers, "MIME-Version"), "1.0");
    assert_eq!(one(&headers, "Message-ID"), format!("<{id}>"));
    let (local, domain) = id.split_once('@').unwrap();
    assert_eq!(domain, "acme.example");
    assert_eq!(local.len(), 32);
    assert!(local.bytes().all(|b| b.is_ascii_hexdigit()));
    let (_, id2) = build(&parts(&f, "Hi"));
    assert_ne!(id, id2);
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Date",
            "From",
            "To",
            "Subject",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding"
        ]
    );
}

#[test]
fn extra_headers_follow_and_cannot_duplicate_ours() {
    let f = from();
    let extra = vec![
        (
            "List-Unsubscribe".to_string(),
            "<https://acme.example/u/1>".to_string(),
        ),
        ("To".to_string(), "other@example.com".to_string()),
        ("Bad Name".to_string(), "x".to_string()),
        ("X-Long".to_string(), "v ".repeat(300)),
    ];
    let p = Parts {
        headers: &extra,
        ..parts(&f, "Hi")
    };
    let (msg, _) = build(&p);
    let (headers, _) = check_wire(&msg);
    assert_eq!(
        one(&headers, "List-Unsubscribe"),
        "<https://acme.example/u/1>"
    );
    assert_eq!(one(&headers, "To"), "ann@example.com");
    assert!(header(&headers, "Bad Name").is_empty());
    assert_eq!(one(&headers, "X-Long"), "v ".repeat(300).trim());
}

// ---------------------------------------------------------------- bodies and MIME

#[test]
fn quoted_printable_round_trips_tricky_bodies() {
    let f = from();
    let tricky = [
        "caf\u{e9}\n".to_string(),
        "a = b\nc=\n=\n".to_string(),
        "trailing space \ntrailing tab\t\n  \n".to_string(),
        format!("{}é", "x".repeat(74)),
        format!("{}=", "x".repeat(74)),
        format!("{} ", "x".repeat(75)),
        format!("{}==", "y".repeat(73)),
        "x".repeat(76) + "\n" + &"x".repeat(77) + "\n" + &"é".repeat(100),
        ".leading dot\n.\nFrom the start\n".to_string(),
        "mixed\r\nline\rendings\n\n\r\r\nend".to_string(),
        "--=_blast_0123 looks like a boundary\n--=_blast_\n".to_string(),
        "emoji 🎉🎉🎉 and tabs\t\there\u{7}bell\0nul".to_string(),
        "é".to_string(),
        " ".to_string(),
        String::new(),
    ];
    for body in &tricky {
        let p = Parts {
            text: Some(body),
            ..parts(&f, "Hi")
        };
        let (msg, _) = build(&p);
        let (headers, raw) = check_wire(&msg);
        let cte = one(&headers, "Content-Transfer-Encoding");
        let mut decoded = decode_body(cte, &raw);
        // A single-part body always ends with a line break on the wire.
        let mut expected = normalise_newlines(body);
        if !expected.ends_with("\r\n") {
            expected.push_str("\r\n");
        }
        if !decoded.ends_with("\r\n") {
            decoded.push_str("\r\n");
        }
        assert_eq!(decoded, expected, "body {body:?} via {cte}");
        if !body.is_ascii() {
            assert_eq!(cte, "quoted-printable");
            assert!(one(&headers, "Content-Type").contains("charset=utf-8"));
        }
    }
    // Plain ASCII with short lines stays readable.
    let p = Parts {
        text: Some("Hello Ann,\n\nsee you.\n"),
        ..parts(&f, "Hi")
    };
    let (msg, _) = build(&p);
    let (headers, body) = check_wire(&msg);
    assert_eq!(one(&headers, "Content-Transfer-Encoding"), "7bit");
    assert_eq!(body, b"Hello Ann,\r\n\r\nsee you.\r\n");
}

#[test]
fn multipart_alternative_when_both_parts_exist() {
    let f = from();
    let text = "Hello Ann é\n";
    let html = "<p>Hello Ann</p>\n--=_blast_ffff\n";
    let p = Parts {
        text: Some(text),
        html: Some(html),
        ..parts(&f, "Hi")
    };
    let (msg, _) = build(&p);
    let (headers, body) = check_wire(&msg);
    let ct = one(&headers, "Content-Type");
    assert!(ct.starts_with("multipart/alternative;"), "{ct}");
    let boundary = boundary_of(ct);
    assert!(boundary.starts_with("=_"), "{boundary}");
    assert!(!text.contains(&boundary) && !html.contains(&boundary));
    let mparts = multipart(&body, &boundary);
    assert_eq!(mparts.len(), 2);
    let want = [("text/plain", text), ("text/html", html)];
    for ((h, b), (ctype, src)) in mparts.iter().zip(want) {
        assert!(one(h, "Content-Type").starts_with(ctype));
        let decoded = decode_body(one(h, "Content-Transfer-Encoding"), b);
        assert_eq!(decoded, normalise_newlines(src));
    }
    // Only the boundary lines themselves start with the delimiter.
    let delim = format!("--{boundary}");
    let n = std::str::from_utf8(&body)
        .unwrap()
        .split("\r\n")
        .filter(|l| l.starts_with(&delim))
        .count();
    assert_eq!(n, 3);

    // Single parts: the message's own Content-Type.
    for (text, html, ctype) in [
        (Some(text), None, "text/plain"),
        (None, Some(html), "text/html"),
    ] {
        let p = Parts {
            text,
            html,
            ..parts(&f, "Hi")
        };
        let (msg, _) = build(&p);
        let (headers, _) = check_wire(&msg);
        assert!(one(&headers, "Content-Type").starts_with(ctype));
    }
}

// ---------------------------------------------------------------- templates

fn compile(subject: &str, text: &str, html: &str) -> Templates {
    Templates::compile(
        subject,
        Some((Path::new("body.txt"), text)),
        Some((Path::new("body.html"), html)),
    )
    .unwrap()
}

#[test]
fn strict_mode_missing_and_empty_fields_are_row_errors() {
    let t = compile(
        "Hi {{first_name}}",
        "{{first_name}} {{city}}",
        "<p>{{first_name}}</p>",
    );
    let columns = strings(&["email", "first_name", "city"]);
    let render = |values: &[&str]| {
        let values = strings(values);
        t.render(Row {
            columns: &columns,
            values: &values,
        })
    };
    assert!(render(&["a@b.example", "Ann", "Köln"]).is_ok());
    // Row shorter than the header: the trailing column is missing.
    let e = render(&["a@b.example", "Ann"]).unwrap_err();
    assert!(e.to_string().contains("city"), "{e}");
    let e = render(&["a@b.example", "  ", "Köln"]).unwrap_err();
    assert!(e.to_string().contains("first_name"), "{e}");

    // A column the list does not have at all.
    let other = strings(&["email", "city"]);
    let values = strings(&["a@b.example", "Köln"]);
    let e = t
        .render(Row {
            columns: &other,
            values: &values,
        })
        .unwrap_err();
    assert!(e.to_string().contains("first_name"), "{e}");
}

#[test]
fn fields_inside_if_may_be_missing_or_empty() {
    let t = compile(
        "Hi{{#if first_name}} {{first_name}}{{/if}}",
        "{{#if city}}in {{city}}{{else}}somewhere{{/if}} {{email}}",
        "{{#unless vip}}regular{{/unless}}",
    );
    let columns = strings(&["email", "first_name", "city"]);
    let values = strings(&["a@b.example", ""]);
    let r = t
        .render(Row {
            columns: &columns,
            values: &values,
        })
        .unwrap();
    assert_eq!(r.subject, "Hi");
    assert_eq!(r.text.as_deref(), Some("somewhere a@b.example"));
    assert_eq!(r.html.as_deref(), Some("regular"));
    let values = strings(&["a@b.example", "Ann", "Köln"]);
    let r = t
        .render(Row {
            columns: &columns,
            values: &values,
        })
        .unwrap();
    assert_eq!(r.subject, "Hi Ann");
    assert_eq!(r.text.as_deref(), Some("in Köln a@b.example"));
}

#[test]
fn referenced_fields_lists_top_level_variables() {
    let t = compile(
        "{{subject_line}} for {{[first name]}}",
        "{{#each items as |it|}}{{it}} {{@index}} {{../footer}}{{/each}}{{this.email}}",
        "{{#if (eq plan \"pro\")}}{{{pro_html}}}{{/if}}{{lookup links key}}{{! {{not_me}} }}",
    );
    let got = t.referenced_fields();
    let want: BTreeSet<String> = [
        "subject_line",
        "first name",
        "items",
        "footer",
        "email",
        "plan",
        "pro_html",
        "links",
        "key",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
}

#[test]
fn html_part_escapes_fields_text_part_does_not() {
    let t = compile("{{name}}", "Hi {{name}}", "<p>Hi {{name}} {{{name}}}</p>");
    let columns = strings(&["name"]);
    let values = strings(&["<script>alert('x')</script> & \"q\""]);
    let r = t
        .render(Row {
            columns: &columns,
            values: &values,
        })
        .unwrap();
    assert_eq!(r.subject, values[0]);
    assert_eq!(r.text.unwrap(), format!("Hi {}", values[0]));
    let html = r.html.unwrap();
    assert!(html.starts_with(
        "<p>Hi &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot; <script>"
    ));
    // Engine path (a block forces handlebars proper): same escaping.
    let t = compile("s", "t", "{{#if name}}{{name}}{{/if}}");
    let r = t
        .render(Row {
            columns: &columns,
            values: &values,
        })
        .unwrap();
    assert!(r.html.unwrap().starts_with("&lt;script&gt;"));
}

#[test]
fn template_errors_name_the_file_and_position() {
    let e = Templates::compile(
        "ok",
        Some((
            Path::new("templates/spring.txt"),
            "line one\n{{#if x}}unclosed",
        )),
        None,
    )
    .unwrap_err();
    assert_eq!(e.file, "templates/spring.txt");
    assert!(e.message.contains("line"), "{}", e.message);
    let e = Templates::compile("{{", None, None).unwrap_err();
    assert_eq!(e.file, "subject");
}

#[test]
fn row_serialises_as_a_map_without_missing_trailing_values() {
    let columns = strings(&["email", "first name", "city"]);
    let values = strings(&["a@b.example", "Ann"]);
    let row = Row {
        columns: &columns,
        values: &values,
    };
    let v = serde_json::to_value(row).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"email": "a@b.example", "first name": "Ann"})
    );
}

#[test]
fn rendered_row_builds_a_clean_message_end_to_end() {
    let t = compile(
        "Spring sale for {{first_name}} 🌸",
        "Hi {{first_name}},\n\nyour code: {{code}}\n",
        "<p>Hi {{first_name}},</p><p>code {{code}}</p>\n",
    );
    let columns = strings(&["email", "first_name", "code"]);
    let values = strings(&["ann@example.com", "Ann\r\nBcc: x@evil.example", "A=B"]);
    let r = t
        .render(Row {
            columns: &columns,
            values: &values,
        })
        .unwrap();
    let f = from();
    let p = Parts {
        text: r.text.as_deref(),
        html: r.html.as_deref(),
        ..parts(&f, &r.subject)
    };
    let (msg, _) = build(&p);
    let (headers, body) = check_wire(&msg);
    assert!(header(&headers, "Bcc").is_empty());
    assert_eq!(
        decode_2047(one(&headers, "Subject")),
        "Spring sale for Ann Bcc: x@evil.example 🌸"
    );
    let mparts = multipart(&body, &boundary_of(one(&headers, "Content-Type")));
    let text = decode_body(one(&mparts[0].0, "Content-Transfer-Encoding"), &mparts[0].1);
    // Bodies keep the row's line break (normalised): only headers are sanitised.
    assert_eq!(
        text,
        "Hi Ann\r\nBcc: x@evil.example,\r\n\r\nyour code: A=B\r\n"
    );
}

#[test]
#[ignore = "prints a sample message for eyeballing"]
fn print_sample() {
    let f = NamedAddress {
        name: "Café Ünïcode, Ltd.".into(),
        address: "news@acme.example".into(),
    };
    let subject = "Grüße aus Köln — 春のセール 🎉 ".repeat(3);
    let p = Parts {
        text: Some("Hello Ann, grüße\n"),
        html: Some("<p>Hello</p>\n"),
        ..parts(&f, &subject)
    };
    let (msg, _) = build(&p);
    println!("{}", String::from_utf8(msg).unwrap());
}
