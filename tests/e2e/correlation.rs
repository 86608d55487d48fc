//! The correlator: the samples (`tests/fixtures`), sent in order, in reverse and shuffled, give exactly
//! the requests, layers, latencies, rejections, bypass and tokens of `ground-truth.json`;
//! `seam correlate` rebuilds the same rows. A generated world with the noise of a real estate
//! (probes outnumbering requests, schedulers, platform lines, failed downstream calls) gives
//! exactly the generator's requests (precision and recall 1), bypasses, denials by layer,
//! layer times, probes and external probes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use seam_tests::generator::{
    GATEWAY_EGRESS, KUBE_PROBE_AGENT, ProbeTruth, Traffic, Truth, background_flows, generate,
};
use serde_json::{Map, Value, json};

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
async fn snapshot(api: &str) -> Vec<Row> {
    snapshot_of(api, "SELECT * FROM requests ORDER BY request_id").await
}

/// The rows of `query`, without arrival times.
async fn snapshot_of(api: &str, query: &str) -> Vec<Row> {
    let mut rows = sql(api, query).await.unwrap();
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

type Row = Map<String, Value>;

/// A row's column as text (`-` for NULL or missing).
fn text(r: &Row, column: &str) -> String {
    match r.get(column) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => "-".to_string(),
        Some(v) => v.to_string(),
    }
}

/// The rows of `query` by the text of their column `key`.
async fn rows_by(api: &str, query: &str, key: &str) -> BTreeMap<String, Row> {
    sql(api, query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .into_iter()
        .map(|r| (text(&r, key), r))
        .collect()
}

/// Compares the ids seam gave (`got`: id, what seam said of it) with the true ones (`want`:
/// id, what it is): `None` when equal, else the precision, the recall and the first false
/// positives and negatives.
fn set_check(
    what: &str,
    got: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Option<String> {
    let described = |(id, d): (&String, &String)| format!("{id} ({d})");
    let false_pos: Vec<String> = got
        .iter()
        .filter(|(id, _)| !want.contains_key(*id))
        .map(described)
        .collect();
    let false_neg: Vec<String> = want
        .iter()
        .filter(|(id, _)| !got.contains_key(*id))
        .map(described)
        .collect();
    if false_pos.is_empty() && false_neg.is_empty() {
        return None;
    }
    let hits = got.len() - false_pos.len();
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Some(format!(
        "{what}: precision {:.4} ({hits} of the {} seam gave), recall {:.4} ({hits} of the {} true); \
         {} false positives, first {:#?}; {} false negatives, first {:#?}",
        ratio(hits, got.len()),
        got.len(),
        ratio(hits, want.len()),
        want.len(),
        false_pos.len(),
        &false_pos[..false_pos.len().min(8)],
        false_neg.len(),
        &false_neg[..false_neg.len().min(8)],
    ))
}

/// Adds `bad` (if any) to `out` as one failure: how many, and the first ones.
fn push_first(out: &mut Vec<String>, what: &str, bad: &[String]) {
    if !bad.is_empty() {
        out.push(format!(
            "{what}: {} in all, first {:#?}",
            bad.len(),
            &bad[..bad.len().min(12)]
        ));
    }
}

/// A probe, in words.
fn describe_probe(p: &ProbeTruth) -> String {
    format!(
        "{} {} from {} ({})",
        p.mule_app.as_deref().unwrap_or("gateway"),
        p.url_path,
        p.client_ip,
        p.user_agent
    )
}

/// What each noise id (probe, background run) of `t` is.
fn noise_ids(t: &Traffic) -> HashMap<&str, &'static str> {
    let mut ids: HashMap<&str, &'static str> = t
        .probes
        .iter()
        .map(|p| (p.probe_id.as_str(), "probe"))
        .collect();
    for id in &t.background_correlation_ids {
        ids.insert(id.as_str(), "background run");
    }
    ids
}

/// How the `requests` row `got` differs from the truth `want` (times within 1 ms, NULL where
/// the truth has none).
fn request_diffs(want: &Truth, got: &Row) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut exact = vec![
        ("status_code", json!(want.status)),
        ("rejected_by", json!(want.rejected_by)),
        ("bypassed_gateway", json!(want.bypass)),
        ("has_gateway", json!(want.has_gateway)),
        ("mule_correlation_id", json!(want.mule_correlation_id)),
        ("token_id", json!(want.token_id)),
    ];
    if want.expired_success {
        exact.push(("token_expired", json!(true)));
    }
    for (column, w) in exact {
        let g = got.get(column).cloned().unwrap_or(Value::Null);
        if g != w {
            diffs.push(format!("{column} {g}, want {w}"));
        }
    }
    for (column, w) in [
        ("total_ms", want.total_ms),
        ("gateway_ms", want.gateway_ms),
        ("network_ms", want.network_ms),
        ("integration_ms", want.integration_ms),
        ("backend_ms", want.backend_ms),
    ] {
        let g = got.get(column).and_then(Value::as_f64);
        let close = match (g, w) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() <= 1.0,
            _ => false,
        };
        if !close {
            diffs.push(format!("{column} {g:?}, want {w:?}"));
        }
    }
    diffs
        .into_iter()
        .map(|d| format!("{} {}: {d}", want.kind, want.request_id))
        .collect()
}

/// The generated requests against `requests`: the set of ids (precision and recall, false
/// positives described by app, flow and path), the bypasses and `audit_gateway_bypass`,
/// the denials per layer, no noise id as a Mule correlation id, and per request its
/// outcome, ids, token and layer times.
pub(crate) async fn check_generated_requests(api: &str, t: &Traffic) -> Vec<String> {
    let mut out = Vec::new();
    let rows = rows_by(
        api,
        "SELECT request_id, mule_correlation_id, mule_app, flow, url_path, client_ip, \
         status_code, rejected_by, bypassed_gateway, has_gateway, token_expired, token_id, \
         total_ms, gateway_ms, network_ms, integration_ms, backend_ms FROM requests",
        "request_id",
    )
    .await;
    let noise = noise_ids(t);
    let got: BTreeMap<String, String> = rows
        .iter()
        .map(|(id, r)| {
            let what = noise.get(id.as_str()).copied().unwrap_or("not generated");
            let where_ = format!(
                "{}/{} {}",
                text(r, "mule_app"),
                text(r, "flow"),
                text(r, "url_path")
            );
            (id.clone(), format!("{what}: {where_}"))
        })
        .collect();
    let want: BTreeMap<String, String> = t
        .truth
        .iter()
        .map(|x| (x.request_id.clone(), x.kind.to_string()))
        .collect();
    out.extend(set_check("requests", &got, &want));
    let want_bypass: BTreeMap<String, String> = t
        .truth
        .iter()
        .filter(|x| x.bypass)
        .map(|x| (x.request_id.clone(), x.kind.to_string()))
        .collect();
    let got_bypass: BTreeMap<String, String> = rows
        .iter()
        .filter(|(_, r)| r.get("bypassed_gateway") == Some(&Value::Bool(true)))
        .map(|(id, r)| {
            (
                id.clone(),
                format!("{} from {}", text(r, "url_path"), text(r, "client_ip")),
            )
        })
        .collect();
    out.extend(set_check("bypassed_gateway", &got_bypass, &want_bypass));
    let audit: BTreeMap<String, String> = rows_by(
        api,
        "SELECT request_id, url_path, client_ip FROM audit_gateway_bypass",
        "request_id",
    )
    .await
    .into_iter()
    .map(|(id, r)| {
        (
            id,
            format!("{} from {}", text(&r, "url_path"), text(&r, "client_ip")),
        )
    })
    .collect();
    out.extend(set_check("audit_gateway_bypass", &audit, &want_bypass));
    // Denials by layer: (seam, truth).
    let mut layers: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in rows.values() {
        layers.entry(text(r, "rejected_by")).or_default().0 += 1;
    }
    for x in &t.truth {
        layers
            .entry(x.rejected_by.unwrap_or("-").to_string())
            .or_default()
            .1 += 1;
    }
    if layers.values().any(|(a, b)| a != b) {
        out.push(format!("rejected_by per layer (seam, truth): {layers:?}"));
    }
    let leaked: Vec<String> = rows
        .values()
        .filter_map(|r| {
            let cid = r.get("mule_correlation_id")?.as_str()?;
            let what = noise.get(cid)?;
            Some(format!(
                "{cid} ({what}) in request {}",
                text(r, "request_id")
            ))
        })
        .collect();
    push_first(
        &mut out,
        "noise ids as requests.mule_correlation_id",
        &leaked,
    );
    let bad: Vec<String> = t
        .truth
        .iter()
        .filter_map(|want| Some(request_diffs(want, rows.get(&want.request_id)?)))
        .flatten()
        .collect();
    push_first(&mut out, "request rows differ from the truth", &bad);
    out
}

/// The generated probes against `probes` (each once, with its app, path, caller, match and
/// flags; no request among them) and `audit_external_probes` (exactly the external probes
/// without a gateway record).
pub(crate) async fn check_generated_probes(api: &str, t: &Traffic) -> Vec<String> {
    let mut out = Vec::new();
    let rows = rows_by(
        api,
        "SELECT probe_id, mule_app, url_path, client_ip, matched_by, external, has_gateway, \
         has_flow, has_spans FROM probes",
        "probe_id",
    )
    .await;
    let requests: HashMap<&str, &str> = t
        .truth
        .iter()
        .map(|x| (x.request_id.as_str(), x.kind))
        .collect();
    let got: BTreeMap<String, String> = rows
        .iter()
        .map(|(id, r)| {
            let what = requests.get(id.as_str()).map_or_else(
                || "not generated".to_string(),
                |k| format!("the {k} request"),
            );
            let probe = format!("{} {}", text(r, "mule_app"), text(r, "url_path"));
            (id.clone(), format!("{what}: {probe}"))
        })
        .collect();
    let want: BTreeMap<String, String> = t
        .probes
        .iter()
        .map(|p| (p.probe_id.clone(), describe_probe(p)))
        .collect();
    out.extend(set_check("probes", &got, &want));
    let mut bad = Vec::new();
    for p in &t.probes {
        let Some(r) = rows.get(&p.probe_id) else {
            continue;
        };
        for (column, w) in [
            ("mule_app", json!(p.mule_app)),
            ("url_path", json!(p.url_path)),
            ("client_ip", json!(p.client_ip)),
            ("matched_by", json!(p.matched_by)),
            ("external", json!(p.external)),
            ("has_gateway", json!(p.has_gateway)),
            ("has_flow", json!(p.has_flow)),
            ("has_spans", json!(p.has_spans)),
        ] {
            let g = r.get(column).cloned().unwrap_or(Value::Null);
            if g != w {
                bad.push(format!(
                    "{} ({}): {column} {g}, want {w}",
                    p.probe_id,
                    describe_probe(p)
                ));
            }
        }
    }
    push_first(&mut out, "probe rows differ from the truth", &bad);
    let audit: BTreeMap<String, String> = rows_by(
        api,
        "SELECT probe_id, mule_app, url_path, client_ip FROM audit_external_probes",
        "probe_id",
    )
    .await
    .into_iter()
    .map(|(id, r)| {
        let probe = format!(
            "{} {} from {}",
            text(&r, "mule_app"),
            text(&r, "url_path"),
            text(&r, "client_ip")
        );
        (id, probe)
    })
    .collect();
    let want_audit: BTreeMap<String, String> = t
        .probes
        .iter()
        .filter(|p| p.audited())
        .map(|p| (p.probe_id.clone(), describe_probe(p)))
        .collect();
    out.extend(set_check("audit_external_probes", &audit, &want_audit));
    out
}

/// The noise stays in the raw tables: every Mule line and log4j event once (the second
/// deliveries are duplicates), the platform lines without a correlation id, every
/// background run, every gateway record (requests and gateway probes, each once), every
/// kubelet probe's span.
pub(crate) async fn check_noise_kept(api: &str, t: &Traffic) -> Vec<String> {
    let flows: Vec<String> = background_flows()
        .iter()
        .map(|f| format!("'{f}'"))
        .collect();
    let gateway = t.truth.iter().filter(|x| x.has_gateway).count()
        + t.probes.iter().filter(|p| p.has_gateway).count();
    let probe_spans = t
        .probes
        .iter()
        .filter(|p| p.has_spans && p.user_agent == KUBE_PROBE_AGENT)
        .count();
    let mut out = Vec::new();
    for (query, want) in [
        (
            "SELECT count(*) FROM flow_logs".to_string(),
            t.mule_lines.len() + t.mule_log4j.len(),
        ),
        (
            "SELECT count(*) FROM flow_logs WHERE correlation_id IS NULL".to_string(),
            t.platform_lines,
        ),
        (
            format!(
                "SELECT count(DISTINCT correlation_id) FROM flow_logs WHERE flow IN ({})",
                flows.join(", ")
            ),
            t.background_runs,
        ),
        ("SELECT count(*) FROM gateway_logs".to_string(), gateway),
        (
            format!(
                "SELECT count(*) FROM spans WHERE kind = 'server' AND user_agent = '{KUBE_PROBE_AGENT}'"
            ),
            probe_spans,
        ),
    ] {
        match count(api, &query).await {
            Ok(n) if n == want as i64 => {}
            got => out.push(format!("{query}: {got:?}, want {want}")),
        }
    }
    out
}

/// Waits until every generated request and probe is settled and no row is left unsettled
/// (the late records' minutes recomputed). On a timeout it says what it saw and lets the
/// checks report the differences.
pub(crate) async fn wait_generated_settled(api: &str, t: &Traffic, within: Duration) {
    // The late records' minutes are recomputed `delay` after they came.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (requests, probes) = (t.truth.len() as i64, t.probes.len() as i64);
    let api = api.to_string();
    let settled = wait_until("generated requests and probes settled", within, || {
        let api = api.clone();
        async move {
            let n = |q: &'static str| {
                let api = api.clone();
                async move { count(&api, q).await.ok() }
            };
            let done = n("SELECT count(*) FROM requests WHERE settled").await? >= requests
                && n("SELECT count(*) FROM requests WHERE NOT settled").await? == 0
                && n("SELECT count(*) FROM probes WHERE settled").await? >= probes
                && n("SELECT count(*) FROM probes WHERE NOT settled").await? == 0;
            done.then_some(())
        }
    })
    .await;
    if let Err(e) = settled {
        eprintln!("{e}; checking what there is");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_traffic_gives_exact_answers_and_rebuilds_identically() {
    const N: usize = 2_000;
    // 2024-11-06T10:00:00Z, one request every 500 ms (about 17 minutes), in the noise of a
    // real estate: more probes than requests (kubelet, uptime monitors, Traffic Manager on
    // the gateway), scheduler and poller runs, platform lines, failed downstream calls,
    // late, twice-sent and out-of-order records. The default probe lists are in force.
    let start = 1_730_887_200_000_000_000i64;
    let t = generate(42, N, start, 500);
    assert!(
        t.probes.len() >= N,
        "{} probes for {N} requests",
        t.probes.len()
    );
    assert!(t.background_runs > 0 && t.platform_lines > 0 && !t.mule_duplicates.is_empty());
    let stack = Stack::start_with(|c| {
        c.correlation.horizon = Duration::from_secs(3);
        c.correlation.delay = Duration::from_millis(300);
        // Minutes here hold 1,500 to 3,000 records: each is recomputed in two to three
        // slices (the smallest step allowed), so the exact answers below cover slicing.
        c.correlation.max_step_records = 1_000;
        c.correlation.gateway_egress = vec![GATEWAY_EGRESS.to_string()];
    })
    .await;
    let http = stack.addrs.ingest_http.to_string();
    let api = stack.api();
    send_traffic(&http, &t).await;
    wait_generated_settled(&api, &t, Duration::from_secs(240)).await;
    // Busy minutes were done in slices (more slices than recomputations).
    let metrics = metrics_text(&api).await;
    let metric = |series: &str| metric_value(&metrics, series).unwrap_or(0.0);
    let (slices, steps) = (
        metric("seam_correlation_slices_total"),
        metric("seam_correlation_steps_total{outcome=\"ok\"}"),
    );
    assert!(
        slices > steps && steps > 0.0,
        "{slices} slices, {steps} steps"
    );
    let mut failures = check_generated_requests(&api, &t).await;
    failures.extend(check_generated_probes(&api, &t).await);
    failures.extend(check_noise_kept(&api, &t).await);
    assert!(
        failures.is_empty(),
        "{} of the checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let n = |f: fn(&Truth) -> bool| t.truth.iter().filter(|x| f(x)).count() as i64;
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

    // A rebuild gives the same rows, requests and probes.
    const PROBES: &str = "SELECT * FROM probes ORDER BY probe_id";
    let before = (snapshot(&api).await, snapshot_of(&api, PROBES).await);
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/api/v1/correlate?since={start}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(snapshot(&api).await, before.0);
    assert_eq!(snapshot_of(&api, PROBES).await, before.1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minutes_left_at_shutdown_are_kept_and_correlated_after_the_next_start() {
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

/// A minute over `max_step_records` is recomputed in slices: gateway twins (a copy without
/// a correlation id and one with it, within a second, same path and status) on either side
/// of a slice's edge, or of the minute's, are still one request, and no request is lost or
/// doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_across_a_slice_or_minute_edge_stay_one_request() {
    let stack = Stack::start_with(|c| {
        c.correlation.horizon = Duration::from_secs(2);
        c.correlation.delay = Duration::from_millis(200);
        c.correlation.max_step_records = 1_000;
    })
    .await;
    let text = String::from_utf8(sample("apim-gatewaylogs-storage.jsonl")).unwrap();
    let base: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let record = |time: &str, cid: Option<&str>, path: &str| -> String {
        let mut r = base.clone();
        r["time"] = json!(time);
        match cid {
            Some(c) => r["correlationId"] = json!(c),
            None => {
                if let Some(o) = r.as_object_mut() {
                    o.remove("correlationId");
                }
            }
        }
        let p = &mut r["properties"];
        p["url"] = json!(format!("https://apim-contoso-weu.azure-api.net{path}"));
        p["backendUrl"] = json!(format!("https://backend.example{path}"));
        p["responseCode"] = json!(200);
        // No headers: they would carry the request's ids.
        if let Some(o) = p.as_object_mut() {
            o.remove("requestHeaders");
            o.remove("backendRequestHeaders");
        }
        r.to_string()
    };
    // 1,500 requests in one minute: two slices, the edge at :30.
    let mut lines: Vec<String> = (0..1500)
        .map(|i| {
            let ms = i * 40;
            record(
                &format!("2024-11-06T10:30:{:02}.{:03}Z", ms / 1000, ms % 1000),
                Some(&format!("aaaaaaaa-0000-0000-0000-{i:012}")),
                &format!("/fill/{i}"),
            )
        })
        .collect();
    let twins = [
        // Across the slice edge.
        (
            "2024-11-06T10:30:29.900Z",
            "2024-11-06T10:30:30.200Z",
            "/twin/a",
            1,
        ),
        // Within one slice.
        (
            "2024-11-06T10:30:10.100Z",
            "2024-11-06T10:30:10.600Z",
            "/twin/b",
            2,
        ),
        // Across the minute's edge.
        (
            "2024-11-06T10:30:59.900Z",
            "2024-11-06T10:31:00.200Z",
            "/twin/c",
            3,
        ),
    ];
    for (early, late, path, n) in twins {
        lines.push(record(early, None, path));
        lines.push(record(
            late,
            Some(&format!("bbbbbbbb-0000-0000-0000-{n:012}")),
            path,
        ));
    }
    let http = stack.addrs.ingest_http.to_string();
    post_lines(&http, "/ingest/apim", &lines, 500).await;
    let api = stack.api();
    wait_count(&api, "SELECT count(*) FROM requests WHERE settled", 1503).await;
    assert_eq!(
        count(&api, "SELECT count(DISTINCT request_id) FROM requests")
            .await
            .unwrap(),
        1503
    );
    for (early, _, path, n) in twins {
        let q = format!(
            "SELECT count(*) FROM requests WHERE url_path = '{path}' AND request_id = \
             'bbbbbbbb-0000-0000-0000-{n:012}' AND records = 2 AND time = TIMESTAMP '{early}'"
        );
        let mut why = Vec::new();
        for c in [
            format!("url_path = '{path}'"),
            format!("url_path = '{path}' AND records = 2"),
            format!("url_path = '{path}' AND request_id = 'bbbbbbbb-0000-0000-0000-{n:012}'"),
            format!("url_path = '{path}' AND time = TIMESTAMP '{early}'"),
        ] {
            let n = count(&api, &format!("SELECT count(*) FROM requests WHERE {c}")).await;
            why.push(format!("{c}: {n:?}"));
        }
        assert_eq!(count(&api, &q).await.unwrap(), 1, "{path}: {why:?}");
    }
    stack.stop().await;
}
