//! The tables are Delta Lake tables: delta-rs (the `deltalake` Python package, a reader that
//! shares no code with seam) opens every table directory in place and reads exactly the rows
//! seam's SQL answers, after flushes, compactions, minute recomputations of the derived
//! tables, and retention that removed files from the log and then from disk.
//!
//! Needs python3 with `deltalake` and `pyarrow` (`make test-deps`).

use std::process::Command;
use std::time::Duration;

use seam_tests::generator::{GATEWAY_EGRESS, generate};

use crate::correlation::wait_generated_settled;
use crate::support::*;

/// Reads each table given (a directory or an object store URI) with delta-rs: rows,
/// version, files, time range (µs). Storage options, if any, come as JSON in
/// `DELTA_STORAGE_OPTIONS`.
const DELTA_PY: &str = r#"
import json, os, sys
import pyarrow.compute as pc
from deltalake import DeltaTable
opts = json.loads(os.environ.get("DELTA_STORAGE_OPTIONS", "{}")) or None
out = {}
for path in sys.argv[1:]:
    dt = DeltaTable(path, storage_options=opts)
    t = dt.to_pyarrow_table()
    times = t.column("time")
    lo, hi = (pc.min(times), pc.max(times)) if t.num_rows else (None, None)
    out[path.rstrip("/").split("/")[-1]] = {
        "rows": t.num_rows,
        "version": dt.version(),
        "files": len(dt.file_uris()),
        "time_type": str(times.type),
        "min_us": lo.value if lo is not None else None,
        "max_us": hi.value if hi is not None else None,
    }
print(json.dumps(out))
"#;

fn delta_read(dir: &std::path::Path, tables: &[&str]) -> serde_json::Value {
    let paths: Vec<String> = tables
        .iter()
        .map(|t| dir.join("tables").join(t).display().to_string())
        .collect();
    delta_read_at(&paths, &[])
}

/// [`delta_read`] of tables at `uris` (directories or object store URIs), with `envs` set
/// (`DELTA_STORAGE_OPTIONS`, the emulator's address).
pub(crate) fn delta_read_at(uris: &[String], envs: &[(&str, String)]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(DELTA_PY)
        .args(uris)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "delta-rs could not read the tables (is `deltalake` installed? `make test-deps`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (rows, min time µs, max time µs) of `table` through seam's SQL.
async fn seam_read(api: &str, table: &str) -> Option<(i64, Option<i64>, Option<i64>)> {
    let rows = sql(
        api,
        &format!(
            "SELECT count(*) AS n, CAST(min(time) AS BIGINT) AS lo, CAST(max(time) AS BIGINT) AS hi FROM {table}"
        ),
    )
    .await
    .ok()?;
    let r = rows.first()?;
    let us = |k: &str| r[k].as_i64().map(|ns| ns.div_euclid(1_000));
    Some((r["n"].as_i64()?, us("lo"), us("hi")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_reads_the_same_in_delta_rs_after_compaction_and_retention() {
    let stack = Stack::start_with(|c| {
        c.storage.flush_interval = Duration::from_millis(200);
        c.storage.compaction_fanout = 3;
        c.storage.compaction_idle = Duration::from_secs(1);
        c.storage.delete_grace = Duration::from_millis(300);
        // Old log entries go at each checkpoint: delta-rs must read from the checkpoints.
        c.storage.delta_log_retention = Duration::ZERO;
        c.storage.retention.check_interval = Duration::from_secs(1);
        // Spans of the old traffic (2024) go; the recent traffic's stay.
        c.storage
            .retention
            .tables
            .insert("spans".into(), Duration::from_secs(30 * 86_400).into());
        c.correlation.horizon = Duration::from_secs(3);
        c.correlation.delay = Duration::from_millis(300);
        c.correlation.gateway_egress = vec![GATEWAY_EGRESS.to_string()];
    })
    .await;
    let http = stack.addrs.ingest_http.to_string();
    let api = stack.api();
    let now_ns = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    let old = generate(5, 300, 1_730_887_200_000_000_000, 200);
    let recent = generate(6, 150, now_ns - 30 * 60 * 1_000_000_000, 200);
    send_traffic(&http, &old).await;
    send_traffic(&http, &recent).await;
    wait_generated_settled(&api, &recent, Duration::from_secs(180)).await;

    // More spans, one small request at a time (a flush, so a Delta version, each), until
    // spans' log passed two checkpoints and its first commits were cleaned away.
    let extra = generate(7, 120, now_ns - 20 * 60 * 1_000_000_000, 200);
    let first = stack
        .dir
        .path()
        .join("tables/spans/_delta_log")
        .join(format!("{:020}.json", 0));
    let mut bodies = extra.otlp.iter().cycle().take(400);
    let started = std::time::Instant::now();
    while first.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "spans' first Delta commit is still there after 2 minutes of flushes"
        );
        if let Some(body) = bodies.next() {
            post_body(&http, "/v1/traces", body.to_string()).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let names: Vec<&str> = seam_schemas::tables::all().iter().map(|t| t.name).collect();
    // Quiet: files flushed, merged and removed; then both readers must agree exactly.
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let agreed = wait_until(
        "delta-rs and seam agree on every table",
        Duration::from_secs(90),
        || {
            let (api, names, dir) = (api.clone(), names.clone(), stack.dir.path().to_path_buf());
            let last = std::sync::Arc::clone(&last);
            async move {
                let delta = delta_read(&dir, &names);
                let mut diffs = Vec::new();
                for t in &names {
                    // Written all the time (every statement, every 10 s): no quiet moment.
                    if ["seam_audit", "ingest_stats"].contains(t) {
                        continue;
                    }
                    let Some((rows, lo, hi)) = seam_read(&api, t).await else {
                        continue;
                    };
                    let d = &delta[*t];
                    let got = (
                        d["rows"].as_i64(),
                        d["min_us"].as_i64(),
                        d["max_us"].as_i64(),
                    );
                    if got != (Some(rows), lo, hi) {
                        diffs.push(format!("{t}: delta-rs {got:?}, seam {:?}", (rows, lo, hi)));
                    }
                }
                *last.lock().unwrap() = diffs.join("\n");
                diffs.is_empty().then_some(delta)
            }
        },
    )
    .await;
    let delta = agreed.unwrap_or_else(|e| panic!("{e}:\n{}", last.lock().unwrap()));

    // The files hold microseconds; retention and compaction happened and their removed
    // files are gone from disk, not only from the log.
    assert_eq!(delta["spans"]["time_type"], "timestamp[us, tz=UTC]");
    let metrics = metrics_text(&api).await;
    let removed = metric_value(
        &metrics,
        "seam_retention_removed_files_total{table=\"spans\",reason=\"retention\"}",
    )
    .unwrap_or(0.0);
    assert!(removed > 0.0, "retention removed no spans file");
    let compactions: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("seam_compactions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(compactions > 0.0, "no compaction ran");
    // Tables past ten versions have a checkpoint, which delta-rs started from (it reads
    // `_last_checkpoint`) and still agreed with seam above.
    let checkpoints: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("seam_delta_checkpoints_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(checkpoints > 0.0, "no Delta checkpoint was written");
    let mut cleaned = 0;
    for t in &names {
        let log = stack.dir.path().join("tables").join(t).join("_delta_log");
        let version = delta[*t]["version"].as_i64().unwrap_or(0);
        if version >= 10 {
            assert!(
                log.join("_last_checkpoint").exists(),
                "{t} is at version {version} without a checkpoint"
            );
        }
        // Past two checkpoints, the entries before the earlier one are gone (no retention
        // here), and delta-rs above still read the table exactly.
        if version >= 20 {
            assert!(
                !log.join(format!("{:020}.json", 0)).exists(),
                "{t} is at version {version} and still has its first commit"
            );
            cleaned += 1;
        }
    }
    assert!(
        cleaned > 0,
        "no table reached version 20: nothing was cleaned"
    );
    assert!(!first.exists(), "spans' first commit came back");
    // Only the recent spans stay (the old traffic's hour files were removed whole).
    assert_eq!(
        count(
            &api,
            "SELECT count(*) FROM spans WHERE time < now() - INTERVAL '30 days'"
        )
        .await
        .unwrap(),
        0
    );
    assert!(delta["spans"]["rows"].as_i64().unwrap() > 0);
    // Files removed from the log (compaction inputs, retention) are gone from disk after the
    // grace: what is on disk is what the log lists.
    let on_disk = |t: &str| {
        let mut n = 0;
        let mut dirs = vec![stack.dir.path().join("tables").join(t)];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    // Table files only (the log's checkpoints are Parquet too).
                    if !p.ends_with("_delta_log") {
                        dirs.push(p);
                    }
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    n += 1;
                }
            }
        }
        n
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delta = delta_read(stack.dir.path(), &names);
    for t in ["spans", "gateway_log_copies", "flow_logs", "requests"] {
        assert_eq!(
            on_disk(t),
            delta[t]["files"].as_i64().unwrap(),
            "{t}: Parquet files on disk vs in the Delta log"
        );
    }
    stack.stop().await;
}
