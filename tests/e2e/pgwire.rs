//! The PostgreSQL wire listener with real clients: `tokio-postgres` (extended protocol,
//! parameters, typed values) and `psql` (simple protocol, `\dt`, `\d`).

use std::process::Command;

use crate::support::*;

pub async fn connect(addr: std::net::SocketAddr) -> tokio_postgres::Client {
    let conn = format!(
        "host={} port={} user=seam dbname=seam",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect over the PostgreSQL wire protocol");
    tokio::spawn(connection);
    client
}

async fn load_sample(stack: &Stack) {
    let resp = send_sample(&stack.addrs.ingest_http.to_string()).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_queries_with_parameters_and_is_refused_writes() {
    let stack = Stack::start().await;
    load_sample(&stack).await;
    let pg = connect(stack.addrs.pg).await;

    let n: i64 = pg
        .query_one(
            "SELECT count(*) FROM spans WHERE service_name = $1",
            &[&"orders-papi-prd"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 12);
    let row = pg
        .query_one(
            "SELECT duration_ms, status_code, parent_span_id, time, attributes['server.port'] AS port \
             FROM spans WHERE span_id = $1",
            &[&"1a2b3c4d5e6f7081"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<f64>>("duration_ms"), Some(197.0));
    assert_eq!(row.get::<_, Option<i32>>("status_code"), Some(200));
    assert_eq!(row.get::<_, Option<String>>("parent_span_id"), None);
    let t: std::time::SystemTime = row.get("time");
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs, 1_730_798_043);
    assert_eq!(row.get::<_, Option<String>>("port").as_deref(), Some("443"));

    for q in [
        "DROP TABLE spans",
        "COPY (SELECT 1) TO '/tmp/seam-pg-copy'",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO spans SELECT * FROM spans",
    ] {
        let err = pg.batch_execute(q).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "simple protocol: {q}: {err:?}"
        );
        let err = pg.query(q, &[]).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "extended protocol: {q}: {err:?}"
        );
    }
    assert!(!std::path::Path::new("/tmp/seam-pg-copy").exists());
    let n: i64 = pg
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20, "spans is still there");

    // A SET on one connection changes nothing for another.
    pg.batch_execute("SET datafusion.catalog.information_schema = false")
        .await
        .unwrap();
    let other = connect(stack.addrs.pg).await;
    let n: i64 = other
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'spans'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let v: Option<String> = other
        .query_one("SELECT current_setting('server_version_num')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v.as_deref(), Some("160006"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_and_describes_tables() {
    let stack = Stack::start().await;
    load_sample(&stack).await;
    let psql = |cmd: &str| {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &stack.addrs.pg.port().to_string()])
            .args(["-U", "seam", "-d", "seam", "-X", "-c", cmd])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql (the postgresql-client package; .ci/run installs it)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = psql("\\dt");
    assert!(ok, "{err}");
    assert!(
        out.contains("spans") && out.contains("logs") && out.contains("ingest_stats"),
        "{out}"
    );
    let (ok, out, err) = psql("\\d spans");
    assert!(ok, "{err}");
    assert!(
        out.contains("trace_id") && out.contains("duration_ms"),
        "{out}"
    );
    let (ok, out, err) = psql("SELECT count(*) AS n FROM spans");
    assert!(ok, "{err}");
    assert!(out.contains("20"), "{out}");
    let (ok, _, err) = psql("DROP TABLE spans");
    assert!(!ok && err.contains("read-only"), "{err}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_sqlstate_clients_expect() {
    use tokio_postgres::error::SqlState;
    let stack = Stack::start().await;
    load_sample(&stack).await;
    let pg = connect(stack.addrs.pg).await;
    for (sql, want) in [
        ("SELEC 1", SqlState::SYNTAX_ERROR),
        ("SELECT * FROM no_such_table", SqlState::UNDEFINED_TABLE),
        (
            "SELECT no_such_column FROM spans",
            SqlState::UNDEFINED_COLUMN,
        ),
        ("DROP TABLE spans", SqlState::INSUFFICIENT_PRIVILEGE),
    ] {
        // Both protocols: simple (batch_execute) and extended (query).
        let simple = pg.batch_execute(sql).await.unwrap_err();
        assert_eq!(simple.code(), Some(&want), "simple {sql}: {simple:?}");
        let extended = pg.query(sql, &[]).await.unwrap_err();
        assert_eq!(extended.code(), Some(&want), "extended {sql}: {extended:?}");
    }
    // The connection stays usable after errors.
    let n: i64 = pg
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20);
    stack.stop().await;
}
