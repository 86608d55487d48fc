//! How fast do the gateway and flow log parsers turn text into rows? APIM records/s and MB/s
//! (storage JSON Lines and a Log Analytics result), Mule log4j lines/s (the default pattern
//! with JSON Logger messages and an error block), each through decode, normalise (aliases,
//! redaction, tokens) and the Arrow batch, without the write-ahead log.
//!
//! Run with: `cargo bench -p seam-benches --bench access_parse`
//! (`cargo test --benches` runs each case once, as a smoke test).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seam_benches::Rng;
use seam_collector::normalise::json::InputMeta;
use seam_collector::normalise::token::TokenConfig;
use seam_collector::sources::apim::decode as apim;
use seam_collector::sources::apim::normalise::{Ctx, Record, gateway_row};
use seam_collector::sources::mule::decode as mule;
use seam_collector::sources::mule::normalise::{TrafficRules, flow_row};
use seam_schemas::tables::{flow_logs, gateway_logs};
use seam_store::rows::{self, Columns};

const RECORDS: usize = 2_000;

fn samples(name: &str) -> String {
    std::fs::read_to_string(seam_benches::samples_dir().join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `RECORDS` storage-archive lines: the samples' records with fresh correlation ids.
fn apim_jsonl(rng: &mut Rng) -> String {
    let lines: Vec<String> = samples("apim-gatewaylogs-storage.jsonl")
        .lines()
        .map(str::to_string)
        .collect();
    let mut out = String::new();
    for i in 0..RECORDS {
        let l = &lines[i % lines.len()];
        let id = rng.uuid();
        out.push_str(&l.replacen(
            "\"correlationId\": \"",
            &format!("\"correlationId\": \"{id}"),
            1,
        ));
        out.push('\n');
    }
    out
}

/// A Log Analytics result with `RECORDS` rows.
fn apim_la() -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&samples("apim-gatewaylogs-loganalytics.json")).unwrap_or_default();
    let rows = v["tables"][0]["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let many: Vec<serde_json::Value> = (0..RECORDS).map(|i| rows[i % rows.len()].clone()).collect();
    v["tables"][0]["rows"] = serde_json::Value::Array(many);
    v.to_string()
}

/// The Mule log4j sample repeated to about `RECORDS` events.
fn mule_log() -> (String, usize) {
    let one = samples("mule-log4j.log");
    let mut out = String::new();
    while out.lines().count() < RECORDS * 2 {
        out.push_str(&one);
    }
    let lines = out.lines().count();
    (out, lines)
}

fn parse_apim(text: &str, cols: &Columns, tokens: &TokenConfig) -> usize {
    let meta = InputMeta::default();
    let ctx = Ctx {
        meta: &meta,
        tokens,
        ingest_ns: 1,
    };
    let Ok(items) = apim::decode(text, 1) else {
        return 0;
    };
    let mut rows_out = Vec::with_capacity(items.len());
    for item in items {
        if let apim::ApimItem::Gateway {
            fields,
            format,
            raw,
            ..
        } = item
        {
            let rec = Record {
                fields: &fields,
                format,
                line: None,
            };
            if let Ok(k) = gateway_row(cols, rec, raw, ctx) {
                rows_out.push(k.row);
            }
        }
    }
    rows::batch(cols, &rows_out).map_or(0, |b| b.num_rows())
}

fn parse_mule(text: &str, cols: &Columns, tokens: &TokenConfig) -> usize {
    let meta = InputMeta::default();
    let rules = TrafficRules::default();
    let Ok(items) = mule::decode(text, 1) else {
        return 0;
    };
    let mut rows_out = Vec::with_capacity(items.len());
    for item in items {
        if let mule::MuleItem::Event(ev) = item
            && let Ok(k) = flow_row(cols, *ev, &meta, &rules, tokens, 1)
        {
            rows_out.push(k.row);
        }
    }
    rows::batch(cols, &rows_out).map_or(0, |b| b.num_rows())
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng::new(7);
    let tokens = TokenConfig::default();
    let gw = Columns::new(gateway_logs::schema());
    let fl = Columns::new(flow_logs::schema());
    let jsonl = apim_jsonl(&mut rng);
    let la = apim_la();
    let (log, lines) = mule_log();
    assert_eq!(parse_apim(&jsonl, &gw, &tokens), RECORDS);
    assert_eq!(parse_apim(&la, &gw, &tokens), RECORDS);
    assert!(parse_mule(&log, &fl, &tokens) > 0);

    let mut g = c.benchmark_group("access_parse_records");
    g.sample_size(10);
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.bench_function("apim_storage_jsonl", |b| {
        b.iter(|| parse_apim(&jsonl, &gw, &tokens))
    });
    g.bench_function("apim_loganalytics", |b| {
        b.iter(|| parse_apim(&la, &gw, &tokens))
    });
    g.finish();

    let mut g = c.benchmark_group("access_parse_bytes");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(jsonl.len() as u64));
    g.bench_function("apim_storage_jsonl", |b| {
        b.iter(|| parse_apim(&jsonl, &gw, &tokens))
    });
    g.throughput(Throughput::Bytes(log.len() as u64));
    g.bench_function("mule_log4j", |b| b.iter(|| parse_mule(&log, &fl, &tokens)));
    g.finish();

    let mut g = c.benchmark_group("access_parse_lines");
    g.sample_size(10);
    g.throughput(Throughput::Elements(lines as u64));
    g.bench_function("mule_log4j", |b| b.iter(|| parse_mule(&log, &fl, &tokens)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
