//! The four dashboards: Business and Security from the BI store (PostgreSQL),
//! Services and Engine from Prometheus. Business panels come from the KPI
//! definitions and the Security dashboard's rule list from the rule pack, so a
//! new KPI file gets its panels and a new rule appears without a change here.

use crate::expand::{PROM_ALL, SQL_ALL};
use crate::grafana::{Board, Check, Datasource, Panel, Variable, Viz};
use crate::pack::{Kpi, Pack};

/// The dimension the `currency` variable filters.
const CURRENCY: &str = "shop.order.currency";

/// Every dashboard of the pack.
pub fn boards(pack: &Pack) -> Vec<Board> {
    vec![business(pack), security(pack), services(), engine()]
}

/// The Grafana unit of a KPI, from its name.
fn unit_of(name: &str) -> &'static str {
    if name.ends_with("_ms") {
        "ms"
    } else if name.ends_with("per_s") {
        "reqps"
    } else if ["ratio", "conversion", "abandonment"]
        .iter()
        .any(|w| name.contains(w))
    {
        "percentunit"
    } else {
        "short"
    }
}

/// The series label of a KPI value: its dimensions' values, or its name.
fn metric(k: &Kpi) -> String {
    if k.dimensions.is_empty() {
        format!("'{}'", k.name)
    } else {
        let parts: Vec<String> = k
            .dimensions
            .iter()
            .map(|d| format!("dimensions ->> '{d}'"))
            .collect();
        format!("concat_ws(' ', {})", parts.join(", "))
    }
}

/// The variable filters that apply to a KPI.
fn kpi_filter(k: &Kpi) -> String {
    if k.dimensions.iter().any(|d| d == CURRENCY) {
        format!("\n  AND ('*' IN ($currency) OR dimensions ->> '{CURRENCY}' IN ($currency))")
    } else {
        String::new()
    }
}

fn kpi_text(k: &Kpi) -> String {
    let mut text = k.title.clone();
    if !k.description.is_empty() {
        text.push_str(". ");
        text.push_str(&k.description);
    }
    text.push_str(&format!(
        " (KPI `{}`, window {}{}; table kpi_values)",
        k.name,
        k.window,
        k.slide
            .as_ref()
            .map(|s| format!(" sliding by {s}"))
            .unwrap_or_default()
    ));
    text
}

/// Buckets (a column named `hour` or `day` holding each bucket's start) that
/// overlap the time range. `$__timeFilter(day)` would leave out the day the
/// range starts in, so a range within one day would show no day at all.
fn overlaps(bucket: &str) -> String {
    format!(
        "{bucket} <= $__timeTo()::timestamptz AND {bucket} > $__timeFrom()::timestamptz - interval '1 {bucket}'"
    )
}

fn business(pack: &Pack) -> Board {
    let mut panels = vec![Panel::row("This period against the previous one")];
    for k in pack.kpis.iter().filter(|k| k.name == k.file_kpi) {
        let sql = format!(
            "SELECT {metric} AS metric,\n       avg(value) FILTER (WHERE window_end >= $__timeFrom()::timestamptz) AS \"this period\",\n       avg(value) FILTER (WHERE window_end < $__timeFrom()::timestamptz) AS \"previous period\"\nFROM kpi_values\nWHERE kpi = '{name}'\n  AND window_end >= $__timeFrom()::timestamptz - ($__timeTo()::timestamptz - $__timeFrom()::timestamptz)\n  AND window_end <= $__timeTo()::timestamptz{filter}\nGROUP BY 1\nORDER BY 1",
            metric = metric(k),
            name = k.name,
            filter = kpi_filter(k),
        );
        panels.push(
            Panel::new(Viz::Stat, format!("{} (mean per window)", k.name))
                .describe(format!(
                    "{} The mean over the time range, and over the period of the same length before it.",
                    kpi_text(k)
                ))
                .unit(unit_of(&k.name))
                .sql(
                    sql,
                    "table",
                    Check::KpiMean {
                        kpi: k.name.clone(),
                        dimensions: k.dimensions.clone(),
                    },
                ),
        );
    }
    panels.push(Panel::row("Over time"));
    for k in &pack.kpis {
        let sql = format!(
            "SELECT window_end AS \"time\", {metric} AS metric, value\nFROM kpi_values\nWHERE kpi = '{name}' AND $__timeFilter(window_end){filter}\nORDER BY 1, 2",
            metric = metric(k),
            name = k.name,
            filter = kpi_filter(k),
        );
        panels.push(
            Panel::new(Viz::TimeSeries, k.name.clone())
                .describe(kpi_text(k))
                .unit(unit_of(&k.name))
                .sql(
                    sql,
                    "time_series",
                    Check::KpiSeries {
                        kpi: k.name.clone(),
                        dimensions: k.dimensions.clone(),
                    },
                ),
        );
    }
    panels.push(Panel::row("Revenue and the checkout funnel"));
    for (bucket, view, viz) in [
        ("hour", "revenue_hourly", Viz::Bars),
        ("day", "revenue_daily", Viz::Table),
    ] {
        panels.push(
            Panel::new(viz, format!("Revenue and orders per {bucket}"))
                .describe(format!("View {view}: the revenue and orders KPIs summed per {bucket} (UTC) of their window start, by currency; every {bucket} that overlaps the time range."))
                .sql(
                    format!("SELECT {bucket} AS \"time\", currency, revenue, orders\nFROM {view}\nWHERE {}\n  AND ('*' IN ($currency) OR currency IN ($currency))\nORDER BY 1, 2", overlaps(bucket)),
                    "table",
                    Check::Revenue { bucket },
                ),
        );
    }
    let steps: Vec<String> = pack
        .kpis
        .iter()
        .filter(|k| k.file_kpi == "checkout_funnel" && k.name != k.file_kpi)
        .filter_map(|k| k.name.strip_prefix("checkout_funnel.").map(String::from))
        .collect();
    if !steps.is_empty() {
        let names: Vec<String> = steps.iter().map(|s| format!("'{s}'")).collect();
        let sums: Vec<String> = steps.iter().map(|s| format!("sum({s})")).collect();
        panels.push(
            Panel::new(Viz::Bars, "Checkout funnel")
                .describe("View checkout_funnel: sessions at each step, summed over the windows that end in the time range.")
                .sql(
                    format!(
                        "SELECT unnest(ARRAY[{}]) AS step, unnest(ARRAY[{}]) AS sessions\nFROM checkout_funnel\nWHERE $__timeFilter(window_end)",
                        names.join(", "),
                        sums.join(", ")
                    ),
                    "table",
                    Check::Funnel { steps },
                ),
        );
    }
    Board {
        file: "business.json",
        uid: "otelguard-business",
        title: "otelguard / Business",
        description: "KPIs from the engine's PostgreSQL sink (table kpi_values and its views). Generated by `cargo run -p dashboards`; see docs/dashboards.md.".into(),
        tags: vec!["otelguard", "business"],
        variables: vec![Variable::Query {
            name: "currency",
            label: "Currency",
            datasource: Datasource::Postgres,
            query: format!(
                "SELECT DISTINCT dimensions ->> '{CURRENCY}' FROM kpi_values WHERE kpi = 'orders' ORDER BY 1"
            ),
            all_value: SQL_ALL,
        }],
        panels,
    }
}

/// The variable filters of alert panels.
const ALERT_FILTER: &str =
    "('*' IN ($rule) OR rule_id IN ($rule))\n  AND ('*' IN ($severity) OR severity IN ($severity))";

/// The variable filters of correlated incidents: any of their rules, and
/// the highest severity among their members (the one the panel shows).
const INCIDENT_FILTER: &str = "('*' IN ($rule) OR rules && ARRAY[$rule]::text[])\n  AND ('*' IN ($severity) OR highest_severity IN ($severity))";

fn security(pack: &Pack) -> Board {
    let mut panels = vec![Panel::row("Alerts")];
    for (by, title) in [("rule_id", "rule"), ("severity", "severity")] {
        panels.push(
            Panel::new(Viz::TimeSeries, format!("Firing alerts per minute, by {title}"))
                .describe("Table alerts: incidents that fired, counted at their window end.")
                .sql(
                    format!("SELECT $__timeGroupAlias(window_end, '1m'), {by} AS metric, count(*) AS alerts\nFROM alerts\nWHERE state = 'firing' AND $__timeFilter(window_end)\n  AND {ALERT_FILTER}\nGROUP BY 1, 2\nORDER BY 1, 2"),
                    "time_series",
                    Check::AlertsOverTime { by },
                ),
        );
    }
    panels.push(
        Panel::new(Viz::Table, "Firing alerts per rule per hour")
            .size(12, 8)
            .describe("View alerts_hourly: every hour that overlaps the time range.")
            .sql(
                format!("SELECT hour AS \"time\", rule_id, severity, alerts\nFROM alerts_hourly\nWHERE {}\n  AND {ALERT_FILTER}\nORDER BY 1, 2", overlaps("hour")),
                "table",
                Check::AlertsHourly,
            ),
    );
    panels.push(
        Panel::new(Viz::Table, "Top entities")
            .size(12, 8)
            .describe("Who or what fired the most alerts in the time range.")
            .sql(
                format!("SELECT entity_text(entity) AS who, rule_id, count(*) AS alerts, max(window_end) AS last_seen\nFROM alerts\nWHERE state = 'firing' AND $__timeFilter(window_end)\n  AND {ALERT_FILTER}\nGROUP BY entity, rule_id\nORDER BY count(*) DESC, entity_text(entity) COLLATE \"C\", rule_id COLLATE \"C\"\nLIMIT 20"),
                "table",
                Check::TopEntities { limit: 20 },
            ),
    );
    panels.push(Panel::row("Incidents"));
    panels.push(
        Panel::new(Viz::Table, "Open incidents")
            .size(24, 10)
            .describe("View open_incidents: fired and not resolved, whatever the time range, with the rule's runbook and up to five sample trace ids.")
            .sql(
                format!("SELECT fired_at AS \"time\", rule_id, severity, entity_text(entity) AS who, value, summary,\n       array_to_string(trace_ids, ' ') AS trace_ids, runbook\nFROM open_incidents\nWHERE {ALERT_FILTER}\nORDER BY fired_at DESC, rule_id COLLATE \"C\", entity_text(entity) COLLATE \"C\""),
                "table",
                Check::OpenIncidents,
            ),
    );
    panels.push(
        Panel::new(Viz::Table, "Correlated incidents")
            .size(24, 10)
            .describe("Table correlated_incidents: the alerts of one attack folded into one incident, as Alertmanager and the webhook notify it; those still firing that had begun by the end of the time range, the newest first. The rule variable keeps an incident when any of its rules is chosen; the severity variable filters its highest severity.")
            .sql(
                format!("SELECT incident_start AS \"time\", rule_id, highest_severity, entity_count, member_count,\n       array_to_string(rules, ', ') AS rules, summary\nFROM correlated_incidents\nWHERE state = 'firing' AND incident_start <= $__timeTo()\n  AND {INCIDENT_FILTER}\nORDER BY incident_start DESC, incident_id COLLATE \"C\""),
                "table",
                Check::CorrelatedIncidents,
            ),
    );
    panels.push(
        Panel::new(Viz::Table, "Detection delay")
            .size(24, 8)
            .unit("s")
            .describe("View detection_delays: per rule, the incidents it fired in the time range (by when the engine emitted them) and the time from each incident's first evidence (the rule's first_seen, else its first window's start) to the moment the engine fired it, median and longest, in seconds of event time. See docs/dashboards.md.")
            .sql(
                format!("SELECT rule_id, count(*) AS incidents,\n       percentile_cont(0.5) WITHIN GROUP (ORDER BY delay_seconds) AS median_delay,\n       max(delay_seconds) AS max_delay\nFROM detection_delays\nWHERE $__timeFilter(detected_at)\n  AND {ALERT_FILTER}\nGROUP BY rule_id\nORDER BY rule_id COLLATE \"C\""),
                "table",
                Check::DetectionDelay,
            ),
    );
    let mut list =
        String::from("| rule | severity | ATT&CK | title |\n| --- | --- | --- | --- |\n");
    for r in &pack.rules {
        list.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            r.id,
            r.severity,
            r.tags.join(", "),
            r.title.replace('|', "/")
        ));
    }
    panels.push(
        Panel::new(Viz::Text, "The rule pack")
            .size(24, 2 + pack.rules.len() as u32)
            .describe("The rules this dashboard was generated from (rules/).")
            .text(list),
    );
    Board {
        file: "security.json",
        uid: "otelguard-security",
        title: "otelguard / Security",
        description: "Alerts and incidents from the engine's PostgreSQL sink (table alerts and its views). Generated by `cargo run -p dashboards`; see docs/dashboards.md.".into(),
        tags: vec!["otelguard", "security"],
        variables: vec![
            Variable::Custom {
                name: "rule",
                label: "Rule",
                values: pack.rules.iter().map(|r| r.id.clone()).collect(),
                all_value: SQL_ALL,
            },
            Variable::Custom {
                name: "severity",
                label: "Severity",
                values: ["info", "low", "medium", "high", "critical"]
                    .map(String::from)
                    .to_vec(),
                all_value: SQL_ALL,
            },
        ],
        panels,
    }
}

/// `rate(METRIC{service_name=~"$service"...}[$__rate_interval])`
fn rate(metric: &str, matchers: &str) -> String {
    format!("rate({metric}{{service_name=~\"$service\"{matchers}}}[$__rate_interval])")
}

fn services() -> Board {
    let requests = "http_server_request_duration_seconds_count";
    let buckets = "http_server_request_duration_seconds_bucket";
    let route = ", http_route=~\"$route\"";
    let mut panels = vec![
        Panel::row("Rate, errors, duration per service"),
        Panel::new(Viz::TimeSeries, "Requests per second")
            .size(8, 8)
            .unit("reqps")
            .prom(
                format!("sum by (service_name) ({})", rate(requests, route)),
                "{{service_name}}",
                true,
            ),
        Panel::new(Viz::TimeSeries, "Error ratio (5xx)")
            .size(8, 8)
            .unit("percentunit")
            .describe("Share of requests answered 5xx; 0 where there were none.")
            .prom(
                format!(
                    "sum by (service_name) ({} or 0 * {}) / sum by (service_name) ({})",
                    rate(
                        requests,
                        &format!("{route}, http_response_status_code=~\"5..\"")
                    ),
                    rate(requests, route),
                    rate(requests, route)
                ),
                "{{service_name}}",
                true,
            ),
    ];
    let mut latency = Panel::new(Viz::TimeSeries, "Duration p50 / p95 / p99")
        .size(8, 8)
        .unit("s");
    for q in ["0.5", "0.95", "0.99"] {
        latency = latency.prom(
            format!(
                "histogram_quantile({q}, sum by (le, service_name) ({}))",
                rate(buckets, route)
            ),
            format!("{{{{service_name}}}} p{}", &q[2..]),
            true,
        );
    }
    panels.push(latency);
    panels.push(Panel::row("Per route"));
    panels.push(
        Panel::new(Viz::TimeSeries, "Requests per second per route")
            .unit("reqps")
            .prom(
                format!(
                    "sum by (service_name, http_route) ({})",
                    rate(requests, route)
                ),
                "{{service_name}} {{http_route}}",
                true,
            ),
    );
    panels.push(
        Panel::new(Viz::TimeSeries, "Duration p95 per route")
            .unit("s")
            .prom(
                format!(
                    "histogram_quantile(0.95, sum by (le, service_name, http_route) ({}))",
                    rate(buckets, route)
                ),
                "{{service_name}} {{http_route}}",
                true,
            ),
    );
    panels.push(Panel::row("Saturation"));
    panels.push(
        Panel::new(Viz::TimeSeries, "Shed and rate-limited requests")
            .size(8, 8)
            .unit("reqps")
            .describe("Requests refused by the rate limiter (429), load shedding or timeouts (shop.http.shed), by reason.")
            .prom(
                format!(
                    "sum by (service_name, http_route, shop_shed_reason) ({})",
                    rate("shop_http_shed_total", route)
                ),
                "{{service_name}} {{http_route}} {{shop_shed_reason}}",
                true,
            ),
    );
    panels.push(
        Panel::new(Viz::TimeSeries, "Database pool in use")
            .size(8, 8)
            .unit("percentunit")
            .describe("Connections in use over the pool's maximum, per service.")
            .prom(
                "sum by (service_name) (db_client_connection_count{service_name=~\"$service\", db_client_connection_state=\"used\"}) / sum by (service_name) (db_client_connection_max{service_name=~\"$service\"})",
                "{{service_name}}",
                true,
            ),
    );
    panels.push(
        Panel::new(Viz::TimeSeries, "Database operation p95")
            .size(8, 8)
            .unit("s")
            .prom(
                format!(
                    "histogram_quantile(0.95, sum by (le, service_name) ({}))",
                    rate("db_client_operation_duration_seconds_bucket", "")
                ),
                "{{service_name}}",
                true,
            ),
    );
    panels.push(
        Panel::new(Viz::TimeSeries, "CPU")
            .size(8, 8)
            .unit("percentunit")
            .prom(
                format!(
                    "sum by (service_name) ({})",
                    rate("process_cpu_time_seconds_total", "")
                ),
                "{{service_name}}",
                true,
            ),
    );
    panels.push(
        Panel::new(Viz::TimeSeries, "Memory")
            .size(8, 8)
            .unit("bytes")
            .prom(
                "sum by (service_name) (process_memory_usage_bytes{service_name=~\"$service\"})",
                "{{service_name}}",
                true,
            ),
    );
    panels.push(
        Panel::new(Viz::TimeSeries, "Requests in flight")
            .size(8, 8)
            .prom(
                "sum by (service_name) (http_server_active_requests{service_name=~\"$service\"})",
                "{{service_name}}",
                true,
            ),
    );
    panels.push(
        Panel::new(Viz::TimeSeries, "Async runtime busy")
            .size(8, 8)
            .unit("percentunit")
            .describe("Time the tokio workers spent busy over the number of workers: near 1, requests wait for a worker (a blocking call on the runtime, CPU-heavy handlers).")
            .prom(
                format!(
                    "sum by (service_name) ({}) / sum by (service_name) (tokio_runtime_workers{{service_name=~\"$service\"}})",
                    rate("tokio_runtime_worker_busy_time_seconds_total", "")
                ),
                "{{service_name}}",
                true,
            ),
    );
    Board {
        file: "services.json",
        uid: "otelguard-services",
        title: "otelguard / Services (RED and USE)",
        description: "The shop's services from Prometheus (the Collector's prometheus exporter). Generated by `cargo run -p dashboards`; see docs/dashboards.md.".into(),
        tags: vec!["otelguard", "services"],
        variables: vec![
            Variable::Query {
                name: "service",
                label: "Service",
                datasource: Datasource::Prometheus,
                query: "label_values(http_server_request_duration_seconds_count, service_name)".into(),
                all_value: PROM_ALL,
            },
            Variable::Query {
                name: "route",
                label: "Route",
                datasource: Datasource::Prometheus,
                query: "label_values(http_server_request_duration_seconds_count{service_name=~\"$service\"}, http_route)".into(),
                all_value: PROM_ALL,
            },
        ],
        panels,
    }
}

fn engine() -> Board {
    let on = "{instance=~\"$instance\"}";
    let panels = vec![
        Panel::row("Input"),
        Panel::new(Viz::TimeSeries, "Rows in per second, by table")
            .size(8, 8)
            .prom(format!("sum by (table) (rate(otelguard_rows_total{on}[$__rate_interval]))"), "{{table}}", true),
        Panel::new(Viz::TimeSeries, "Late rows per second")
            .size(8, 8)
            .describe("Rows older than the watermark, counted and left out.")
            .prom(format!("sum(rate(otelguard_late_rows_total{on}[$__rate_interval]))"), "late", true),
        Panel::new(Viz::TimeSeries, "Rejected input per second, by reason")
            .size(8, 8)
            .describe("Messages ingest could not use; none is the normal case (then: no data).")
            .prom(format!("sum by (reason) (rate(otelguard_rejected_total{on}[$__rate_interval]))"), "{{reason}}", false),
        Panel::row("Evaluation"),
        Panel::new(Viz::TimeSeries, "Watermark lag")
            .size(8, 8)
            .unit("s")
            .describe("Wall-clock time less the event-time watermark (a replay of an old capture lags by its age).")
            .prom(format!("time() - max by (instance) (otelguard_watermark_seconds{on})"), "{{instance}}", true),
        Panel::new(Viz::TimeSeries, "Buffered rows")
            .size(8, 8)
            .prom(format!("sum by (instance) (otelguard_buffered_rows{on})"), "{{instance}}", true),
        Panel::new(Viz::Stat, "Disabled rules")
            .size(8, 8)
            .describe("Rules disabled after repeated failed evaluations.")
            .prom(format!("sum(1 - otelguard_rule_enabled{on})"), "disabled", true),
        Panel::new(Viz::TimeSeries, "Evaluation time p95, by rule")
            .size(8, 8)
            .unit("s")
            .describe("How long a rule takes to evaluate its windows (otelguard_rule_eval_seconds), the 95th percentile.")
            .prom(format!("histogram_quantile(0.95, sum by (le, rule) (rate(otelguard_rule_eval_seconds_bucket{on}[$__rate_interval])))"), "{{rule}}", true),
        Panel::new(Viz::TimeSeries, "Failing evaluations in a row, by rule")
            .prom(format!("max by (rule) (otelguard_rule_failures{on})"), "{{rule}}", true),
        Panel::new(Viz::TimeSeries, "Alerts fired, by rule")
            .prom(format!("sum by (rule) (increase(otelguard_alerts_fired_total{on}[$__rate_interval]))"), "{{rule}}", true),
    ];
    Board {
        file: "engine.json",
        uid: "otelguard-engine",
        title: "otelguard / Engine",
        description: "The engine's own /metrics, scraped by Prometheus (job engine). Generated by `cargo run -p dashboards`; see docs/dashboards.md.".into(),
        tags: vec!["otelguard", "engine"],
        variables: vec![Variable::Query {
            name: "instance",
            label: "Engine",
            datasource: Datasource::Prometheus,
            query: "label_values(otelguard_rows_total, instance)".into(),
            all_value: PROM_ALL,
        }],
        panels,
    }
}
