use super::*;
use serde_json::json;

const M: i64 = MINUTE;

fn kpi(name: &str, start: i64, end: i64, dims: &[(&str, &str)], value: Option<f64>) -> KpiRecord {
    KpiRecord {
        kpi: name.into(),
        window_start: start,
        window_end: end,
        dimensions: dims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

fn alert(rule: &str, who: &str, state: &str, start: i64, end: i64) -> AlertRecord {
    AlertRecord {
        rule_id: rule.into(),
        severity: "high".into(),
        state: state.into(),
        entity: [("client.address".to_string(), who.to_string())].into(),
        incident_start: start,
        window_end: end,
        value: Some(1.0),
        summary: format!("{rule} on {who}"),
        trace_ids: vec!["t1".into(), "t2".into()],
        first_seen: None,
        detected_at: None,
    }
}

fn vars(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn run(
    check: Check,
    kpis: &[KpiRecord],
    alerts: &[AlertRecord],
    range: Range,
    v: &BTreeMap<String, Vec<String>>,
) -> Value {
    let records = Records {
        kpis,
        alerts,
        incidents: &[],
        runbooks: &BTreeMap::from([("flood".to_string(), "docs/runbooks/flood.md".to_string())]),
    };
    Value::from(frame(&check, &records, range, v).rows)
}

#[test]
fn a_series_keeps_its_range_and_the_chosen_currency() {
    let dims = vec![CURRENCY.to_string()];
    let kpis = [
        kpi("revenue", 0, M, &[(CURRENCY, "USD")], Some(10.0)),
        kpi("revenue", 0, M, &[(CURRENCY, "EUR")], Some(5.0)),
        kpi("revenue", M, 2 * M, &[(CURRENCY, "EUR")], None),
        kpi("revenue", 2 * M, 3 * M, &[(CURRENCY, "EUR")], Some(1.0)),
        kpi("orders", 0, M, &[(CURRENCY, "EUR")], Some(1.0)),
    ];
    let check = Check::KpiSeries {
        kpi: "revenue".into(),
        dimensions: dims,
    };
    let all = run(
        check.clone(),
        &kpis,
        &[],
        Range { from: 0, to: 2 * M },
        &vars(&[("currency", &["*"])]),
    );
    assert_eq!(
        all,
        json!([
            [60_000, "EUR", 5.0],
            [60_000, "USD", 10.0],
            [120_000, "EUR", null],
        ])
    );
    let eur = run(
        check,
        &kpis,
        &[],
        Range { from: 0, to: 2 * M },
        &vars(&[("currency", &["EUR"])]),
    );
    let eur = eur.as_array().unwrap();
    assert_eq!(eur.len(), 2);
    assert!(eur.iter().all(|r| r[1] == "EUR"));
}

#[test]
fn a_mean_compares_this_period_with_the_one_before() {
    let kpis = [
        kpi("conversion", 0, M, &[], Some(0.1)),
        kpi("conversion", M, 2 * M, &[], Some(0.3)),
        kpi("conversion", 2 * M, 3 * M, &[], Some(0.5)),
        kpi("conversion", 3 * M, 4 * M, &[], Some(0.7)),
        kpi("conversion", 4 * M, 5 * M, &[], Some(100.0)),
    ];
    let check = Check::KpiMean {
        kpi: "conversion".into(),
        dimensions: vec![],
    };
    let rows = run(
        check,
        &kpis,
        &[],
        Range {
            from: 3 * M,
            to: 4 * M,
        },
        &BTreeMap::new(),
    );
    // this period: ends at 3 and 4 minutes; the one before: ends at 2 (and 3 is this one's)
    assert_eq!(rows, json!([["conversion", 0.6, 0.3]]));
    let none = run(
        Check::KpiMean {
            kpi: "missing".into(),
            dimensions: vec![],
        },
        &kpis,
        &[],
        Range { from: 0, to: M },
        &BTreeMap::new(),
    );
    assert_eq!(
        none,
        json!([]),
        "a KPI with no data has no rows (the panel says no data)"
    );
}

#[test]
fn revenue_is_summed_per_hour_of_window_start_and_currency() {
    let kpis = [
        kpi("revenue", 0, M, &[(CURRENCY, "EUR")], Some(5.0)),
        kpi("revenue", 59 * M, 60 * M, &[(CURRENCY, "EUR")], Some(7.0)),
        kpi("revenue", 60 * M, 61 * M, &[(CURRENCY, "EUR")], Some(1.0)),
        kpi("orders", 0, M, &[(CURRENCY, "EUR")], Some(2.0)),
        kpi("orders", 0, M, &[(CURRENCY, "USD")], Some(1.0)),
    ];
    let rows = run(
        Check::Revenue { bucket: "hour" },
        &kpis,
        &[],
        Range {
            from: 0,
            to: 2 * HOUR,
        },
        &BTreeMap::new(),
    );
    assert_eq!(
        rows,
        json!([
            [0, "EUR", 12.0, 2.0],
            [0, "USD", null, 1.0],
            [3_600_000, "EUR", 1.0, null],
        ])
    );
    let days = run(
        Check::Revenue { bucket: "day" },
        &kpis,
        &[],
        Range { from: 0, to: DAY },
        &vars(&[("currency", &["EUR"])]),
    );
    assert_eq!(days, json!([[0, "EUR", 13.0, 2.0]]));
}

#[test]
fn the_funnel_has_every_step_even_with_no_data() {
    let steps: Vec<String> = ["viewed", "ordered"].map(String::from).to_vec();
    let kpis = [
        kpi("checkout_funnel.viewed", 0, M, &[], Some(10.0)),
        kpi("checkout_funnel.viewed", M, 2 * M, &[], Some(4.0)),
        kpi("checkout_funnel.ordered", M, 2 * M, &[], Some(1.0)),
    ];
    let check = Check::Funnel { steps };
    assert_eq!(
        run(
            check.clone(),
            &kpis,
            &[],
            Range { from: 0, to: 2 * M },
            &BTreeMap::new()
        ),
        json!([["viewed", 14.0], ["ordered", 1.0]])
    );
    assert_eq!(
        run(
            check,
            &kpis,
            &[],
            Range {
                from: 10 * M,
                to: 20 * M
            },
            &BTreeMap::new()
        ),
        json!([["viewed", null], ["ordered", null]])
    );
}

#[test]
fn alerts_are_counted_once_per_transition_and_filtered_by_rule() {
    let alerts = [
        alert("flood", "198.51.100.7", "firing", 0, M + 5),
        // the same firing again (a re-read): one row in the store
        alert("flood", "198.51.100.7", "firing", 0, M + 5),
        alert("flood", "198.51.100.8", "firing", 0, M + 9),
        alert("brute", "198.51.100.7", "firing", M, 2 * M),
        alert("flood", "198.51.100.7", "resolved", 0, 3 * M),
    ];
    let over_time = run(
        Check::AlertsOverTime { by: "rule_id" },
        &[],
        &alerts,
        Range {
            from: 0,
            to: 10 * M,
        },
        &BTreeMap::new(),
    );
    assert_eq!(
        over_time,
        json!([[60_000, "flood", 2], [120_000, "brute", 1]])
    );
    let top = run(
        Check::TopEntities { limit: 2 },
        &[],
        &alerts,
        Range {
            from: 0,
            to: 10 * M,
        },
        &vars(&[("rule", &["flood"])]),
    );
    assert_eq!(top.as_array().unwrap().len(), 2);
    assert_eq!(top[0][0], "client.address=198.51.100.7");
    let open = run(
        Check::OpenIncidents,
        &[],
        &alerts,
        Range { from: 0, to: 1 },
        &BTreeMap::new(),
    );
    let who: Vec<_> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[1].clone(), r[3].clone()))
        .collect();
    assert_eq!(
        who,
        vec![
            (json!("brute"), json!("client.address=198.51.100.7")),
            (json!("flood"), json!("client.address=198.51.100.8")),
        ],
        "open incidents ignore the time range and leave out the resolved one"
    );
    assert_eq!(open[1][6], "t1 t2");
    assert_eq!(open[1][7], "docs/runbooks/flood.md");
    assert_eq!(open[0][7], Value::Null);
}

#[test]
fn detection_delay_is_the_median_and_the_longest_per_rule_in_the_range() {
    let s = 1_000_000_000;
    let delayed = |rule: &str, who: &str, seen: i64, at: i64| AlertRecord {
        first_seen: Some(seen),
        detected_at: Some(at),
        ..alert(rule, who, "firing", seen, at)
    };
    let alerts = [
        delayed("flood", "a", 0, 10 * s),
        delayed("flood", "b", 0, 20 * s),
        delayed("flood", "c", M, M + 45 * s),
        delayed("flood", "d", 0, 30 * s),
        delayed("stuffing", "a", 0, 5 * s),
        // detected after the range
        delayed("stuffing", "b", 0, 3 * M),
        // from a store written before the delay was kept
        alert("stuffing", "c", "firing", 0, M),
    ];
    let range = Range { from: 0, to: 2 * M };
    assert_eq!(
        run(Check::DetectionDelay, &[], &alerts, range, &BTreeMap::new()),
        json!([["flood", 4, 25.0, 45.0], ["stuffing", 1, 5.0, 5.0]])
    );
    let v = vars(&[("rule", &["stuffing"])]);
    assert_eq!(
        run(Check::DetectionDelay, &[], &alerts, range, &v),
        json!([["stuffing", 1, 5.0, 5.0]])
    );
}

fn incident(id: &str, state: &str, rules: &[&str], severity: &str, start: i64) -> IncidentRecord {
    IncidentRecord {
        id: id.into(),
        state: state.into(),
        rule_id: rules[0].into(),
        highest_severity: severity.into(),
        rules: rules.iter().map(|r| r.to_string()).collect(),
        member_count: 1,
        entity_count: 1,
        // the id, to tell rows apart
        summary: id.into(),
        start,
    }
}

#[test]
fn correlated_incidents_are_the_firing_ones_begun_by_the_range_end_newest_first() {
    let grown = IncidentRecord {
        member_count: 5,
        entity_count: 4,
        rules: vec!["auth.stuffing".into(), "dos.flood".into()],
        ..incident("a1", "firing", &["dos.flood"], "critical", 2 * M)
    };
    let incidents = [
        incident("a1", "firing", &["dos.flood"], "high", 2 * M),
        incident("b2", "firing", &["auth.brute"], "high", M),
        incident("c3", "firing", &["auth.brute"], "high", 4 * M),
        // the sink's upsert keeps each incident's last state
        grown,
        incident("c3", "resolved", &["auth.brute"], "high", 4 * M),
        incident("a0", "firing", &["fraud.cards"], "medium", 2 * M),
        incident("e5", "firing", &["dos.flood"], "high", 4 * M),
        // begun after the range
        incident("d4", "firing", &["dos.flood"], "high", 10 * M),
    ];
    let rows = |v: &BTreeMap<String, Vec<String>>| {
        let records = Records {
            kpis: &[],
            alerts: &[],
            incidents: &incidents,
            runbooks: &BTreeMap::new(),
        };
        let range = Range {
            from: 3 * M,
            to: 5 * M,
        };
        Value::from(frame(&Check::CorrelatedIncidents, &records, range, v).rows)
    };
    assert_eq!(
        rows(&vars(&[("rule", &["*"]), ("severity", &["*"])])),
        json!([
            [240_000, "dos.flood", "high", 1, 1, "dos.flood", "e5"],
            [120_000, "fraud.cards", "medium", 1, 1, "fraud.cards", "a0"],
            [
                120_000,
                "dos.flood",
                "critical",
                4,
                5,
                "auth.stuffing, dos.flood",
                "a1"
            ],
            [60_000, "auth.brute", "high", 1, 1, "auth.brute", "b2"],
        ]),
        "still open ones begun before the range stay; a resolved one and one begun after the range do not"
    );
    let ids = |v: &BTreeMap<String, Vec<String>>| -> Vec<String> {
        rows(v)
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|row| row[6].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        ids(&vars(&[("rule", &["auth.stuffing"])])),
        ["a1"],
        "a member's rule is enough, the lead's need not be chosen"
    );
    assert_eq!(
        ids(&vars(&[("severity", &["high", "medium"])])),
        ["e5", "a0", "b2"],
        "the severity filter reads the highest severity (a1's lead is high, a1 is critical)"
    );
    assert_eq!(rows(&vars(&[("rule", &["no.such.rule"])])), json!([]));
}
