//! Sigma rules into this pack's SQL rule files (`engine rules import-sigma`).
//!
//! A detection rule becomes a rule over one-minute windows that fires for
//! every entity (by default the client address) with a matching event. A
//! correlation rule (Sigma 2) becomes a rule over windows of its `timespan`:
//!
//! | correlation | the rule's condition, per `group-by` entity and window |
//! | --- | --- |
//! | `event_count` | `count(*)` of the referenced rules' events against `condition` |
//! | `value_count` | `count(DISTINCT field)` against `condition` |
//! | `temporal` | every referenced rule matched at least once |
//! | `temporal_ordered` | the rules matched in this order (`sequence_steps`, see `rules::sequence`) |
//!
//! Windows slide by a tenth of the timespan (a divisor of it), so any
//! `timespan`-long stretch is covered to within that tenth. A rule that cannot
//! be converted is reported with the reason; nothing is guessed.
//!
//! ```
//! let yaml = r#"
//! title: Web scanner user agent
//! id: 6a1b2c3d-0000-4000-8000-000000000001
//! status: test
//! level: medium
//! tags: [attack.reconnaissance, attack.t1595.002]
//! logsource: {category: webserver}
//! detection:
//!     selection:
//!         cs-user-agent|contains: [sqlmap, nikto]
//!     condition: selection
//! "#;
//! let report = engine::sigma::convert(&[("scanner.yml".into(), yaml.into())]);
//! assert!(report.skipped.is_empty());
//! let rule = &report.converted[0];
//! assert_eq!(rule.file_name, "web_scanner_user_agent.sql");
//! assert!(rule.text.contains("tags = [\"T1595.002\"]"));
//! assert!(rule.text.contains("user_agent_original ILIKE '%sqlmap%'"));
//! ```

pub mod condition;
pub mod fields;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::rules::definition::parse_duration;
use condition::Condition;
use fields::{Field, Source, join};

/// A rule written in this pack's format.
#[derive(Debug, Clone)]
pub struct Converted {
    /// the pack's rule id, `sigma.` and the Sigma rule's name or title
    pub id: String,
    pub file_name: String,
    pub text: String,
    /// where it came from: the file and the Sigma rule's title
    pub origin: String,
}

/// A Sigma rule (or a file) that was not converted, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub origin: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub converted: Vec<Converted>,
    pub skipped: Vec<Skipped>,
}

/// One detection rule of the input, compiled as far as it goes.
struct Detection {
    origin: String,
    meta: Meta,
    names: Vec<String>,
    /// the log source and the SQL predicate of its events
    compiled: Result<(Source, String), String>,
}

/// What every Sigma rule says about itself.
#[derive(Debug, Clone)]
struct Meta {
    title: String,
    id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    level: Option<String>,
    status: Option<String>,
    tags: Vec<String>,
    falsepositives: Vec<String>,
}

/// A field that is one text or a list of texts, as a list.
fn texts(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

impl Meta {
    fn of(doc: &Value) -> Meta {
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        let list = |k: &str| texts(doc.get(k));
        Meta {
            title: text("title").unwrap_or_else(|| "untitled".into()),
            id: text("id"),
            name: text("name"),
            description: text("description"),
            level: text("level"),
            status: text("status"),
            tags: list("tags"),
            falsepositives: list("falsepositives"),
        }
    }

    /// Whether a correlation's `rules:` entry names this rule.
    fn is(&self, reference: &str) -> bool {
        self.id.as_deref() == Some(reference) || self.name.as_deref() == Some(reference)
    }
}

/// The pack's header, in its field order.
#[derive(Serialize)]
struct Header {
    id: String,
    title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    severity: &'static str,
    tags: Vec<String>,
    window: String,
    slide: String,
    entity: Vec<String>,
    value: String,
    #[serde(rename = "for")]
    for_windows: u32,
    suppress: &'static str,
    summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    false_positives: Option<String>,
    maturity: &'static str,
}

fn severity(level: Option<&str>) -> &'static str {
    match level.map(str::to_ascii_lowercase).as_deref() {
        Some("informational") => "info",
        Some("low") => "low",
        Some("high") => "high",
        Some("critical") => "critical",
        _ => "medium",
    }
}

fn maturity(status: Option<&str>) -> &'static str {
    match status.map(str::to_ascii_lowercase).as_deref() {
        Some("stable") => "stable",
        Some("test") => "test",
        _ => "experimental",
    }
}

/// MITRE ATT&CK technique ids from Sigma tags (`attack.t1110.003` → `T1110.003`).
fn techniques(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter_map(|t| {
            t.to_ascii_lowercase()
                .strip_prefix("attack.t")
                .map(str::to_string)
        })
        .filter(|t| {
            t.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|t| format!("T{t}"))
        .collect()
}

/// A name fit for an id and a file: lower case, `_` between words.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_');
    out.chars()
        .take(60)
        .collect::<String>()
        .trim_end_matches('_')
        .to_string()
}

/// The searches of a `detection` as SQL, joined by its condition.
fn compile(doc: &Value) -> Result<(Source, String), String> {
    let detection = doc
        .get("detection")
        .and_then(Value::as_mapping)
        .ok_or("`detection` is not a mapping")?;
    let source = fields::source(doc.get("logsource"))?;
    let mut searches = BTreeMap::new();
    let mut order = Vec::new();
    for (k, v) in detection {
        let name = k.as_str().ok_or("a search name is not text")?;
        if matches!(name, "condition" | "timeframe") {
            continue;
        }
        let sql = search(&source, v).map_err(|e| format!("search {name}: {e}"))?;
        order.push(name.to_string());
        searches.insert(name.to_string(), sql);
    }
    let conditions: Vec<String> = match detection.get("condition") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or("a condition is not text")
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("`detection.condition` is missing".into()),
    };
    let sql = conditions
        .iter()
        .map(|c| {
            let parsed =
                condition::parse(c, &order).map_err(|e| format!("condition {c:?}: {e}"))?;
            Ok(to_sql(&parsed, &searches))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((source, join(sql, "OR")))
}

/// One search: a mapping (every entry holds) or a list of mappings (any holds).
fn search(source: &Source, value: &Value) -> Result<String, String> {
    match value {
        Value::Mapping(m) => {
            let terms = m
                .iter()
                .map(|(k, v)| {
                    let key = k.as_str().ok_or("a field name is not text")?;
                    fields::entry(source, key, v)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if terms.is_empty() {
                return Err("an empty search".into());
            }
            Ok(join(terms, "AND"))
        }
        Value::Sequence(items) if items.iter().all(Value::is_mapping) && !items.is_empty() => {
            let terms = items
                .iter()
                .map(|i| search(source, i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(join(terms, "OR"))
        }
        _ => Err(
            "keyword searches (values without a field) are not converted: name the field".into(),
        ),
    }
}

fn to_sql(c: &Condition, searches: &BTreeMap<String, String>) -> String {
    match c {
        Condition::Search(name) => searches[name].clone(),
        Condition::Not(inner) => format!("NOT {}", to_sql(inner, searches)),
        Condition::And(terms) => join(terms.iter().map(|t| to_sql(t, searches)).collect(), "AND"),
        Condition::Or(terms) => join(terms.iter().map(|t| to_sql(t, searches)).collect(), "OR"),
        Condition::AtLeast(n, names) if *n == 1 => {
            join(names.iter().map(|s| searches[s].clone()).collect(), "OR")
        }
        Condition::AtLeast(n, names) if *n == names.len() => {
            join(names.iter().map(|s| searches[s].clone()).collect(), "AND")
        }
        Condition::AtLeast(n, names) => {
            let cases: Vec<String> = names
                .iter()
                .map(|s| format!("CASE WHEN {} THEN 1 ELSE 0 END", searches[s]))
                .collect();
            format!("({}) >= {n}", cases.join(" + "))
        }
    }
}

/// What a rule's windows and condition are.
struct Shape {
    window: String,
    slide: String,
    entity: Vec<Field>,
    /// the measured figure: its SQL and its name
    value: (String, String),
    having: Option<String>,
    where_sql: String,
    summary: String,
}

/// A duration as the pack writes it, in whole seconds.
fn seconds_text(s: u64) -> String {
    match s {
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The window of a `timespan` and a slide of about a tenth of it that divides it.
fn windows(timespan: &str) -> Result<(String, String), String> {
    let d = parse_duration(timespan).map_err(|e| format!("timespan {timespan:?}: {e}"))?;
    let s = d.as_secs();
    if s == 0 || d.subsec_nanos() != 0 {
        return Err(format!(
            "timespan {timespan:?}: whole seconds, at least one"
        ));
    }
    let slide = (1..=(s / 10).max(1))
        .rev()
        .find(|d| s.is_multiple_of(*d))
        .unwrap_or(1);
    Ok((seconds_text(s), seconds_text(slide)))
}

fn render(meta: &Meta, origin: &str, source: &Source, shape: Shape) -> Converted {
    let base = meta
        .name
        .as_deref()
        .map(slug)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| slug(&meta.title));
    let base = if base.is_empty() {
        "rule".to_string()
    } else {
        base
    };
    let header = Header {
        id: format!("sigma.{base}"),
        title: meta.title.clone(),
        description: meta.description.clone(),
        severity: severity(meta.level.as_deref()),
        tags: techniques(&meta.tags),
        window: shape.window,
        slide: shape.slide,
        entity: shape.entity.iter().map(|f| f.attribute.clone()).collect(),
        value: shape.value.1.clone(),
        for_windows: 1,
        suppress: "15m",
        summary: shape.summary,
        false_positives: (!meta.falsepositives.is_empty()).then(|| meta.falsepositives.join("\n")),
        maturity: maturity(meta.status.as_deref()),
    };
    let toml = toml::to_string(&header).expect("a header of text, numbers and lists is TOML");
    let keys: Vec<String> = shape.entity.iter().map(|f| f.alias()).collect();
    let selected: Vec<String> = shape
        .entity
        .iter()
        .map(|f| match f.sql == f.alias() {
            true => f.sql.clone(),
            false => format!("{} AS {}", f.sql, f.alias()),
        })
        .collect();
    let filter = match source.filter {
        Some(f) => format!("{f}\n  AND {}", shape.where_sql),
        None => shape.where_sql,
    };
    let having = shape
        .having
        .map(|h| format!("\nHAVING {h}"))
        .unwrap_or_default();
    let mut origin_line = format!("-- Converted from Sigma ({origin}");
    if let Some(id) = &meta.id {
        origin_line.push_str(&format!(", id {id}"));
    }
    origin_line.push_str(") by `engine rules import-sigma`: convert again rather than edit.");
    let text = format!(
        "/*\n{toml}*/\n{origin_line}\n\
         SELECT window_start, window_end, {},\n       {} AS {},\n       trace_sample(trace_id) AS trace_ids\n\
         FROM {}\nWHERE {filter}\nGROUP BY window_start, window_end, {}{having}\n",
        selected.join(", "),
        shape.value.0,
        shape.value.1,
        source.table,
        keys.join(", "),
    );
    Converted {
        id: header.id,
        file_name: format!("{base}.sql"),
        text,
        origin: format!("{origin}: {}", meta.title),
    }
}

fn standalone(d: &Detection) -> Result<Converted, String> {
    let (source, predicate) = d.compiled.clone()?;
    let entity = fields::field(&source, source.entity)?;
    let shape = Shape {
        window: "1m".into(),
        slide: "1m".into(),
        summary: format!(
            "{{value}} {} from {{{}}} matched the Sigma rule {:?}",
            source.noun, entity.attribute, d.meta.title
        ),
        entity: vec![entity],
        value: ("count(*)".into(), "matches".into()),
        having: None,
        where_sql: predicate,
    };
    Ok(render(&d.meta, &d.origin, &source, shape))
}

/// A correlation's `condition`: `gte: 10`, possibly with `field:` and several bounds.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Bounds {
    gt: Option<i64>,
    gte: Option<i64>,
    lt: Option<i64>,
    lte: Option<i64>,
    eq: Option<i64>,
    neq: Option<i64>,
    field: Option<String>,
}

impl Bounds {
    /// Each bound given: its SQL operator, its words and its number.
    fn given(&self) -> impl Iterator<Item = (&'static str, &'static str, i64)> {
        [
            (">", "more than", self.gt),
            (">=", "at least", self.gte),
            ("<", "fewer than", self.lt),
            ("<=", "at most", self.lte),
            ("=", "exactly", self.eq),
            ("<>", "not", self.neq),
        ]
        .into_iter()
        .filter_map(|(op, words, n)| n.map(|n| (op, words, n)))
    }

    fn sql(&self, value: &str) -> Result<String, String> {
        let terms: Vec<String> = self
            .given()
            .map(|(op, _, n)| format!("{value} {op} {n}"))
            .collect();
        if terms.is_empty() {
            return Err("the condition has no bound (gt, gte, lt, lte, eq, neq)".into());
        }
        Ok(terms.join(" AND "))
    }

    fn text(&self) -> String {
        let words: Vec<String> = self.given().map(|(_, w, n)| format!("{w} {n}")).collect();
        words.join(" and ")
    }
}

fn correlation(
    origin: &str,
    doc: &Value,
    detections: &[Detection],
) -> Result<(Converted, Vec<usize>), String> {
    let c = doc.get("correlation").ok_or("no `correlation`")?;
    if c.get("aliases").is_some() {
        return Err("`aliases` (a field named differently per rule) is not converted".into());
    }
    let kind = c
        .get("type")
        .and_then(Value::as_str)
        .ok_or("`correlation.type` is missing")?;
    let refs = texts(c.get("rules"));
    if refs.is_empty() {
        return Err("`correlation.rules` is missing".into());
    }
    let mut used = Vec::new();
    for r in &refs {
        let i = detections
            .iter()
            .position(|d| d.meta.is(r))
            .ok_or_else(|| format!("rule {r:?} is not among the detection rules given (a correlation of correlations is not converted)"))?;
        used.push(i);
    }
    let mut compiled = Vec::new();
    for &i in &used {
        let (source, sql) = detections[i]
            .compiled
            .clone()
            .map_err(|e| format!("rule {:?}: {e}", detections[i].meta.title))?;
        compiled.push((source, sql));
    }
    let source = compiled[0].0;
    if compiled
        .iter()
        .any(|(s, _)| s.table != source.table || s.filter != source.filter)
    {
        return Err("the referenced rules read different log sources".into());
    }
    let timespan = c
        .get("timespan")
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(format!("{n}s")),
            _ => None,
        })
        .ok_or("`correlation.timespan` is missing")?;
    let (window, slide) = windows(&timespan)?;
    let group = texts(c.get("group-by"));
    let mut entity = group
        .iter()
        .map(|g| fields::field(&source, g))
        .collect::<Result<Vec<_>, _>>()?;
    if entity.is_empty() {
        // the whole log source's population, as the pack's population rules do
        entity.push(fields::field(&source, "service.name")?);
    }
    let bounds: Bounds = match c.get("condition") {
        Some(v) => {
            serde_yaml::from_value(v.clone()).map_err(|e| format!("correlation.condition: {e}"))?
        }
        None => Bounds::default(),
    };
    let any_of = join(compiled.iter().map(|(_, s)| s.clone()).collect(), "OR");
    let who = entity
        .iter()
        .map(|f| format!("{{{}}}", f.attribute))
        .collect::<Vec<_>>()
        .join(" ");
    let title = doc
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("untitled");
    let (value, having, summary) = match kind {
        "event_count" => (
            ("count(*)".to_string(), "events".to_string()),
            Some(bounds.sql("count(*)")?),
            format!("{{value}} {} by {who} in {window} ({title})", source.noun),
        ),
        "value_count" => {
            let name = bounds
                .field
                .as_deref()
                .ok_or("value_count needs `condition.field`")?;
            let f = fields::field(&source, name)?;
            let expr = format!("count(DISTINCT {})", f.sql);
            let having = bounds.sql(&expr)?;
            (
                (expr, "distinct_values".to_string()),
                Some(having),
                format!(
                    "{{value}} distinct {} by {who} in {window} ({title})",
                    f.attribute
                ),
            )
        }
        "temporal" => {
            let all: Vec<String> = compiled
                .iter()
                .map(|(_, s)| format!("bool_or({s})"))
                .collect();
            (
                ("count(*)".to_string(), "events".to_string()),
                Some(all.join("\n   AND ")),
                format!(
                    "{who}: all {} rules matched within {window}, {{value}} events ({title})",
                    compiled.len()
                ),
            )
        }
        "temporal_ordered" => {
            let steps: Vec<&str> = compiled.iter().map(|(_, s)| s.as_str()).collect();
            let having = match steps.as_slice() {
                // two rules: the first's earliest match before the second's latest
                [first, second] => format!(
                    "min(CASE WHEN {first} THEN time END) < max(CASE WHEN {second} THEN time END)"
                ),
                _ => format!(
                    "sequence_steps(time, {}) = {}",
                    steps.join(",\n    "),
                    steps.len()
                ),
            };
            (
                ("count(*)".to_string(), "events".to_string()),
                Some(having),
                format!(
                    "{who}: the rules matched in order within {window}, {{value}} events ({title})"
                ),
            )
        }
        other => return Err(format!("correlation type {other} is not converted")),
    };
    let mut meta = Meta::of(doc);
    if meta.description.is_none() && matches!(kind, "event_count" | "value_count") {
        meta.description = Some(format!("Sigma {kind}: {}", bounds.text()));
    }
    let shape = Shape {
        window,
        slide,
        entity,
        value,
        having,
        where_sql: any_of,
        summary,
    };
    Ok((render(&meta, origin, &source, shape), used))
}

/// Converts every Sigma rule in `inputs` (file label, YAML text; a file may
/// hold several documents). Detection rules a correlation refers to are not
/// converted on their own unless the correlation says `generate: true`.
pub fn convert(inputs: &[(String, String)]) -> Report {
    let mut report = Report::default();
    let mut detections = Vec::new();
    let mut correlations = Vec::new();
    for (label, text) in inputs {
        for (n, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let origin = format!("{label} #{}", n + 1);
            let doc = match Value::deserialize(doc) {
                Ok(d) => d,
                Err(e) => {
                    report.skipped.push(Skipped {
                        origin: label.clone(),
                        reason: format!("not YAML: {e}"),
                    });
                    break;
                }
            };
            if doc.is_null() {
                continue;
            }
            if doc.get("correlation").is_some() {
                correlations.push((origin, doc));
            } else if doc.get("detection").is_some() {
                let meta = Meta::of(&doc);
                detections.push(Detection {
                    origin: origin.clone(),
                    names: [meta.id.clone(), meta.name.clone()]
                        .into_iter()
                        .flatten()
                        .collect(),
                    meta,
                    compiled: compile(&doc),
                });
            } else {
                let reason = match doc.get("action") {
                    Some(_) => "`action:` documents (Sigma 1 collections) are not converted",
                    None => "neither `detection` nor `correlation`",
                };
                report.skipped.push(Skipped {
                    origin,
                    reason: reason.into(),
                });
            }
        }
    }
    let mut referenced = BTreeSet::new();
    let mut generated = BTreeSet::new();
    for (origin, doc) in &correlations {
        let generate = doc
            .get("correlation")
            .and_then(|c| c.get("generate"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let title = Meta::of(doc).title;
        match correlation(origin, doc, &detections) {
            Ok((rule, used)) => {
                referenced.extend(used.iter().copied());
                if generate {
                    generated.extend(used);
                }
                report.converted.push(rule);
            }
            Err(reason) => {
                // the rules it names are still its own: not converted alone
                for d in doc
                    .get("correlation")
                    .and_then(|c| c.get("rules"))
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    referenced.extend(
                        detections
                            .iter()
                            .position(|x| x.names.iter().any(|n| n == d)),
                    );
                }
                report.skipped.push(Skipped {
                    origin: format!("{origin}: {title}"),
                    reason,
                });
            }
        }
    }
    for (i, d) in detections.iter().enumerate() {
        if referenced.contains(&i) && !generated.contains(&i) {
            continue;
        }
        match standalone(d) {
            Ok(rule) => report.converted.push(rule),
            Err(reason) => report.skipped.push(Skipped {
                origin: format!("{}: {}", d.origin, d.meta.title),
                reason,
            }),
        }
    }
    // Two rules with one name: the later ones get a number.
    let mut seen = BTreeMap::<String, usize>::new();
    for rule in &mut report.converted {
        let n = seen.entry(rule.id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            let old = rule.id.clone();
            rule.id = format!("{old}_{n}");
            rule.file_name = format!("{}.sql", rule.id.trim_start_matches("sigma."));
            rule.text = rule.text.replacen(
                &format!("id = {}", toml_str(&old)),
                &format!("id = {}", toml_str(&rule.id)),
                1,
            );
        }
    }
    report
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests;
