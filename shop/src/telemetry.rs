//! One telemetry setup shared by every shop service.
//!
//! [`init`] installs, for one process:
//! - a tracer provider (OTLP, batch) behind `tracing` through `tracing-opentelemetry`,
//!   with parent-based ratio head sampling;
//! - a logger provider (OTLP, batch) fed by `opentelemetry-appender-tracing`, so
//!   every `tracing` event becomes a log record carrying the current span's
//!   `trace_id`/`span_id`, and events given a `name:` (the domain events) carry it
//!   in the LogRecord `event_name` field;
//! - a meter provider (OTLP, periodic) with process and tokio runtime gauges;
//! - the W3C trace-context propagator.
//!
//! The standard variables are honoured: `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_ENDPOINT` and its per-signal
//! forms, `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, default, or `http/protobuf`),
//! `OTEL_EXPORTER_OTLP_HEADERS`/`_TIMEOUT`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_*`,
//! `OTEL_BLRP_*`, and `OTEL_SDK_DISABLED=true` (nothing is exported).
//!
//! Head sampling drops spans only: log records (and so the domain events) are
//! exported whatever the sampling decision, with the trace id of the request.
//! [`Telemetry::shutdown`] flushes all three signals; every service calls it on
//! graceful shutdown.

use std::time::Duration;

use opentelemetry::metrics::Meter;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::{LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Targets whose own events must never be turned into OTLP log records: the
/// exporters' dependencies would log about exporting, which would be exported.
const QUIET_TARGETS: &str = "opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
                             h2=off,tonic=off,hyper=off,hyper_util=off,tower=off,reqwest=off,sqlx=warn";

/// Errors of telemetry setup.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("building the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("installing the tracing subscriber: {0}")]
    Subscriber(String),
}

/// The installed providers; call [`Telemetry::shutdown`] before the process exits.
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    logger: SdkLoggerProvider,
}

impl Telemetry {
    /// Flushes and shuts down logs, then spans, then metrics. Errors are
    /// reported on stderr: there is no telemetry left to report them through.
    pub fn shutdown(self) {
        for (signal, result) in [
            ("logs", self.logger.shutdown()),
            ("traces", self.tracer.shutdown()),
            ("metrics", self.meter.shutdown()),
        ] {
            if let Err(e) = result {
                eprintln!("telemetry: shutting down {signal}: {e}");
            }
        }
    }
}

fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

fn http_protocol() -> bool {
    std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").is_ok_and(|p| p.starts_with("http"))
}

/// The head sampler: `OTEL_TRACES_SAMPLER` when set (the SDK reads it), else
/// parent-based trace-id ratio with the ratio from `OTEL_TRACES_SAMPLER_ARG`
/// (default 1.0). Behind the gateway, a request whose caller sampled it is
/// always sampled, one whose caller did not is never: a trace is kept or
/// dropped as a whole. The gateway is the root of every trace (it never
/// continues an outside caller's), so its ratio decides.
fn sampler() -> Option<Sampler> {
    if std::env::var("OTEL_TRACES_SAMPLER").is_ok() {
        return None;
    }
    let ratio = std::env::var("OTEL_TRACES_SAMPLER_ARG")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|r| (0.0..=1.0).contains(r))
        .unwrap_or(1.0);
    Some(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        ratio,
    ))))
}

fn resource(service_name: &str) -> Resource {
    let mut builder = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        builder = builder.with_service_name(service_name.to_owned());
    }
    let instance: u64 = rand::random();
    let environment = std::env::var("SHOP_ENVIRONMENT").unwrap_or_else(|_| "local".to_owned());
    // What this deployment reports as its version: a release process sets it
    // (and rules/captures/record.sh does, to record a deploy); else the crate's.
    let version =
        std::env::var("SHOP_VERSION").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_owned());
    builder
        .with_attributes([
            KeyValue::new("service.version", version),
            KeyValue::new("service.instance.id", format!("{instance:016x}")),
            KeyValue::new("deployment.environment.name", environment),
        ])
        .build()
}

/// Installs tracing, logs, metrics and propagation for the service `service_name`
/// (e.g. `shop-catalog`). Call once per process, inside a tokio runtime.
pub fn init(service_name: &str) -> Result<Telemetry, TelemetryError> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = resource(service_name);

    let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    if let Some(sampler) = sampler() {
        tracer = tracer.with_sampler(sampler);
    }
    let mut logger = SdkLoggerProvider::builder().with_resource(resource.clone());
    let mut meter = SdkMeterProvider::builder().with_resource(resource);
    if !sdk_disabled() {
        let err = |signal| move |source| TelemetryError::Exporter { signal, source };
        let (spans, logs, metrics) = if http_protocol() {
            (
                SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()
                    .map_err(err("trace"))?,
                LogExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()
                    .map_err(err("log"))?,
                MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()
                    .map_err(err("metric"))?,
            )
        } else {
            (
                SpanExporter::builder()
                    .with_tonic()
                    .build()
                    .map_err(err("trace"))?,
                LogExporter::builder()
                    .with_tonic()
                    .build()
                    .map_err(err("log"))?,
                MetricExporter::builder()
                    .with_tonic()
                    .build()
                    .map_err(err("metric"))?,
            )
        };
        tracer = tracer.with_batch_exporter(spans);
        logger = logger.with_batch_exporter(logs);
        meter = meter.with_periodic_exporter(metrics);
    }
    let tracer = tracer.build();
    let logger = logger.build();
    let meter = meter.build();
    global::set_tracer_provider(tracer.clone());
    global::set_meter_provider(meter.clone());

    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .add_directive_list(QUIET_TARGETS)
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .compact()
                .with_filter(filter()),
        )
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer.tracer(service_name.to_owned()))
                .with_filter(filter()),
        )
        .with(OpenTelemetryTracingBridge::new(&logger).with_filter(filter()))
        .with(console_layer())
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;

    register_usage_metrics(&global::meter("shop.usage"));
    Ok(Telemetry {
        tracer,
        meter,
        logger,
    })
}

/// tokio-console's layer (`--features console`, built with `--cfg
/// tokio_unstable`): it serves the console on `TOKIO_CONSOLE_BIND`, by default
/// 127.0.0.1:6669 (one port per process: set it per service).
#[cfg(feature = "console")]
fn console_layer<S>() -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    Some(
        console_subscriber::ConsoleLayer::builder()
            .with_default_env()
            .spawn::<S>(),
    )
}

#[cfg(not(feature = "console"))]
fn console_layer() -> Option<tracing_subscriber::layer::Identity> {
    None
}

#[cfg(all(feature = "console", not(tokio_unstable)))]
compile_error!(
    "the `console` feature needs tokio's task instrumentation: build with RUSTFLAGS=\"--cfg tokio_unstable\""
);

trait DirectiveList {
    fn add_directive_list(self, list: &str) -> Self;
}

impl DirectiveList for EnvFilter {
    fn add_directive_list(self, list: &str) -> Self {
        list.split(',')
            .filter_map(|d| d.trim().parse().ok())
            .fold(self, |f, d| f.add_directive(d))
    }
}

/// Process CPU and memory, and the tokio runtime's workers, tasks and queue:
/// the U and S of USE for the service itself.
fn register_usage_metrics(meter: &Meter) {
    meter
        .f64_observable_counter("process.cpu.time")
        .with_unit("s")
        .with_description("CPU time of this process (user and system)")
        .with_callback(|o| {
            if let Some((user, system)) = proc_cpu_seconds() {
                o.observe(user, &[KeyValue::new("cpu.mode", "user")]);
                o.observe(system, &[KeyValue::new("cpu.mode", "system")]);
            }
        })
        .build();
    meter
        .i64_observable_up_down_counter("process.memory.usage")
        .with_unit("By")
        .with_description("Resident memory of this process")
        .with_callback(|o| {
            if let Some(rss) = proc_rss_bytes() {
                o.observe(rss, &[]);
            }
        })
        .build();
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let h = handle.clone();
    meter
        .i64_observable_gauge("tokio.runtime.workers")
        .with_description("Worker threads of the tokio runtime")
        .with_callback(move |o| o.observe(h.metrics().num_workers() as i64, &[]))
        .build();
    let h = handle.clone();
    meter
        .i64_observable_gauge("tokio.runtime.alive_tasks")
        .with_description("Tasks alive in the tokio runtime")
        .with_callback(move |o| o.observe(h.metrics().num_alive_tasks() as i64, &[]))
        .build();
    let h = handle.clone();
    meter
        .i64_observable_gauge("tokio.runtime.global_queue_depth")
        .with_description("Tasks waiting in the runtime's global queue (saturation)")
        .with_callback(move |o| o.observe(h.metrics().global_queue_depth() as i64, &[]))
        .build();
    // Busy time per worker: its rate over the number of workers is how busy
    // the runtime is (a blocked worker is busy the whole time).
    let h = handle.clone();
    meter
        .f64_observable_counter("tokio.runtime.worker.busy_time")
        .with_unit("s")
        .with_description("Time each worker thread spent busy (polling tasks)")
        .with_callback(move |o| {
            let m = h.metrics();
            for w in 0..m.num_workers() {
                let busy = m.worker_total_busy_duration(w).as_secs_f64();
                o.observe(busy, &[KeyValue::new("tokio.worker", w as i64)]);
            }
        })
        .build();
    let h = handle.clone();
    meter
        .u64_observable_counter("tokio.runtime.worker.park_count")
        .with_description("Times each worker thread parked (ran out of work)")
        .with_callback(move |o| {
            let m = h.metrics();
            for w in 0..m.num_workers() {
                o.observe(
                    m.worker_park_count(w),
                    &[KeyValue::new("tokio.worker", w as i64)],
                );
            }
        })
        .build();
    register_unstable_runtime_metrics(meter, handle);
}

/// Blocking threads and their queue, which tokio reports only when built with
/// `--cfg tokio_unstable` (as for tokio-console).
#[cfg(tokio_unstable)]
fn register_unstable_runtime_metrics(meter: &Meter, handle: tokio::runtime::Handle) {
    let h = handle.clone();
    meter
        .i64_observable_gauge("tokio.runtime.blocking_threads")
        .with_description("Threads of the blocking pool, busy and idle")
        .with_callback(move |o| {
            let m = h.metrics();
            let idle = m.num_idle_blocking_threads() as i64;
            let all = m.num_blocking_threads() as i64;
            o.observe(all - idle, &[KeyValue::new("state", "busy")]);
            o.observe(idle, &[KeyValue::new("state", "idle")]);
        })
        .build();
    meter
        .i64_observable_gauge("tokio.runtime.blocking_queue_depth")
        .with_description("Tasks waiting for a thread of the blocking pool")
        .with_callback(move |o| o.observe(handle.metrics().blocking_queue_depth() as i64, &[]))
        .build();
}

#[cfg(not(tokio_unstable))]
fn register_unstable_runtime_metrics(_: &Meter, _: tokio::runtime::Handle) {}

/// (user, system) CPU seconds from /proc/self/stat; None off Linux.
fn proc_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    const TICKS_PER_SECOND: f64 = 100.0;
    Some((ticks(11)? / TICKS_PER_SECOND, ticks(12)? / TICKS_PER_SECOND))
}

/// Resident set size in bytes from /proc/self/statm; None off Linux.
fn proc_rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Writes the current span's context (W3C `traceparent`/`tracestate`) into
/// outgoing HTTP headers.
pub fn inject_current(headers: &mut axum::http::HeaderMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

/// Reads a caller's W3C trace context from incoming HTTP headers.
pub fn extract(headers: &axum::http::HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

struct HeaderInjector<'a>(&'a mut axum::http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// How long a graceful shutdown waits for in-flight requests before exporting
/// what is left.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
