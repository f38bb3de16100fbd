//! The generated dashboards' queries as Grafana loads them (the committed
//! JSON in `dashboards/grafana/`), each paired with what the generator says
//! it must show (`dashboards::grafana::Check`, `must_have_data`). Shared by
//! `tests/dashboards.rs` (SQL) and `tests/dashboards_prometheus.rs` (PromQL).

use ::dashboards::grafana::{Datasource, Query};
use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct Target {
    /// the dashboard's file name, e.g. `business.json`
    pub board: String,
    pub panel: String,
    pub ref_id: String,
    /// the query as the generator made it (text equal to the JSON's)
    pub query: Query,
}

impl Target {
    /// `business.json / orders (A)`, for messages.
    pub fn name(&self) -> String {
        format!("{} / {} ({})", self.board, self.panel, self.ref_id)
    }
}

/// A template variable whose values come from a query.
#[derive(Debug, Clone)]
pub struct VariableQuery {
    pub board: String,
    pub name: String,
    pub datasource: Datasource,
    pub query: String,
}

/// Every panel query and variable query of the committed dashboards. Fails
/// when a committed file does not hold what the generator makes (then:
/// `cargo run -p dashboards`).
pub fn load() -> Result<(Vec<Target>, Vec<VariableQuery>)> {
    let rules = ::dashboards::repo_dir().join("rules");
    let pack = ::dashboards::pack::Pack::load(&rules)
        .with_context(|| format!("reading the rule pack in {}", rules.display()))?;
    let stale =
        "the committed dashboards are not what the generator makes; run `cargo run -p dashboards`";
    let (mut targets, mut variables) = (Vec::new(), Vec::new());
    for board in ::dashboards::boards::boards(&pack) {
        let path = ::dashboards::output_dir().join(board.file);
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        let panels = json["panels"].as_array().cloned().unwrap_or_default();
        for p in panels.iter().filter(|p| p.get("targets").is_some()) {
            let title = p["title"].as_str().unwrap_or_default();
            let model = board
                .panels
                .iter()
                .find(|m| m.title == title)
                .ok_or_else(|| {
                    anyhow!("{}: panel {title:?} is not generated; {stale}", board.file)
                })?;
            let json_targets = p["targets"].as_array().cloned().unwrap_or_default();
            ensure!(
                json_targets.len() == model.queries.len(),
                "{} / {title}: {} targets, the generator makes {}; {stale}",
                board.file,
                json_targets.len(),
                model.queries.len()
            );
            for (t, q) in json_targets.iter().zip(&model.queries) {
                let text = match q {
                    Query::Sql { sql, .. } => (t["rawSql"].as_str(), sql),
                    Query::Prom { expr, .. } => (t["expr"].as_str(), expr),
                };
                ensure!(
                    text.0 == Some(text.1.as_str()),
                    "{} / {title}: the query differs from the generator's; {stale}",
                    board.file
                );
                targets.push(Target {
                    board: board.file.to_string(),
                    panel: title.to_string(),
                    ref_id: t["refId"].as_str().unwrap_or_default().to_string(),
                    query: q.clone(),
                });
            }
        }
        for v in json["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if v["type"] != "query" {
                continue;
            }
            let datasource = match v["datasource"]["uid"].as_str() {
                Some(uid) if uid == Datasource::Postgres.uid() => Datasource::Postgres,
                Some(uid) if uid == Datasource::Prometheus.uid() => Datasource::Prometheus,
                other => anyhow::bail!("{}: variable with datasource {other:?}", board.file),
            };
            variables.push(VariableQuery {
                board: board.file.to_string(),
                name: v["name"].as_str().unwrap_or_default().to_string(),
                datasource,
                query: v["query"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    Ok((targets, variables))
}
