//! Crash safety: the real `seam` binary under concurrent ingest through every receiver,
//! killed with SIGKILL at random moments, restarted on the same data directory. Every record
//! of every acknowledged request must be present exactly once; a request that was not
//! acknowledged is either wholly present or wholly absent (never duplicated, never partial).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::binary::{Running, spawn_with};
use crate::support::*;

const CYCLES: usize = 20;
const SPANS_PER_REQUEST: usize = 20;
const LOGS_PER_REQUEST: usize = 5;
/// Flush often so that kills land before, during and after flushes and compactions.
const CONFIG: &str = "[storage]\nflush_interval = \"150ms\"\ncompaction_fanout = 3\ncompaction_idle = \"400ms\"\ndelete_grace = \"200ms\"\n[wal]\nsegment_bytes = 262144\n";

fn attr(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn traces(id: &str, rng: &mut Rng) -> ExportTraceServiceRequest {
    let start = 1_730_798_043_000_000_000 + (rng.next() % 7_200_000_000_000);
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| Span {
            trace_id: rng.next().to_le_bytes().repeat(2),
            span_id: (rng.next() | 1).to_le_bytes().to_vec(),
            name: format!("op-{i}"),
            kind: 2,
            start_time_unix_nano: start + i as u64,
            end_time_unix_nano: start + i as u64 + 1_000_000,
            attributes: vec![attr("correlation.id", id)],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs(id: &str) -> ExportLogsServiceRequest {
    let records = (0..LOGS_PER_REQUEST)
        .map(|i| LogRecord {
            time_unix_nano: 1_730_798_043_000_000_000 + i as u64,
            severity_number: 9,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("line {i}"))),
            }),
            attributes: vec![attr("correlation.id", id)],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

type Acked = Arc<Mutex<Vec<(&'static str, String)>>>;

async fn grpc_worker(run: String, tag: String, stop: Arc<AtomicBool>, acked: Acked, seed: u64) {
    let mut rng = Rng(seed | 1);
    let Ok(mut client) = TraceServiceClient::connect(format!("http://{run}")).await else {
        return;
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("{tag}-{n}");
        n += 1;
        if client.export(traces(&id, &mut rng)).await.is_ok() {
            acked.lock().unwrap().push(("spans", id));
        }
    }
}

async fn http_worker(
    run: String,
    tag: String,
    signal: &'static str,
    stop: Arc<AtomicBool>,
    acked: Acked,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let client = reqwest::Client::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("{tag}-{n}");
        n += 1;
        let (path, ct, body) = if signal == "spans" {
            (
                "/v1/traces",
                "application/x-protobuf",
                traces(&id, &mut rng).encode_to_vec(),
            )
        } else {
            let json = serde_json::to_vec(&logs(&id)).unwrap();
            ("/v1/logs", "application/json", json)
        };
        let sent = client
            .post(format!("http://{run}{path}"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await;
        if matches!(sent, Ok(r) if r.status() == 200) {
            acked.lock().unwrap().push((signal, id));
        }
    }
}

async fn counts(api: &str, table: &str) -> HashMap<String, i64> {
    let rows = sql(
        api,
        &format!("SELECT correlation_id AS id, count(*) AS n FROM {table} GROUP BY correlation_id"),
    )
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_string(),
                r["n"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed | 1);
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let run: Running = spawn_with(&data, CONFIG);
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..2 {
            tasks.push(tokio::spawn(grpc_worker(
                run.grpc.clone(),
                format!("g{cycle}.{w}"),
                stop.clone(),
                acked.clone(),
                rng.next(),
            )));
        }
        tasks.push(tokio::spawn(http_worker(
            run.http.clone(),
            format!("h{cycle}"),
            "spans",
            stop.clone(),
            acked.clone(),
            rng.next(),
        )));
        tasks.push(tokio::spawn(http_worker(
            run.http.clone(),
            format!("l{cycle}"),
            "logs",
            stop.clone(),
            acked.clone(),
            rng.next(),
        )));
        tokio::time::sleep(Duration::from_millis(150 + rng.next() % 650)).await;
        let mut run = run;
        run.child.kill().unwrap();
        run.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
    }
    let run = spawn_with(&data, CONFIG);
    let spans = counts(&run.api, "spans").await;
    let logs = counts(&run.api, "logs").await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > CYCLES * 4,
        "too few acknowledged requests: {}",
        acked.len()
    );
    let mut seen = HashSet::new();
    for (signal, id) in &acked {
        assert!(
            seen.insert(id.clone()),
            "request id {id} acknowledged twice"
        );
        let (n, want) = match *signal {
            "spans" => (spans.get(id), SPANS_PER_REQUEST as i64),
            _ => (logs.get(id), LOGS_PER_REQUEST as i64),
        };
        assert_eq!(
            n,
            Some(&want),
            "acknowledged {signal} request {id}: seed {seed}"
        );
    }
    for (id, n) in &spans {
        assert_eq!(
            *n, SPANS_PER_REQUEST as i64,
            "spans of {id} stored {n} times over: seed {seed}"
        );
    }
    for (id, n) in &logs {
        assert_eq!(
            *n, LOGS_PER_REQUEST as i64,
            "logs of {id} partial or duplicated: seed {seed}"
        );
    }
    eprintln!(
        "crash test: {CYCLES} SIGKILLs, {} acknowledged requests, {} span ids stored, {:?}",
        acked.len(),
        spans.len(),
        started.elapsed()
    );
    drop(run);
}
