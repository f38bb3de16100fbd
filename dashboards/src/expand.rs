//! A panel's query as Grafana would send it: template variables and Grafana's
//! macros expanded, so that `psql`, sqlx or Prometheus's HTTP API can run the
//! `rawSql` or `expr` of a generated dashboard without Grafana. The end-to-end
//! test (`tests/tests/dashboards.rs`) runs every panel this way, and the
//! engine's viewer may show the same panels with the same function.
//!
//! What is expanded, and how (after Grafana's PostgreSQL datasource,
//! `pkg/tsdb/grafana-postgresql-datasource/macros.go`, its SQL engine's global
//! substitutions, and the frontend's variable interpolation):
//!
//! | in the query | becomes |
//! | --- | --- |
//! | `$v`, `${v}` (SQL) | every value quoted as an SQL string (`'` doubled), joined by `,`: `'EUR','USD'` |
//! | `$v`, `${v}` (PromQL) | one value regex-escaped; several as `(a\|b)` |
//! | `${v:raw}`, `${v:csv}` | the values joined by `,`, as they are |
//! | the value [`ALL`] | the variable's "All" value, as it is: [`SQL_ALL`] in SQL, [`PROM_ALL`] in PromQL |
//! | `$__timeFilter(col)` | `col BETWEEN '<from>' AND '<to>'` (RFC 3339, UTC, nanoseconds without trailing zeros) |
//! | `$__timeFrom()`, `$__timeTo()` | `'<from>'`, `'<to>'` |
//! | `$__timeGroup(col, '1m')` | `floor(extract(epoch from col)/60)*60` (seconds written as Go writes a float) |
//! | `$__timeGroupAlias(col, '1m')` | the same, then ` AS "time"`; so is `$__timeGroup` when a `,` follows it directly |
//! | `$__time(col)`, `$__timeEpoch(col)` | `col AS "time"`, `extract(epoch from col) as "time"` |
//! | `$__unixEpochFilter(col)`, `$__unixEpochNanoFilter(col)` | `col >= <from> AND col <= <to>` in seconds, nanoseconds |
//! | `$__unixEpochFrom()`, `$__unixEpochTo()`, `$__unixEpochNanoFrom()`, `$__unixEpochNanoTo()` | the bound in seconds, nanoseconds |
//! | `$__unixEpochGroup(col, '1m')`, `$__unixEpochGroupAlias(col, '1m')` | `floor((col)/60)*60`, then ` AS "time"` |
//! | `$__interval`, `$__interval_ms` | [`TimeRange::interval`] as Grafana writes it (`1m`, `20s`: the largest unit, truncated), in milliseconds |
//! | `$__rate_interval` (PromQL) | max(interval + scrape interval, 4 × scrape interval), written the same way |
//! | `$__range`, `$__range_s`, `$__range_ms` (PromQL) | the range's length: `3600s`, `3600`, `3600000` |
//!
//! Where this is stricter than Grafana, it says so with an [`ExpandError`]
//! rather than sending text the database would refuse or misread: a variable
//! the caller gave no values for, a variable without any value (Grafana would
//! write `IN ()`), an unknown `$__` name or macro, a macro without its `)`, an
//! interval in months or years (Grafana counts those back from the wall clock).
//! A fill mode (`$__timeGroup(col, '1m', 0)`) is accepted and changes nothing
//! in the SQL: Grafana fills the gaps after the query, this function does not.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use dashboards::expand::{expand_sql, TimeRange, ALL};
//!
//! // 2026-01-15 10:00 to 10:15 UTC
//! let range = TimeRange::new(1_768_471_200_000_000_000, 1_768_472_100_000_000_000, Duration::from_secs(60));
//! let mut vars = BTreeMap::new();
//! vars.insert("currency".to_string(), vec!["EUR".to_string(), "USD".to_string()]);
//! vars.insert("rule".to_string(), vec![ALL.to_string()]);
//! let sql = expand_sql(
//!     "SELECT $__timeGroupAlias(window_end, '1m'), count(*) FROM t\n\
//!      WHERE $__timeFilter(window_end) AND c IN ($currency) AND ('*' IN ($rule) OR r IN ($rule))\n\
//!      GROUP BY 1",
//!     &range,
//!     &vars,
//! )?;
//! assert_eq!(
//!     sql,
//!     "SELECT floor(extract(epoch from window_end)/60)*60 AS \"time\", count(*) FROM t\n\
//!      WHERE window_end BETWEEN '2026-01-15T10:00:00Z' AND '2026-01-15T10:15:00Z' AND c IN ('EUR','USD') AND ('*' IN ('*') OR r IN ('*'))\n\
//!      GROUP BY 1"
//! );
//! # Ok::<(), dashboards::expand::ExpandError>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

/// What "All" stands for in the dashboards' SQL variables: a filter written
/// `('*' IN ($v) OR column IN ($v))` holds for All, even when the variable has
/// no values at all.
pub const SQL_ALL: &str = "'*'";
/// What "All" stands for in the dashboards' Prometheus variables (a regex).
pub const PROM_ALL: &str = ".*";
/// The value Grafana keeps for "All" (a dashboard's `current.value`); give it
/// as a variable's value to expand to the variable's All value.
pub const ALL: &str = "$__all";

/// The dashboard's time range and the panel's interval, the context Grafana
/// expands a query in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// the start, Unix time in nanoseconds
    pub from_ns: i64,
    /// the end, Unix time in nanoseconds
    pub to_ns: i64,
    /// `$__interval`: Grafana derives it from the range over the panel's
    /// width in points, at least the datasource's minimum; here the caller
    /// says it
    pub interval: Duration,
}

impl TimeRange {
    pub fn new(from_ns: i64, to_ns: i64, interval: Duration) -> TimeRange {
        TimeRange {
            from_ns,
            to_ns,
            interval,
        }
    }
}

/// A query that cannot be expanded, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("`${name}` at byte {at}: no such variable (the query's variables given: {known})")]
    UnknownVariable {
        name: String,
        at: usize,
        known: String,
    },
    #[error("variable `${name}` has no value; give [\"$__all\"] for All")]
    NoValue { name: String },
    #[error("`${{{name}:{format}}}`: format `{format}` is not supported (only raw and csv)")]
    UnsupportedFormat { name: String, format: String },
    #[error("`${{` at byte {at} has no closing `}}`")]
    UnclosedBrace { at: usize },
    #[error("unknown macro `${name}(...)` at byte {at}")]
    UnknownMacro { name: String, at: usize },
    #[error("macro `${name}(` at byte {at} has no closing `)`")]
    UnclosedMacro { name: String, at: usize },
    #[error("`${name}({args})`: {reason}")]
    MacroArguments {
        name: String,
        args: String,
        reason: String,
    },
}

/// Which query language a variable is written into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sql,
    PromQl { scrape_interval: Duration },
}

/// A panel's `rawSql` (or a variable's SQL query) as Grafana's PostgreSQL
/// datasource runs it: template variables first, then `$__interval`, then the
/// macros. `vars` gives each variable's selected values ([`ALL`] for All).
pub fn expand_sql(
    sql: &str,
    range: &TimeRange,
    vars: &BTreeMap<String, Vec<String>>,
) -> Result<String, ExpandError> {
    let with_values = substitute(sql, range, vars, Dialect::Sql)?;
    macros(&with_values, range)
}

/// A panel's PromQL `expr` as Grafana's Prometheus datasource sends it:
/// template variables as regex alternatives (`.*` for All), and
/// `$__interval`, `$__rate_interval` and `$__range` from `range` and the
/// datasource's scrape interval (Grafana's default is 15 s).
pub fn expand_promql(
    expr: &str,
    range: &TimeRange,
    scrape_interval: Duration,
    vars: &BTreeMap<String, Vec<String>>,
) -> Result<String, ExpandError> {
    substitute(expr, range, vars, Dialect::PromQl { scrape_interval })
}

/// A Prometheus variable query `label_values(label)` or
/// `label_values(selector, label)`: Grafana answers it from Prometheus's
/// label values API (`/api/v1/label/<label>/values?match[]=<selector>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelValues {
    pub selector: Option<String>,
    pub label: String,
}

/// Reads a `label_values(...)` variable query (expand its variables first);
/// `None` for any other query.
pub fn label_values(query: &str) -> Option<LabelValues> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?
        .trim();
    let is_label = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    match inner.rsplit_once(',') {
        Some((selector, label)) if is_label(label.trim()) && !selector.trim().is_empty() => {
            Some(LabelValues {
                selector: Some(selector.trim().to_string()),
                label: label.trim().to_string(),
            })
        }
        None if is_label(inner) => Some(LabelValues {
            selector: None,
            label: inner.to_string(),
        }),
        _ => None,
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where the word (`[A-Za-z0-9_]*`) that starts at `start` ends.
fn word_end(text: &str, start: usize) -> usize {
    start
        + text.as_bytes()[start..]
            .iter()
            .take_while(|b| is_word(**b))
            .count()
}

/// Rewrites `text` at each `$`: given the `$`'s byte offset, `rewrite`
/// returns the replacement and the offset where the replaced text ends, or
/// `None` to leave that `$` as it is.
fn rewrite_dollars(
    text: &str,
    mut rewrite: impl FnMut(usize) -> Result<Option<(String, usize)>, ExpandError>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(n) = text[from..].find('$') {
        let at = from + n;
        match rewrite(at)? {
            Some((replacement, end)) => {
                out.push_str(&text[copied..at]);
                out.push_str(&replacement);
                (copied, from) = (end, end);
            }
            None => from = at + 1,
        }
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// The template variables and Grafana's `$__` names without arguments.
/// `$__name(` is left for [`macros`].
fn substitute(
    text: &str,
    range: &TimeRange,
    vars: &BTreeMap<String, Vec<String>>,
    dialect: Dialect,
) -> Result<String, ExpandError> {
    rewrite_dollars(text, |at| {
        // ${name} or ${name:format}
        if text[at + 1..].starts_with('{') {
            let close = text[at + 2..]
                .find('}')
                .map(|n| at + 2 + n)
                .ok_or(ExpandError::UnclosedBrace { at })?;
            let inner = &text[at + 2..close];
            let (name, format) = match inner.split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            let value = value_of(name, format, at, range, vars, dialect)?;
            return Ok(Some((value, close + 1)));
        }
        let end = word_end(text, at + 1);
        let name = &text[at + 1..end];
        let is_macro = name.starts_with("__") && text[end..].starts_with('(');
        // `$1` is not a variable; `$__name(` is a macro, expanded later
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || (is_macro && dialect == Dialect::Sql)
        {
            return Ok(None);
        }
        let value = value_of(name, None, at, range, vars, dialect)?;
        Ok(Some((value, end)))
    })
}

/// What `$name` (or `${name:format}`) stands for.
fn value_of(
    name: &str,
    format: Option<&str>,
    at: usize,
    range: &TimeRange,
    vars: &BTreeMap<String, Vec<String>>,
    dialect: Dialect,
) -> Result<String, ExpandError> {
    if let Some(builtin) = builtin(name, range, dialect) {
        return Ok(builtin);
    }
    let Some(values) = vars.get(name) else {
        return Err(ExpandError::UnknownVariable {
            name: name.to_string(),
            at,
            known: vars.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    };
    if values.is_empty() {
        return Err(ExpandError::NoValue {
            name: name.to_string(),
        });
    }
    // a custom All value is written as it is, whatever the format
    if values.iter().any(|v| v == ALL) {
        return Ok(match dialect {
            Dialect::Sql => SQL_ALL,
            Dialect::PromQl { .. } => PROM_ALL,
        }
        .to_string());
    }
    match format {
        Some("raw" | "csv") => return Ok(values.join(",")),
        Some(other) => {
            return Err(ExpandError::UnsupportedFormat {
                name: name.to_string(),
                format: other.to_string(),
            });
        }
        None => {}
    }
    Ok(match dialect {
        Dialect::Sql => values
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(","),
        Dialect::PromQl { .. } => {
            let escaped: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
            match escaped.as_slice() {
                [one] => one.clone(),
                many => format!("({})", many.join("|")),
            }
        }
    })
}

/// Grafana's built-in names without arguments, for the dialect.
fn builtin(name: &str, range: &TimeRange, dialect: Dialect) -> Option<String> {
    let range_ms = (range.to_ns - range.from_ns).div_euclid(1_000_000);
    match (name, dialect) {
        ("__interval", _) => Some(interval_text(range.interval)),
        ("__interval_ms", _) => Some(range.interval.as_millis().to_string()),
        ("__rate_interval", Dialect::PromQl { scrape_interval }) => Some(interval_text(
            (range.interval + scrape_interval).max(scrape_interval * 4),
        )),
        ("__range", Dialect::PromQl { .. }) => {
            Some(format!("{}s", (range_ms as f64 / 1000.0).round() as i64))
        }
        ("__range_s", Dialect::PromQl { .. }) => {
            Some(((range_ms as f64 / 1000.0).round() as i64).to_string())
        }
        ("__range_ms", Dialect::PromQl { .. }) => Some(range_ms.to_string()),
        _ => None,
    }
}

/// A label value as a regex that matches only itself, inside a PromQL
/// double-quoted string (each escape doubled, as Grafana writes it).
fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\\\\\"),
            '"' => out.push_str("\\\\\\\""),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '\'' | '+' | '?' | '.' | '(' | ')' | '|' => {
                out.push_str("\\\\");
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// An interval as Grafana writes `$__interval`: the largest unit that fits,
/// truncated (`90s` is `1m`).
pub fn interval_text(d: Duration) -> String {
    const UNITS: [(&str, u128); 6] = [
        ("y", 365 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let ms = d.as_millis();
    UNITS
        .iter()
        .find(|(_, size)| ms >= *size)
        .map(|(unit, size)| format!("{}{unit}", ms / size))
        .unwrap_or_else(|| "1ms".to_string())
}

/// The macros `$__name(args)`: a name of word characters, the arguments up to
/// the first `)`, split at `,` and trimmed of spaces, as Grafana reads them.
fn macros(sql: &str, range: &TimeRange) -> Result<String, ExpandError> {
    rewrite_dollars(sql, |at| {
        let end = word_end(sql, at + 1);
        if end == at + 1 || !sql[end..].starts_with('(') {
            return Ok(None);
        }
        let name = &sql[at + 1..end];
        let close =
            sql[end..]
                .find(')')
                .map(|n| end + n)
                .ok_or_else(|| ExpandError::UnclosedMacro {
                    name: name.to_string(),
                    at,
                })?;
        let raw_args = &sql[end + 1..close];
        let args: Vec<&str> = raw_args.split(',').map(|a| a.trim_matches(' ')).collect();
        // before Grafana 5.3, `$__timeGroup(...),` meant the aliased form
        let name = if name == "__timeGroup" && sql[close + 1..].starts_with(',') {
            "__timeGroupAlias"
        } else {
            name
        };
        Ok(Some((
            evaluate(name, &args, raw_args, at, range)?,
            close + 1,
        )))
    })
}

fn evaluate(
    name: &str,
    args: &[&str],
    raw_args: &str,
    at: usize,
    range: &TimeRange,
) -> Result<String, ExpandError> {
    let bad = |reason: &str| ExpandError::MacroArguments {
        name: name.to_string(),
        args: raw_args.to_string(),
        reason: reason.to_string(),
    };
    let column = || match args.first() {
        Some(c) if !c.is_empty() => Ok(*c),
        _ => Err(bad("needs a time column")),
    };
    let group_seconds = || -> Result<String, ExpandError> {
        if args.len() < 2 {
            return Err(bad("needs a time column and an interval, e.g. (col, '1m')"));
        }
        let interval = parse_interval(args[1].trim_matches('\'')).map_err(|reason| bad(&reason))?;
        Ok(go_float(go_seconds(interval)))
    };
    let (from_s, to_s) = (
        range.from_ns.div_euclid(1_000_000_000),
        range.to_ns.div_euclid(1_000_000_000),
    );
    Ok(match name {
        "__time" => format!("{} AS \"time\"", column()?),
        "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", column()?),
        "__timeFilter" => format!(
            "{} BETWEEN '{}' AND '{}'",
            column()?,
            rfc3339_nano(range.from_ns),
            rfc3339_nano(range.to_ns)
        ),
        "__timeFrom" => format!("'{}'", rfc3339_nano(range.from_ns)),
        "__timeTo" => format!("'{}'", rfc3339_nano(range.to_ns)),
        "__timeGroup" => {
            let s = group_seconds()?;
            format!("floor(extract(epoch from {})/{s})*{s}", column()?)
        }
        "__timeGroupAlias" => {
            let s = group_seconds()?;
            format!(
                "floor(extract(epoch from {})/{s})*{s} AS \"time\"",
                column()?
            )
        }
        "__unixEpochFilter" => {
            let c = column()?;
            format!("{c} >= {from_s} AND {c} <= {to_s}")
        }
        "__unixEpochNanoFilter" => {
            let c = column()?;
            format!("{c} >= {} AND {c} <= {}", range.from_ns, range.to_ns)
        }
        "__unixEpochFrom" => from_s.to_string(),
        "__unixEpochTo" => to_s.to_string(),
        "__unixEpochNanoFrom" => range.from_ns.to_string(),
        "__unixEpochNanoTo" => range.to_ns.to_string(),
        "__unixEpochGroup" => {
            let s = group_seconds()?;
            format!("floor(({})/{s})*{s}", column()?)
        }
        "__unixEpochGroupAlias" => {
            let s = group_seconds()?;
            format!("floor(({})/{s})*{s} AS \"time\"", column()?)
        }
        _ => {
            return Err(ExpandError::UnknownMacro {
                name: name.to_string(),
                at,
            });
        }
    })
}

/// An interval as Grafana's macros take it: `1d` and `2w` (days of 24 h), or
/// a Go duration (`1m`, `1h30m`, `0.5s`, `250ms`; units ns, us, µs, ms, s, m, h).
fn parse_interval(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not an interval (e.g. '1m', '30s', '1h', '1d')");
    if let Some(n) = text.strip_suffix('d').or_else(|| text.strip_suffix('w'))
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        let n: u64 = n.parse().map_err(|_| invalid())?;
        let days = if text.ends_with('w') { n * 7 } else { n };
        return positive(Duration::from_secs(days * 86_400), text);
    }
    if let Some(n) = text.strip_suffix('M').or_else(|| text.strip_suffix('y'))
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "`{text}`: months and years are not supported (their length depends on the date)"
        ));
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map(|(n, _)| n)
            .unwrap_or(rest.len());
        let ns_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        total += number * ns_per_unit;
        rest = &rest[unit_len..];
    }
    positive(Duration::from_nanos(total.round() as u64), text)
}

fn positive(d: Duration, text: &str) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!("`{text}` is no time at all"))
    } else {
        Ok(d)
    }
}

/// Seconds as Go's `Duration.Seconds()` computes them.
fn go_seconds(d: Duration) -> f64 {
    d.as_secs() as f64 + f64::from(d.subsec_nanos()) / 1e9
}

/// A float as Go's `%v` writes it: the shortest digits that read back the
/// same, with an exponent (`1.2096e+06`) below 1e-4 and from 1e6 up.
fn go_float(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        format!("{v}")
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// Unix nanoseconds as Go's `time.RFC3339Nano` writes them in UTC:
/// `2026-01-15T10:00:00.5Z` (no trailing zeros in the fraction, none at all
/// on a whole second).
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// (year, month, day) of a count of days since 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-15T10:00:00Z, the recorded captures' start
    const T0: i64 = 1_768_471_200_000_000_000;
    const MINUTE: i64 = 60_000_000_000;

    fn range() -> TimeRange {
        TimeRange::new(T0, T0 + 15 * MINUTE, Duration::from_secs(60))
    }

    fn vars(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn sql(text: &str) -> String {
        expand_sql(text, &range(), &BTreeMap::new()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn time_filter_and_bounds_are_rfc3339_utc_as_go_writes_them() {
        assert_eq!(
            sql("WHERE $__timeFilter(window_end)"),
            "WHERE window_end BETWEEN '2026-01-15T10:00:00Z' AND '2026-01-15T10:15:00Z'"
        );
        assert_eq!(
            sql("$__timeFrom()::timestamptz - $__timeTo()"),
            "'2026-01-15T10:00:00Z'::timestamptz - '2026-01-15T10:15:00Z'"
        );
        let odd = TimeRange::new(T0 + 500_000_000, T0 + 1_000_000_123, Duration::from_secs(1));
        assert_eq!(
            expand_sql("$__timeFilter( t )", &odd, &BTreeMap::new()),
            Ok("t BETWEEN '2026-01-15T10:00:00.5Z' AND '2026-01-15T10:00:01.000000123Z'".into())
        );
    }

    #[test]
    fn dates_before_1970_and_leap_days() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(-1), "1969-12-31T23:59:59.999999999Z");
        // 2024-02-29T12:00:00Z
        assert_eq!(
            rfc3339_nano(1_709_208_000_000_000_000),
            "2024-02-29T12:00:00Z"
        );
    }

    #[test]
    fn time_group_floors_epoch_seconds_with_gos_number_text() {
        assert_eq!(
            sql("SELECT $__timeGroupAlias(window_end, '1m'), n"),
            "SELECT floor(extract(epoch from window_end)/60)*60 AS \"time\", n"
        );
        assert_eq!(
            sql("GROUP BY $__timeGroup(t,'500ms')"),
            "GROUP BY floor(extract(epoch from t)/0.5)*0.5"
        );
        assert_eq!(
            sql("$__timeGroup(t, '2w')"),
            "floor(extract(epoch from t)/1.2096e+06)*1.2096e+06"
        );
        assert_eq!(
            sql("$__timeGroup(t, '1h30m') "),
            "floor(extract(epoch from t)/5400)*5400 "
        );
        assert_eq!(
            sql("$__unixEpochGroupAlias(ts, '1d')"),
            "floor((ts)/86400)*86400 AS \"time\""
        );
        // a fill mode changes nothing in the SQL
        assert_eq!(
            sql("$__timeGroup(t, '1m', 0)"),
            "floor(extract(epoch from t)/60)*60"
        );
    }

    #[test]
    fn time_group_followed_by_a_comma_is_the_aliased_form() {
        assert_eq!(
            sql("SELECT $__timeGroup(t, '1m'), v"),
            "SELECT floor(extract(epoch from t)/60)*60 AS \"time\", v"
        );
    }

    #[test]
    fn epoch_macros_in_seconds_and_nanoseconds() {
        let from = T0 / 1_000_000_000;
        assert_eq!(
            sql("$__unixEpochFilter(ts) $__unixEpochFrom() $__unixEpochNanoTo()"),
            format!(
                "ts >= {from} AND ts <= {} {from} {}",
                from + 900,
                T0 + 15 * MINUTE
            )
        );
        assert_eq!(sql("$__time(t)"), "t AS \"time\"");
        assert_eq!(sql("$__timeEpoch(t)"), "extract(epoch from t) as \"time\"");
    }

    #[test]
    fn sql_variables_are_quoted_and_all_is_written_as_it_is() {
        let v = vars(&[
            ("currency", &["EUR", "O'Neil"]),
            ("rule", &[ALL]),
            ("one", &["x"]),
        ]);
        assert_eq!(
            expand_sql(
                "c IN ($currency) AND ('*' IN (${rule}) OR r IN ($rule)) AND o = $one AND ${currency:csv}",
                &range(),
                &v
            ),
            Ok("c IN ('EUR','O''Neil') AND ('*' IN ('*') OR r IN ('*')) AND o = 'x' AND EUR,O'Neil".into())
        );
    }

    #[test]
    fn interval_and_positional_parameters() {
        assert_eq!(sql("$__interval $__interval_ms $1"), "1m 60000 $1");
        let r = TimeRange::new(T0, T0 + MINUTE, Duration::from_millis(90_500));
        assert_eq!(
            expand_sql("$__interval", &r, &BTreeMap::new()),
            Ok("1m".into())
        );
    }

    #[test]
    fn what_grafana_would_send_broken_is_an_error() {
        let none = BTreeMap::new();
        assert!(matches!(
            expand_sql("x IN ($currency)", &range(), &none),
            Err(ExpandError::UnknownVariable { ref name, at: 6, .. }) if name == "currency"
        ));
        assert_eq!(
            expand_sql("x IN ($c)", &range(), &vars(&[("c", &[])])),
            Err(ExpandError::NoValue { name: "c".into() })
        );
        assert!(matches!(
            expand_sql("$__nope(x)", &range(), &none),
            Err(ExpandError::UnknownMacro { ref name, at: 0 }) if name == "__nope"
        ));
        assert!(matches!(
            expand_sql("$__timeFilter(x", &range(), &none),
            Err(ExpandError::UnclosedMacro { .. })
        ));
        assert!(matches!(
            expand_sql("$__timeFilter()", &range(), &none),
            Err(ExpandError::MacroArguments { .. })
        ));
        assert!(matches!(
            expand_sql("$__timeGroup(t)", &range(), &none),
            Err(ExpandError::MacroArguments { .. })
        ));
        for bad in ["'1M'", "'0s'", "'fast'", "'5'"] {
            let e = expand_sql(&format!("$__timeGroup(t, {bad})"), &range(), &none);
            assert!(
                matches!(e, Err(ExpandError::MacroArguments { .. })),
                "{bad}: {e:?}"
            );
        }
        assert!(matches!(
            expand_sql("${c", &range(), &none),
            Err(ExpandError::UnclosedBrace { at: 0 })
        ));
        assert!(matches!(
            expand_sql("${c:json}", &range(), &vars(&[("c", &["a"])])),
            Err(ExpandError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn promql_variables_are_escaped_regex_alternatives() {
        let v = vars(&[
            ("service", &["shop-gateway", "shop-cart"]),
            ("route", &["/api/products/{id}"]),
            ("instance", &[ALL]),
        ]);
        assert_eq!(
            expand_promql(
                "rate(m{service_name=~\"$service\", http_route=~\"$route\", instance=~\"$instance\"}[$__rate_interval])",
                &range(),
                Duration::from_secs(15),
                &v
            ),
            Ok("rate(m{service_name=~\"(shop-gateway|shop-cart)\", http_route=~\"/api/products/\\\\{id\\\\}\", instance=~\".*\"}[1m])".into())
        );
        assert_eq!(
            expand_promql(
                "a\\b \"q\"",
                &range(),
                Duration::from_secs(15),
                &BTreeMap::new()
            ),
            Ok("a\\b \"q\"".into()),
            "text outside variables is left alone"
        );
        assert_eq!(regex_escape("a\\b\"c"), "a\\\\\\\\b\\\\\\\"c");
    }

    #[test]
    fn rate_interval_is_four_scrapes_at_least() {
        let short = TimeRange::new(T0, T0 + MINUTE, Duration::from_secs(15));
        let none = BTreeMap::new();
        let expand = |r: &TimeRange, scrape: u64| {
            expand_promql(
                "$__rate_interval $__interval $__range $__range_s $__range_ms",
                r,
                Duration::from_secs(scrape),
                &none,
            )
        };
        assert_eq!(expand(&short, 5), Ok("20s 15s 60s 60 60000".into()));
        assert_eq!(expand(&short, 15), Ok("1m 15s 60s 60 60000".into()));
        assert!(matches!(
            expand_promql("$__bogus", &short, Duration::from_secs(5), &none),
            Err(ExpandError::UnknownVariable { .. })
        ));
    }

    #[test]
    fn label_values_queries() {
        assert_eq!(
            label_values("label_values(m{a=~\"x,y\"}, http_route)"),
            Some(LabelValues {
                selector: Some("m{a=~\"x,y\"}".into()),
                label: "http_route".into()
            })
        );
        assert_eq!(
            label_values(" label_values(instance) "),
            Some(LabelValues {
                selector: None,
                label: "instance".into()
            })
        );
        assert_eq!(label_values("up"), None);
    }

    #[test]
    fn go_floats() {
        assert_eq!(go_float(60.0), "60");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(604_800.0), "604800");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(0.0001), "0.0001");
    }
}
