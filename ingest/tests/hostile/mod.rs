//! Hostile OTLP requests, written as protobuf bytes by hand (building them as
//! prost structs would cost the test what the decoder must not spend), and a
//! counting global allocator to measure what decoding them costs.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// 2026-01-01T00:00:00Z in Unix nanoseconds.
pub const T0: u64 = 1_767_225_600_000_000_000;

/// Counts the bytes allocated and not yet freed: per thread (for a decode
/// run on the test's own thread) and in all (for a server's threads).
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_LIVE: Cell<isize> = const { Cell::new(0) };
    static THREAD_PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
    let _ = THREAD_LIVE.try_with(|l| {
        let now = l.get() + n as isize;
        l.set(now);
        let _ = THREAD_PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
    let _ = THREAD_LIVE.try_with(|l| l.set(l.get() - n as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// The most bytes this thread held at once while `f` ran, above what it held
/// before.
pub fn thread_peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = THREAD_LIVE.with(Cell::get);
    THREAD_PEAK.with(|p| p.set(base));
    let out = f();
    let peak = THREAD_PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

/// The most bytes the whole process held at once while `f` ran, above what
/// it held before. Callers run one at a time (see `PROCESS`).
pub async fn process_peak<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f.await;
    let peak = PEAK.load(Ordering::Relaxed);
    (out, peak.saturating_sub(base))
}

/// Held by tests that measure the whole process, so they run one at a time.
pub static PROCESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const MB: usize = 1 << 20;

/// Prints a measured peak (seen with `--nocapture`; BENCHMARKS.md quotes them).
pub fn shown(what: &str, peak: usize) {
    eprintln!(
        "hostile input: {what}: peak {:.1} MB",
        peak as f64 / MB as f64
    );
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
pub fn field(num: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    varint(u64::from(num) << 3 | 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn fixed64(num: u32, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(num) << 3 | 1, &mut out);
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// A `KeyValue` with a string value.
pub fn string_attr(key: &str, value: &str) -> Vec<u8> {
    let mut kv = field(1, key.as_bytes());
    kv.extend(field(2, &field(1, value.as_bytes())));
    kv
}

/// A `Resource` of `attributes` attributes, each value `value_bytes` long.
fn resource(attributes: usize, value_bytes: usize) -> Vec<u8> {
    let value = "v".repeat(value_bytes);
    let mut out = field(1, &string_attr("service.name", "hostile"));
    for i in 0..attributes {
        out.extend(field(1, &string_attr(&format!("k{i}"), &value)));
    }
    out
}

/// A small span with a plausible time.
fn span(i: u64) -> Vec<u8> {
    let mut s = field(1, &[7; 16]);
    s.extend(field(2, &i.to_le_bytes()));
    s.extend(fixed64(7, T0 + i));
    s.extend(fixed64(8, T0 + i + 1));
    s
}

/// An `ExportTraceServiceRequest` of one resource with `attributes`
/// attributes of `value_bytes` each, and `spans` small spans: the schema
/// repeats the resource's attributes in every row.
pub fn resource_heavy_traces(attributes: usize, value_bytes: usize, spans: u64) -> Vec<u8> {
    let mut scope_spans = Vec::new();
    for i in 0..spans {
        scope_spans.extend(field(2, &span(i)));
    }
    let mut resource_spans = field(1, &resource(attributes, value_bytes));
    resource_spans.extend(field(2, &scope_spans));
    field(1, &resource_spans)
}

/// An `ExportTraceServiceRequest` of `spans` empty spans (2 bytes each).
pub fn empty_spans(spans: usize) -> Vec<u8> {
    let scope_spans: Vec<u8> = [0x12u8, 0x00].repeat(spans);
    field(1, &field(2, &scope_spans))
}

/// An `ExportMetricsServiceRequest` of one gauge named with `name_bytes`
/// bytes and `points` points at time `time`.
pub fn huge_metric_name(name_bytes: usize, points: usize, time: u64) -> Vec<u8> {
    let mut point = fixed64(3, time);
    point.extend(fixed64(4, 1.0f64.to_bits()));
    let mut gauge = Vec::new();
    for _ in 0..points {
        gauge.extend(field(1, &point));
    }
    let mut metric = field(1, "m".repeat(name_bytes).as_bytes());
    metric.extend(field(5, &gauge));
    let scope_metrics = field(2, &metric);
    let resource_metrics = field(2, &scope_metrics);
    field(1, &resource_metrics)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}
