//! The rule pack as the dashboards see it: the TOML header of every rule and
//! KPI file in `rules/` (the format is in `docs/rules.md`). Only the fields a
//! dashboard shows are read; the engine checks the rest.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A header that could not be read, with the file it is in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Header { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
struct Header {
    id: Option<String>,
    kpi: Option<String>,
    title: Option<String>,
    description: Option<String>,
    severity: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    window: Option<String>,
    slide: Option<String>,
    #[serde(default)]
    dimensions: Vec<String>,
    #[serde(default)]
    values: Vec<String>,
    runbook: Option<String>,
    enabled: Option<bool>,
}

/// A detection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub severity: String,
    pub tags: Vec<String>,
    pub runbook: Option<String>,
    pub enabled: bool,
}

/// One figure of a KPI file: a KPI with several `values` gives one per value,
/// named `kpi.column` as the engine names them.
#[derive(Debug, Clone, PartialEq)]
pub struct Kpi {
    /// the name the engine gives the values (`orders`, `http.p95_ms`)
    pub name: String,
    /// the file's `kpi`
    pub file_kpi: String,
    pub title: String,
    pub description: String,
    /// dimension attributes by the contract's names (`shop.order.currency`)
    pub dimensions: Vec<String>,
    pub window: String,
    pub slide: Option<String>,
}

/// The rules and KPIs of a pack, in path order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pack {
    pub rules: Vec<Rule>,
    pub kpis: Vec<Kpi>,
}

impl Pack {
    /// Reads every `.sql` file under `dir` (folders in name order).
    pub fn load(dir: &Path) -> Result<Pack, Error> {
        let mut files = Vec::new();
        sql_files(dir, &mut files)?;
        files.sort();
        let mut pack = Pack::default();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            pack.add(&path, &text)?;
        }
        Ok(pack)
    }

    fn add(&mut self, path: &Path, text: &str) -> Result<(), Error> {
        let bad = |message: String| Error::Header {
            path: path.to_path_buf(),
            message,
        };
        let body = text
            .trim_start()
            .strip_prefix("/*")
            .and_then(|rest| rest.split_once("*/"))
            .map(|(header, _)| header)
            .ok_or_else(|| bad("no /* TOML header */ at the top of the file".into()))?;
        let h: Header =
            toml::from_str(body).map_err(|e| bad(format!("the header is not TOML: {e}")))?;
        if h.enabled == Some(false) {
            return Ok(());
        }
        let title = h.title.clone().unwrap_or_default();
        match (h.id, h.kpi) {
            (Some(id), None) => self.rules.push(Rule {
                title: if title.is_empty() { id.clone() } else { title },
                id,
                severity: h.severity.unwrap_or_else(|| "medium".into()),
                tags: h.tags,
                runbook: h.runbook,
                enabled: true,
            }),
            (None, Some(kpi)) => {
                let window = h
                    .window
                    .ok_or_else(|| bad(format!("KPI {kpi} has no window")))?;
                let names: Vec<String> = if h.values.len() > 1 {
                    h.values.iter().map(|v| format!("{kpi}.{v}")).collect()
                } else {
                    vec![kpi.clone()]
                };
                for name in names {
                    self.kpis.push(Kpi {
                        name,
                        file_kpi: kpi.clone(),
                        title: title.clone(),
                        description: h.description.clone().unwrap_or_default(),
                        dimensions: h.dimensions.clone(),
                        window: window.clone(),
                        slide: h.slide.clone(),
                    });
                }
            }
            _ => return Err(bad("a header has either `id` (a rule) or `kpi`".into())),
        }
        Ok(())
    }
}

fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.is_dir() {
            sql_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kpi_with_several_values_gives_one_figure_per_value() {
        let mut pack = Pack::default();
        pack.add(
            Path::new("x.sql"),
            "/*\nkpi = \"http\"\nwindow = \"1m\"\ndimensions = [\"http.route\"]\nvalues = [\"a\", \"b\"]\n*/\nSELECT 1",
        )
        .expect("parses");
        let names: Vec<&str> = pack.kpis.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["http.a", "http.b"]);
    }

    #[test]
    fn a_file_without_header_names_itself() {
        let e = Pack::default()
            .add(Path::new("rules/x.sql"), "SELECT 1")
            .expect_err("no header");
        assert!(e.to_string().starts_with("rules/x.sql: no /*"), "{e}");
    }
}
