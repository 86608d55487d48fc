//! The query benchmark (`seam-querybench`, `seam_benches::querybench`) at a tiny size: traffic
//! generated through seam's ingest endpoints, then every benchmark query (views, audit
//! questions, every dashboard panel) over each range through seam's SQL API and through
//! DuckDB over the same Parquet files. Both engines must answer every query with the same
//! number of rows.

use std::time::Duration;

use seam::server::Server;
use seam_benches::querybench::{
    LoadOptions, RunOptions, Target, load, markdown, read_queries, run, wait_settled,
};

use crate::support::*;

const REQUESTS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_runs_on_seam_and_duckdb_with_the_same_rows() {
    let quick = |c: &mut seam::config::SeamConfig| {
        c.correlation.horizon = Duration::from_secs(2);
        c.correlation.delay = Duration::from_millis(200);
    };
    let stack = Stack::start_with(quick).await;
    let target = |s: &seam::server::BoundAddrs| Target {
        ingest: s.ingest_http.to_string(),
        api: s.api.to_string(),
        token: None,
    };
    // 2024-11-06T10:00:00Z, one request every 9 s: 400 requests span an hour.
    let report = load(
        &target(&stack.addrs),
        &LoadOptions {
            requests: REQUESTS,
            chunk: 150,
            gap_ms: 9_000,
            start_ns: 1_730_887_200_000_000_000,
            seed: 3,
            clients: 2,
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.requests, REQUESTS);
    assert!(report.records > 6 * REQUESTS, "{report:?}");
    wait_settled(
        &target(&stack.addrs),
        REQUESTS,
        Duration::from_secs(120),
        |_, _| {},
    )
    .await
    .unwrap();
    // Restart (with the same horizon: a longer one would make the requests unsettled
    // again), so that everything is in the Parquet files DuckDB reads.
    let dir = stack.stop().await;
    let mut cfg = test_config(dir.path());
    quick(&mut cfg);
    let server = Server::start(cfg).await.unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let queries = read_queries(&root.join("benches/queries")).unwrap();
    assert!(queries.len() >= 30, "{} query files", queries.len());
    let results = run(
        &target(&server.addrs()),
        &RunOptions {
            data_dir: dir.path().to_path_buf(),
            queries: queries.clone(),
            runs: 1,
            duckdb: Some(("python3".into(), root.join("benches/duckdb_bench.py"))),
            filter: None,
        },
    )
    .await
    .unwrap();
    let table = markdown(&results);
    // Every query, each ranged one over hour, day and all.
    for q in &queries {
        let n = results.iter().filter(|m| m.query == q.name).count();
        assert!(n == 1 || n == 3, "{}: {n} runs\n{table}", q.name);
    }
    for m in &results {
        assert!(m.seam.is_ok(), "{table}");
        assert!(matches!(m.duckdb, Some(Ok(_))), "{table}");
        assert_eq!(
            m.seam_rows, m.duckdb_rows,
            "{} ({}): {}\n{table}",
            m.query, m.range, m.sql
        );
    }
    // The data answers: the denial view has rows, the request panel finds its request.
    let rows = |q: &str| {
        results
            .iter()
            .find(|m| m.query == q && (m.range == "all" || m.range == "-"))
            .map_or(0, |m| m.seam_rows)
    };
    assert!(rows("view-audit_denials") >= 3, "{table}");
    assert_eq!(rows("panel-request-timeline-the-request"), 1, "{table}");
    assert!(rows("raw-trace-spans") >= 2, "{table}");
    server.shutdown().await.unwrap();
}
