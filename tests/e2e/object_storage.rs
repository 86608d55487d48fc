//! Tables in object storage (`storage.url`): the real `seam` binary writing its Parquet files
//! and manifests to Azure Blob Storage (Azurite) and to S3 (moto's server), with the
//! credentials in the environment. Generated messy traffic must give the exact answers of its
//! ground truth through a SIGKILL mid-upload and an outage of the store, and a second node
//! with an empty data directory must read the same answers from the store alone.

use std::path::Path;
use std::time::Duration;

use seam_tests::generator::{GATEWAY_EGRESS, Traffic, generate};

use crate::binary::{Running, kill9, sigterm_and_wait, spawn_custom};
use crate::correlation::{
    check_generated_probes, check_generated_requests, check_noise_kept, wait_generated_settled,
};
use crate::emulators::{Azurite, Moto, Proxy};
use crate::support::*;

/// Flushes and compactions often, so that a kill lands during an upload; a short
/// correlation horizon, so that requests settle soon.
fn config() -> String {
    format!(
        "[storage]\nflush_interval = \"200ms\"\ncompaction_fanout = 3\ncompaction_idle = \"1s\"\n\
         delete_grace = \"500ms\"\n\
         [correlation]\nhorizon = \"3s\"\ndelay = \"300ms\"\ngateway_egress = [\"{GATEWAY_EGRESS}\"]\n"
    )
}

fn start(dir: &Path, envs: &[(&str, String)]) -> Running {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_custom(dir, &config(), &envs, None)
}

/// Every check of the generated traffic's ground truth (requests, probes, noise kept).
async fn check_all(api: &str, t: &Traffic, who: &str) {
    wait_generated_settled(api, t, Duration::from_secs(180)).await;
    let mut failures = check_generated_requests(api, t).await;
    failures.extend(check_generated_probes(api, t).await);
    failures.extend(check_noise_kept(api, t).await);
    assert!(
        failures.is_empty(),
        "{who}: {} of the checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// 2024-11-06T10:00:00Z: `n` requests 200 ms apart, with their probes and noise.
fn traffic(seed: u64, n: usize) -> Traffic {
    generate(seed, n, 1_730_887_200_000_000_000, 200)
}

/// Table files and manifests in the store, not in the local data directory.
fn assert_tables_in_store(local: &Path, listed: &[String], prefix: &str) {
    assert!(
        !local.join("tables").exists(),
        "the local data directory holds tables"
    );
    for table in ["spans", "gateway_log_copies", "flow_logs", "requests"] {
        let manifest = format!("{prefix}tables/{table}/_manifest.json");
        assert!(listed.contains(&manifest), "no {manifest} in {listed:?}");
        // The Delta log too (conditional creates work on this store).
        let first = format!("{prefix}tables/{table}/_delta_log/00000000000000000000.json");
        assert!(listed.contains(&first), "no {first}");
        assert!(
            listed
                .iter()
                .any(|k| k.starts_with(&format!("{prefix}tables/{table}/date="))
                    && k.ends_with(".parquet")),
            "no Parquet file of {table} in the store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_azure_blob_survive_a_kill_mid_upload_and_an_outage() {
    let az = Azurite::start();
    az.python(&["container", "seam"]);
    // seam reaches Azurite through a proxy the test takes down: a network failure.
    let net = Proxy::start(az.port).await;
    let envs = vec![
        ("SEAM_STORAGE_URL", "az://seam/estate".to_string()),
        (
            "AZURE_STORAGE_CONNECTION_STRING",
            Azurite::connection_string_at(net.port),
        ),
    ];
    let t = traffic(23, 400);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");

    // The gateway's records, then a SIGKILL while their files are being uploaded.
    let run = start(&a, &envs);
    post_lines(&run.http, "/ingest/apim", &t.gateway_lines, 500).await;
    post_lines(&run.http, "/ingest/apim", &t.events, 500).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    kill9(run);

    // The store is unreachable; seam starts once it is back (it waits for it), then keeps
    // acknowledging into its write-ahead log while the store is gone again.
    net.down();
    let starting = std::thread::spawn({
        let a = a.clone();
        let envs = envs.clone();
        move || start(&a, &envs)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    net.up().await;
    let run = tokio::task::spawn_blocking(move || starting.join().unwrap())
        .await
        .unwrap();
    net.down();
    post_lines(&run.http, "/ingest/mule", &t.mule_lines, 1000).await;
    for chunk in t.mule_log4j.chunks(500) {
        post_typed(&run.http, "/ingest/mule", "text/plain", chunk.join("\n")).await;
    }
    for body in &t.otlp {
        post_body(&run.http, "/v1/traces", body.to_string()).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    net.up().await;
    post_lines(&run.http, "/ingest/mule", &t.mule_duplicates, 1000).await;
    post_body(
        &run.http,
        "/ingest/apim",
        serde_json::json!({ "records": t.late_gateway }).to_string(),
    )
    .await;
    check_all(&run.api, &t, "after the kill and the outages").await;
    sigterm_and_wait(run);
    assert_tables_in_store(&a, &az.list("seam", "estate/"), "estate/");

    // A node with nothing local gives the same answers from the store (the first released
    // its lease at its clean stop).
    let b = dir.path().join("b");
    let run = start(&b, &envs);
    check_all(&run.api, &t, "a new node on the same store").await;
    sigterm_and_wait(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_s3_give_exact_answers_and_a_new_node_reads_them() {
    let s3 = Moto::start();
    s3.bucket("audit");
    let mut envs = s3.env();
    envs.push(("SEAM_STORAGE_URL", "s3://audit/seam/prod".to_string()));
    let t = traffic(29, 300);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let run = start(&a, &envs);
    send_traffic(&run.http, &t).await;
    check_all(&run.api, &t, "the ingesting node").await;
    sigterm_and_wait(run);
    assert_tables_in_store(&a, &s3.list("audit", "seam/prod/"), "seam/prod/");

    let run = start(&dir.path().join("b"), &envs);
    check_all(&run.api, &t, "a new node on the same store").await;
    sigterm_and_wait(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_url_with_a_secret_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = crate::binary::seam_cmd(&[
        "serve",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--storage-url",
        "az://seam/x?sv=2024-01-01&sig=TOPSECRETSIGNATURE",
    ]);
    assert!(!ok);
    assert!(err.contains("storage.url"), "{err}");
    assert!(err.contains("environment"), "{err}");
    assert!(!err.contains("TOPSECRETSIGNATURE"), "{err}");
}
