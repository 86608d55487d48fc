//! Limits, retention and the disk budget.

use std::time::Duration;

use crate::support::*;

async fn post_json(url: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn metrics(api: &str) -> String {
    metrics_text(api).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_count_and_attribute_limits() {
    let stack = Stack::start_with(|c| {
        c.limits.max_records_per_request = 10;
        c.limits.max_attributes = 3;
        c.limits.max_attribute_value_bytes = 64;
    })
    .await;
    let url = stack.http_url("/v1/traces");
    let (s, body) = post_json(&url, sample("otlp-traces.json")).await;
    assert_eq!(s, 413);
    assert!(
        body.contains("holds 20 records, more than the limit of 10"),
        "{body}"
    );

    let long = "x".repeat(100);
    let span = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{
        "traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
        "name":"op","startTimeUnixNano":"1730798043000000000",
        "attributes":[
          {{"key":"long","value":{{"stringValue":"{long}"}}}},
          {{"key":"b","value":{{"stringValue":"2"}}}},
          {{"key":"c","value":{{"stringValue":"3"}}}},
          {{"key":"d","value":{{"stringValue":"4"}}}},
          {{"key":"e","value":{{"stringValue":"5"}}}}]}}]}}]}}]}}"#
    );
    let (s, body) = post_json(&url, span.into_bytes()).await;
    assert_eq!(s, 200, "{body}");
    let api = stack.api();
    wait_count(&api, "SELECT count(*) FROM spans", 1).await;
    let rows = sql(
        &api,
        "SELECT attributes['long'] AS long, attributes['c'] AS c, attributes['d'] AS d, \
         attributes['seam.dropped_attributes'] AS dropped FROM spans",
    )
    .await
    .unwrap();
    let r = &rows[0];
    assert_eq!(r["long"], format!("{}…[truncated by seam]", "x".repeat(64)));
    assert_eq!(r["c"], "3");
    assert!(r["d"].is_null());
    assert_eq!(r["dropped"], "2");
    let m = metrics(&api).await;
    // At least this test's two (the registry is the process's, shared with other stacks).
    assert!(
        metric_value(&m, "seam_attributes_truncated_total{table=\"spans\"}")
            .is_some_and(|n| n >= 2.0),
        "{m}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_files_and_logs_the_reason() {
    let stack = Stack::start_with(|c| {
        c.storage.flush_interval = Duration::from_millis(100);
        c.storage.delete_grace = Duration::from_millis(100);
        c.storage.retention.default = Duration::from_secs(86_400);
        c.storage.retention.check_interval = Duration::from_millis(100);
        // logs are kept forever
        c.storage
            .retention
            .tables
            .insert("logs".into(), Duration::ZERO.into());
    })
    .await;
    let api = stack.api();
    let (s, _) = post_json(&stack.http_url("/v1/traces"), sample("otlp-traces.json")).await;
    assert_eq!(s, 200);
    let old_log = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"timeUnixNano":"1730798043000000000","body":{"stringValue":"old"}}]}]}]}"#;
    let (s, _) = post_json(&stack.http_url("/v1/logs"), old_log.to_vec()).await;
    assert_eq!(s, 200);
    // The 2024 spans are older than a day: once flushed, retention removes them.
    wait_count(&api, "SELECT count(*) FROM spans", 0).await;
    // At least these 20 (the process's one registry also counts other tests' removals).
    let m = metrics(&api).await;
    let removed = metric_value(
        &m,
        "seam_retention_removed_rows_total{table=\"spans\",reason=\"retention\"}",
    );
    assert!(removed.is_some_and(|n| n >= 20.0), "{m}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&api, "SELECT count(*) FROM logs").await.unwrap(), 1);
    stack.stop().await;
}

/// The OTLP sample moved forward by 7000 s: from 09:1x to 11:0x-11:1x UTC.
fn sample_two_hours_later() -> Vec<u8> {
    String::from_utf8(sample("otlp-traces.json"))
        .unwrap()
        .replace("\"1730797", "\"1730804")
        .replace("\"1730798", "\"1730805")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_budget_removes_the_oldest_hours_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let tweak = |budget: u64| {
        let data = data.clone();
        move |c: &mut seam::config::SeamConfig| {
            c.data_dir = data;
            c.storage.flush_interval = Duration::from_millis(100);
            c.storage.delete_grace = Duration::from_millis(100);
            c.storage.retention.default = Duration::ZERO;
            c.storage.retention.max_data_bytes = budget;
            c.storage.retention.check_interval = Duration::from_millis(100);
        }
    };
    // Measure one hour's file.
    let stack = Stack::start_with(tweak(0)).await;
    assert_eq!(
        post_json(&stack.http_url("/v1/traces"), sample("otlp-traces.json"))
            .await
            .0,
        200
    );
    stack.stop().await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("tables/spans/_manifest.json")).unwrap())
            .unwrap();
    let size = manifest["files"][0]["size"].as_u64().unwrap();

    // A budget of one and a half such files: adding a later hour evicts the earlier one.
    let stack = Stack::start_with(tweak(size * 3 / 2)).await;
    let api = stack.api();
    assert_eq!(count(&api, "SELECT count(*) FROM spans").await.unwrap(), 20);
    let (s, _) = post_json(&stack.http_url("/v1/traces"), sample_two_hours_later()).await;
    assert_eq!(s, 200);
    wait_count(
        &api,
        "SELECT count(*) FROM spans WHERE time < '2024-11-05T10:00:00Z'",
        0,
    )
    .await;
    assert_eq!(count(&api, "SELECT count(*) FROM spans").await.unwrap(), 20);
    let m = metrics(&api).await;
    assert!(
        m.contains("seam_retention_removed_files_total{table=\"spans\",reason=\"disk_budget\"} 1"),
        "{m}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stats_is_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let d = data.clone();
    let stack = Stack::start_with(move |c| c.data_dir = d).await;
    let url = stack.http_url("/v1/traces");
    assert_eq!(post_json(&url, sample("otlp-traces.json")).await.0, 200);
    assert_eq!(post_json(&url, b"{not json".to_vec()).await.0, 400);
    let bad_id = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0102","spanId":"0102030405060708","startTimeUnixNano":"1"}]}]}]}"#;
    assert_eq!(post_json(&url, bad_id.to_vec()).await.0, 200);
    // Minutes are written when they end or when seam stops.
    stack.stop().await;
    let stack = Stack::start_with(move |c| c.data_dir = data).await;
    let rows = sql(
        &stack.api(),
        "SELECT source, signal, sum(requests) AS requests, sum(refused_requests) AS refused, \
         sum(received) AS received, sum(accepted) AS accepted, sum(rejected) AS rejected, \
         sum(duplicates) AS duplicates, max(lag_max_ms) AS lag \
         FROM ingest_stats GROUP BY source, signal",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["source"], "otlp_http");
    assert_eq!(r["signal"], "spans");
    assert_eq!(r["requests"], 3);
    assert_eq!(r["refused"], 1);
    assert_eq!(r["received"], 21);
    assert_eq!(r["accepted"], 20);
    assert_eq!(r["rejected"], 1);
    assert_eq!(r["duplicates"], 0);
    // The sample's spans are from 2024: the lag is about two years.
    assert!(r["lag"].as_f64().unwrap() > 365.0 * 86_400_000.0, "{r:?}");
    stack.stop().await;
}
