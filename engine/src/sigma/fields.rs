//! Where a Sigma rule's events are in this engine's tables, and how its field
//! names and value matches become SQL over them.
//!
//! | `logsource` | table and rows |
//! | --- | --- |
//! | `category: webserver` or `proxy` | `spans`: the gateway's SERVER spans, one per request at the edge |
//! | `category: authentication` | `events`: the `shop.auth.login` events |
//! | `product: opentelemetry`, `category: spans`, `logs` or `events` | that table, every row |
//!
//! Field names are looked up in [`WEB`] or [`AUTHENTICATION`] first, then taken
//! as attribute names of the telemetry contract (`http.route`): a promoted
//! column when the table has one, else the `attributes` map.

use arrow::datatypes::DataType;
use ingest::schema::{Table, column_name};
use serde_yaml::Value;

/// Where a rule's events are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub table: &'static str,
    /// the rows of the table that are this log source's events
    pub filter: Option<&'static str>,
    /// field names of the log source, by the contract's attribute names
    pub fields: &'static [(&'static str, &'static str)],
    /// who an alert is about when the rule does not say
    pub entity: &'static str,
    /// what one event is, for summaries
    pub noun: &'static str,
}

/// Web server and proxy log fields (W3C extended log names, as Sigma's
/// `webserver` and `proxy` rules use them).
pub const WEB: &[(&str, &str)] = &[
    ("c-ip", "client.address"),
    ("ClientIP", "client.address"),
    ("src_ip", "client.address"),
    ("cs-method", "http.request.method"),
    ("cs-uri-stem", "url.path"),
    ("cs-uri", "url.path"),
    ("c-uri", "url.path"),
    ("c-uri-stem", "url.path"),
    ("sc-status", "http.response.status_code"),
    ("cs-user-agent", "user_agent.original"),
    ("c-useragent", "user_agent.original"),
];

/// Authentication log fields (Windows, Linux and ECS names).
pub const AUTHENTICATION: &[(&str, &str)] = &[
    ("IpAddress", "client.address"),
    ("SourceIp", "client.address"),
    ("src_ip", "client.address"),
    ("c-ip", "client.address"),
    ("source.ip", "client.address"),
    ("TargetUserName", "user.hash"),
    ("User", "user.hash"),
    ("UserName", "user.hash"),
    ("user.name", "user.hash"),
    ("Outcome", "shop.auth.outcome"),
    ("event.outcome", "shop.auth.outcome"),
    ("FailureReason", "shop.auth.failure_reason"),
    ("UserAgent", "user_agent.original"),
];

/// Fields a Sigma rule may name that this telemetry never holds, and why.
const ABSENT: &[(&str, &str)] = &[
    (
        "cs-uri-query",
        "query strings are never recorded (telemetry contract)",
    ),
    (
        "c-uri-query",
        "query strings are never recorded (telemetry contract)",
    ),
    ("cs-cookie", "cookies are never recorded"),
    ("cs-referrer", "the Referer header is not recorded"),
    ("cs-referer", "the Referer header is not recorded"),
    ("cs-host", "the Host header is not recorded"),
    ("sc-bytes", "response sizes are not recorded"),
    ("cs-bytes", "request sizes are not recorded"),
];

/// The log source of a rule's `logsource`.
pub fn source(logsource: Option<&Value>) -> Result<Source, String> {
    let get = |k: &str| {
        logsource
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let (category, product) = (get("category"), get("product"));
    let native = |table, noun| Source {
        table,
        filter: None,
        fields: &[],
        entity: "service.name",
        noun,
    };
    match (category.as_deref(), product.as_deref()) {
        (Some("webserver" | "proxy"), _) => Ok(Source {
            table: "spans",
            filter: Some("kind = 'SERVER' AND service_name = 'shop-gateway'"),
            fields: WEB,
            entity: "client.address",
            noun: "requests",
        }),
        (Some("authentication"), _) => Ok(Source {
            table: "events",
            filter: Some("event_name = 'shop.auth.login'"),
            fields: AUTHENTICATION,
            entity: "client.address",
            noun: "logins",
        }),
        (Some("spans"), Some("opentelemetry")) => Ok(native("spans", "spans")),
        (Some("logs"), Some("opentelemetry")) => Ok(native("logs", "log records")),
        (Some("events"), Some("opentelemetry")) => Ok(native("events", "events")),
        (category, product) => Err(format!(
            "logsource category {:?}, product {:?}: no table holds it (converted: webserver, proxy, \
             authentication; product opentelemetry with category spans, logs or events)",
            category.unwrap_or("none"),
            product.unwrap_or("none")
        )),
    }
}

/// A field as SQL: the expression, the contract's attribute name and its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub sql: String,
    pub attribute: String,
    pub numeric: bool,
}

impl Field {
    /// The column name a rule outputs for it (its entity's name with `_`).
    pub fn alias(&self) -> String {
        column_name(&self.attribute)
    }

    /// The expression as text, for text matches on a numeric column.
    fn as_text(&self) -> String {
        match self.numeric {
            true => format!("CAST({} AS VARCHAR)", self.sql),
            false => self.sql.clone(),
        }
    }
}

fn table(name: &str) -> Table {
    match name {
        "spans" => Table::Spans,
        "metrics" => Table::Metrics,
        // `events` is a view of `logs`
        _ => Table::Logs,
    }
}

/// Resolves a Sigma field name in `source`.
pub fn field(source: &Source, name: &str) -> Result<Field, String> {
    if let Some((_, why)) = ABSENT.iter().find(|(f, _)| *f == name) {
        return Err(format!("field {name}: {why}"));
    }
    let attribute = source
        .fields
        .iter()
        .find(|(f, _)| f.eq_ignore_ascii_case(name))
        .map_or(name, |(_, a)| *a);
    let column = column_name(attribute);
    let schema = table(source.table).schema();
    if let Ok(f) = schema.field_with_name(&column) {
        if matches!(f.data_type(), DataType::Map(..) | DataType::List(_)) {
            return Err(format!("field {name}: {column} is not a single value"));
        }
        let numeric = f.data_type().is_numeric();
        return Ok(Field {
            sql: column,
            attribute: attribute.to_string(),
            numeric,
        });
    }
    if attribute.contains('.') {
        return Ok(Field {
            sql: format!("attributes[{}]", literal(attribute)),
            attribute: attribute.to_string(),
            numeric: false,
        });
    }
    Err(format!(
        "field {name}: no column of {} and no mapping (the contract's attribute names, \
         e.g. client.address, and the log source's usual names are converted)",
        source.table
    ))
}

/// A SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The modifiers of a field name (`cs-uri-stem|contains|all`).
#[derive(Debug, Default, Clone, Copy)]
struct Modifiers {
    contains: bool,
    startswith: bool,
    endswith: bool,
    all: bool,
    re: bool,
    re_insensitive: bool,
    cidr: bool,
    exists: bool,
    cased: bool,
    compare: Option<&'static str>,
}

fn modifiers(list: &[&str]) -> Result<Modifiers, String> {
    let mut m = Modifiers::default();
    for name in list {
        match *name {
            "contains" => m.contains = true,
            "startswith" => m.startswith = true,
            "endswith" => m.endswith = true,
            "all" => m.all = true,
            "re" => m.re = true,
            "i" => m.re_insensitive = true,
            "m" | "s" => {
                return Err(format!(
                    "modifier re|{name} is not converted (multi-line flags)"
                ));
            }
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "cased" => m.cased = true,
            "gt" => m.compare = Some(">"),
            "gte" => m.compare = Some(">="),
            "lt" => m.compare = Some("<"),
            "lte" => m.compare = Some("<="),
            other => {
                return Err(format!(
                    "modifier {other} is not converted (it transforms values for encodings \
                     this telemetry does not carry, or is unknown)"
                ));
            }
        }
    }
    if m.re_insensitive && !m.re {
        return Err("modifier i applies to re only".into());
    }
    Ok(m)
}

/// A Sigma string value as a LIKE pattern: `*` and `?` are wildcards, `\*`,
/// `\?` and `\\` their literal characters; `%`, `_` and `\` are escaped.
/// Also whether it has a wildcard, and the value with its escapes undone.
fn like_pattern(value: &str, m: &Modifiers) -> (String, bool, String) {
    let mut out = String::new();
    let mut plain = String::new();
    let mut wild = false;
    if m.contains || m.endswith {
        out.push('%');
        wild = true;
    }
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                let next = chars.next().unwrap_or('\\');
                plain.push(next);
                if next == '\\' {
                    out.push_str("\\\\");
                } else {
                    out.push(next);
                }
            }
            '*' => {
                out.push('%');
                wild = true;
            }
            '?' => {
                out.push('_');
                wild = true;
            }
            '%' | '_' | '\\' => {
                plain.push(c);
                out.push('\\');
                out.push(c);
            }
            c => {
                plain.push(c);
                out.push(c);
            }
        }
    }
    if m.contains || m.startswith {
        out.push('%');
        wild = true;
    }
    (out, wild, plain)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One value's match.
fn matches(f: &Field, m: &Modifiers, value: &Value) -> Result<String, String> {
    if m.exists {
        return match value {
            Value::Bool(true) => Ok(format!("{} IS NOT NULL", f.sql)),
            Value::Bool(false) => Ok(format!("{} IS NULL", f.sql)),
            _ => Err("modifier exists wants true or false".into()),
        };
    }
    if value.is_null() {
        return Ok(format!("{} IS NULL", f.sql));
    }
    let text = scalar_text(value).ok_or_else(|| {
        format!(
            "field {}: a value must be text, a number, true or false",
            f.attribute
        )
    })?;
    if let Some(op) = m.compare {
        let n: f64 = text
            .parse()
            .map_err(|_| format!("modifier {op}: {text:?} is not a number"))?;
        return Ok(match f.numeric {
            true => format!("{} {op} {n}", f.sql),
            false => format!("TRY_CAST({} AS DOUBLE) {op} {n}", f.sql),
        });
    }
    if m.re {
        let flags = if m.re_insensitive { "(?i)" } else { "" };
        return Ok(format!(
            "regexp_like({}, {})",
            f.as_text(),
            literal(&format!("{flags}{text}"))
        ));
    }
    if m.cidr {
        return cidr(f, &text);
    }
    if f.numeric && matches!(value, Value::Number(_)) && !(m.contains || m.startswith || m.endswith)
    {
        return Ok(format!("{} = {text}", f.sql));
    }
    let (pattern, wild, plain) = like_pattern(&text, m);
    Ok(match (wild, m.cased) {
        (false, true) => format!("{} = {}", f.as_text(), literal(&plain)),
        (true, true) => format!("{} LIKE {} ESCAPE '\\'", f.as_text(), literal(&pattern)),
        // Sigma matches text without regard to case unless `cased` says so
        (_, false) => format!("{} ILIKE {} ESCAPE '\\'", f.as_text(), literal(&pattern)),
    })
}

/// An IPv4 network whose prefix is a whole number of octets, as a prefix match.
fn cidr(f: &Field, network: &str) -> Result<String, String> {
    let unsupported = || {
        format!(
            "cidr {network}: only IPv4 networks on an octet boundary (/8, /16, /24, /32) are converted"
        )
    };
    let (address, bits) = network.split_once('/').ok_or_else(unsupported)?;
    let ip: std::net::Ipv4Addr = address.parse().map_err(|_| unsupported())?;
    let bits: usize = bits.parse().map_err(|_| unsupported())?;
    if !bits.is_multiple_of(8) || bits > 32 {
        return Err(unsupported());
    }
    let octets: Vec<String> = ip.octets()[..bits / 8].iter().map(u8::to_string).collect();
    Ok(match bits {
        0 => format!("{} IS NOT NULL", f.sql),
        32 => format!("{} = {}", f.sql, literal(&ip.to_string())),
        _ => format!(
            "{} LIKE {}",
            f.sql,
            literal(&format!("{}.%", octets.join(".")))
        ),
    })
}

/// A search's `field|modifiers: value(s)` entry as SQL.
pub fn entry(source: &Source, key: &str, value: &Value) -> Result<String, String> {
    let mut parts = key.split('|');
    let name = parts.next().unwrap_or_default();
    let list: Vec<&str> = parts.collect();
    let m = modifiers(&list)?;
    let f = field(source, name)?;
    if f.attribute == "user.hash" && !value.is_null() && !m.exists {
        return Err(format!(
            "field {name}: login names are hashed by the shop (user.hash), so a rule can count \
             or group by account but cannot name one"
        ));
    }
    let values: Vec<&Value> = match value {
        Value::Sequence(items) => items.iter().collect(),
        v => vec![v],
    };
    if values.is_empty() {
        return Err(format!("field {name}: an empty list matches nothing"));
    }
    let each = values
        .iter()
        .map(|v| matches(&f, &m, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(join(each, if m.all { "AND" } else { "OR" }))
}

/// Terms joined by `op`, parenthesised when there are several.
pub fn join(mut terms: Vec<String>, op: &str) -> String {
    if terms.len() == 1 {
        terms.remove(0)
    } else {
        format!("({})", terms.join(&format!(" {op} ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Source {
        source(Some(&serde_yaml::from_str("category: webserver").unwrap())).unwrap()
    }

    fn sql(key: &str, value: &str) -> Result<String, String> {
        entry(&web(), key, &serde_yaml::from_str(value).unwrap())
    }

    /// (field with modifiers, YAML value, the SQL it must become)
    const CONVERTED: &[(&str, &str, &str)] = &[
        // Sigma matches text without regard to case; lists are any of their values
        (
            "cs-uri-stem|contains",
            "'/wp-admin'",
            r"url_path ILIKE '%/wp-admin%' ESCAPE '\'",
        ),
        (
            "cs-user-agent",
            "['*sqlmap*', 'Nikto*']",
            r"(user_agent_original ILIKE '%sqlmap%' ESCAPE '\' OR user_agent_original ILIKE 'Nikto%' ESCAPE '\')",
        ),
        // SQL's wildcards are literal in Sigma, and so is Sigma's escaped star
        ("cs-uri-stem|cased", r"'/a_b%\*'", "url_path = '/a_b%*'"),
        (
            "cs-uri-stem|cased|startswith",
            r"'/a_b%\*'",
            r"url_path LIKE '/a\_b\%*%' ESCAPE '\'",
        ),
        ("cs-uri-stem|cased", "'/exact'", "url_path = '/exact'"),
        (
            "cs-method",
            "\"it's\"",
            r"http_request_method ILIKE 'it''s' ESCAPE '\'",
        ),
        // numbers compare as numbers on numeric columns, as text when matched as text
        (
            "sc-status",
            "[401, 403]",
            "(http_response_status_code = 401 OR http_response_status_code = 403)",
        ),
        ("sc-status|gte", "500", "http_response_status_code >= 500"),
        (
            "sc-status|startswith",
            "'5'",
            r"CAST(http_response_status_code AS VARCHAR) ILIKE '5%' ESCAPE '\'",
        ),
        ("c-ip|cidr", "'10.1.0.0/16'", "client_address LIKE '10.1.%'"),
        (
            "cs-user-agent|re|i",
            "'^curl/'",
            "regexp_like(user_agent_original, '(?i)^curl/')",
        ),
        (
            "cs-user-agent|all|contains",
            "[a, b]",
            r"(user_agent_original ILIKE '%a%' ESCAPE '\' AND user_agent_original ILIKE '%b%' ESCAPE '\')",
        ),
        ("session.id|exists", "false", "session_id IS NULL"),
        // an attribute the table does not promote is read from the map
        (
            "db.query.text",
            "'SELECT 1'",
            r"attributes['db.query.text'] ILIKE 'SELECT 1' ESCAPE '\'",
        ),
    ];

    /// (field with modifiers, YAML value, words the refusal must hold)
    const REFUSED: &[(&str, &str, &str)] = &[
        ("c-ip|cidr", "'10.1.0.0/12'", "octet"),
        ("cs-uri-query", "x", "never recorded"),
        ("Image", "x", "no column"),
        ("cs-uri|base64", "x", "base64"),
        ("cs-uri|re|m", "x", "multi-line"),
        ("sc-status|gt", "many", "not a number"),
    ];

    #[test]
    fn fields_values_and_modifiers_become_sql() {
        for (key, value, want) in CONVERTED {
            assert_eq!(sql(key, value).as_deref(), Ok(*want), "{key}: {value}");
        }
        for (key, value, words) in REFUSED {
            let err = sql(key, value).expect_err(key);
            assert!(err.contains(words), "{key}: {err}");
        }
    }

    #[test]
    fn account_names_cannot_be_named() {
        let auth = source(Some(
            &serde_yaml::from_str("category: authentication").unwrap(),
        ))
        .unwrap();
        let err = entry(&auth, "TargetUserName", &Value::String("admin".into())).unwrap_err();
        assert!(err.contains("hashed"), "{err}");
        assert_eq!(
            entry(&auth, "event.outcome", &Value::String("failure".into())).unwrap(),
            "shop_auth_outcome ILIKE 'failure' ESCAPE '\\'"
        );
    }

    #[test]
    fn unknown_log_sources_are_refused_with_what_is_converted() {
        let err = source(Some(
            &serde_yaml::from_str("category: process_creation\nproduct: windows").unwrap(),
        ))
        .unwrap_err();
        assert!(
            err.contains("process_creation") && err.contains("webserver"),
            "{err}"
        );
    }
}
