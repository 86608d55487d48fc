//! How many spans per second does seam's ingest path turn from OTLP protobuf bytes into
//! (1) decoded requests — the decode-only ceiling —, (2) Arrow batches in the `spans` schema,
//! and (3) Parquet bytes, for export batches of 512 spans?
//!
//! Run with: `cargo bench -p seam-benches --bench otlp_ingest`
//! (`cargo test --benches` runs each case once, as a smoke test).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use seam_benches::{Rng, trace_request};
use seam_collector::config::StorageConfig;
use seam_collector::{buffer, normalise};
use seam_store::storage;

const SPANS: usize = 512;

fn payload() -> Vec<u8> {
    trace_request(&mut Rng::new(42), SPANS).encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let bytes = payload();
    let mut g = c.benchmark_group("otlp_ingest");
    g.sample_size(20);
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            ExportTraceServiceRequest::decode(bytes.as_slice()).map(|r| r.resource_spans.len())
        })
    });
    g.bench_function("decode_normalise_arrow", |b| {
        b.iter(|| {
            let req = ExportTraceServiceRequest::decode(bytes.as_slice()).ok()?;
            let n = normalise::spans(req, i64::MAX, &Default::default());
            buffer::spans_batch(&n.records, 1)
                .ok()
                .map(|b| b.num_rows())
        })
    });
    // The normalise stage alone, without and with fingerprint keys: scanning every value for
    // tokens and secrets is always on; with a key, each token is also fingerprinted (HMAC)
    // and its JWT claims read.
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("payload");
    let plain = normalise::Normaliser::default();
    let keyed = normalise::Normaliser {
        tokens: normalise::token::TokenConfig {
            keys: std::sync::Arc::new(normalise::token::parse_keys("k1=bench-key").expect("key")),
            ..Default::default()
        },
        ..Default::default()
    };
    for (name, n) in [
        ("normalise_only_no_key", &plain),
        ("normalise_only_fingerprint", &keyed),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || decoded.clone(),
                |req| normalise::spans(req, i64::MAX, n).records.len(),
                BatchSize::SmallInput,
            )
        });
    }
    let cfg = StorageConfig::default();
    g.bench_function("decode_normalise_arrow_parquet", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| {
                let req = ExportTraceServiceRequest::decode(bytes.as_slice()).ok()?;
                let n = normalise::spans(req, i64::MAX, &Default::default());
                let batch = buffer::spans_batch(&n.records, 1).ok()?;
                storage::encode_parquet("spans", "bench", batch, &cfg)
                    .ok()
                    .map(|r| r.0.len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // seam writes Parquet per flush (up to `flush_rows` rows), not per request: measure the
    // encoder on a flush-sized batch, and report its size per span.
    let mut rng = Rng::new(7);
    let batches: Vec<_> = (0..FLUSH_BATCHES)
        .map(|_| {
            let n = normalise::spans(
                trace_request(&mut rng, SPANS),
                i64::MAX,
                &Default::default(),
            );
            buffer::spans_batch(&n.records, 1).expect("batch")
        })
        .collect();
    let big = arrow_concat(&batches);
    let rows = big.num_rows() as u64;
    if let Ok((bytes, ..)) = storage::encode_parquet("spans", "bench", big.clone(), &cfg) {
        eprintln!(
            "parquet_flush: {} spans -> {} bytes = {:.1} bytes/span",
            rows,
            bytes.len(),
            bytes.len() as f64 / rows as f64
        );
    }
    let mut g = c.benchmark_group("otlp_ingest_flush");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows));
    g.bench_function("parquet_encode_flush", |b| {
        b.iter_batched(
            || big.clone(),
            |batch| storage::encode_parquet("spans", "bench", batch, &cfg).map(|r| r.0.len()),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// 128 requests of 512 spans: one 65,536-row flush.
const FLUSH_BATCHES: usize = 128;

fn arrow_concat(batches: &[arrow::record_batch::RecordBatch]) -> arrow::record_batch::RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).expect("same schema")
}

criterion_group!(benches, bench);
criterion_main!(benches);
