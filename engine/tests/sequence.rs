//! `sequence_steps` in a rule: "three failed logins, then a success, on one
//! account" written as a sequence catches the recorded account takeover as the
//! pack's self-join rule does, and stays silent on customers who mistype.

mod common;

use common::root;
use engine::rules::{RuleSet, Which};

const RULE: &str = r#"/*
id = "test.takeover_sequence"
title = "Three failures, then a success"
severity = "high"
window = "10m"
slide = "15s"
entity = ["user.hash"]
value = "steps"
summary = "account {user.hash}: failures then a success"
*/
SELECT window_start, window_end, user_hash,
       sequence_steps(time,
                      shop_auth_outcome = 'failure',
                      shop_auth_outcome = 'failure',
                      shop_auth_outcome = 'failure',
                      shop_auth_outcome = 'success') AS steps,
       trace_sample(trace_id) AS trace_ids
FROM events
WHERE event_name = 'shop.auth.login' AND user_hash IS NOT NULL
GROUP BY window_start, window_end, user_hash
HAVING sequence_steps(time,
                      shop_auth_outcome = 'failure',
                      shop_auth_outcome = 'failure',
                      shop_auth_outcome = 'failure',
                      shop_auth_outcome = 'success') = 4
"#;

/// The accounts the rule fired on, replaying `capture`.
async fn fired(capture: &str) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!(
        "otelguard-sequence-{}-{capture}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp folder");
    std::fs::write(dir.join("takeover_sequence.sql"), RULE).expect("rule");
    let accounts = common::firing(&dir, capture)
        .await
        .iter()
        .map(|v| v["entity"]["user.hash"].as_str().unwrap_or("").to_string())
        .collect();
    std::fs::remove_dir_all(&dir).ok();
    accounts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sequence_rule_catches_the_takeover_and_not_the_typos() {
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("rules/captures/account_takeover.truth.json"))
            .expect("truth"),
    )
    .expect("truth JSON");
    let victim = truth["scenarios"][0]["indicators"]["user.hash"][0]
        .as_str()
        .expect("the victim");
    let accounts = fired("account_takeover.jsonl.zst").await;
    assert_eq!(accounts, [victim], "fired on {accounts:?}");
    let typos = fired("password_typos.jsonl.zst").await;
    assert!(
        typos.is_empty(),
        "fired on customers who mistype: {typos:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misused_sequence_is_a_planning_error_naming_the_step() {
    let dir = std::env::temp_dir().join(format!("otelguard-sequence-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp folder");
    let bad = RULE.replace(
        "shop_auth_outcome = 'success') = 4",
        "shop_auth_outcome) = 4",
    );
    std::fs::write(dir.join("bad.sql"), bad).expect("rule");
    let set = RuleSet::load(&dir, Which::Alerts)
        .await
        .expect("the folder loads");
    std::fs::remove_dir_all(&dir).ok();
    let errors: Vec<String> = set.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("sequence_steps") && errors[0].contains("step 4"),
        "{errors:?}"
    );
}
