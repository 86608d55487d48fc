//! The `azure_blob` pulled source against Azurite (the Azure Storage emulator), with real
//! append blobs written by the Azure SDK for Python in the layout APIM's diagnostic settings
//! use: a growing blob read in several polls with a record cut between two appends; several
//! services and hours with `not_before`, finished blobs and the incremental listing; and a
//! SIGKILL of seam while appends go on, after which every record is present exactly once.
//!
//! Needs `azurite-blob` (npm package `azurite`) and python3 with `azure-storage-blob`:
//! `make test-deps` installs both. Without them these tests fail, saying so.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seam_tests::generator::generate;

use crate::binary::{Running, spawn_custom};
use crate::emulators::Azurite;
use crate::support::*;

/// The variable seam reads the connection string from.
const CONN_ENV: &str = "SEAM_E2E_BLOB_CONNECTION_STRING";
/// The container diagnostic settings write GatewayLogs to.
const CONTAINER: &str = "insights-logs-gatewaylogs";
/// Longest wait for seam to catch up.
const CATCH_UP: Duration = Duration::from_secs(90);

/// Azurite with the container diagnostic settings write to.
fn azurite() -> Azurite {
    let az = Azurite::start();
    az.python(&["container", CONTAINER]);
    az
}

impl Azurite {
    /// A file holding `data`, for the script.
    fn data_file(&self, data: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new_in(self.dir.path()).unwrap();
        std::fs::write(f.path(), data).unwrap();
        f
    }

    /// Appends `data` to the append blob `blob` (created when missing), in one block.
    fn append(&self, blob: &str, data: &[u8]) {
        let f = self.data_file(data);
        self.python(&["append", CONTAINER, blob, f.path().to_str().unwrap()]);
    }

    /// Starts appending `data` to `blob` in `pieces` blocks cut anywhere, `pause_ms` apart.
    fn stream(&self, blob: &str, data: &[u8], pieces: usize, pause_ms: u64) -> Writer {
        let f = self.data_file(data);
        let child = self
            .python_command(&[
                "stream",
                CONTAINER,
                blob,
                f.path().to_str().unwrap(),
                &pieces.to_string(),
                &pause_ms.to_string(),
            ])
            .spawn()
            .unwrap();
        Writer { child, _data: f }
    }
}

/// A running writer; killed on drop if the test fails first.
struct Writer {
    child: Child,
    _data: tempfile::NamedTempFile,
}

impl Writer {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn finish(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the blob writer failed: {status}");
                return;
            }
            assert!(start.elapsed() < CATCH_UP, "the blob writer did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap();
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap();
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day, hour) of a Unix time.
fn ymdh(secs: i64) -> (i64, u32, u32, i64) {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    (y, m, d, secs.rem_euclid(86_400) / 3600)
}

/// The service folder diagnostic settings use for APIM service `name`.
fn service(name: &str) -> String {
    format!(
        "resourceId=/SUBSCRIPTIONS/00000000-0000-0000-0000-00000000E2E0/RESOURCEGROUPS/RG-SEAM/\
         PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/{name}"
    )
}

/// The hourly blob of `service` for the hour holding `secs`.
fn hour_blob(service: &str, secs: i64) -> String {
    let (y, m, d, h) = ymdh(secs);
    format!("{service}/y={y:04}/m={m:02}/d={d:02}/h={h:02}/m=00/PT1H.json")
}

/// RFC 3339 of the start of the hour holding `secs`.
fn hour_rfc3339(secs: i64) -> String {
    let (y, m, d, h) = ymdh(secs);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:00:00Z")
}

/// Lines as JSON Lines bytes.
fn jsonl(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

/// APIM gateway records as the storage archive holds them, `n` requests from `seed`.
fn gateway_lines(seed: u64, n: usize) -> Vec<String> {
    let start = (now_secs() - 900) * 1_000_000_000;
    generate(seed, n, start, 150).gateway_lines
}

/// The `[[sources]]` block of the blob source `blob-e2e` (format `format`, polling every
/// `poll`) plus `extra` keys; the connection string comes from [`CONN_ENV`].
fn source_toml(format: &str, poll: &str, extra: &str) -> String {
    format!(
        "[[sources]]\nname = \"blob-e2e\"\ntype = \"azure_blob\"\nformat = \"{format}\"\n\
         container = \"{CONTAINER}\"\nprefix = \"resourceId=/SUBSCRIPTIONS/\"\n\
         connection_string_env = \"{CONN_ENV}\"\npoll_interval = \"{poll}\"\n{extra}"
    )
}

fn start_seam(data: &Path, az: &Azurite, toml: &str) -> Running {
    let cs = az.connection_string();
    spawn_custom(data, toml, &[(CONN_ENV, cs.as_str())], None)
}

async fn wait_exact(api: &str, query: &str, expected: i64) {
    crate::support::wait_exact(api, query, expected, CATCH_UP).await;
}

async fn wait_at_least(api: &str, query: &str, at_least: i64) -> i64 {
    crate::support::wait_at_least(api, query, at_least, CATCH_UP).await
}

/// This source's entry of `GET /api/v1/sources`.
async fn source_status(api: &str) -> serde_json::Value {
    crate::support::source_status(api, "blob-e2e")
        .await
        .unwrap_or_else(|| panic!("no blob-e2e in GET /api/v1/sources"))
}

const COPIES: &str = "SELECT count(*) FROM gateway_log_copies";
const REJECTS: &str = "SELECT count(*) FROM rejects";

fn n(v: usize) -> i64 {
    i64::try_from(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_append_blob_is_read_in_several_polls_and_a_cut_record_waits_for_its_end() {
    let az = azurite();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let blob = hour_blob(&service("SEAM-E2E-GROW"), now_secs());
    let lines = gateway_lines(11, 400);
    let (a, b) = (lines.len() / 3, 2 * lines.len() / 3);
    // First append: `a` whole records and the first half of the next one.
    let cut = lines[a].as_bytes();
    let half = cut.len() / 2;
    let mut first = jsonl(&lines[..a]);
    first.extend_from_slice(&cut[..half]);
    az.append(&blob, &first);

    let run = start_seam(&data, &az, &source_toml("apim", "200ms", ""));
    wait_exact(&run.api, COPIES, n(a)).await;
    // Several polls later the cut record still waits: nothing more, nothing refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&run.api, COPIES).await.unwrap(), n(a));
    assert_eq!(count(&run.api, REJECTS).await.unwrap(), 0);

    // The rest of the cut record, and more.
    let mut second = cut[half..].to_vec();
    second.push(b'\n');
    second.extend(jsonl(&lines[a + 1..b]));
    az.append(&blob, &second);
    wait_exact(&run.api, COPIES, n(b)).await;
    let third = jsonl(&lines[b..]);
    az.append(&blob, &third);
    wait_exact(&run.api, COPIES, n(lines.len())).await;

    let size = first.len() + second.len() + third.len();
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM gateway_logs")
            .await
            .unwrap(),
        n(lines.len())
    );
    assert_eq!(count(&run.api, REJECTS).await.unwrap(), 0);
    // The position is the blob's size, under the blob's name.
    wait_exact(
        &run.api,
        &format!(
            "SELECT max(\"offset\") FROM source_positions WHERE source = 'blob-e2e' AND key = '{blob}'"
        ),
        n(size),
    )
    .await;
    // Caught up: no bytes behind, nothing refused.
    let start = Instant::now();
    loop {
        let status = source_status(&run.api).await;
        assert_eq!(status["rejected"], 0, "{status}");
        if status["lag_bytes"] == 0 {
            break;
        }
        assert!(start.elapsed() < CATCH_UP, "still behind: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_hours_are_read_not_before_skips_old_hours_and_finished_blobs_reopen() {
    // The hours below are this hour and the previous ones: keep clear of an hour's end.
    let into_hour = now_secs().rem_euclid(3600);
    if into_hour > 3600 - 90 {
        let wait = u64::try_from(3600 - into_hour + 2).unwrap();
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    let az = azurite();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = now_secs();
    let (a, b) = (service("SEAM-E2E-A"), service("SEAM-E2E-B"));
    let a_now = hour_blob(&a, now);
    let a_prev = hour_blob(&a, now - 3600);
    let b_prev = hour_blob(&b, now - 3600);
    let b_old = hour_blob(&b, now - 3 * 3600);
    let (l_a_now, l_a_prev, l_b_prev, l_b_old) = (
        gateway_lines(13, 150),
        gateway_lines(17, 120),
        gateway_lines(19, 90),
        gateway_lines(23, 60),
    );
    az.append(&a_now, &jsonl(&l_a_now));
    az.append(&a_prev, &jsonl(&l_a_prev));
    az.append(&b_prev, &jsonl(&l_b_prev));
    az.append(&b_old, &jsonl(&l_b_old));

    // Format `auto` (sniffed per blob), finished after 1 s, full listings only hourly.
    let extra = format!(
        "not_before = \"{}\"\nsettle = \"1s\"\nrelist_interval = \"1h\"\n",
        hour_rfc3339(now - 2 * 3600)
    );
    let run = start_seam(&data, &az, &source_toml("auto", "200ms", &extra));
    let mut expected = l_a_now.len() + l_a_prev.len() + l_b_prev.len();
    wait_exact(&run.api, COPIES, n(expected)).await;

    // The previous hour's blobs are finished: their positions say so.
    wait_exact(
        &run.api,
        &format!(
            "SELECT count(DISTINCT key) FROM source_positions WHERE source = 'blob-e2e' \
             AND detail LIKE '%\"done\":true%' AND key IN ('{a_prev}', '{b_prev}')"
        ),
        2,
    )
    .await;

    // Late records in a finished blob, more in the current hour, and a new blob of a known
    // service: all found by listing the recent hours only.
    let late = gateway_lines(29, 40);
    az.append(&b_prev, &jsonl(&late));
    let more = gateway_lines(31, 50);
    az.append(&a_now, &jsonl(&more));
    let b_now = hour_blob(&b, now);
    let fresh = gateway_lines(37, 30);
    az.append(&b_now, &jsonl(&fresh));
    expected += late.len() + more.len() + fresh.len();
    wait_exact(&run.api, COPIES, n(expected)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(count(&run.api, COPIES).await.unwrap(), n(expected));
    assert_eq!(
        count(
            &run.api,
            "SELECT count(DISTINCT record_key) FROM gateway_log_copies"
        )
        .await
        .unwrap(),
        n(expected)
    );
    assert_eq!(count(&run.api, REJECTS).await.unwrap(), 0);
    // The hour before not_before was never read.
    assert_eq!(
        count(
            &run.api,
            &format!("SELECT count(*) FROM source_positions WHERE key = '{b_old}'")
        )
        .await
        .unwrap(),
        0
    );
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seam_killed_while_a_blob_grows_takes_every_record_exactly_once() {
    let az = azurite();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let blob = hour_blob(&service("SEAM-E2E-CRASH"), now_secs());
    let lines = gateway_lines(41, 3000);
    let total = n(lines.len());
    // Small steps (many write-ahead log entries) and frequent flushes, so that the kill
    // lands between and inside them.
    let toml = format!(
        "[storage]\nflush_interval = \"200ms\"\n{}",
        source_toml("apim", "100ms", "max_batch_bytes = 8192\n")
    );
    let run = start_seam(&data, &az, &toml);
    let mut writer = az.stream(&blob, &jsonl(&lines), 120, 100);
    let before = wait_at_least(&run.api, COPIES, total / 6).await;
    assert!(
        writer.running(),
        "the appends must still be going on when seam is killed ({before} of {total} taken)"
    );
    let mut run = run;
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    drop(run);

    // The appends go on while seam is down; then it resumes from its stored position.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = start_seam(&data, &az, &toml);
    writer.finish().await;
    wait_exact(&run.api, COPIES, total).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&run.api, COPIES).await.unwrap(), total);
    assert_eq!(
        count(
            &run.api,
            "SELECT count(DISTINCT record_key) FROM gateway_log_copies"
        )
        .await
        .unwrap(),
        total
    );
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM gateway_logs")
            .await
            .unwrap(),
        total
    );
    assert_eq!(count(&run.api, REJECTS).await.unwrap(), 0);
    // Nothing taken twice: the restarted source met no record already stored.
    let status = source_status(&run.api).await;
    assert_eq!(status["duplicates"], 0, "{status}");
    assert_eq!(status["rejected"], 0, "{status}");
    drop(run);
}
