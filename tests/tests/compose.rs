//! The compose file tells the truth: the deployment users copy cannot run on
//! these machines (no Docker engine), so this test reads it and checks every
//! service against what the local stack runs and what the binaries accept.
//!
//! - the engine's command parses with the engine's own command line, reads
//!   the stack's Kafka, sends to its Alertmanager, keeps the Collector's OTLP
//!   ports free, and its image is built with the features that command needs;
//! - every shop service runs a command the `shop` binary has, against the
//!   stack's PostgreSQL, Redis and Collector;
//! - every file or folder of the repository that a service mounts exists;
//! - no two services listen on the same host port (all use the host network).
//!
//! Needs nothing running. Run: `cargo test -p e2e --test compose`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser as _;
use e2e::compose::{compose_dir, port_in, port_of, read, read_yaml, stack_ports};
use serde_yaml::Value;
use shop::services::{Listening as _, Service};

/// A service's `command` as a list of words.
fn command(name: &str, service: &Value) -> Result<Vec<String>> {
    service["command"]
        .as_sequence()
        .ok_or_else(|| anyhow!("docker-compose.yml: {name} has no command list"))?
        .iter()
        .map(|w| {
            w.as_str().map(str::to_owned).ok_or_else(|| {
                anyhow!("docker-compose.yml: {name}: a command word is not a string")
            })
        })
        .collect()
}

fn services() -> Result<serde_yaml::Mapping> {
    let mut compose = read_yaml(&compose_dir().join("docker-compose.yml"))?;
    // `<<: *shop-env`, as docker compose reads it
    compose
        .apply_merge()
        .context("docker-compose.yml: a `<<` merge key that does not apply")?;
    compose["services"]
        .as_mapping()
        .cloned()
        .ok_or_else(|| anyhow!("docker-compose.yml: no services"))
}

fn service<'a>(services: &'a serde_yaml::Mapping, name: &str) -> Result<&'a Value> {
    services
        .get(name)
        .ok_or_else(|| anyhow!("docker-compose.yml has no {name} service"))
}

#[test]
fn the_engine_service_runs_what_the_local_stack_runs() -> Result<()> {
    let ports = stack_ports()?;
    let services = services()?;
    let engine = service(&services, "engine")?;
    let words = command("engine", engine)?;
    let cli =
        engine::cli::Cli::try_parse_from(std::iter::once("engine".to_owned()).chain(words.clone()))
            .map_err(|e| {
                anyhow!("docker-compose.yml: the engine's command {words:?} does not parse: {e}")
            })?;
    let engine::cli::Command::Run(run) = cli.command else {
        bail!("docker-compose.yml: the engine service does not `run` (it runs {words:?})");
    };

    // It reads the Collector's topics from the stack's broker ...
    let brokers = run
        .kafka
        .as_deref()
        .ok_or_else(|| anyhow!("docker-compose.yml: the engine runs without --kafka, so it reads nothing the Collector sends"))?;
    let kafka_port = port_of(&ports, "kafka")?;
    for broker in brokers.split(',') {
        ensure!(
            port_in(broker)? == kafka_port,
            "docker-compose.yml: the engine's broker {broker} is not the stack's Kafka on {kafka_port}"
        );
    }
    // ... and is not a second OTLP receiver on the Collector's ports.
    for (flag, value) in [
        ("--otlp-grpc", &run.receiver.otlp_grpc),
        ("--otlp-http", &run.receiver.otlp_http),
    ] {
        if value != "off" {
            let port = port_in(value)?;
            let owner = ports.iter().find(|(_, p)| p.contains(&port));
            ensure!(
                owner.is_none(),
                "docker-compose.yml: the engine's {flag} {value} takes a port of {:?}",
                owner.map(|(c, _)| c)
            );
        }
    }
    // Alerts go to the stack's Alertmanager.
    let alertmanager = run
        .alertmanager
        .as_deref()
        .ok_or_else(|| anyhow!("docker-compose.yml: the engine runs without --alertmanager"))?;
    ensure!(
        port_in(alertmanager)? == port_of(&ports, "alertmanager")?,
        "docker-compose.yml: the engine sends alerts to {alertmanager}, not the stack's Alertmanager"
    );
    // Its API is where Prometheus scrapes it.
    let prometheus = read(&compose_dir().join("prometheus/prometheus.yml"))?;
    let listen = port_in(&run.api.listen)?;
    ensure!(
        prometheus.contains(&format!("127.0.0.1:{listen}")),
        "compose/prometheus/prometheus.yml does not scrape the engine's --listen {}",
        run.api.listen
    );

    // The image is built with the features the command needs.
    let dockerfile = read(&compose_dir().join("engine.Dockerfile"))?;
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .ok_or_else(|| anyhow!("compose/engine.Dockerfile has no `cargo build` line"))?;
    ensure!(
        build.contains("--features") && build.contains("kafka"),
        "compose/engine.Dockerfile builds the engine without the `kafka` feature, \
         but the compose file runs it with --kafka: {build}"
    );
    Ok(())
}

#[test]
fn every_shop_service_runs_a_shop_command_against_the_stack() -> Result<()> {
    let ports = stack_ports()?;
    let services = services()?;
    let mut served = Vec::new();
    for (name, svc) in &services {
        let name = name.as_str().unwrap_or_default();
        if !name.starts_with("shop") {
            continue;
        }
        let words = command(name, svc)?;
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["migrate"] => {}
            ["serve", which] => served.push(
                <Service as clap::ValueEnum>::from_str(which, false)
                    .map_err(|e| anyhow!("docker-compose.yml: {name} serves {which:?}: {e}"))?,
            ),
            _ => bail!("docker-compose.yml: {name} runs {words:?}, which the shop binary has not"),
        }
        let env = &svc["environment"];
        for (var, component) in [
            ("DATABASE_URL", "postgres"),
            ("REDIS_URL", "redis"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "otelcol"),
        ] {
            let value = env[var]
                .as_str()
                .ok_or_else(|| anyhow!("docker-compose.yml: {name} does not set {var}"))?;
            ensure!(
                port_in(value)? == port_of(&ports, component)?,
                "docker-compose.yml: {name}'s {var} {value} is not the stack's {component}"
            );
        }
    }
    served.sort();
    ensure!(
        served
            == Service::ALL
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
        "docker-compose.yml serves {served:?}, not each of the shop's six services once"
    );
    Ok(())
}

#[test]
fn every_mounted_path_exists() -> Result<()> {
    let dir = compose_dir();
    for (name, svc) in &services()? {
        let name = name.as_str().unwrap_or_default();
        for volume in svc["volumes"].as_sequence().into_iter().flatten() {
            let volume = volume
                .as_str()
                .ok_or_else(|| anyhow!("docker-compose.yml: {name}: a volume is not a string"))?;
            let source = volume.split(':').next().unwrap_or_default();
            if source.starts_with('.') {
                ensure!(
                    dir.join(source).exists(),
                    "docker-compose.yml: {name} mounts {source}, which does not exist"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn no_two_services_listen_on_one_port() -> Result<()> {
    let services = services()?;
    let mut owners: BTreeMap<u16, String> = BTreeMap::new();
    let mut claim = |port: u16, who: String| -> Result<()> {
        if let Some(first) = owners.insert(port, who.clone()) {
            bail!("docker-compose.yml: {first} and {who} both listen on port {port}");
        }
        Ok(())
    };
    for (component, list) in stack_ports()? {
        for port in list {
            claim(port, component.clone())?;
        }
    }
    // The services the local stack does not run: where they listen.
    let engine = engine::cli::Cli::try_parse_from(
        std::iter::once("engine".to_owned())
            .chain(command("engine", service(&services, "engine")?)?),
    )
    .context("the engine's command")?;
    if let engine::cli::Command::Run(run) = engine.command {
        claim(port_in(&run.api.listen)?, "engine".into())?;
    }
    let grafana = &service(&services, "grafana")?["environment"]["GF_SERVER_HTTP_PORT"];
    let grafana: u16 = grafana
        .as_str()
        .ok_or_else(|| anyhow!("docker-compose.yml: grafana sets no GF_SERVER_HTTP_PORT"))?
        .parse()?;
    claim(grafana, "grafana".into())?;
    let jaeger = read(&compose_dir().join("jaeger/config.yaml"))?;
    for line in jaeger
        .lines()
        .filter_map(|l| l.trim().strip_prefix("endpoint:"))
    {
        claim(port_in(line.trim())?, format!("jaeger ({})", line.trim()))?;
    }
    for service in Service::ALL {
        claim(service.default_port(), format!("shop-{}", service.name()))?;
    }
    Ok(())
}
