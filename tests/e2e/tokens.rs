//! Token identity and redaction: the synthetic tokens of `tests/fixtures/ground-truth.json`
//! sent in every place a token travels (an Authorization header through the real SDK
//! exporter, a JWT inside a JSON string, `Bearer …` in free text and in a log body, OTLP/JSON),
//! then every byte seam stored is searched for any raw token, signature, key or secret.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

use crate::binary::{Running, spawn_custom};
use crate::support::*;

const KEY: &str = "contoso-demo-fp-key-v1";
const OPAQUE: &str = "opaque-Zx81-token-4711";
const API_KEY: &str = "SUBSCRIPTIONKEY0123456789";
const PASSWORD: &str = "hunter2-correct-horse";
const MALFORMED: &str = "eyJhbGciOiJub25lIn0.bm90IGpzb24.c2lnbmF0dXJlLW1hbGZvcm1lZA";

pub fn truth() -> Value {
    serde_json::from_slice(&sample("ground-truth.json")).unwrap()
}

pub fn jwt(t: &Value, name: &str) -> String {
    t["tokens"][name]["synthetic_compact_jwt"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn export_with_sdk(run: &Running, truth: &Value) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", run.grpc))
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("token-e2e").build())
        .build();
    let tracer = provider.tracer("seam-e2e-tokens");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_730_798_043);
    let cases: Vec<(&str, Vec<KeyValue>)> = vec![
        (
            "T1 header",
            vec![KeyValue::new(
                "http.request.header.authorization",
                format!("Bearer {}", jwt(truth, "T1")),
            )],
        ),
        (
            "T2 in JSON",
            vec![KeyValue::new(
                "request.body",
                format!(
                    r#"{{"grant":"x","access":"{}","password":"{PASSWORD}"}}"#,
                    jwt(truth, "T2")
                ),
            )],
        ),
        (
            "T3 in text",
            vec![KeyValue::new(
                "message",
                format!("calling ERP with bearer {} now", jwt(truth, "T3")),
            )],
        ),
        (
            "opaque",
            vec![
                KeyValue::new(
                    "http.request.header.authorization",
                    format!("Bearer {OPAQUE}"),
                ),
                KeyValue::new(
                    "url.full",
                    format!("https://apim.example/o?subscription-key={API_KEY}&a=1"),
                ),
                KeyValue::new("http.request.header.ocp-apim-subscription-key", API_KEY),
            ],
        ),
        (
            "malformed",
            vec![KeyValue::new(
                "http.request.header.authorization",
                format!("Bearer {MALFORMED}"),
            )],
        ),
    ];
    for (name, attrs) in cases {
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attrs)
            .start(&tracer);
        span.end_with_timestamp(start + Duration::from_millis(5));
    }
    tokio::task::spawn_blocking(move || {
        provider.force_flush().unwrap();
        let _ = provider.shutdown();
    })
    .await
    .unwrap();
}

fn otlp_json_logs(truth: &Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"resourceLogs":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"token-e2e-logs"}}]},
        "scopeLogs":[{"logRecords":[{
        "timeUnixNano":"1730798043000000000",
        "body":{"stringValue": format!("401 for Authorization: Bearer {} (expired)", jwt(truth, "T0"))},
        "attributes":[{"key":"db.password","value":{"stringValue":PASSWORD}}]}]}]}]}))
    .unwrap()
}

/// Every file under `dir` as bytes, plus every Parquet file decoded to JSON text by pyarrow.
pub fn everything_stored(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let script = r#"
import sys, glob, json, pyarrow.parquet as pq
for f in glob.glob(sys.argv[1] + '/**/*.parquet', recursive=True):
    t = pq.read_table(f)
    for c in t.column_names:
        print(t.column(c).to_string(window=10**7, container_window=10**7))
"#;
    let decoded = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    out.push(("decoded parquet".into(), decoded.stdout));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_identified_and_nothing_secret_is_stored() {
    let truth = truth();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("seam.log");
    let keys = format!("k1={KEY}");
    let envs = [("SEAM_FINGERPRINT_KEYS", keys.as_str())];
    let config = "[storage]\nflush_interval = \"200ms\"\n";
    let run = spawn_custom(&data, config, &envs, Some(&log));

    export_with_sdk(&run, &truth).await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{}/v1/logs", run.http))
        .header("content-type", "application/json")
        .body(otlp_json_logs(&truth))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A malformed request that carries a token in the wrong place: the error names the
    // field but never echoes the token.
    let bad = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"spanId":"0102030405060708","traceId":"Bearer {}"}}]}}]}}]}}"#,
        jwt(&truth, "T3")
    );
    let resp = client
        .post(format!("http://{}/v1/traces", run.http))
        .header("content-type", "application/json")
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("traceId") && !body.contains("eyJ"), "{body}");

    let api = run.api.clone();
    wait_count(
        &api,
        "SELECT count(*) FROM spans WHERE service_name = 'token-e2e'",
        5,
    )
    .await;
    wait_count(&api, "SELECT count(*) FROM logs", 1).await;
    for (span, t) in [
        ("T1 header", "T1"),
        ("T2 in JSON", "T2"),
        ("T3 in text", "T3"),
    ] {
        let rows = sql(
            &api,
            &format!(
                "SELECT token_id, token_uti, subject, token_object_id, client_app, tenant_id, \
                 token_issuer, token_audience, token_type, \
                 CAST(to_unixtime(token_expires_at) AS BIGINT) AS exp, \
                 CAST(to_unixtime(token_issued_at) AS BIGINT) AS iat, \
                 array_to_string(token_roles, ' ') AS roles, \
                 array_to_string(token_scopes, ' ') AS scopes \
                 FROM spans WHERE name = '{span}'"
            ),
        )
        .await
        .unwrap();
        let r = &rows[0];
        let want = &truth["tokens"][t];
        let c = &want["claims"];
        assert_eq!(r["token_id"], want["fingerprint"], "{span}");
        assert_eq!(r["token_uti"], c["uti"], "{span}");
        assert_eq!(r["subject"], c["sub"], "{span}");
        assert_eq!(r["token_object_id"], c["oid"], "{span}");
        assert_eq!(r["client_app"], c["azp"], "{span}");
        assert_eq!(r["tenant_id"], c["tid"], "{span}");
        assert_eq!(r["token_issuer"], c["iss"], "{span}");
        assert_eq!(r["token_audience"], c["aud"], "{span}");
        assert_eq!(r["exp"], c["exp"], "{span}");
        assert_eq!(r["iat"], c["iat"], "{span}");
        let roles: Vec<&str> = c["roles"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(r["roles"].as_str().unwrap_or(""), roles.join(" "), "{span}");
        assert_eq!(
            r["scopes"].as_str().unwrap_or(""),
            c["scp"].as_str().unwrap_or(""),
            "{span}"
        );
        assert_eq!(r["token_type"].as_str(), c["idtyp"].as_str(), "{span}");
    }
    let rows = sql(&api, "SELECT token_id, token_uti, client_app FROM logs")
        .await
        .unwrap();
    assert_eq!(rows[0]["token_id"], truth["tokens"]["T0"]["fingerprint"]);
    assert_eq!(rows[0]["token_uti"], truth["tokens"]["T0"]["claims"]["uti"]);
    // Opaque and malformed tokens: stored, with a fingerprint only, and counted.
    for name in ["opaque", "malformed"] {
        let rows = sql(
            &api,
            &format!("SELECT token_id, token_uti, attributes['http.request.header.authorization'] AS a FROM spans WHERE name = '{name}'"),
        )
        .await
        .unwrap();
        let id = rows[0]["token_id"].as_str().unwrap();
        assert!(
            id.starts_with("hmac-sha256:k1:") && id.len() == 47,
            "{name}: {id}"
        );
        assert!(rows[0]["token_uti"].is_null());
        assert_eq!(rows[0]["a"], format!("Bearer <redacted {id}>"));
    }
    let metrics = metrics_text(&api).await;
    // At least this test's one (the registry is the process's, shared with other stacks).
    assert!(
        metric_value(
            &metrics,
            "seam_tokens_unreadable_total{table=\"spans\",reason=\"opaque\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    // At least this test's one (the registry is the process's, shared with other stacks).
    assert!(
        metric_value(
            &metrics,
            "seam_tokens_unreadable_total{table=\"spans\",reason=\"not_json\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let url = scalar(
        &api,
        "SELECT attributes['url.full'] FROM spans WHERE name = 'opaque'",
    )
    .await
    .unwrap();
    assert_eq!(
        url,
        "https://apim.example/o?subscription-key=<redacted>&a=1"
    );

    // Let a flush write Parquet, then send one more record and crash before the next flush,
    // so that both Parquet files and WAL entries are searched.
    let manifest = data.join("tables/spans/_manifest.json");
    wait_until("a Parquet flush", VISIBLE, || {
        let manifest = manifest.clone();
        async move {
            let m: Value = serde_json::from_slice(&std::fs::read(&manifest).ok()?).ok()?;
            (!m["files"].as_array()?.is_empty()).then_some(())
        }
    })
    .await
    .unwrap();
    let resp = client
        .post(format!("http://{}/v1/logs", run.http))
        .header("content-type", "application/json")
        .body(otlp_json_logs(&truth))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut run = run;
    run.child.kill().unwrap();
    run.child.wait().unwrap();

    let mut needles: Vec<(String, String)> = vec![
        ("fingerprint key".into(), KEY.into()),
        ("opaque token".into(), OPAQUE.into()),
        ("subscription key".into(), API_KEY.into()),
        ("password".into(), PASSWORD.into()),
        ("malformed token".into(), MALFORMED.into()),
    ];
    for t in ["T0", "T1", "T2", "T3"] {
        let raw = jwt(&truth, t);
        let sig = raw.rsplit('.').next().unwrap().to_string();
        needles.push((format!("{t} raw"), raw));
        needles.push((format!("{t} signature"), sig));
    }
    let mut stored = everything_stored(&data);
    let decoded = &stored.last().unwrap().1;
    let t1_fp = truth["tokens"]["T1"]["fingerprint"].as_str().unwrap();
    assert!(
        String::from_utf8_lossy(decoded).contains(t1_fp),
        "the decoded Parquet text holds the stored rows"
    );
    stored.push(("seam's own log".into(), std::fs::read(&log).unwrap()));
    assert!(
        stored.iter().any(|(p, _)| p.ends_with(".wal")),
        "the WAL is searched too"
    );
    for (what, bytes) in &stored {
        let text = String::from_utf8_lossy(bytes);
        for (name, needle) in &needles {
            assert!(!text.contains(needle.as_str()), "{name} found in {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_keep_one_token_id() {
    let truth = truth();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = format!("k2=the-new-key-2026,k1={KEY}");
    let run = spawn_custom(&data, "", &[("SEAM_FINGERPRINT_KEYS", keys.as_str())], None);
    let old_fp = truth["tokens"]["T1"]["fingerprint"].as_str().unwrap();
    let body = serde_json::json!({"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"raw",
         "startTimeUnixNano":"1730798043000000000",
         "attributes":[{"key":"http.request.header.authorization",
                        "value":{"stringValue": format!("Bearer {}", jwt(&truth, "T1"))}}]},
        {"traceId":"0102030405060708090a0b0c0d0e0f11","spanId":"0102030405060709","name":"gateway",
         "startTimeUnixNano":"1730798043000000001",
         "attributes":[{"key":"token.fingerprint","value":{"stringValue": old_fp}}]},
        {"traceId":"0102030405060708090a0b0c0d0e0f12","spanId":"010203040506070a","name":"claims",
         "startTimeUnixNano":"1730798043000000002",
         "attributes":[{"key":"token.uti","value":{"stringValue": truth["tokens"]["T1"]["claims"]["uti"]}}]}
    ]}]}]});
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", run.http))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_count(&run.api, "SELECT count(*) FROM spans", 3).await;
    let rows = sql(&run.api, "SELECT name, token_id FROM spans ORDER BY time")
        .await
        .unwrap();
    let id = rows[0]["token_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("hmac-sha256:k2:"), "current key: {id}");
    assert_eq!(
        rows[1]["token_id"],
        id.as_str(),
        "older-key fingerprint maps to the same id"
    );
    assert_eq!(
        rows[2]["token_id"],
        id.as_str(),
        "uti-only record maps to the same id"
    );
    // The links survive a restart: a claims-only record sent later still maps.
    let mut run = run;
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let run = spawn_custom(&data, "", &[("SEAM_FINGERPRINT_KEYS", keys.as_str())], None);
    let later = serde_json::json!({"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0102030405060708090a0b0c0d0e0f13","spanId":"010203040506070b","name":"later",
         "startTimeUnixNano":"1730798043000000003",
         "attributes":[{"key":"token.uti","value":{"stringValue": truth["tokens"]["T1"]["claims"]["uti"]}}]}
    ]}]}]});
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", run.http))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&later).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_count(&run.api, "SELECT count(*) FROM spans", 4).await;
    let later_id = scalar(&run.api, "SELECT token_id FROM spans WHERE name = 'later'")
        .await
        .unwrap();
    assert_eq!(later_id, id.as_str(), "links are kept across restarts");
    drop(run);
}
