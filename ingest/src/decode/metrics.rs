//! Metrics: OTLP `ExportMetricsServiceRequest` (= `MetricsData`) into the
//! `metrics` table, one row per data point of a gauge, sum, histogram,
//! exponential histogram or summary. Bounds, bucket counts and quantiles are
//! kept as lists; counts over `i64::MAX` saturate.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampNanosecondBuilder,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

use super::rows::{Tail, prost_attrs, time_builder};
use super::values::{Budget, Context, Val, absurd, capped_name, nanos, opt_nanos, short, time_ok};
use super::wire::{self, Field, Msg, Records};
use crate::schema::{METRIC_PROMOTED, METRICS};
use crate::{DecodeError, Decoded, Rejected, Table};

/// The five metric types, as the `metric_type` column writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

impl MetricType {
    pub fn name(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Sum => "sum",
            MetricType::Histogram => "histogram",
            MetricType::ExponentialHistogram => "exponential_histogram",
            MetricType::Summary => "summary",
        }
    }
}

fn temporality_name(t: i32) -> Option<&'static str> {
    match t {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What a metric's points share.
#[derive(Default)]
pub(crate) struct MetricFields<'a> {
    pub name: Cow<'a, str>,
    pub description: Cow<'a, str>,
    pub unit: Cow<'a, str>,
    pub temporality: i32,
    pub is_monotonic: bool,
}

impl<'a> MetricFields<'a> {
    /// The name, description and unit cut to [`crate::decode::MAX_NAME_BYTES`].
    fn capped(self, rejected: &mut Vec<Rejected>) -> MetricFields<'a> {
        MetricFields {
            name: capped_name(self.name, "metric name", rejected),
            description: capped_name(self.description, "metric description", rejected),
            unit: capped_name(self.unit, "metric unit", rejected),
            ..self
        }
    }

    /// What each of its points costs for the text it repeats.
    fn text_bytes(&self) -> usize {
        self.name.len() + self.description.len() + self.unit.len()
    }
}

/// One data point other than its attributes. The slices are empty for types
/// that do not have them.
#[derive(Default)]
pub(crate) struct PointFields<'p> {
    pub time: u64,
    pub start: u64,
    pub value: Option<f64>,
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub bounds: &'p [f64],
    pub bucket_counts: &'p [u64],
    pub scale: i32,
    pub zero_count: u64,
    pub positive_offset: i32,
    pub positive_counts: &'p [u64],
    pub negative_offset: i32,
    pub negative_counts: &'p [u64],
    pub quantiles: &'p [f64],
    pub quantile_values: &'p [f64],
}

/// The builders of the `metrics` table.
pub(crate) struct MetricColumns {
    time: TimestampNanosecondBuilder,
    start_time: TimestampNanosecondBuilder,
    metric_name: StringBuilder,
    metric_description: StringBuilder,
    metric_unit: StringBuilder,
    metric_type: StringBuilder,
    temporality: StringBuilder,
    is_monotonic: BooleanBuilder,
    value: Float64Builder,
    count: Int64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_bounds: ListBuilder<Float64Builder>,
    bucket_counts: ListBuilder<Int64Builder>,
    exp_scale: Int32Builder,
    exp_zero_count: Int64Builder,
    exp_positive_offset: Int32Builder,
    exp_positive_counts: ListBuilder<Int64Builder>,
    exp_negative_offset: Int32Builder,
    exp_negative_counts: ListBuilder<Int64Builder>,
    quantiles: ListBuilder<Float64Builder>,
    quantile_values: ListBuilder<Float64Builder>,
    pub tail: Tail,
    pub rejected: Vec<Rejected>,
}

fn append_counts(b: &mut ListBuilder<Int64Builder>, counts: Option<&[u64]>) {
    match counts {
        Some(c) => {
            for &n in c {
                b.values().append_value(count(n));
            }
            b.append(true);
        }
        None => b.append(false),
    }
}

fn append_floats(b: &mut ListBuilder<Float64Builder>, values: Option<&[f64]>) {
    match values {
        Some(v) => {
            b.values().append_slice(v);
            b.append(true);
        }
        None => b.append(false),
    }
}

impl MetricColumns {
    /// Builders for about `rows` rows (the other builders grow as needed),
    /// decoding within `budget`.
    pub fn new(rows: usize, budget: Budget) -> MetricColumns {
        MetricColumns {
            time: time_builder(rows),
            start_time: time_builder(rows),
            metric_name: StringBuilder::new(),
            metric_description: StringBuilder::new(),
            metric_unit: StringBuilder::new(),
            metric_type: StringBuilder::new(),
            temporality: StringBuilder::new(),
            is_monotonic: BooleanBuilder::new(),
            value: Float64Builder::new(),
            count: Int64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            bucket_bounds: ListBuilder::new(Float64Builder::new()),
            bucket_counts: ListBuilder::new(Int64Builder::new()),
            exp_scale: Int32Builder::new(),
            exp_zero_count: Int64Builder::new(),
            exp_positive_offset: Int32Builder::new(),
            exp_positive_counts: ListBuilder::new(Int64Builder::new()),
            exp_negative_offset: Int32Builder::new(),
            exp_negative_counts: ListBuilder::new(Int64Builder::new()),
            quantiles: ListBuilder::new(Float64Builder::new()),
            quantile_values: ListBuilder::new(Float64Builder::new()),
            tail: Tail::new(METRIC_PROMOTED, rows, budget),
            rejected: Vec::new(),
        }
    }

    /// Charges a point to the budget (a row, however it ends), then whether it
    /// becomes a row; if not, it is reported.
    pub fn admit(
        &mut self,
        m: &MetricFields<'_>,
        p: &PointFields<'_>,
    ) -> Result<bool, DecodeError> {
        let lists = p.bounds.len()
            + p.bucket_counts.len()
            + p.positive_counts.len()
            + p.negative_counts.len()
            + p.quantiles.len()
            + p.quantile_values.len();
        self.tail.charge_row(m.text_bytes() + 8 * lists)?;
        if time_ok(p.time) {
            return Ok(true);
        }
        self.rejected.push(absurd(
            &format!("data point of {}", short(&m.name)),
            "time_unix_nano",
            p.time,
        ));
        Ok(false)
    }

    pub fn attr(&mut self, key: &str, val: Val<'_>) {
        self.tail.attr(key, val, &mut self.rejected);
    }

    pub fn end_row(&mut self, ty: MetricType, m: &MetricFields<'_>, p: &PointFields<'_>) {
        use MetricType as T;
        self.time.append_value(nanos(p.time));
        self.start_time.append_option(opt_nanos(p.start));
        self.metric_name.append_value(&m.name);
        self.metric_description
            .append_option((!m.description.is_empty()).then_some(&m.description));
        self.metric_unit
            .append_option((!m.unit.is_empty()).then_some(&m.unit));
        self.metric_type.append_value(ty.name());
        let has_temporality = matches!(ty, T::Sum | T::Histogram | T::ExponentialHistogram);
        self.temporality.append_option(
            has_temporality
                .then(|| temporality_name(m.temporality))
                .flatten(),
        );
        self.is_monotonic
            .append_option((ty == T::Sum).then_some(m.is_monotonic));
        self.value.append_option(p.value);
        let distribution = matches!(ty, T::Histogram | T::ExponentialHistogram | T::Summary);
        self.count
            .append_option(distribution.then(|| count(p.count)));
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        let hist = ty == T::Histogram;
        append_floats(&mut self.bucket_bounds, hist.then_some(p.bounds));
        append_counts(&mut self.bucket_counts, hist.then_some(p.bucket_counts));
        let exp = ty == T::ExponentialHistogram;
        self.exp_scale.append_option(exp.then_some(p.scale));
        self.exp_zero_count
            .append_option(exp.then(|| count(p.zero_count)));
        self.exp_positive_offset
            .append_option(exp.then_some(p.positive_offset));
        append_counts(
            &mut self.exp_positive_counts,
            exp.then_some(p.positive_counts),
        );
        self.exp_negative_offset
            .append_option(exp.then_some(p.negative_offset));
        append_counts(
            &mut self.exp_negative_counts,
            exp.then_some(p.negative_counts),
        );
        let summary = ty == T::Summary;
        append_floats(&mut self.quantiles, summary.then_some(p.quantiles));
        append_floats(
            &mut self.quantile_values,
            summary.then_some(p.quantile_values),
        );
        self.tail.end_row();
    }

    pub fn finish(mut self) -> Result<Decoded, DecodeError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.metric_name.finish()),
            Arc::new(self.metric_description.finish()),
            Arc::new(self.metric_unit.finish()),
            Arc::new(self.metric_type.finish()),
            Arc::new(self.temporality.finish()),
            Arc::new(self.is_monotonic.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_bounds.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.exp_scale.finish()),
            Arc::new(self.exp_zero_count.finish()),
            Arc::new(self.exp_positive_offset.finish()),
            Arc::new(self.exp_positive_counts.finish()),
            Arc::new(self.exp_negative_offset.finish()),
            Arc::new(self.exp_negative_counts.finish()),
            Arc::new(self.quantiles.finish()),
            Arc::new(self.quantile_values.finish()),
        ];
        let batch = self.tail.batch(METRICS.clone(), cols)?;
        Ok(Decoded {
            table: Table::Metrics,
            batch,
            rejected: self.rejected,
        })
    }
}

/// Rows of a prost request (the simple path).
pub fn from_request(req: &ExportMetricsServiceRequest) -> Result<Decoded, DecodeError> {
    use metric::Data;
    use prost::Message as _;
    let mut cols = MetricColumns::new(0, Budget::for_message(req.encoded_len()));
    let mut quantiles = Vec::new();
    let mut quantile_values = Vec::new();
    for rm in &req.resource_metrics {
        let resource = Context::of_resource(rm.resource.as_ref(), &mut cols.rejected);
        for sm in &rm.scope_metrics {
            let ctx = resource.with_scope(sm.scope.as_ref(), &mut cols.rejected);
            cols.tail
                .budget
                .charge_run_and_records(&ctx, sm.metrics.len())?;
            cols.tail.set_context(ctx);
            for m in &sm.metrics {
                let mut mf = MetricFields {
                    name: Cow::Borrowed(&m.name),
                    description: Cow::Borrowed(&m.description),
                    unit: Cow::Borrowed(&m.unit),
                    ..Default::default()
                }
                .capped(&mut cols.rejected);
                match &m.data {
                    None => {}
                    Some(Data::Gauge(g)) => {
                        for p in &g.data_points {
                            let pf = number_point(p);
                            row(&mut cols, MetricType::Gauge, &mf, &pf, &p.attributes)?;
                        }
                    }
                    Some(Data::Sum(s)) => {
                        mf.temporality = s.aggregation_temporality;
                        mf.is_monotonic = s.is_monotonic;
                        for p in &s.data_points {
                            let pf = number_point(p);
                            row(&mut cols, MetricType::Sum, &mf, &pf, &p.attributes)?;
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        mf.temporality = h.aggregation_temporality;
                        for p in &h.data_points {
                            let pf = PointFields {
                                time: p.time_unix_nano,
                                start: p.start_time_unix_nano,
                                count: p.count,
                                sum: p.sum,
                                min: p.min,
                                max: p.max,
                                bounds: &p.explicit_bounds,
                                bucket_counts: &p.bucket_counts,
                                ..Default::default()
                            };
                            row(&mut cols, MetricType::Histogram, &mf, &pf, &p.attributes)?;
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        mf.temporality = h.aggregation_temporality;
                        for p in &h.data_points {
                            let pos = p.positive.as_ref();
                            let neg = p.negative.as_ref();
                            let pf = PointFields {
                                time: p.time_unix_nano,
                                start: p.start_time_unix_nano,
                                count: p.count,
                                sum: p.sum,
                                min: p.min,
                                max: p.max,
                                scale: p.scale,
                                zero_count: p.zero_count,
                                positive_offset: pos.map_or(0, |b| b.offset),
                                positive_counts: pos.map_or(&[], |b| &b.bucket_counts),
                                negative_offset: neg.map_or(0, |b| b.offset),
                                negative_counts: neg.map_or(&[], |b| &b.bucket_counts),
                                ..Default::default()
                            };
                            row(
                                &mut cols,
                                MetricType::ExponentialHistogram,
                                &mf,
                                &pf,
                                &p.attributes,
                            )?;
                        }
                    }
                    Some(Data::Summary(s)) => {
                        for p in &s.data_points {
                            quantiles.clear();
                            quantile_values.clear();
                            for q in &p.quantile_values {
                                quantiles.push(q.quantile);
                                quantile_values.push(q.value);
                            }
                            let pf = PointFields {
                                time: p.time_unix_nano,
                                start: p.start_time_unix_nano,
                                count: p.count,
                                sum: Some(p.sum),
                                quantiles: &quantiles,
                                quantile_values: &quantile_values,
                                ..Default::default()
                            };
                            row(&mut cols, MetricType::Summary, &mf, &pf, &p.attributes)?;
                        }
                    }
                }
            }
        }
    }
    cols.finish()
}

fn number_point(
    p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint,
) -> PointFields<'static> {
    PointFields {
        time: p.time_unix_nano,
        start: p.start_time_unix_nano,
        value: p.value.map(|v| match v {
            number_data_point::Value::AsDouble(d) => d,
            number_data_point::Value::AsInt(i) => i as f64,
        }),
        ..Default::default()
    }
}

fn row(
    cols: &mut MetricColumns,
    ty: MetricType,
    mf: &MetricFields<'_>,
    pf: &PointFields<'_>,
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> Result<(), DecodeError> {
    if cols.admit(mf, pf)? {
        for (k, v) in prost_attrs(attrs) {
            cols.attr(k, v);
        }
        cols.end_row(ty, mf, pf);
    }
    Ok(())
}

/// Scratch space reused across data points by the wire reader.
#[derive(Default)]
struct Scratch<'a> {
    attrs: Vec<Msg<'a>>,
    bounds: Vec<u64>,
    counts: Vec<u64>,
    positive: Vec<u64>,
    negative: Vec<u64>,
    quantiles: Vec<f64>,
    quantile_values: Vec<f64>,
    bounds_f: Vec<f64>,
}

/// Rows of protobuf bytes, read without materialising prost structs.
pub fn decode_wire(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut rejected = Vec::new();
    let mut budget = Budget::for_message(bytes.len());
    let records = Records::read(bytes, &mut rejected, &mut budget)?;
    let mut cols = MetricColumns::new(records.rows_hint(), budget);
    cols.rejected = rejected;
    let mut points = Vec::new();
    let mut scratch = Scratch::default();
    records.each_run(|ctx, metrics| {
        cols.tail.set_context(ctx);
        for &m in metrics {
            let mut mf = MetricFields::default();
            let mut data: Option<(MetricType, Msg<'_>)> = None;
            for g in m.fields() {
                let g = g?;
                match g.num {
                    1 => mf.name = wire::text(g.bytes()?, "metric name", &mut cols.rejected),
                    2 => {
                        mf.description =
                            wire::text(g.bytes()?, "metric description", &mut cols.rejected)
                    }
                    3 => mf.unit = wire::text(g.bytes()?, "metric unit", &mut cols.rejected),
                    5 => data = Some((MetricType::Gauge, g.msg()?)),
                    7 => data = Some((MetricType::Sum, g.msg()?)),
                    9 => data = Some((MetricType::Histogram, g.msg()?)),
                    10 => data = Some((MetricType::ExponentialHistogram, g.msg()?)),
                    11 => data = Some((MetricType::Summary, g.msg()?)),
                    _ => {}
                }
            }
            let Some((ty, data)) = data else { continue };
            let mut mf = mf.capped(&mut cols.rejected);
            points.clear();
            for g in data.fields() {
                let g = g?;
                match g.num {
                    1 => points.push(g.msg()?),
                    2 if ty != MetricType::Gauge && ty != MetricType::Summary => {
                        mf.temporality = g.int32()?
                    }
                    3 if ty == MetricType::Sum => mf.is_monotonic = g.bool()?,
                    _ => {}
                }
            }
            for &p in &points {
                wire_point(&mut cols, ty, &mf, p, &mut scratch)?;
            }
        }
        Ok(())
    })?;
    cols.finish()
}

fn opt_double(f: &Field<'_>) -> Result<Option<f64>, DecodeError> {
    f.double().map(Some)
}

fn wire_point<'a>(
    cols: &mut MetricColumns,
    ty: MetricType,
    mf: &MetricFields<'_>,
    p: Msg<'a>,
    s: &mut Scratch<'a>,
) -> Result<(), DecodeError> {
    use MetricType as T;
    s.attrs.clear();
    s.bounds.clear();
    s.counts.clear();
    s.positive.clear();
    s.negative.clear();
    s.quantiles.clear();
    s.quantile_values.clear();
    let mut pf = PointFields::default();
    let (mut positive_offset, mut negative_offset) = (0, 0);
    for f in p.fields() {
        let f = f?;
        match (ty, f.num) {
            (_, 2) => pf.start = f.fixed64()?,
            (_, 3) => pf.time = f.fixed64()?,
            (T::Gauge | T::Sum, 4) => pf.value = Some(f.double()?),
            (T::Gauge | T::Sum, 6) => pf.value = Some(f.fixed64()? as i64 as f64),
            (T::Gauge | T::Sum | T::Summary, 7)
            | (T::Histogram, 9)
            | (T::ExponentialHistogram, 1) => s.attrs.push(f.msg()?),
            (T::Histogram | T::ExponentialHistogram | T::Summary, 4) => pf.count = f.fixed64()?,
            (T::Histogram | T::ExponentialHistogram | T::Summary, 5) => pf.sum = opt_double(&f)?,
            (T::Histogram, 6) => f.repeated_fixed64(&mut s.counts)?,
            (T::Histogram, 7) => f.repeated_fixed64(&mut s.bounds)?,
            (T::Histogram, 11) | (T::ExponentialHistogram, 12) => pf.min = opt_double(&f)?,
            (T::Histogram, 12) | (T::ExponentialHistogram, 13) => pf.max = opt_double(&f)?,
            (T::ExponentialHistogram, 6) => pf.scale = f.sint32()?,
            (T::ExponentialHistogram, 7) => pf.zero_count = f.fixed64()?,
            (T::ExponentialHistogram, 8 | 9) => {
                let (offset, out) = if f.num == 8 {
                    (&mut positive_offset, &mut s.positive)
                } else {
                    (&mut negative_offset, &mut s.negative)
                };
                for g in f.msg()?.fields() {
                    let g = g?;
                    match g.num {
                        1 => *offset = g.sint32()?,
                        2 => g.repeated_varint(out)?,
                        _ => {}
                    }
                }
            }
            (T::Summary, 6) => {
                let (mut q, mut v) = (0.0, 0.0);
                for g in f.msg()?.fields() {
                    let g = g?;
                    match g.num {
                        1 => q = g.double()?,
                        2 => v = g.double()?,
                        _ => {}
                    }
                }
                s.quantiles.push(q);
                s.quantile_values.push(v);
            }
            _ => {}
        }
    }
    if ty == T::Summary && pf.sum.is_none() {
        pf.sum = Some(0.0);
    }
    s.bounds_f.clear();
    s.bounds_f
        .extend(s.bounds.iter().map(|&b| f64::from_bits(b)));
    pf.bounds = &s.bounds_f;
    pf.bucket_counts = &s.counts;
    pf.positive_offset = positive_offset;
    pf.positive_counts = &s.positive;
    pf.negative_offset = negative_offset;
    pf.negative_counts = &s.negative;
    pf.quantiles = &s.quantiles;
    pf.quantile_values = &s.quantile_values;
    if cols.admit(mf, &pf)? {
        for &kv in &s.attrs {
            let (key, value) = wire::key_value_parts(kv)?;
            cols.tail.wire_attr(key, value, &mut cols.rejected)?;
        }
        cols.end_row(ty, mf, &pf);
    }
    Ok(())
}
