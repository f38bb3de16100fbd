use super::*;

fn fixture(name: &str) -> (String, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sigma")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    (name.to_string(), text)
}

fn one(name: &str) -> Converted {
    let report = convert(&[fixture(name)]);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.converted.len(), 1, "{:?}", report.converted);
    report.converted[0].clone()
}

#[test]
fn a_count_correlation_becomes_a_windowed_count_per_group() {
    let rule = one("brute_force_one_account.yml");
    assert_eq!(rule.id, "sigma.brute_force_one_account");
    assert_eq!(rule.file_name, "brute_force_one_account.sql");
    let t = &rule.text;
    for part in [
        "window = \"5m\"",
        "slide = \"30s\"",
        "entity = [\"user.hash\"]",
        "severity = \"high\"",
        "tags = [\"T1110.001\"]",
        "maturity = \"test\"",
        "FROM events",
        "WHERE event_name = 'shop.auth.login'",
        "(shop_auth_outcome ILIKE 'failure' ESCAPE '\\' AND NOT shop_auth_failure_reason ILIKE 'locked' ESCAPE '\\')",
        "GROUP BY window_start, window_end, user_hash\nHAVING count(*) >= 10",
        "id 9c4e6f20-8a1d-4e3b-a7c5-3d4e5f6a7b04",
    ] {
        assert!(t.contains(part), "{part:?} not in\n{t}");
    }
}

#[test]
fn a_distinct_count_correlation_counts_the_field() {
    let rule = one("password_spraying.yml");
    assert!(
        rule.text
            .contains("count(DISTINCT user_hash) AS distinct_values"),
        "{}",
        rule.text
    );
    assert!(
        rule.text.contains("HAVING count(DISTINCT user_hash) >= 10"),
        "{}",
        rule.text
    );
    assert!(
        rule.text.contains("entity = [\"client.address\"]"),
        "{}",
        rule.text
    );
}

#[test]
fn an_ordered_correlation_compares_first_and_last_times() {
    let rule = one("login_after_failures.yml");
    let t = &rule.text;
    assert!(
        t.contains("entity = [\"client.address\", \"user.hash\"]"),
        "{t}"
    );
    assert!(
        t.contains("HAVING min(CASE WHEN (shop_auth_outcome ILIKE 'failure'"),
        "{t}"
    );
    assert!(
        t.contains("< max(CASE WHEN shop_auth_outcome ILIKE 'success'"),
        "{t}"
    );
    // the two rules it names are not converted on their own
    assert!(!t.contains("sigma.login_failure\""));
}

#[test]
fn a_detection_alone_fires_per_address_and_minute() {
    let rule = one("web_sensitive_path_probing.yml");
    let t = &rule.text;
    assert!(t.contains("window = \"1m\"\nslide = \"1m\""), "{t}");
    assert!(t.contains("entity = [\"client.address\"]"), "{t}");
    assert!(t.contains("maturity = \"experimental\""), "{t}");
    assert!(
        t.contains("(http_response_status_code = 404 OR http_response_status_code = 403)"),
        "{t}"
    );
    assert!(!t.contains("HAVING"), "{t}");
}

#[test]
fn what_cannot_be_converted_is_listed_with_the_reason() {
    let report = convert(&[fixture("not_convertible.yml")]);
    assert!(report.converted.is_empty(), "{:?}", report.converted);
    let reasons: Vec<&str> = report.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("process_creation"), "{reasons:?}");
    assert!(reasons[1].contains("keyword"), "{reasons:?}");
    assert!(reasons[2].contains("never recorded"), "{reasons:?}");
    assert!(reasons[3].contains("hashed"), "{reasons:?}");
    assert!(
        report.skipped[0]
            .origin
            .contains("Suspicious PowerShell Download")
    );
}

#[test]
fn broken_input_is_named_and_the_rest_converts() {
    let report = convert(&[
        ("broken.yml".into(), "title: [unclosed".into()),
        fixture("web_scanner_user_agent.yml"),
        (
            "dangling.yml".into(),
            "title: X\ncorrelation:\n  type: event_count\n  rules: [nowhere]\n  timespan: 1m\n  condition: {gte: 1}\n"
                .into(),
        ),
    ]);
    assert_eq!(report.converted.len(), 1);
    let reasons: Vec<String> = report
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.origin, s.reason))
        .collect();
    assert!(
        reasons[0].starts_with("broken.yml: not YAML"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("\"nowhere\""), "{reasons:?}");
}

#[test]
fn rules_with_one_name_get_distinct_ids() {
    let (_, text) = fixture("web_scanner_user_agent.yml");
    let report = convert(&[("a.yml".into(), text.clone()), ("b.yml".into(), text)]);
    let ids: Vec<&str> = report.converted.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sigma.web_vulnerability_scanner_user_agent",
            "sigma.web_vulnerability_scanner_user_agent_2"
        ]
    );
    assert!(
        report.converted[1]
            .text
            .contains("id = \"sigma.web_vulnerability_scanner_user_agent_2\"")
    );
    assert_eq!(
        report.converted[1].file_name,
        "web_vulnerability_scanner_user_agent_2.sql"
    );
}

#[test]
fn windows_slide_by_a_tenth_that_divides_the_timespan() {
    assert_eq!(windows("1m").unwrap(), ("1m".into(), "6s".into()));
    assert_eq!(windows("5m").unwrap(), ("5m".into(), "30s".into()));
    assert_eq!(windows("7s").unwrap(), ("7s".into(), "1s".into()));
    assert_eq!(windows("1h").unwrap(), ("1h".into(), "6m".into()));
    assert_eq!(windows("90s").unwrap(), ("90s".into(), "9s".into()));
    assert!(windows("0s").is_err());
}

#[test]
fn attack_tags_become_technique_ids() {
    let tags = [
        "attack.t1110.003",
        "attack.credential_access",
        "attack.T1595",
        "cve.2021-44228",
    ]
    .map(String::from);
    assert_eq!(techniques(&tags), ["T1110.003", "T1595"]);
    assert_eq!(slug("HTTP Flood: one address!"), "http_flood_one_address");
}

/// The first block of `lang` in docs/sigma.md.
fn doc_block(lang: &str) -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sigma.md"),
    )
    .expect("docs/sigma.md");
    let start = doc.find(&format!("```{lang}\n")).expect("a block") + lang.len() + 4;
    let end = start + doc[start..].find("```").expect("its end");
    doc[start..end].to_string()
}

#[test]
fn the_example_in_the_docs_is_what_the_converter_writes() {
    let report = convert(&[("brute_force.yml".into(), doc_block("yaml"))]);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.converted[0].text, doc_block("sql"));
}

#[test]
fn an_ordered_correlation_of_three_rules_is_a_sequence() {
    let yaml = r#"
title: Probe
name: probe
logsource: {category: webserver}
detection: {selection: {sc-status: 404}, condition: selection}
---
title: Login page
name: login_page
logsource: {category: webserver}
detection: {selection: {cs-uri-stem: /api/auth/login}, condition: selection}
---
title: Checkout
name: checkout
logsource: {category: webserver}
detection: {selection: {cs-uri-stem|startswith: /api/checkout}, condition: selection}
---
title: Probe, login, checkout
correlation:
    type: temporal_ordered
    rules: [probe, login_page, checkout]
    group-by: [c-ip]
    timespan: 10m
"#;
    let report = convert(&[("seq.yml".into(), yaml.into())]);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.converted.len(), 1);
    let t = &report.converted[0].text;
    assert!(
        t.contains("HAVING sequence_steps(time, http_response_status_code = 404,"),
        "{t}"
    );
    assert!(t.contains(") = 3\n"), "{t}");
}
