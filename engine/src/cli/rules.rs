//! `rules check`; `rules test` is the library's fixture judge
//! ([`crate::drive::judge::test`]).

use std::path::Path;

use crate::rules::{Growth, Kind, RuleSet, Which};

/// `rules check`: parse and plan every rule; print each problem with its place.
/// Returns the number of problems.
pub async fn check(dir: &Path) -> anyhow::Result<usize> {
    let set = RuleSet::load(dir, Which::All).await?;
    for e in &set.errors {
        eprintln!("error: {e}");
    }
    // when each rule fires: before its window closes, or at the close
    for r in set.rules.iter().filter(|r| !r.def.is_kpi()) {
        let when = match (&r.growth, &r.def.kind) {
            (Growth::Monotone, Kind::Alert { for_windows, .. }) if *for_windows > 1 => format!(
                "at close: monotone, but `for = {for_windows}` waits for {for_windows} windows"
            ),
            (growth, _) => growth.to_string(),
        };
        println!("{:<40} {when}", r.def.id);
    }
    let alerts = set.rules.iter().filter(|r| !r.def.is_kpi()).count();
    println!(
        "{} rules and {} KPIs plan against the schema; {} files with errors",
        alerts,
        set.rules.len() - alerts,
        set.errors.len()
    );
    Ok(set.errors.len())
}
