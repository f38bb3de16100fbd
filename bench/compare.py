"""The engine beside what users would pick instead, in one sitting on the same
inputs (issue 16 item 1). Run by `bench/compare`, which builds and fetches what
this needs and passes the paths:

    python compare.py --engine BIN --memory BIN --capture FILE --otelcol BIN
                      --telemetrygen BIN --rules50 DIR --work DIR [--runs 3]
                      [--only replay,duckdb,intake,memory] [--intake-seconds 15]

Prints one table per part, then the ratios, and writes the same as Markdown to
WORK/results-TIME.md. Each figure is the best of --runs runs (replays) or one
run of --intake-seconds seconds a load (intake); every process it starts is
stopped before it returns, on an error too.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLOCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# ---------------------------------------------------------------------------
# Processes


def run_measured(cmd, stdout=subprocess.PIPE, env=None):
    """Runs cmd to its end; returns (exit code, wall s, CPU s, peak RSS bytes,
    stdout bytes, stderr text). CPU and peak RSS are the child's own (wait4)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err, env=env)
        out = b""
        if stdout == subprocess.PIPE:
            out = proc.stdout.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    return proc.returncode, wall, cpu, usage.ru_maxrss * 1024, out, text


def cpu_seconds(pid):
    """User plus system CPU seconds of a running process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def peak_rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Started:
    """A server process started in a process group of its own and stopped
    (SIGTERM, then SIGKILL) when the block ends, whatever happens in it."""

    live = []

    def __init__(self, cmd, log):
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        Started.live.append(self)

    def __enter__(self):
        return self

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.log.close()
        if self in Started.live:
            Started.live.remove(self)

    def __exit__(self, *exc):
        self.stop()


def stop_all(*_):
    for s in list(Started.live):
        s.stop()
    sys.exit(130)


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def fetch(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(url, proc, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited at start (code {proc.returncode}); see its log")
        try:
            fetch(url)
            return
        except OSError:
            time.sleep(0.25)
    raise SystemExit(f"{what} did not answer {url} within {seconds} s")


# ---------------------------------------------------------------------------
# Output


def fmt_rate(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


class Report:
    def __init__(self, path):
        self.path = path
        self.parts = []

    def add(self, text):
        print(text, flush=True)
        self.parts.append(text)

    def write(self):
        self.path.write_text("\n\n".join(self.parts) + "\n")
        print(f"\nwritten to {self.path}")


# ---------------------------------------------------------------------------
# Replay


SUMMARY = re.compile(r"replayed (\d+) messages, (\d+) rows in ([\d.]+) s")


def replay(engine, capture, rules, runs, extra=()):
    """Best of `runs` replays (by the replay's own time), with its outputs."""
    best = None
    times = []
    for _ in range(runs):
        code, wall, cpu, rss, out, err = run_measured([engine, "replay", str(capture), "--rules", str(rules), "--format", "json", *extra])
        if code != 0:
            raise SystemExit(f"engine replay --rules {rules} failed ({code}):\n{err[-2000:]}")
        m = SUMMARY.search(err)
        if not m:
            raise SystemExit(f"engine replay printed no summary:\n{err[-2000:]}")
        alerts = [json.loads(line) for line in out.splitlines() if line.strip()]
        # the replay's own time (from the capture's opening to the last
        # output), as the summary line says it; the process's wall time also
        # has the start (loading and planning the rules)
        secs = float(m.group(3))
        run = {"secs": secs, "wall": wall, "cpu": cpu, "rss": rss, "rows": int(m.group(2)), "alerts": alerts}
        times.append(secs)
        if best is None or secs < best["secs"]:
            best = run
    best["runs"] = times
    return best


def one_rule_dir(work, *files):
    d = Path(work) / ("rules-" + "-".join(Path(f).stem for f in files))
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for f in files:
        shutil.copy(REPO / f, d / Path(f).name)
    return d


FLOOD = "rules/dos/http_flood_single_source.sql"
STUFFING = "rules/auth/credential_stuffing.sql"


def part_replay(a, report):
    work = Path(a.work)
    empty = work / "rules-empty"
    empty.mkdir(parents=True, exist_ok=True)
    cases = [
        ("0 rules (read and decode)", empty),
        ("1 rule (dos.http_flood.single_source)", one_rule_dir(work, FLOOD)),
        (f"the pack ({len(alert_rules(REPO / 'rules'))} alert rules)", REPO / "rules"),
        ("50 distinct rules (bench/rules50)", Path(a.rules50)),
    ]
    results = []
    for label, rules in cases:
        r = replay(a.engine, a.capture, rules, a.runs)
        results.append((label, r))
        print(f"  replay, {label}: {r['secs']:.2f} s", flush=True)
    # the same capture in the Collector's protobuf format: reading without JSON
    pb = []
    if a.capture_pb:
        for label, rules in [cases[0], cases[2]]:
            r = replay(a.engine, a.capture_pb, rules, a.runs)
            if r["rows"] != next(x for l, x in results if l == label)["rows"]:
                raise SystemExit(f"the protobuf capture replays {r['rows']} rows, the JSON one another count")
            pb.append((label + ", protobuf capture", r))
            print(f"  replay, {label}, protobuf capture: {r['secs']:.2f} s", flush=True)
    base = results[1][1]["secs"]
    results += pb
    rows = [
        (
            label,
            f"{r['secs']:.2f} s",
            " / ".join(f"{w:.2f}" for w in r["runs"]),
            fmt_rate(r["rows"] / r["secs"]) + " rows/s",
            f"{r['wall']:.2f} s",
            f"{r['cpu']:.2f} s",
            f"{r['rss'] / 2**20:.0f} MiB",
            len(r["alerts"]),
            f"{r['secs'] / base:.2f}x",
        )
        for label, r in results
    ]
    report.add(
        f"### Replay of the hour capture ({results[0][1]['rows']:,} rows)\n\n"
        + table(["rules", "replay (best)", "runs (s)", "rows/s", "process wall", "process CPU", "peak RSS", "outputs", "vs 1 rule"], rows)
    )
    return {label: r for label, r in results}


def alert_rules(d):
    return [p for p in d.rglob("*.sql") if "kpi = " not in p.read_text()[:2000]]


# ---------------------------------------------------------------------------
# DuckDB: the same detection, as a user would backtest SQL over the capture

KV = "STRUCT(key VARCHAR, value STRUCT(stringValue VARCHAR, intValue VARCHAR))[]"
SPANS_TYPE = (
    f"STRUCT(resource STRUCT(attributes {KV}), scopeSpans STRUCT(spans STRUCT("
    f"traceId VARCHAR, name VARCHAR, kind INTEGER, startTimeUnixNano VARCHAR, "
    f"endTimeUnixNano VARCHAR, attributes {KV})[])[])[]"
)
LOGS_TYPE = (
    f"STRUCT(resource STRUCT(attributes {KV}), scopeLogs STRUCT(logRecords STRUCT("
    f"timeUnixNano VARCHAR, observedTimeUnixNano VARCHAR, traceId VARCHAR, eventName VARCHAR, "
    f"attributes {KV})[])[])[]"
)


def attr(list_expr, key):
    return f"list_filter({list_expr}, lambda a: a.key = '{key}')[1].value.stringValue"


def flattened(capture, table, resources, scopes, records, columns):
    """`CREATE TEMP TABLE table` of one row per record of the OTLP/JSON lines
    of `capture` (resources -> scopes -> records), with `columns` over `res`
    (the resource's attributes) and `x` (the record)."""
    return f"""
CREATE TEMP TABLE {table} AS
WITH l AS (
    SELECT unnest({resources}) AS r
    FROM read_json('{capture}', format = 'newline_delimited', compression = 'zstd',
                   columns = {{{resources}: '{SPANS_TYPE if resources == "resourceSpans" else LOGS_TYPE}'}})
    WHERE {resources} IS NOT NULL),
s AS (SELECT r.resource.attributes AS res, unnest(r.{scopes}) AS sc FROM l),
p AS (SELECT res, unnest(sc.{records}) AS x FROM s)
SELECT {columns}
FROM p"""


def spans_sql(capture):
    """One row per span: the columns the flood rule reads."""
    return flattened(
        capture,
        "spans",
        "resourceSpans",
        "scopeSpans",
        "spans",
        f"""x.traceId AS trace_id,
       -- OTLP's SpanKind: 2 is SERVER
       CASE x.kind WHEN 2 THEN 'SERVER' WHEN 3 THEN 'CLIENT' ELSE 'OTHER' END AS kind,
       CAST(x.startTimeUnixNano AS BIGINT) AS time_ns,
       CAST(x.endTimeUnixNano AS BIGINT) AS end_ns,
       {attr('res', 'service.name')} AS service_name,
       {attr('x.attributes', 'client.address')} AS client_address""",
    )


def events_sql(capture):
    """One row per log record: the columns the credential stuffing rule reads."""
    return flattened(
        capture,
        "events",
        "resourceLogs",
        "scopeLogs",
        "logRecords",
        f"""x.traceId AS trace_id,
       CAST(CASE WHEN x.timeUnixNano IS NULL OR x.timeUnixNano = '0'
                 THEN x.observedTimeUnixNano ELSE x.timeUnixNano END AS BIGINT) AS time_ns,
       coalesce(nullif(x.eventName, ''), {attr('x.attributes', 'event.name')}) AS event_name,
       {attr('x.attributes', 'client.address')} AS client_address,
       {attr('x.attributes', 'user.hash')} AS user_hash,
       {attr('x.attributes', 'shop.auth.outcome')} AS shop_auth_outcome,
       {attr('x.attributes', 'shop.auth.failure_reason')} AS shop_auth_failure_reason""",
    )


def hopping(size_s, slide_s, table, where, at="time_ns"):
    """Rows of `table` passing `where`, each repeated once per hopping window
    its event time `at` is in (windows start at every multiple of the slide
    since the epoch, as the engine's do), with the window's start in ns. The
    engine windows spans by their end (engine/src/window/mod.rs: a span is
    exported when it ends), logs and metrics by their time."""
    per = size_s // slide_s
    slide_ns = slide_s * 1_000_000_000
    return f"""(
    SELECT *, w * {slide_ns} AS window_start
    FROM (SELECT *, unnest(range({at} // {slide_ns} - {per - 1}, {at} // {slide_ns} + 1)) AS w
          FROM {table} WHERE {where}))"""


FLOOD_SQL = f"""
SELECT window_start, client_address, count(*) AS requests, min(end_ns) AS first_seen
FROM {hopping(60, 10, "spans", "kind = 'SERVER' AND service_name = 'shop-gateway' AND client_address IS NOT NULL", at="end_ns")}
GROUP BY window_start, client_address
HAVING count(*) >= 3000"""

STUFFING_SQL = f"""
SELECT window_start, client_address, count(DISTINCT user_hash) AS accounts, min(time_ns) AS first_seen
FROM {hopping(120, 10, "events", "event_name = 'shop.auth.login' AND client_address IS NOT NULL")}
GROUP BY window_start, client_address
HAVING count(DISTINCT user_hash) >= 20
   AND CAST(count(*) FILTER (WHERE shop_auth_outcome = 'failure') AS DOUBLE) / count(*) >= 0.5
   AND count(*) FILTER (WHERE shop_auth_failure_reason = 'unknown_user') >= 3"""


def incidents(windows, slide_ns, suppress_ns):
    """(entity, first window start, value there) of each incident from the
    qualifying windows (start, entity, value), as the engine's lifecycle makes
    them with `for = 1`: an incident is a run of windows one slide apart; a new
    run within `suppress` of the last notification for the entity stays silent."""
    out = []
    by_entity = {}
    for start, entity, value in sorted(windows, key=lambda w: (w[1], w[0])):
        by_entity.setdefault(entity, []).append((start, value))
    for entity, starts in by_entity.items():
        notified = None
        prev = None
        for s, value in starts:
            new_run = prev is None or s - prev > slide_ns
            prev = s
            if not new_run:
                continue
            if notified is not None and s - notified < suppress_ns:
                continue
            notified = s
            out.append((entity, s, value))
    return sorted(out)


def engine_incidents(alerts, entity_key):
    """(entity, window start in ns, value) of each incident the engine sent:
    the first firing of each alert id."""
    out = []
    open_ = set()
    for a in alerts:
        # an incident's identity is its `id`; engines before it had none, and
        # an entity's incident then lasts from its firing to its resolution
        key = a.get("id") or (a["rule_id"], a["entity"][entity_key])
        if a.get("state") == "resolved":
            open_.discard(key)
            continue
        if a.get("state") != "firing" or key in open_:
            continue
        open_.add(key)
        t = datetime.fromisoformat(a["window_start"].replace("Z", "+00:00"))
        out.append((a["entity"][entity_key], int(t.timestamp()) * 1_000_000_000, a["value"]))
    return sorted(out)


def part_duckdb(a, report, replayed):
    import duckdb

    work = Path(a.work)
    cases = [
        ("dos.http_flood.single_source (spans)", FLOOD, spans_sql, FLOOD_SQL, 10, 15 * 60),
        ("auth.credential_stuffing (log events)", STUFFING, events_sql, STUFFING_SQL, 10, 3600),
    ]
    rows = []
    agree = True
    for label, rule, load, detect, slide_s, suppress_s in cases:
        flood_label = "1 rule (dos.http_flood.single_source)"
        if rule == FLOOD and replayed and flood_label in replayed:
            eng = replayed[flood_label]
        else:
            eng = replay(a.engine, a.capture, one_rule_dir(work, rule), a.runs)
        best = None
        for _ in range(a.runs):
            con = duckdb.connect()
            con.execute("SET enable_progress_bar = false")
            t0 = time.monotonic()
            con.execute(load(a.capture))
            t1 = time.monotonic()
            found = con.execute(detect).fetchall()
            t2 = time.monotonic()
            con.close()
            if best is None or t2 - t0 < best[0]:
                best = (t2 - t0, t1 - t0, t2 - t1, found)
        total, load_s, query_s, found = best
        ddb = incidents([(w[0], w[1], w[2]) for w in found], slide_s * 1_000_000_000, suppress_s * 1_000_000_000)
        ours = engine_incidents(eng["alerts"], "client.address")
        # the same incidents: entity, first window and the value there
        same = ddb == ours
        agree &= same
        values = ", ".join(f"{e[2]} / {d[2]}" for e, d in zip(ours, ddb))
        rows.append(
            (
                label,
                f"{eng['wall']:.2f} s",
                f"{total:.2f} s ({load_s:.2f} read + {query_s:.2f} query)",
                f"{total / eng['wall']:.1f}x",
                f"{len(found)} windows",
                f"{len(ours)} / {len(ddb)}",
                "yes" if same else f"NO: engine {ours}, DuckDB {ddb}",
                values if len(values) < 80 else values[:77] + "...",
            )
        )
        print(f"  DuckDB, {label}: {total:.2f} s, engine {eng['wall']:.2f} s, agree: {same}", flush=True)
    threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    report.add(
        f"### One rule over the capture: the engine's replay against DuckDB {duckdb.__version__} ({threads} threads)\n\n"
        + table(
            ["rule", "engine replay", "DuckDB (read, flatten, query)", "DuckDB / engine", "DuckDB found", "incidents engine / DuckDB", "same incidents (entity, first window, value)", "values, engine / DuckDB"],
            rows,
        )
    )
    if not agree:
        report.add("**The engine and DuckDB disagree** (see the table).")
    return agree


# ---------------------------------------------------------------------------
# Intake: the OTLP receiver against the Collector, fed by telemetrygen


def metric_sum(text, pattern):
    """The sum of every sample whose name (and labels) match `pattern`."""
    total = 0.0
    rx = re.compile(pattern)
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, _, value = line.rpartition(" ")
        if rx.search(name_labels):
            try:
                total += float(value)
            except ValueError:
                pass
    return total


COLLECTOR = {
    "ports": (14317, 14318),
    "metrics": "http://127.0.0.1:14888/metrics",
    "accepted": {
        "traces": r"^otelcol_receiver_accepted_spans(_total)?\{",
        "logs": r"^otelcol_receiver_accepted_log_records(_total)?\{",
    },
    "refused": {
        "traces": r"^otelcol_receiver_refused_spans(_total)?\{",
        "logs": r"^otelcol_receiver_refused_log_records(_total)?\{",
    },
}
INTAKE_REFUSED = r"^otelguard_(?!api_|incidents_)[a-z_]*(refused|rejected)[a-z_]*(\{|$)"
ENGINE = {
    "ports": (24317, 24318),
    "metrics": "http://127.0.0.1:28080/metrics",
    "accepted": {
        "traces": r'^otelguard_rows_total\{table="spans"',
        "logs": r'^otelguard_rows_total\{table="logs"',
    },
    # whatever the engine counts as refused or rejected on the way in (the
    # receiver's refusals, rows the buffer refused, decoding rejections), not
    # the API's connections or incidents
    "refused": {
        "traces": INTAKE_REFUSED,
        "logs": INTAKE_REFUSED,
    },
}


def load(a, kind, signal_, proto, port):
    """telemetrygen for --intake-seconds at full speed; returns its log."""
    cmd = [
        a.telemetrygen,
        signal_,
        "--otlp-insecure",
        "--otlp-endpoint",
        f"127.0.0.1:{port}",
        "--duration",
        f"{a.intake_seconds}s",
        "--rate",
        "0",
        "--workers",
        str(a.workers),
    ]
    if proto == "http":
        cmd.append("--otlp-http")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"telemetrygen {signal_} {proto} against {kind} failed:\n{p.stderr[-2000:]}")
    return p.stdout + p.stderr


def client_errors(log):
    """telemetrygen's warnings and errors (failed exports, refusals)."""
    return sum(1 for line in log.splitlines() if re.search(r"\t(WARN|ERROR)\t", line))


def generated(log, signal_):
    """What telemetrygen made: its workers' counts (a trace is a parent and
    one child span, its default). Spans its SDK's batch processor drops when
    the exporter falls behind are made and never sent: the gap to what the
    receiver accepted is those, not refusals."""
    key, per = ("traces", 2) if signal_ == "traces" else ("logs", 1)
    return per * sum(int(n) for n in re.findall(rf'"{key}": (\d+)\}}', log))


def measure_intake(a, kind, spec, proc, work):
    results = []
    for signal_ in ("traces", "logs"):
        for proto, port in zip(("grpc", "http"), spec["ports"]):
            before = fetch(spec["metrics"])
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.monotonic()
            log = load(a, kind, signal_, proto, port)
            # what was sent has been answered; give batches a moment to be counted
            time.sleep(1.0)
            t1 = time.monotonic()
            cpu1 = cpu_seconds(proc.pid)
            after = fetch(spec["metrics"])
            slug = re.sub(r"[^a-z]+", "-", kind.lower()).strip("-")
            (work / f"telemetrygen-{slug}-{signal_}-{proto}.log").write_text(log)
            accepted = metric_sum(after, spec["accepted"][signal_]) - metric_sum(before, spec["accepted"][signal_])
            refused = metric_sum(after, spec["refused"][signal_]) - metric_sum(before, spec["refused"][signal_])
            secs = a.intake_seconds
            cpu = cpu1 - cpu0
            results.append(
                {
                    "signal": signal_,
                    "proto": proto,
                    "accepted": accepted,
                    "per_s": accepted / secs,
                    "per_cpu_s": accepted / cpu if cpu > 0 else 0.0,
                    "cpu": cpu,
                    "refused": refused,
                    "client_errors": client_errors(log),
                    "made": generated(log, signal_),
                    "rss": peak_rss(proc.pid),
                    "elapsed": t1 - t0,
                }
            )
            print(f"  intake, {kind}, {signal_} over {proto}: {accepted / secs:,.0f}/s, {accepted / cpu if cpu else 0:,.0f} per CPU-s, refused {refused:.0f}", flush=True)
    return results


def part_intake(a, report):
    work = Path(a.work)
    for port in (14317, 14318, 14888, 24317, 24318, 28080):
        if not port_free(port):
            raise SystemExit(f"port {port} is taken: bench/compare needs 14317 14318 14888 24317 24318 28080")
    empty = work / "rules-empty"
    empty.mkdir(parents=True, exist_ok=True)
    by_kind = {}
    with Started([a.otelcol, "--config", str(REPO / "bench/otelcol.yaml")], work / "otelcol.log") as col:
        wait_for(COLLECTOR["metrics"], col.proc, "the Collector")
        by_kind["Collector"] = measure_intake(a, "Collector", COLLECTOR, col.proc, work)
    for kind, rules in (("engine, empty pack", empty), ("engine, the pack", REPO / "rules")):
        cmd = [a.engine, "run", "--rules", str(rules), "--otlp-grpc", "127.0.0.1:24317", "--otlp-http", "127.0.0.1:24318", "--listen", "127.0.0.1:28080"]
        with Started(cmd, work / f"engine-{'empty' if rules == empty else 'pack'}.log") as eng:
            wait_for(ENGINE["metrics"], eng.proc, "the engine")
            by_kind[kind] = measure_intake(a, kind, ENGINE, eng.proc, work)
    rows = []
    col = {(r["signal"], r["proto"]): r for r in by_kind["Collector"]}
    for kind, results in by_kind.items():
        for r in results:
            c = col[(r["signal"], r["proto"])]
            rows.append(
                (
                    kind,
                    f"{r['signal']} / {r['proto']}",
                    f"{fmt_rate(r['per_s'])}/s",
                    f"{fmt_rate(r['per_cpu_s'])}",
                    f"{r['cpu']:.1f} s",
                    f"{r['accepted'] / r['made']:.0%} of {fmt_rate(r['made'])}" if r["made"] else "-",
                    f"{r['refused']:.0f}",
                    r["client_errors"],
                    f"{r['rss'] / 2**20:.0f} MiB",
                    "-" if kind == "Collector" else f"{r['per_s'] / c['per_s']:.2f}x / {r['per_cpu_s'] / c['per_cpu_s']:.2f}x",
                )
            )
    report.add(
        f"### OTLP intake, telemetrygen ({a.workers} workers, no rate limit, {a.intake_seconds} s a load)\n\n"
        + table(
            ["receiver", "signal / protocol", "records/s", "per CPU-second", "CPU", "accepted of made", "refused (receiver)", "client warnings and errors", "peak RSS", "vs Collector (rate / per CPU-s)"],
            rows,
        )
    )
    return by_kind


# ---------------------------------------------------------------------------
# Memory


def part_memory(a, report):
    code, wall, cpu, rss, out, err = run_measured([a.memory, "1000000"])
    if code != 0:
        raise SystemExit(f"buffer_memory failed ({code}):\n{err[-2000:]}")
    text = out.decode()
    held = re.search(r"(\d+) held", text)
    buf = re.search(r"buffer: ([\d.]+) MB, (\d+) bytes per row held", text)
    res = re.search(r"resident: [\d.]+ MB before, ([\d.]+) MB after, (\d+) bytes per row held; peak ([\d.]+) MB", text)
    if not (held and buf and res):
        raise SystemExit(f"buffer_memory printed something else:\n{text}")
    report.add(
        "### Memory: 1 M rows of the recorded captures in open windows (the pack loaded)\n\n"
        + table(
            ["rows held", "bytes per row (otelguard_buffered_bytes)", "bytes per row (resident growth)", "resident after", "peak (VmHWM)", "goal"],
            [(f"{int(held.group(1)):,}", buf.group(2), res.group(2), f"{res.group(1)} MB", f"{res.group(3)} MB", "200 bytes per row")],
        )
    )
    return {"held": int(held.group(1)), "buffer_per_row": int(buf.group(2)), "rss_per_row": int(res.group(2))}


# ---------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--engine", required=True)
    p.add_argument("--memory", required=True)
    p.add_argument("--capture", required=True)
    p.add_argument("--capture-pb", default=None, help="the same capture in protobuf form (replayed with 0 rules and the pack)")
    p.add_argument("--otelcol", required=True)
    p.add_argument("--telemetrygen", required=True)
    p.add_argument("--rules50", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--intake-seconds", type=int, default=15)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--only", default="replay,duckdb,intake,memory")
    a = p.parse_args()
    parts = set(a.only.split(","))
    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    Path(a.work).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = Report(Path(a.work) / time.strftime("results-%Y%m%dT%H%M%S.md"))
    load1 = os.getloadavg()[0]
    report.add(
        f"## bench/compare, {time.strftime('%Y-%m-%d %H:%M %Z')}\n\n"
        f"Machine: {os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * PAGE / 2**30:.0f} GiB, "
        f"load average {load1:.2f} at the start. Capture: {a.capture} "
        f"({Path(a.capture).stat().st_size / 1e6:.1f} MB). Engine: {a.engine}."
    )
    replayed = {}
    agree = True
    try:
        if "replay" in parts:
            replayed = part_replay(a, report)
        if "duckdb" in parts:
            agree = part_duckdb(a, report, replayed)
        if "intake" in parts:
            part_intake(a, report)
        if "memory" in parts:
            part_memory(a, report)
    finally:
        for s in list(Started.live):
            s.stop()
    if replayed:
        one = replayed["1 rule (dos.http_flood.single_source)"]
        fifty = replayed["50 distinct rules (bench/rules50)"]
        pack = next(r for k, r in replayed.items() if k.startswith("the pack") and "protobuf" not in k)
        pack_pb = next((r for k, r in replayed.items() if k.startswith("the pack") and "protobuf" in k), None)
        on_pb = (
            f"; on the protobuf capture at {fmt_rate(pack_pb['rows'] / pack_pb['secs'])} rows/s"
            if pack_pb
            else ""
        )
        report.add(
            "Ratios: 50 distinct rules cost "
            f"{fifty['secs'] / one['secs']:.2f}x one rule (goal: at most 2x); the pack {pack['secs'] / one['secs']:.2f}x; "
            f"the pack replays the JSON capture at {fmt_rate(pack['rows'] / pack['secs'])} rows/s{on_pb} (goal: 1 M)."
        )
    report.add(f"Whole run: {time.monotonic() - started:.0f} s, load average {os.getloadavg()[0]:.2f} at the end.")
    report.write()
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
