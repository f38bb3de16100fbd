//! `engine rules import-sigma FILE.yml… --out DIR`: Sigma rules into rule
//! files of this pack (the conversion is `crate::sigma`), each one planned
//! against the schema before the command says it is done.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::rules::{RuleSet, Which};
use crate::sigma;

/// The `.yml` and `.yaml` files of `paths` (folders are searched), sorted.
fn inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir)
                    .with_context(|| format!("reading the folder {}", dir.display()))?
                {
                    let path = entry?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                        files.push(path);
                    }
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no Sigma rules (.yml, .yaml) in {paths:?}");
    }
    Ok(files)
}

/// Converts, writes and plans. Returns how many rules were not converted or
/// do not plan (0: everything converted and checked).
pub async fn import(paths: &[PathBuf], out: &Path, force: bool) -> anyhow::Result<usize> {
    let mut texts = Vec::new();
    for file in inputs(paths)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the Sigma rule {}", file.display()))?;
        texts.push((file.display().to_string(), text));
    }
    let report = sigma::convert(&texts);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for rule in &report.converted {
        let path = out.join(&rule.file_name);
        if !force && path.exists() && std::fs::read_to_string(&path)? != rule.text {
            bail!(
                "{} exists and differs from the conversion of {}: pass --force to overwrite it",
                path.display(),
                rule.origin
            );
        }
    }
    for rule in &report.converted {
        let path = out.join(&rule.file_name);
        std::fs::write(&path, &rule.text).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "converted  {}  ({})  from {}",
            path.display(),
            rule.id,
            rule.origin
        );
    }
    for s in &report.skipped {
        println!("skipped    {}: {}", s.origin, s.reason);
    }
    // The written rules must plan like any other rule of a pack.
    let set = RuleSet::load(out, Which::Alerts)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let written: Vec<PathBuf> = report
        .converted
        .iter()
        .map(|r| out.join(&r.file_name))
        .collect();
    let broken: Vec<_> = set
        .errors
        .iter()
        .filter(|e| written.contains(&e.location.file))
        .collect();
    for e in &broken {
        eprintln!("error: {e}");
    }
    println!(
        "{} Sigma rules converted into {} ({} of them do not plan), {} not converted",
        report.converted.len(),
        out.display(),
        broken.len(),
        report.skipped.len()
    );
    Ok(report.skipped.len() + broken.len())
}
