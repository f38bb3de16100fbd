//! Renders requests as the OpenTelemetry Collector's file exporter would have
//! written them: OTLP/JSON, one `TracesData`, `LogsData` or `MetricsData`
//! object per line, batched as a batch processor would (a few hundred spans or
//! log records per line, at most five seconds of event time per batch).
//!
//! A span is exported when it ends and a log record when it is emitted, as an
//! SDK does: rendered items wait in a queue ordered by that time and join a
//! batch once no later request can precede them.
//!
//! The JSON is written by hand, key order fixed, so the bytes do not depend on
//! serde_json's feature flags elsewhere in the workspace.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Write};

use super::model::{ENVIRONMENT, Service, Simulated};
use super::request::{Event, Nanos, Request, SECOND, Value};
use super::rng::Rng;

/// Spans per `TracesData` line before it is flushed.
const SPANS_PER_BATCH: usize = 400;
/// Log records per `LogsData` line before it is flushed.
const LOGS_PER_BATCH: usize = 200;
/// Event time a batch may span before it is flushed.
const BATCH_AGE: Nanos = 5 * SECOND;
/// Metric export interval.
pub const METRIC_INTERVAL: Nanos = 10 * SECOND;
/// How long after an interval ends its points are written (requests still
/// in flight at the boundary are recorded when they finish).
const METRIC_LAG: Nanos = 15 * SECOND;
/// Bucket bounds of `http.server.request.duration` (semantic conventions).
const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.27.0";
/// 1 in this many events uses the older `event.name` attribute form.
const LEGACY_EVENT_EVERY: u64 = 10;

/// What was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub spans: u64,
    pub log_records: u64,
    pub metric_points: u64,
    pub lines: u64,
}

type Instance = (Service, usize);

/// Which batch a rendered item joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Signal {
    Span,
    Log,
}

/// A rendered span or log record waiting for its export time: (time, order
/// of rendering, signal, where, JSON). The order of rendering breaks ties, so
/// the output is deterministic.
type Pending = Reverse<(Nanos, u64, Signal, Instance, String)>;

#[derive(Default)]
struct Histogram {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: [u64; BOUNDS.len() + 1],
}

#[derive(Default)]
struct Interval {
    durations: BTreeMap<(usize, &'static str, &'static str, u16), Histogram>,
    /// (instance, metric, attribute key, attribute value) → (sum, is_double)
    counters: BTreeMap<(Instance, &'static str, &'static str, String), (f64, bool)>,
}

/// The spans or log records of the line being filled, per service instance.
struct Batch {
    items: BTreeMap<Instance, Vec<String>>,
    count: usize,
    /// time of the first item
    start: Option<Nanos>,
    max: usize,
}

impl Batch {
    fn new(max: usize) -> Self {
        Batch {
            items: BTreeMap::new(),
            count: 0,
            start: None,
            max,
        }
    }

    /// Whether the line must be written before an item of `time` joins it:
    /// it is full, or older than `BATCH_AGE`.
    fn is_due(&self, time: Nanos) -> bool {
        self.start.is_some_and(|s| time - s >= BATCH_AGE) || self.count >= self.max
    }

    fn add(&mut self, at: Instance, time: Nanos, json: String) {
        self.start.get_or_insert(time);
        self.items.entry(at).or_default().push(json);
        self.count += 1;
    }

    fn clear(&mut self) {
        self.items.clear();
        self.count = 0;
        self.start = None;
    }
}

/// Streams requests out as OTLP/JSON lines.
pub struct Renderer<W: Write> {
    out: W,
    origin: Nanos,
    spans: Batch,
    logs: Batch,
    intervals: BTreeMap<i64, Interval>,
    pending: BinaryHeap<Pending>,
    rendered: u64,
    counts: Counts,
}

impl<W: Write> Renderer<W> {
    /// A renderer whose metric intervals are aligned on `origin`.
    pub fn new(out: W, origin: Nanos) -> Self {
        Renderer {
            out,
            origin,
            spans: Batch::new(SPANS_PER_BATCH),
            logs: Batch::new(LOGS_PER_BATCH),
            intervals: BTreeMap::new(),
            pending: BinaryHeap::new(),
            rendered: 0,
            counts: Counts::default(),
        }
    }

    /// Renders one request. Requests must come in order of start time.
    pub fn push(&mut self, r: &Request) -> io::Result<()> {
        // Everything that ends by this request's start can be exported: no
        // later request ends before it starts.
        self.release(r.start)?;
        let done: Vec<i64> = self
            .intervals
            .keys()
            .copied()
            .filter(|i| self.origin + (i + 1) * METRIC_INTERVAL + METRIC_LAG <= r.start)
            .collect();
        for i in done {
            self.flush_interval(i)?;
        }
        self.render(r);
        self.counts.requests += 1;
        Ok(())
    }

    /// Writes what is still buffered and returns the writer and the counts.
    pub fn finish(mut self) -> io::Result<(W, Counts)> {
        self.release(Nanos::MAX)?;
        self.flush_spans()?;
        self.flush_logs()?;
        let rest: Vec<i64> = self.intervals.keys().copied().collect();
        for i in rest {
            self.flush_interval(i)?;
        }
        self.out.flush()?;
        Ok((self.out, self.counts))
    }

    fn interval(&mut self, t: Nanos) -> &mut Interval {
        let i = (t - self.origin).div_euclid(METRIC_INTERVAL);
        self.intervals.entry(i).or_default()
    }

    /// Queues a span until its end, or a log record until its time.
    fn queue(&mut self, signal: Signal, at: Instance, time: Nanos, json: String) {
        self.rendered += 1;
        self.pending
            .push(Reverse((time, self.rendered, signal, at, json)));
    }

    /// Moves every queued item of time up to `upto` into its batch, in time
    /// order, flushing a batch when it is full or older than `BATCH_AGE`.
    fn release(&mut self, upto: Nanos) -> io::Result<()> {
        while self.pending.peek().is_some_and(|Reverse(p)| p.0 <= upto) {
            let Some(Reverse((time, _, signal, at, json))) = self.pending.pop() else {
                break;
            };
            match signal {
                Signal::Span => {
                    if self.spans.is_due(time) {
                        self.flush_spans()?;
                    }
                    self.spans.add(at, time, json);
                }
                Signal::Log => {
                    if self.logs.is_due(time) {
                        self.flush_logs()?;
                    }
                    self.logs.add(at, time, json);
                }
            }
        }
        Ok(())
    }

    fn render(&mut self, r: &Request) {
        let mut ids = Rng::new(r.ids);
        let trace = ids.hex(16);
        let root = ids.hex(8);
        let end = r.start + r.duration;
        let gw: Instance = (Service::Gateway, (r.ids & 1) as usize);

        // The edge SERVER span.
        let mut a = String::with_capacity(512);
        attr_str(&mut a, "http.request.method", r.method);
        attr_str(&mut a, "http.route", r.route);
        attr_str(&mut a, "url.path", &r.path);
        attr_str(&mut a, "url.scheme", "https");
        attr_int(&mut a, "http.response.status_code", i64::from(r.status));
        attr_str(&mut a, "client.address", &r.client.address);
        attr_str(&mut a, "user_agent.original", &r.client.user_agent);
        if let Some(u) = &r.client.user {
            attr_str(&mut a, "user.id", u);
        }
        if let Some(s) = &r.client.session {
            attr_str(&mut a, "session.id", s);
        }
        let name = format!("{} {}", r.method, r.route);
        let span = span_json(
            &trace,
            &root,
            None,
            &name,
            2,
            r.start,
            end,
            &a,
            r.status >= 500,
        );
        self.queue(Signal::Span, gw, end, span);
        self.count_duration(gw.1, r, end);

        // Downstream CLIENT/SERVER pairs; hop i is called from hop i-1.
        let mut parent = root.clone();
        let mut caller = gw;
        let (mut ps, mut pe) = (r.start, end);
        let mut server_spans: Vec<(String, Instance, Nanos, Nanos)> = Vec::new();
        for (i, h) in r.hops.iter().enumerate() {
            let len = pe - ps;
            // A handler's first step comes a moment after its request
            // starts, as the shop's do (a connection, a query, a call within
            // a millisecond or two): a late first child is what
            // perf.runtime_starvation looks for, so only a starved runtime
            // may show one. The call ends shortly before its caller answers.
            let cs = ps + round_us((len / 20).min(2_000_000));
            let ce = if i == 0 {
                pe - round_us(len / 30)
            } else {
                pe - round_us(len / 50)
            };
            let clen = ce - cs;
            let (ss, se) = (cs + round_us(clen / 30), ce - round_us(clen / 50));
            let client_id = ids.hex(8);
            let server_id = ids.hex(8);
            let mut a = String::with_capacity(256);
            attr_str(&mut a, "http.request.method", h.method);
            attr_str(&mut a, "server.address", h.service.host());
            attr_int(&mut a, "server.port", 8080);
            attr_str(
                &mut a,
                "url.full",
                &format!("http://{}:8080{}", h.service.host(), h.path),
            );
            attr_int(&mut a, "http.response.status_code", i64::from(h.status));
            let span = span_json(
                &trace,
                &client_id,
                Some(&parent),
                h.method,
                3,
                cs,
                ce,
                &a,
                h.status >= 400,
            );
            self.queue(Signal::Span, caller, ce, span);

            let at: Instance = (h.service, ((r.ids >> (i + 1)) & 1) as usize);
            let mut a = String::with_capacity(256);
            attr_str(&mut a, "http.request.method", h.method);
            attr_str(&mut a, "http.route", h.route);
            attr_str(&mut a, "url.path", &h.path);
            attr_str(&mut a, "url.scheme", "http");
            attr_int(&mut a, "http.response.status_code", i64::from(h.status));
            let name = format!("{} {}", h.method, h.route);
            let span = span_json(
                &trace,
                &server_id,
                Some(&client_id),
                &name,
                2,
                ss,
                se,
                &a,
                h.status >= 500,
            );
            self.queue(Signal::Span, at, se, span);
            server_spans.push((server_id.clone(), at, ss, se));
            parent = server_id;
            caller = at;
            (ps, pe) = (ss, se);
        }

        for (n, e) in r.events.iter().enumerate() {
            let Some((span_id, at, ss, se)) = server_spans.get(e.hop) else {
                continue;
            };
            let t = se - round_us((se - ss) / 10);
            let mixed =
                (r.ids.rotate_right(11) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            let legacy = mixed.is_multiple_of(LEGACY_EVENT_EVERY);
            let rec = log_json(r, e, &trace, span_id, t, legacy);
            self.queue(Signal::Log, *at, t, rec);
            self.count_event(*at, e, t);
        }
    }

    fn count_duration(&mut self, instance: usize, r: &Request, end: Nanos) {
        let secs = r.duration as f64 / 1e9;
        let h = self
            .interval(end)
            .durations
            .entry((instance, r.method, r.route, r.status))
            .or_default();
        if h.count == 0 {
            h.min = secs;
            h.max = secs;
        }
        h.count += 1;
        h.sum += secs;
        h.min = h.min.min(secs);
        h.max = h.max.max(secs);
        let b = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        h.buckets[b] += 1;
    }

    fn count_event(&mut self, at: Instance, e: &Event, t: Nanos) {
        let get = |k: &str| {
            e.attrs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| match v {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    Value::F64(f) => f.to_string(),
                })
        };
        let amount = e.attrs.iter().find_map(|(k, v)| match (k, v) {
            (&"shop.order.amount", Value::F64(f)) => Some(*f),
            _ => None,
        });
        let mut adds: Vec<(&'static str, &'static str, String, f64, bool)> = Vec::new();
        match e.name {
            "shop.auth.login" => adds.push((
                "shop.auth.logins",
                "shop.auth.outcome",
                get("shop.auth.outcome").unwrap_or_default(),
                1.0,
                false,
            )),
            "shop.payment.attempt" => adds.push((
                "shop.payments",
                "shop.payment.outcome",
                get("shop.payment.outcome").unwrap_or_default(),
                1.0,
                false,
            )),
            "shop.order.placed" => {
                let cur = get("shop.order.currency").unwrap_or_default();
                adds.push((
                    "shop.orders",
                    "shop.order.currency",
                    cur.clone(),
                    1.0,
                    false,
                ));
                adds.push((
                    "shop.revenue",
                    "shop.order.currency",
                    cur,
                    amount.unwrap_or(0.0),
                    true,
                ));
            }
            _ => {}
        }
        let iv = self.interval(t);
        for (metric, key, value, v, double) in adds {
            let c = iv
                .counters
                .entry((at, metric, key, value))
                .or_insert((0.0, double));
            c.0 += v;
        }
    }

    fn flush_spans(&mut self) -> io::Result<()> {
        if self.spans.count == 0 {
            return Ok(());
        }
        let mut line = String::from("{\"resourceSpans\":[");
        for (n, ((service, inst), spans)) in std::mem::take(&mut self.spans.items)
            .into_iter()
            .enumerate()
        {
            if n > 0 {
                line.push(',');
            }
            line.push_str("{\"resource\":");
            line.push_str(&resource_json(service, inst));
            line.push_str(",\"scopeSpans\":[{\"scope\":");
            line.push_str(&scope_json(service));
            line.push_str(",\"spans\":[");
            line.push_str(&spans.join(","));
            line.push_str("]}],\"schemaUrl\":");
            push_str(&mut line, SCHEMA_URL);
            line.push('}');
        }
        line.push_str("]}\n");
        self.out.write_all(line.as_bytes())?;
        self.counts.spans += self.spans.count as u64;
        self.counts.lines += 1;
        self.spans.clear();
        Ok(())
    }

    fn flush_logs(&mut self) -> io::Result<()> {
        if self.logs.count == 0 {
            return Ok(());
        }
        let mut line = String::from("{\"resourceLogs\":[");
        for (n, ((service, inst), recs)) in
            std::mem::take(&mut self.logs.items).into_iter().enumerate()
        {
            if n > 0 {
                line.push(',');
            }
            line.push_str("{\"resource\":");
            line.push_str(&resource_json(service, inst));
            line.push_str(",\"scopeLogs\":[{\"scope\":{\"name\":\"shop.events\"},\"logRecords\":[");
            line.push_str(&recs.join(","));
            line.push_str("]}],\"schemaUrl\":");
            push_str(&mut line, SCHEMA_URL);
            line.push('}');
        }
        line.push_str("]}\n");
        self.out.write_all(line.as_bytes())?;
        self.counts.log_records += self.logs.count as u64;
        self.counts.lines += 1;
        self.logs.clear();
        Ok(())
    }

    fn flush_interval(&mut self, i: i64) -> io::Result<()> {
        let Some(iv) = self.intervals.remove(&i) else {
            return Ok(());
        };
        let start = nanos(self.origin + i * METRIC_INTERVAL);
        let end = nanos(self.origin + (i + 1) * METRIC_INTERVAL);
        // instance → metric name → data points
        let mut per: BTreeMap<Instance, BTreeMap<&'static str, (bool, Vec<String>)>> =
            BTreeMap::new();
        for ((inst, method, route, status), h) in &iv.durations {
            let mut a = String::new();
            attr_str(&mut a, "http.request.method", method);
            attr_str(&mut a, "http.route", route);
            attr_int(&mut a, "http.response.status_code", i64::from(*status));
            let buckets: Vec<String> = h.buckets.iter().map(|b| format!("\"{b}\"")).collect();
            let bounds: Vec<String> = BOUNDS.iter().map(|b| fmt_f64(*b)).collect();
            let dp = format!(
                "{{\"attributes\":[{a}],\"startTimeUnixNano\":{start},\"timeUnixNano\":{end},\"count\":\"{}\",\"sum\":{},\"bucketCounts\":[{}],\"explicitBounds\":[{}],\"min\":{},\"max\":{}}}",
                h.count,
                fmt_f64(micros(h.sum)),
                buckets.join(","),
                bounds.join(","),
                fmt_f64(micros(h.min)),
                fmt_f64(micros(h.max))
            );
            per.entry((Service::Gateway, *inst))
                .or_default()
                .entry("http.server.request.duration")
                .or_default()
                .1
                .push(dp);
        }
        for ((inst, metric, key, value), (sum, double)) in &iv.counters {
            let mut a = String::new();
            attr_str(&mut a, key, value);
            let v = if *double {
                format!("\"asDouble\":{}", fmt_f64((sum * 100.0).round() / 100.0))
            } else {
                format!("\"asInt\":\"{}\"", *sum as i64)
            };
            let dp = format!(
                "{{\"attributes\":[{a}],\"startTimeUnixNano\":{start},\"timeUnixNano\":{end},{v}}}"
            );
            let e = per.entry(*inst).or_default().entry(metric).or_default();
            e.0 = true;
            e.1.push(dp);
        }
        if per.is_empty() {
            return Ok(());
        }
        let mut line = String::from("{\"resourceMetrics\":[");
        for (n, ((service, inst), metrics)) in per.into_iter().enumerate() {
            if n > 0 {
                line.push(',');
            }
            line.push_str("{\"resource\":");
            line.push_str(&resource_json(service, inst));
            line.push_str(",\"scopeMetrics\":[{\"scope\":");
            line.push_str(&scope_json(service));
            line.push_str(",\"metrics\":[");
            for (m, (name, (is_sum, points))) in metrics.into_iter().enumerate() {
                if m > 0 {
                    line.push(',');
                }
                self.counts.metric_points += points.len() as u64;
                let (unit, description) = describe(name);
                line.push_str(&format!(
                    "{{\"name\":\"{name}\",\"description\":\"{description}\",\"unit\":\"{unit}\","
                ));
                if is_sum {
                    line.push_str(&format!(
                        "\"sum\":{{\"dataPoints\":[{}],\"aggregationTemporality\":1,\"isMonotonic\":true}}}}",
                        points.join(",")
                    ));
                } else {
                    line.push_str(&format!(
                        "\"histogram\":{{\"dataPoints\":[{}],\"aggregationTemporality\":1}}}}",
                        points.join(",")
                    ));
                }
            }
            line.push_str("]}],\"schemaUrl\":");
            push_str(&mut line, SCHEMA_URL);
            line.push('}');
        }
        line.push_str("]}\n");
        self.out.write_all(line.as_bytes())?;
        self.counts.lines += 1;
        Ok(())
    }
}

fn describe(metric: &str) -> (&'static str, &'static str) {
    match metric {
        "http.server.request.duration" => ("s", "Duration of HTTP server requests."),
        "shop.orders" => ("{order}", "Orders placed."),
        "shop.revenue" => (
            "{currency_unit}",
            "Order amounts, in the currency's major unit.",
        ),
        "shop.auth.logins" => ("{login}", "Login attempts."),
        "shop.payments" => ("{payment}", "Payment attempts."),
        _ => ("1", ""),
    }
}

/// Seconds rounded to the microsecond, the precision of the recorded times.
fn micros(s: f64) -> f64 {
    (s * 1e6).round() / 1e6
}

fn round_us(n: Nanos) -> Nanos {
    (n / 1000) * 1000
}

fn nanos(t: Nanos) -> String {
    format!("\"{t}\"")
}

fn fmt_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn sep(out: &mut String) {
    if !out.is_empty() {
        out.push(',');
    }
}

fn attr_str(out: &mut String, key: &str, v: &str) {
    sep(out);
    out.push_str("{\"key\":");
    push_str(out, key);
    out.push_str(",\"value\":{\"stringValue\":");
    push_str(out, v);
    out.push_str("}}");
}

fn attr_int(out: &mut String, key: &str, v: i64) {
    sep(out);
    out.push_str("{\"key\":");
    push_str(out, key);
    out.push_str(&format!(",\"value\":{{\"intValue\":\"{v}\"}}}}"));
}

fn attr_f64(out: &mut String, key: &str, v: f64) {
    sep(out);
    out.push_str("{\"key\":");
    push_str(out, key);
    out.push_str(&format!(",\"value\":{{\"doubleValue\":{}}}}}", fmt_f64(v)));
}

fn attr(out: &mut String, key: &str, v: &Value) {
    match v {
        Value::Str(s) => attr_str(out, key, s),
        Value::Int(i) => attr_int(out, key, *i),
        Value::F64(f) => attr_f64(out, key, *f),
    }
}

fn resource_json(service: Service, instance: usize) -> String {
    let mut a = String::new();
    attr_str(&mut a, "service.name", service.service_name());
    attr_str(&mut a, "service.namespace", "shop");
    attr_str(&mut a, "service.version", service.version());
    attr_str(
        &mut a,
        "service.instance.id",
        service.instances()[instance.min(1)],
    );
    attr_str(&mut a, "deployment.environment.name", ENVIRONMENT);
    attr_str(&mut a, "telemetry.sdk.language", "rust");
    attr_str(&mut a, "telemetry.sdk.name", "opentelemetry");
    attr_str(&mut a, "telemetry.sdk.version", "0.33.0");
    format!("{{\"attributes\":[{a}]}}")
}

fn scope_json(service: Service) -> String {
    format!(
        "{{\"name\":\"{}\",\"version\":\"{}\"}}",
        service.service_name(),
        service.version()
    )
}

#[allow(clippy::too_many_arguments)]
fn span_json(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    name: &str,
    kind: u8,
    start: Nanos,
    end: Nanos,
    attrs: &str,
    error: bool,
) -> String {
    let mut s = String::with_capacity(256 + attrs.len());
    s.push_str(&format!("{{\"traceId\":\"{trace}\",\"spanId\":\"{id}\","));
    if let Some(p) = parent {
        s.push_str(&format!("\"parentSpanId\":\"{p}\","));
    }
    s.push_str("\"name\":");
    push_str(&mut s, name);
    s.push_str(&format!(
        ",\"kind\":{kind},\"startTimeUnixNano\":{},\"endTimeUnixNano\":{},\"attributes\":[{attrs}],\"status\":{}}}",
        nanos(start),
        nanos(end),
        if error { "{\"code\":2}" } else { "{}" }
    ));
    s
}

fn log_json(r: &Request, e: &Event, trace: &str, span: &str, t: Nanos, legacy: bool) -> String {
    let mut a = String::with_capacity(512);
    if legacy {
        attr_str(&mut a, "event.name", e.name);
    }
    attr_str(&mut a, "client.address", &r.client.address);
    if let Some(s) = &r.client.session {
        attr_str(&mut a, "session.id", s);
    }
    let has_user = e.attrs.iter().any(|(k, _)| *k == "user.id");
    if let (false, Some(u)) = (has_user, &r.client.user) {
        attr_str(&mut a, "user.id", u);
    }
    for (k, v) in &e.attrs {
        attr(&mut a, k, v);
    }
    let mut s = String::with_capacity(256 + a.len());
    s.push_str(&format!(
        "{{\"timeUnixNano\":{},\"observedTimeUnixNano\":{},\"severityNumber\":9,\"severityText\":\"INFO\",\"attributes\":[{a}],\"flags\":1,\"traceId\":\"{trace}\",\"spanId\":\"{span}\"",
        nanos(t),
        nanos(t + 1_000_000)
    ));
    if !legacy {
        s.push_str(",\"eventName\":");
        push_str(&mut s, e.name);
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(v, serde_json::Value::String("a\"b\\c\nd\u{1}".into()));
    }
}
