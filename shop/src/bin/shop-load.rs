//! `shop-load`: genuine shoppers plus attack or look-alike scenarios, sent as
//! real HTTP to the shop's gateway on 127.0.0.1, with the ground truth of what
//! was sent written at the end.
//!
//! ```text
//! shop-load --rate 6 --duration 4m --scenario brute_force@1m --truth brute_force.truth.json
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Parser;
use shop::load::{self, Config, client};
use shop::services::security::Keys;
use shop::sim::request::SECOND;
use shop::sim::{parse_duration, scenario};

/// Send genuine shoppers and attack or look-alike scenarios to the shop's
/// gateway (each simulated client's address in X-Forwarded-For), then write
/// the ground truth.
#[derive(Debug, Parser)]
#[command(name = "shop-load", version)]
struct Args {
    /// The gateway; only loopback addresses are accepted.
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    gateway: String,
    /// Genuine requests per second (0: the scenarios alone).
    #[arg(long, default_value_t = 6.0)]
    rate: f64,
    /// How long the run lasts, e.g. 90s, 4m (at most 1h).
    #[arg(long, default_value = "4m")]
    duration: String,
    /// Scenario to play, optionally with its start: `brute_force` or
    /// `brute_force@90s`. Repeatable.
    #[arg(long = "scenario", value_name = "NAME[@OFFSET]")]
    scenarios: Vec<String>,
    /// Ground-truth file to write at the end.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// The capture's file name to record in the truth (default: the truth
    /// file's name with `.jsonl.zst` for `.truth.json`).
    #[arg(long)]
    capture: Option<String>,
    /// Stop after this many requests, whatever the duration.
    #[arg(long, default_value_t = 200_000)]
    max_requests: u64,
    /// Seed of every choice in the plans.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// List the scenarios and exit.
    #[arg(long)]
    list_scenarios: bool,
}

/// A duration (`90s`, `4m`, `1h30m`) in seconds.
fn seconds(text: &str) -> anyhow::Result<f64> {
    Ok(parse_duration(text)? as f64 / SECOND as f64)
}

/// Whether `url` names a loopback host: load stays on this machine.
fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn capture_name(args: &Args) -> String {
    if let Some(c) = &args.capture {
        return c.clone();
    }
    let name = args
        .truth
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("capture.truth.json");
    let stem = name.strip_suffix(".truth.json").unwrap_or(name);
    format!("{stem}.jsonl.zst")
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.list_scenarios {
        print!("{}", scenario::listing());
        return Ok(());
    }
    if !is_loopback(&args.gateway) {
        bail!(
            "--gateway {} is not on loopback: shop-load only sends to 127.0.0.1, ::1 or localhost",
            args.gateway
        );
    }
    // The truth's indicators are hashed as the shop hashes them: with its
    // keys, read before anything is sent.
    let keys = match &args.truth {
        Some(_) => Some(Keys::from_env().context("--truth needs the shop's hashing keys")?),
        None => None,
    };
    let duration = seconds(&args.duration).context("--duration")?;
    if !(duration > 0.0 && duration <= 3600.0) {
        bail!("--duration must be between 1s and 1h");
    }
    if !(args.rate >= 0.0 && args.rate <= 200.0) {
        bail!("--rate must be between 0 and 200 requests per second");
    }
    let mut wanted = Vec::new();
    for s in &args.scenarios {
        match s.split_once('@') {
            Some((name, offset)) => {
                let o = seconds(offset).with_context(|| format!("--scenario {s:?}: bad offset"))?;
                wanted.push((name.to_string(), Some(o)));
            }
            None => wanted.push((s.clone(), None)),
        }
    }
    let cfg = Config {
        seed: args.seed,
        rate: args.rate,
        seconds: duration,
        scenarios: wanted,
        tag: Utc::now().timestamp_millis() as u64,
    };
    let plans = load::plans(&cfg)?;
    for p in &plans {
        eprintln!(
            "shop-load: {:<24} {:>6} requests from {} clients planned",
            p.name,
            p.steps.len(),
            p.actors.len()
        );
    }
    let http = client::http_client().context("building the HTTP client")?;
    client::check_gateway(&http, &args.gateway).await?;

    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    let started = Utc::now();
    // Steps at the end may still be waiting for an answer: give them the client's timeout.
    let runner = client::Runner::new(
        http,
        &args.gateway,
        plans.len(),
        duration,
        args.max_requests,
    );
    let progress = {
        let runner = runner.clone();
        let names = names.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                report(&runner, &names, "");
            }
        })
    };
    let work = runner.clone();
    let plans_sent = plans.clone();
    let sending = tokio::spawn(async move { work.run(plans_sent).await });
    tokio::select! {
        r = sending => r.context("the sending task failed")?,
        _ = tokio::signal::ctrl_c() => eprintln!("shop-load: interrupted; writing what was sent"),
    }
    progress.abort();
    let ended = Utc::now();
    report(&runner, &names, "done ");

    let tallies = runner.tallies();
    let sent: u64 = tallies.iter().map(client::Tally::sent).sum();
    let failed: u64 = tallies.iter().map(|t| t.failed).sum();
    if let (Some(path), Some(keys)) = (&args.truth, &keys) {
        let truth = load::truth(
            &cfg,
            keys,
            &capture_name(&args),
            &plans,
            &tallies,
            started,
            ended,
        );
        let text = serde_json::to_string_pretty(&truth)? + "\n";
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("shop-load: truth written to {}", path.display());
    }
    if sent > 0 && failed == sent {
        bail!(
            "none of the {sent} requests got an answer from {}: is the gateway still up?",
            args.gateway
        );
    }
    Ok(())
}

/// One progress line per plan on stderr.
fn report(runner: &client::Runner, names: &[String], prefix: &str) {
    let tallies = runner.tallies();
    let total: u64 = tallies.iter().map(client::Tally::sent).sum();
    eprintln!(
        "shop-load: {prefix}{:.0} s, {total} requests",
        runner.elapsed()
    );
    for (name, t) in names.iter().zip(&tallies) {
        let skipped = if t.skipped > 0 {
            format!(", {} skipped", t.skipped)
        } else {
            String::new()
        };
        eprintln!(
            "  {name:<24} {:>6} sent{skipped}: {}",
            t.sent(),
            t.statuses_line()
        );
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shop-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_seconds() {
        assert_eq!(seconds("90s").ok(), Some(90.0));
        assert_eq!(seconds("4m").ok(), Some(240.0));
        assert_eq!(seconds("12").ok(), Some(12.0));
        assert!(seconds("soon").is_err());
        assert!(seconds("-3s").is_err());
    }

    #[test]
    fn only_loopback_gateways() {
        assert!(is_loopback("http://127.0.0.1:18080"));
        assert!(is_loopback("http://localhost:18080/"));
        assert!(is_loopback("http://[::1]:18080"));
        assert!(!is_loopback("http://10.0.0.5:18080"));
        assert!(!is_loopback("https://shop.example.com"));
    }
}
