//! Sigma rules converted by `engine rules import-sigma` run as rules of the
//! pack: the fixtures in tests/sigma/ (written in the style of public Sigma
//! rules for web servers and authentication) convert, plan against the
//! schema, fire on the recorded attacks they describe and stay silent on
//! ordinary traffic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;

use common::root;

/// The fixtures converted into a fresh folder.
fn converted() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "otelguard-sigma-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp folder");
    let fixtures = root().join("engine/tests/sigma");
    let mut inputs: Vec<(String, String)> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("fixture");
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    inputs.sort();
    let report = engine::sigma::convert(&inputs);
    // The not-convertible fixture holds four rules that cannot be; every other rule converts.
    assert_eq!(report.skipped.len(), 4, "{:#?}", report.skipped);
    assert!(
        report
            .skipped
            .iter()
            .all(|s| s.origin.starts_with("not_convertible.yml")),
        "{:#?}",
        report.skipped
    );
    assert_eq!(report.converted.len(), 6, "{:#?}", report.converted);
    for rule in &report.converted {
        std::fs::write(dir.join(&rule.file_name), &rule.text).expect("write rule");
    }
    dir
}

/// Alerts per rule id from replaying `capture` through the converted rules,
/// with the entities they name.
async fn alerts(dir: &Path, capture: &str) -> BTreeMap<String, Vec<String>> {
    let mut fired: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in common::firing(dir, capture).await {
        fired
            .entry(v["rule_id"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(v["entity"].to_string());
    }
    fired
}

/// The values of one indicator of a capture's first scenario, from its truth file.
fn truth_indicators(capture: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(
        root()
            .join("rules/captures")
            .join(capture.replace(".jsonl.zst", ".truth.json")),
    )
    .expect("truth");
    let v: serde_json::Value = serde_json::from_str(&text).expect("truth JSON");
    let values: Vec<String> = v["scenarios"][0]["indicators"][key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    assert!(!values.is_empty(), "no {key} in the truth of {capture}");
    values
}

/// `rule` fires on `capture`, and only about the attackers its truth names by `key`.
async fn caught(dir: &Path, capture: &str, rule: &str, key: &str, every: bool) {
    let fired = alerts(dir, capture).await;
    let attackers = truth_indicators(capture, key);
    let hits = fired
        .get(rule)
        .unwrap_or_else(|| panic!("{rule} did not fire on {capture}: {fired:?}"));
    let named = |e: &String| attackers.iter().any(|a| e.contains(a));
    let ok = match every {
        true => hits.iter().all(named),
        false => hits.iter().any(named),
    };
    assert!(ok, "{rule} on {capture}: {hits:?}, attackers {attackers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn converted_sigma_rules_catch_the_attacks_they_describe() {
    let dir = converted();
    caught(
        &dir,
        "brute_force.jsonl.zst",
        "sigma.brute_force_one_account",
        "user.hash",
        true,
    )
    .await;
    caught(
        &dir,
        "http_flood.jsonl.zst",
        "sigma.http_flood_one_address",
        "client.address",
        true,
    )
    .await;
    caught(
        &dir,
        "password_spraying.jsonl.zst",
        "sigma.password_spraying_one_address",
        "client.address",
        true,
    )
    .await;
    // Shoppers who mistype and then succeed match too (see its false positives):
    // the takeover's victim must be among those it names.
    caught(
        &dir,
        "account_takeover.jsonl.zst",
        "sigma.login_after_failures",
        "user.hash",
        false,
    )
    .await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn converted_sigma_rules_stay_silent_on_ordinary_traffic() {
    let dir = converted();
    let quiet = alerts(&dir, "baseline.jsonl.zst").await;
    // Shoppers who mistype a password and then get it right are exactly what
    // the ordered correlation describes (its false positives say so): every
    // other converted rule must stay silent.
    let loud: Vec<_> = quiet
        .keys()
        .filter(|id| *id != "sigma.login_after_failures")
        .collect();
    assert!(loud.is_empty(), "{quiet:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_writes_plans_and_counts_what_it_could_not_convert() {
    let out = std::env::temp_dir().join(format!("otelguard-sigma-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let fixtures = root().join("engine/tests/sigma");
    let problems = engine::cli::sigma::import(std::slice::from_ref(&fixtures), &out, false)
        .await
        .expect("the import runs");
    assert_eq!(problems, 4, "the four rules of not_convertible.yml");
    let written = std::fs::read_dir(&out).expect("out").count();
    assert_eq!(written, 6);
    // Again: the same text, nothing to overwrite.
    engine::cli::sigma::import(std::slice::from_ref(&fixtures), &out, false)
        .await
        .expect("a second import of the same rules");
    // An edited rule file is not overwritten without --force.
    let edited = out.join("brute_force_one_account.sql");
    std::fs::write(&edited, "-- edited by hand\n").expect("edit");
    let err = engine::cli::sigma::import(std::slice::from_ref(&fixtures), &out, false)
        .await
        .expect_err("an edited file is kept");
    assert!(err.to_string().contains("--force"), "{err}");
    engine::cli::sigma::import(std::slice::from_ref(&fixtures), &out, true)
        .await
        .expect("--force overwrites");
    assert!(
        std::fs::read_to_string(&edited)
            .unwrap()
            .contains("sigma.brute_force_one_account")
    );
    std::fs::remove_dir_all(&out).ok();
}
