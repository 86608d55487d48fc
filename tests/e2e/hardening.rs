//! Findings of the adversarial review (issue 16) against the real binary: a record with an
//! absurd time is refused alone and cannot stop seam, not even from its write-ahead log; and
//! a secret planted in every field of every input shape reaches no byte seam writes (WAL,
//! Parquet decoded, side files, its own log).

use std::path::Path;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::binary::{sigterm_and_wait, spawn_custom};
use crate::support::*;

async fn post(url: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

fn span(trace: &str, span: &str, start: &str, end: &str) -> Value {
    json!({"traceId": trace, "spanId": span, "name": "GET /orders", "kind": 2,
           "startTimeUnixNano": start, "endTimeUnixNano": end})
}

fn traces(spans: Vec<Value>) -> String {
    json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "orders-papi"}}]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]})
    .to_string()
}

const APIM_OK: &str = r#"{"time":"2024-11-05T09:14:03.1274512Z","category":"GatewayLogs","correlationId":"8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07","properties":{"method":"GET","url":"https://apim.example/orders/1","responseCode":200,"apiId":"orders-api"}}"#;

/// Issue 16, finding 1: `startTimeUnixNano = i64::MAX` and an APIM record timed in 2262 are
/// refused with a reason while their neighbours are stored; a record that got into the
/// write-ahead log under a wider window is moved to `rejects` at the next start, which
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_times_are_refused_alone_and_never_stop_seam() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = spawn_custom(&data, "", &[], None);
    let http = format!("http://{}", run.http);

    let body = traces(vec![
        span(
            "7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a",
            "1a2b3c4d5e6f7081",
            "1730798043121451000",
            "1730798043318451000",
        ),
        span(
            "7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9b",
            "1a2b3c4d5e6f7082",
            "9223372036854775807",
            "9223372036854775807",
        ),
        span(
            "7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9c",
            "1a2b3c4d5e6f7083",
            "1730798043121451000",
            "9223372036854775807",
        ),
        span(
            "7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9d",
            "1a2b3c4d5e6f7084",
            "1730798043121451000",
            "1730798043318451000",
        ),
    ]);
    let (status, text) = post(&format!("{http}/v1/traces"), "application/json", body).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["partialSuccess"]["rejectedSpans"],
        json!(2),
        "{text}"
    );
    let msg = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("spans[1]") && msg.contains("outside the accepted event-time window"),
        "{msg}"
    );

    let late = APIM_OK.replace("2024-11-05T09:14:03.1274512Z", "2262-04-11T23:47:10Z");
    let (status, text) = post(
        &format!("{http}/ingest/apim"),
        "application/json",
        format!("{APIM_OK}\n{late}\n"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    wait_count(&run.api, "SELECT count(*) FROM spans", 2).await;
    wait_count(&run.api, "SELECT count(*) FROM gateway_logs", 1).await;
    let reasons = sql(&run.api, "SELECT reason, line FROM rejects")
        .await
        .unwrap();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0]["reason"]
            .as_str()
            .unwrap()
            .contains("2262-04-11T23:47:10"),
        "{reasons:?}"
    );
    sigterm_and_wait(run);

    // A seam with a far wider window takes the record (as an older seam without the window
    // did) and is killed before it reaches Parquet.
    let wide = "[limits]\nmax_event_time_ahead = \"200000d\"\n";
    let run = spawn_custom(&data, wide, &[], None);
    let (status, text) = post(
        &format!("http://{}/v1/traces", run.http),
        "application/json",
        traces(vec![
            span(
                "0d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a",
                "2a2b3c4d5e6f7081",
                "9223372036854775000",
                "9223372036854775807",
            ),
            span(
                "0d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9b",
                "2a2b3c4d5e6f7082",
                "1730798043121451000",
                "1730798043318451000",
            ),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("rejected"), "{text}");
    // The correlator's minute arithmetic stays bounded: seam still answers.
    wait_count(&run.api, "SELECT count(*) FROM spans", 4).await;
    let mut run = run;
    run.child.kill().unwrap();
    run.child.wait().unwrap();

    // The default window at the next start: replay moves the record to rejects, seam starts.
    let run = spawn_custom(&data, "", &[], None);
    wait_count(&run.api, "SELECT count(*) FROM spans", 3).await;
    let refused = sql(
        &run.api,
        "SELECT source, reason, raw FROM rejects WHERE source = 'spans'",
    )
    .await
    .unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let reason = refused[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("write-ahead log replay") && reason.contains("2262-04-11"),
        "{reason}"
    );
    assert!(
        refused[0]["raw"]
            .as_str()
            .unwrap()
            .contains("0d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a"),
        "{refused:?}"
    );
    sigterm_and_wait(run);
}

/// Secret shapes planted in fields: each with a unique core that must never be written.
struct Planter {
    n: usize,
    cores: Vec<String>,
}

const JWT_HEAD: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9";

impl Planter {
    fn new() -> Self {
        Self {
            n: 0,
            cores: Vec::new(),
        }
    }

    /// The next secret, in the next of the shapes users' logs carry them in.
    fn next(&mut self) -> String {
        self.n += 1;
        let n = self.n;
        let core = format!("Zq{n:04}S3cr3tVal");
        self.cores.push(core.clone());
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"user-{n}","uti":"u{n}","exp":1730800720}}"#
        ));
        let jwt = format!("{JWT_HEAD}.{payload}.{core}");
        match n % 10 {
            0 => format!("Bearer {jwt}"),
            1 => jwt,
            2 => format!("Bearer  {core}"),
            3 => format!("Bearer%20{core}"),
            4 => {
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("svc-orders:{core}"));
                self.cores.push(basic.clone());
                format!("Basic {basic}")
            }
            5 => format!("/api/orders?access_token={core}&page=2"),
            6 => format!(r#"{{"clientSecret":"{core}"}}"#),
            7 => format!("token={core}"),
            8 => format!("password: {core}"),
            _ => format!("x-auth-token={core}; private_key={core}"),
        }
    }
}

/// Every copy of `v` with one string leaf replaced by a planted secret (and, for objects
/// whose keys are free names, one copy with a planted key).
fn planted(v: &Value, p: &mut Planter, out: &mut Vec<Value>) {
    fn walk(v: &Value, path: &mut Vec<Step>, root: &Value, p: &mut Planter, out: &mut Vec<Value>) {
        match v {
            Value::String(_) => {
                let mut copy = root.clone();
                *at(&mut copy, path) = Value::String(p.next());
                out.push(copy);
            }
            Value::Object(m) => {
                for (k, x) in m {
                    path.push(Step::Key(k.clone()));
                    walk(x, path, root, p, out);
                    path.pop();
                }
                let mut copy = root.clone();
                if let Value::Object(m) = at(&mut copy, path) {
                    m.insert(p.next(), json!("value"));
                    for name in [
                        "token",
                        "auth_token",
                        "accessToken",
                        "api_token",
                        "private_key",
                    ] {
                        let secret = p.next();
                        m.insert(name.to_string(), Value::String(secret));
                    }
                }
                out.push(copy);
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(Step::Index(i));
                    walk(x, path, root, p, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    walk(v, &mut Vec::new(), v, p, out);
}

enum Step {
    Key(String),
    Index(usize),
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(v, |v, s| match s {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

fn otlp_traces_base() -> Value {
    json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "orders-papi"}},
        {"key": "host.name", "value": {"stringValue": "vm-1"}}]},
      "scopeSpans": [{"scope": {"name": "io.opentelemetry.http", "version": "2.9.0"},
        "spans": [{"traceId": "7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a", "spanId": "1a2b3c4d5e6f7081",
          "traceState": "vendor=abc", "name": "GET /orders", "kind": 2,
          "startTimeUnixNano": "1730798043121451000", "endTimeUnixNano": "1730798043318451000",
          "attributes": [
            {"key": "http.request.method", "value": {"stringValue": "GET"}},
            {"key": "url.path", "value": {"stringValue": "/orders/1"}},
            {"key": "http.request.header.authorization", "value": {"stringValue": "scheme value"}},
            {"key": "payload", "value": {"kvlistValue": {"values": [
                {"key": "note", "value": {"stringValue": "x"}}]}}},
            {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}],
          "events": [{"timeUnixNano": "1730798043200000000", "name": "exception",
            "attributes": [{"key": "exception.message", "value": {"stringValue": "boom"}},
                           {"key": "exception.stacktrace", "value": {"stringValue": "at x"}}]}],
          "links": [{"traceId": "0d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a", "spanId": "2a2b3c4d5e6f7081",
            "attributes": [{"key": "link.note", "value": {"stringValue": "y"}}]}],
          "status": {"code": 2, "message": "failed"}}]}]}]})
}

fn otlp_logs_base() -> Value {
    json!({"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "orders-papi"}}]},
      "scopeLogs": [{"scope": {"name": "org.mule.runtime", "version": "4.6"},
        "logRecords": [{"timeUnixNano": "1730798043121451000",
          "observedTimeUnixNano": "1730798043121451000", "severityText": "INFO",
          "severityNumber": 9, "eventName": "order.read",
          "body": {"stringValue": "Request received"},
          "traceId": "7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a", "spanId": "1a2b3c4d5e6f7081",
          "attributes": [{"key": "thread.name", "value": {"stringValue": "cpuLight.01"}},
                         {"key": "kv", "value": {"kvlistValue": {"values": [
                            {"key": "inner", "value": {"stringValue": "z"}}]}}}]}]}]}]})
}

fn apim_base() -> Value {
    json!({"time": "2024-11-05T09:14:03.1274512Z", "category": "GatewayLogs",
      "operationName": "Microsoft.ApiManagement/GatewayLogs", "durationMs": 184,
      "callerIpAddress": "203.0.113.45", "correlationId": "8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07",
      "location": "West Europe",
      "properties": {"method": "GET", "url": "https://apim.example/orders/v1/orders/1",
        "responseCode": 401, "backendResponseCode": 200, "apiId": "orders-api",
        "operationId": "get-order", "productId": "gold", "userId": "6541a7c2",
        "apimSubscriptionId": "6541a7c2f1e9", "backendId": "orders-papi",
        "backendUrl": "https://orders-papi.example/api/orders/1", "lastErrorReason": "denied",
        "lastErrorMessage": "JWT not valid", "lastErrorSource": "validate-jwt",
        "errors": [{"source": "validate-jwt", "reason": "TokenExpired", "message": "expired"}],
        "requestHeaders": {"User-Agent": "erp/4.2", "X-Custom": "v"},
        "backendRequestHeaders": {"traceparent": "00-7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a-1a2b3c4d5e6f7081-01"},
        "responseHeaders": {"Content-Type": "application/json"}}})
}

fn apim_custom_base() -> Value {
    json!({"EventTime": "2024-11-05T09:14:03.3104510Z", "ServiceName": "apim.example",
      "RequestId": "8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07", "RequestIp": "203.0.113.45",
      "ApiId": "orders-api", "OperationId": "get-order", "UserId": "u1", "Method": "GET",
      "Url": "https://apim.example/orders/v1/orders/1", "StatusCode": 200, "Section": "outbound",
      "Jwt": {"validated": true, "uti": "kT3", "appid": "app-1"}})
}

fn mule_json_base() -> Value {
    json!({"correlationId": "f0a7d2c9-31b8-4e56-9d04-7c2e1b8a6f33", "message": "Request received",
      "tracePoint": "START", "priority": "INFO", "elapsed": 0,
      "locationInfo": {"lineInFile": "18", "component": "json-logger:logger",
        "fileName": "customers-papi.xml", "rootContainer": "customers-papi-main"},
      "timestamp": "2024-11-05T09:15:12.891Z",
      "content": {"method": "GET", "requestPath": "/api/customers/C-1",
        "headers": {"x-correlation-id": "f0a7d2c9"}},
      "applicationName": "customers-papi-prd", "environment": "prd",
      "threadName": "[MuleRuntime].uber.02: [customers-papi-prd].customers-papi-main.CPU_LITE @5a6b"})
}

/// Every file under `dir` as text: Parquet decoded by pyarrow, everything else as bytes.
fn everything_written(dir: &Path) -> String {
    let script = r#"
import os, sys, pyarrow as pa, pyarrow.parquet as pq
root = sys.argv[1]
for base, _, files in os.walk(root):
    for f in files:
        p = os.path.join(base, f)
        sys.stdout.write("\n== " + p + "\n")
        if f.endswith(".parquet"):
            t = pq.read_table(p)
            for name in t.column_names:
                col = t.column(name)
                if pa.types.is_timestamp(col.type):
                    col = col.cast(pa.int64())
                sys.stdout.write(name + "=" + str(col.to_pylist()) + "\n")
        else:
            sys.stdout.write(open(p, "rb").read().decode("latin-1"))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each planted secret found in `text`, with what surrounds it (to tell where it was).
fn leaks(text: &str, cores: &[String]) -> Vec<String> {
    cores
        .iter()
        .filter_map(|c| {
            let at = text.find(c.as_str())?;
            let from = text.floor_char_boundary(at.saturating_sub(120));
            let to = text.ceil_char_boundary((at + c.len() + 40).min(text.len()));
            Some(format!("{c} in …{}…", &text[from..to]))
        })
        .collect()
}

/// Issue 16, finding 5: a secret planted in every field (values, keys, names, the file
/// parameter, SQL text) of every input shape reaches no byte seam writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_reaches_any_byte_seam_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("seam.log");
    let run = spawn_custom(&data, "", &[("SEAM_LOG", "debug")], Some(&log));
    let http = format!("http://{}", run.http);
    let mut p = Planter::new();

    let mut sent = 0;
    for (base, path) in [
        (otlp_traces_base(), "/v1/traces"),
        (otlp_logs_base(), "/v1/logs"),
    ] {
        let mut copies = Vec::new();
        planted(&base, &mut p, &mut copies);
        for c in copies {
            let (status, text) =
                post(&format!("{http}{path}"), "application/json", c.to_string()).await;
            assert!(status == 200 || status == 400, "{status} {text}");
            sent += 1;
        }
    }
    for (base, source, time_key, id_key) in [
        (apim_base(), "apim", "time", "correlationId"),
        (apim_custom_base(), "apim", "EventTime", "RequestId"),
        (mule_json_base(), "mule", "timestamp", "correlationId"),
    ] {
        let mut copies = Vec::new();
        planted(&base, &mut p, &mut copies);
        // Each copy its own record (its own id and time), so none is dropped as a duplicate.
        for (i, c) in copies.iter_mut().enumerate() {
            if c[id_key] == base[id_key] {
                c[id_key] = json!(format!("8d0c3f5e-2a41-4b7e-9c61-{i:012}"));
            }
            if c[time_key] == base[time_key] {
                c[time_key] = json!(format!(
                    "2024-11-05T09:{:02}:{:02}.{i:03}Z",
                    i / 60 % 60,
                    i % 60
                ));
            }
        }
        let body: String = copies.iter().map(|c| format!("{c}\n")).collect();
        let (status, text) =
            post(&format!("{http}/ingest/{source}"), "application/json", body).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains(r#""duplicates":0"#), "{text}");
        sent += copies.len();
    }
    // log4j lines: secrets in the thread, processor, logger and message.
    let mut lines = String::new();
    for _ in 0..6 {
        lines.push_str(&format!(
            "INFO  2024-11-05 09:10:02,611 [[MuleRuntime].uber.03: [orders-papi].{}.CPU_LITE @1] [processor: {}; event: {}] org.mule.{}: Calling backend with {}\n",
            p.next(),
            p.next(),
            p.next(),
            // A logger name has no ": " (the message starts after it).
            p.next().replace(": ", "="),
            p.next()
        ));
    }
    let (status, text) = post(&format!("{http}/ingest/mule"), "text/plain", lines).await;
    assert_eq!(status, 200, "{text}");
    // The file parameter names a file whose name holds a secret.
    let file = p.next();
    let url =
        reqwest::Url::parse_with_params(&format!("{http}/ingest/apim"), [("file", file.as_str())])
            .unwrap();
    let (status, text) = post(
        url.as_str(),
        "application/json",
        format!("{APIM_OK}\nnot json\n"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // SQL text with a secret literal, recorded in seam_audit.
    let literal = p.next().replace('\'', "");
    let _ = sql(&run.api, &format!("SELECT '{literal}' AS x")).await;
    assert!(sent > 100, "only {sent} inputs");
    // Everything was acknowledged, so it is in the write-ahead log; the audit row follows
    // through its own queue.
    assert!(
        count(&run.api, "SELECT count(*) FROM gateway_log_copies")
            .await
            .unwrap()
            > 10
    );
    assert!(
        count(&run.api, "SELECT count(*) FROM rejects")
            .await
            .unwrap()
            > 0
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    // While running: the write-ahead log and every side file.
    let live = everything_written(&data);
    let found = leaks(&live, &p.cores);
    assert!(
        found.is_empty(),
        "secrets in the data directory while running: {found:?}"
    );

    sigterm_and_wait(run);
    let stopped = everything_written(&data);
    assert!(stopped.contains(".parquet"), "nothing was flushed");
    let found = leaks(&stopped, &p.cores);
    assert!(
        found.is_empty(),
        "secrets in the data directory after the stop: {found:?}"
    );
    let own_log = std::fs::read_to_string(&log).unwrap();
    let found = leaks(&own_log, &p.cores);
    assert!(found.is_empty(), "secrets in seam's own log: {found:?}");
    assert!(p.cores.len() > 200);
}

/// Issue 16, finding 8: APIM and Mule text fields are capped like OTLP values (a 5 MB `url`,
/// a 10 MB Mule message stored as `message` and `raw`), with the truncation mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apim_and_mule_fields_are_capped_like_otlp_values() {
    let stack = Stack::start().await;
    let api = stack.api();
    let long_url = format!("https://apim.example/orders/{}", "a".repeat(5 << 20));
    let mut rec = apim_base();
    rec["properties"]["url"] = json!(long_url);
    let (status, text) = post(
        &stack.http_url("/ingest/apim"),
        "application/json",
        rec.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let mut line = mule_json_base();
    line["message"] = json!("m".repeat(10 << 20));
    let (status, text) = post(
        &stack.http_url("/ingest/mule"),
        "application/json",
        line.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let cap = seam_collector::config::LimitsConfig::default().max_attribute_value_bytes as i64;
    let mark = "…[truncated by seam]";
    let mark_len = mark.len() as i64;
    let rows = sql(
        &api,
        "SELECT octet_length(url) AS n, url FROM gateway_log_copies",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["n"].as_i64().unwrap(), cap + mark_len);
    assert!(rows[0]["url"].as_str().unwrap().ends_with(mark));
    let rows = sql(
        &api,
        "SELECT octet_length(message) AS m, octet_length(raw) AS r FROM flow_logs",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0]["m"].as_i64().unwrap() <= cap + mark_len, "{rows:?}");
    assert!(rows[0]["r"].as_i64().unwrap() <= cap + mark_len, "{rows:?}");
    stack.stop().await;
}

/// Issue 16, finding 7 (and the review after it): every refusal is a JSON error, unknown
/// paths and methods included, on the API and the ingest listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_answer_json_errors() {
    let stack = Stack::start().await;
    let client = reqwest::Client::new();
    for (method, url, status, kind) in [
        (
            "GET",
            format!("http://{}/api/v1/sql", stack.api()),
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            format!("http://{}/nope", stack.api()),
            404,
            "not_found",
        ),
        (
            "GET",
            stack.http_url("/v1/traces"),
            405,
            "method_not_allowed",
        ),
        ("POST", stack.http_url("/v2/anything"), 404, "not_found"),
    ] {
        let r = client
            .request(method.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {url}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["kind"], json!(kind), "{method} {url}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    stack.stop().await;
}
