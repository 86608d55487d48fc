//! The query benchmark: seam's audit and dashboard queries against DuckDB over the same
//! Parquet files.
//!
//! Takes a running seam (ingest HTTP and SQL API addresses) and its data directory; gives,
//! per query and time range, seam's and DuckDB's median time, the ratio and both row counts.
//!
//! - [`load`] sends generated traffic (`seam_tests::generator`: APIM records, custom events,
//!   Mule JSON Logger lines and log4j events, OTLP/JSON spans, with the generator's noise:
//!   probes outnumbering the requests, background runs, platform lines) through seam's own
//!   ingest endpoints, so the files are what the write path and the correlator make.
//! - [`read_queries`] reads `benches/queries/*.sql`: hand-written audit and view queries
//!   (`view-*`, `audit-*`, `raw-*`) and every dashboard panel (`panel-*`, written by
//!   [`panel_files`] from `dashboards/*.json` and checked against them by a test). Queries use
//!   Grafana's macros (`$__timeFilter(time)`, `$__timeGroupAlias(time, $__interval)`) and
//!   variables (`$request_id`, `$trace_id`, `${api:sqlstring}`…), expanded per range as
//!   Grafana would (`seam_tests::grafana`).
//! - [`run`] times each query over the last hour, the last day and the whole range through
//!   seam's HTTP SQL API, then hands the same SQL to `benches/duckdb_bench.py`, which builds
//!   DuckDB views over the Parquet files each table's manifest lists (the same view SQL as
//!   seam's, translated to DuckDB's dialect) and times them in-process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use seam_tests::grafana::{Range, Var, interpolate};

pub use crate::traffic::Target;
use crate::traffic::{Bodies, chunk_seed, int, send_all};

const NS: i64 = 1_000_000_000;

/// A query file.
#[derive(Debug, Clone)]
pub struct QueryFile {
    /// File stem (`view-tokens`, `panel-security-audit-gateway-bypass`).
    pub name: String,
    /// The SQL, comment lines removed.
    pub sql: String,
}

/// Reads every `*.sql` of `dir`, sorted by name, without `--` comment lines.
///
/// # Errors
/// The directory or a file cannot be read.
pub fn read_queries(dir: &Path) -> Result<Vec<QueryFile>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let path = e.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().and_then(|x| x.to_str()) != Some("sql") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let sql = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        out.push(QueryFile { name, sql });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The `panel-*.sql` files for every SQL target of every dashboard in `dir`: (file name,
/// contents).
///
/// # Errors
/// A dashboard cannot be read or parsed.
pub fn panel_files(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dash: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let file = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        for panel in dash["panels"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("untitled");
            let targets = panel["targets"].as_array().into_iter().flatten();
            for (k, t) in targets.enumerate() {
                let Some(sql) = t["rawSql"].as_str() else {
                    continue;
                };
                let suffix = if k == 0 {
                    String::new()
                } else {
                    format!("-{k}")
                };
                let name = format!("panel-{stem}-{}{suffix}.sql", slug(title));
                let contents = format!(
                    "-- Generated from dashboards/{file}, panel \"{title}\" (`cargo run -p seam-benches --bin seam-querybench -- panels`).\n{}\n",
                    sql.trim()
                );
                out.push((name, contents));
            }
        }
    }
    Ok(out)
}

/// A named time range.
#[derive(Debug, Clone, Copy)]
pub struct NamedRange {
    /// `hour`, `day`, `all`, or `-` for queries without a time filter.
    pub name: &'static str,
    /// The range.
    pub range: Range,
}

/// The last hour, the last day and the whole range of data from `min_ns` to `max_ns`.
pub fn ranges(min_ns: i64, max_ns: i64) -> Vec<NamedRange> {
    let to = max_ns + NS;
    vec![
        NamedRange {
            name: "hour",
            range: Range {
                from_ns: (to - 3600 * NS).max(min_ns),
                to_ns: to,
            },
        },
        NamedRange {
            name: "day",
            range: Range {
                from_ns: (to - 86_400 * NS).max(min_ns),
                to_ns: to,
            },
        },
        NamedRange {
            name: "all",
            range: Range {
                from_ns: min_ns,
                to_ns: to,
            },
        },
    ]
}

/// Grafana's `$__interval` for a range drawn about 1,000 points wide (its `roundInterval`
/// steps), in milliseconds.
pub fn interval_ms(r: Range) -> i64 {
    let raw = (r.to_ns - r.from_ns) / 1_000 / 1_000_000;
    const STEPS: &[(i64, i64)] = &[
        (15, 10),
        (35, 20),
        (75, 50),
        (150, 100),
        (350, 200),
        (750, 500),
        (1_500, 1_000),
        (3_500, 2_000),
        (7_500, 5_000),
        (12_500, 10_000),
        (17_500, 15_000),
        (25_000, 20_000),
        (45_000, 30_000),
        (90_000, 60_000),
        (210_000, 120_000),
        (450_000, 300_000),
        (750_000, 600_000),
        (1_050_000, 900_000),
        (1_500_000, 1_200_000),
        (2_700_000, 1_800_000),
        (5_400_000, 3_600_000),
        (9_000_000, 7_200_000),
    ];
    STEPS
        .iter()
        .find(|(below, _)| raw < *below)
        .map_or(10_800_000, |(_, v)| *v)
}

/// Whether a query depends on the time range.
pub fn is_ranged(sql: &str) -> bool {
    sql.contains("$__time")
}

/// The SQL Grafana would send for `q` over `r` with `vars`.
///
/// # Errors
/// A macro cannot be expanded.
pub fn expand(q: &QueryFile, r: Range, vars: &[Var]) -> Result<String, String> {
    interpolate(&q.sql, r, interval_ms(r), vars).map_err(|e| format!("{}: {e}", q.name))
}

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Requests to generate.
    pub requests: usize,
    /// Requests per generated chunk (each chunk is sent before the next is generated).
    pub chunk: usize,
    /// Milliseconds between two requests' start times.
    pub gap_ms: i64,
    /// Start time of the first request, nanoseconds since the epoch.
    pub start_ns: i64,
    /// Generator seed.
    pub seed: u64,
    /// Concurrent senders.
    pub clients: usize,
}

/// What [`load`] sent.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests generated.
    pub requests: usize,
    /// Records sent (gateway records and copies, events, Mule lines, spans).
    pub records: usize,
    /// Bytes sent.
    pub bytes: usize,
    /// Wall time.
    pub seconds: f64,
}

impl LoadReport {
    /// `N requests, N records, N MB in N s (N records/s)`.
    pub fn summary(&self) -> String {
        format!(
            "{} requests, {} records, {:.1} MB in {:.1} s ({:.0} records/s)",
            self.requests,
            self.records,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.records as f64 / self.seconds.max(1e-9)
        )
    }
}

/// Generates `o.requests` requests and sends them through seam's ingest endpoints.
///
/// # Errors
/// seam refuses a body for another reason than back-pressure.
pub async fn load(
    target: &Target,
    o: &LoadOptions,
    mut progress: impl FnMut(&LoadReport),
) -> Result<LoadReport, String> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut report = LoadReport::default();
    let mut done = 0usize;
    let mut chunk_no = 0u64;
    while done < o.requests {
        let n = o.chunk.min(o.requests - done);
        let start = o.start_ns + done as i64 * o.gap_ms * 1_000_000;
        let t = seam_tests::generator::generate(chunk_seed(o.seed, chunk_no), n, start, o.gap_ms);
        let bodies = Bodies::of(&t);
        report.records += bodies.records();
        report.bytes += bodies.bytes();
        send_all(target, &client, bodies.first, o.clients).await?;
        // Late gateway records (some a second time), after everything else of the chunk.
        send_all(target, &client, bodies.late, o.clients).await?;
        report.requests += n;
        done += n;
        chunk_no += 1;
        report.seconds = started.elapsed().as_secs_f64();
        progress(&report);
    }
    Ok(report)
}

/// Waits until `requests` holds `expected` settled requests; gives the count reached.
///
/// # Errors
/// The count is not reached within `timeout`, or a query fails.
pub async fn wait_settled(
    target: &Target,
    expected: usize,
    timeout: Duration,
    mut progress: impl FnMut(i64, i64),
) -> Result<(), String> {
    let client = reqwest::Client::new();
    let until = Instant::now() + timeout;
    loop {
        let rows = target
            .sql(
                &client,
                "SELECT count(*) AS n, sum(CASE WHEN settled THEN 1 ELSE 0 END) AS settled FROM requests",
            )
            .await?;
        let n = rows.first().and_then(|r| int(&r["n"])).unwrap_or(0);
        let settled = rows.first().and_then(|r| int(&r["settled"])).unwrap_or(0);
        progress(n, settled);
        if settled >= expected as i64 {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!(
                "{settled} of {expected} requests settled ({n} in all) after {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How to run the queries.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// seam's data directory (DuckDB reads its Parquet files).
    pub data_dir: PathBuf,
    /// Query files.
    pub queries: Vec<QueryFile>,
    /// Timed runs per query and engine (after one warm-up run); the median is reported.
    pub runs: usize,
    /// The DuckDB script (`benches/duckdb_bench.py`) and the Python that runs it; `None`
    /// times seam only.
    pub duckdb: Option<(String, PathBuf)>,
    /// Only queries whose name contains this.
    pub filter: Option<String>,
}

/// One query over one range.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Query file name.
    pub query: String,
    /// Range name.
    pub range: &'static str,
    /// The SQL sent.
    pub sql: String,
    /// seam's median time in milliseconds, or its error.
    pub seam: Result<f64, String>,
    /// Rows seam gave.
    pub seam_rows: usize,
    /// DuckDB's median time in milliseconds, or its error (`None`: not run).
    pub duckdb: Option<Result<f64, String>>,
    /// Rows DuckDB gave.
    pub duckdb_rows: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The template variables the dashboards use, set as a user viewing everything would, with
/// one request and one trace picked from the data.
async fn variables(target: &Target, client: &reqwest::Client) -> Result<Vec<Var>, String> {
    let rows = target
        .sql(
            client,
            "SELECT request_id, trace_id FROM requests WHERE has_spans AND trace_id IS NOT NULL \
             ORDER BY request_id LIMIT 1",
        )
        .await?;
    let pick = |k: &str| {
        rows.first()
            .and_then(|r| r[k].as_str())
            .unwrap_or("none")
            .to_string()
    };
    let all = |name: &str| Var {
        name: name.into(),
        values: vec!["__all".into()],
        multi: true,
    };
    Ok(vec![
        Var {
            name: "request_id".into(),
            values: vec![pick("request_id")],
            multi: false,
        },
        Var {
            name: "trace_id".into(),
            values: vec![pick("trace_id")],
            multi: false,
        },
        all("api"),
        all("client_app"),
        all("gateway"),
    ])
}

/// Times every query over every range through seam, then through DuckDB.
///
/// # Errors
/// seam cannot be asked for the data's time range, or the DuckDB script fails as a whole.
pub async fn run(target: &Target, o: &RunOptions) -> Result<Vec<Measured>, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let rows = target
        .sql(
            &client,
            "SELECT CAST(min(time) AS BIGINT) AS lo, CAST(max(time) AS BIGINT) AS hi FROM requests",
        )
        .await?;
    let (Some(lo), Some(hi)) = (
        rows.first().and_then(|r| int(&r["lo"])),
        rows.first().and_then(|r| int(&r["hi"])),
    ) else {
        return Err("requests is empty: load data first".into());
    };
    let vars = variables(target, &client).await?;
    let mut out = Vec::new();
    for q in &o.queries {
        if o.filter
            .as_ref()
            .is_some_and(|f| !q.name.contains(f.as_str()))
        {
            continue;
        }
        let rs = if is_ranged(&q.sql) {
            ranges(lo, hi)
        } else {
            vec![NamedRange {
                name: "-",
                range: Range {
                    from_ns: lo,
                    to_ns: hi,
                },
            }]
        };
        for r in rs {
            let sql = expand(q, r.range, &vars)?;
            let mut times = Vec::new();
            let mut rows = 0;
            let mut err = None;
            for i in 0..=o.runs {
                let t = Instant::now();
                match target.sql(&client, &sql).await {
                    Ok(v) => {
                        rows = v.len();
                        if i > 0 {
                            times.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            out.push(Measured {
                query: q.name.clone(),
                range: r.name,
                sql,
                seam: match err {
                    Some(e) => Err(e),
                    None => Ok(median(times)),
                },
                seam_rows: rows,
                duckdb: None,
                duckdb_rows: 0,
            });
        }
    }
    if let Some((python, script)) = &o.duckdb {
        duckdb(python, script, &o.data_dir, o.runs, &mut out)?;
    }
    Ok(out)
}

/// Runs the DuckDB script over the same SQL and fills in its times and row counts.
fn duckdb(
    python: &str,
    script: &Path,
    data_dir: &Path,
    runs: usize,
    out: &mut [Measured],
) -> Result<(), String> {
    use std::io::Write;
    let views: Vec<Value> = seam_schemas::tables::views()
        .into_iter()
        .map(|v| json!({ "name": v.name, "sql": v.sql }))
        .collect();
    let queries: Vec<Value> = out
        .iter()
        .enumerate()
        .map(|(i, m)| json!({ "id": i, "sql": m.sql }))
        .collect();
    // Tables without files yet are empty Parquet files with the table's schema, so that
    // queries over them answer zero rows in DuckDB as in seam.
    let scratch = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let mut empty = serde_json::Map::new();
    for t in seam_schemas::tables::all() {
        let path = scratch.path().join(format!("{}.parquet", t.name));
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        parquet::arrow::ArrowWriter::try_new(file, t.schema.clone(), None)
            .and_then(|w| w.close().map(drop))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        empty.insert(t.name.to_string(), json!(path));
    }
    let spec = json!({
        "data_dir": data_dir, "runs": runs, "views": views, "queries": queries,
        "empty": empty,
    });
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{python} {}: {e}", script.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(spec.to_string().as_bytes())
            .map_err(|e| format!("DuckDB script input: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("DuckDB script: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "DuckDB script failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let results: Vec<Value> =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("DuckDB script output: {e}"))?;
    let by_id: BTreeMap<usize, &Value> = results
        .iter()
        .filter_map(|r| Some((r["id"].as_u64()? as usize, r)))
        .collect();
    for (i, m) in out.iter_mut().enumerate() {
        let Some(r) = by_id.get(&i) else {
            m.duckdb = Some(Err("no answer".into()));
            continue;
        };
        m.duckdb = Some(match r["error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(r["ms"].as_f64().unwrap_or(f64::NAN)),
        });
        m.duckdb_rows = r["rows"].as_u64().unwrap_or(0) as usize;
    }
    Ok(())
}

fn cell(r: &Result<f64, String>) -> String {
    match r {
        Ok(ms) => format!("{ms:.1}"),
        Err(_) => "error".into(),
    }
}

/// The results as a Markdown table (query, range, seam ms, DuckDB ms, seam/DuckDB, rows),
/// followed by the errors.
pub fn markdown(results: &[Measured]) -> String {
    let mut s = String::from(
        "| query | range | seam ms | DuckDB ms | seam / DuckDB | rows (seam / DuckDB) |\n|---|---|---:|---:|---:|---|\n",
    );
    let mut errors = Vec::new();
    for m in results {
        let duck = m.duckdb.clone();
        let ratio = match (&m.seam, &duck) {
            (Ok(a), Some(Ok(b))) if *b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let rows = match &duck {
            Some(_) if m.seam_rows != m.duckdb_rows => {
                format!("{} / {} DIFFER", m.seam_rows, m.duckdb_rows)
            }
            Some(_) => format!("{} / {}", m.seam_rows, m.duckdb_rows),
            None => m.seam_rows.to_string(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {ratio} | {rows} |\n",
            m.query,
            m.range,
            cell(&m.seam),
            duck.as_ref().map_or("-".into(), cell),
        ));
        if let Err(e) = &m.seam {
            errors.push(format!("- seam, {} ({}): {e}", m.query, m.range));
        }
        if let Some(Err(e)) = &duck {
            errors.push(format!("- DuckDB, {} ({}): {e}", m.query, m.range));
        }
    }
    if !errors.is_empty() {
        s.push_str("\nErrors:\n");
        s.push_str(&errors.join("\n"));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_grafana_steps() {
        let r = |secs: i64| Range {
            from_ns: 0,
            to_ns: secs * NS,
        };
        assert_eq!(interval_ms(r(3600)), 5_000);
        assert_eq!(interval_ms(r(86_400)), 60_000);
        assert_eq!(interval_ms(r(7 * 86_400)), 600_000);
    }

    #[test]
    fn panel_queries_match_the_dashboards() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let files = panel_files(&root.join("dashboards")).unwrap();
        assert!(files.len() >= 15);
        let dir = root.join("benches/queries");
        for (name, contents) in &files {
            let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert_eq!(
                &on_disk, contents,
                "benches/queries/{name} is not the dashboard's query: run `cargo run -p seam-benches --bin seam-querybench -- panels`"
            );
        }
        let stale: Vec<String> = read_queries(&dir)
            .unwrap()
            .into_iter()
            .map(|q| format!("{}.sql", q.name))
            .filter(|n| n.starts_with("panel-") && !files.iter().any(|(f, _)| f == n))
            .collect();
        assert!(stale.is_empty(), "panel queries without a panel: {stale:?}");
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("p95 by layer"), "p95-by-layer");
        assert_eq!(
            slug("Denials by layer / reason!"),
            "denials-by-layer-reason"
        );
    }
}
