//! `blast report` of a finished campaign with sent, bounced and deferred recipients: its
//! numbers are `blast status --json`'s (JSON, CSV and HTML alike), and the HTML opens in a
//! real browser (headless Chromium: a screenshot that is a non-blank PNG of the window's
//! size, and a DOM with the charts and tables).

use std::process::Command;

use crate::pipeline::{campaign_toml, csv_list, start_sink, user_unknown, Fixture};

fn blast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `chromium` (Debian's package; `.ci/run` installs it). Missing is a failure, not a skip.
fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!(
        "chromium is not installed (apt-get install chromium): the report's browser test needs it"
    );
}

/// Runs headless Chromium with a time bound (it can hang on a broken display setup).
fn headless(args: &[&str]) -> std::process::Output {
    let mut c = Command::new("timeout");
    c.args([
        "120",
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ])
    .args(args);
    c.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_numbers_are_status_numbers_and_the_html_renders_in_chromium() {
    let f = Fixture::new();
    let mut list: Vec<String> = (0..40).map(|i| format!("u{i}@ok.example")).collect();
    let bad: Vec<String> = (0..3).map(|i| format!("gone{i}@ok.example")).collect();
    list.extend(bad.iter().cloned());
    list.extend((0..5).map(|i| format!("v{i}@other.example")));
    // A pruned row too, for the prune summary.
    let mut csv = csv_list(&list);
    csv.push_str("not-an-address,X,C-999\n");
    f.write("list.csv", csv);
    let sink = start_sink(user_unknown(&bad)).await;
    let toml = campaign_toml("rep", sink.addr, &["list.csv"], "breaker_share = 0\n");
    let campaign = f.write("rep.toml", toml);
    let c = campaign.to_str().unwrap();
    let o = tokio::task::block_in_place(|| blast(&["send", "--quiet", c]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let status: serde_json::Value = serde_json::from_slice(
        &tokio::task::block_in_place(|| blast(&["status", "--json", c])).stdout,
    )
    .unwrap();
    assert_eq!(status["sent"], 45);
    assert_eq!(status["bounced"], 3);

    // JSON: the status object itself, and the rest agrees with it.
    let o =
        tokio::task::block_in_place(|| blast(&["report", c, "--format", "json", "--recipients"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        r["status"], status,
        "the report carries status --json's numbers"
    );
    assert_eq!(r["total"], status["total"]);
    let state = |name: &str| {
        r["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s[0] == name)
            .map(|s| s[1].clone())
            .unwrap()
    };
    for s in ["sent", "bounced", "deferred", "failed", "pending"] {
        assert_eq!(state(s), status[s], "{s}");
    }
    let per_minute: u64 = r["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sent"].as_u64().unwrap())
        .sum();
    assert_eq!(per_minute, 45, "every sent recipient in some minute");
    assert_eq!(r["domains"][0]["domain"], "ok.example");
    assert_eq!(r["domains"][0]["sent"], 40);
    assert_eq!(r["domains"][0]["bounced"], 3);
    assert_eq!(
        r["categories"][0],
        serde_json::json!(["InvalidRecipient", 3])
    );
    assert_eq!(r["prune"]["total"], 1);
    assert_eq!(r["recipients"].as_array().unwrap().len(), 48);
    assert_eq!(r["rates"], status["rates"]);

    // CSV: the same numbers.
    let o = tokio::task::block_in_place(|| blast(&["report", c, "--format", "csv"]));
    let csv_text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        csv_text.starts_with("section,name,field,value\n"),
        "{csv_text}"
    );
    assert!(
        csv_text.contains("state,sent,recipients,45\n"),
        "{csv_text}"
    );
    assert!(
        csv_text.contains("state,bounced,recipients,3\n"),
        "{csv_text}"
    );
    assert!(
        csv_text.contains("domain,ok.example,bounced,3\n"),
        "{csv_text}"
    );
    assert!(csv_text.contains("prune,total,,1\n"), "{csv_text}");

    // HTML: self-contained, with the same numbers.
    let html_path = f.dir.path().join("report.html");
    let o =
        tokio::task::block_in_place(|| blast(&["report", c, "-o", html_path.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("src=\"http") && !html.contains("<link"),
        "no external assets"
    );
    assert!(html.contains("<td id=\"total\">48</td>"), "{html}");
    assert!(
        html.contains("<td data-state=\"sent\">45</td>")
            && html.contains("<td data-state=\"bounced\">3</td>")
    );
    assert!(html.contains("<td id=\"hard-bounces\">3</td>"));

    // A real browser: a screenshot of the window's size that is not blank…
    let shot = f.dir.path().join("shot.png");
    let url = format!("file://{}", html_path.display());
    let o = tokio::task::block_in_place(|| {
        headless(&[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600",
            &url,
        ])
    });
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {}", text(&o)));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1200, 1600));
    // A blank 1200×1600 page compresses to a few KB; text, tables and charts do not.
    assert!(png.len() > 20_000, "a blank page? {} bytes", png.len());
    // …and the DOM it built has the charts and the tables.
    let o = tokio::task::block_in_place(|| headless(&["--dump-dom", &url]));
    let dom = String::from_utf8_lossy(&o.stdout);
    for id in [
        "chart-per-minute",
        "chart-states",
        "chart-categories",
        "chart-complaints",
        "summary",
        "states",
        "domains",
        "rates",
        "prune",
    ] {
        assert!(
            dom.contains(&format!("id=\"{id}\"")),
            "{id} missing from the DOM: {}",
            text(&o)
        );
    }
    assert!(dom.matches("class=\"bar\"").count() >= 4, "bars drawn");
    assert!(dom.contains("ok.example"));
}
