//! The scale-out plan: which rules several engines can share by an entity key,
//! and on which keyed topics (issue 18).
//!
//! When several engines share the input, a rule is exact only if every row it
//! needs to compare reaches the same engine. A repartition stage can re-key
//! rows by one attribute (a *keyed topic*, `otelguard_by_client_address`), so
//! that one engine sees every row of each value of it. A rule can read such a
//! topic when rows with different values of the key never meet in it: each of
//! its aggregates groups by the key, each of its joins matches rows on it,
//! each of its window functions partitions by it. Run on any split of the
//! values, it then finds exactly what it finds on all rows.
//!
//! Each rule and KPI is put in one of three classes, read from its optimized
//! logical plan (the plan the engine runs), conservatively: a node or an
//! expression not known to keep the key's values apart makes the rule global.
//!
//! - **keyed**: apart by one of its own entity keys (or, for a KPI, one of
//!   its dimensions), the first in the header's order that is;
//! - **trace**: apart by `trace_id` only: such rules read input keyed by
//!   trace id, as the Collector's Kafka exporter keys spans with
//!   `partition_traces_by_id`;
//! - **global**: anything else (one figure over every row, a join or an
//!   aggregate across the key, a subquery, a LIMIT, the kept values of
//!   `rollup(...)` and `baseline(...)`): it stays on one engine that reads
//!   every row.
//!
//! The plan is computed only; nothing here talks to Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Distinct, Expr, JoinType, LogicalPlan};
use ingest::Table;
use ingest::schema::column_name;
use serde::Serialize;

use super::snapshot::columns_read;
use super::{CompiledRule, RuleSet, TABLE_NAMES};
use crate::window::SPAN_EVENT_TIME;

/// Partitions of each keyed topic unless `--partitions` says otherwise.
pub const DEFAULT_PARTITIONS: u32 = 6;

/// The key every trace-keyed rule needs: the Collector's Kafka exporter keys
/// spans by it.
pub const TRACE_KEY: &str = "trace_id";

/// Where a rule runs when several engines share the work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// on the topic keyed by this attribute (contract name, e.g. `client.address`)
    Keyed { key: String },
    /// on input keyed by trace id
    Trace,
    /// on one engine that reads every row
    Global,
}

/// One rule or KPI, its class and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub id: String,
    pub kpi: bool,
    pub placement: Placement,
    /// why, in words
    pub reason: String,
}

/// Classifies one planned rule or KPI.
pub fn classify(rule: &CompiledRule) -> Classified {
    let def = &rule.def;
    let (placement, reason) = placement(rule);
    Classified {
        id: def.id.clone(),
        kpi: def.is_kpi(),
        placement,
        reason,
    }
}

fn placement(rule: &CompiledRule) -> (Placement, String) {
    let def = &rule.def;
    if def.rollup.is_some() {
        return (
            Placement::Global,
            "its values are kept for rollup(...) and baseline(...), which read every key's values on one engine".into(),
        );
    }
    let mut refused = Vec::new();
    for key in &def.keys {
        let column = column_name(key);
        if column == TRACE_KEY {
            continue;
        }
        match apart(&rule.plan, &column) {
            Ok(shape) => {
                return (
                    Placement::Keyed { key: key.clone() },
                    shape.describe(&column),
                );
            }
            Err(why) => refused.push(format!("not by {key}: {why}")),
        }
    }
    match apart(&rule.plan, TRACE_KEY) {
        Ok(shape) => {
            let mut reason = shape.describe(TRACE_KEY);
            if !refused.is_empty() {
                reason = format!("{}; {reason}", refused.join("; "));
            }
            (Placement::Trace, reason)
        }
        Err(_) if refused.is_empty() => (
            Placement::Global,
            "it has no dimension, so each of its figures covers every row of a window".into(),
        ),
        Err(_) => (Placement::Global, refused.join("; ")),
    }
}

/// What a plan that keeps a key's values apart does with it, for the reason.
#[derive(Debug, Default)]
struct Shape {
    tables: BTreeSet<&'static str>,
    aggregates: usize,
    joins: usize,
    windows: usize,
}

impl Shape {
    fn describe(&self, column: &str) -> String {
        let tables: Vec<&str> = self.tables.iter().copied().collect();
        let mut parts = Vec::new();
        match self.aggregates {
            0 => {}
            1 => parts.push(format!("its aggregate groups by {column}")),
            2 => parts.push(format!("both its aggregates group by {column}")),
            n => parts.push(format!("all {n} of its aggregates group by {column}")),
        }
        match self.joins {
            0 => {}
            1 => parts.push(format!("its join matches rows on {column}")),
            n => parts.push(format!("its {n} joins match rows on {column}")),
        }
        match self.windows {
            0 => {}
            1 => parts.push(format!("its window function partitions by {column}")),
            n => parts.push(format!("its {n} window functions partition by {column}")),
        }
        if parts.is_empty() {
            parts.push("it looks at one row at a time".into());
        }
        format!("reads {}; {}", tables.join(" and "), parts.join(", "))
    }
}

/// Checks that `plan` keeps the values of `column` apart; returns what it
/// does with them, or why it does not.
fn apart(plan: &LogicalPlan, column: &str) -> Result<Shape, String> {
    let mut shape = Shape::default();
    carriers(plan, column, &mut shape)?;
    Ok(shape)
}

/// The output columns (by index) of a plan node that hold, in each row,
/// the one value of `column` that every row it came from has; or why the
/// node may mix rows of different values.
fn carriers(
    plan: &LogicalPlan,
    column: &str,
    shape: &mut Shape,
) -> Result<BTreeSet<usize>, String> {
    for e in plan.expressions() {
        let subquery = e
            .exists(|x| {
                Ok(matches!(
                    x,
                    Expr::ScalarSubquery(_)
                        | Expr::Exists(_)
                        | Expr::InSubquery(_)
                        | Expr::OuterReferenceColumn(..)
                ))
            })
            .unwrap_or(true);
        if subquery {
            return Err(format!(
                "the subquery in `{}` reads rows of every {column} value",
                short(&e)
            ));
        }
    }
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            let Some(table) = Table::ALL
                .into_iter()
                .find(|t| t.name() == name || (name == "events" && *t == Table::Logs))
            else {
                return Err(if TABLE_NAMES.contains(&name) {
                    format!("it reads `{name}`, which is not known")
                } else {
                    format!(
                        "it reads `{name}`, not telemetry rows (rollup(...) and baseline(...) read the kept values of every key)"
                    )
                });
            };
            if table.schema().index_of(column).is_err() {
                return Err(format!(
                    "it reads {}, which has no {column} column",
                    table.name()
                ));
            }
            shape.tables.insert(table.name());
            Ok(scan
                .projected_schema
                .fields()
                .iter()
                .position(|f| f.name() == column)
                .into_iter()
                .collect())
        }
        LogicalPlan::Projection(p) => {
            let input = carriers(&p.input, column, shape)?;
            Ok(p.expr
                .iter()
                .enumerate()
                .filter(|(_, e)| input_index(e, &p.input).is_some_and(|i| input.contains(&i)))
                .map(|(i, _)| i)
                .collect())
        }
        LogicalPlan::Filter(f) => carriers(&f.input, column, shape),
        LogicalPlan::SubqueryAlias(s) => carriers(&s.input, column, shape),
        LogicalPlan::Repartition(r) => carriers(&r.input, column, shape),
        LogicalPlan::Sort(s) if s.fetch.is_none() => carriers(&s.input, column, shape),
        LogicalPlan::Aggregate(a) => {
            let input = carriers(&a.input, column, shape)?;
            if a.group_expr
                .iter()
                .any(|g| matches!(g, Expr::GroupingSet(_)))
            {
                return Err(format!(
                    "an aggregate by grouping sets (ROLLUP, CUBE) adds up rows of many {column} values"
                ));
            }
            let kept: BTreeSet<usize> = a
                .group_expr
                .iter()
                .enumerate()
                .filter(|(_, g)| input_index(g, &a.input).is_some_and(|i| input.contains(&i)))
                .map(|(i, _)| i)
                .collect();
            if kept.is_empty() {
                let groups: Vec<String> = a.group_expr.iter().map(name_of).collect();
                return Err(format!(
                    "an aggregate groups by {} without {column}: it adds up rows of many {column} values",
                    listed(&groups, "nothing")
                ));
            }
            shape.aggregates += 1;
            Ok(kept)
        }
        LogicalPlan::Window(w) => {
            let input = carriers(&w.input, column, shape)?;
            for e in &w.window_expr {
                let Expr::WindowFunction(f) = unalias(e) else {
                    return Err(format!(
                        "`{}` is not a window function known here",
                        short(e)
                    ));
                };
                let by_key = f
                    .params
                    .partition_by
                    .iter()
                    .any(|p| input_index(p, &w.input).is_some_and(|i| input.contains(&i)));
                if !by_key {
                    let by: Vec<String> = f.params.partition_by.iter().map(name_of).collect();
                    return Err(format!(
                        "the window function `{}` partitions by {} without {column}",
                        f.fun.name(),
                        listed(&by, "nothing")
                    ));
                }
                shape.windows += 1;
            }
            Ok(input)
        }
        LogicalPlan::Join(j) => {
            let left = carriers(&j.left, column, shape)?;
            let right = carriers(&j.right, column, shape)?;
            let matched = j.on.iter().any(|(l, r)| {
                input_index(l, &j.left).is_some_and(|i| left.contains(&i))
                    && input_index(r, &j.right).is_some_and(|i| right.contains(&i))
            });
            if !matched {
                let on: Vec<String> =
                    j.on.iter()
                        .map(|(l, r)| {
                            let (l, r) = (name_of(l), name_of(r));
                            if l == r { l } else { format!("{l} = {r}") }
                        })
                        .collect();
                return Err(if on.is_empty() {
                    format!("a join without an equality pairs rows of different {column} values")
                } else {
                    format!(
                        "a join matches rows on {} without {column}: it pairs rows of different {column} values",
                        on.join(", ")
                    )
                });
            }
            shape.joins += 1;
            let width = j.left.schema().fields().len();
            let shifted = right.iter().map(|i| i + width);
            // an outer join's other side is null in the rows it adds
            Ok(match j.join_type {
                JoinType::Inner => left.into_iter().chain(shifted).collect(),
                JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                    left
                }
                JoinType::RightSemi | JoinType::RightAnti => right,
                JoinType::Right => shifted.collect(),
                _ => BTreeSet::new(),
            })
        }
        LogicalPlan::Union(u) => {
            let mut common: Option<BTreeSet<usize>> = None;
            for input in &u.inputs {
                let next = carriers(input, column, shape)?;
                common = Some(match common {
                    None => next,
                    Some(c) => c.intersection(&next).copied().collect(),
                });
            }
            Ok(common.unwrap_or_default())
        }
        LogicalPlan::Distinct(Distinct::All(input)) => {
            let kept = carriers(input, column, shape)?;
            if kept.is_empty() {
                return Err(format!(
                    "a DISTINCT over columns without {column} merges rows of many {column} values"
                ));
            }
            Ok(kept)
        }
        // no rows: nothing to mix
        LogicalPlan::EmptyRelation(e) if !e.produce_one_row => {
            Ok((0..plan.schema().fields().len()).collect())
        }
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Err(format!(
            "its constant rows belong to no {column} value: every engine would make them"
        )),
        LogicalPlan::Limit(_) | LogicalPlan::Sort(_) => {
            Err(format!("a LIMIT picks rows among every {column} value"))
        }
        other => Err(format!(
            "`{}` is not known to keep {column} values apart",
            other.display()
        )),
    }
}

/// The index in `input`'s output of the column `e` names, if it is a column.
fn input_index(e: &Expr, input: &LogicalPlan) -> Option<usize> {
    match unalias(e) {
        Expr::Column(c) => input.schema().maybe_index_of_column(c),
        _ => None,
    }
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        e => e,
    }
}

/// A column's name, else the expression's text, for reasons.
fn name_of(e: &Expr) -> String {
    match unalias(e) {
        Expr::Column(c) => c.name.clone(),
        e => short(e),
    }
}

/// An expression's text, cut to a readable length.
fn short(e: &Expr) -> String {
    let text = e.to_string();
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// A rule or KPI on a topic, or on the trace-keyed or global engines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: String,
    pub kpi: bool,
    pub reason: String,
}

impl From<&Classified> for Member {
    fn from(c: &Classified) -> Self {
        Member {
            id: c.id.clone(),
            kpi: c.kpi,
            reason: c.reason.clone(),
        }
    }
}

/// A repartition topic: rows re-keyed by one attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyedTopic {
    /// `otelguard_by_` and the key's column name
    pub topic: String,
    /// the attribute rows are keyed by (contract name)
    pub key: String,
    pub partitions: u32,
    pub rules: Vec<Member>,
    /// per table, the columns the topic's rows must carry: what the rules'
    /// scans read (with what sample traces show), the event time and the
    /// columns that are never null; `None`: every column (a `SELECT *`)
    pub columns: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// The scale-out topology of a rule pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// one per entity key some rule is keyed by, in key order
    pub topics: Vec<KeyedTopic>,
    /// rules apart by trace id only: they read input keyed by trace id
    pub by_trace: Vec<Member>,
    /// rules that stay on one engine reading every row
    pub global: Vec<Member>,
    /// the columns the trace-keyed rules read, per table (as [`KeyedTopic::columns`])
    pub by_trace_columns: BTreeMap<String, Option<BTreeSet<String>>>,
    /// the columns the global rules read, per table
    pub global_columns: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// The topic of the global rules: one partition, every row they read.
pub const GLOBAL_TOPIC: &str = "otelguard_global";

/// Where the repartition stage sends rows, and which rules read them: a
/// keyed topic, the trace-keyed topic or the global one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub topic: String,
    /// the column rows are keyed by; `None` for the global topic
    pub key_column: Option<String>,
    pub partitions: u32,
    /// per table the rules read, the columns to carry (`None`: every column)
    pub columns: BTreeMap<Table, Option<BTreeSet<String>>>,
    /// the rules and KPIs that read the topic
    pub rules: BTreeSet<String>,
}

impl Topology {
    /// Every topic the repartition stage writes, with its rules: the keyed
    /// topics, then the trace-keyed and the global topics when some rule
    /// reads them. The trace topic has as many partitions as the keyed ones.
    pub fn routes(&self, partitions: u32) -> Vec<Route> {
        let tables = |columns: &BTreeMap<String, Option<BTreeSet<String>>>| {
            columns
                .iter()
                .filter_map(|(name, c)| {
                    Table::ALL
                        .into_iter()
                        .find(|t| t.name() == name)
                        .map(|t| (t, c.clone()))
                })
                .collect()
        };
        let ids = |members: &[Member]| members.iter().map(|m| m.id.clone()).collect();
        let mut routes: Vec<Route> = self
            .topics
            .iter()
            .map(|t| Route {
                topic: t.topic.clone(),
                key_column: Some(column_name(&t.key)),
                partitions: t.partitions,
                columns: tables(&t.columns),
                rules: ids(&t.rules),
            })
            .collect();
        if !self.by_trace.is_empty() {
            routes.push(Route {
                topic: topic_name(TRACE_KEY),
                key_column: Some(TRACE_KEY.to_string()),
                partitions,
                columns: tables(&self.by_trace_columns),
                rules: ids(&self.by_trace),
            });
        }
        if !self.global.is_empty() {
            routes.push(Route {
                topic: GLOBAL_TOPIC.to_string(),
                key_column: None,
                partitions: 1,
                columns: tables(&self.global_columns),
                rules: ids(&self.global),
            });
        }
        routes
    }
}

/// The topic name of a key: `client.address` gives `otelguard_by_client_address`.
pub fn topic_name(key: &str) -> String {
    format!("otelguard_by_{}", column_name(key))
}

/// Classifies every rule and KPI of `set` and groups them into topics of
/// `partitions` partitions each.
pub fn plan(set: &RuleSet, partitions: u32) -> Topology {
    let classified: Vec<(&CompiledRule, Classified)> = set
        .rules
        .iter()
        .map(|r| (r.as_ref(), classify(r)))
        .collect();
    let mut keyed: BTreeMap<&str, Vec<&(&CompiledRule, Classified)>> = BTreeMap::new();
    let mut by_trace = Vec::new();
    let mut global = Vec::new();
    let (mut trace_rules, mut global_rules) = (Vec::new(), Vec::new());
    for entry in &classified {
        match &entry.1.placement {
            Placement::Keyed { key } => keyed.entry(key.as_str()).or_default().push(entry),
            Placement::Trace => {
                by_trace.push(Member::from(&entry.1));
                trace_rules.push(entry.0);
            }
            Placement::Global => {
                global.push(Member::from(&entry.1));
                global_rules.push(entry.0);
            }
        }
    }
    let topics = keyed
        .into_iter()
        .map(|(key, members)| KeyedTopic {
            topic: topic_name(key),
            key: key.to_string(),
            partitions,
            columns: topic_columns(members.iter().map(|(r, _)| *r), Some(&column_name(key))),
            rules: members.iter().map(|(_, c)| Member::from(c)).collect(),
        })
        .collect();
    Topology {
        topics,
        by_trace,
        global,
        by_trace_columns: topic_columns(trace_rules.into_iter(), Some(TRACE_KEY)),
        global_columns: topic_columns(global_rules.into_iter(), None),
    }
}

/// Per table the rules read, the columns a topic keyed by `key_column` must
/// carry for them: what their scans read, the key, the event time and the
/// columns that are never null (the engine's buffer keeps those too), without
/// the window columns, which the engine makes.
fn topic_columns<'a>(
    rules: impl Iterator<Item = &'a CompiledRule>,
    key_column: Option<&str>,
) -> BTreeMap<String, Option<BTreeSet<String>>> {
    columns_read(rules.map(|r| &r.plan))
        .into_iter()
        .map(|(table, read)| {
            let read = read.map(|mut columns| {
                columns.retain(|c| c != "window_start" && c != "window_end");
                let schema = table.schema();
                let time = if table == Table::Spans {
                    SPAN_EVENT_TIME
                } else {
                    "time"
                };
                columns.insert(time.to_string());
                columns.extend(key_column.map(str::to_string));
                columns.extend(
                    schema
                        .fields()
                        .iter()
                        .filter(|f| !f.is_nullable())
                        .map(|f| f.name().clone()),
                );
                columns
            });
            (table.name().to_string(), read)
        })
        .collect()
}

/// "3 rules, 1 KPI", "none".
fn counted(members: &[Member]) -> String {
    let kpis = members.iter().filter(|m| m.kpi).count();
    let rules = members.len() - kpis;
    let mut parts = Vec::new();
    for (n, one, many) in [(rules, "rule", "rules"), (kpis, "KPI", "KPIs")] {
        match n {
            0 => {}
            1 => parts.push(format!("1 {one}")),
            n => parts.push(format!("{n} {many}")),
        }
    }
    listed(&parts, "none")
}

/// Names joined by commas, in lines of at most `width` characters (a
/// longer name stands alone).
fn wrapped<'a>(names: impl IntoIterator<Item = &'a String>, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for name in names {
        match lines.last_mut() {
            Some(line) if line.len() + 2 + name.len() <= width => {
                line.push_str(", ");
                line.push_str(name);
            }
            Some(line) => {
                line.push(',');
                lines.push(name.clone());
            }
            None => lines.push(name.clone()),
        }
    }
    lines
}

/// `items` joined by commas, or `none` when there are none.
fn listed(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_string()
    } else {
        items.join(", ")
    }
}

impl fmt::Display for Topology {
    /// A table per topic, then the trace-keyed and the global rules.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = |m: &Member| if m.kpi { "kpi" } else { "rule" };
        let width = self
            .topics
            .iter()
            .flat_map(|t| &t.rules)
            .chain(&self.by_trace)
            .chain(&self.global)
            .map(|m| m.id.len())
            .max()
            .unwrap_or(0);
        let rows = |f: &mut fmt::Formatter<'_>, members: &[Member]| -> fmt::Result {
            for m in members {
                writeln!(f, "  {:<4} {:<width$}  {}", kind(m), m.id, m.reason)?;
            }
            Ok(())
        };
        for t in &self.topics {
            writeln!(
                f,
                "topic {}  key {}  {} partitions  {}",
                t.topic,
                t.key,
                t.partitions,
                counted(&t.rules)
            )?;
            rows(f, &t.rules)?;
            for (table, columns) in &t.columns {
                match columns {
                    Some(c) => {
                        writeln!(f, "  columns of {table} ({}):", c.len())?;
                        for line in wrapped(c, 88) {
                            writeln!(f, "    {line}")?;
                        }
                    }
                    None => writeln!(f, "  columns of {table}: every column")?,
                }
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "keyed by trace id ({}): every row of a trace on one engine, as the Collector's Kafka exporter keys spans with partition_traces_by_id",
            counted(&self.by_trace)
        )?;
        rows(f, &self.by_trace)?;
        writeln!(f)?;
        writeln!(
            f,
            "global ({}): one engine reads every row",
            counted(&self.global)
        )?;
        rows(f, &self.global)?;
        writeln!(f)?;
        write!(f, "topics to create:")?;
        if self.topics.is_empty() {
            write!(f, " none")?;
        }
        for t in &self.topics {
            write!(f, "\n  {}  {} partitions", t.topic, t.partitions)?;
        }
        if !self.by_trace.is_empty() {
            let partitions = self
                .topics
                .first()
                .map_or(DEFAULT_PARTITIONS, |t| t.partitions);
            write!(f, "\n  {}  {partitions} partitions", topic_name(TRACE_KEY))?;
        }
        if !self.global.is_empty() {
            write!(f, "\n  {GLOBAL_TOPIC}  1 partition")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{flood_rule, rule_set};

    /// A rule file: `entity` keys, SQL over one-minute windows.
    fn rule(id: &str, entity: &[&str], value: &str, sql: &str) -> String {
        let keys: Vec<String> = entity.iter().map(|k| format!("\"{k}\"")).collect();
        format!(
            "/*\nid = \"{id}\"\nseverity = \"high\"\nwindow = \"1m\"\nentity = [{}]\nvalue = \"{value}\"\n*/\n{sql}",
            keys.join(", ")
        )
    }

    /// A KPI file with `dimensions`.
    fn kpi(name: &str, dimensions: &[&str], extra: &str, sql: &str) -> String {
        let keys: Vec<String> = dimensions.iter().map(|k| format!("\"{k}\"")).collect();
        format!(
            "/*\nkpi = \"{name}\"\nwindow = \"1m\"\ndimensions = [{}]\n{extra}*/\n{sql}",
            keys.join(", ")
        )
    }

    /// The classification of each rule of `files`, by id.
    async fn classified(files: &[&str]) -> BTreeMap<String, Classified> {
        let set = rule_set(files).await;
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        set.rules
            .iter()
            .map(|r| (r.def.id.clone(), classify(r)))
            .collect()
    }

    async fn one(file: &str) -> Classified {
        let all = classified(&[file]).await;
        all.into_values().next().expect("one rule")
    }

    /// The reason `file`'s rule is global; fails if it is not.
    async fn global_reason(file: &str) -> String {
        let c = one(file).await;
        assert_eq!(c.placement, Placement::Global, "{c:?}");
        c.reason
    }

    fn keyed(key: &str) -> Placement {
        Placement::Keyed { key: key.into() }
    }

    #[tokio::test]
    async fn a_rule_grouping_by_its_entity_is_keyed_by_it() {
        let c = one(&flood_rule("1m", "10s", 100, 1, "5m")).await;
        assert_eq!(c.placement, keyed("client.address"), "{c:?}");
        assert_eq!(
            c.reason,
            "reads spans; its aggregate groups by client_address"
        );
    }

    #[tokio::test]
    async fn a_self_join_on_the_entity_stays_keyed() {
        // an account's success after its failures: both sides are one account
        let sql = "WITH logins AS (SELECT window_start, window_end, user_hash, time, shop_auth_outcome FROM events WHERE event_name = 'shop.auth.login') \
                   SELECT s.window_start, s.window_end, s.user_hash, count(*) AS failures \
                   FROM logins s JOIN logins f ON f.window_start = s.window_start AND f.user_hash = s.user_hash AND f.time < s.time \
                   WHERE s.shop_auth_outcome = 'success' AND f.shop_auth_outcome = 'failure' \
                   GROUP BY 1, 2, 3";
        let c = one(&rule("t.takeover", &["user.hash"], "failures", sql)).await;
        assert_eq!(c.placement, keyed("user.hash"), "{c:?}");
        assert_eq!(
            c.reason,
            "reads logs; its aggregate groups by user_hash, its join matches rows on user_hash"
        );
    }

    #[tokio::test]
    async fn the_first_entity_key_that_keeps_rows_apart_is_taken() {
        // grouped by both keys, but its join matches on the route only
        let sql = "WITH per AS (SELECT window_start, window_end, service_name, http_route, count(*) AS n FROM spans GROUP BY 1, 2, 3, 4), \
                   total AS (SELECT window_start, http_route, count(*) AS n FROM spans GROUP BY 1, 2) \
                   SELECT p.window_start, p.window_end, p.service_name, p.http_route, p.n AS share \
                   FROM per p JOIN total t ON p.window_start = t.window_start AND p.http_route = t.http_route";
        let keys = ["service.name", "http.route"];
        let c = one(&rule("t.share", &keys, "share", sql)).await;
        assert_eq!(c.placement, keyed("http.route"), "{c:?}");
        let first = one(&rule(
            "t.both",
            &keys,
            "n",
            "SELECT window_start, window_end, service_name, http_route, count(*) AS n FROM spans GROUP BY 1, 2, 3, 4",
        ))
        .await;
        assert_eq!(first.placement, keyed("service.name"), "{first:?}");
    }

    #[tokio::test]
    async fn a_rule_apart_only_by_trace_is_trace_keyed() {
        // a server span and its children: one trace, but maybe several services
        let sql = "SELECT p.window_start, p.window_end, p.service_name, p.trace_id, count(*) AS children \
                   FROM spans p JOIN spans c ON c.window_start = p.window_start AND c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
                   WHERE p.kind = 'SERVER' GROUP BY 1, 2, 3, 4";
        let keys = ["service.name", "trace.id"];
        let c = one(&rule("t.fanout", &keys, "children", sql)).await;
        assert_eq!(c.placement, Placement::Trace, "{c:?}");
        assert_eq!(
            c.reason,
            "not by service.name: a join matches rows on window_start, trace_id, span_id = parent_span_id without service_name: \
             it pairs rows of different service_name values; \
             reads spans; its aggregate groups by trace_id, its join matches rows on trace_id"
        );
    }

    #[tokio::test]
    async fn a_rule_that_adds_up_many_entities_is_global() {
        // addresses that hit one route only, counted per route
        let sql = "WITH per_client AS (SELECT window_start, window_end, client_address, http_route, count(*) AS n FROM spans GROUP BY 1, 2, 3, 4), \
                   routes AS (SELECT window_start, client_address, count(*) AS routes FROM per_client GROUP BY 1, 2) \
                   SELECT p.window_start, p.window_end, p.http_route, count(*) AS clients \
                   FROM per_client p JOIN routes r ON p.window_start = r.window_start AND p.client_address = r.client_address \
                   WHERE r.routes = 1 GROUP BY 1, 2, 3";
        let reason = global_reason(&rule("t.distributed", &["http.route"], "clients", sql)).await;
        assert_eq!(
            reason,
            "not by http.route: an aggregate groups by window_start, client_address without http_route: \
             it adds up rows of many http_route values"
        );
    }

    #[tokio::test]
    async fn a_kpi_without_dimensions_is_global() {
        let reason = global_reason(&kpi(
            "t.requests",
            &[],
            "",
            "SELECT window_start, window_end, count(*) AS value FROM spans GROUP BY 1, 2",
        ))
        .await;
        assert_eq!(
            reason,
            "it has no dimension, so each of its figures covers every row of a window"
        );
    }

    #[tokio::test]
    async fn a_subquery_over_every_row_makes_a_rule_global() {
        let sql = "SELECT window_start, window_end, client_address, count(*) AS n FROM spans GROUP BY 1, 2, 3 \
                   HAVING count(*) > (SELECT count(*) / 10 FROM spans)";
        let reason = global_reason(&rule("t.share", &["client.address"], "n", sql)).await;
        assert!(
            reason.starts_with("not by client.address: the subquery in `")
                && reason.ends_with("` reads rows of every client_address value"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_limit_makes_a_rule_global() {
        let sql = "SELECT window_start, window_end, client_address, count(*) AS n FROM spans GROUP BY 1, 2, 3 \
                   ORDER BY n DESC LIMIT 10";
        let reason = global_reason(&rule("t.top", &["client.address"], "n", sql)).await;
        assert_eq!(
            reason,
            "not by client.address: a LIMIT picks rows among every client_address value"
        );
    }

    #[tokio::test]
    async fn a_table_without_the_key_makes_a_rule_global() {
        // user.hash is a column of logs only: the spans of a trace cannot follow it
        let sql = "SELECT l.window_start, l.window_end, l.user_hash, count(*) AS spans \
                   FROM events l JOIN spans s ON s.window_start = l.window_start AND s.trace_id = l.trace_id \
                   GROUP BY 1, 2, 3";
        let reason = global_reason(&rule("t.user_spans", &["user.hash"], "spans", sql)).await;
        assert_eq!(
            reason,
            "not by user.hash: it reads spans, which has no user_hash column"
        );
    }

    #[tokio::test]
    async fn kept_kpis_and_the_rules_reading_them_are_global() {
        let kept = kpi(
            "t.route_traffic",
            &["http.route"],
            "keep = \"10m\"\nvalue = \"requests\"\n",
            "SELECT window_start, window_end, http_route, count(*) AS requests FROM spans GROUP BY 1, 2, 3",
        );
        let reader = rule(
            "t.surge",
            &["http.route"],
            "surge",
            "SELECT t.window_start, t.window_end, t.http_route, t.n / b.mean AS surge \
             FROM (SELECT window_start, window_end, http_route, count(*) AS n FROM spans GROUP BY 1, 2, 3) t \
             JOIN baseline('t.route_traffic', 'requests', 5, 2) b ON b.window_start = t.window_start AND b.http_route = t.http_route",
        );
        let all = classified(&[&kept, &reader]).await;
        let kept = &all["t.route_traffic"];
        assert_eq!(kept.placement, Placement::Global, "{kept:?}");
        assert!(kept.reason.contains("kept"), "{kept:?}");
        let reader = &all["t.surge"];
        assert_eq!(reader.placement, Placement::Global, "{reader:?}");
        assert!(reader.reason.contains("baseline"), "{reader:?}");
    }

    #[tokio::test]
    async fn the_topology_groups_rules_by_key_with_the_columns_they_read() {
        let set = rule_set(&[
            &flood_rule("1m", "10s", 100, 1, "5m"),
            &rule(
                "t.agents",
                &["client.address"],
                "agents",
                "SELECT window_start, window_end, client_address, count(DISTINCT user_agent_original) AS agents \
                 FROM spans WHERE kind = 'SERVER' GROUP BY 1, 2, 3",
            ),
            &rule(
                "t.failures",
                &["user.hash"],
                "n",
                "SELECT window_start, window_end, user_hash, count(*) AS n FROM events \
                 WHERE shop_auth_outcome = 'failure' GROUP BY 1, 2, 3",
            ),
            &kpi(
                "t.requests",
                &[],
                "",
                "SELECT window_start, window_end, count(*) AS value FROM spans GROUP BY 1, 2",
            ),
        ])
        .await;
        let t = plan(&set, 12);
        let names: Vec<&str> = t.topics.iter().map(|t| t.topic.as_str()).collect();
        assert_eq!(
            names,
            ["otelguard_by_client_address", "otelguard_by_user_hash"]
        );
        let by_client = &t.topics[0];
        assert_eq!(by_client.key, "client.address");
        assert_eq!(by_client.partitions, 12);
        let ids: Vec<&str> = by_client.rules.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["t.agents", "test.flood"]);
        // spans only: the flood rule and t.agents read no logs
        let tables: Vec<&str> = by_client.columns.keys().map(String::as_str).collect();
        assert_eq!(tables, ["spans"]);
        let spans = by_client.columns["spans"].as_ref().expect("a projection");
        for c in [
            "client_address",
            "user_agent_original",
            "kind",
            "trace_id",
            "end_time",
        ] {
            assert!(spans.contains(c), "{c} in {spans:?}");
        }
        for c in ["window_start", "window_end", "user_hash", "attributes"] {
            assert!(!spans.contains(c), "{c} in {spans:?}");
        }
        let logs = t.topics[1].columns["logs"].as_ref().expect("a projection");
        for c in ["user_hash", "shop_auth_outcome", "time"] {
            assert!(logs.contains(c), "{c} in {logs:?}");
        }
        assert!(t.by_trace.is_empty());
        let global: Vec<&str> = t.global.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(global, ["t.requests"]);

        let text = t.to_string();
        assert!(
            text.starts_with(
                "topic otelguard_by_client_address  key client.address  12 partitions  2 rules\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nglobal (1 KPI): one engine reads every row\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "topics to create:\n  otelguard_by_client_address  12 partitions\n  otelguard_by_user_hash  12 partitions\n  otelguard_global  1 partition"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&t).expect("serializes");
        assert_eq!(json["topics"][1]["rules"][0]["id"], "t.failures");
        assert_eq!(json["global"][0]["kpi"], true);
    }

    /// The pack in rules/: what each named rule's SQL allows.
    #[tokio::test]
    async fn the_pack_in_rules() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules"));
        let set = RuleSet::load(dir, super::super::Which::All)
            .await
            .expect("the pack loads");
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        let placed: BTreeMap<String, Classified> = set
            .rules
            .iter()
            .map(|r| (r.def.id.clone(), classify(r)))
            .collect();
        let class = |id: &str| {
            placed
                .get(id)
                .unwrap_or_else(|| panic!("{id} is in the pack"))
                .placement
                .clone()
        };
        for id in [
            "dos.http_flood.single_source",
            "dos.expensive_endpoint_abuse",
            "auth.credential_stuffing",
            "auth.password_spraying",
            "fraud.card_testing",
            // its LEFT JOIN matches the cart views of the same address
            "dos.scraping.catalog_walk",
        ] {
            assert_eq!(class(id), keyed("client.address"), "{id}");
        }
        // the success is joined to the same account's failures
        assert_eq!(class("auth.account_takeover"), keyed("user.hash"));
        assert_eq!(class("auth.brute_force.single_account"), keyed("user.hash"));
        assert_eq!(class("dos.route_error_surge"), keyed("http.route"));
        // The population rules count per address, then sum the addresses of
        // one service: every aggregate groups by service_name, so a topic
        // keyed by service.name gives each of them every row it needs (all
        // the login events of the auth service, on one partition).
        for id in [
            "auth.failed_logins.population",
            "auth.unknown_users.population",
            "fraud.card_testing.population",
        ] {
            assert_eq!(class(id), keyed("service.name"), "{id}");
        }
        // counts, per route, addresses judged over all their routes
        assert_eq!(class("dos.http_flood.distributed"), Placement::Global);
        // a server span's children may belong to another service
        assert_eq!(class("perf.runtime_starvation"), Placement::Global);
        assert_eq!(class("perf.slow_downstream"), Placement::Global);
        for id in ["checkout_funnel", "conversion", "login_failure_ratio"] {
            assert_eq!(class(id), Placement::Global, "{id}");
        }
        assert_eq!(class("http"), keyed("http.route"));
        assert!(
            placed["dos.http_flood.distributed"]
                .reason
                .contains("without http_route"),
            "{:?}",
            placed["dos.http_flood.distributed"]
        );
        let t = plan(&set, DEFAULT_PARTITIONS);
        let by_client = t
            .topics
            .iter()
            .find(|t| t.topic == "otelguard_by_client_address")
            .expect("a client address topic");
        assert_eq!(by_client.partitions, 6);
        let logs = by_client.columns["logs"].as_ref().expect("a projection");
        assert!(logs.contains("shop_payment_card_fingerprint"), "{logs:?}");
    }
}
