//! `shop-sim`: records a deterministic capture of simulated shop telemetry,
//! with its ground truth.
//!
//! ```text
//! shop-sim --seed 7 --rate 8 --duration 12m --scenario brute_force --out rules/captures/brute_force.jsonl.zst
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use shop_sim::{self as sim, Config, parse_duration, scenario};

/// Simulate the shop's telemetry (OTLP/JSON lines, Collector file-exporter
/// format) with benign shoppers and injected attack or look-alike scenarios.
#[derive(Debug, Parser)]
#[command(name = "shop-sim", version)]
struct Args {
    /// Seed of every random choice: the same seed and arguments give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Benign requests per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Event time covered, e.g. 10m, 90s, 1h.
    #[arg(long, default_value = "10m")]
    duration: String,
    /// Start of event time, RFC 3339.
    #[arg(long, default_value = "2026-01-15T10:00:00Z")]
    start: String,
    /// Capture file: `.jsonl.zst` (zstd, whole file) or `.jsonl` (plain).
    #[arg(long, default_value = "capture.jsonl.zst")]
    out: PathBuf,
    /// Scenario to inject, optionally with its start offset: `brute_force` or
    /// `brute_force@5m`. Repeatable.
    #[arg(long = "scenario", value_name = "NAME[@OFFSET]")]
    scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list_scenarios: bool,
    /// Ground-truth file; default: beside the capture, `NAME.truth.json`.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// zstd level.
    #[arg(long, default_value_t = 19)]
    level: i32,
}

fn truth_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("capture");
    let stem = [".jsonl.zst", ".jsonl.gz", ".jsonl", ".json", ".zst"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name);
    out.with_file_name(format!("{stem}.truth.json"))
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.list_scenarios {
        print!("{}", scenario::listing());
        return Ok(());
    }
    let start = chrono::DateTime::parse_from_rfc3339(&args.start).with_context(|| {
        format!(
            "--start {:?} is not an RFC 3339 time, e.g. 2026-01-15T10:00:00Z",
            args.start
        )
    })?;
    let start = start
        .timestamp_nanos_opt()
        .context("--start is out of range")?;
    let duration = parse_duration(&args.duration).context("--duration")?;
    if duration <= 0 {
        bail!("--duration must be positive");
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a non-negative number of requests per second");
    }
    let mut scenarios = Vec::new();
    for s in &args.scenarios {
        match s.split_once('@') {
            Some((name, offset)) => {
                let o = parse_duration(offset)
                    .with_context(|| format!("--scenario {s:?}: bad offset"))?;
                scenarios.push((name.to_string(), Some(o)));
            }
            None => scenarios.push((s.clone(), None)),
        }
    }
    let cfg = Config {
        seed: args.seed,
        rate: args.rate,
        start,
        duration,
        scenarios,
    };

    let file =
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let name = args.out.to_string_lossy();
    let compress = !(name.ends_with(".jsonl") || name.ends_with(".json"));
    let run = if compress {
        let mut enc = zstd::stream::Encoder::new(BufWriter::new(file), args.level)?;
        enc.include_checksum(true)?;
        enc.long_distance_matching(true)?;
        let (enc, run) = sim::generate(&cfg, enc)?;
        enc.finish()?.flush()?;
        run
    } else {
        let (mut w, run) = sim::generate(&cfg, BufWriter::new(file))?;
        w.flush()?;
        run
    };
    let mut truth = run.truth;
    truth.capture = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let truth_file = args.truth.clone().unwrap_or_else(|| truth_path(&args.out));
    let text = serde_json::to_string_pretty(&truth)? + "\n";
    std::fs::write(&truth_file, text)
        .with_context(|| format!("cannot write {}", truth_file.display()))?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    let c = run.counts;
    eprintln!(
        "{}: {} requests, {} spans, {} log records, {} metric points in {} lines, {:.0} KiB; truth {}",
        args.out.display(),
        c.requests,
        c.spans,
        c.log_records,
        c.metric_points,
        c.lines,
        size as f64 / 1024.0,
        truth_file.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shop-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_sim::request::SECOND;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").ok(), Some(90 * SECOND));
        assert_eq!(parse_duration("1h30m").ok(), Some(5400 * SECOND));
        assert_eq!(parse_duration("12").ok(), Some(12 * SECOND));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn truth_sits_beside_the_capture() {
        assert_eq!(
            truth_path(Path::new("a/b/x.jsonl.zst")),
            PathBuf::from("a/b/x.truth.json")
        );
        assert_eq!(
            truth_path(Path::new("x.jsonl")),
            PathBuf::from("x.truth.json")
        );
    }
}
