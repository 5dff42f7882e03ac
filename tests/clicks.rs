//! Click tracking end to end: a campaign with `track_clicks = true` sent with serve's
//! config has its HTML links rewritten to serve's redirect (the unsubscribe link and the
//! text part left alone); a GET of a rewritten link is a 302 to the original URL and is
//! counted per campaign and per link (`blast status`, `blast report`); a link whose URL or
//! token was changed redirects nowhere.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::serve::{free_port, term, wait_until, WAIT};
use crate::unsubscribe::{send_process, setup, signed_campaign, spawn};

/// One GET; the whole response text.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: click.acme.example\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_links_redirect_count_and_refuse_tampering() {
    let setup = setup(free_port());
    let cfg = std::fs::read_to_string(setup.config()).unwrap()
        + "\n[tracking]\nurl = \"https://click.acme.example/c/\"\n";
    std::fs::write(setup.config(), cfg).unwrap();
    let (child, web) = spawn(&setup);
    let f = crate::pipeline::Fixture::new();
    f.write(
        "t.html.hbs",
        "<p>Hi {{first_name}}, <a href=\"https://shop.acme.example/sale?a=1&amp;b=2\">the sale</a>.</p>\
         <p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p>",
    );
    let list = vec!["ann@x.example".to_string()];
    let sink = crate::pipeline::start_sink(Vec::new()).await;
    let c = signed_campaign(&f, "spring", sink.addr, &list, "");
    let toml = std::fs::read_to_string(&c)
        .unwrap()
        .replace("[campaign]\n", "[campaign]\ntrack_clicks = true\n");
    std::fs::write(&c, toml).unwrap();
    let out = tokio::task::block_in_place(|| send_process(&setup, &c).output().unwrap());
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let got = sink.received();
    let body = crate::pipeline::flat_text(&got[0].data).replace("=3D", "=");
    let start = body
        .find("https://click.acme.example/c/")
        .unwrap_or_else(|| panic!("no tracked link: {body}"));
    let link: String = body[start..]
        .chars()
        .take_while(|c| !matches!(c, '"' | '\'' | '<' | '>' | ' ' | '\r'))
        .collect();
    assert!(
        body.contains("https://news.acme.example/u/"),
        "the unsubscribe link is not tracked"
    );
    assert!(
        !body.contains("href=\"https://shop.acme.example"),
        "the shop link is tracked: {body}"
    );
    assert_eq!(
        body.matches("https://click.acme.example/c/").count(),
        1,
        "{body}"
    );

    let path = &link["https://click.acme.example".len()..];
    let r = get(web, path).await;
    assert!(r.starts_with("HTTP/1.1 302"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("location: https://shop.acme.example/sale?a=1&b=2\r\n"),
        "{r}"
    );
    // Tampered: another URL under the same token, a changed token.
    let (tok, _) = path.split_once("?u=").unwrap();
    use base64::Engine;
    let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("https://evil.example/");
    let r = get(web, &format!("{tok}?u={evil}")).await;
    assert!(r.starts_with("HTTP/1.1 404"), "no open redirect: {r}");
    let mut bad = path.to_string();
    let i = "/c/".len() + 3;
    let flipped = if &bad[i..=i] == "a" { "b" } else { "a" };
    bad.replace_range(i..=i, flipped);
    assert!(get(web, &bad).await.starts_with("HTTP/1.1 404"));

    // Counted per campaign and per link (after the answer: wait for it).
    let status = f.dir.path().join("spring.toml");
    let clicks = || {
        let o = tokio::task::block_in_place(|| {
            setup.blast(&["status", status.to_str().unwrap(), "--json"])
        });
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["rates"]["clicks"].as_u64().unwrap_or(0)
    };
    wait_until("the click counted", || clicks() == 1).await;
    let o = tokio::task::block_in_place(|| {
        setup.blast(&["report", status.to_str().unwrap(), "--format", "json"])
    });
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        r["links"],
        serde_json::json!([["https://shop.acme.example/sale?a=1&b=2", 1]]),
        "{r}"
    );
    term(child);
}

/// `track_clicks` without `[tracking] url`, or with a host of another organisation, is
/// refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_clicks_needs_an_aligned_tracking_url() {
    let setup = setup(free_port());
    let f = crate::pipeline::Fixture::new();
    let sink = crate::pipeline::start_sink(Vec::new()).await;
    let c = signed_campaign(&f, "spring", sink.addr, &["ann@x.example".to_string()], "");
    let toml = std::fs::read_to_string(&c)
        .unwrap()
        .replace("[campaign]\n", "[campaign]\ntrack_clicks = true\n");
    std::fs::write(&c, toml).unwrap();
    let out = tokio::task::block_in_place(|| send_process(&setup, &c).output().unwrap());
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("track_clicks needs [tracking] url"), "{text}");
    let cfg = std::fs::read_to_string(setup.config()).unwrap()
        + "\n[tracking]\nurl = \"https://click.other.example/c/\"\n";
    std::fs::write(setup.config(), cfg).unwrap();
    let out = tokio::task::block_in_place(|| send_process(&setup, &c).output().unwrap());
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("is not aligned with the From domain acme.example"),
        "{text}"
    );
    assert!(sink.received().is_empty());
}
