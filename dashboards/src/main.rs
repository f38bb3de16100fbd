//! `cargo run -p dashboards [RULES_DIR [OUT_DIR]]`: regenerates the Grafana
//! dashboards from the rule pack (default: the repository's `rules/` into
//! `dashboards/grafana/`). The same pack gives the same bytes.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let rules = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| dashboards::repo_dir().join("rules"));
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(dashboards::output_dir);
    let pack = match dashboards::pack::Pack::load(&rules) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: reading the rule pack: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    for (file, text) in dashboards::render(&pack) {
        let path = out.join(file);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
