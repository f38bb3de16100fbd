//! Rule and KPI files: SQL with a TOML header.
//!
//! ```sql
//! /*
//! id = "auth.brute_force.single_account"
//! title = "Brute force on one account"
//! severity = "high"
//! tags = ["T1110.001"]
//! window = "5m"
//! slide = "30s"
//! entity = ["user.hash"]
//! value = "failures"
//! */
//! SELECT window_start, window_end, user_hash, count(*) AS failures
//! FROM events WHERE event_name = 'shop.auth.login' AND shop_auth_outcome = 'failure'
//! GROUP BY window_start, window_end, user_hash
//! HAVING count(*) >= 20
//! ```
//!
//! The header is the first block comment of the file. A file with `kpi = "name"`
//! instead of `id` defines a KPI. See `docs/rules.md` for every field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where in a rule file something is, 1-based, as editors count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A problem with one rule file, with where it is and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: {message}{}", hint.as_deref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct RuleError {
    pub location: Location,
    pub message: String,
    pub hint: Option<String>,
}

impl RuleError {
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        RuleError {
            location,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Severity of an alert, as the telemetry contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// How far a rule has come: experimental rules run but are marked as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Maturity {
    Experimental,
    #[default]
    Test,
    Stable,
}

/// The header as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    id: Option<String>,
    kpi: Option<String>,
    title: Option<String>,
    description: Option<String>,
    severity: Option<Severity>,
    #[serde(default)]
    tags: Vec<String>,
    window: String,
    slide: Option<String>,
    #[serde(default)]
    entity: Vec<String>,
    #[serde(default)]
    dimensions: Vec<String>,
    value: Option<String>,
    #[serde(default)]
    values: Vec<String>,
    #[serde(rename = "for", default = "one")]
    for_windows: u32,
    suppress: Option<String>,
    summary: Option<String>,
    runbook: Option<String>,
    false_positives: Option<String>,
    #[serde(default)]
    maturity: Maturity,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    panes: bool,
    keep: Option<String>,
    keep_hourly: Option<String>,
    max_keys: Option<usize>,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// A window: `size` long, a new one every `slide` (tumbling when equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowSpec {
    pub size_ns: i64,
    pub slide_ns: i64,
}

impl WindowSpec {
    /// How many windows each instant belongs to.
    pub fn overlap(&self) -> i64 {
        self.size_ns / self.slide_ns
    }
}

/// What a file defines: an alerting rule or a KPI.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Alert {
        severity: Severity,
        tags: Vec<String>,
        /// consecutive windows the condition must hold before the alert fires
        for_windows: u32,
        /// after an incident is notified, the same entity is not notified again for this long
        suppress_ns: i64,
        summary: Option<String>,
    },
    Kpi,
}

/// One parsed rule or KPI file.
#[derive(Debug, Clone)]
pub struct Definition {
    /// rule id, or KPI name
    pub id: String,
    pub title: String,
    pub description: String,
    pub kind: Kind,
    pub window: WindowSpec,
    /// attribute names (contract names, e.g. `client.address`) identifying who or
    /// what: the entity of an alert, the dimensions of a KPI
    pub keys: Vec<String>,
    /// output columns holding the measured figure(s)
    pub values: Vec<String>,
    pub runbook: Option<String>,
    pub false_positives: Option<String>,
    pub maturity: Maturity,
    pub enabled: bool,
    /// aggregate hopping windows through per-slide partial aggregates
    /// (`rules::panes`): worth it for dense aggregates over wide windows
    pub panes: bool,
    /// a KPI whose values the engine keeps (`keep`): readable by later
    /// windows through `rollup(...)` and `baseline(...)` (`rules::rollup`)
    pub rollup: Option<RollupSpec>,
    pub sql: String,
    pub path: PathBuf,
    /// line of the file on which the SQL starts (1-based)
    pub sql_line: usize,
    /// the rule's version: 16 hex digits of a hash of the file's text, part
    /// of an alert's identity
    pub version: String,
}

/// How long the engine keeps a KPI's values, and for how many dimension sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupSpec {
    /// each window's values are kept this long (`keep`)
    pub keep_ns: i64,
    /// hourly sums of the values are kept this long (`keep_hourly`)
    pub hourly_ns: Option<i64>,
    /// dimension sets kept at most (`max_keys`); the one seen least recently goes first
    pub max_keys: usize,
}

/// Dimension sets a rollup keeps unless its header says otherwise.
pub const DEFAULT_ROLLUP_KEYS: usize = 1000;

pub use ingest::fnv1a64;

impl Definition {
    pub fn is_kpi(&self) -> bool {
        matches!(self.kind, Kind::Kpi)
    }

    /// The location in the file of a position inside the SQL (1-based line and column).
    pub fn sql_location(&self, line: usize, column: usize) -> Location {
        Location {
            file: self.path.clone(),
            line: self.sql_line + line.saturating_sub(1),
            column,
        }
    }

    fn at(&self, line: usize) -> Location {
        Location {
            file: self.path.clone(),
            line,
            column: 1,
        }
    }
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit; write e.g. `30s`, `5m`, `1h`"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`; use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Splits a file into its header (the first block comment) and SQL.
/// Returns (header text, header's first line, SQL, SQL's first line).
fn split_header(text: &str) -> Option<(&str, usize, &str, usize)> {
    let start = text.find("/*")?;
    if !text[..start].trim().is_empty() {
        return None;
    }
    let end = start + 2 + text[start + 2..].find("*/")?;
    let header = &text[start + 2..end];
    let header_line = 1 + text[..start + 2].matches('\n').count();
    let rest_offset = end + 2;
    let rest = &text[rest_offset..];
    let leading = rest.len() - rest.trim_start().len();
    let sql_line = 1 + text[..rest_offset + leading].matches('\n').count();
    Some((header, header_line, rest.trim(), sql_line))
}

/// Reads and checks one rule or KPI file.
pub fn parse_file(path: &Path) -> Result<Definition, RuleError> {
    let top = Location {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| RuleError::new(top.clone(), format!("cannot read the file: {e}")))?;
    parse_text(path, &text)
}

/// Parses the text of a rule or KPI file; `path` is used for locations only.
pub fn parse_text(path: &Path, text: &str) -> Result<Definition, RuleError> {
    let at = |line: usize, column: usize| Location {
        file: path.to_path_buf(),
        line,
        column,
    };
    let (header_text, header_line, sql, sql_line) = split_header(text).ok_or_else(|| {
        RuleError::new(at(1, 1), "the file does not start with a /* ... */ header")
            .with_hint("put the rule's TOML metadata (id, severity, window, entity, value) in a block comment before the SQL")
    })?;
    let header: Header = toml::from_str(header_text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_col(header_text, span.start))
            .unwrap_or((1, 1));
        let message = e.message().to_string();
        RuleError::new(
            at(header_line + line - 1, column),
            format!("header: {message}"),
        )
        .with_hint("the header is TOML: key = \"value\", lists as [\"a\", \"b\"]")
    })?;
    if sql.is_empty() {
        return Err(RuleError::new(
            at(sql_line, 1),
            "the file has a header but no SQL",
        ));
    }
    let header_at = at(header_line, 1);
    let window = window_spec(&header, &header_at)?;
    let (id, kind, keys, values) = match (&header.id, &header.kpi) {
        (Some(id), None) => {
            let severity = header.severity.ok_or_else(|| {
                RuleError::new(header_at.clone(), "a rule needs `severity`")
                    .with_hint("one of info, low, medium, high, critical")
            })?;
            if header.entity.is_empty() {
                return Err(
                    RuleError::new(header_at.clone(), "a rule needs `entity`").with_hint(
                        "the attributes that identify who or what, e.g. entity = [\"client.address\"]",
                    ),
                );
            }
            let value = header.value.clone().ok_or_else(|| {
                RuleError::new(header_at.clone(), "a rule needs `value`")
                    .with_hint("the name of the output column holding the measured figure")
            })?;
            if header.for_windows == 0 {
                return Err(RuleError::new(
                    header_at.clone(),
                    "`for` must be at least 1",
                ));
            }
            let suppress_ns = match &header.suppress {
                Some(s) => nanos(
                    parse_duration(s)
                        .map_err(|e| RuleError::new(header_at.clone(), format!("suppress: {e}")))?,
                ),
                None => 0,
            };
            let kind = Kind::Alert {
                severity,
                tags: header.tags.clone(),
                for_windows: header.for_windows,
                suppress_ns,
                summary: header.summary.clone(),
            };
            (id.clone(), kind, header.entity.clone(), vec![value])
        }
        (None, Some(kpi)) => {
            let values = match (&header.value, header.values.is_empty()) {
                (Some(v), true) => vec![v.clone()],
                (None, false) => header.values.clone(),
                (None, true) => vec!["value".to_string()],
                (Some(_), false) => {
                    return Err(RuleError::new(
                        header_at.clone(),
                        "give `value` or `values`, not both",
                    ));
                }
            };
            (kpi.clone(), Kind::Kpi, header.dimensions.clone(), values)
        }
        (Some(_), Some(_)) => {
            return Err(RuleError::new(
                header_at.clone(),
                "give `id` (a rule) or `kpi` (a KPI), not both",
            ));
        }
        (None, None) => {
            return Err(RuleError::new(
                header_at.clone(),
                "the header needs `id` (a rule) or `kpi` (a KPI)",
            ));
        }
    };
    let id_ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !id_ok {
        return Err(
            RuleError::new(header_at, format!("`{id}` is not a valid id")).with_hint(
                "use letters, digits, '.', '_' and '-', e.g. auth.brute_force.single_account",
            ),
        );
    }
    let rollup = rollup_spec(&header, &kind, window, &header_at)?;
    Ok(Definition {
        rollup,
        title: header.title.clone().unwrap_or_else(|| id.clone()),
        description: header.description.clone().unwrap_or_default(),
        id,
        kind,
        window,
        keys,
        values,
        runbook: header.runbook,
        false_positives: header.false_positives,
        maturity: header.maturity,
        enabled: header.enabled,
        panes: header.panes,
        sql: sql.to_string(),
        path: path.to_path_buf(),
        sql_line,
        version: format!("{:016x}", fnv1a64(text.as_bytes())),
    })
}

/// The rollup a KPI's `keep`, `keep_hourly` and `max_keys` ask for.
fn rollup_spec(
    header: &Header,
    kind: &Kind,
    window: WindowSpec,
    at: &Location,
) -> Result<Option<RollupSpec>, RuleError> {
    let Some(keep) = &header.keep else {
        if header.keep_hourly.is_some() || header.max_keys.is_some() {
            return Err(RuleError::new(
                at.clone(),
                "`keep_hourly` and `max_keys` need `keep`",
            ));
        }
        return Ok(None);
    };
    let fail = |m: String| {
        Err(RuleError::new(at.clone(), m).with_hint(
            "a kept KPI is tumbling (no slide), e.g. window = \"1m\", keep = \"6h\"; see docs/rules.md, Baselines",
        ))
    };
    if !matches!(kind, Kind::Kpi) {
        return fail("`keep` is for KPIs (kpi = \"...\"), not rules".into());
    }
    if window.slide_ns != window.size_ns {
        return fail("a kept KPI must be tumbling: leave `slide` out".into());
    }
    let duration = |field: &str, text: &str| {
        parse_duration(text)
            .map(nanos)
            .map_err(|e| RuleError::new(at.clone(), format!("{field}: {e}")))
    };
    let keep_ns = duration("keep", keep)?;
    if keep_ns < window.size_ns || keep_ns % window.size_ns != 0 {
        return fail(format!(
            "keep = \"{keep}\" must be a whole number of windows"
        ));
    }
    let hourly_ns = match &header.keep_hourly {
        Some(h) => {
            let ns = duration("keep_hourly", h)?;
            const HOUR: i64 = 3_600_000_000_000;
            if ns < HOUR || ns % HOUR != 0 || HOUR % window.size_ns != 0 || keep_ns < HOUR {
                return fail(format!(
                    "keep_hourly = \"{h}\" must be whole hours, with the window dividing an hour and `keep` at least 1h (the hour in progress is read from its windows)"
                ));
            }
            Some(ns)
        }
        None => None,
    };
    let max_keys = header.max_keys.unwrap_or(DEFAULT_ROLLUP_KEYS);
    if max_keys == 0 {
        return fail("max_keys must be at least 1".into());
    }
    Ok(Some(RollupSpec {
        keep_ns,
        hourly_ns,
        max_keys,
    }))
}

fn window_spec(header: &Header, at: &Location) -> Result<WindowSpec, RuleError> {
    let size = parse_duration(&header.window)
        .map_err(|e| RuleError::new(at.clone(), format!("window: {e}")))?;
    let slide = match &header.slide {
        Some(s) => {
            parse_duration(s).map_err(|e| RuleError::new(at.clone(), format!("slide: {e}")))?
        }
        None => size,
    };
    let (size_ns, slide_ns) = (nanos(size), nanos(slide));
    if slide_ns <= 0 || size_ns <= 0 {
        return Err(RuleError::new(
            at.clone(),
            "window and slide must be longer than zero",
        ));
    }
    if size_ns % slide_ns != 0 {
        return Err(RuleError::new(
            at.clone(),
            format!(
                "window {} is not a whole number of slides {}",
                header.window,
                header.slide.as_deref().unwrap_or("")
            ),
        )
        .with_hint(
            "choose a slide that divides the window, e.g. window = \"5m\", slide = \"30s\"",
        ));
    }
    if size_ns / slide_ns > 120 {
        return Err(
            RuleError::new(at.clone(), "a window may overlap at most 120 slides")
                .with_hint("each event is counted in window/slide windows; use a longer slide"),
        );
    }
    Ok(WindowSpec { size_ns, slide_ns })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = 1 + before.matches('\n').count();
    let column = 1 + before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, column)
}

/// Every `.sql` file under `dir`, recursively, in name order.
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "sql") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Definition {
    /// The location of the header, for errors about the definition as a whole.
    pub fn header_location(&self) -> Location {
        self.at(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "/*\nid = \"t.rule\"\nseverity = \"high\"\nwindow = \"1m\"\nslide = \"10s\"\nentity = [\"client.address\"]\nvalue = \"n\"\n*/\n\nSELECT window_start, window_end, client_address, count(*) AS n\nFROM spans GROUP BY 1, 2, 3\n";

    #[test]
    fn parses_header_and_sql_with_its_line() {
        let d = parse_text(Path::new("r.sql"), RULE).expect("parses");
        assert_eq!(d.id, "t.rule");
        assert_eq!(d.sql_line, 10);
        assert_eq!(
            d.window,
            WindowSpec {
                size_ns: 60_000_000_000,
                slide_ns: 10_000_000_000
            }
        );
        assert!(d.sql.starts_with("SELECT"));
        assert_eq!(d.sql_location(2, 3).line, 11);
    }

    #[test]
    fn header_errors_name_the_line() {
        let bad = RULE.replace("window = \"1m\"", "window = 1m");
        let e = parse_text(Path::new("r.sql"), &bad).expect_err("must fail");
        assert_eq!(e.location.line, 4, "{e}");
    }

    #[test]
    fn slide_must_divide_window() {
        let bad = RULE.replace("slide = \"10s\"", "slide = \"7s\"");
        let e = parse_text(Path::new("r.sql"), &bad).expect_err("must fail");
        assert!(e.to_string().contains("whole number of slides"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5w").is_err());
    }
}
