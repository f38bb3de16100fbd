//! Durable incidents (issue 13 item 2): `engine run --postgres` restores the
//! incidents the BI store keeps before its first evaluation, so a restart
//! does not notify an open incident again, and every sink sees one identity
//! per incident. On the stack's real PostgreSQL, with the engine's own OTLP
//! receiver; the engine is killed with SIGKILL while the incident is open.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use chrono::Utc;
use engine::sinks::postgres::sqlx::{self, Connection as _, postgres::PgConnection};
use serde_json::Value;

const FLOODER: &str = "203.0.113.77";

/// `engine run` on the flood rule alone, with `--postgres url`; event time
/// moves only with rows (`--idle 1h`), so the incident stays open while no
/// later row comes. Returns the engine, its stderr lines up to the API's
/// address, its remaining stderr and stdout, and the OTLP/HTTP address.
struct Engine {
    _engine: e2e::engine::Engine,
    early_err: Vec<String>,
    err: mpsc::Receiver<String>,
    out: mpsc::Receiver<String>,
    otlp: String,
}

fn start(rules: &std::path::Path, url: &str) -> Result<Engine> {
    let rules = rules.to_string_lossy();
    let (engine, err, out) = e2e::engine::spawn(&[
        "run",
        "--rules",
        &rules,
        "--otlp-grpc",
        "off",
        "--otlp-http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--idle",
        "1h",
        "--postgres",
        url,
    ]);
    // the restore is said before the receiver listens
    let mut early_err = Vec::new();
    let otlp = loop {
        let line = err
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow!("the engine did not start: {early_err:#?}"))?;
        early_err.push(line.clone());
        if let Some(at) = line.find("HTTP ") {
            break line[at + 5..]
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    Ok(Engine {
        _engine: engine,
        early_err,
        err,
        out,
        otlp,
    })
}

/// The flood: 100 requests a second from [`FLOODER`] for 90 s from `t0`,
/// posted in parts of 2000.
async fn flood(otlp: &str, t0: i64) {
    for from in (0..9000).step_by(2000) {
        let to = (from + 2000).min(9000);
        e2e::engine::post_traces(otlp, &e2e::engine::spans(t0, from, to, FLOODER)).await;
    }
}

/// The alert JSON lines of the flooder's rule read from `out` until one in
/// `state` arrives; all of them, that one last.
fn alerts_until(out: &mpsc::Receiver<String>, state: &str) -> Result<Vec<Value>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let Ok(line) = out.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["entity"]["client.address"] != FLOODER {
            continue;
        }
        let done = v["state"] == state;
        got.push(v);
        if done {
            return Ok(got);
        }
    }
    Err(anyhow!("no {state} alert for {FLOODER}; got {got:?}"))
}

/// The store's rows for the flooder: (state, alert_id, incident_start).
async fn stored(conn: &mut PgConnection) -> Result<Vec<(String, Option<String>, String)>> {
    Ok(sqlx::query_as::<_, (String, Option<String>, String)>(
        "SELECT state, alert_id, incident_start::text FROM alerts
         WHERE entity ->> 'client.address' = $1 ORDER BY state",
    )
    .bind(FLOODER)
    .fetch_all(&mut *conn)
    .await?)
}

/// Runs `body` with the URL of a schema of its own in the stack's
/// PostgreSQL, and drops the schema after.
async fn in_schema(body: impl AsyncFnOnce(String) -> Result<()>) -> Result<()> {
    let schema = e2e::faults::Schema::create("e2e_incidents").await;
    let done = body(schema.url()).await;
    schema.drop_all().await;
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_notify_an_open_incident_again() -> Result<()> {
    in_schema(async |url| {
        let rules =
            e2e::engine::flood_rule_folder("incidents", &format!("{:x}", e2e::shop::nonce()));
        let t0 = (Utc::now().timestamp() - 900) / 60 * 60 * 1_000_000_000;
        let mut conn = PgConnection::connect(&url).await?;

        // the first run fires, writes the store, and is killed while the
        // flood's incident is open
        let first = start(&rules, &url)?;
        flood(&first.otlp, t0).await;
        let fired = alerts_until(&first.out, "firing")?;
        ensure!(fired.len() == 1, "the first run: {fired:?}");
        let id = fired[0]["id"].as_str().context("an id")?.to_string();
        let mut rows = Vec::new();
        for _ in 0..150 {
            rows = stored(&mut conn).await?;
            if !rows.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(
            rows.len() == 1 && rows[0].0 == "firing" && rows[0].1.as_deref() == Some(id.as_str()),
            "the store after the first run: {rows:?} (id {id})"
        );
        drop(first); // SIGKILL

        // the second run reads the same flood again, then a later row
        // closes the windows after it: the incident resolves, and is not
        // notified again before
        let second = start(&rules, &url)?;
        let said = second.early_err.join("\n");
        ensure!(
            said.contains("incidents restored from PostgreSQL: 1 open"),
            "the restart did not restore the incident:\n{said}"
        );
        flood(&second.otlp, t0).await;
        e2e::engine::post_traces(
            &second.otlp,
            &e2e::engine::spans(t0, 20_000, 20_001, "192.0.2.1"),
        )
        .await;
        let again = alerts_until(&second.out, "resolved")?;
        ensure!(
            again.len() == 1,
            "the restart notified the open incident again: {again:?}"
        );
        ensure!(
            again[0]["id"] == id.as_str(),
            "the resolution's identity differs from the firing's ({id}): {again:?}"
        );
        ensure!(
            again[0]["incident_start"] == fired[0]["incident_start"],
            "{again:?} {fired:?}"
        );
        // the store: one incident, its firing and its resolution
        let mut rows = Vec::new();
        for _ in 0..150 {
            rows = stored(&mut conn).await?;
            if rows.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(
            rows.len() == 2
                && rows.iter().all(|r| r.1.as_deref() == Some(id.as_str()))
                && rows[0].2 == rows[1].2,
            "the store after the restart: {rows:?} (id {id})"
        );
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM open_incidents")
            .fetch_one(&mut conn)
            .await?;
        ensure!(open == 0, "{open} incidents still open in the store");
        drop(second);
        let _ = std::fs::remove_dir_all(&rules);
        Ok(())
    })
    .await
}

/// A store that is down at start: said on stderr, the engine runs with no
/// restored state and still alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_at_start_restores_nothing_and_the_engine_runs() -> Result<()> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let url = format!("postgres://otelguard:otelguard@127.0.0.1:{port}/otelguard");
    let rules =
        e2e::engine::flood_rule_folder("incidents-down", &format!("{:x}", e2e::shop::nonce()));
    let engine = start(&rules, &url)?;
    let said = engine.early_err.join("\n");
    ensure!(
        said.contains("starting with no restored incidents")
            && said.contains(&format!("127.0.0.1:{port}")),
        "the engine did not say the store is down:\n{said}"
    );
    let t0 = (Utc::now().timestamp() - 900) / 60 * 60 * 1_000_000_000;
    flood(&engine.otlp, t0).await;
    let fired = alerts_until(&engine.out, "firing")?;
    ensure!(fired.len() == 1, "{fired:?}");
    // the sink keeps retrying meanwhile, and says so
    let mut retrying = said.contains("cannot write to PostgreSQL");
    while !retrying && let Ok(line) = engine.err.recv_timeout(Duration::from_secs(20)) {
        if line.contains("cannot write to PostgreSQL") {
            retrying = true;
            break;
        }
    }
    ensure!(retrying, "the sink did not say it cannot write");
    let _ = std::fs::remove_dir_all(&rules);
    Ok(())
}
