//! Stage 4, buffer: normalised records to Arrow record batches in the tables' schemas.
//!
//! Takes slices of [`SpanRecord`]/[`LogRecord`] and the ingest time; gives one `RecordBatch`
//! whose schema is exactly `seam_schemas::tables::<table>::schema()`. Pure and synchronous.
//! Columns are built directly with Arrow builders (no per-value boxing).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, ListArray, ListBuilder, MapBuilder, StringBuilder,
    StructArray, TimestampNanosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use seam_schemas::tables::{logs, spans};

use crate::normalise::attributes::Attr;
use crate::normalise::token::TokenIdentity;
use crate::normalise::{LogRecord, SpanRecord};

type AttrMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

/// A map builder sized exactly for `lists` (so a batch holds no spare capacity: its memory
/// size is what the memory budget counts).
fn map_builder<'a>(lists: impl Iterator<Item = &'a [Attr]> + Clone) -> AttrMapBuilder {
    let (mut n, mut entries, mut kbytes, mut vbytes) = (0, 0, 0, 0);
    for l in lists {
        n += 1;
        entries += l.len();
        for (k, v) in l {
            kbytes += k.len();
            vbytes += v.as_deref().map_or(0, str::len);
        }
    }
    MapBuilder::with_capacity(
        None,
        StringBuilder::with_capacity(entries, kbytes),
        StringBuilder::with_capacity(entries, vbytes),
        n,
    )
}

fn append_map(b: &mut AttrMapBuilder, attrs: &[Attr]) -> Result<(), ArrowError> {
    for (k, v) in attrs {
        b.keys().append_value(k);
        b.values().append_option(v.as_deref());
    }
    b.append(true)
}

fn ts(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let values: Vec<Option<&str>> = values.collect();
    let bytes = values.iter().map(|v| v.map_or(0, str::len)).sum();
    let mut b = StringBuilder::with_capacity(values.len(), bytes);
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

/// Builds a `spans` batch.
pub fn spans_batch(rows: &[SpanRecord], ingest_ns: i64) -> Result<RecordBatch, ArrowError> {
    let schema = spans::schema();
    let n = rows.len();
    let mut duration = Float64Builder::with_capacity(n);
    let mut status = Int32Builder::with_capacity(n);
    let mut res_attrs = map_builder(rows.iter().map(|r| r.origin.resource_attributes.as_slice()));
    let mut attrs = map_builder(rows.iter().map(|r| r.attributes.as_slice()));
    for r in rows {
        // A span that ends before it starts has no duration (not a negative one).
        duration.append_option(
            r.end_time_ns
                .and_then(|e| e.checked_sub(r.time_ns))
                .filter(|d| *d >= 0)
                .map(|d| d as f64 / 1e6),
        );
        status.append_option(r.status_code);
        append_map(&mut res_attrs, &r.origin.resource_attributes)?;
        append_map(&mut attrs, &r.attributes)?;
    }
    let columns: Vec<ArrayRef> = vec![
        ts(rows.iter().map(|r| Some(r.time_ns)).collect()),
        ts(rows.iter().map(|r| r.end_time_ns).collect()),
        Arc::new(duration.finish()),
        ts(vec![Some(ingest_ns); n]),
        strings(rows.iter().map(|r| Some(r.trace_id.as_str()))),
        strings(rows.iter().map(|r| Some(r.span_id.as_str()))),
        strings(rows.iter().map(|r| r.parent_span_id.as_deref())),
        strings(rows.iter().map(|r| r.trace_state.as_deref())),
        strings(rows.iter().map(|r| Some(r.name.as_str()))),
        strings(rows.iter().map(|r| Some(r.kind))),
        strings(rows.iter().map(|r| Some(r.span_status))),
        strings(rows.iter().map(|r| r.span_status_message.as_deref())),
        strings(rows.iter().map(|r| r.origin.service_name.as_deref())),
        strings(rows.iter().map(|r| r.origin.scope_name.as_deref())),
        strings(rows.iter().map(|r| r.origin.scope_version.as_deref())),
        Arc::new(res_attrs.finish()),
        Arc::new(attrs.finish()),
        events_column(rows)?,
        links_column(rows)?,
        strings(rows.iter().map(|r| r.method.as_deref())),
        strings(rows.iter().map(|r| r.url_path.as_deref())),
        strings(rows.iter().map(|r| r.http_route.as_deref())),
        Arc::new(status.finish()),
        strings(rows.iter().map(|r| r.client_ip.as_deref())),
        strings(rows.iter().map(|r| r.user_agent.as_deref())),
        strings(rows.iter().map(|r| r.correlation_id.as_deref())),
    ];
    let columns = columns
        .into_iter()
        .chain(token_columns(rows.iter().map(|r| r.token.as_ref())))
        .collect();
    RecordBatch::try_new(schema, columns)
}

fn string_lists<'a>(values: impl Iterator<Item = Option<&'a [String]>>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )));
    for v in values {
        match v {
            Some(items) if !items.is_empty() => {
                for i in items {
                    b.values().append_value(i);
                }
                b.append(true);
            }
            _ => b.append(false),
        }
    }
    Arc::new(b.finish())
}

/// The token identity columns (`seam_schemas::tables::token_fields`), in order.
fn token_columns<'a>(
    tokens: impl Iterator<Item = Option<&'a TokenIdentity>> + Clone,
) -> Vec<ArrayRef> {
    let claims = || tokens.clone().map(|t| t.map(|t| &t.claims));
    let secs = |f: fn(&crate::normalise::token::Claims) -> Option<i64>| {
        ts(claims()
            .map(|c| c.and_then(f).map(|s| s.saturating_mul(1_000_000_000)))
            .collect())
    };
    let ids: Vec<Option<String>> = tokens
        .clone()
        .map(|t| t.and_then(|t| t.token_id()))
        .collect();
    vec![
        strings(ids.iter().map(|i| i.as_deref())),
        strings(claims().map(|c| c.and_then(|c| c.uti.as_deref()))),
        strings(claims().map(|c| c.and_then(|c| c.subject.as_deref()))),
        strings(claims().map(|c| c.and_then(|c| c.object_id.as_deref()))),
        strings(claims().map(|c| c.and_then(|c| c.client_app.as_deref()))),
        strings(claims().map(|c| c.and_then(|c| c.tenant_id.as_deref()))),
        strings(claims().map(|c| c.and_then(|c| c.issuer.as_deref()))),
        strings(claims().map(|c| c.and_then(|c| c.audience.as_deref()))),
        secs(|c| c.issued_at),
        secs(|c| c.expires_at),
        string_lists(claims().map(|c| c.map(|c| c.scopes.as_slice()))),
        string_lists(claims().map(|c| c.map(|c| c.roles.as_slice()))),
        strings(claims().map(|c| c.and_then(|c| c.token_type.as_deref()))),
    ]
}

fn list_of(
    item_type: DataType,
    offsets: Vec<i32>,
    children: Vec<ArrayRef>,
) -> Result<ArrayRef, ArrowError> {
    let DataType::Struct(fields) = item_type.clone() else {
        return Err(ArrowError::SchemaError("list item must be a struct".into()));
    };
    let values = StructArray::try_new(fields, children, None)?;
    let list = ListArray::try_new(
        Arc::new(Field::new("item", item_type, true)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    )?;
    Ok(Arc::new(list))
}

fn events_column(rows: &[SpanRecord]) -> Result<ArrayRef, ArrowError> {
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let all = || rows.iter().flat_map(|r| r.events.iter());
    let (mut times, mut names) = (Vec::new(), StringBuilder::new());
    let mut maps = map_builder(all().map(|e| e.attributes.as_slice()));
    for r in rows {
        for e in &r.events {
            times.push(e.time_ns);
            names.append_value(&e.name);
            append_map(&mut maps, &e.attributes)?;
        }
        offsets.push(times.len() as i32);
    }
    list_of(
        spans::event_type(),
        offsets,
        vec![ts(times), Arc::new(names.finish()), Arc::new(maps.finish())],
    )
}

fn links_column(rows: &[SpanRecord]) -> Result<ArrayRef, ArrowError> {
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let all = || rows.iter().flat_map(|r| r.links.iter());
    let (mut tids, mut sids) = (StringBuilder::new(), StringBuilder::new());
    let mut maps = map_builder(all().map(|l| l.attributes.as_slice()));
    let mut count = 0i32;
    for r in rows {
        for l in &r.links {
            tids.append_value(&l.trace_id);
            sids.append_value(&l.span_id);
            append_map(&mut maps, &l.attributes)?;
            count += 1;
        }
        offsets.push(count);
    }
    list_of(
        spans::link_type(),
        offsets,
        vec![
            Arc::new(tids.finish()),
            Arc::new(sids.finish()),
            Arc::new(maps.finish()),
        ],
    )
}

/// Builds a `logs` batch.
pub fn logs_batch(rows: &[LogRecord], ingest_ns: i64) -> Result<RecordBatch, ArrowError> {
    let schema = logs::schema();
    let n = rows.len();
    let mut sev = Int32Builder::with_capacity(n);
    let mut flags = Int32Builder::with_capacity(n);
    let mut res_attrs = map_builder(rows.iter().map(|r| r.origin.resource_attributes.as_slice()));
    let mut attrs = map_builder(rows.iter().map(|r| r.attributes.as_slice()));
    for r in rows {
        sev.append_option(r.severity_number);
        flags.append_option(r.flags);
        append_map(&mut res_attrs, &r.origin.resource_attributes)?;
        append_map(&mut attrs, &r.attributes)?;
    }
    let columns: Vec<ArrayRef> = vec![
        ts(rows.iter().map(|r| Some(r.time_ns)).collect()),
        ts(rows.iter().map(|r| r.observed_time_ns).collect()),
        ts(vec![Some(ingest_ns); n]),
        strings(rows.iter().map(|r| r.level.as_deref())),
        Arc::new(sev.finish()),
        strings(rows.iter().map(|r| r.body.as_deref())),
        strings(rows.iter().map(|r| r.trace_id.as_deref())),
        strings(rows.iter().map(|r| r.span_id.as_deref())),
        Arc::new(flags.finish()),
        strings(rows.iter().map(|r| r.event_name.as_deref())),
        strings(rows.iter().map(|r| r.origin.service_name.as_deref())),
        strings(rows.iter().map(|r| r.origin.scope_name.as_deref())),
        strings(rows.iter().map(|r| r.origin.scope_version.as_deref())),
        Arc::new(res_attrs.finish()),
        Arc::new(attrs.finish()),
        strings(rows.iter().map(|r| r.correlation_id.as_deref())),
    ];
    let columns = columns
        .into_iter()
        .chain(token_columns(rows.iter().map(|r| r.token.as_ref())))
        .collect();
    RecordBatch::try_new(schema, columns)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    use super::*;
    use crate::decode;

    #[test]
    fn sample_traces_build_a_batch_in_the_table_schema() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/otlp-traces.json"
        ))
        .unwrap();
        let req: ExportTraceServiceRequest = decode::traces(&body, decode::Encoding::Json).unwrap();
        let n = crate::normalise::spans(req, i64::MAX, &Default::default());
        assert_eq!(n.rejected, 0);
        let batch = spans_batch(&n.records, 1).unwrap();
        assert_eq!(batch.num_rows(), 20);
        assert_eq!(batch.schema().fields(), spans::schema().fields());
        // No spare builder capacity: the memory budget counts what the batch really holds.
        let size = batch.get_array_memory_size();
        assert!(size < 64 * 1024, "20 spans take {size} bytes");
    }
}
