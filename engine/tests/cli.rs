//! The `engine` binary on small captures written here: replay determinism, the
//! alert fields, how broken rules are reported while the others run, and
//! `rules test`'s printed verdicts and exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const T0_NS: i64 = 1_768_471_200_000_000_000; // 2026-01-15T10:00:00Z

fn attr(k: &str, v: Value) -> Value {
    json!({ "key": k, "value": v })
}

/// A capture with a flood (4000 requests in 40 s from one address) and a brute
/// force (15 failures on one account), as OTLP/JSON lines in time order.
fn write_capture(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for chunk in 0..40 {
        let spans: Vec<Value> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                let t = T0_NS + n * 10_000_000;
                json!({
                    "traceId": format!("{:032x}", n + 1), "spanId": format!("{:016x}", n + 1),
                    "name": "GET /api/products/{id}", "kind": 2,
                    "startTimeUnixNano": t.to_string(), "endTimeUnixNano": (t + 3_000_000).to_string(),
                    "attributes": [
                        attr("client.address", json!({"stringValue": "203.0.113.9"})),
                        attr("http.route", json!({"stringValue": "/api/products/{id}"})),
                        attr("http.response.status_code", json!({"intValue": "200"})),
                    ],
                })
            })
            .collect();
        lines.push(json!({"resourceSpans": [{
            "resource": {"attributes": [attr("service.name", json!({"stringValue": "shop-gateway"}))]},
            "scopeSpans": [{"spans": spans}]}]}));
        if chunk < 15 {
            let t = T0_NS + chunk * 1_000_000_000;
            lines.push(json!({"resourceLogs": [{
            "resource": {"attributes": [attr("service.name", json!({"stringValue": "shop-auth"}))]},
            "scopeLogs": [{"logRecords": [{
                "timeUnixNano": t.to_string(), "eventName": "shop.auth.login",
                "traceId": format!("{:032x}", 90_000 + chunk),
                "attributes": [
                    attr("user.hash", json!({"stringValue": "hash-of-alice"})),
                    attr("client.address", json!({"stringValue": "198.51.100.7"})),
                    attr("shop.auth.outcome", json!({"stringValue": "failure"})),
                    attr("shop.auth.failure_reason", json!({"stringValue": "bad_password"})),
                ]}]}]}]}));
        }
    }
    let path = dir.join("attack.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).expect("write capture");
    path
}

fn engine(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .output()
        .expect("run engine")
}

/// `engine replay CAPTURE --rules RULES --format json [extra...]`.
fn replay_json(capture: &Path, rules: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "replay",
        capture.to_str().expect("a UTF-8 path"),
        "--rules",
        rules.to_str().expect("a UTF-8 path"),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    engine(&args)
}

/// The KPI values `replay --kpis` prints for `capture`, as JSON.
fn kpi_rows(capture: &Path) -> Vec<Value> {
    let out = replay_json(capture, &rules_dir(), &["--kpis"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otelguard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn replay_is_byte_identical_and_alerts_carry_the_contract_fields() {
    let dir = temp_dir("replay");
    let capture = write_capture(&dir);
    let first = replay_json(&capture, &rules_dir(), &[]);
    let second = replay_json(&capture, &rules_dir(), &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        first.stdout, second.stdout,
        "two replays of one capture differ"
    );
    let alerts: Vec<Value> = String::from_utf8_lossy(&first.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let flood = alerts
        .iter()
        .find(|a| a["rule_id"] == "dos.http_flood.single_source" && a["state"] == "firing")
        .expect("the flood fires");
    assert_eq!(flood["entity"], json!({"client.address": "203.0.113.9"}));
    assert_eq!(flood["severity"], "high");
    assert!(flood["value"].as_i64().unwrap_or(0) >= 3000, "{flood}");
    assert_eq!(flood["trace_ids"].as_array().map(Vec::len), Some(5));
    for field in ["window_start", "window_end", "tags", "summary"] {
        assert!(!flood[field].is_null(), "{field} missing in {flood}");
    }
    let brute = alerts
        .iter()
        .find(|a| a["rule_id"] == "auth.brute_force.single_account" && a["state"] == "firing")
        .expect("the brute force fires");
    assert_eq!(brute["entity"], json!({"user.hash": "hash-of-alice"}));
    assert_eq!(brute["value"], json!(15));
    // nothing fires on the benign address of the login failures
    assert!(
        alerts
            .iter()
            .all(|a| a["entity"]["client.address"] != "198.51.100.7")
    );
}

#[test]
fn a_broken_rule_is_reported_with_its_place_and_the_others_run() {
    let dir = temp_dir("broken");
    let capture = write_capture(&dir);
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let good =
        std::fs::read_to_string(rules_dir().join("auth/brute_force_single_account.sql")).unwrap();
    std::fs::write(rules.join("good.sql"), &good).unwrap();
    let broken = good
        .replace("auth.brute_force.single_account", "broken.rule")
        .replace("user_hash IS NOT NULL", "user_hashh IS NOT NULL");
    std::fs::write(rules.join("broken.sql"), broken).unwrap();

    let check = engine(&["rules", "check", "--rules", rules.to_str().unwrap()]);
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("broken.sql:"), "{err}");
    assert!(err.contains("user_hashh"), "{err}");
    assert!(err.contains("hint:"), "{err}");

    let replay = replay_json(&capture, &rules, &[]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(String::from_utf8_lossy(&replay.stderr).contains("broken.sql"));
    assert!(String::from_utf8_lossy(&replay.stdout).contains("auth.brute_force.single_account"));
}

#[test]
fn bad_lines_in_a_capture_are_counted_and_the_rest_is_kept() {
    let dir = temp_dir("badlines");
    let capture = write_capture(&dir);
    let mut text = std::fs::read_to_string(&capture).unwrap();
    text.insert_str(0, "{not json\n\"resourceSpans\": 3\n");
    std::fs::write(&capture, text).unwrap();
    let dead = dir.join("dead.jsonl");
    let out = replay_json(
        &capture,
        &rules_dir(),
        &["--dead-letter", dead.to_str().unwrap()],
    );
    assert!(out.status.success());
    let letters: Vec<Value> = std::fs::read_to_string(&dead)
        .expect("a dead-letter file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters[0]["origin"]
            .as_str()
            .unwrap_or("")
            .ends_with("attack.jsonl:1"),
        "{letters:?}"
    );
    assert_eq!(letters[0]["reason"], "bad_json");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("attack.jsonl:1"),
        "the first bad line is named: {err}"
    );
    assert!(err.contains("2 rejected"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("dos.http_flood.single_source"));
}

#[test]
fn kpis_come_out_per_window() {
    let dir = temp_dir("kpis");
    let capture = write_capture(&dir);
    let rows = kpi_rows(&capture);
    let rate = rows
        .iter()
        .find(|r| r["kpi"] == "http.requests_per_s" && r["window_start"] == "2026-01-15T10:00:00Z")
        .expect("a request-rate KPI for the first minute");
    assert_eq!(
        rate["dimensions"],
        json!({"http.route": "/api/products/{id}"})
    );
    // 4000 requests in the first minute
    assert!(
        (rate["value"].as_f64().unwrap() - 4000.0 / 60.0).abs() < 0.01,
        "{rate}"
    );
    let failures = rows
        .iter()
        .find(|r| r["kpi"] == "login_failure_ratio")
        .expect("login failure ratio");
    assert_eq!(failures["value"], json!(1));
}

#[test]
fn cart_abandonment_counts_only_the_sessions_that_added_to_a_cart() {
    let dir = temp_dir("abandonment");
    // s1 adds and orders; s2 and s4 add only; s3 orders what it added before
    // the capture began: 2 of the 3 sessions that added abandoned
    let events = [
        ("s1", "shop.cart.item_added"),
        ("s1", "shop.order.placed"),
        ("s2", "shop.cart.item_added"),
        ("s3", "shop.order.placed"),
        ("s4", "shop.cart.item_added"),
    ];
    let records: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (session, event))| {
            json!({
                "timeUnixNano": (T0_NS + i as i64 * 1_000_000_000).to_string(),
                "eventName": event,
                "attributes": [attr("session.id", json!({"stringValue": session}))],
            })
        })
        .collect();
    let line = json!({"resourceLogs": [{
        "resource": {"attributes": [attr("service.name", json!({"stringValue": "shop-cart"}))]},
        "scopeLogs": [{"logRecords": records}]}]});
    let capture = dir.join("sessions.jsonl");
    std::fs::write(&capture, format!("{line}\n")).expect("write capture");
    let rows: Vec<Value> = kpi_rows(&capture)
        .into_iter()
        .filter(|r| r["kpi"] == "cart_abandonment")
        .collect();
    assert!(!rows.is_empty(), "cart abandonment is reported");
    for r in &rows {
        let v = r["value"].as_f64().unwrap();
        // values are printed to six decimals
        assert!(
            (v - 2.0 / 3.0).abs() < 1e-6,
            "every window holds all four sessions: {r}"
        );
    }
}

#[test]
fn an_empty_rule_folder_takes_input_and_evaluates_nothing() {
    let dir = temp_dir("empty-pack");
    let capture = write_capture(&dir);
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let out = replay_json(&capture, &rules, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no rules in"), "{err}");
    assert!(out.stdout.is_empty(), "no rule, no output");
    // a folder whose every rule is broken is still an error
    std::fs::write(
        rules.join("broken.sql"),
        "/*\nid = \"x\"\n*/\nSELEC nothing",
    )
    .unwrap();
    let out = replay_json(&capture, &rules, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usable rules"));
}

#[test]
fn rules_test_prints_each_case_and_exits_with_the_failures() {
    let dir = temp_dir("rules-test");
    write_capture(&dir);
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let rule =
        std::fs::read_to_string(rules_dir().join("auth/brute_force_single_account.sql")).unwrap();
    std::fs::write(rules.join("brute.sql"), rule).unwrap();
    // the capture's brute force fires the rule: one case right, one wrong
    std::fs::write(
        rules.join("brute.test.toml"),
        "[[case]]\nname = \"fires\"\ncapture = \"../attack.jsonl\"\nexpect = \"fire\"\n\n\
         [[case]]\nname = \"wrongly_silent\"\ncapture = \"../attack.jsonl\"\nexpect = \"silent\"\n",
    )
    .unwrap();
    let out = engine(&["rules", "test", "--rules", rules.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok   auth.brute_force.single_account :: fires"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL auth.brute_force.single_account :: wrongly_silent"),
        "{stdout}"
    );
    assert!(stdout.contains("expected silence, got:"), "{stdout}");
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
}

#[test]
fn a_capture_converted_to_protobuf_replays_to_the_same_alerts_and_kpis() {
    let dir = temp_dir("convert");
    let json = rules_dir().join("captures/credential_stuffing.jsonl.zst");
    let proto = dir.join("credential_stuffing.pb.zst");
    let out = engine(&[
        "record",
        "--from",
        json.to_str().expect("a UTF-8 path"),
        proto.to_str().expect("a UTF-8 path"),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("0 skipped"), "{said}");
    // the new capture holds protobuf records, not JSON lines
    let bytes = std::fs::read(&proto).expect("the protobuf capture");
    assert!(!bytes.starts_with(b"{"), "a length-prefixed capture");
    for extra in [&[][..], &["--kpis"][..]] {
        let from_json = replay_json(&json, &rules_dir(), extra);
        let from_proto = replay_json(&proto, &rules_dir(), extra);
        assert!(from_json.status.success() && from_proto.status.success());
        assert!(
            !from_json.stdout.is_empty(),
            "the capture gives outputs {extra:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&from_json.stdout),
            String::from_utf8_lossy(&from_proto.stdout),
            "outputs {extra:?}"
        );
    }
}

#[test]
fn replay_timings_list_every_rule_with_its_evaluations() {
    let dir = temp_dir("timings");
    let capture = write_capture(&dir);
    let plain = replay_json(&capture, &rules_dir(), &[]);
    let timed = replay_json(&capture, &rules_dir(), &["--timings"]);
    let err = String::from_utf8_lossy(&timed.stderr);
    assert!(timed.status.success(), "{err}");
    assert_eq!(plain.stdout, timed.stdout, "--timings changed the output");
    let header = err
        .lines()
        .position(|l| l.starts_with("rule ") && l.contains("evaluations"))
        .unwrap_or_else(|| panic!("no timings table:\n{err}"));
    let rows: Vec<Vec<&str>> = err
        .lines()
        .skip(header + 1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (total, rules) = rows.split_last().expect("a total line");
    assert_eq!(total[0], "all", "{err}");
    assert!(
        rules
            .iter()
            .any(|r| r[0] == "auth.brute_force.single_account"),
        "{err}"
    );
    // most expensive first, every rule evaluated, shares adding up to 100 %
    let seconds: Vec<f64> = rules.iter().map(|r| r[3].parse().unwrap()).collect();
    assert!(seconds.windows(2).all(|w| w[0] >= w[1]), "{err}");
    assert!(
        rules.iter().all(|r| r[2].parse::<u64>().unwrap() > 0),
        "{err}"
    );
    let share: f64 = rules
        .iter()
        .map(|r| r[5].trim_end_matches('%').parse::<f64>().unwrap())
        .sum();
    assert!(
        (share - 100.0).abs() < 0.1 * rules.len() as f64,
        "{share}: {err}"
    );
}
