//! What the tests of rules written outside the pack share: replaying a
//! recorded capture through the rules of a folder.

use std::path::{Path, PathBuf};

use engine::drive::replay::{Speed, replay};
use engine::evaluator::{Evaluator, Output};
use engine::rules::{RuleSet, Which};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The firing alerts (as their JSON) of the rules in `dir` on
/// `rules/captures/CAPTURE`; every rule must load.
pub async fn firing(dir: &Path, capture: &str) -> Vec<serde_json::Value> {
    let set = RuleSet::load(dir, Which::Alerts)
        .await
        .expect("the rules load");
    assert!(set.errors.is_empty(), "{:#?}", set.errors);
    let mut ev = Evaluator::new(set, 5_000_000_000);
    let mut fired = Vec::new();
    replay(
        &[root().join("rules/captures").join(capture)],
        &mut ev,
        Speed::Max,
        |out| {
            for o in out {
                if let Output::Alert(a) = o {
                    let v = serde_json::to_value(a)?;
                    if v["state"] == "firing" {
                        fired.push(v);
                    }
                }
            }
            Ok(())
        },
    )
    .await
    .expect("the replay runs");
    fired
}
