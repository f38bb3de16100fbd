//! CPU profiles on demand, and the allocator's statistics as metrics.
//!
//! **Profiles.** Every service serves, on its admin side (the routes sit
//! behind `/admin/chaos`'s checks: direct calls from this host holding
//! `SHOP_ADMIN_TOKEN`, see [`super::chaos::admin`]):
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /admin/pprof/profile?seconds=N&frequency=F` | a CPU profile in pprof's protobuf format (`go tool pprof`, Pyroscope, speedscope read it), uncompressed |
//! | `GET /admin/pprof/flamegraph?seconds=N&frequency=F` | the same samples as an SVG flamegraph |
//!
//! `seconds` is 1 to [`MAX_SECONDS`] (default [`DEFAULT_SECONDS`]),
//! `frequency` 1 to [`MAX_FREQUENCY`] samples a second (default
//! [`DEFAULT_FREQUENCY`]). The sampler is the `pprof` crate's: a SIGPROF
//! timer for the whole process, so one profile runs at a time; a second
//! request meanwhile is answered 409 `profile_in_progress` with `Retry-After`.
//! A CPU profile counts time on a CPU only: a request waiting (for a
//! connection, a downstream, a sleep) costs no samples, whoever waits.
//!
//! **Allocator statistics.** The shop's library installs [`CountingAllocator`]
//! as the global allocator of every binary built on it (the services,
//! `shop-load`, the tests): the system allocator, counted with three relaxed
//! atomic additions per call. [`register_allocator_metrics`] reports them:
//!
//! | metric | instrument | what |
//! | --- | --- | --- |
//! | `rust.memory.used` | up-down counter, By | heap bytes allocated and not yet freed |
//! | `rust.memory.allocated` | counter, By | heap bytes allocated since start (freed or not) |
//! | `rust.memory.allocations` | counter, `{allocation}` | allocations since start |
//!
//! (shaped after OpenTelemetry's `go.memory.*` runtime conventions; there
//! are none for Rust.) Resident memory is `process.memory.usage`
//! ([`crate::telemetry`]). The rate of `rust.memory.allocated` over the
//! request rate is the bytes a request allocates (`perf.alloc_heavy` reads
//! it); `rust.memory.used` growing with requests is memory kept per request.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry::metrics::Meter;

use super::Service;
use super::http::ApiError;

// ---------------------------------------------------------------------------
// The allocator

/// The system allocator, counting what passes through it.
pub struct CountingAllocator;

static USED: AtomicI64 = AtomicI64::new(0);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn counted(size: usize) {
    USED.fetch_add(size as i64, Ordering::Relaxed);
    ALLOCATED.fetch_add(size as u64, Ordering::Relaxed);
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; the counters are
// atomics, which neither allocate nor lock (safe in a signal handler too).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is System's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            counted(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            counted(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from System.
        unsafe { System.dealloc(ptr, layout) };
        USED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and the caller's contract for `realloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as an allocation of the new size and a free of the old
            // (whether the block moved or grew in place).
            USED.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

/// What the allocator has counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Heap bytes allocated and not yet freed.
    pub used: i64,
    /// Heap bytes allocated since start.
    pub allocated: u64,
    /// Allocations (and reallocations) since start.
    pub allocations: u64,
}

/// The counters now.
pub fn allocator_stats() -> AllocatorStats {
    AllocatorStats {
        used: USED.load(Ordering::Relaxed),
        allocated: ALLOCATED.load(Ordering::Relaxed),
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
    }
}

/// Reports the allocator's counters on `meter`, read at each export.
pub fn register_allocator_metrics(meter: &Meter) {
    meter
        .i64_observable_up_down_counter("rust.memory.used")
        .with_unit("By")
        .with_description("Heap bytes allocated and not yet freed")
        .with_callback(|o| o.observe(allocator_stats().used, &[]))
        .build();
    meter
        .u64_observable_counter("rust.memory.allocated")
        .with_unit("By")
        .with_description("Heap bytes allocated since the process started")
        .with_callback(|o| o.observe(allocator_stats().allocated, &[]))
        .build();
    meter
        .u64_observable_counter("rust.memory.allocations")
        .with_unit("{allocation}")
        .with_description("Heap allocations since the process started")
        .with_callback(|o| o.observe(allocator_stats().allocations, &[]))
        .build();
}

// ---------------------------------------------------------------------------
// CPU profiles

/// The longest profile served, in seconds.
pub const MAX_SECONDS: u64 = 60;
/// A profile's length when `seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 10;
/// The highest sampling frequency served, per second.
pub const MAX_FREQUENCY: u64 = 1000;
/// Samples a second when `frequency` is not given (off the round 100, so
/// that sampling does not beat with timers of the same period).
pub const DEFAULT_FREQUENCY: u64 = 99;

/// Frames under these libraries are not unwound: a sample taken inside the
/// C library or the dynamic loader could deadlock the unwinder.
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// Set while a profile runs: the sampler is one per process.
static PROFILING: AtomicBool = AtomicBool::new(false);

/// The admin's profile routes, for `service`; [`super::chaos::admin`] puts
/// them behind its checks.
pub fn routes(service: Option<Service>) -> Router {
    let name = service.map_or("shop", Service::service_name);
    Router::new()
        .route(
            "/admin/pprof/profile",
            get(move |q: Query<HashMap<String, String>>| profile(name, Output::Pprof, q)),
        )
        .route(
            "/admin/pprof/flamegraph",
            get(move |q: Query<HashMap<String, String>>| profile(name, Output::Flamegraph, q)),
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Pprof,
    Flamegraph,
}

/// What a profile request asked for, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    seconds: u64,
    frequency: u64,
}

impl Request {
    fn parse(query: &HashMap<String, String>) -> Result<Request, ApiError> {
        if let Some(other) = query
            .keys()
            .find(|k| !matches!(k.as_str(), "seconds" | "frequency"))
        {
            return Err(invalid(format!(
                "unknown parameter {other:?}; the parameters are seconds and frequency"
            )));
        }
        let number = |name: &str, default: u64, max: u64| -> Result<u64, ApiError> {
            match query.get(name) {
                None => Ok(default),
                Some(raw) => raw
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "{name} must be a whole number from 1 to {max}, not {raw:?}"
                        ))
                    }),
            }
        };
        Ok(Request {
            seconds: number("seconds", DEFAULT_SECONDS, MAX_SECONDS)?,
            frequency: number("frequency", DEFAULT_FREQUENCY, MAX_FREQUENCY)?,
        })
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_parameter",
        message,
    )
}

/// Releases [`PROFILING`] when the profile ends, however it ends.
struct Running;

impl Running {
    fn start() -> Option<Running> {
        PROFILING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(Running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

/// A profile could not be taken.
#[derive(Debug, thiserror::Error)]
enum ProfileError {
    #[error("starting the CPU sampler: {0}")]
    Start(pprof::Error),
    #[error("building the profile: {0}")]
    Report(pprof::Error),
    #[error("writing the flamegraph: {0}")]
    Flamegraph(pprof::Error),
}

async fn profile(
    service: &'static str,
    output: Output,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let request = match Request::parse(&query) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(running) = Running::start() else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "profile_in_progress",
            "another profile of this service is running; one runs at a time",
        )
        .retry_after(request.seconds)
        .into_response();
    };
    tracing::info!(
        seconds = request.seconds,
        frequency = request.frequency,
        "CPU profile started"
    );
    // The sampler runs for the whole process; this thread only waits and
    // then symbolises, off the runtime's workers.
    let taken = tokio::task::spawn_blocking(move || {
        let _running = running;
        sample(service, output, request)
    })
    .await;
    match taken {
        Ok(Ok(body)) => {
            let (content_type, file) = match output {
                Output::Pprof => ("application/octet-stream", "profile.pb"),
                Output::Flamegraph => ("image/svg+xml", "flamegraph.svg"),
            };
            let mut response = body.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "inline; filename=\"{service}-{}s-{file}\"",
                request.seconds
            )) {
                headers.insert(header::CONTENT_DISPOSITION, v);
            }
            response
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "CPU profile failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "profile_failed",
                e.to_string(),
            )
            .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "CPU profile task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "profile_failed",
                "the profiling task failed",
            )
            .into_response()
        }
    }
}

/// Samples the process for the request's length and encodes the result.
fn sample(service: &str, output: Output, request: Request) -> Result<Vec<u8>, ProfileError> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(request.frequency as i32)
        .blocklist(&BLOCKLIST)
        .build()
        .map_err(ProfileError::Start)?;
    std::thread::sleep(Duration::from_secs(request.seconds));
    let report = guard
        .report()
        .frames_post_processor(without_sampler_frames)
        .build()
        .map_err(ProfileError::Report)?;
    drop(guard);
    match output {
        Output::Pprof => {
            use pprof::protos::Message as _;
            let profile = report.pprof().map_err(ProfileError::Report)?;
            Ok(profile.encode_to_vec())
        }
        Output::Flamegraph => {
            let mut options = pprof::flamegraph::Options::default();
            options.title = format!(
                "{service}: CPU, {} s at {} Hz",
                request.seconds, request.frequency
            );
            options.count_name = "samples".to_owned();
            let mut svg = Vec::new();
            report
                .flamegraph_with_options(&mut svg, &mut options)
                .map_err(ProfileError::Flamegraph)?;
            if svg.is_empty() {
                // No sample at all: the service did not run on a CPU.
                svg = format!(
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\">\
                     <text x=\"10\" y=\"25\">{service}: no CPU samples in {} s (idle)</text></svg>",
                    request.seconds
                )
                .into_bytes();
            }
            Ok(svg)
        }
    }
}

/// Drops the sampler's own frames from the leaf end of a stack: every
/// sample is taken by the unwinder inside the signal handler, which is not
/// where the service spent its time.
fn without_sampler_frames(frames: &mut pprof::Frames) {
    let own = frames
        .frames
        .iter()
        .take_while(|frame| {
            frame.iter().any(|symbol| {
                let name = symbol.name();
                name.starts_with("backtrace::") || name.contains("pprof::")
            })
        })
        .count();
    frames.frames.drain(..own);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parameters_are_bounded_and_named_in_errors() {
        assert_eq!(
            Request::parse(&query(&[])).unwrap(),
            Request {
                seconds: DEFAULT_SECONDS,
                frequency: DEFAULT_FREQUENCY
            }
        );
        assert_eq!(
            Request::parse(&query(&[("seconds", "3"), ("frequency", "250")])).unwrap(),
            Request {
                seconds: 3,
                frequency: 250
            }
        );
        for (pairs, names) in [
            (vec![("seconds", "0")], "seconds"),
            (vec![("seconds", "61")], "seconds"),
            (vec![("seconds", "ten")], "seconds"),
            (vec![("frequency", "5000")], "frequency"),
            (vec![("secs", "5")], "secs"),
        ] {
            let e = Request::parse(&query(&pairs)).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter")
            );
            assert!(e.message.contains(names), "{}", e.message);
        }
    }

    #[test]
    fn one_profile_at_a_time() {
        let first = Running::start().expect("no profile runs yet");
        assert!(Running::start().is_none());
        drop(first);
        assert!(Running::start().is_some());
    }

    #[test]
    fn the_allocator_counts_what_passes_through_it() {
        let before = allocator_stats();
        let buffer = std::hint::black_box(vec![1u8; 1 << 20]);
        let during = allocator_stats();
        drop(buffer);
        // Other test threads allocate meanwhile: the counters only ever add
        // this buffer on top of what they do.
        assert!(during.allocated >= before.allocated + (1 << 20));
        assert!(during.allocations > before.allocations);
    }
}
