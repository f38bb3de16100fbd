use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::*;
use crate::alerts::{Alert, State as AlertState};
use crate::kpi::KpiValue;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";

fn kpi(name: &str, start: &str, end: &str, currency: Option<&str>, value: f64) -> KpiValue {
    KpiValue {
        kpi: name.into(),
        window_start: start.into(),
        window_end: end.into(),
        dimensions: currency
            .map(|c| [(dashboards::frames::CURRENCY.to_string(), c.to_string())].into())
            .unwrap_or_default(),
        value: value.into(),
        at_ns: 0,
    }
}

fn alert(state: AlertState) -> Alert {
    Alert {
        rule_id: "dos.expensive_endpoint_flood".into(),
        severity: "high".into(),
        state,
        entity: [("client.address".to_string(), HOSTILE.to_string())].into(),
        window_start: "2026-01-01T10:00:00Z".into(),
        window_end: "2026-01-01T10:01:00Z".into(),
        value: 120.into(),
        tags: vec![],
        summary: "a flood".into(),
        trace_ids: vec!["0af7651916cd43dd8448eb211c80319c".into()],
        at_ns: 0,
        rule_version: String::new(),
        incident_start_ns: None,
        first_seen_ns: None,
        detected_at_ns: None,
        notes: None,
    }
}

async fn serve(board: Board) -> String {
    let listener = super::super::bind_quietly("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let access = super::super::Access::for_listener(addr, None, vec![]).unwrap();
    tokio::spawn(super::super::serve_on(
        listener,
        Arc::new(Mutex::new(board)),
        access,
    ));
    format!("http://{addr}")
}

async fn get(url: String) -> (u16, Value) {
    let r = reqwest::get(&url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn panel_id(dashboard: &Value, title: &str) -> u64 {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title}"))["id"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn the_viewer_serves_the_committed_dashboards_with_their_panels_rows() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut board = Board {
        dashboards: Arc::new(Dashboards::load(&repo.join("rules"))),
        ..Board::default()
    };
    board.kpis.extend([
        kpi(
            "revenue",
            "2026-01-01T10:00:00Z",
            "2026-01-01T10:01:00Z",
            Some("EUR"),
            30.0,
        ),
        kpi(
            "revenue",
            "2026-01-01T10:00:00Z",
            "2026-01-01T10:01:00Z",
            Some("USD"),
            12.5,
        ),
        kpi(
            "orders",
            "2026-01-01T10:00:00Z",
            "2026-01-01T10:01:00Z",
            Some("EUR"),
            2.0,
        ),
    ]);
    board.alerts.push_back(alert(AlertState::Firing));
    // one rule on two addresses: one correlated incident of two members
    let flood = |who: &str| Alert {
        rule_id: "dos.http_flood".into(),
        entity: [("client.address".to_string(), who.to_string())].into(),
        at_ns: 1_767_261_660_000_000_000,
        incident_start_ns: Some(1_767_261_600_000_000_000),
        ..alert(AlertState::Firing)
    };
    board.record(&[
        crate::evaluator::Output::Alert(flood("192.0.2.1")),
        crate::evaluator::Output::Alert(flood("192.0.2.2")),
    ]);
    let base = serve(board).await;

    let (status, list) = get(format!("{base}/api/dashboards")).await;
    assert_eq!(status, 200);
    let uids: Vec<&str> = list["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids,
        [
            "otelguard-business",
            "otelguard-security",
            "otelguard-services",
            "otelguard-engine"
        ]
    );
    assert_eq!(list["dashboards"][0]["datasource"], "postgres");
    assert_eq!(list["dashboards"][2]["datasource"], "prometheus");
    // the event time the data covers, in milliseconds
    assert_eq!(list["span"]["from"], 1_767_261_600_000i64);
    assert_eq!(list["span"]["to"], 1_767_261_660_000i64);

    // the same JSON as the committed file
    let (_, business) = get(format!("{base}/api/dashboards/otelguard-business")).await;
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("dashboards/grafana/business.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(business, committed);

    let range = "from=1767261600000&to=1767261660000";
    let id = panel_id(&business, "revenue");
    let (status, all) = get(format!(
        "{base}/api/dashboards/otelguard-business/panels/{id}?{range}"
    ))
    .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all["frames"][0]["rows"],
        serde_json::json!([
            [1_767_261_660_000i64, "EUR", 30.0],
            [1_767_261_660_000i64, "USD", 12.5]
        ])
    );
    let (_, eur) = get(format!(
        "{base}/api/dashboards/otelguard-business/panels/{id}?{range}&var-currency=EUR"
    ))
    .await;
    assert_eq!(eur["frames"][0]["rows"].as_array().unwrap().len(), 1);
    let (_, currencies) = get(format!(
        "{base}/api/dashboards/otelguard-business/variables/currency"
    ))
    .await;
    assert_eq!(currencies["values"], serde_json::json!(["EUR"]));

    // the open incident keeps the entity's text as it came: escaping is the page's job
    let (_, security) = get(format!("{base}/api/dashboards/otelguard-security")).await;
    let id = panel_id(&security, "Open incidents");
    let (_, open) = get(format!(
        "{base}/api/dashboards/otelguard-security/panels/{id}?{range}"
    ))
    .await;
    assert_eq!(
        open["frames"][0]["rows"][0][3],
        format!("client.address={HOSTILE}")
    );

    // the board folds the alerts it records as the BI store's sink does
    let id = panel_id(&security, "Correlated incidents");
    let (status, correlated) = get(format!(
        "{base}/api/dashboards/otelguard-security/panels/{id}?{range}"
    ))
    .await;
    assert_eq!(status, 200, "{correlated}");
    assert_eq!(
        correlated["frames"][0]["rows"],
        serde_json::json!([[
            1_767_261_600_000i64,
            "dos.http_flood",
            "high",
            2,
            2,
            "dos.http_flood",
            "a flood (one incident of 2 alerts on 2 entities: dos.http_flood)"
        ]])
    );
    let (_, other_rule) = get(format!(
        "{base}/api/dashboards/otelguard-security/panels/{id}?{range}&var-rule=dos.expensive_endpoint_flood"
    ))
    .await;
    assert_eq!(other_rule["frames"][0]["rows"], serde_json::json!([]));

    // a Prometheus panel says where its data is
    let (_, engine) = get(format!("{base}/api/dashboards/otelguard-engine")).await;
    let id = panel_id(&engine, "Buffered rows");
    let (_, prom) = get(format!(
        "{base}/api/dashboards/otelguard-engine/panels/{id}?{range}"
    ))
    .await;
    assert!(
        prom["frames"][0]["unavailable"]
            .as_str()
            .unwrap()
            .contains("Prometheus")
    );

    // mistakes are named
    let (status, bad) = get(format!(
        "{base}/api/dashboards/otelguard-business/panels/{id}?from=x&to=1"
    ))
    .await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("`from`"), "{bad}");
    let (status, _) = get(format!(
        "{base}/api/dashboards/otelguard-business/panels/999?{range}"
    ))
    .await;
    assert_eq!(status, 404);
    let (status, _) = get(format!("{base}/api/dashboards/nope")).await;
    assert_eq!(status, 404);
}

#[test]
fn a_pack_that_does_not_read_leaves_no_dashboards_and_says_why() {
    let d = Dashboards::load(std::path::Path::new("/nonexistent/rules"));
    assert!(d.boards.is_empty());
    assert!(d.error.unwrap().contains("/nonexistent/rules"));
}
