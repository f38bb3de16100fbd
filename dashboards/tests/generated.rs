//! The committed dashboards are what the generator makes from the rule pack,
//! and every one passes Grafana's own schema, strictly.

use std::path::{Path, PathBuf};
use std::process::Command;

use dashboards::pack::Pack;

fn pack() -> Pack {
    let dir = dashboards::repo_dir().join("rules");
    Pack::load(&dir).unwrap_or_else(|e| panic!("reading the rule pack in {}: {e}", dir.display()))
}

#[test]
fn committed_dashboards_are_what_the_generator_makes() {
    let out = dashboards::output_dir();
    let rendered = dashboards::render(&pack());
    let mut stale = Vec::new();
    for (file, text) in &rendered {
        let path = out.join(file);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == *text => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    let made: Vec<&str> = rendered.iter().map(|(f, _)| *f).collect();
    for entry in std::fs::read_dir(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display())) {
        let name = entry.expect("a folder entry").file_name();
        let name = name.to_string_lossy();
        if !made.contains(&name.as_ref()) {
            stale.push(format!(
                "{} is not generated any more",
                out.join(&*name).display()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "the committed dashboards are stale; run `cargo run -p dashboards` and commit:\n{}",
        stale.join("\n")
    );
}

#[test]
fn generating_twice_gives_the_same_bytes() {
    let p = pack();
    assert_eq!(dashboards::render(&p), dashboards::render(&p));
}

#[test]
fn every_kpi_and_rule_of_the_pack_is_on_a_dashboard() {
    let p = pack();
    let all: String = dashboards::render(&p).into_iter().map(|(_, t)| t).collect();
    for k in &p.kpis {
        assert!(
            all.contains(&format!("kpi = '{}'", k.name)),
            "no panel for KPI {}",
            k.name
        );
    }
    for r in &p.rules {
        assert!(
            all.contains(&format!("`{}`", r.id)),
            "rule {} is not listed",
            r.id
        );
    }
}

/// Builds the Go checker (dashboards/schema-check) into ~/.cache/otelguard/.
fn schema_checker() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema-check");
    let home = std::env::var_os("HOME").expect("HOME is set");
    let bin = Path::new(&home).join(".cache/otelguard/schema-check/schema-check");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `go build` in {} (is Go installed?): {e}",
                src.display()
            )
        });
    assert!(
        out.status.success(),
        "go build in {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

#[test]
fn every_dashboard_passes_grafanas_schema_strictly() {
    let checker = schema_checker();
    let dir = dashboards::output_dir();
    let out = Command::new(&checker)
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", checker.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schema-check failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = std::fs::read_dir(&dir)
        .expect("the dashboards folder")
        .count();
    assert!(
        text.contains(&format!(
            "schema-check: {files} dashboards valid, 0 invalid"
        )),
        "{text}"
    );
}

/// The checker is strict: an unknown field fails it.
#[test]
fn the_schema_check_refuses_an_unknown_field() {
    let checker = schema_checker();
    let good = dashboards::output_dir().join("business.json");
    let text = std::fs::read_to_string(&good).expect("business.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    v["panels"][1]["options"]["no_such_option"] = serde_json::json!(1);
    let bad = std::env::temp_dir().join(format!(
        "otelguard-bad-dashboard-{}.json",
        std::process::id()
    ));
    std::fs::write(&bad, v.to_string()).expect("writing a temporary file");
    let out = Command::new(&checker)
        .arg(&bad)
        .output()
        .expect("running the checker");
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unexpected field 'no_such_option'"));
}
