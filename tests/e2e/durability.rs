//! The write-ahead log's failure cases: a torn tail, a corrupt segment (both policies), a
//! full disk, a flood that is pushed back with retryable codes while memory stays bounded,
//! a second seam refused on a data directory in use, and no log left after a graceful stop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::binary::{kill9, spawn_with};
use crate::support::*;

/// No flush during these tests: acknowledged rows live only in the WAL until restart.
const NO_FLUSH: &str = "[storage]\nflush_interval = \"1h\"\n";

async fn post_sample(http: &str) -> u16 {
    send_sample(http).await.status().as_u16()
}

/// Segments holding at least one entry, oldest first.
fn segments_with_data(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 20).unwrap_or(false))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_wal_tail_is_cut_and_acknowledged_rows_survive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = spawn_with(&data, NO_FLUSH);
    assert_eq!(post_sample(&run.http).await, 200);
    kill9(run);
    // A crash in the middle of the next write: half an entry at the end of the segment.
    let seg = segments_with_data(&data).pop().unwrap();
    let good_len = std::fs::metadata(&seg).unwrap().len();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    std::fs::write(&seg, &bytes).unwrap();

    let run = spawn_with(&data, NO_FLUSH);
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM spans").await.unwrap(),
        20
    );
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        good_len,
        "torn tail cut"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", run.api))
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("seam_wal_torn_tails_total 1"), "{metrics}");
    // And again after another crash: replay is idempotent.
    assert_eq!(post_sample(&run.http).await, 200);
    // One process, one registry: exactly this process's accepted spans.
    let metrics = reqwest::get(format!("http://{}/metrics", run.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("seam_records_accepted_total{signal=\"spans\",transport=\"http\"} 20"),
        "{metrics}"
    );
    kill9(run);
    let run = spawn_with(&data, NO_FLUSH);
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM spans").await.unwrap(),
        40
    );
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_segment_stops_seam_unless_quarantine_is_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = spawn_with(&data, NO_FLUSH);
    assert_eq!(post_sample(&run.http).await, 200);
    assert_eq!(post_sample(&run.http).await, 200);
    kill9(run);
    // Flip one byte inside the first entry's payload: a good entry follows, so this is
    // corruption, not a torn tail.
    let seg = segments_with_data(&data).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[20 + 17 + 5 + 100] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let config = data.with_extension("toml");
    std::fs::write(
        &config,
        format!("[listen]\notlp_grpc_addr = \"127.0.0.1:0\"\n{NO_FLUSH}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seam"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--ingest-http-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "seam must refuse to start");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(name) && err.contains("corrupt at offset 20"),
        "{err}"
    );
    assert!(
        err.contains("checksum mismatch") && err.contains("quarantine"),
        "{err}"
    );

    let run = spawn_with(
        &data,
        &format!("{NO_FLUSH}[wal]\non_corrupt = \"quarantine\"\n"),
    );
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM spans").await.unwrap(),
        0
    );
    assert!(data.join("wal/quarantine").join(name).exists());
    let metrics = reqwest::get(format!("http://{}/metrics", run.api))
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("seam_wal_quarantined_segments_total 1"),
        "{metrics}"
    );
    assert_eq!(
        post_sample(&run.http).await,
        200,
        "serving after quarantine"
    );
    drop(run);
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the full-disk test mounts a small tmpfs and needs root (CI runs as root)"
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_a_retryable_refusal_and_seam_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SmallFs::mount(&dir.path().join("small"), "4m");
    let data = fs.0.join("data");
    let stack = Stack::start_with(|c| {
        c.data_dir = data.clone();
        c.storage.flush_interval = Duration::from_millis(100);
    })
    .await;
    let api = stack.api();
    assert_eq!(post_sample(&stack.addrs.ingest_http.to_string()).await, 200);
    wait_count(&api, "SELECT count(*) FROM spans", 20).await;

    // Fill the file system.
    let filler = fs.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);

    let resp = send_sample(&stack.addrs.ingest_http.to_string()).await;
    assert_eq!(resp.status(), 503, "a full disk is retryable");
    assert_eq!(resp.headers()["retry-after"], "2");
    let body = resp.text().await.unwrap();
    assert!(body.contains("write-ahead log cannot be written"), "{body}");
    assert_eq!(count(&api, "SELECT count(*) FROM spans").await.unwrap(), 20);

    // Space returns: ingest works again and nothing was corrupted.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(post_sample(&stack.addrs.ingest_http.to_string()).await, 200);
    wait_count(&api, "SELECT count(*) FROM spans", 40).await;
    let dir_back = stack.stop().await;
    // Restart on the same directory: everything acknowledged is there, once.
    let stack = Stack::start_with(|c| c.data_dir = data.clone()).await;
    assert_eq!(
        count(&stack.api(), "SELECT count(*) FROM spans")
            .await
            .unwrap(),
        40
    );
    stack.stop().await;
    drop(dir_back);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_pushed_back_with_retryable_codes_and_memory_stays_bounded() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

    const BUDGET: usize = 2 << 20;
    let stack = Stack::start_with(|c| {
        c.storage.max_buffer_bytes = BUDGET;
        c.storage.flush_interval = Duration::from_secs(3600);
        c.wal.queue_depth = 4;
    })
    .await;
    let req: ExportTraceServiceRequest =
        serde_json::from_slice(&sample("otlp-traces.json")).unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let pushed_back = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (req, accepted, pushed_back, other, stop) = (
            req.clone(),
            accepted.clone(),
            pushed_back.clone(),
            other.clone(),
            stop.clone(),
        );
        let endpoint = format!("http://{}", stack.addrs.otlp_grpc);
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
            for _ in 0..400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client.export(req.clone()).await {
                    Ok(_) => accepted.fetch_add(1, Ordering::Relaxed),
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        pushed_back.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Watch the memory gauge while the flood runs (bounded in count and time).
    let api = stack.api();
    let mut peak = 0.0f64;
    for _ in 0..200 {
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        let text = reqwest::get(format!("http://{api}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix("seam_buffered_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            peak = peak.max(v);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = accepted.load(Ordering::Relaxed);
    assert!(
        pushed_back.load(Ordering::Relaxed) > 0,
        "the flood was never pushed back"
    );
    assert_eq!(other.load(Ordering::Relaxed), 0, "only retryable refusals");
    assert!(
        peak <= BUDGET as f64,
        "buffered {peak} bytes over the budget of {BUDGET}"
    );
    let stored = count(&api, "SELECT count(*) FROM spans").await.unwrap();
    assert_eq!(
        stored,
        accepted as i64 * 20,
        "every accepted span stored once"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_seam_on_the_same_data_directory_is_refused() {
    let stack = Stack::start().await;
    let second = seam::server::Server::start(test_config(stack.dir.path())).await;
    let Err(err) = second else {
        panic!("a second seam started on a data directory in use");
    };
    assert!(
        err.to_string().contains("another seam process is using it"),
        "{err}"
    );
    // The first keeps working; once it stopped, the directory is free again.
    let http = stack.addrs.ingest_http.to_string();
    assert_eq!(send_sample(&http).await.status(), 200);
    let dir = stack.stop().await;
    // A graceful stop leaves every row in Parquet and no log to replay.
    assert!(segments_with_data(dir.path()).is_empty());
    let again = seam::server::Server::start(test_config(dir.path()))
        .await
        .unwrap();
    let n = count(
        &again.addrs().api.to_string(),
        "SELECT count(*) AS n FROM spans",
    )
    .await
    .unwrap();
    assert_eq!(n, 20);
    again.shutdown().await.unwrap();
}
