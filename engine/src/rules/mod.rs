//! Rules and KPIs: parsing their files ([`definition`]) and planning them once
//! onto DataFusion ([`RuleSet`]), then evaluating the plans over each set of
//! closed windows.
//!
//! Rules that share a window spec share one DataFusion session whose tables
//! (`spans`, `logs`, `events`, `metrics`) read the rows of the windows being
//! closed: telemetry is decoded once and every rule reads the same batches.

pub mod definition;
pub mod distinct;
pub mod growth;
pub mod panes;
pub mod rollup;
pub mod sequence;
pub mod snapshot;
pub mod topology;
pub mod trace_sample;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, Float64Array, TimestampNanosecondArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::prelude::{SessionConfig, SessionContext};
use ingest::Table;
use ingest::schema::column_name;

pub use definition::{Definition, Kind, Location, RuleError, Severity, WindowSpec};
pub use growth::Growth;
pub use rollup::Rollups;
pub use snapshot::SnapshotTable;

/// A DataFusion session whose tables hold the rows of windows of one spec.
pub struct WindowSession {
    pub spec: WindowSpec,
    pub ctx: SessionContext,
    pub tables: BTreeMap<Table, Arc<SnapshotTable>>,
    /// the kept KPIs its `rollup(...)` and `baseline(...)` read
    pub rollups: Rollups,
    /// the windows being evaluated, for those two
    pub frame: rollup::Frame,
}

/// Tables a rule may read: the three ingest tables and the `events` view.
pub const TABLE_NAMES: [&str; 4] = ["spans", "logs", "events", "metrics"];

impl WindowSession {
    pub async fn new(spec: WindowSpec) -> DfResult<Self> {
        let mut config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(true);
        // Physical plans are made once and run again on new rows; a dynamic
        // filter would carry one run's values into the next.
        config
            .options_mut()
            .optimizer
            .enable_dynamic_filter_pushdown = false;
        let ctx = SessionContext::new_with_config(config);
        ctx.register_udaf(trace_sample::udaf());
        ctx.register_udaf(sequence::udaf());
        ctx.add_optimizer_rule(Arc::new(distinct::DistinctText::default()));
        let rollups = Rollups::default();
        let frame = rollup::Frame::default();
        for (name, f) in rollup::RollupFunction::pair(&rollups, &frame, spec) {
            ctx.register_udtf(name, Arc::new(f));
        }
        let mut tables = BTreeMap::new();
        for table in Table::ALL {
            let provider = Arc::new(SnapshotTable::new(table.schema(), spec));
            ctx.register_table(table.name(), provider.clone())?;
            tables.insert(table, provider);
        }
        ctx.sql("CREATE VIEW events AS SELECT * FROM logs WHERE event_name IS NOT NULL")
            .await?;
        Ok(WindowSession {
            spec,
            ctx,
            tables,
            rollups,
            frame,
        })
    }

    /// Sets the windows the next run evaluates, `[first, last]` by their
    /// starts, for the tables that do not hold rows (`rollup`, `baseline`).
    pub fn set_frame(&self, first: i64, last: i64) {
        self.frame.set(first, last);
    }

    /// Plans `sql` once: parsed, checked against the schema and optimized.
    pub async fn plan(&self, sql: &str) -> DfResult<LogicalPlan> {
        let state = self.ctx.state();
        let plan = state.create_logical_plan(sql).await?;
        state.optimize(&plan)
    }

    /// Runs a plan made by [`WindowSession::plan`] over the current rows. The
    /// physical plan is made on the first run (with per-slide partial
    /// aggregates where exact, if `panes`) and kept in `physical`; later runs
    /// reset its state and execute it again (the tables' scans read the rows
    /// when executed).
    pub async fn execute(
        &self,
        plan: &LogicalPlan,
        physical: &Mutex<Option<Arc<dyn ExecutionPlan>>>,
        panes: bool,
    ) -> DfResult<Vec<RecordBatch>> {
        let state = self.ctx.state();
        let kept = physical.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let exec = match kept {
            Some(p) => reset_plan_states(p)?,
            None => {
                let mut p = state
                    .query_planner()
                    .create_physical_plan(plan, &state)
                    .await?;
                if panes {
                    p = panes::rewrite(p)?;
                }
                *physical.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                p
            }
        };
        datafusion::physical_plan::collect(exec, state.task_ctx()).await
    }
}

/// The location and message of a DataFusion error in a rule's SQL.
pub fn sql_error(def: &Definition, err: &DataFusionError) -> RuleError {
    let message = err.to_string();
    let (line, column) = error_position(err, &message)
        .or_else(|| unknown_name_position(&def.sql, &message))
        .unwrap_or((1, 1));
    let hint = if message.contains("No field named") || message.contains("not found") {
        Some(format!(
            "tables are {}; every table has window_start, window_end and time; attributes are columns with '.' as '_' (client.address -> client_address); see docs/schema.md",
            TABLE_NAMES.join(", ")
        ))
    } else if message.contains("Expected") || message.contains("syntax") {
        Some("check the SQL near this position".to_string())
    } else {
        None
    };
    let mut e = RuleError::new(def.sql_location(line, column), first_line(&message));
    e.hint = hint;
    e
}

/// For "No field named X", the first place X stands in the SQL.
fn unknown_name_position(sql: &str, message: &str) -> Option<(usize, usize)> {
    let rest = &message[message.find("No field named ")? + 15..];
    let name: String = rest
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let name = name.trim_end_matches('.');
    let name = name.rsplit('.').next().unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let offset = sql.find(name)?;
    let before = &sql[..offset];
    let line = 1 + before.matches('\n').count();
    let column = 1 + before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    Some((line, column))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// Finds a SQL position in a DataFusion error: its diagnostic span, else the
/// parser's "Line: L, Column: C".
fn error_position(err: &DataFusionError, message: &str) -> Option<(usize, usize)> {
    if let Some(span) = err.diagnostic().and_then(|d| d.span) {
        return Some((span.start.line as usize, span.start.column as usize));
    }
    let at = message.find("Line: ")?;
    let rest = &message[at + 6..];
    let line: usize = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let col_at = rest.find("Column: ")?;
    let column: usize = rest[col_at + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((line, column))
}

/// One row of a rule's or KPI's output, in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub window_start: i64,
    /// the key attributes (contract names) and their values as text
    pub keys: BTreeMap<String, String>,
    /// the measured figure(s), in the order of the definition's `values`
    pub values: Vec<f64>,
    /// sample trace ids, sorted, at most five
    pub trace_ids: Vec<String>,
    /// other output columns the alert's summary names (`{top_addresses}`),
    /// as text: what a responder acts on, not part of the entity
    pub details: BTreeMap<String, String>,
    /// the optional `first_seen` output column: the event time of the
    /// finding's first evidence (e.g. `min(time) AS first_seen`)
    pub first_seen: Option<i64>,
}

/// A definition planned against the schema.
pub struct CompiledRule {
    pub def: Definition,
    pub plan: LogicalPlan,
    /// the physical plan, made at the first evaluation and run again after
    physical: Mutex<Option<Arc<dyn ExecutionPlan>>>,
    /// the plan of early passes over open windows, apart from `physical`:
    /// pane states are made only from final windows
    early_physical: Mutex<Option<Arc<dyn ExecutionPlan>>>,
    /// whether it can fire before its window closes
    pub growth: Growth,
    /// index of its session in the rule set
    pub session: usize,
}

impl CompiledRule {
    /// Checks that the plan's output has the columns the definition names.
    fn check_output(def: &Definition, plan: &LogicalPlan) -> Result<(), RuleError> {
        let schema = plan.schema();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut missing: Vec<String> = Vec::new();
        if !names.iter().any(|n| n == "window_start") {
            missing.push("window_start".into());
        }
        for key in &def.keys {
            let col = column_name(key);
            if !names.contains(&col) {
                missing.push(col);
            }
        }
        for v in &def.values {
            match schema.fields().iter().find(|f| f.name() == v) {
                None => missing.push(v.clone()),
                Some(f) if !f.data_type().is_numeric() => {
                    return Err(RuleError::new(
                        def.header_location(),
                        format!("the value column `{v}` is {}, not a number", f.data_type()),
                    ));
                }
                Some(_) => {}
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(RuleError::new(
            def.sql_location(1, 1),
            format!("the query's output lacks {}", missing.join(", ")),
        )
        .with_hint(format!(
            "the output has {}; select window_start, the entity columns ({}) and the value column, and GROUP BY window_start, window_end, ...",
            names.join(", "),
            def.keys.iter().map(|k| column_name(k)).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Runs the rule over the current rows of its session.
    pub async fn execute(&self, session: &WindowSession) -> DfResult<Vec<RecordBatch>> {
        session
            .execute(&self.plan, &self.physical, self.def.panes)
            .await
    }

    /// Runs the rule over the open windows its session holds, before they
    /// close (an early pass; see [`Growth`]), with a plan of its own.
    pub async fn execute_early(&self, session: &WindowSession) -> DfResult<Vec<RecordBatch>> {
        session
            .execute(&self.plan, &self.early_physical, false)
            .await
    }

    /// Forgets the physical plans, so that the next run plans afresh (after a
    /// failure, in case the plan's state is what failed).
    pub fn replan(&self) {
        *self.physical.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self
            .early_physical
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Reads the findings out of the rule's result batches.
    pub fn findings(&self, batches: &[RecordBatch]) -> Result<Vec<Finding>, DataFusionError> {
        let mut out = Vec::new();
        let options = FormatOptions::default();
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            let col = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "rule {}: output column `{name}` is missing",
                        self.def.id
                    ))
                })
            };
            let starts = cast(
                col("window_start")?,
                &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
            )?;
            let starts = starts
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .ok_or_else(|| DataFusionError::Plan("window_start is not a timestamp".into()))?
                .clone();
            let mut keys = Vec::new();
            for key in &self.def.keys {
                let array = col(&column_name(key))?;
                keys.push((key.clone(), array.clone()));
            }
            let formatters = keys
                .iter()
                .map(|(k, a)| Ok((k.clone(), ArrayFormatter::try_new(a.as_ref(), &options)?)))
                .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
            let mut values = Vec::new();
            for v in &self.def.values {
                let a = cast(col(v)?, &DataType::Float64)?;
                values.push(
                    a.as_any()
                        .downcast_ref::<Float64Array>()
                        .cloned()
                        .ok_or_else(|| {
                            DataFusionError::Plan(format!("value column `{v}` is not numeric"))
                        })?,
                );
            }
            let template = match &self.def.kind {
                Kind::Alert {
                    summary: Some(t), ..
                } => t.as_str(),
                _ => "",
            };
            let details = batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .filter(|(f, _)| template.contains(&format!("{{{}}}", f.name())))
                .map(|(f, a)| {
                    Ok((
                        f.name().clone(),
                        ArrayFormatter::try_new(a.as_ref(), &options)?,
                    ))
                })
                .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
            let traces = batch.column_by_name("trace_ids");
            let first_seen = match batch.column_by_name("first_seen") {
                Some(a) => Some(
                    cast(
                        a,
                        &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
                    )
                    .map_err(|e| {
                        DataFusionError::Plan(format!(
                            "rule {}: the output column `first_seen` is not a time: {e}",
                            self.def.id
                        ))
                    })?,
                ),
                None => None,
            };
            let first_seen = first_seen
                .as_ref()
                .and_then(|a| a.as_any().downcast_ref::<TimestampNanosecondArray>());
            for row in 0..batch.num_rows() {
                if starts.is_null(row) {
                    continue;
                }
                let mut key_values = BTreeMap::new();
                for ((name, array), (_, fmt)) in keys.iter().zip(&formatters) {
                    let text = if array.is_null(row) {
                        String::new()
                    } else {
                        fmt.value(row).to_string()
                    };
                    key_values.insert(name.clone(), text);
                }
                out.push(Finding {
                    window_start: starts.value(row),
                    keys: key_values,
                    values: values
                        .iter()
                        .map(|a| {
                            if a.is_null(row) {
                                f64::NAN
                            } else {
                                a.value(row)
                            }
                        })
                        .collect(),
                    trace_ids: traces
                        .map(|t| sample_traces(t.as_ref(), row))
                        .unwrap_or_default(),
                    details: details
                        .iter()
                        .map(|(name, fmt)| (name.clone(), fmt.value(row).to_string()))
                        .collect(),
                    first_seen: first_seen.filter(|a| !a.is_null(row)).map(|a| a.value(row)),
                });
            }
        }
        Ok(out)
    }
}

/// Up to five trace ids from a `trace_ids` output cell (a list or one text), sorted.
fn sample_traces(array: &dyn Array, row: usize) -> Vec<String> {
    if array.is_null(row) {
        return vec![];
    }
    let mut ids: Vec<String> = match array.data_type() {
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            let text = cast(&list, &DataType::Utf8).ok();
            text.map(|t| {
                t.as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
        }
        DataType::Utf8 => vec![array.as_string::<i32>().value(row).to_string()],
        _ => vec![],
    };
    ids.retain(|s| !s.is_empty());
    ids.sort();
    ids.dedup();
    ids.truncate(5);
    ids
}

/// Which definitions of a pack to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Alerts,
    Kpis,
    All,
}

impl Which {
    fn keeps(self, def: &Definition) -> bool {
        match self {
            Which::Alerts => !def.is_kpi(),
            Which::Kpis => def.is_kpi(),
            Which::All => true,
        }
    }
}

/// Every rule and KPI of a pack, planned, grouped by window spec.
pub struct RuleSet {
    /// shared with the tasks that evaluate their rules
    pub sessions: Vec<Arc<WindowSession>>,
    pub rules: Vec<Arc<CompiledRule>>,
    /// files that could not be used, with why; the other rules run
    pub errors: Vec<RuleError>,
    /// the values of kept KPIs (`keep`), shared by every session
    pub rollups: Rollups,
}

impl RuleSet {
    /// Turns per-slide partial aggregates on or off for every rule, whatever
    /// its header says (for measuring and testing them).
    pub fn set_panes(&mut self, on: bool) {
        for r in &mut self.rules {
            // the rules are shared only while an evaluation runs
            let Some(r) = Arc::get_mut(r) else {
                tracing::warn!("set_panes during an evaluation: ignored");
                return;
            };
            r.def.panes = on;
            r.replan();
        }
    }

    /// Parses and plans every `.sql` file under `dir`. A file with an error is
    /// reported in `errors` and left out; the others are kept.
    pub async fn load(dir: &Path, which: Which) -> Result<RuleSet, RuleError> {
        // a kept KPI is loaded with the rules: they may read it
        Self::load_matching(dir, |def| which.keeps(def) || def.rollup.is_some()).await
    }

    /// Like [`RuleSet::load`], only the rules and KPIs `keep` says yes to
    /// (the share of the pack one keyed topic's engine runs, issue 18).
    pub async fn load_matching(
        dir: &Path,
        keep: impl Fn(&Definition) -> bool,
    ) -> Result<RuleSet, RuleError> {
        let files = definition::rule_files(dir).map_err(|e| {
            RuleError::new(
                Location {
                    file: dir.to_path_buf(),
                    line: 1,
                    column: 1,
                },
                format!("cannot read the rules folder: {e}"),
            )
            .with_hint("pass --rules DIR with the folder of .sql rule files")
        })?;
        let mut defs = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            match definition::parse_file(&file) {
                Ok(def) if keep(&def) => defs.push(def),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        let mut set = RuleSet::from_definitions(defs).await?;
        errors.append(&mut set.errors);
        set.errors = errors;
        Ok(set)
    }

    /// Plans parsed definitions; duplicate ids and planning errors go to `errors`.
    pub async fn from_definitions(defs: Vec<Definition>) -> Result<RuleSet, RuleError> {
        Self::from_definitions_with(defs, &[]).await
    }

    /// [`RuleSet::from_definitions`], with scalar functions of the caller's
    /// own that the rules may call, besides DataFusion's and the engine's.
    pub async fn from_definitions_with(
        defs: Vec<Definition>,
        functions: &[ScalarUDF],
    ) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet {
            sessions: vec![],
            rules: vec![],
            errors: vec![],
            rollups: Rollups::default(),
        };
        // kept KPIs first: a rule reading one is planned against its shape
        for def in &defs {
            set.rollups.define(def);
        }
        let mut seen = BTreeMap::new();
        for def in defs {
            if let Some(first) = seen.get(&def.id) {
                set.errors.push(RuleError::new(
                    def.header_location(),
                    format!("the id `{}` is already used by {}", def.id, first),
                ));
                continue;
            }
            seen.insert(def.id.clone(), def.path.display().to_string());
            let session = match set.sessions.iter().position(|s| s.spec == def.window) {
                Some(i) => i,
                None => {
                    let s = WindowSession::new(def.window)
                        .await
                        .map_err(|e| RuleError::new(def.header_location(), e.to_string()))?;
                    for f in functions {
                        s.ctx.register_udf(f.clone());
                    }
                    s.rollups.join(&set.rollups);
                    set.sessions.push(Arc::new(s));
                    set.sessions.len() - 1
                }
            };
            match CompiledRule::plan_in(def, &set.sessions[session], session).await {
                Ok(rule) => set.rules.push(Arc::new(rule)),
                Err(e) => set.errors.push(e),
            }
        }
        set.rules.sort_by(|a, b| a.def.id.cmp(&b.def.id));
        Ok(set)
    }

    /// The pack's version: 16 hex digits of a hash over every rule's id and
    /// version ([`Definition::version`], a hash of its file), so that any
    /// change of any rule file, a rule added or one removed changes it.
    pub fn version(&self) -> String {
        let mut ids: Vec<(&str, &str)> = self
            .rules
            .iter()
            .map(|r| (r.def.id.as_str(), r.def.version.as_str()))
            .collect();
        ids.sort();
        let text: String = ids.iter().map(|(id, v)| format!("{id}\0{v}\n")).collect();
        format!("{:016x}", definition::fnv1a64(text.as_bytes()))
    }
}

impl CompiledRule {
    /// Plans `def` in `session` (index `index` of its rule set) and checks its output.
    pub async fn plan_in(
        def: Definition,
        session: &WindowSession,
        index: usize,
    ) -> Result<CompiledRule, RuleError> {
        let state = session.ctx.state();
        // classified as written, before the optimizer rewrites it
        let written = state
            .create_logical_plan(&def.sql)
            .await
            .map_err(|e| sql_error(&def, &e))?;
        let plan = state.optimize(&written).map_err(|e| sql_error(&def, &e))?;
        CompiledRule::check_output(&def, &plan)?;
        let growth = growth::classify(&written, &def.keys);
        Ok(CompiledRule {
            def,
            plan,
            physical: Mutex::new(None),
            early_physical: Mutex::new(None),
            growth,
            session: index,
        })
    }

    /// The same rule, plans and state, as session `index` of another rule
    /// set (a reloaded pack in which its session sits elsewhere).
    pub fn moved_to(&self, index: usize) -> CompiledRule {
        CompiledRule {
            def: self.def.clone(),
            plan: self.plan.clone(),
            physical: Mutex::new(
                self.physical
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
            early_physical: Mutex::new(None),
            growth: self.growth.clone(),
            session: index,
        }
    }
}
