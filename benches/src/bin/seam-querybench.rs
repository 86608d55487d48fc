//! `seam-querybench`: loads generated traffic into a running seam, then times the audit and
//! dashboard queries through seam and through DuckDB over the same Parquet files.
//!
//! ```text
//! seam-querybench load --http ADDR --api ADDR [--requests 1000000] [--gap-ms 100]
//!                      [--chunk 20000] [--clients 4] [--seed 7] [--settle-minutes 60]
//! seam-querybench run --api ADDR --data-dir DIR [--runs 3] [--no-duckdb] [--filter TEXT]
//!                     [--python python3] [--queries benches/queries] [--json]
//! seam-querybench panels [--dashboards dashboards] [--queries benches/queries]
//! ```
//! `load` starts the traffic so that it ends an hour before now (one request every
//! `--gap-ms`), sends it through the ingest endpoints and waits until every request is
//! settled in `requests`. `run` prints a Markdown table (or JSON lines with `--json`).
//! `panels` rewrites `benches/queries/panel-*.sql` from the dashboards. The key for a seam
//! with keys is read from `SEAM_TOKEN` (ingest, query roles).
//! See `benches/querybench.sh` for the whole run against a fresh release seam.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use seam_benches::querybench::{
    LoadOptions, RunOptions, Target, load, markdown, panel_files, read_queries, run, wait_settled,
};
use seam_benches::traffic::now_ns;

fn usage() -> String {
    "usage: seam-querybench load --http ADDR --api ADDR [--requests N] [--gap-ms N] [--chunk N] [--clients N] [--seed N] [--settle-minutes N]\n       seam-querybench run --api ADDR --data-dir DIR [--runs N] [--no-duckdb] [--filter TEXT] [--python PY] [--queries DIR] [--json]\n       seam-querybench panels [--dashboards DIR] [--queries DIR]".into()
}

struct Args {
    cmd: String,
    http: String,
    api: String,
    data_dir: Option<PathBuf>,
    requests: usize,
    gap_ms: i64,
    chunk: usize,
    clients: usize,
    seed: u64,
    settle_minutes: u64,
    runs: usize,
    duckdb: bool,
    filter: Option<String>,
    python: String,
    queries: PathBuf,
    dashboards: PathBuf,
    json: bool,
}

fn root() -> PathBuf {
    // Paths default to the checkout this binary was built from, so it runs from anywhere.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().ok_or_else(usage)?;
    let mut a = Args {
        cmd,
        http: "127.0.0.1:4318".into(),
        api: "127.0.0.1:7317".into(),
        data_dir: None,
        requests: 1_000_000,
        gap_ms: 100,
        chunk: 20_000,
        clients: 4,
        seed: 7,
        settle_minutes: 60,
        runs: 3,
        duckdb: true,
        filter: None,
        python: "python3".into(),
        queries: root().join("benches/queries"),
        dashboards: root().join("dashboards"),
        json: false,
    };
    while let Some(arg) = it.next() {
        let mut v = |n: &str| it.next().ok_or(format!("{n} needs a value"));
        let num = |s: String, n: &str| s.parse::<u64>().map_err(|e| format!("{n}: {e}"));
        match arg.as_str() {
            "--http" => a.http = v("--http")?,
            "--api" => a.api = v("--api")?,
            "--data-dir" => a.data_dir = Some(v("--data-dir")?.into()),
            "--requests" => a.requests = num(v("--requests")?, "--requests")? as usize,
            "--gap-ms" => a.gap_ms = num(v("--gap-ms")?, "--gap-ms")?.max(1) as i64,
            "--chunk" => a.chunk = num(v("--chunk")?, "--chunk")?.max(1) as usize,
            "--clients" => a.clients = num(v("--clients")?, "--clients")?.max(1) as usize,
            "--seed" => a.seed = num(v("--seed")?, "--seed")?,
            "--settle-minutes" => {
                a.settle_minutes = num(v("--settle-minutes")?, "--settle-minutes")?
            }
            "--runs" => a.runs = num(v("--runs")?, "--runs")?.max(1) as usize,
            "--no-duckdb" => a.duckdb = false,
            "--filter" => a.filter = Some(v("--filter")?),
            "--python" => a.python = v("--python")?,
            "--queries" => a.queries = v("--queries")?.into(),
            "--dashboards" => a.dashboards = v("--dashboards")?.into(),
            "--json" => a.json = true,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(a)
}

async fn main_inner(a: Args) -> Result<(), String> {
    let target = Target {
        ingest: a.http.clone(),
        api: a.api.clone(),
        token: std::env::var("SEAM_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    match a.cmd.as_str() {
        "panels" => {
            let files = panel_files(&a.dashboards)?;
            // Remove panel files of panels that no longer exist.
            if let Ok(entries) = std::fs::read_dir(&a.queries) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.starts_with("panel-") && !files.iter().any(|(n, _)| *n == name) {
                        std::fs::remove_file(e.path()).map_err(|e| format!("{name}: {e}"))?;
                    }
                }
            }
            for (name, contents) in &files {
                std::fs::write(a.queries.join(name), contents)
                    .map_err(|e| format!("{name}: {e}"))?;
            }
            eprintln!("{} panel queries in {}", files.len(), a.queries.display());
            Ok(())
        }
        "load" => {
            let span_ns = a.requests as i64 * a.gap_ms * 1_000_000;
            let hour = 3_600_000_000_000i64;
            let start_ns = (now_ns() - hour - span_ns).div_euclid(hour) * hour;
            let o = LoadOptions {
                requests: a.requests,
                chunk: a.chunk,
                gap_ms: a.gap_ms,
                start_ns,
                seed: a.seed,
                clients: a.clients,
            };
            let r = load(&target, &o, |r| eprintln!("sent {}", r.summary())).await?;
            println!("loaded {} (all acknowledged)", r.summary());
            let t = std::time::Instant::now();
            wait_settled(
                &target,
                a.requests,
                Duration::from_secs(a.settle_minutes * 60),
                |n, s| eprintln!("requests: {n}, settled: {s}"),
            )
            .await?;
            println!(
                "all {} requests settled {:.1} s after the last acknowledgement",
                a.requests,
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        "run" => {
            let data_dir = a.data_dir.clone().ok_or("run needs --data-dir")?;
            let o = RunOptions {
                data_dir,
                queries: read_queries(&a.queries)?,
                runs: a.runs,
                duckdb: a
                    .duckdb
                    .then(|| (a.python.clone(), root().join("benches/duckdb_bench.py"))),
                filter: a.filter.clone(),
            };
            let results = run(&target, &o).await?;
            if a.json {
                for m in &results {
                    let ok = |r: &Result<f64, String>| match r {
                        Ok(v) => serde_json::json!(v),
                        Err(e) => serde_json::json!({ "error": e }),
                    };
                    println!(
                        "{}",
                        serde_json::json!({
                            "query": m.query, "range": m.range, "seam_ms": ok(&m.seam),
                            "seam_rows": m.seam_rows,
                            "duckdb_ms": m.duckdb.as_ref().map(ok), "duckdb_rows": m.duckdb_rows,
                        })
                    );
                }
            } else {
                print!("{}", markdown(&results));
            }
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{}", usage())),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match main_inner(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seam-querybench: {e}");
            ExitCode::FAILURE
        }
    }
}
