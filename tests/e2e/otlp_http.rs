//! OTLP over HTTP: the real `opentelemetry-otlp` HTTP exporters (protobuf and JSON), the
//! OTLP/JSON sample (plain and gzip), and every kind of bad request.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::support::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post(url: &str, ct: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, String, String) {
    let (s, ct, bytes) = post_bytes(url, ct, encoding, body).await;
    (s, ct, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post_bytes(
    url: &str,
    ct: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", ct)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, resp.bytes().await.unwrap_or_default().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_exporters_protobuf_and_json() {
    let stack = Stack::start().await;
    let traces_url = stack.http_url("/v1/traces");
    let logs_url = stack.http_url("/v1/logs");
    // reqwest's blocking client must be built and dropped off the async workers.
    let (tracer_provider, logger_provider) = tokio::task::spawn_blocking(move || {
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url)
            .build()
            .unwrap();
        let logs = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(logs_url)
            .build()
            .unwrap();
        let res = Resource::builder().with_service_name("http-e2e").build();
        (
            SdkTracerProvider::builder()
                .with_batch_exporter(spans)
                .with_resource(res.clone())
                .build(),
            SdkLoggerProvider::builder()
                .with_batch_exporter(logs)
                .with_resource(res)
                .build(),
        )
    })
    .await
    .unwrap();

    let tracer = tracer_provider.tracer("seam-e2e-http");
    let start = SystemTime::now();
    let mut span = tracer
        .span_builder("POST /orders")
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes(vec![
            KeyValue::new("http.method", "POST"),
            KeyValue::new("http.status_code", "201"),
            KeyValue::new("http.url", "https://erp.example/orders?x=1"),
            KeyValue::new("retries", 2i64),
            KeyValue::new("sampled", true),
        ])
        .start(&tracer);
    span.end_with_timestamp(start + Duration::from_micros(12_500));
    let trace_id = span.span_context().trace_id().to_string();

    let logger = logger_provider.logger("seam-e2e-http-logs");
    let mut rec = logger.create_log_record();
    rec.set_body(AnyValue::String("payment refused".into()));
    rec.set_severity_number(Severity::Error);
    rec.add_attribute("x-correlation-id", "corr-http-json-1");
    logger.emit(rec);

    tokio::task::spawn_blocking(move || {
        tracer_provider.force_flush().unwrap();
        logger_provider.force_flush().unwrap();
        let _ = tracer_provider.shutdown();
        let _ = logger_provider.shutdown();
    })
    .await
    .unwrap();

    let api = stack.api();
    wait_count(
        &api,
        &format!("SELECT count(*) FROM spans WHERE trace_id = '{trace_id}'"),
        1,
    )
    .await;
    let rows = sql(
        &api,
        &format!(
            "SELECT method, status_code, url_path, duration_ms, kind, \
             attributes['retries'] AS retries, attributes['sampled'] AS sampled \
             FROM spans WHERE trace_id = '{trace_id}'"
        ),
    )
    .await
    .unwrap();
    let r = &rows[0];
    assert_eq!(r["method"], "POST");
    assert_eq!(r["status_code"], 201, "a string status becomes an integer");
    assert_eq!(r["url_path"], "/orders");
    assert_eq!(r["duration_ms"].as_f64(), Some(12.5));
    assert_eq!(r["kind"], "client");
    assert_eq!(r["retries"], "2");
    assert_eq!(r["sampled"], "true");

    wait_count(
        &api,
        "SELECT count(*) FROM logs WHERE service_name = 'http-e2e'",
        1,
    )
    .await;
    let rows = sql(&api, "SELECT level, body, correlation_id FROM logs")
        .await
        .unwrap();
    assert_eq!(
        rows[0]["level"], "ERROR",
        "derived from the severity number"
    );
    assert_eq!(rows[0]["body"], "payment refused");
    assert_eq!(rows[0]["correlation_id"], "corr-http-json-1");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_otlp_json_sample_plain_and_gzip() {
    let stack = Stack::start().await;
    let body = sample("otlp-traces.json");
    let url = stack.http_url("/v1/traces");
    let (status, ct, text) = post(&url, "application/json", None, body.clone()).await;
    assert_eq!(
        (status, ct.as_str(), text.as_str()),
        (200, "application/json", "{}")
    );
    let (status, _, _) = post(
        &url,
        "application/json; charset=utf-8",
        Some("gzip"),
        gzip(&body),
    )
    .await;
    assert_eq!(status, 200);

    let api = stack.api();
    // Rows are visible the moment their request is acknowledged: no waiting.
    assert_eq!(count(&api, "SELECT count(*) FROM spans").await.unwrap(), 40);
    // R1's trace: client span, two Mule apps, 5 spans per copy.
    let n = count(
        &api,
        "SELECT count(*) FROM spans WHERE trace_id = '7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a'",
    )
    .await
    .unwrap();
    assert_eq!(n, 10);
    let rows = sql(
        &api,
        "SELECT duration_ms, status_code, service_name, url_path FROM spans \
         WHERE span_id = '1a2b3c4d5e6f7081' LIMIT 1",
    )
    .await
    .unwrap();
    assert_eq!(
        rows[0]["duration_ms"].as_f64(),
        Some(197.0),
        "R1 client span (README table)"
    );
    assert_eq!(rows[0]["status_code"], 200);
    assert_eq!(rows[0]["service_name"], "acme-erp-connector");
    assert_eq!(rows[0]["url_path"], "/orders/v1/orders/ORD-1001");
    // Mule spans carry http.status_code as a string; seam stores the integer.
    let n = count(
        &api,
        "SELECT count(*) FROM spans WHERE scope_name = 'mule-tracer' AND status_code = 401",
    )
    .await
    .unwrap();
    assert!(n >= 2, "{n}");
    // Attribute lookup by key, and the correlation id promoted from correlation.id.
    let rows = sql(
        &api,
        "SELECT DISTINCT attributes['correlation.id'] AS a, correlation_id AS c FROM spans \
         WHERE service_name = 'orders-papi-prd' AND trace_id = '3b9d2f7c8e1a4650b2c4d6e8f0a1c3e5'",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["a"], "a3f9c2e0-9b5d-11ef-8c41-0242ac120004");
    assert_eq!(rows[0]["c"], rows[0]["a"]);
    // ERP spans carry the correlation id as a header string array.
    let n = count(
        &api,
        "SELECT count(*) FROM spans WHERE service_name = 'erp-gateway' \
         AND correlation_id = 'c41f9a27-6d3e-4b18-a2f5-0e7b9c3d5a81'",
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_statuses_and_the_server_keeps_serving() {
    let stack = Stack::start_with(|c| {
        c.limits.max_request_bytes = 64 * 1024;
        c.limits.max_decompressed_bytes = 256 * 1024;
    })
    .await;
    let url = stack.http_url("/v1/traces");

    let garbage = b"\xff\xff\xff garbage".to_vec();
    let (s, ct, body) = post_bytes(&url, "application/x-protobuf", None, garbage).await;
    assert_eq!(s, 400);
    assert_eq!(
        ct, "application/x-protobuf",
        "errors come in the request's encoding"
    );
    let status = <tonic_types::Status as prost::Message>::decode(body.as_slice()).unwrap();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(
        status.message.contains("not an ExportTraceServiceRequest"),
        "{}",
        status.message
    );

    let (s, _, body) = post(
        &url,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(
        v["message"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    let bad_id = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"0102030405060708"}]}]}]}"#;
    let (s, _, body) = post(&url, "application/json", None, bad_id.to_vec()).await;
    assert_eq!(s, 400);
    assert!(
        body.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"),
        "{body}"
    );

    let short_id = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0102030405060708","spanId":"0102030405060708","startTimeUnixNano":"1"},
        {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","startTimeUnixNano":"1"}]}]}]}"#;
    let (s, _, body) = post(&url, "application/json", None, short_id.to_vec()).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rejected = &v["partialSuccess"]["rejectedSpans"];
    assert!(rejected == 1 || rejected == "1", "{body}");
    assert!(
        v["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("must be 16 bytes, got 8")
    );

    let (s, _, body) = post(&url, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(s, 415);
    assert!(
        body.contains("application/x-protobuf or application/json"),
        "{body}"
    );

    let (s, _, body) = post(&url, "application/json", Some("br"), b"{}".to_vec()).await;
    assert_eq!(s, 415);
    assert!(body.contains("content encoding"), "{body}");

    let (s, _, body) = post(&url, "application/json", None, vec![b' '; 100 * 1024]).await;
    assert_eq!(s, 413);
    assert!(body.contains("exceeds the limit of 65536 bytes"), "{body}");

    let bomb = gzip(&vec![b' '; 8 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let (s, _, body) = post(&url, "application/json", Some("gzip"), bomb).await;
    assert_eq!(s, 413);
    assert!(body.contains("decompressed request body exceeds"), "{body}");

    let (s, _, body) = post(&url, "application/json", Some("gzip"), b"not gzip".to_vec()).await;
    assert_eq!(s, 400);
    assert!(body.contains("gzip"), "{body}");

    let (s, _, body) = post(
        &stack.http_url("/v1/metrics"),
        "application/json",
        None,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(s, 404);
    assert!(body.contains("not metrics"), "{body}");

    // Still serving: the valid span of the partial request plus a good request.
    let (s, _, _) = post(&url, "application/json", None, sample("otlp-traces.json")).await;
    assert_eq!(s, 200);
    wait_count(&stack.api(), "SELECT count(*) FROM spans", 21).await;
    let metrics = reqwest::get(format!("http://{}/metrics", stack.api()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // In-process stacks of this test binary share the process's one metrics registry (a
    // served seam is one process, one registry), so other tests' spans count here too: this
    // stack's 21 are a lower bound. Exact counts are checked on spawned binaries.
    let accepted = metric_value(
        &metrics,
        "seam_records_accepted_total{signal=\"spans\",transport=\"http\"}",
    );
    assert!(accepted.is_some_and(|n| n >= 21.0), "{metrics}");
    assert!(metrics.contains("outcome=\"too_large\""), "{metrics}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_with_retryable_statuses() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

    // A buffer too small for the sample: every export is pushed back, nothing is stored.
    let stack = Stack::start_with(|c| c.storage.max_buffer_bytes = 1024).await;
    let resp = send_sample(&stack.addrs.ingest_http.to_string()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let body = resp.text().await.unwrap();
    assert!(body.contains("overloaded"), "{body}");

    let json = sample("otlp-traces.json");
    let req: ExportTraceServiceRequest = serde_json::from_slice(&json).unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", stack.addrs.otlp_grpc))
        .await
        .unwrap();
    let err = client.export(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        count(&stack.api(), "SELECT count(*) FROM spans")
            .await
            .unwrap(),
        0
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frequent_flushes_are_compacted_into_one_file_per_hour() {
    let stack = Stack::start_with(|c| {
        c.storage.flush_interval = Duration::from_millis(50);
        c.storage.compaction_fanout = 4;
        c.storage.compaction_idle = Duration::from_millis(300);
        c.storage.delete_grace = Duration::from_millis(100);
    })
    .await;
    let url = stack.http_url("/v1/traces");
    let body = sample("otlp-traces.json");
    for i in 0..12 {
        let (s, _, _) = post(&url, "application/json", None, body.clone()).await;
        assert_eq!(s, 200);
        // Let each request become its own flush.
        let api = stack.api();
        let want = 20 * (i + 1);
        wait_count(&api, "SELECT count(*) FROM spans", want).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let manifest = stack.dir.path().join("tables/spans/_manifest.json");
    let files = wait_until("compaction to one file", VISIBLE, || {
        let manifest = manifest.clone();
        async move {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&manifest).ok()?).ok()?;
            let files = m["files"].as_array()?.clone();
            // One file holding every row: a compaction may finish before the last
            // request's flush, and merge again after it.
            (files.len() == 1 && files[0]["rows"] == 240).then_some(files)
        }
    })
    .await
    .unwrap();
    assert_eq!(files[0]["rows"], 240);
    assert!(files[0]["level"].as_u64().unwrap() >= 1);
    assert_eq!(
        count(&stack.api(), "SELECT count(*) FROM spans")
            .await
            .unwrap(),
        240
    );
    // Replaced files are deleted after the grace period.
    let dir = stack
        .dir
        .path()
        .join("tables/spans/date=2024-11-05/hour=09");
    wait_until("replaced files to be deleted", VISIBLE, || {
        let dir = dir.clone();
        async move { (std::fs::read_dir(&dir).ok()?.count() == 1).then_some(()) }
    })
    .await
    .unwrap();
    stack.stop().await;
}
