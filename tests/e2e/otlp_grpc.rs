//! OTLP over gRPC through the real `opentelemetry-otlp` tonic exporter, with gzip.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Compression, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_logs_sent_by_the_sdk_exporter_are_queryable() {
    let stack = Stack::start().await;
    let endpoint = format!("http://{}", stack.addrs.otlp_grpc);

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("grpc-e2e").build())
        .build();
    let tracer = provider.tracer("seam-e2e-grpc");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_730_798_043);
    let mut trace_ids = Vec::new();
    for i in 0..25i64 {
        let mut span = tracer
            .span_builder("GET /orders/{id}")
            .with_kind(SpanKind::Server)
            .with_start_time(start + Duration::from_millis(i as u64))
            .with_attributes(vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 400 + i),
                KeyValue::new("url.path", format!("/orders/{i}")),
                KeyValue::new("http.route", "/orders/{id}"),
                KeyValue::new("correlation.id", format!("corr-grpc-{i}")),
                KeyValue::new(
                    "http.request.header.authorization",
                    "Bearer sekret-grpc-token",
                ),
            ])
            .start(&tracer);
        span.end_with_timestamp(start + Duration::from_millis(i as u64 + 250));
        trace_ids.push(span.span_context().trace_id().to_string());
    }
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush())
        .await
        .unwrap()
        .unwrap();

    let api = stack.api();
    wait_count(
        &api,
        "SELECT count(*) FROM spans WHERE service_name = 'grpc-e2e'",
        25,
    )
    .await;
    let rows = sql(
        &api,
        &format!(
            "SELECT trace_id, duration_ms, status_code, kind, url_path, correlation_id, \
             attributes['http.route'] AS route, \
             attributes['http.request.header.authorization'] AS auth \
             FROM spans WHERE trace_id = '{}'",
            trace_ids[3]
        ),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["trace_id"], trace_ids[3].as_str());
    assert_eq!(r["duration_ms"].as_f64(), Some(250.0));
    assert_eq!(r["status_code"], 403);
    assert_eq!(r["kind"], "server");
    assert_eq!(r["url_path"], "/orders/3");
    assert_eq!(r["correlation_id"], "corr-grpc-3");
    assert_eq!(r["route"], "/orders/{id}");
    assert_eq!(
        r["auth"], "Bearer <redacted>",
        "no fingerprint key in this test"
    );

    let log_exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .unwrap();
    let logs = SdkLoggerProvider::builder()
        .with_batch_exporter(log_exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("grpc-e2e-logs")
                .build(),
        )
        .build();
    let logger = logs.logger("seam-e2e-logger");
    for i in 0..10 {
        let mut rec = logger.create_log_record();
        rec.set_body(AnyValue::String(format!("order {i} failed").into()));
        rec.set_severity_number(Severity::Warn);
        rec.set_severity_text("WARN");
        rec.add_attribute("correlation.id", format!("corr-log-{i}"));
        rec.add_attribute("cookie", "session=abc");
        logger.emit(rec);
    }
    let l = logs.clone();
    tokio::task::spawn_blocking(move || l.force_flush())
        .await
        .unwrap()
        .unwrap();
    wait_count(
        &api,
        "SELECT count(*) FROM logs WHERE service_name = 'grpc-e2e-logs'",
        10,
    )
    .await;
    let rows = sql(
        &api,
        "SELECT level, severity_number, body, correlation_id, attributes['cookie'] AS cookie, \
         scope_name FROM logs WHERE correlation_id = 'corr-log-7'",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["level"], "WARN");
    assert_eq!(rows[0]["severity_number"], 13);
    assert_eq!(rows[0]["body"], "order 7 failed");
    assert_eq!(rows[0]["cookie"], "<redacted>");
    assert_eq!(rows[0]["scope_name"], "seam-e2e-logger");

    tokio::task::spawn_blocking(move || {
        let _ = provider.shutdown();
        let _ = logs.shutdown();
    })
    .await
    .unwrap();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_is_unimplemented_and_bad_messages_are_invalid_argument() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let stack = Stack::start().await;
    let endpoint = format!("http://{}", stack.addrs.otlp_grpc);
    let mut metrics = MetricsServiceClient::connect(endpoint.clone())
        .await
        .unwrap();
    let err = metrics
        .export(ExportMetricsServiceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("not metrics"), "{}", err.message());

    // One valid span and one with an 8-byte trace id: partial success naming the bad one.
    let span = |tid: Vec<u8>| Span {
        trace_id: tid,
        span_id: vec![7; 8],
        name: "op".into(),
        start_time_unix_nano: 1_730_798_043_000_000_000,
        end_time_unix_nano: 1_730_798_043_100_000_000,
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span(vec![1; 16]), span(vec![1; 8])],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut traces = TraceServiceClient::connect(endpoint).await.unwrap();
    let resp = traces.export(req).await.unwrap().into_inner();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("spans[1].traceId must be 16 bytes, got 8"),
        "{}",
        partial.error_message
    );
    wait_count(&stack.api(), "SELECT count(*) FROM spans", 1).await;
    stack.stop().await;
}
