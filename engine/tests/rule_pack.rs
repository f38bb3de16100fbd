//! The rule pack's own fixtures: every case of `rules/` must pass, and every
//! file must plan. The judge and the loader are library code
//! (`engine::drive::judge`), called here without spawning the binary; the
//! command itself (`engine rules test` printing and exiting with the count)
//! is checked once, on a folder of its own, in `cli.rs`.

use std::path::{Path, PathBuf};

use engine::drive::judge;
use engine::rules::{RuleSet, Which};

/// `rules test`'s default lateness (`--lateness 5s`).
const LATENESS_NS: i64 = 5_000_000_000;

fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

#[tokio::test]
async fn every_rule_file_plans() {
    let set = RuleSet::load(&pack(), Which::All)
        .await
        .expect("the rules folder reads");
    let errors: Vec<String> = set.errors.iter().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(
        set.rules.iter().any(|r| !r.def.is_kpi()) && set.rules.iter().any(|r| r.def.is_kpi()),
        "the pack holds both rules and KPIs"
    );
}

#[tokio::test]
async fn the_rule_pack_passes_its_fixtures() {
    let verdicts = judge::verdicts(&pack(), LATENESS_NS)
        .await
        .expect("every test file, truth and capture reads");
    let failing: Vec<String> = verdicts
        .outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| {
            format!(
                "{} :: {}\n       {}",
                o.rule,
                o.case,
                o.problems.join("\n       ")
            )
        })
        .collect();
    for o in &verdicts.outcomes {
        println!(
            "{:<40} {:<45} detected {:?} delay {:?} s, {} false",
            o.rule, o.case, o.detected, o.delay_s, o.false_incidents
        );
    }
    assert!(failing.is_empty(), "{}", failing.join("\n"));
    // every case that expects an attack found it: nothing passed vacuously
    assert!(!verdicts.outcomes.is_empty());
    assert!(
        verdicts
            .outcomes
            .iter()
            .all(|o| o.detected != Some(false) && o.problems.is_empty())
    );
    assert_eq!(verdicts.failed(), 0);
    // each capture's alerts, from all rules, folded into incidents as the
    // sinks fold them: at most five per attack, none for a look-alike
    for f in &verdicts.folded {
        println!(
            "{:<50} {:<30} {:<7} {} alerts, {} incidents",
            f.capture,
            f.scenario,
            f.class,
            f.alerts,
            f.incidents.len()
        );
    }
    let attacks: Vec<&judge::Folded> = verdicts
        .folded
        .iter()
        .filter(|f| f.class == "attack")
        .collect();
    assert!(
        attacks.len() >= 20,
        "the attacks of the captures: {attacks:?}"
    );
    for f in attacks {
        assert!(
            f.incidents.len() <= 5,
            "{} {}: {} alerts in {} incidents; at most 5",
            f.capture,
            f.scenario,
            f.alerts,
            f.incidents.len()
        );
    }
    for f in verdicts.folded.iter().filter(|f| f.class == "benign") {
        assert!(
            f.incidents.is_empty(),
            "{}: the look-alike {} opened {} incidents ({} alerts)",
            f.capture,
            f.scenario,
            f.incidents.len(),
            f.alerts
        );
    }
}
