//! The engine's viewer in a real browser (Debian's `chromium-headless-shell`):
//! the dashboards drawn with the values the API returns, a screenshot of the
//! Business dashboard, and text from telemetry escaped everywhere it shows.
//!
//! `--dump-dom` serializes the page after its scripts ran (with a virtual time
//! budget for the fetches); every panel element carries `data-panel-id` and
//! `data-state`, and every number it shows carries its raw value in `data-v`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use e2e::engine::{Engine, address_after, spans, spawn};
use serde_json::Value;

const BROWSER: &str = "chromium-headless-shell";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// Starts the engine with `args`; returns it, the API's address, and its stderr and stdout lines.
fn start(
    args: &[&str],
) -> (
    Engine,
    String,
    mpsc::Receiver<String>,
    mpsc::Receiver<String>,
) {
    let (engine, err_lines, out_lines) = spawn(args);
    let api = address_after(&err_lines, "http://");
    (engine, api, err_lines, out_lines)
}

/// The page at `url` after its scripts ran, as the browser serializes it.
fn dump_dom(url: &str) -> String {
    let out = Command::new(BROWSER)
        .args([
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BROWSER} (tests/run installs it): {e}"));
    assert!(
        out.status.success(),
        "{BROWSER} failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the DOM is UTF-8")
}

fn screenshot(url: &str, path: &Path) {
    let _ = std::fs::remove_file(path);
    let out = Command::new(BROWSER)
        .args([
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=20000",
            "--window-size=1400,1500",
            &format!("--screenshot={}", path.display()),
            url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BROWSER}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(url: String) -> Value {
    reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: not JSON: {e}"))
}

/// One panel element of the dumped page: its state and the raw numbers it shows.
#[derive(Debug)]
struct Drawn {
    state: String,
    numbers: Vec<f64>,
    html: String,
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(tag[at..].split('"').next()?.to_string())
}

/// The panel elements of a dumped dashboard page, by panel id.
fn panels_in(dom: &str) -> std::collections::BTreeMap<u64, Drawn> {
    let mut out = std::collections::BTreeMap::new();
    let starts: Vec<usize> = dom
        .match_indices("<div class=\"panel")
        .map(|(i, _)| i)
        .collect();
    for (n, &start) in starts.iter().enumerate() {
        // the last panel ends where the page's script begins
        let end = starts
            .get(n + 1)
            .copied()
            .or_else(|| dom[start..].find("<script").map(|i| start + i))
            .unwrap_or(dom.len());
        let chunk = &dom[start..end];
        let tag = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
        let id: u64 = attribute(tag, "data-panel-id")
            .and_then(|v| v.parse().ok())
            .expect("every panel has its id");
        let numbers = chunk
            .match_indices(" data-v=\"")
            .filter_map(|(i, m)| chunk[i + m.len()..].split('"').next())
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("data-v {v:?} is a number"))
            })
            .collect();
        out.insert(
            id,
            Drawn {
                state: attribute(tag, "data-state").unwrap_or_default(),
                numbers,
                html: chunk.to_string(),
            },
        );
    }
    out
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn same_numbers(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(1.0))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| e2e::compose::repo_root().join("target"))
}

#[tokio::test]
async fn the_demo_viewer_draws_every_panel_with_the_apis_values() {
    let (_engine, api, _err, _out) = start(&["demo", "--listen", "127.0.0.1:0"]);
    let base = format!("http://{api}");
    let catalog = get(format!("{base}/api/dashboards")).await;
    let span = &catalog["span"];
    let (from, to) = (
        span["from"].as_i64().expect("the demo has data"),
        span["to"].as_i64().unwrap(),
    );
    let mut drawn_with_data = 0;
    for uid in ["otelguard-business", "otelguard-security"] {
        let dashboard = get(format!("{base}/api/dashboards/{uid}")).await;
        let dom = dump_dom(&format!("{base}/#/d/{uid}"));
        let drawn = panels_in(&dom);
        let panels = dashboard["panels"].as_array().unwrap();
        assert_eq!(
            drawn.len(),
            panels.len(),
            "every panel of {uid} is on the page"
        );
        for p in panels {
            let id = p["id"].as_u64().unwrap();
            let d = &drawn[&id];
            let title = p["title"].as_str().unwrap();
            match p["type"].as_str().unwrap() {
                "row" | "text" => {
                    assert_eq!(d.state, "rendered", "{uid} panel {title}");
                    continue;
                }
                _ => {}
            }
            // what the API returns for the range the page starts with (the data held)
            let answer = get(format!(
                "{base}/api/dashboards/{uid}/panels/{id}?from={from}&to={to}"
            ))
            .await;
            let frame = &answer["frames"][0];
            let rows = frame["rows"].as_array().expect("a frame has rows");
            let columns = frame["columns"].as_array().unwrap();
            let expected: Vec<f64> = rows
                .iter()
                .flat_map(|r| {
                    columns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c["kind"] == "number")
                        .filter_map(|(i, _)| r[i].as_f64())
                        .collect::<Vec<_>>()
                })
                .collect();
            if rows.is_empty() {
                assert_eq!(d.state, "nodata", "{uid} panel {title}: {}", d.html);
                assert!(d.html.contains("no data"), "{}", d.html);
            } else {
                assert_eq!(d.state, "rendered", "{uid} panel {title}: {}", d.html);
                drawn_with_data += 1;
            }
            assert!(
                same_numbers(&sorted(d.numbers.clone()), &sorted(expected.clone())),
                "{uid} panel {title:?} shows {:?}, the API returns {:?}",
                sorted(d.numbers.clone()),
                sorted(expected)
            );
        }
    }
    assert!(
        drawn_with_data >= 10,
        "the demo's dashboards have data in most panels, {drawn_with_data} drawn with data"
    );

    // the screenshot the README shows
    let shot = target_dir().join("viewer-business.png");
    screenshot(&format!("{base}/#/d/otelguard-business"), &shot);
    let png = std::fs::read(&shot).expect("the screenshot is written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a page with content, not a blank one: {} bytes",
        png.len()
    );
    eprintln!("screenshot of the Business dashboard: {}", shot.display());
}

#[tokio::test]
async fn text_from_telemetry_is_escaped_in_every_view() {
    let engine = e2e::engine::run_receiving(&[]);
    let (api, otlp, out_lines) = (&engine.api, &engine.otlp, &engine.out);
    // a flood from an "address" that is markup, then a later span to close its windows
    let t0 = (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000;
    for (from, to, who) in [
        (0, 2000, HOSTILE),
        (2000, 4000, HOSTILE),
        (12_000, 12_001, "192.0.2.1"),
    ] {
        e2e::engine::post_traces(otlp, &spans(t0, from, to, who)).await;
    }
    let line = out_lines
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("an alert on stdout");
    let alert: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(alert["entity"]["client.address"], HOSTILE);
    let trace_id = alert["trace_ids"][0]
        .as_str()
        .expect("a sample trace")
        .to_string();

    let base = format!("http://{api}");
    let escaped = "&lt;img src=x onerror=alert(1)&gt;";
    for (view, must_show) in [
        ("#/", escaped),
        ("#/d/otelguard-security", escaped),
        (&format!("#/trace/{trace_id}")[..], escaped),
    ] {
        let dom = dump_dom(&format!("{base}/{view}"));
        assert!(
            dom.contains(must_show),
            "{view}: the hostile address is shown as text"
        );
        assert!(
            !dom.contains("<img"),
            "{view}: an element was made from telemetry:\n{dom}"
        );
    }
    // the sample trace is drawn as a waterfall of its spans
    let dom = dump_dom(&format!("{base}/#/trace/{trace_id}"));
    assert!(dom.contains("class=\"waterfall\""), "{dom}");
    assert!(
        dom.contains("shop-gateway: GET /api/products/{id}"),
        "{dom}"
    );
}
