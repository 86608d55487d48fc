//! Helpers shared by seam's integration tests: where the sample inputs are, how to wait
//! for a condition without sleeping blindly, and a small client for seam's SQL API.
//!
//! Takes addresses of running servers; gives typed results. No tests live here.

pub mod generator;
pub mod grafana;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};

/// The folder of sample inputs, `tests/fixtures` (committed; its README says what each file
/// holds and the ground truth it carries). Resolved from this crate's manifest directory, so it
/// works from any working directory.
pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Reads one sample file.
pub fn sample(name: &str) -> Vec<u8> {
    let p = samples_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read sample {}: {e}", p.display()))
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
///
/// # Errors
/// When the timeout passes; the message says what was awaited.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A result row of the SQL API.
pub type Row = Map<String, Value>;

/// What the SQL API answered.
#[derive(Debug)]
pub struct SqlAnswer {
    /// HTTP status.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// Posts SQL to `POST /api/v1/sql?format=...` on `api` (host:port).
///
/// # Errors
/// Transport failures.
pub async fn sql_raw(api: &str, sql: &str, format: &str) -> anyhow::Result<SqlAnswer> {
    let resp = reqwest::Client::new()
        .post(format!("http://{api}/api/v1/sql?format={format}"))
        .body(sql.to_string())
        .send()
        .await
        .context("posting SQL")?;
    let status = resp.status().as_u16();
    let body = resp.text().await.context("reading the SQL answer")?;
    Ok(SqlAnswer { status, body })
}

/// Runs SQL and returns its rows as JSON objects.
///
/// # Errors
/// Transport failures, or a non-200 answer (its message included).
pub async fn sql(api: &str, sql: &str) -> anyhow::Result<Vec<Row>> {
    let a = sql_raw(api, sql, "json").await?;
    if a.status != 200 {
        bail!("SQL {sql:?} failed with {}: {}", a.status, a.body);
    }
    let rows: Vec<Row> = serde_json::from_str(&a.body).context("parsing JSON rows")?;
    Ok(rows)
}

/// Runs a query returning one row with one column and gives that value.
///
/// # Errors
/// As [`sql`], or when the result is not one value.
pub async fn scalar(api: &str, query: &str) -> anyhow::Result<Value> {
    let rows = sql(api, query).await?;
    match rows.as_slice() {
        [row] if row.len() == 1 => Ok(row.values().next().cloned().unwrap_or(Value::Null)),
        _ => bail!("expected one value from {query:?}, got {rows:?}"),
    }
}

/// Runs a `count(*)`-style query and gives the number.
///
/// # Errors
/// As [`scalar`].
pub async fn count(api: &str, query: &str) -> anyhow::Result<i64> {
    scalar(api, query)
        .await?
        .as_i64()
        .with_context(|| format!("{query:?} did not return an integer"))
}
