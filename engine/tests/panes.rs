//! Per-slide partial aggregates change how hopping windows are computed, never
//! what they give: the whole pack (alerts and KPIs) over the demo recording,
//! which holds every scenario, gives the same output with panes on and off.

use std::path::{Path, PathBuf};

use engine::drive::replay::{Speed, replay};
use engine::evaluator::{Evaluator, Output};
use engine::rules::{RuleSet, Which};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn outputs(panes: bool) -> Vec<String> {
    let mut set = RuleSet::load(&root().join("rules"), Which::All)
        .await
        .expect("the pack loads");
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    set.set_panes(panes);
    let mut ev = Evaluator::new(set, 5_000_000_000);
    let mut lines = Vec::new();
    replay(
        &[root().join("rules/captures/demo.jsonl.zst")],
        &mut ev,
        Speed::Max,
        |out| {
            for o in out {
                lines.push(match o {
                    Output::Alert(a) => serde_json::to_string(a)?,
                    Output::Kpi(k) => serde_json::to_string(k)?,
                });
            }
            Ok(())
        },
    )
    .await
    .expect("the replay runs");
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn panes_give_the_same_alerts_and_kpis() {
    let plain = outputs(false).await;
    let panes = outputs(true).await;
    let alerts = plain.iter().filter(|l| l.contains("\"rule_id\"")).count();
    assert!(alerts >= 10, "the demo raised only {alerts} alerts");
    assert!(plain.len() > alerts, "no KPI values");
    for (i, (a, b)) in plain.iter().zip(&panes).enumerate() {
        assert_eq!(a, b, "output {i} differs");
    }
    assert_eq!(plain.len(), panes.len());
}
