//! The PostgreSQL wire listener with real clients: `tokio-postgres` (extended protocol,
//! parameters, typed values) and `psql` (simple protocol, `\dt`, `\d`).

use std::process::Command;

use crate::support::*;

pub async fn connect(addr: std::net::SocketAddr) -> tokio_postgres::Client {
    connect_as(addr, "user=seam")
        .await
        .expect("connect over the PostgreSQL wire protocol")
}

/// Connects without TLS with extra connection settings (`user=… password=…`).
pub async fn connect_as(
    addr: std::net::SocketAddr,
    settings: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn = format!(
        "host={} port={} dbname=seam {settings}",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
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

/// The queries Grafana's PostgreSQL datasource sends besides panel queries (from its source:
/// `postgresMetaQuery.ts`, and pgx's `-- ping` health check), with the search-path schema
/// constraint it builds.
fn grafana_schema_constraint() -> &'static str {
    "quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_metadata_queries_run() {
    let stack = Stack::start().await;
    load_sample(&stack).await;
    let pg = connect(stack.addrs.pg).await;
    // Health check.
    pg.batch_execute("-- ping").await.unwrap();
    let c = grafana_schema_constraint();
    let row = pg
        .query_one(
            "SELECT current_setting('server_version_num')::int/100 as version",
            &[],
        )
        .await
        .unwrap();
    let version: i64 = row
        .try_get::<_, i64>(0)
        .or_else(|_| row.try_get::<_, i32>(0).map(i64::from))
        .unwrap();
    assert!(version >= 900, "{version}");
    let ts = pg
        .query(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .unwrap();
    assert!(ts.is_empty());
    let schemas = pg
        .query(
            "SELECT schema_name AS \"name\" FROM information_schema.schemata WHERE schema_name NOT IN ('information_schema', 'pg_catalog', 'pg_toast') ORDER BY schema_name",
            &[],
        )
        .await
        .unwrap();
    assert!(schemas.iter().any(|r| r.get::<_, String>(0) == "public"));
    let tables = pg
        .query(
            &format!(
                "SELECT CASE WHEN {c} THEN quote_ident(table_name) ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS \"table\" FROM information_schema.tables WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog') ORDER BY CASE WHEN {c} THEN 0 ELSE 1 END, 1"
            ),
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = tables.iter().map(|r| r.get(0)).collect();
    for t in ["spans", "requests", "gateway_logs", "flow_logs"] {
        assert!(names.iter().any(|n| n == t), "{t} not in {names:?}");
    }
    let columns = pg
        .query(
            &format!(
                "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" FROM information_schema.columns WHERE CASE WHEN array_length(parse_ident('spans'),1) = 2 THEN quote_ident(table_schema) = (parse_ident('spans'))[1] AND quote_ident(table_name) = (parse_ident('spans'))[2] ELSE quote_ident(table_name) = 'spans' AND {c} END"
            ),
            &[],
        )
        .await
        .unwrap();
    let types: std::collections::HashMap<String, String> =
        columns.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(types["time"], "timestamp with time zone");
    assert_eq!(types["duration_ms"], "double precision");
    assert_eq!(types["name"], "text");
    assert_eq!(types["status_code"], "integer");
    // The same over the simple protocol.
    let msgs = pg
        .simple_query(&format!(
            "SELECT quote_ident(table_name) AS \"table\" FROM information_schema.tables WHERE {c} ORDER BY 1"
        ))
        .await
        .unwrap();
    assert!(msgs.len() > 10);
    stack.stop().await;
}

pub fn psql_as(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
    sql: &str,
) -> (bool, String) {
    let out = Command::new("psql")
        .arg(format!(
            "host={} port={} user={user} dbname=seam sslmode=require connect_timeout=10",
            addr.ip(),
            addr.port()
        ))
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("run psql");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_have_a_time_limit_and_can_be_cancelled() {
    use tokio_postgres::error::SqlState;
    let stack = Stack::start_with(|c| c.query.timeout = std::time::Duration::from_secs(1)).await;
    let pg = connect(stack.addrs.pg).await;
    let slow = "SELECT count(*) FROM generate_series(1, 20000000000) AS t(x) WHERE x % 7 = 3";
    // Past query.timeout: 57014, over both protocols.
    let err = pg.query(slow, &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    let err = pg.simple_query(slow).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    // The connection still answers.
    let one: i64 = pg.query_one("SELECT 1::bigint", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    stack.stop().await;

    // A cancel request from another connection stops a running statement.
    let stack = Stack::start_with(|c| c.query.timeout = std::time::Duration::from_secs(60)).await;
    let pg = connect(stack.addrs.pg).await;
    let token = pg.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let result = pg.query(slow, &[]).await;
    canceller.await.unwrap().unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    // Stopped by the request, not by the 60 s limit.
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("user request"), "{message}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_maps_read_back_in_binary_and_text() {
    let stack = Stack::start().await;
    load_sample(&stack).await;
    let pg = connect(stack.addrs.pg).await;
    // A list column (binary format, extended protocol).
    let row = pg
        .query_one(
            "SELECT ARRAY['Orders.Read', 'Orders.Write'] AS roles, attributes['http.method'] AS m, attributes FROM spans WHERE name = 'GET /api/*' ORDER BY time LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let roles: Vec<String> = row.get("roles");
    assert_eq!(roles, vec!["Orders.Read", "Orders.Write"]);
    let m: String = row.get("m");
    assert_eq!(m, "GET");
    // Map columns arrive as JSON object text.
    let attrs: String = row.get("attributes");
    let attrs: serde_json::Value = serde_json::from_str(&attrs).unwrap();
    assert_eq!(attrs["http.method"], "GET");
    // Every column of every table reads back, over both protocols.
    for t in [
        "spans",
        "logs",
        "gateway_logs",
        "flow_logs",
        "requests",
        "request_events",
    ] {
        pg.query(&format!("SELECT * FROM {t} LIMIT 3"), &[])
            .await
            .unwrap_or_else(|e| panic!("{t}: {e:?}"));
        pg.simple_query(&format!("SELECT * FROM {t} LIMIT 3"))
            .await
            .unwrap_or_else(|e| panic!("{t}: {e:?}"));
    }
    let out = Command::new("psql")
        .arg(format!(
            "host={} port={} user=seam dbname=seam",
            stack.addrs.pg.ip(),
            stack.addrs.pg.port()
        ))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT attributes FROM spans LIMIT 1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim_start()
            .starts_with('{')
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_macros_and_client_probes_run_over_the_wire() {
    use seam_tests::grafana::{Range, expand_macros};
    let stack = Stack::start().await;
    load_sample(&stack).await;
    let pg = connect(stack.addrs.pg).await;
    // The samples' hour.
    let r = Range {
        from_ns: 1_730_797_200_000_000_000,
        to_ns: 1_730_800_800_000_000_000,
    };
    // What the answers must be, from plain SQL.
    let n_spans = pg
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get::<_, i64>(0) as usize;
    let buckets = pg
        .query_one(
            "SELECT count(DISTINCT CAST(extract(epoch from time) AS BIGINT) / 300) FROM spans",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0) as usize;
    let epochs = "(SELECT CAST(extract(epoch from time) AS BIGINT) AS ts, CAST(time AS BIGINT) AS tn, duration_ms FROM spans) e";
    for (sql, rows) in [
        ("SELECT $__time(time), duration_ms FROM spans WHERE $__timeFilter(time) ORDER BY 1".to_string(), n_spans),
        ("SELECT $__timeEpoch(time), duration_ms FROM spans WHERE $__timeFilter(time) ORDER BY 1".to_string(), n_spans),
        ("SELECT $__timeGroup(time, '5m') AS t, count(*) AS n FROM spans WHERE $__timeFilter(time) GROUP BY 1 ORDER BY 1".to_string(), buckets),
        ("SELECT $__timeGroupAlias(time, '5m'), count(*) AS n FROM spans GROUP BY 1 ORDER BY 1".to_string(), buckets),
        ("SELECT count(*) FROM spans WHERE time >= $__timeFrom() AND time <= $__timeTo()".to_string(), 1),
        (format!("SELECT count(*) FROM {epochs} WHERE $__unixEpochFilter(ts)"), 1),
        (format!("SELECT count(*) FROM {epochs} WHERE $__unixEpochNanoFilter(tn) AND tn >= $__unixEpochNanoFrom() AND tn <= $__unixEpochNanoTo()"), 1),
        (format!("SELECT $__unixEpochGroupAlias(ts, '5m'), avg(duration_ms) AS d FROM {epochs} GROUP BY 1 ORDER BY 1"), buckets),
    ] {
        let expanded = expand_macros(&sql, r).unwrap();
        let got = pg
            .query(&expanded, &[])
            .await
            .unwrap_or_else(|e| panic!("{expanded}: {e:?}"));
        assert_eq!(got.len(), rows, "{expanded}");
    }
    // What psql and BI tools probe.
    for probe in [
        "SELECT version()",
        "SELECT current_database()",
        "SELECT current_schema()",
        "SHOW search_path",
    ] {
        let msgs = pg
            .simple_query(probe)
            .await
            .unwrap_or_else(|e| panic!("{probe}: {e:?}"));
        assert!(!msgs.is_empty(), "{probe}");
    }
    let types = pg
        .query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'spans' AND column_name IN ('time', 'attributes')",
            &[],
        )
        .await
        .unwrap();
    let types: std::collections::HashMap<String, String> =
        types.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(types["time"], "timestamp with time zone");
    assert_eq!(types["attributes"], "USER-DEFINED");
    stack.stop().await;
}
