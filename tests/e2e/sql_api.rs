//! The SQL API: output formats, read-only refusals, errors users read.

use crate::support::*;

const REFUSED: &[&str] = &[
    "COPY (SELECT 1) TO '/tmp/x'",
    "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
    "DROP TABLE spans",
    "INSERT INTO spans SELECT * FROM spans",
    "CREATE TABLE t AS SELECT 1",
    "SET datafusion.execution.batch_size = 1",
    "EXPLAIN COPY (SELECT 1) TO '/tmp/y'",
    "SELECT 1 INTO t2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_file_access_are_refused() {
    let stack = Stack::start().await;
    let api = stack.api();
    let target = stack.dir.path().join("copied.csv");
    let copy = format!("COPY (SELECT 1) TO '{}'", target.display());
    for q in REFUSED.iter().copied().chain([copy.as_str()]) {
        let a = sql_raw(&api, q, "json").await.unwrap();
        assert_eq!(a.status, 403, "{q}: {}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["kind"], "refused", "{q}");
        assert!(
            v["error"].as_str().unwrap().contains("read-only"),
            "{q}: {}",
            a.body
        );
    }
    assert!(!target.exists(), "COPY must not write a file");
    for q in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ] {
        let a = sql_raw(&api, q, "json").await.unwrap();
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        assert!(a.body.contains("not found"), "{q}: {}", a.body);
    }
    // Tables are still there after the refused DROP.
    assert_eq!(count(&api, "SELECT count(*) FROM spans").await.unwrap(), 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_errors_and_limits() {
    let stack = Stack::start_with(|c| {
        c.query.timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let api = stack.api();
    let a = sql_raw(&api, "SELECT 1 AS a, 'x' AS b, NULL AS c", "csv")
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "a,b,c\n1,x,\n");
    let a = sql_raw(&api, "SELECT 1 AS a, NULL AS c", "json")
        .await
        .unwrap();
    assert_eq!(a.body, r#"[{"a":1,"c":null}]"#);
    let a = sql_raw(&api, "SELECT trace_id FROM spans", "json")
        .await
        .unwrap();
    assert_eq!(a.body, "[]");
    let a = sql_raw(&api, "SELECT trace_id FROM spans", "csv")
        .await
        .unwrap();
    assert_eq!(a.body, "trace_id\n");
    // Maps, lists and structs as JSON text in CSV, as over the PostgreSQL wire.
    let a = sql_raw(
        &api,
        "SELECT map(['k', 'q'], ['v\"1', NULL]) AS m, make_array(1, 2) AS l, \
         named_struct('a', 1) AS s, 'x' AS t",
        "csv",
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        "m,l,s,t\n".to_string() + r#""{""k"":""v\""1"",""q"":null}","[1,2]","{""a"":1}",x"# + "\n"
    );
    let a = sql_raw(&api, "SELECT 1", "xml").await.unwrap();
    assert_eq!(a.status, 400);
    assert!(a.body.contains("unknown format"));

    let a = sql_raw(&api, "SELEC 1", "json").await.unwrap();
    assert_eq!(a.status, 400);
    assert!(a.body.contains("Expected: an SQL statement"), "{}", a.body);
    let a = sql_raw(&api, "SELECT nope FROM spans", "json")
        .await
        .unwrap();
    assert_eq!(a.status, 400);
    assert!(a.body.contains("nope"), "{}", a.body);
    let a = sql_raw(&api, "SELECT * FROM missing_table", "json")
        .await
        .unwrap();
    assert_eq!(a.status, 400);
    assert!(a.body.contains("missing_table"), "{}", a.body);

    // A statement past the time limit is cancelled.
    let slow = "SELECT count(*) FROM generate_series(1, 2000000000) a";
    let a = sql_raw(&api, slow, "json").await.unwrap();
    assert_eq!(a.status, 408, "{}", a.body);
    assert!(a.body.contains("ran longer than the limit"), "{}", a.body);

    // JSON request bodies work too.
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/api/v1/sql"))
        .header("content-type", "application/json")
        .body(r#"{"sql": "SELECT 2 AS two", "format": "csv"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "two\n2\n");
    let health = reqwest::get(format!("http://{api}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_stops_a_greedy_query() {
    let stack = Stack::start_with(|c| {
        c.query.memory_limit = 16 << 20;
    })
    .await;
    let a = sql_raw(
        &stack.api(),
        "SELECT value, random() AS r FROM generate_series(1, 5000000) ORDER BY r LIMIT 5000000",
        "json",
    )
    .await
    .unwrap();
    assert_eq!(a.status, 400, "{}", &a.body[..a.body.len().min(300)]);
    assert!(
        a.body.contains("resources_exhausted"),
        "{}",
        &a.body[..a.body.len().min(300)]
    );
    stack.stop().await;
}
