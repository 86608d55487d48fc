//! Several seam nodes on one store: three ingest nodes and one query node, each a real
//! `seam serve` process with its own data directory, all pointed at one Azure container
//! (Azurite). The layers of generated messy traffic arrive at different nodes (the gateway's
//! records at one, Mule's at another, the spans at the third), an ingest node is killed with
//! SIGKILL while it uploads, the node holding the correlation lease is killed too and
//! another takes over, and the query node must give the exact answers of the ground truth:
//! every acknowledged record counted once, every request correlated across the nodes. The
//! same with two ingest nodes on one S3 bucket (moto), through S3's conditional writes.

use std::path::Path;
use std::time::Duration;

use seam_tests::generator::{GATEWAY_EGRESS, Traffic, generate};

use crate::binary::{Running, kill9, sigterm_and_wait, spawn_custom};
use crate::correlation::{
    check_generated_probes, check_generated_requests, check_noise_kept, wait_generated_settled,
};
use crate::emulators::{Azurite, DEV_KEY};
use crate::lake::delta_read_at;
use crate::support::*;

/// Flushes and compactions often (a kill lands during an upload), manifests read again
/// often, short leases (a take-over within seconds) and a short correlation horizon.
fn config() -> String {
    format!(
        "[storage]\nflush_interval = \"200ms\"\nrefresh_interval = \"300ms\"\nlease_ttl = \"3s\"\n\
         compaction_fanout = 3\ncompaction_idle = \"1s\"\ndelete_grace = \"30s\"\n\
         [correlation]\nhorizon = \"3s\"\ndelay = \"300ms\"\ngateway_egress = [\"{GATEWAY_EGRESS}\"]\n"
    )
}

fn start(dir: &Path, roles: &str, envs: &[(&str, String)]) -> Running {
    let mut envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.push(("SEAM_ROLES", roles));
    spawn_custom(dir, &config(), &envs, None)
}

/// How many spans the OTLP/JSON bodies hold.
fn span_count(t: &Traffic) -> i64 {
    let mut n = 0;
    for body in &t.otlp {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                n += ss["spans"].as_array().map_or(0, Vec::len);
            }
        }
    }
    i64::try_from(n).unwrap()
}

/// Waits until the generated traffic's requests are settled and every check of its ground
/// truth passes (at most three minutes), then asserts that none fails.
async fn converge(api: &str, t: &Traffic, who: &str) {
    let start = std::time::Instant::now();
    loop {
        wait_generated_settled(api, t, Duration::from_secs(180)).await;
        let mut failures = check_generated_requests(api, t).await;
        failures.extend(check_generated_probes(api, t).await);
        failures.extend(check_noise_kept(api, t).await);
        if failures.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{who}: {} of the checks failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// [`converge`], then every span counted.
async fn converge_with_spans(api: &str, t: &Traffic, who: &str) {
    converge(api, t, who).await;
    wait_exact(
        api,
        "SELECT count(*) FROM spans",
        span_count(t),
        Duration::from_secs(30),
    )
    .await;
}

/// The late gateway records (some a second time), in one Event Hubs-shaped body.
async fn post_late_gateway(http: &str, t: &Traffic) {
    post_body(
        http,
        "/ingest/apim",
        serde_json::json!({ "records": t.late_gateway }).to_string(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ingest_nodes_and_a_query_node_share_one_container() {
    let az = Azurite::start();
    az.python(&["container", "seam"]);
    let envs = vec![
        ("SEAM_STORAGE_URL", "az://seam/cluster".to_string()),
        ("AZURE_STORAGE_CONNECTION_STRING", az.connection_string()),
    ];
    let t = generate(41, 360, 1_730_887_200_000_000_000, 200);
    let dir = tempfile::tempdir().unwrap();
    let (da, db, dc, dq) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
        dir.path().join("q"),
    );
    let ingest = "ingest,correlate";
    // The first node takes the correlation lease; the others wait for it.
    let a = start(&da, ingest, &envs);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = start(&db, ingest, &envs);
    let c = start(&dc, ingest, &envs);
    let q = start(&dq, "query", &envs);

    // Each node opens only the listeners of its roles.
    assert_eq!(
        q.http, "0.0.0.0:0",
        "a query node opened an ingest listener"
    );
    assert_eq!(q.grpc, "0.0.0.0:0");
    assert_eq!(
        a.pg, "0.0.0.0:0",
        "an ingest node opened the PostgreSQL listener"
    );
    let refused = reqwest::Client::new()
        .post(format!("http://{}/api/v1/sql", a.api))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404, "an ingest node answered SQL");

    // The gateway's records at a, the spans at c, the first half of Mule's lines at b,
    // which is killed while it uploads them and started again on its data directory.
    post_lines(&a.http, "/ingest/apim", &t.gateway_lines, 500).await;
    post_lines(&a.http, "/ingest/apim", &t.events, 500).await;
    for body in &t.otlp {
        post_body(&c.http, "/v1/traces", body.to_string()).await;
    }
    let half = t.mule_lines.len() / 2;
    post_lines(&b.http, "/ingest/mule", &t.mule_lines[..half], 500).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    kill9(b);
    let b = start(&db, ingest, &envs);
    post_lines(&b.http, "/ingest/mule", &t.mule_lines[half..], 500).await;
    for chunk in t.mule_log4j.chunks(500) {
        post_typed(&b.http, "/ingest/mule", "text/plain", chunk.join("\n")).await;
    }
    post_lines(&b.http, "/ingest/mule", &t.mule_duplicates, 1000).await;

    // The correlating node dies; another takes the correlation over once its lease ends.
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill9(a);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Started again, it stores what only its write-ahead log held; the late gateway
    // records (some a second time) come to it, as the gateway's records did.
    let a = start(&da, ingest, &envs);
    post_late_gateway(&a.http, &t).await;

    // Every answer through the query node, once it sees the late records (another node's
    // rows are visible after its flush and the reader's next refresh of the manifests).
    let gateway = t.truth.iter().filter(|x| x.has_gateway).count()
        + t.probes.iter().filter(|p| p.has_gateway).count();
    wait_exact(
        &q.api,
        "SELECT count(*) FROM gateway_logs",
        i64::try_from(gateway).unwrap(),
        Duration::from_secs(60),
    )
    .await;
    // Another node's rows reach the correlating node a flush and a refresh after they were
    // acknowledged, and it recomputes a busy minute at most every four times what that
    // costs: the answers converge, and must then be exact.
    converge_with_spans(&q.api, &t, "through the query node").await;
    // The correlation was taken over by b or c after a died.
    let steps = |text: &str| metric_value(text, "seam_correlation_steps_total{outcome=\"ok\"}");
    let (mb, mc) = (metrics_text(&b.api).await, metrics_text(&c.api).await);
    assert!(
        steps(&mb).unwrap_or(0.0) + steps(&mc).unwrap_or(0.0) > 0.0,
        "no surviving node correlated after the correlating node died"
    );
    // The store's own counts: b committed its flushes of Mule's lines under the commit
    // lock, and the query node read the other nodes' manifest changes.
    let mq = metrics_text(&q.api).await;
    assert!(
        metric_value(&mb, "seam_store_commits_total{table=\"flow_logs\"}").unwrap_or(0.0) > 0.0,
        "b's flushes of Mule's lines were not counted as commits"
    );
    assert!(metric_value(&mq, "seam_store_refreshes_total").unwrap_or(0.0) > 0.0);
    assert!(
        metric_value(
            &mq,
            "seam_store_refreshed_manifests_total{table=\"flow_logs\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "the query node never read flow_logs' manifest again"
    );

    // Clean stops; then a fresh query node reads the same answers from the store alone.
    for n in [a, b, c, q] {
        sigterm_and_wait(n);
    }
    let q2 = start(&dir.path().join("q2"), "query", &envs);
    converge(&q2.api, &t, "through a new query node").await;
    // delta-rs, written by none of seam's code, reads every table in the container with
    // exactly the rows seam counts: the Delta log stayed right under four writers.
    let tables = [
        "spans",
        "gateway_log_copies",
        "gateway_events",
        "flow_logs",
        "requests",
        "request_events",
    ];
    let uris: Vec<String> = tables
        .iter()
        .map(|t| format!("az://seam/cluster/tables/{t}"))
        .collect();
    let options = serde_json::json!({
        "account_name": "devstoreaccount1",
        "account_key": DEV_KEY,
        "use_emulator": "true",
    });
    let read = delta_read_at(
        &uris,
        &[
            ("DELTA_STORAGE_OPTIONS", options.to_string()),
            (
                "AZURITE_BLOB_STORAGE_URL",
                format!("http://127.0.0.1:{}", az.port),
            ),
        ],
    );
    for table in tables {
        let n = count(&q2.api, &format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap();
        assert_eq!(
            read[table]["rows"].as_i64(),
            Some(n),
            "{table}: delta-rs read {:?}, seam counts {n}",
            read[table]
        );
    }
    sigterm_and_wait(q2);
}

/// The same on S3 (moto): two ingest nodes and a query node on one bucket, the gateway's
/// records at one node, Mule's lines and the spans at the other, the first killed while it
/// uploads and started again; every answer exact through the query node. S3's conditional
/// writes (If-None-Match for the leases and locks, If-Match for the manifests) are what keep
/// the nodes from overwriting each other here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_nodes_and_a_query_node_share_one_s3_bucket() {
    let moto = crate::emulators::Moto::start();
    moto.bucket("seam-cluster");
    let mut envs = moto.env();
    envs.push((
        "SEAM_STORAGE_URL",
        "s3://seam-cluster/tables-of-two".to_string(),
    ));
    let t = generate(43, 240, 1_730_887_200_000_000_000, 200);
    let dir = tempfile::tempdir().unwrap();
    let (da, db, dq) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("q"),
    );
    let ingest = "ingest,correlate";
    let a = start(&da, ingest, &envs);
    let b = start(&db, ingest, &envs);
    let q = start(&dq, "query", &envs);

    post_lines(&a.http, "/ingest/apim", &t.gateway_lines, 500).await;
    post_lines(&a.http, "/ingest/apim", &t.events, 500).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    kill9(a);
    for body in &t.otlp {
        post_body(&b.http, "/v1/traces", body.to_string()).await;
    }
    post_lines(&b.http, "/ingest/mule", &t.mule_lines, 500).await;
    for chunk in t.mule_log4j.chunks(500) {
        post_typed(&b.http, "/ingest/mule", "text/plain", chunk.join("\n")).await;
    }
    post_lines(&b.http, "/ingest/mule", &t.mule_duplicates, 1000).await;
    // a, started again, stores what only its write-ahead log held.
    let a = start(&da, ingest, &envs);
    post_late_gateway(&a.http, &t).await;
    converge_with_spans(&q.api, &t, "through the query node on S3").await;
    for n in [a, b, q] {
        sigterm_and_wait(n);
    }
    // Each node wrote its own files under its own id: the gateway's records only a, Mule's
    // lines only b.
    for (table, dir) in [("gateway_log_copies", &da), ("flow_logs", &db)] {
        let id = std::fs::read_to_string(dir.join("node_id")).unwrap();
        let keys = moto.list("seam-cluster", &format!("tables-of-two/tables/{table}/"));
        let files: Vec<&String> = keys.iter().filter(|k| k.ends_with(".parquet")).collect();
        assert!(
            !files.is_empty(),
            "{table}: no files in the bucket: {keys:?}"
        );
        let suffix = format!("-{}.parquet", id.trim());
        for f in files {
            assert!(
                f.ends_with(&suffix),
                "{table}: {f} not written by {}",
                id.trim()
            );
        }
    }
}
