//! Findings of the adversarial review against the query side, with real clients
//! (`tokio-postgres`, reqwest) and the in-process server: every statement kind goes through
//! one guard on both protocols (cursors refused, `EXPLAIN [ANALYZE]` of an admin-only table
//! refused), values and results are capped, a heavy statement neither holds up ingest nor
//! outlives its time limit.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::error::SqlState;

use crate::auth::make_keys;
use crate::pgwire::{connect, connect_as};
use crate::support::*;

/// Posts SQL with a bearer key; gives the status and the body as JSON (`Null` if it is not).
async fn sql_with_key(api: &str, key: Option<&str>, sql: &str) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{api}/api/v1/sql"))
        .body(sql.to_string());
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn code(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(SqlState::code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_and_explain_go_through_the_one_guard_on_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(dir.path());
    let file = keys.file.clone();
    let stack = Stack::start_with(move |c| c.auth.keys_file = Some(file)).await;
    let pg = connect_as(
        stack.addrs.pg,
        &format!("user=grafana password={}", keys.query),
    )
    .await
    .unwrap();
    // Something in seam_audit to leak, were it readable.
    pg.simple_query("SELECT 'audit-secret-9' AS s")
        .await
        .unwrap();

    // Cursors: 0A000 over both protocols, whatever they would read or do.
    for q in [
        "DECLARE c CURSOR FOR SELECT * FROM seam_audit",
        "FETCH 5 FROM c",
        "CLOSE c",
        "DECLARE d CURSOR FOR INSERT INTO spans SELECT * FROM spans",
        "DECLARE e CURSOR FOR SELECT 1",
    ] {
        let err = pg.batch_execute(q).await.unwrap_err();
        assert_eq!(code(&err), Some("0A000"), "simple {q}: {err:?}");
        let err = pg.query(q, &[]).await.unwrap_err();
        assert_eq!(code(&err), Some("0A000"), "extended {q}: {err:?}");
    }

    // EXPLAIN and EXPLAIN ANALYZE of a table the role may not read, a write hidden in a
    // query: 42501 over both protocols.
    for q in [
        "EXPLAIN SELECT * FROM seam_audit",
        "EXPLAIN ANALYZE SELECT count(*) FROM seam_audit",
        "EXPLAIN ANALYZE SELECT count(*) FROM spans WHERE name IN (SELECT statement FROM seam_audit)",
        "EXPLAIN ANALYZE INSERT INTO spans SELECT * FROM spans",
        "SELECT 1 INTO t2",
    ] {
        let err = pg.batch_execute(q).await.unwrap_err();
        assert_eq!(code(&err), Some("42501"), "simple {q}: {err:?}");
        let err = pg.query(q, &[]).await.unwrap_err();
        assert_eq!(code(&err), Some("42501"), "extended {q}: {err:?}");
    }
    // What the role may read it may explain.
    let rows = pg
        .simple_query("EXPLAIN ANALYZE SELECT count(*) FROM spans")
        .await
        .unwrap();
    assert!(!rows.is_empty());
    pg.query("EXPLAIN SELECT count(*) FROM spans", &[])
        .await
        .unwrap();
    // The connection is still usable, SET and transactions still answer.
    pg.batch_execute("SET application_name = 'x'; BEGIN; COMMIT")
        .await
        .unwrap();
    let one: i64 = pg.query_one("SELECT 1::bigint", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    // The admin may.
    let admin = connect_as(stack.addrs.pg, &format!("user=ops password={}", keys.admin))
        .await
        .unwrap();
    admin
        .simple_query("EXPLAIN ANALYZE SELECT count(*) FROM seam_audit")
        .await
        .unwrap();

    // The same list over HTTP.
    let api = stack.api();
    let (s, v) = sql_with_key(
        &api,
        Some(keys.query.as_str()),
        "EXPLAIN ANALYZE SELECT count(*) FROM seam_audit",
    )
    .await;
    assert_eq!((s, v["kind"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = sql_with_key(
        &api,
        Some(keys.query.as_str()),
        "DECLARE c CURSOR FOR SELECT 1",
    )
    .await;
    assert_eq!((s, v["kind"].as_str()), (400, Some("unsupported")), "{v}");
    let (s, v) = sql_with_key(&api, Some(keys.query.as_str()), "SELECT 1 INTO t2").await;
    assert_eq!((s, v["kind"].as_str()), (403, Some("refused")), "{v}");
    let (s, v) = sql_with_key(
        &api,
        Some(keys.admin.as_str()),
        "EXPLAIN ANALYZE SELECT count(*) FROM seam_audit",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_values_and_results_are_capped_and_seam_keeps_serving() {
    let stack = Stack::start_with(|c| {
        c.query.max_result_bytes = 256 << 10;
        c.query.max_function_output_bytes = 16 << 20;
    })
    .await;
    let api = stack.api();
    // Values a function would build past query.max_function_output_bytes: refused before
    // they are built.
    for q in [
        "SELECT length(repeat('x', 2000000000)) AS n",
        "SELECT length(lpad('x', 2000000000)) AS n",
        "SELECT length(rpad('x', 2000000000, 'ab')) AS n",
        "SELECT length(s || s) AS n FROM (SELECT repeat('x', 10000000) AS s)",
        "SELECT length(concat(s, s)) AS n FROM (SELECT repeat('x', 10000000) AS s)",
        "SELECT length(replace(repeat('x', 100000), 'x', repeat('y', 1000))) AS n",
        "SELECT cardinality(range(1, 1000000000)) AS n",
        "SELECT cardinality(generate_series(1, 1000000000)) AS n",
        "SELECT cardinality(array_repeat(1, 1000000000)) AS n",
    ] {
        let a = sql_raw(&api, q, "json").await.unwrap();
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        let v: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["kind"], "resources_exhausted", "{q}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("max_function_output_bytes"),
            "{q}: {v}"
        );
    }
    assert_eq!(
        count(&api, "SELECT length(repeat('x', 1000000)) AS n")
            .await
            .unwrap(),
        1_000_000
    );

    // A result past query.max_result_bytes within the first MiB: its status and JSON error.
    for format in ["json", "csv", "arrow"] {
        let a = sql_raw(&api, "SELECT * FROM range(150000000)", format)
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{format}");
        let v: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["kind"], "result_too_large", "{format}: {v}");
    }

    // Over PostgreSQL: the same limits, with SQLSTATEs.
    let pg = connect(stack.addrs.pg).await;
    let err = pg
        .simple_query("SELECT * FROM range(150000000)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("54000"), "{err:?}");
    let err = pg
        .query("SELECT * FROM range(150000000)", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("54000"), "{err:?}");
    let err = pg
        .query("SELECT length(repeat('x', 2000000000))", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("53200"), "{err:?}");
    let one: i64 = pg.query_one("SELECT 1::bigint", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    stack.stop().await;

    // Past the limit after the first MiB went out: the body ends with the error and is cut,
    // so the client cannot take it for a whole result.
    let stack = Stack::start_with(|c| c.query.max_result_bytes = 4 << 20).await;
    let api = stack.api();
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/api/v1/sql"))
        .body("SELECT * FROM range(150000000)")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A cut body is an error for reqwest; if some client read it whole, it is not a result.
    if let Ok(text) = resp.text().await {
        assert!(text.contains("result_too_large"), "{}", text.len());
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }
    assert_eq!(count(&api, "SELECT 3 AS n").await.unwrap(), 3);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_query_neither_holds_up_ingest_nor_outlives_its_limit() {
    let limit = Duration::from_secs(2);
    let stack = Stack::start_with(move |c| c.query.timeout = limit).await;
    let api = stack.api();
    let heavy = "SELECT count(*) FROM generate_series(1, 200000) a \
                 CROSS JOIN generate_series(1, 200000) b WHERE a.value < b.value";
    let started = Instant::now();
    let http = {
        let api = api.clone();
        tokio::spawn(async move {
            let a = sql_raw(&api, heavy, "json").await.unwrap();
            (a, started.elapsed())
        })
    };
    let pg = connect(stack.addrs.pg).await;
    let wire = tokio::spawn(async move {
        let r = pg.query(heavy, &[]).await;
        (
            r.map(|_| ()).map_err(|e| code(&e).map(str::to_string)),
            started.elapsed(),
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // An OTLP export while both run.
    let t = Instant::now();
    let resp = send_sample(&stack.addrs.ingest_http.to_string()).await;
    assert_eq!(resp.status(), 200);
    let ingest = t.elapsed();
    assert!(ingest < Duration::from_secs(5), "ingest waited {ingest:?}");

    let (a, took) = http.await.unwrap();
    assert_eq!(a.status, 408, "{}", a.body);
    assert!(
        took < limit + Duration::from_secs(5),
        "HTTP answered after {took:?}"
    );
    let (r, took) = wire.await.unwrap();
    assert_eq!(r, Err(Some("57014".to_string())));
    assert!(
        took < limit + Duration::from_secs(5),
        "PostgreSQL answered after {took:?}"
    );

    // seam keeps serving, and the export is there.
    wait_count(&api, "SELECT count(*) FROM spans", 20).await;
    stack.stop().await;
}
