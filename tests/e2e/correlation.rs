//! The correlator: the samples (`tests/fixtures`), sent in order, in reverse and shuffled, give exactly
//! the requests, layers, latencies, rejections, bypass and tokens of `ground-truth.json`;
//! `seam correlate` rebuilds the same rows.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;
use crate::tokens::truth;

const KEYS: &str = "k1=contoso-demo-fp-key-v1";

/// (endpoint, sample) in the samples' natural order.
pub const SAMPLES: &[(&str, &str)] = &[
    ("/ingest/apim", "apim-gatewaylogs-eventhub.json"),
    ("/ingest/apim", "apim-gatewaylogs-storage.jsonl"),
    ("/ingest/apim", "apim-gatewaylogs-loganalytics.json"),
    ("/ingest/apim", "apim-custom-eventhub.jsonl"),
    ("/ingest/mule", "mule-log4j.log"),
    ("/ingest/mule", "mule-json-logger.jsonl"),
    ("/v1/traces", "otlp-traces.json"),
];

pub async fn quick_stack() -> Stack {
    Stack::start_with(|c| {
        c.tokens.fingerprint_keys = vec![KEYS.into()];
        c.correlation.horizon = Duration::from_secs(2);
        c.correlation.delay = Duration::from_millis(200);
    })
    .await
}

pub async fn send(http: &str, order: &[usize]) {
    let client = reqwest::Client::new();
    for &i in order {
        let (path, file) = SAMPLES[i];
        let resp = client
            .post(format!("http://{http}{path}"))
            .header("content-type", "application/json")
            .body(sample(file))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{file}");
    }
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Every column of every request, in a stable order, without arrival times.
async fn snapshot(api: &str) -> Vec<serde_json::Map<String, Value>> {
    let mut rows = sql(api, "SELECT * FROM requests ORDER BY request_id")
        .await
        .unwrap();
    for r in &mut rows {
        r.remove("ingest_time");
    }
    rows
}

async fn check(api: &str) {
    let truth = truth();
    let reqs = truth["requests"].as_object().unwrap();
    assert_eq!(
        count(api, "SELECT count(*) FROM requests").await.unwrap(),
        reqs.len() as i64,
        "{:?}",
        sql(api, "SELECT request_id FROM requests").await
    );
    for (name, r) in reqs {
        let id = r["apim_correlation_id"]
            .as_str()
            .or(r["mule_correlation_id"].as_str())
            .unwrap();
        let rows = sql(
            api,
            &format!("SELECT * FROM requests WHERE request_id = {}", q(id)),
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1, "{name}");
        let row = &rows[0];
        assert_eq!(row["settled"], true, "{name}");
        assert_eq!(row["status_code"], r["final_status"], "{name}");
        // The truth says e.g. "backend (inventory-sapi, surfaced by …)": the layer comes first.
        let layer = r["rejected_by"]
            .as_str()
            .and_then(|t| t.split_whitespace().next());
        assert_eq!(row["rejected_by"].as_str(), layer, "{name}");
        assert_eq!(
            row["mule_correlation_id"], r["mule_correlation_id"],
            "{name}"
        );
        assert_eq!(
            row["apim_correlation_id"], r["apim_correlation_id"],
            "{name}"
        );
        if let Some(t) = r["trace_id"].as_str() {
            assert_eq!(row["trace_id"], t, "{name}");
        }
        let token = &truth["tokens"][r["token"].as_str().unwrap()];
        assert_eq!(row["token_id"], token["fingerprint"], "{name}");
        assert_eq!(row["client_app"], token["claims"]["azp"], "{name}");
        let lat = &r["latency_ms"];
        let f = |k: &str| row[k].as_f64();
        if lat.is_null() {
            // Answered by the gateway alone (rejection, cache hit): all of its time is the
            // gateway's, and the layers it never reached are NULL, not 0.
            let total = scalar(
                api,
                &format!(
                    "SELECT total_time_ms FROM gateway_logs WHERE correlation_id = {}",
                    q(id)
                ),
            )
            .await
            .unwrap();
            assert_eq!(row["total_ms"], total, "{name}");
            assert_eq!(row["gateway_ms"], total, "{name}");
            for k in ["network_ms", "integration_ms", "backend_ms"] {
                assert_eq!(row[k], Value::Null, "{name} {k}");
            }
            assert_eq!(row["bypassed_gateway"], false, "{name}");
            continue;
        }
        match lat["apim_total"].as_f64() {
            Some(total) => {
                assert_eq!(f("total_ms"), Some(total), "{name}");
                assert_eq!(f("gateway_ms"), lat["apim_overhead"].as_f64(), "{name}");
            }
            None => {
                assert_eq!(f("total_ms"), lat["mule_flow"].as_f64(), "{name}");
                assert_eq!(row["gateway_ms"], Value::Null, "{name}");
            }
        }
        if let (Some(b), Some(flow)) = (lat["apim_backend"].as_f64(), lat["mule_flow"].as_f64()) {
            assert_eq!(f("network_ms"), Some(b - flow), "{name}");
        } else {
            assert_eq!(row["network_ms"], Value::Null, "{name}");
        }
        match lat["mule_own"].as_f64() {
            Some(own) => assert_eq!(f("integration_ms"), Some(own), "{name}"),
            None if lat["mule_flow"].is_number() => {}
            None => {
                // Mule never saw it: no integration or backend time, never an invented 0.
                assert_eq!(row["integration_ms"], Value::Null, "{name}");
                assert_eq!(row["backend_ms"], Value::Null, "{name}");
            }
        }
        let downstream = lat["mule_downstream"]
            .as_f64()
            .or(lat["mule_downstream_scope"].as_f64());
        if let Some(d) = downstream {
            assert_eq!(f("backend_ms"), Some(d), "{name}");
        }
        if let (Some(flow), Some(d)) = (lat["mule_flow"].as_f64(), downstream) {
            assert_eq!(f("integration_ms"), Some(flow - d), "{name}");
        }
        assert_eq!(row["bypassed_gateway"], name == "R6", "{name}");
        assert_eq!(
            row["has_gateway"],
            r["apim_correlation_id"].is_string(),
            "{name}"
        );
    }
    // Rejections: layer and reason.
    let reason = |name: &str| {
        let id = truth["requests"][name]["apim_correlation_id"]
            .as_str()
            .unwrap()
            .to_string();
        async move {
            scalar(
                api,
                &format!(
                    "SELECT error_reason FROM requests WHERE request_id = {}",
                    q(&id)
                ),
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(reason("R4").await, "TokenExpired");
    assert_eq!(reason("R7").await, "TokenClaimValueNotAllowed");
    assert_eq!(reason("R5").await, "HTTP:UNAUTHORIZED");
    // R5's 401 came from inventory-sapi, behind orders-papi.
    let r5 = truth["requests"]["R5"]["apim_correlation_id"]
        .as_str()
        .unwrap();
    let backend = sql(
        api,
        &format!(
            "SELECT DISTINCT service FROM request_events WHERE request_id = {} AND layer = 'backend'",
            q(r5)
        ),
    )
    .await
    .unwrap();
    assert_eq!(backend.len(), 1, "{backend:?}");
    assert_eq!(backend[0]["service"], "inventory-sapi-prd");
    let mule = scalar(
        api,
        &format!("SELECT mule_app FROM requests WHERE request_id = {}", q(r5)),
    )
    .await
    .unwrap();
    assert_eq!(mule, "orders-papi-prd");
    // R6 is the only bypass, and the audit view says so.
    let bypass = sql(
        api,
        "SELECT request_id, client_ip FROM audit_gateway_bypass",
    )
    .await
    .unwrap();
    assert_eq!(bypass.len(), 1);
    assert_eq!(
        bypass[0]["request_id"],
        truth["requests"]["R6"]["mule_correlation_id"]
    );
    assert_eq!(bypass[0]["client_ip"], "10.20.4.17");
    // R8 (cache hit): answered by the gateway, never a bypass, nothing missing.
    let r8 = truth["requests"]["R8"]["apim_correlation_id"]
        .as_str()
        .unwrap();
    let row = sql(api, &format!("SELECT cache, rejected_by, bypassed_gateway, has_flow FROM requests WHERE request_id = {}", q(r8))).await.unwrap();
    assert_eq!(row[0]["cache"], "hit");
    assert_eq!(row[0]["rejected_by"], Value::Null);
    assert_eq!(row[0]["bypassed_gateway"], false);
    // Noise is never a request.
    for id in truth["noise"]["mule_scheduler_correlation_ids"]
        .as_array()
        .unwrap()
    {
        let n = count(
            api,
            &format!(
                "SELECT count(*) FROM requests WHERE request_id = {0} OR mule_correlation_id = {0}",
                q(id.as_str().unwrap())
            ),
        )
        .await
        .unwrap();
        assert_eq!(n, 0, "{id}");
    }
    // Tokens T0 to T3 with their fingerprints; T0 was used after it expired, and failed.
    let tokens = sql(
        api,
        "SELECT token_id, requests, failures FROM tokens ORDER BY token_id",
    )
    .await
    .unwrap();
    let mut want: Vec<&str> = ["T0", "T1", "T2", "T3"]
        .iter()
        .map(|t| truth["tokens"][*t]["fingerprint"].as_str().unwrap())
        .collect();
    want.sort();
    let got: Vec<&str> = tokens
        .iter()
        .map(|t| t["token_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);
    let denials = count(api, "SELECT count(*) FROM audit_denials")
        .await
        .unwrap();
    assert_eq!(denials, 3);
    assert_eq!(
        count(api, "SELECT count(*) FROM audit_expired_token_use")
            .await
            .unwrap(),
        0
    );
    let expired = scalar(
        api,
        &format!(
            "SELECT token_expired FROM requests WHERE request_id = {}",
            q(truth["requests"]["R4"]["apim_correlation_id"]
                .as_str()
                .unwrap())
        ),
    )
    .await
    .unwrap();
    assert_eq!(expired, true);
}

pub async fn settled(api: &str, n: i64) {
    let api = api.to_string();
    wait_until("all requests settled", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            match count(&api, "SELECT count(*) FROM requests WHERE settled").await {
                Ok(c) if c >= n => Some(()),
                _ => None,
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_in_any_order_give_the_ground_truth() {
    let orders: [Vec<usize>; 3] = [
        (0..SAMPLES.len()).collect(),
        (0..SAMPLES.len()).rev().collect(),
        vec![4, 1, 6, 3, 0, 5, 2],
    ];
    let mut snapshots = Vec::new();
    for order in orders {
        let stack = quick_stack().await;
        send(&stack.addrs.ingest_http.to_string(), &order).await;
        let api = stack.api();
        settled(&api, 8).await;
        check(&api).await;
        snapshots.push(snapshot(&api).await);
        if snapshots.len() == 1 {
            // A rebuild with `seam correlate` gives the same rows.
            let resp = reqwest::Client::new()
                .post(format!(
                    "http://{api}/api/v1/correlate?since=2024-11-05T00:00:00Z"
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["requests"], 8, "{body}");
            assert_eq!(snapshot(&api).await, snapshots[0]);
        }
        stack.stop().await;
    }
    assert_eq!(snapshots[0], snapshots[1], "reverse order");
    assert_eq!(snapshots[0], snapshots[2], "shuffled order");
}

async fn post_body(http: &str, path: &str, body: String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{http}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
}

/// Sends generated traffic through the ingest endpoints, the late gateway records last.
async fn send_traffic(http: &str, t: &seam_tests::generator::Traffic) {
    for chunk in t.gateway_lines.chunks(500) {
        post_body(http, "/ingest/apim", chunk.join("\n")).await;
    }
    for chunk in t.events.chunks(500) {
        post_body(http, "/ingest/apim", chunk.join("\n")).await;
    }
    for chunk in t.mule_lines.chunks(1000) {
        post_body(http, "/ingest/mule", chunk.join("\n")).await;
    }
    for body in &t.otlp {
        post_body(http, "/v1/traces", body.to_string()).await;
    }
    // Late gateway records (some a second time, in another shape).
    post_body(
        http,
        "/ingest/apim",
        serde_json::json!({ "records": t.late_gateway }).to_string(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_traffic_gives_exact_answers_and_rebuilds_identically() {
    use seam_tests::generator::generate;
    const N: usize = 2_000;
    // 2024-11-06T10:00:00Z, one request every 150 ms.
    let start = 1_730_887_200_000_000_000i64;
    let t = generate(42, N, start, 150);
    let stack = Stack::start_with(|c| {
        c.correlation.horizon = Duration::from_secs(3);
        c.correlation.delay = Duration::from_millis(300);
    })
    .await;
    let http = stack.addrs.ingest_http.to_string();
    let api = stack.api();
    send_traffic(&http, &t).await;
    let api2 = api.clone();
    wait_until(
        "generated requests settled",
        Duration::from_secs(180),
        || {
            let api = api2.clone();
            async move {
                match count(&api, "SELECT count(*) FROM requests WHERE settled").await {
                    Ok(c) if c >= N as i64 => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        count(&api, "SELECT count(*) FROM requests").await.unwrap(),
        N as i64
    );
    let rows = sql(
        &api,
        "SELECT request_id, mule_correlation_id, status_code, rejected_by, bypassed_gateway, \
         token_expired, token_id, backend_ms, gateway_ms, integration_ms FROM requests",
    )
    .await
    .unwrap();
    let by_id: std::collections::HashMap<String, &serde_json::Map<String, Value>> = rows
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap().to_string(), r))
        .collect();
    for want in &t.truth {
        let got = by_id
            .get(&want.request_id)
            .unwrap_or_else(|| panic!("{} ({}) missing", want.request_id, want.kind));
        let ctx = format!("{} {}", want.kind, want.request_id);
        assert_eq!(got["status_code"], want.status, "{ctx}");
        assert_eq!(got["rejected_by"].as_str(), want.rejected_by, "{ctx}");
        assert_eq!(got["bypassed_gateway"], want.bypass, "{ctx}");
        assert_eq!(
            got["mule_correlation_id"].as_str(),
            want.mule_correlation_id.as_deref(),
            "{ctx}"
        );
        assert_eq!(got["token_id"], want.token_id.as_str(), "{ctx}");
        assert_eq!(got["backend_ms"].as_f64(), want.backend_ms, "{ctx}");
        assert_eq!(got["gateway_ms"].as_f64(), want.gateway_ms, "{ctx}");
        assert_eq!(got["integration_ms"].as_f64(), want.integration_ms, "{ctx}");
        if want.expired_success {
            assert_eq!(got["token_expired"], true, "{ctx}");
        }
    }
    let n = |f: fn(&seam_tests::generator::Truth) -> bool| {
        t.truth.iter().filter(|x| f(x)).count() as i64
    };
    assert_eq!(
        count(&api, "SELECT count(*) FROM audit_gateway_bypass")
            .await
            .unwrap(),
        n(|x| x.bypass)
    );
    assert_eq!(
        count(&api, "SELECT count(*) FROM audit_expired_token_use")
            .await
            .unwrap(),
        n(|x| x.expired_success)
    );
    assert_eq!(
        count(&api, "SELECT count(*) FROM audit_denials")
            .await
            .unwrap(),
        n(|x| x.rejected_by.is_some())
    );
    let shared = sql(&api, "SELECT token_id, client_ips FROM audit_token_sharing")
        .await
        .unwrap();
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0]["token_id"], t.shared_token.as_str());
    assert_eq!(shared[0]["client_ips"], 2);
    // The views are written for memory (joins, pre-filtered groups); they answer as their
    // plain one-aggregation definitions do.
    for (view, plain) in [
        (
            "SELECT token_id, subject, client_app, tenant_id, issuer, audience, expires_at, \
             first_seen, last_seen, requests, failures, distinct_client_ips, apis \
             FROM tokens ORDER BY token_id",
            "SELECT token_id, max(subject) AS subject, max(client_app) AS client_app, \
             max(tenant_id) AS tenant_id, max(token_issuer) AS issuer, \
             max(token_audience) AS audience, max(token_expires_at) AS expires_at, \
             min(time) AS first_seen, max(time) AS last_seen, count(*) AS requests, \
             sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS failures, \
             count(DISTINCT client_ip) AS distinct_client_ips, \
             array_sort(array_agg(DISTINCT api_id) FILTER (WHERE api_id IS NOT NULL)) AS apis \
             FROM requests WHERE token_id IS NOT NULL GROUP BY token_id ORDER BY token_id",
        ),
        (
            "SELECT * FROM audit_token_sharing ORDER BY token_id",
            "SELECT token_id, max(subject) AS subject, count(*) AS requests, \
             count(DISTINCT client_ip) AS client_ips, count(DISTINCT client_app) AS client_apps, \
             array_sort(array_agg(DISTINCT client_ip) FILTER (WHERE client_ip IS NOT NULL)) AS ips, \
             min(time) AS first_seen, max(time) AS last_seen \
             FROM requests WHERE token_id IS NOT NULL GROUP BY token_id \
             HAVING count(DISTINCT client_ip) > 1 OR count(DISTINCT client_app) > 1 \
             ORDER BY token_id",
        ),
    ] {
        let (v, p) = (
            sql(&api, view).await.unwrap(),
            sql(&api, plain).await.unwrap(),
        );
        assert!(!v.is_empty());
        assert_eq!(v, p, "{view}");
    }

    // A rebuild gives the same rows.
    let before = snapshot(&api).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/api/v1/correlate?since={start}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(snapshot(&api).await, before);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minutes_left_at_shutdown_are_kept_and_correlated_after_the_next_start() {
    use seam_tests::generator::generate;
    const N: usize = 60;
    // 2024-11-06T10:00:00Z, one request every 150 ms.
    let start = 1_730_887_200_000_000_000i64;
    let t = generate(9, N, start, 150);
    // Nothing is due before the stop (delay 1 h), and the stop drains nothing.
    let stack = Stack::start_with(|c| {
        c.correlation.horizon = Duration::from_secs(2);
        c.correlation.delay = Duration::from_secs(3600);
        c.correlation.shutdown_drain = Duration::ZERO;
    })
    .await;
    let http = stack.addrs.ingest_http.to_string();
    send_traffic(&http, &t).await;
    assert_eq!(
        count(&stack.api(), "SELECT count(*) FROM requests")
            .await
            .unwrap(),
        0
    );
    let dir = stack.stop().await;
    // The stop was quick and kept the minutes still to correlate.
    let pending = dir.path().join(seam_correlate::PENDING_FILE);
    let minutes: Vec<i64> =
        serde_json::from_slice(&std::fs::read(&pending).expect("pending file")).unwrap();
    assert!(minutes.contains(&start), "{minutes:?}");

    let mut cfg = test_config(dir.path());
    cfg.correlation.horizon = Duration::from_secs(2);
    cfg.correlation.delay = Duration::from_millis(200);
    let server = seam::server::Server::start(cfg).await.unwrap();
    let api = server.addrs().api.to_string();
    let settled = wait_until("requests after restart", Duration::from_secs(20), || {
        let api = api.clone();
        async move {
            match count(&api, "SELECT count(*) FROM requests WHERE settled").await {
                Ok(c) if c >= N as i64 => Some(()),
                _ => None,
            }
        }
    })
    .await;
    if let Err(e) = settled {
        let rows = sql(
            &api,
            "SELECT count(*) AS n, sum(CASE WHEN settled THEN 1 ELSE 0 END) AS s FROM requests",
        )
        .await;
        panic!("{e}: {rows:?}");
    }
    server.shutdown().await.unwrap();
    // Nothing left the second time.
    assert!(!pending.exists());
}
