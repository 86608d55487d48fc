//! The real `seam` binary: `serve` on a data directory, `seam query` in every format and
//! refusing writes, graceful stop on SIGTERM and restart with all data, and pyarrow reading
//! the Parquet files with the documented types.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::*;

const SEAM: &str = env!("CARGO_BIN_EXE_seam");

pub struct Running {
    pub child: Child,
    pub api: String,
    pub http: String,
    pub grpc: String,
    /// The PostgreSQL wire listener (host:port).
    pub pg: String,
}

fn spawn(data_dir: &Path) -> Running {
    spawn_with(data_dir, "")
}

/// Starts `seam serve`, setting each listener a different way: the gRPC address in a config
/// file, the API address through `SEAM_API_ADDR`, the ingest address and the data directory
/// by flag (the flag beats the file's `data_dir`). `extra_toml` is appended to the file.
pub fn spawn_with(data_dir: &Path, extra_toml: &str) -> Running {
    spawn_custom(data_dir, extra_toml, &[], None)
}

/// Like [`spawn_with`], with extra environment variables and seam's standard error written
/// to `stderr` (appended) instead of the test's.
pub fn spawn_custom(
    data_dir: &Path,
    extra_toml: &str,
    envs: &[(&str, &str)],
    stderr: Option<&Path>,
) -> Running {
    let config = data_dir.with_extension("toml");
    let text = format!(
        "data_dir = \"/nonexistent/overridden-by-flag\"\n\
         [listen]\notlp_grpc_addr = \"127.0.0.1:0\"\n{extra_toml}"
    );
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(SEAM)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args([
            "--ingest-http-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("SEAM_API_ADDR", "127.0.0.1:0")
        .env("SEAM_LOG", "info")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(match stderr {
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .unwrap(),
            ),
            None => Stdio::inherit(),
        })
        .spawn()
        .expect("spawn seam serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    Running {
        api: field("api"),
        http: field("ingest_http"),
        grpc: field("otlp_grpc"),
        pg: field("pg"),
        child,
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed midway must not leave a server behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills seam with SIGKILL (a crash) and waits for it.
pub fn kill9(mut r: Running) {
    r.child.kill().unwrap();
    r.child.wait().unwrap();
}

pub fn sigterm_and_wait(mut r: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &r.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = r.child.wait().unwrap();
    assert!(exit.success(), "seam serve exited with {exit:?}");
}

/// Runs the `seam` binary with `args`: (success, stdout, stderr).
pub fn seam_cmd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(SEAM).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seam_query(api: &str, args: &[&str]) -> (bool, String, String) {
    let server = format!("http://{api}");
    let mut all = vec!["query", "--server", &server];
    all.extend_from_slice(args);
    seam_cmd(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_query_stop_restart_and_read_with_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = spawn(&data);
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", run.http))
        .header("content-type", "application/json")
        .body(sample("otlp-traces.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_count(&run.api, "SELECT count(*) FROM spans", 20).await;

    let (ok, out, err) = seam_query(
        &run.api,
        &["SELECT name, duration_ms FROM spans WHERE span_id = '1a2b3c4d5e6f7081'"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("| name | duration_ms |"), "{out}");
    assert!(out.contains("| GET  | 197.0       |"), "{out}");
    assert!(out.contains("(1 row)"), "{out}");
    let (ok, out, _) = seam_query(
        &run.api,
        &[
            "--format",
            "csv",
            "SELECT kind, count(*) AS n FROM spans GROUP BY kind ORDER BY kind",
        ],
    );
    assert!(ok);
    assert_eq!(out, "kind,n\nclient,8\ninternal,4\nserver,8\n");
    let (ok, out, _) = seam_query(&run.api, &["--format", "json", "SELECT 1 AS one"]);
    assert!(ok);
    assert_eq!(out.trim(), r#"[{"one":1}]"#);
    for q in [
        "COPY (SELECT 1) TO '/tmp/seam-e2e-copy'",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "DROP TABLE spans",
    ] {
        let (ok, _, err) = seam_query(&run.api, &[q]);
        assert!(!ok, "{q} must fail");
        assert!(
            err.contains("403") && err.contains("read-only"),
            "{q}: {err}"
        );
    }
    assert!(!Path::new("/tmp/seam-e2e-copy").exists());

    // Graceful stop writes everything to Parquet; a restart serves it again.
    sigterm_and_wait(run);
    let run = spawn(&data);
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM spans").await.unwrap(),
        20
    );
    assert_eq!(
        scalar(
            &run.api,
            "SELECT duration_ms FROM spans WHERE span_id = '1a2b3c4d5e6f7081'"
        )
        .await
        .unwrap()
        .as_f64(),
        Some(197.0)
    );
    // A time filter that excludes every file returns nothing; one that covers them finds all.
    assert_eq!(
        count(
            &run.api,
            "SELECT count(*) FROM spans WHERE time > now() - INTERVAL '1 day'"
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(
        count(
            &run.api,
            "SELECT count(*) FROM spans WHERE time BETWEEN '2024-11-05T09:00:00Z' AND '2024-11-05T10:00:00Z'"
        )
        .await
        .unwrap(),
        20
    );
    sigterm_and_wait(run);

    // An independent reader sees the documented types.
    let script = r#"
import sys, json, pyarrow.parquet as pq, pyarrow as pa, glob
files = sorted(glob.glob(sys.argv[1] + '/tables/spans/**/*.parquet', recursive=True))
t = pa.concat_tables([pq.read_table(f) for f in files])
s = t.schema
out = {n: str(s.field(n).type) for n in ['time','duration_ms','trace_id','status_code','attributes','events']}
out['rows'] = t.num_rows
row = [r for r in t.select(['span_id','duration_ms','attributes']).to_pylist() if r['span_id'] == '1a2b3c4d5e6f7081'][0]
out['duration'] = row['duration_ms']
out['server_port'] = dict(row['attributes'])['server.port']
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&data)
        .output()
        .expect("python3 with pyarrow (make test-deps installs it)");
    assert!(
        out.status.success(),
        "pyarrow failed (run `make test-deps`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Microseconds in the files: the unit every lake engine reads (in SQL, nanoseconds).
    assert_eq!(v["time"], "timestamp[us, tz=UTC]");
    assert_eq!(v["duration_ms"], "double");
    assert_eq!(v["trace_id"], "string");
    assert_eq!(v["status_code"], "int32");
    // A Parquet MAP of text to text with the specification's entry names (pyarrow names
    // entries only when they are not `key` and `value`).
    let map = v["attributes"].as_str().unwrap();
    assert!(map.starts_with("map<string, string"), "{map}");
    assert!(
        v["events"]
            .as_str()
            .unwrap()
            .starts_with("list<item: struct<time: timestamp[us, tz=UTC]")
    );
    assert_eq!(v["rows"], 20);
    assert_eq!(v["duration"], 197.0);
    assert_eq!(v["server_port"], "443");
}
