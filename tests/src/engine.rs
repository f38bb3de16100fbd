//! The engine as a child process, and the OTLP/JSON spans the tests feed it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// A running engine, killed when dropped.
pub struct Engine(pub Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the workspace's engine with `args`; returns it and its stderr and
/// stdout, line by line.
pub fn spawn(args: &[&str]) -> (Engine, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    spawn_with_env(args, &[])
}

/// [`spawn`], with `env` (name, value) set in the engine's environment only.
pub fn spawn_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Engine, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(crate::workspace_binary("engine"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the engine");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let lines = |from: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let err = lines(Box::new(stderr));
    let out = lines(Box::new(stdout));
    (Engine(child), err, out)
}

/// `engine run` with the workspace's rule pack, its OTLP/HTTP receiver and
/// its API on ports of their own (gRPC off), and `extra` arguments.
pub struct Running {
    pub engine: Engine,
    pub err: mpsc::Receiver<String>,
    pub out: mpsc::Receiver<String>,
    /// the API's address
    pub api: String,
    /// the OTLP/HTTP receiver's address
    pub otlp: String,
}

/// Starts [`Running`].
pub fn run_receiving(extra: &[&str]) -> Running {
    run_receiving_rules(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules"), extra)
}

/// Starts [`Running`] with the rule pack in the folder `rules`.
pub fn run_receiving_rules(rules: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "run",
        "--rules",
        rules,
        "--otlp-grpc",
        "off",
        "--otlp-http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let (engine, err, out) = spawn(&args);
    let api = address_after(&err, "viewer and API on http://");
    let otlp = address_after(&err, "HTTP ");
    Running {
        engine,
        err,
        out,
        api,
        otlp,
    }
}

/// Posts `body` (OTLP/JSON traces) to the receiver at `otlp`; panics unless
/// it is acknowledged.
pub async fn post_traces(otlp: &str, body: &Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{otlp}/v1/traces"))
        .json(body)
        .send()
        .await
        .expect("post spans");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
}

/// An OTLP/JSON `TracesData` of the gateway's SERVER spans `from..to`, one every
/// 10 ms from `t0` (ns), each 2 ms long, from `client`.
pub fn spans(t0: i64, from: i64, to: i64, client: &str) -> Value {
    spans_every(t0, from, to, 10_000_000, client)
}

/// [`spans`], one every `step_ns` nanoseconds.
pub fn spans_every(t0: i64, from: i64, to: i64, step_ns: i64, client: &str) -> Value {
    let spans: Vec<Value> = (from..to)
        .map(|n| {
            let t = t0 + n * step_ns;
            json!({
                "traceId": format!("{:032x}", n + 1), "spanId": format!("{:016x}", n + 1),
                "name": "GET /api/products/{id}", "kind": 2,
                "startTimeUnixNano": t.to_string(), "endTimeUnixNano": (t + 2_000_000).to_string(),
                "attributes": [
                    {"key": "client.address", "value": {"stringValue": client}},
                    {"key": "http.route", "value": {"stringValue": "/api/products/{id}"}},
                    {"key": "http.response.status_code", "value": {"intValue": 200}},
                ],
            })
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-gateway"}}]},
        "scopeSpans": [{"spans": spans}]}]})
}

/// A rules folder of its own (`otelguard-{name}-rules-{run}` in the temp
/// folder) holding only the flood rule of the pack, as `flood.sql`.
pub fn flood_rule_folder(name: &str, run: &str) -> std::path::PathBuf {
    let rules = std::env::temp_dir().join(format!("otelguard-{name}-rules-{run}"));
    std::fs::create_dir_all(&rules).expect("a rules folder");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../rules/dos/http_flood_single_source.sql"
        ),
        rules.join("flood.sql"),
    )
    .expect("copy the flood rule");
    rules
}

/// Reads stderr lines until one contains `marker`; returns the address after it.
pub fn address_after(lines: &mpsc::Receiver<String>, marker: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the engine says where it listens");
        if let Some(at) = line.find(marker) {
            let rest = &line[at + marker.len()..];
            return rest
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("")
                .to_string();
        }
    }
}
