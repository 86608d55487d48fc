//! Mappings: shapes seam does not know read through `[mappings.*]` of the configuration
//! (a team's custom gateway event with nested fields, and a CSV event) and the presets
//! shipped with seam (Kong, Envoy, NGINX, AWS API Gateway, an identity-aware proxy), with
//! the real `seam serve`, `seam ingest --mapping` and `POST /ingest/apim?mapping=`. The
//! generator's gateway traffic, ingested with the presets beside its Mule lines, correlates
//! into exactly its true requests, also with APIM's records sent again in every other shape
//! Azure delivers them in (the portal's CSV and JSON exports, the Log Analytics query result,
//! Event Hubs bodies: each request stored once); a bearer token Kong logged is identified,
//! never stored.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::binary::{Running, seam_cmd, sigterm_and_wait, spawn_custom};
use crate::support::*;
use seam_tests::generator::{
    CONTOSO_CSV_HEADER, GATEWAY_PRODUCTS, GatewayTraffic, KONG_TOKEN_CLIENT_APP,
    KONG_TOKEN_SUBJECT, generate_gateways, lines_text,
};

/// The fingerprint key seam is given (`SEAM_FINGERPRINT_KEYS`).
const FP_KEYS: &str = "k1=seam-mappings-e2e-fingerprint-key";
/// 2024-11-06T10:00:00Z.
const START: i64 = 1_730_887_200_000_000_000;
/// A custom event without its time field (`ts`): refused, naming the field.
const NO_TIME: &str = r#"{"requestId":"contoso-no-time","api":"orders","status":200,"op":{"name":"get-item"},"token":{"fp":"hmac-sha256:k1:0123456789abcdef0123456789abcdef","azp":"contoso-web"}}"#;

/// Quick correlation, and the two user-defined mappings of the tests.
const CONFIG: &str = r#"
[storage]
flush_interval = "200ms"

[correlation]
horizon = "2s"
delay = "200ms"

[mappings.contoso-events]
table = "gateway_events"
format = "json"
description = "Contoso's own log-to-eventhub payload (nested fields)"

[mappings.contoso-events.fields]
time = "ts"
correlation_id = "requestId"
api_id = "api"
operation_id = "op.name"
status_code = "status"
client_ip = "caller.ip"
method = "http.method"
url = "http.url"
elapsed_ms = { path = "timing.elapsedSeconds", unit = "s" }
token_id = "token.fp"
client_app = ["token.azp", "token.appid", "token.cid"]
subject = "token.sub"
tenant_id = "token.tid"
token_expires_at = "token.exp"
token_scopes = "token.scp"
token_roles = "token.roles"
last_error_reason = "error.reason"

[mappings.contoso-events.constants]
apim_service = "contoso-apim"
section = "outbound"

[mappings.contoso-csv]
table = "gateway_events"
format = "csv"
time_format = "%d/%m/%Y %H:%M:%S%.3f"
description = "Contoso's CSV event with a header row"

[mappings.contoso-csv.fields]
time = "EventTime"
apim_service = "Service"
correlation_id = "RequestId"
client_ip = "ClientIp"
operation_id = "Operation"
status_code = "Status"
elapsed_ms = "ElapsedMs"
token_scopes = "Scopes"
token_id = "Fingerprint"
"#;

fn start(data: &Path) -> Running {
    spawn_custom(data, CONFIG, &[("SEAM_FINGERPRINT_KEYS", FP_KEYS)], None)
}

/// Runs `seam ingest --to <run> ARGS`; fails the test when it fails.
fn ingest(run: &Running, args: &[&str]) -> String {
    let to = format!("http://{}", run.http);
    let mut all = vec!["ingest", "--no-progress", "--to", to.as_str()];
    all.extend_from_slice(args);
    let (ok, out, err) = seam_cmd(&all);
    assert!(ok, "seam {all:?} failed: {out}{err}");
    out
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The fields of one CSV line (RFC 4180 quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// `06/11/2024 10:00:00.150` (the CSV events' time) as ISO 8601 UTC.
fn csv_time_iso(s: &str) -> String {
    let (date, clock) = s.split_once(' ').unwrap();
    let parts: Vec<&str> = date.split('/').collect();
    format!("{}-{}-{}T{clock}Z", parts[2], parts[1], parts[0])
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_json_events_are_read_through_a_mapping_with_nested_fields() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = start(&data);
    let api = run.api.clone();
    let t = generate_gateways(5, 120, START, 150);
    let events: Vec<Value> = t
        .contoso_events
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 10, "{} events", events.len());
    let half = events.len() / 2;

    // The first half from a file, through `seam ingest --mapping`.
    let file = write(
        dir.path(),
        "contoso-events.jsonl",
        &lines_text(&t.contoso_events[..half]),
    );
    ingest(&run, &["--mapping", "contoso-events", file.as_str()]);

    // The rest over HTTP, with a record that lacks its time among them.
    let mut body: Vec<String> = t.contoso_events[half..].to_vec();
    body.insert(1, NO_TIME.to_string());
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/ingest/apim?mapping=contoso-events",
            run.http
        ))
        .header("content-type", "application/json")
        .body(body.join("\n"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["accepted"], events.len() - half, "{answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");

    wait_count(
        &api,
        "SELECT count(*) FROM gateway_events",
        events.len() as i64,
    )
    .await;
    // The refused record names the missing field.
    let reason = scalar(
        &api,
        "SELECT reason FROM rejects WHERE raw LIKE '%contoso-no-time%'",
    )
    .await
    .unwrap();
    let reason = reason.as_str().unwrap_or_default();
    assert!(
        regex::Regex::new(r"\bts\b").unwrap().is_match(reason),
        "the reason must name the field `ts`: {reason}"
    );
    assert_eq!(
        count(&api, "SELECT count(*) FROM rejects").await.unwrap(),
        1
    );

    // Every mapped column exactly, for every event.
    for ev in &events {
        let id = ev["requestId"].as_str().unwrap();
        let ts = ev["ts"].as_str().unwrap();
        let rows = sql(
            &api,
            &format!(
                "SELECT api_id, operation_id, status_code, client_ip, method, url, url_path, \
                 elapsed_ms, token_id, client_app, subject, tenant_id, apim_service, section, \
                 last_error_reason, array_to_string(token_scopes, ' ') AS scopes, \
                 array_length(token_scopes) AS n_scopes, \
                 array_to_string(token_roles, ' ') AS roles, \
                 CAST(to_unixtime(token_expires_at) AS BIGINT) AS exp, \
                 attributes['channel'] AS channel, attributes['retries'] AS retries \
                 FROM gateway_events WHERE correlation_id = {} AND time = {}",
                q(id),
                q(ts)
            ),
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1, "{id} at {ts}: {rows:?}");
        let r = &rows[0];
        let tok = &ev["token"];
        assert_eq!(r["api_id"], "orders", "{id}");
        assert_eq!(r["operation_id"], ev["op"]["name"], "{id}");
        assert_eq!(r["status_code"], ev["status"], "{id}");
        assert_eq!(r["client_ip"], ev["caller"]["ip"], "{id}");
        assert_eq!(r["method"], "GET", "{id}");
        let url = ev["http"]["url"].as_str().unwrap();
        assert_eq!(r["url"], url, "{id}");
        let path = url.trim_start_matches("https://apim-contoso.azure-api.net");
        assert_eq!(r["url_path"], path, "{id}");
        let want_ms = ev["timing"]["elapsedSeconds"].as_f64().unwrap() * 1000.0;
        let got_ms = r["elapsed_ms"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (got_ms - want_ms).abs() < 1e-6,
            "{id}: {got_ms} != {want_ms}"
        );
        assert_eq!(r["token_id"], tok["fp"], "{id}");
        // client_app from the first present of token.azp, token.appid, token.cid.
        let app = ["azp", "appid", "cid"]
            .iter()
            .find_map(|k| tok[*k].as_str())
            .unwrap();
        assert_eq!(r["client_app"], app, "{id}");
        assert_eq!(r["subject"], tok["sub"], "{id}");
        assert_eq!(r["tenant_id"], tok["tid"], "{id}");
        assert_eq!(r["exp"], tok["exp"], "{id}");
        // A list from a JSON array or from space-separated text.
        let scopes: Vec<&str> = match &tok["scp"] {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            v => v.as_str().unwrap().split_whitespace().collect(),
        };
        assert_eq!(r["scopes"], scopes.join(" ").as_str(), "{id}");
        assert_eq!(r["n_scopes"], scopes.len(), "{id}");
        assert_eq!(r["roles"], "Orders.Read", "{id}");
        // Constants.
        assert_eq!(r["apim_service"], "contoso-apim", "{id}");
        assert_eq!(r["section"], "outbound", "{id}");
        // A field only some events have.
        assert_eq!(r["last_error_reason"], ev["error"]["reason"], "{id}");
        // Unmapped scalars land in attributes.
        assert_eq!(r["channel"], ev["channel"], "{id}");
        assert_eq!(r["retries"], ev["retries"].to_string().as_str(), "{id}");
    }
    sigterm_and_wait(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_events_are_read_through_a_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = start(&data);
    let api = run.api.clone();
    let t = generate_gateways(6, 120, START, 150);
    assert_eq!(t.contoso_csv[0], CONTOSO_CSV_HEADER);
    let header = csv_fields(&t.contoso_csv[0]);
    let rows: Vec<HashMap<String, String>> = t.contoso_csv[1..]
        .iter()
        .map(|l| header.iter().cloned().zip(csv_fields(l)).collect())
        .collect();
    assert!(rows.len() >= 10, "{} rows", rows.len());
    assert!(
        rows.iter().any(|r| r["Channel"].contains(',')),
        "a quoted field with a comma is part of the test"
    );
    let file = write(
        dir.path(),
        "contoso-events.csv",
        &lines_text(&t.contoso_csv),
    );
    ingest(&run, &["--mapping", "contoso-csv", file.as_str()]);
    wait_count(
        &api,
        "SELECT count(*) FROM gateway_events",
        rows.len() as i64,
    )
    .await;
    assert_eq!(
        count(&api, "SELECT count(*) FROM rejects").await.unwrap(),
        0,
        "{:?}",
        sql(&api, "SELECT line, reason, raw FROM rejects LIMIT 5").await
    );
    for want in &rows {
        let id = want["RequestId"].as_str();
        let ts = csv_time_iso(&want["EventTime"]);
        let got = sql(
            &api,
            &format!(
                "SELECT apim_service, client_ip, operation_id, status_code, elapsed_ms, token_id, \
                 array_to_string(token_scopes, ' ') AS scopes, \
                 array_length(token_scopes) AS n_scopes, attributes['Channel'] AS channel \
                 FROM gateway_events WHERE correlation_id = {} AND time = {}",
                q(id),
                q(&ts)
            ),
        )
        .await
        .unwrap();
        assert_eq!(got.len(), 1, "{id} at {ts}: {got:?}");
        let r = &got[0];
        assert_eq!(r["apim_service"], want["Service"].as_str(), "{id}");
        assert_eq!(r["client_ip"], want["ClientIp"].as_str(), "{id}");
        assert_eq!(r["operation_id"], want["Operation"].as_str(), "{id}");
        assert_eq!(
            r["status_code"],
            want["Status"].parse::<i64>().unwrap(),
            "{id}"
        );
        assert_eq!(
            r["elapsed_ms"].as_f64(),
            Some(want["ElapsedMs"].parse::<f64>().unwrap()),
            "{id}"
        );
        assert_eq!(r["token_id"], want["Fingerprint"].as_str(), "{id}");
        assert_eq!(r["scopes"], want["Scopes"].as_str(), "{id}");
        assert_eq!(
            r["n_scopes"],
            want["Scopes"].split_whitespace().count(),
            "{id}"
        );
        assert_eq!(r["channel"], want["Channel"].as_str(), "{id}");
    }
    sigterm_and_wait(run);
}

/// Ingests every product's records with its preset (APIM without one) and the Mule lines.
fn ingest_gateway_traffic(run: &Running, dir: &Path, t: &GatewayTraffic) {
    for &(product, preset) in GATEWAY_PRODUCTS {
        let file = write(dir, &format!("{product}.jsonl"), &t.text(product));
        match preset {
            Some(p) => ingest(run, &["--mapping", p, file.as_str()]),
            None => ingest(run, &[file.as_str()]),
        };
    }
    let mule = write(dir, "mule-json-logger.jsonl", &t.mule_text());
    ingest(run, &[mule.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_presets_correlate_with_mule_records_into_the_true_requests() {
    const N: usize = 210; // 35 requests per product
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = start(&data);
    let api = run.api.clone();
    let t = generate_gateways(11, N, START, 150);
    assert_eq!(t.truth.len(), N);
    ingest_gateway_traffic(&run, dir.path(), &t);
    check_true_requests(&api, &t).await;
    sigterm_and_wait(run);
}

/// Once everything of `t` is ingested: every request settles into exactly its truth (status,
/// rejecting layer, bypass, gateway and Mule ids: precision and recall 1; end-to-end, gateway
/// and network times: [`check_latency`]), one `gateway_logs` row per gateway request
/// (whatever the shapes and copies it came in) with its product, and scheduler lines are
/// never requests.
async fn check_true_requests(api: &str, t: &GatewayTraffic) {
    let want = t.truth.len() as i64;
    let api2 = api.to_string();
    let settled = wait_until(
        "generated requests settled",
        Duration::from_secs(180),
        || {
            let api = api2.clone();
            async move {
                match count(&api, "SELECT count(*) FROM requests WHERE settled").await {
                    Ok(c) if c >= want => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    if let Err(e) = settled {
        let n = sql(
            api,
            "SELECT count(*) AS n, sum(CASE WHEN settled THEN 1 ELSE 0 END) AS s FROM requests",
        )
        .await;
        panic!("{e}: {n:?}");
    }
    // Every record was readable.
    assert_eq!(
        count(api, "SELECT count(*) FROM rejects").await.unwrap(),
        0,
        "{:?}",
        sql(api, "SELECT file, line, reason FROM rejects LIMIT 20").await
    );
    assert_eq!(
        count(api, "SELECT count(*) FROM requests").await.unwrap(),
        want,
        "{:?}",
        sql(
            api,
            "SELECT request_id, mule_correlation_id, has_gateway, has_flow FROM requests \
             ORDER BY time LIMIT 20"
        )
        .await
    );

    // Per request: present, with the true outcome.
    let rows = sql(
        api,
        "SELECT request_id, apim_correlation_id, mule_correlation_id, status_code, rejected_by, \
         bypassed_gateway, has_gateway FROM requests",
    )
    .await
    .unwrap();
    let by_id: HashMap<&str, &Map<String, Value>> = rows
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap(), r))
        .collect();
    for want in &t.truth {
        let ctx = format!("{} via {:?} {}", want.kind, want.product, want.request_id);
        let got = by_id
            .get(want.request_id.as_str())
            .unwrap_or_else(|| panic!("{ctx}: missing from requests"));
        assert_eq!(got["status_code"], want.status, "{ctx}");
        assert_eq!(got["rejected_by"].as_str(), want.rejected_by, "{ctx}");
        assert_eq!(got["bypassed_gateway"], want.bypass, "{ctx}");
        assert_eq!(got["has_gateway"], want.product.is_some(), "{ctx}");
        assert_eq!(
            got["apim_correlation_id"].as_str(),
            want.gateway_correlation_id.as_deref(),
            "{ctx}"
        );
        assert_eq!(
            got["mule_correlation_id"].as_str(),
            want.mule_correlation_id.as_deref(),
            "{ctx}"
        );
    }
    check_latency(api, t).await;
    // Bypass: precision and recall 1.
    let flagged: HashSet<&str> = rows
        .iter()
        .filter(|r| r["bypassed_gateway"] == true)
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    let bypasses: HashSet<&str> = t
        .truth
        .iter()
        .filter(|x| x.bypass)
        .map(|x| x.request_id.as_str())
        .collect();
    assert!(!bypasses.is_empty());
    assert_eq!(flagged, bypasses);
    assert_eq!(
        count(api, "SELECT count(*) FROM audit_gateway_bypass")
            .await
            .unwrap(),
        bypasses.len() as i64
    );
    // Gateway rejections, per product.
    for &(product, _) in GATEWAY_PRODUCTS {
        let rejected = t
            .truth
            .iter()
            .filter(|x| x.product == Some(product) && x.kind == "gateway_rejection")
            .count();
        assert!(rejected > 0, "{product}");
    }

    // One gateway_logs row per gateway request (duplicates merged), with its product.
    let gw = sql(
        api,
        "SELECT correlation_id, gateway_product FROM gateway_logs",
    )
    .await
    .unwrap();
    let gateway_requests: Vec<_> = t.truth.iter().filter(|x| x.product.is_some()).collect();
    assert_eq!(gw.len(), gateway_requests.len(), "{gw:?}");
    let product_of: HashMap<&str, Option<&str>> = gw
        .iter()
        .map(|r| {
            (
                r["correlation_id"].as_str().unwrap_or_default(),
                r["gateway_product"].as_str(),
            )
        })
        .collect();
    for want in gateway_requests {
        let cid = want.gateway_correlation_id.as_deref().unwrap();
        assert_eq!(
            product_of.get(cid).copied().flatten(),
            want.product,
            "{} {cid}",
            want.kind
        );
    }
    for &(product, _) in GATEWAY_PRODUCTS {
        let n = t
            .truth
            .iter()
            .filter(|x| x.product == Some(product))
            .count() as i64;
        assert_eq!(
            count(
                api,
                &format!(
                    "SELECT count(*) FROM gateway_logs WHERE gateway_product = {}",
                    q(product)
                )
            )
            .await
            .unwrap(),
            n,
            "{product}"
        );
    }
    // Scheduler lines are never requests.
    assert!(!t.scheduler_correlation_ids.is_empty());
    for id in &t.scheduler_correlation_ids {
        let n = count(
            api,
            &format!(
                "SELECT count(*) FROM requests WHERE request_id = {0} OR mule_correlation_id = {0}",
                q(id)
            ),
        )
        .await
        .unwrap();
        assert_eq!(n, 0, "{id}");
    }
}

/// Every request's `total_ms`, `gateway_ms` and `network_ms` are the ones its gateway
/// record (read through the product's preset, in the product's unit) and its Mule flow give
/// (within 1e-6 ms: seconds are read as binary floating point; `None` = NULL), and the
/// records exercise the corner cases: NGINX lists of upstream times (the last counts), Kong's
/// `latencies.proxy` -1 when it answered alone, products with and without a backend time.
async fn check_latency(api: &str, t: &GatewayTraffic) {
    let rows = sql(
        api,
        "SELECT request_id, total_ms, gateway_ms, network_ms FROM requests",
    )
    .await
    .unwrap();
    let by_id: HashMap<&str, &Map<String, Value>> = rows
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap(), r))
        .collect();
    for want in &t.truth {
        let product = want.product.unwrap_or("no gateway (bypass)");
        let got = by_id.get(want.request_id.as_str()).unwrap_or_else(|| {
            panic!(
                "request {} ({} via {product}): missing from requests",
                want.request_id, want.kind
            )
        });
        for (column, expected) in [
            ("total_ms", want.total_ms),
            ("gateway_ms", want.gateway_ms),
            ("network_ms", want.network_ms),
        ] {
            let actual = got.get(column).and_then(Value::as_f64);
            let same = match (actual, expected) {
                (Some(a), Some(e)) => (a - e).abs() <= 1e-6,
                (None, None) => true,
                _ => false,
            };
            assert!(
                same,
                "request {} ({} via {product}): {column} is {actual:?}, want {expected:?} \
                 (row {got:?})",
                want.request_id, want.kind
            );
        }
    }
    // Per product: every gateway request has a total and a gateway time; a network time
    // exactly when the product logs a backend time and the request reached Mule.
    for &(product, _) in GATEWAY_PRODUCTS {
        let mine: Vec<_> = t
            .truth
            .iter()
            .filter(|x| x.product == Some(product))
            .collect();
        assert!(!mine.is_empty(), "{product}");
        assert!(
            mine.iter()
                .all(|x| x.total_ms.is_some() && x.gateway_ms.is_some()),
            "{product}"
        );
        let with_network = mine.iter().filter(|x| x.network_ms.is_some()).count();
        if product == "identity_proxy" {
            assert_eq!(with_network, 0, "{product} logs no backend time");
        } else {
            assert!(
                with_network > 0,
                "{product}: no request with a network time"
            );
        }
    }
    assert!(
        t.truth
            .iter()
            .filter(|x| x.bypass)
            .all(|x| x.total_ms.is_some() && x.gateway_ms.is_none() && x.network_ms.is_none()),
        "a bypass has the flow's time only"
    );
    // NGINX: some records list several upstream times.
    let nginx_lists = t
        .nginx
        .iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["upstream_response_time"]
                .as_str()
                .is_some_and(|s| s.contains(", "))
        })
        .count();
    assert!(
        nginx_lists > 0,
        "no NGINX record lists several upstream times"
    );
    // Kong: a rejection logs latencies.proxy -1 (no upstream call: gateway_ms = total).
    let kong_rejections: HashSet<&str> = t
        .truth
        .iter()
        .filter(|x| x.product == Some("kong") && x.kind == "gateway_rejection")
        .filter_map(|x| x.gateway_correlation_id.as_deref())
        .collect();
    let mut kong_seen = 0;
    for line in &t.kong {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["request"]["id"]
            .as_str()
            .is_some_and(|id| kong_rejections.contains(id))
        {
            assert_eq!(v["latencies"]["proxy"], -1, "{line}");
            kong_seen += 1;
        }
    }
    assert!(kong_seen > 0, "no Kong rejection");
}

/// `11/6/2024, 2:04:55.301 PM` (the portal exports' time, UTC) as ISO 8601 UTC, as the
/// storage archive writes it (`2024-11-06T14:04:55.301Z`).
fn portal_time_iso(s: &str) -> String {
    let (date, clock) = s.split_once(", ").unwrap();
    let (hms, half) = clock.split_once(' ').unwrap();
    let mdy: Vec<u32> = date.split('/').map(|x| x.parse().unwrap()).collect();
    let (hour, rest) = hms.split_once(':').unwrap();
    let hour = hour.parse::<u32>().unwrap() % 12 + if half == "PM" { 12 } else { 0 };
    format!(
        "{:04}-{:02}-{:02}T{hour:02}:{rest}Z",
        mdy[2], mdy[0], mdy[1]
    )
}

/// The generator's other APIM shapes hold each record of the storage archive (`archive`, by
/// correlation id) once, at its time to the millisecond, laid out as Azure writes them.
fn check_apim_shapes(t: &GatewayTraffic, archive: &HashMap<String, Value>) {
    let rec = |cid: &str| {
        archive
            .get(cid)
            .unwrap_or_else(|| panic!("{cid} is no record of the storage archive"))
    };
    let time_of = |cid: &str| rec(cid)["time"].as_str().unwrap().to_string();

    // The portal CSV export: byte-order mark, header, one RFC 4180 row a record, CRLF.
    let csv = t
        .apim_portal_csv
        .strip_prefix('\u{feff}')
        .expect("the CSV export starts with a byte-order mark");
    assert!(csv.ends_with("\r\n"));
    assert!(
        !csv.replace("\r\n", "").contains(['\n', '\r']),
        "CRLF line ends only"
    );
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    let header = csv_fields(lines[0]);
    assert_eq!(header[0], "TenantId");
    assert_eq!(header[1], "TimeGenerated [UTC]");
    assert_eq!(header.last().map(String::as_str), Some("_ResourceId"));
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (c_time, c_cid, c_headers) = (
        col("TimeGenerated [UTC]"),
        col("CorrelationId"),
        col("RequestHeaders"),
    );
    let mut seen = HashSet::new();
    for line in &lines[1..] {
        let f = csv_fields(line);
        assert_eq!(f.len(), header.len(), "{line}");
        let cid = f[c_cid].as_str();
        assert!(
            seen.insert(cid.to_string()),
            "{cid} twice in the CSV export"
        );
        assert_eq!(portal_time_iso(&f[c_time]), time_of(cid), "{line}");
        // A dynamic column: JSON text, quoted, its quotes doubled.
        assert!(line.contains(r#"""traceparent"":""00-"#), "{line}");
        let headers: Value = serde_json::from_str(&f[c_headers]).unwrap();
        assert_eq!(headers, rec(cid)["properties"]["requestHeaders"], "{line}");
    }
    assert_eq!(seen.len(), archive.len(), "CSV rows");

    // The Log Analytics query result: times with 7 fractional digits, the same millisecond.
    let la: Value = serde_json::from_str(&t.apim_loganalytics_json).unwrap();
    let table = &la["tables"][0];
    assert_eq!(table["name"], "PrimaryResult");
    let names: Vec<&str> = table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["type"].is_string(), "{c}");
            c["name"].as_str().unwrap()
        })
        .collect();
    let at = |name: &str| names.iter().position(|n| *n == name).unwrap();
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), archive.len(), "Log Analytics rows");
    let mut seen = HashSet::new();
    for row in rows {
        let cells = row.as_array().unwrap();
        assert_eq!(cells.len(), names.len(), "{row}");
        let cid = cells[at("CorrelationId")].as_str().unwrap();
        assert!(seen.insert(cid), "{cid} twice in the Log Analytics result");
        let time = cells[at("TimeGenerated")].as_str().unwrap();
        assert_eq!(time.len(), 28, "{time}");
        assert_eq!(format!("{}Z", &time[..23]), time_of(cid), "{row}");
        assert!(cells[at("RequestHeaders")].is_string(), "{row}");
        assert_eq!(cells[at("TotalTime")], rec(cid)["durationMs"], "{row}");
    }

    // The portal JSON export.
    let rows: Vec<Value> = serde_json::from_str(&t.apim_portal_json).unwrap();
    assert_eq!(rows.len(), archive.len(), "portal JSON rows");
    let mut seen = HashSet::new();
    for row in &rows {
        let cid = row["CorrelationId"].as_str().unwrap();
        assert!(seen.insert(cid), "{cid} twice in the portal JSON export");
        let time = row["TimeGenerated [UTC]"].as_str().unwrap();
        assert_eq!(portal_time_iso(time), time_of(cid), "{row}");
    }

    // Event Hubs bodies: the archive's records themselves, 1 to 40 a body, some pretty.
    let mut records = 0;
    let mut sizes = HashSet::new();
    let mut pretty = 0;
    for body in &t.apim_eventhub_batches {
        let doc: Value = serde_json::from_str(body).unwrap();
        let batch = doc["records"].as_array().unwrap();
        assert!((1..=40).contains(&batch.len()), "{} records", batch.len());
        sizes.insert(batch.len());
        if body.contains("\n\t") {
            pretty += 1;
        }
        for r in batch {
            assert_eq!(r, rec(r["correlationId"].as_str().unwrap()));
        }
        records += batch.len();
    }
    assert_eq!(records, archive.len(), "Event Hubs records");
    assert!(sizes.len() > 1, "{sizes:?}");
    assert!(
        pretty > 0 && pretty < t.apim_eventhub_batches.len(),
        "{pretty}"
    );
}

/// APIM's records in every shape seam reads them in (the Azure portal's CSV export first, so
/// the copy stored of every request is the CSV row; then the Log Analytics query result, the
/// portal JSON export, Event Hubs bodies and the storage archive's JSON Lines, beside the
/// other products and the Mule lines): each request is one `gateway_logs` row with the
/// archive's values and time, and the requests are exactly the true ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apim_records_in_every_shape_are_one_request_each_and_correlate_exactly() {
    const N: usize = 210; // 35 requests per product
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = start(&data);
    let api = run.api.clone();
    let t = generate_gateways(17, N, START, 150);
    assert_eq!(t.truth.len(), N);
    // The storage archive's records, each once (the lines hold duplicates).
    let mut archive: HashMap<String, Value> = HashMap::new();
    for line in &t.apim {
        let rec: Value = serde_json::from_str(line).unwrap();
        archive.insert(rec["correlationId"].as_str().unwrap().to_string(), rec);
    }
    let apim_requests = t.truth.iter().filter(|x| x.product == Some("apim")).count();
    assert_eq!(archive.len(), apim_requests);
    check_apim_shapes(&t, &archive);

    let csv = write(dir.path(), "apim-portal-export.csv", &t.apim_portal_csv);
    ingest(&run, &[csv.as_str()]);
    let la = write(
        dir.path(),
        "apim-loganalytics.json",
        &t.apim_loganalytics_json,
    );
    ingest(&run, &[la.as_str()]);
    let portal_json = write(dir.path(), "apim-portal-export.json", &t.apim_portal_json);
    ingest(&run, &[portal_json.as_str()]);
    let client = reqwest::Client::new();
    for (k, body) in t.apim_eventhub_batches.iter().enumerate() {
        let resp = client
            .post(format!("http://{}/ingest/apim", run.http))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "Event Hubs body {k}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        let n = serde_json::from_str::<Value>(body).unwrap()["records"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(answer["rejected"], 0, "Event Hubs body {k}: {answer}");
        assert_eq!(
            answer["accepted"].as_u64().unwrap() + answer["duplicates"].as_u64().unwrap(),
            n as u64,
            "Event Hubs body {k}: {answer}"
        );
    }
    ingest_gateway_traffic(&run, dir.path(), &t);

    check_true_requests(&api, &t).await;

    // Each APIM request once, whatever the shapes it came in; the CSV row among its copies.
    assert_eq!(
        count(
            &api,
            "SELECT count(*) FROM gateway_logs WHERE gateway_product = 'apim'"
        )
        .await
        .unwrap(),
        apim_requests as i64
    );
    let rows = sql(
        &api,
        "SELECT correlation_id, copies, array_to_string(source_formats, ',') AS f \
         FROM gateway_logs WHERE gateway_product = 'apim'",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), apim_requests, "{rows:?}");
    for r in &rows {
        let formats: Vec<&str> = r["f"].as_str().unwrap_or_default().split(',').collect();
        assert!(
            formats.contains(&"apim_loganalytics_csv"),
            "{}: {formats:?}",
            r["correlation_id"]
        );
        assert!(r["copies"].as_i64().unwrap_or(0) >= 1, "{r:?}");
    }
    // Every stored copy has the archive's time and values; the request's row has its time.
    for (cid, rec) in &archive {
        let p = &rec["properties"];
        let ts = rec["time"].as_str().unwrap();
        assert_eq!(
            count(
                &api,
                &format!(
                    "SELECT count(*) FROM gateway_logs WHERE correlation_id = {} AND time = {}",
                    q(cid),
                    q(ts)
                )
            )
            .await
            .unwrap(),
            1,
            "{cid} at {ts}"
        );
        let copies = sql(
            &api,
            &format!(
                "SELECT source_format, time = {} AS same_time, status_code, backend_status_code, \
                 total_time_ms, backend_time_ms, client_time_ms, client_ip, url, trace_id, \
                 forwarded_correlation_id, last_error_reason, last_error_message, \
                 is_request_success, region, apim_service \
                 FROM gateway_log_copies WHERE correlation_id = {}",
                q(ts),
                q(cid)
            ),
        )
        .await
        .unwrap();
        assert!(!copies.is_empty(), "{cid}");
        let trace = p["requestHeaders"]["traceparent"]
            .as_str()
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap();
        for c in &copies {
            let ctx = format!("{cid} ({})", c["source_format"]);
            assert_eq!(c["same_time"], true, "{ctx}");
            assert_eq!(c["status_code"], p["responseCode"], "{ctx}");
            assert_eq!(c["backend_status_code"], p["backendResponseCode"], "{ctx}");
            assert_eq!(
                c["total_time_ms"].as_f64(),
                rec["durationMs"].as_f64(),
                "{ctx}"
            );
            assert_eq!(
                c["backend_time_ms"].as_f64(),
                p["backendTime"].as_f64(),
                "{ctx}"
            );
            assert_eq!(
                c["client_time_ms"].as_f64(),
                p["clientTime"].as_f64(),
                "{ctx}"
            );
            assert_eq!(c["client_ip"], rec["callerIpAddress"], "{ctx}");
            assert_eq!(c["url"], p["url"], "{ctx}");
            assert_eq!(c["trace_id"], trace, "{ctx}");
            assert_eq!(
                c["forwarded_correlation_id"], p["backendRequestHeaders"]["X-Correlation-ID"],
                "{ctx}"
            );
            assert_eq!(c["last_error_reason"], p["lastError"]["reason"], "{ctx}");
            assert_eq!(c["last_error_message"], p["lastError"]["message"], "{ctx}");
            assert_eq!(c["is_request_success"], rec["isRequestSuccess"], "{ctx}");
            assert_eq!(c["region"], rec["location"], "{ctx}");
            assert_eq!(c["apim_service"], "gen-apim", "{ctx}");
        }
    }
    sigterm_and_wait(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_kong_logged_is_identified_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = start(&data);
    let api = run.api.clone();
    let t = generate_gateways(13, 90, START, 150);
    assert!(!t.kong_bearer_requests.is_empty());
    let file = write(dir.path(), "kong.jsonl", &t.text("kong"));
    ingest(&run, &["--mapping", "kong", file.as_str()]);
    let kong_requests = t.truth.iter().filter(|x| x.product == Some("kong")).count() as i64;
    wait_count(
        &api,
        "SELECT count(*) FROM gateway_logs WHERE gateway_product = 'kong'",
        kong_requests,
    )
    .await;

    // The token columns: the fingerprint under seam's key, and the claims.
    let tokens = seam_collector::normalise::token::TokenConfig {
        keys: Arc::new(seam_collector::normalise::token::parse_keys(FP_KEYS).unwrap()),
        ..Default::default()
    };
    let token_id = tokens.identify(&t.kong_bearer).token_id().unwrap();
    assert!(token_id.starts_with("hmac-sha256:k1:"), "{token_id}");
    for cid in &t.kong_bearer_requests {
        let rows = sql(
            &api,
            &format!(
                "SELECT token_id, client_app, subject, request_headers['authorization'] AS auth \
                 FROM gateway_logs WHERE correlation_id = {}",
                q(cid)
            ),
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1, "{cid}: {rows:?}");
        let r = &rows[0];
        assert_eq!(r["token_id"], token_id.as_str(), "{cid}");
        assert_eq!(r["client_app"], KONG_TOKEN_CLIENT_APP, "{cid}");
        assert_eq!(r["subject"], KONG_TOKEN_SUBJECT, "{cid}");
        // The header is kept, with a marker in place of the token.
        let auth = r["auth"].as_str().unwrap_or_default();
        assert!(
            auth.contains(token_id.as_str()) && !auth.contains(&t.kong_bearer),
            "{cid}: {auth}"
        );
        let raw = scalar(
            &api,
            &format!(
                "SELECT raw FROM gateway_log_copies WHERE correlation_id = {}",
                q(cid)
            ),
        )
        .await
        .unwrap();
        let raw = raw.as_str().unwrap_or_default();
        assert!(
            raw.contains(&format!("<redacted {token_id}>")),
            "{cid}: the raw record keeps a marker in place of the token: {raw}"
        );
    }
    // Records that logged no token have none.
    assert_eq!(
        count(
            &api,
            "SELECT count(*) FROM gateway_logs WHERE gateway_product = 'kong' AND token_id IS NOT NULL"
        )
        .await
        .unwrap(),
        t.kong_bearer_requests.len() as i64
    );
    // The token (whole, its claims part, its signature) is in no table. (Searched here, not
    // in SQL: a query's text is kept in seam_audit.)
    let parts: Vec<&str> = t.kong_bearer.split('.').collect();
    assert_eq!(parts.len(), 3);
    let needles = [t.kong_bearer.as_str(), parts[1], parts[2]];
    for table in ["gateway_log_copies", "rejects"] {
        let raws = sql(&api, &format!("SELECT raw FROM {table}"))
            .await
            .unwrap();
        if table == "gateway_log_copies" {
            assert!(!raws.is_empty());
        }
        for row in &raws {
            let raw = row["raw"].as_str().unwrap_or_default();
            for needle in needles {
                assert!(!raw.contains(needle), "{table}: {raw}");
            }
        }
    }
    let headers = sql(
        &api,
        "SELECT request_headers['authorization'] AS auth FROM gateway_logs \
         WHERE request_headers['authorization'] IS NOT NULL",
    )
    .await
    .unwrap();
    assert_eq!(headers.len(), t.kong_bearer_requests.len(), "{headers:?}");
    for row in &headers {
        let auth = row["auth"].as_str().unwrap_or_default();
        for needle in needles {
            assert!(!auth.contains(needle), "{auth}");
        }
    }
    // ...and in no file of the data directory (Parquet decoded, write-ahead log, indexes).
    sigterm_and_wait(run);
    for (name, bytes) in crate::tokens::everything_stored(&data) {
        for needle in needles {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "part of the bearer token found in {name}"
            );
        }
    }
}
