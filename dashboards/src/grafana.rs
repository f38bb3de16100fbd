//! A small model of a Grafana dashboard (panels, queries, variables) and its
//! JSON, in the shape Grafana's schema (`dashboard.Dashboard`) takes.

use serde_json::{Value, json};

/// The datasources the dashboards read, by the uids the provisioning gives them
/// (`dashboards/provisioning/datasources/otelguard.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datasource {
    /// the BI store the engine's PostgreSQL sink writes
    Postgres,
    /// the stack's Prometheus (the shop's RED/USE metrics, the engine's /metrics)
    Prometheus,
}

impl Datasource {
    pub fn uid(self) -> &'static str {
        match self {
            Datasource::Postgres => "otelguard-postgres",
            Datasource::Prometheus => "otelguard-prometheus",
        }
    }

    pub fn plugin(self) -> &'static str {
        match self {
            Datasource::Postgres => "grafana-postgresql-datasource",
            Datasource::Prometheus => "prometheus",
        }
    }

    fn reference(self) -> Value {
        json!({ "type": self.plugin(), "uid": self.uid() })
    }
}

/// What a SQL panel's rows must equal, in terms of the engine's outputs for
/// the same capture: the end-to-end test (`tests/tests/dashboards.rs`)
/// computes the expected rows from the KPI values and alerts the engine
/// printed and compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// (time = window end, metric = the dimensions' values or the KPI's name, value)
    /// for every value of the KPI in the range
    KpiSeries {
        kpi: String,
        dimensions: Vec<String>,
    },
    /// per metric: the mean of the KPI's values in the range and in the period
    /// of the same length before it
    KpiMean {
        kpi: String,
        dimensions: Vec<String>,
    },
    /// revenue and orders per hour or day (of window start) and currency, for
    /// every bucket that overlaps the range
    Revenue { bucket: &'static str },
    /// each funnel step's sessions summed over the range
    Funnel { steps: Vec<String> },
    /// firing alerts per minute of window end, by `rule_id` or `severity`
    AlertsOverTime { by: &'static str },
    /// firing alerts per hour of window end, rule and severity, for every hour
    /// that overlaps the range
    AlertsHourly,
    /// the entities with the most firing alerts
    TopEntities { limit: usize },
    /// incidents that fired and did not resolve
    OpenIncidents,
    /// the correlated incidents (alerts folded by the engine's correlator)
    /// still firing that had begun by the end of the range, the newest first;
    /// the rule variable keeps those with any chosen rule among their
    /// members', the severity variable filters their highest severity
    CorrelatedIncidents,
    /// per rule, of the incidents it fired in the range (by the time the
    /// engine emitted them): how many, and the median and the longest
    /// detection delay (first evidence to firing, seconds)
    DetectionDelay,
}

/// One query of a panel.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Sql {
        sql: String,
        /// `time_series` or `table`
        format: &'static str,
        check: Check,
    },
    Prom {
        expr: String,
        legend: String,
        /// whether the test fails on an empty result (false for series that
        /// exist only after something went wrong, e.g. rejected input)
        must_have_data: bool,
    },
}

impl Query {
    fn datasource(&self) -> Datasource {
        match self {
            Query::Sql { .. } => Datasource::Postgres,
            Query::Prom { .. } => Datasource::Prometheus,
        }
    }
}

/// Panel types the dashboards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viz {
    TimeSeries,
    Bars,
    Stat,
    Table,
    Text,
    Row,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub description: String,
    pub viz: Viz,
    /// Grafana unit id (`percentunit`, `ms`, `reqps`, `short`)
    pub unit: &'static str,
    pub queries: Vec<Query>,
    /// markdown of a text panel
    pub content: String,
    pub width: u32,
    pub height: u32,
}

impl Panel {
    pub fn new(viz: Viz, title: impl Into<String>) -> Panel {
        let (width, height) = match viz {
            Viz::Stat => (6, 4),
            Viz::Row => (24, 1),
            Viz::Table | Viz::Text => (24, 8),
            Viz::TimeSeries | Viz::Bars => (12, 8),
        };
        Panel {
            title: title.into(),
            description: String::new(),
            viz,
            unit: "short",
            queries: Vec::new(),
            content: String::new(),
            width,
            height,
        }
    }

    pub fn row(title: impl Into<String>) -> Panel {
        Panel::new(Viz::Row, title)
    }

    pub fn describe(mut self, text: impl Into<String>) -> Panel {
        self.description = text.into();
        self
    }

    pub fn unit(mut self, unit: &'static str) -> Panel {
        self.unit = unit;
        self
    }

    pub fn size(mut self, width: u32, height: u32) -> Panel {
        self.width = width;
        self.height = height;
        self
    }

    pub fn query(mut self, q: Query) -> Panel {
        self.queries.push(q);
        self
    }

    pub fn sql(self, sql: impl Into<String>, format: &'static str, check: Check) -> Panel {
        self.query(Query::Sql {
            sql: sql.into(),
            format,
            check,
        })
    }

    pub fn prom(self, expr: impl Into<String>, legend: impl Into<String>, must: bool) -> Panel {
        self.query(Query::Prom {
            expr: expr.into(),
            legend: legend.into(),
            must_have_data: must,
        })
    }

    pub fn text(mut self, markdown: impl Into<String>) -> Panel {
        self.content = markdown.into();
        self
    }

    fn options(&self) -> Value {
        let legend = json!({ "displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": [] });
        let tooltip = json!({ "mode": "multi", "sort": "desc" });
        match self.viz {
            Viz::TimeSeries => json!({ "legend": legend, "tooltip": tooltip }),
            Viz::Bars => json!({
                "orientation": "auto", "xTickLabelRotation": 0, "xTickLabelMaxLength": 0,
                "stacking": "none", "showValue": "auto", "barWidth": 0.9, "groupWidth": 0.7,
                "legend": legend, "tooltip": tooltip, "fullHighlight": false
            }),
            Viz::Stat => json!({
                "graphMode": "none", "colorMode": "value", "justifyMode": "auto",
                "textMode": "value_and_name", "wideLayout": true, "showPercentChange": false,
                "percentChangeColorMode": "standard", "orientation": "auto",
                "reduceOptions": { "values": true, "calcs": [], "fields": "" }
            }),
            Viz::Table => json!({ "frameIndex": 0, "showHeader": true, "cellHeight": "sm" }),
            Viz::Text => json!({ "mode": "markdown", "content": self.content }),
            Viz::Row => Value::Null,
        }
    }

    fn to_json(&self, id: u32, x: u32, y: u32) -> Value {
        let grid = json!({ "h": self.height, "w": self.width, "x": x, "y": y });
        if self.viz == Viz::Row {
            return json!({ "type": "row", "id": id, "title": self.title, "collapsed": false, "gridPos": grid, "panels": [] });
        }
        let mut p = json!({
            "type": match self.viz {
                Viz::TimeSeries => "timeseries",
                Viz::Bars => "barchart",
                Viz::Stat => "stat",
                Viz::Table => "table",
                Viz::Text => "text",
                Viz::Row => "row",
            },
            "id": id,
            "title": self.title,
            "gridPos": grid,
            "options": self.options(),
        });
        if !self.description.is_empty() {
            p["description"] = json!(self.description);
        }
        if let Some(first) = self.queries.first() {
            p["datasource"] = first.datasource().reference();
            p["targets"] = Value::Array(
                self.queries
                    .iter()
                    .enumerate()
                    .map(|(i, q)| target(q, i))
                    .collect(),
            );
            let mut defaults = json!({ "unit": self.unit, "noValue": "no data" });
            if self.viz == Viz::TimeSeries {
                defaults["custom"] = json!({ "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "auto", "spanNulls": false });
            }
            p["fieldConfig"] = json!({ "defaults": defaults, "overrides": [] });
        }
        p
    }
}

/// `A`, `B`, ... for the n-th query of a panel.
pub fn ref_id(n: usize) -> String {
    char::from(b'A' + (n % 26) as u8).to_string()
}

fn target(q: &Query, n: usize) -> Value {
    match q {
        Query::Sql { sql, format, .. } => json!({
            "refId": ref_id(n),
            "datasource": q.datasource().reference(),
            "editorMode": "code",
            "format": format,
            "rawQuery": true,
            "rawSql": sql,
        }),
        Query::Prom { expr, legend, .. } => json!({
            "refId": ref_id(n),
            "datasource": q.datasource().reference(),
            "editorMode": "code",
            "expr": expr,
            "legendFormat": legend,
            "range": true,
        }),
    }
}

/// A template variable.
#[derive(Debug, Clone, PartialEq)]
pub enum Variable {
    /// values from a query on a datasource
    Query {
        name: &'static str,
        label: &'static str,
        datasource: Datasource,
        query: String,
        /// what "All" stands for (so a variable with no values still renders)
        all_value: &'static str,
    },
    /// a fixed list of values
    Custom {
        name: &'static str,
        label: &'static str,
        values: Vec<String>,
        all_value: &'static str,
    },
}

impl Variable {
    pub fn name(&self) -> &'static str {
        match self {
            Variable::Query { name, .. } | Variable::Custom { name, .. } => name,
        }
    }

    fn to_json(&self) -> Value {
        let all = json!({ "selected": true, "text": ["All"], "value": ["$__all"] });
        match self {
            Variable::Query {
                name,
                label,
                datasource,
                query,
                all_value,
            } => json!({
                "type": "query", "name": name, "label": label,
                "datasource": datasource.reference(),
                "query": query, "definition": query,
                "refresh": 2, "sort": 1, "multi": true, "includeAll": true, "allValue": all_value,
                "current": all, "options": [],
            }),
            Variable::Custom {
                name,
                label,
                values,
                all_value,
            } => {
                let mut options =
                    vec![json!({ "selected": true, "text": "All", "value": "$__all" })];
                options.extend(
                    values
                        .iter()
                        .map(|v| json!({ "selected": false, "text": v, "value": v })),
                );
                json!({
                    "type": "custom", "name": name, "label": label,
                    "query": values.join(","),
                    "multi": true, "includeAll": true, "allValue": all_value,
                    "current": all, "options": options,
                })
            }
        }
    }
}

/// One dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Board {
    /// the file name under `dashboards/grafana/`
    pub file: &'static str,
    pub uid: &'static str,
    pub title: &'static str,
    pub description: String,
    pub tags: Vec<&'static str>,
    pub variables: Vec<Variable>,
    pub panels: Vec<Panel>,
}

impl Board {
    /// Grafana's dashboard JSON. Panels flow left to right on Grafana's
    /// 24-column grid; a row starts a new line.
    pub fn to_json(&self) -> Value {
        let (mut x, mut y, mut line_height) = (0u32, 0u32, 0u32);
        let mut panels = Vec::new();
        for (i, p) in self.panels.iter().enumerate() {
            if x + p.width > 24 || (p.viz == Viz::Row && x > 0) {
                x = 0;
                y += line_height;
                line_height = 0;
            }
            panels.push(p.to_json(i as u32 + 1, x, y));
            x += p.width;
            line_height = line_height.max(p.height);
        }
        json!({
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "editable": true,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "timezone": "utc",
            "refresh": "30s",
            "time": { "from": "now-6h", "to": "now" },
            "timepicker": {},
            "annotations": { "list": [] },
            "links": [],
            "templating": { "list": self.variables.iter().map(Variable::to_json).collect::<Vec<_>>() },
            "panels": panels,
        })
    }
}
