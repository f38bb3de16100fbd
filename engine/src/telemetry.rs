//! The engine's own telemetry, exported by OTLP like any service's.
//!
//! [`init`] installs a tracer and a meter provider when the standard variables
//! ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` (both signals), or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`
//! (that signal only). The exporters read the rest of the standard variables:
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, to port 4318;
//! `grpc` to port 4317), `_HEADERS`, `_TIMEOUT`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`. `OTEL_SERVICE_NAME` defaults to
//! [`SERVICE_NAME`]; `OTEL_SDK_DISABLED=true` turns it all off.
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 engine run --kafka 127.0.0.1:19092
//! ```
//!
//! Spans (one per piece of work, never per row; [`span`]):
//! - `engine.evaluate`: one evaluation pass (`outputs`, `watermark`)
//! - `engine.sink.deliver`: one delivery of a batch to a sink (`sink`,
//!   `outputs`, `attempt`; an error status when it failed)
//! - `engine.decode`: the decoding of one Kafka message into rows
//!   (`messaging.destination.name`, `messaging.destination.partition.id`,
//!   `messaging.kafka.offset`, `rows`), timed by the source ([`decoded`])
//!
//! Metrics: the `/metrics` figures that matter for operating it, read from
//! the API's board when the exporter collects ([`watch`]), and the
//! `otelguard.operation.duration` histogram of every span above.
//!
//! Built without the `otel` cargo feature, or with none of the variables set,
//! nothing is installed: [`span`] returns an empty guard at the cost of one
//! atomic load, and nothing is exported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// `service.name` when `OTEL_SERVICE_NAME` is not set.
pub const SERVICE_NAME: &str = "otelguard-engine";

/// Whether [`init`] installed an exporter of spans.
static TRACING: AtomicBool = AtomicBool::new(false);

/// A variable of the environment, when set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Which signals the environment asks to export: (traces, metrics).
pub fn requested() -> (bool, bool) {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return (false, false);
    }
    let all = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    (
        all || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some(),
        all || var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some(),
    )
}

/// The installed providers; [`Telemetry::shutdown`] flushes them.
pub struct Telemetry {
    #[cfg(feature = "otel")]
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    #[cfg(feature = "otel")]
    meter: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Telemetry {
    /// Exports what is left and stops the exporters. Errors go to stderr:
    /// there is no telemetry left to report them through.
    pub fn shutdown(self) {
        TRACING.store(false, Ordering::Relaxed);
        #[cfg(feature = "otel")]
        {
            if let Some(t) = self.tracer
                && let Err(e) = t.shutdown()
            {
                eprintln!("telemetry: exporting the last spans: {e}");
            }
            if let Some(m) = self.meter
                && let Err(e) = m.shutdown()
            {
                eprintln!("telemetry: exporting the last metrics: {e}");
            }
        }
    }
}

/// Installs the exporters the environment asks for (see the module
/// documentation); `None` when it asks for none. Call once, in a tokio runtime.
pub fn init() -> anyhow::Result<Option<Telemetry>> {
    let (traces, metrics) = requested();
    if !traces && !metrics {
        return Ok(None);
    }
    #[cfg(not(feature = "otel"))]
    {
        eprintln!(
            "OTEL_EXPORTER_OTLP_*ENDPOINT is set, but this engine was built without the `otel` \
             cargo feature: it exports nothing of its own (build with --features otel)"
        );
        Ok(None)
    }
    #[cfg(feature = "otel")]
    otel::init(traces, metrics).map(Some)
}

/// A span of the engine's own work; ends when dropped. Empty (and free)
/// unless spans are exported.
#[must_use = "the span ends when dropped"]
pub struct Span {
    #[cfg(feature = "otel")]
    inner: Option<otel::Live>,
}

/// Starts the span `name` now.
pub fn span(_name: &'static str) -> Span {
    Span {
        #[cfg(feature = "otel")]
        inner: TRACING
            .load(Ordering::Relaxed)
            .then(|| otel::Live::start(_name, None)),
    }
}

impl Span {
    /// Adds an integer attribute.
    pub fn int(&mut self, _key: &'static str, _value: i64) {
        #[cfg(feature = "otel")]
        if let Some(live) = &mut self.inner {
            live.set(opentelemetry::KeyValue::new(_key, _value));
        }
    }

    /// Adds a text attribute.
    pub fn text(&mut self, _key: &'static str, _value: &str) {
        #[cfg(feature = "otel")]
        if let Some(live) = &mut self.inner {
            live.set(opentelemetry::KeyValue::new(_key, _value.to_string()));
        }
    }

    /// Marks the span failed, with why.
    pub fn fail(&mut self, _why: &str) {
        #[cfg(feature = "otel")]
        if let Some(live) = &mut self.inner {
            live.fail(_why);
        }
    }
}

/// Records a span for work timed elsewhere: `name` from `start` to `end`.
/// The Kafka source times each message's decoding; this makes it a span.
pub fn decoded(
    _topic: &str,
    _partition: i32,
    _offset: i64,
    _rows: Option<usize>,
    _start: SystemTime,
    _end: SystemTime,
) {
    #[cfg(feature = "otel")]
    if TRACING.load(Ordering::Relaxed) {
        use opentelemetry::KeyValue;
        let mut live = otel::Live::start("engine.decode", Some(_start));
        live.set(KeyValue::new("messaging.system", "kafka"));
        live.set(KeyValue::new(
            "messaging.destination.name",
            _topic.to_string(),
        ));
        live.set(KeyValue::new(
            "messaging.destination.partition.id",
            _partition.to_string(),
        ));
        live.set(KeyValue::new("messaging.kafka.offset", _offset));
        match _rows {
            Some(n) => live.set(KeyValue::new("rows", n as i64)),
            None => live.fail("the message did not decode (dead-lettered)"),
        }
        live.end_at = Some(_end);
    }
}

/// Exports the board's figures as metrics, read when the exporter collects.
pub fn watch(_board: std::sync::Arc<std::sync::Mutex<crate::api::Board>>) {
    #[cfg(feature = "otel")]
    if otel::METRICS.load(Ordering::Relaxed) {
        otel::watch(_board);
    }
}

#[cfg(feature = "otel")]
mod otel {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Instant, SystemTime};

    use opentelemetry::metrics::{AsyncInstrument, Histogram, Meter};
    use opentelemetry::trace::{Span as _, Status, Tracer as _};
    use opentelemetry::{KeyValue, global};
    use opentelemetry_otlp::{MetricExporter, SpanExporter};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::SdkMeterProvider;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::{SERVICE_NAME, TRACING, Telemetry};
    use crate::api::Board;

    /// What one metric reads from the board: its points, attributes and value.
    type Rows = fn(&Board) -> Vec<(Vec<KeyValue>, u64)>;

    /// Whether a meter provider was installed.
    pub static METRICS: AtomicBool = AtomicBool::new(false);
    /// `otelguard.operation.duration`, by `operation` (the span's name).
    static DURATION: OnceLock<Histogram<f64>> = OnceLock::new();

    fn meter() -> Meter {
        global::meter(SERVICE_NAME)
    }

    pub fn init(traces: bool, metrics: bool) -> anyhow::Result<Telemetry> {
        let mut resource = Resource::builder();
        if super::var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let tracer = if traces {
            let exporter = SpanExporter::builder()
                .build()
                .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_*: the span exporter: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_batch_exporter(exporter)
                .build();
            global::set_tracer_provider(provider.clone());
            TRACING.store(true, Ordering::Relaxed);
            Some(provider)
        } else {
            None
        };
        let meter = if metrics {
            let exporter = MetricExporter::builder()
                .build()
                .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_*: the metric exporter: {e}"))?;
            let provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_periodic_exporter(exporter)
                .build();
            global::set_meter_provider(provider.clone());
            METRICS.store(true, Ordering::Relaxed);
            let _ = DURATION.set(
                meter()
                    .f64_histogram("otelguard.operation.duration")
                    .with_unit("s")
                    // the buckets of /metrics' otelguard_rule_eval_seconds
                    .with_boundaries(crate::evaluator::Durations::BOUNDS.to_vec())
                    .with_description(
                        "Time the engine's own operations took, by operation (its span's name).",
                    )
                    .build(),
            );
            Some(provider)
        } else {
            None
        };
        eprintln!(
            "exporting the engine's own {} by OTLP",
            match (traces, metrics) {
                (true, true) => "spans and metrics",
                (true, false) => "spans",
                _ => "metrics",
            }
        );
        Ok(Telemetry { tracer, meter })
    }

    /// A span being recorded.
    pub struct Live {
        name: &'static str,
        span: global::BoxedSpan,
        started: Instant,
        /// when it began, if not when it was made
        began: Option<SystemTime>,
        /// when the span ends, if not when dropped
        pub end_at: Option<SystemTime>,
        failed: bool,
    }

    impl Live {
        pub fn start(name: &'static str, at: Option<SystemTime>) -> Live {
            let tracer = global::tracer(SERVICE_NAME);
            let mut builder = tracer.span_builder(name);
            if let Some(at) = at {
                builder = builder.with_start_time(at);
            }
            Live {
                name,
                span: builder.start(&tracer),
                started: Instant::now(),
                began: at,
                end_at: None,
                failed: false,
            }
        }

        pub fn set(&mut self, kv: KeyValue) {
            self.span.set_attribute(kv);
        }

        pub fn fail(&mut self, why: &str) {
            self.failed = true;
            self.span.set_status(Status::error(why.to_string()));
        }
    }

    impl Drop for Live {
        fn drop(&mut self) {
            let seconds = match (self.began, self.end_at) {
                (Some(began), Some(end)) => {
                    self.span.end_with_timestamp(end);
                    end.duration_since(began).unwrap_or_default().as_secs_f64()
                }
                _ => {
                    self.span.end();
                    self.started.elapsed().as_secs_f64()
                }
            };
            if let Some(h) = DURATION.get() {
                let outcome = if self.failed { "error" } else { "ok" };
                h.record(
                    seconds,
                    &[
                        KeyValue::new("operation", self.name),
                        KeyValue::new("outcome", outcome),
                    ],
                );
            }
        }
    }

    /// The figures of the board, observed when the exporter collects.
    pub fn watch(board: Arc<Mutex<Board>>) {
        let m = meter();
        let counters: [(&str, &str, Rows); 7] = [
            ("otelguard.rows", "Rows ingested, by table.", |b| {
                b.stats
                    .rows
                    .iter()
                    .map(|(t, n)| (vec![KeyValue::new("table", *t)], *n))
                    .collect()
            }),
            (
                "otelguard.rows.late",
                "Rows that arrived after the watermark.",
                |b| vec![(vec![], b.stats.late_rows)],
            ),
            ("otelguard.alerts.fired", "Firing alerts, by rule.", |b| {
                b.rules
                    .iter()
                    .filter(|r| r.kind == "alert")
                    .map(|r| (vec![KeyValue::new("rule", r.id.clone())], r.fired))
                    .collect()
            }),
            (
                "otelguard.sink.queued",
                "Outputs taken onto a sink's queue.",
                |b| by_sink(b, |s| s.queued),
            ),
            (
                "otelguard.sink.delivered",
                "Outputs a sink delivered.",
                |b| by_sink(b, |s| s.delivered),
            ),
            (
                "otelguard.sink.retried",
                "Deliveries a sink tried again after a failure.",
                |b| by_sink(b, |s| s.retried),
            ),
            (
                "otelguard.sink.dropped",
                "Outputs a sink dropped: its queue was full, or it refused them.",
                |b| by_sink(b, |s| s.dropped),
            ),
        ];
        for (name, help, rows) in counters {
            m.u64_observable_counter(name)
                .with_description(help)
                .with_callback(reader(&board, rows))
                .build();
        }
        let gauges: [(&str, &str, Rows); 5] = [
            (
                "otelguard.buffered_rows",
                "Rows held for open windows.",
                |b| vec![(vec![], b.stats.buffered_rows as u64)],
            ),
            (
                "otelguard.sink.queue_depth",
                "Outputs queued for a sink and not yet delivered.",
                |b| by_sink(b, |s| s.depth),
            ),
            (
                "otelguard.incidents.open",
                "Open incidents (pending or firing), by rule.",
                |b| {
                    b.open_incidents
                        .iter()
                        .map(|(rule, n)| (vec![KeyValue::new("rule", rule.clone())], *n))
                        .collect()
                },
            ),
            (
                "otelguard.kafka.consumer_lag",
                "Messages of a Kafka partition at or after the group's committed offset.",
                |b| {
                    b.kafka_lag
                        .iter()
                        .filter_map(|l| Some((partition(l), l.uncommitted? as u64)))
                        .collect()
                },
            ),
            (
                "otelguard.kafka.unread",
                "Messages of a Kafka partition the engine has not read yet.",
                |b| {
                    b.kafka_lag
                        .iter()
                        .filter_map(|l| Some((partition(l), l.unread? as u64)))
                        .collect()
                },
            ),
        ];
        for (name, help, rows) in gauges {
            m.u64_observable_gauge(name)
                .with_description(help)
                .with_callback(reader(&board, rows))
                .build();
        }
    }

    /// A callback that observes what `rows` reads from the board.
    fn reader(
        board: &Arc<Mutex<Board>>,
        rows: Rows,
    ) -> impl Fn(&dyn AsyncInstrument<u64>) + Send + Sync + 'static {
        let board = board.clone();
        move |o| {
            for (attrs, n) in rows(&lock(&board)) {
                o.observe(n, &attrs);
            }
        }
    }

    fn lock(board: &Mutex<Board>) -> std::sync::MutexGuard<'_, Board> {
        board.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn by_sink(
        b: &Board,
        figure: fn(&crate::sinks::SinkStats) -> u64,
    ) -> Vec<(Vec<KeyValue>, u64)> {
        b.sinks
            .iter()
            .map(|s| (vec![KeyValue::new("sink", s.sink.clone())], figure(s)))
            .collect()
    }

    fn partition(l: &crate::api::KafkaLag) -> Vec<KeyValue> {
        vec![
            KeyValue::new("topic", l.topic.clone()),
            KeyValue::new("partition", i64::from(l.partition)),
        ]
    }
}
