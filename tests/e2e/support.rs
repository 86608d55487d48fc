//! The in-process stack: `seam::server::Server` on loopback port 0 over a temporary data
//! directory, and the helpers tests use against it.

use std::time::Duration;

use seam::config::SeamConfig;
use seam::server::{BoundAddrs, Server};
use tempfile::TempDir;

pub use seam_tests::{count, sample, scalar, sql, sql_raw, wait_until};

/// How long tests wait for data to become visible.
pub const VISIBLE: Duration = Duration::from_secs(20);

/// A running seam over a temporary directory.
pub struct Stack {
    pub server: Option<Server>,
    pub dir: TempDir,
    pub addrs: BoundAddrs,
}

/// A configuration for tests: loopback port 0 everywhere, data in `dir`.
pub fn test_config(dir: &std::path::Path) -> SeamConfig {
    let mut cfg = SeamConfig {
        data_dir: dir.to_path_buf(),
        ..SeamConfig::default()
    };
    let any = "127.0.0.1:0".parse().unwrap();
    cfg.listen.otlp_grpc_addr = any;
    cfg.listen.ingest_http_addr = any;
    cfg.listen.api_addr = any;
    cfg.listen.pg_addr = any;
    cfg
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut SeamConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg);
        let server = Server::start(cfg).await.unwrap();
        let addrs = server.addrs();
        Self {
            server: Some(server),
            dir,
            addrs,
        }
    }

    pub fn api(&self) -> String {
        self.addrs.api.to_string()
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.ingest_http)
    }

    /// Stops gracefully and hands back the data directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
        self.dir
    }
}

/// Posts the OTLP/JSON sample (20 spans) to `/v1/traces` on the ingest address `http`.
pub async fn send_sample(http: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/json")
        .body(sample("otlp-traces.json"))
        .send()
        .await
        .unwrap()
}

/// Waits until `query` (a count) returns `expected`.
pub async fn wait_count(api: &str, query: &str, expected: i64) -> i64 {
    let api = api.to_string();
    let q = query.to_string();
    wait_until(&format!("{query} = {expected}"), VISIBLE, || {
        let api = api.clone();
        let q = q.clone();
        async move {
            match count(&api, &q).await {
                Ok(n) if n == expected => Some(n),
                _ => None,
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The text of `GET /metrics` of the seam whose API listens at `api`.
pub async fn metrics_text(api: &str) -> String {
    reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the metric line `name{labels}` (exactly as rendered) in a `/metrics` text.
/// In-process stacks of the test binary share the process's one registry, so a test that
/// runs beside others reads a lower bound of its own count.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `query` (a count) returns exactly `expected`, at most `within`; the panic
/// names the last count.
pub async fn wait_exact(api: &str, query: &str, expected: i64, within: Duration) {
    let start = std::time::Instant::now();
    loop {
        let got = count(api, query).await.ok();
        if got == Some(expected) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{query} gave {got:?}, expected {expected}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `query` counts at least `at_least`, at most `within`; gives the count.
pub async fn wait_at_least(api: &str, query: &str, at_least: i64, within: Duration) -> i64 {
    let start = std::time::Instant::now();
    loop {
        if let Ok(got) = count(api, query).await
            && got >= at_least
        {
            return got;
        }
        assert!(
            start.elapsed() < within,
            "{query} stayed below {at_least} for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The entry of pulled source `name` in `GET /api/v1/sources`; `None` when seam does not
/// answer or does not list it.
pub async fn source_status(api: &str, name: &str) -> Option<serde_json::Value> {
    let body: serde_json::Value = reqwest::get(format!("http://{api}/api/v1/sources"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body.as_array()?.iter().find(|s| s["name"] == name).cloned()
}

/// A loopback port free now (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The program `name` on `PATH`, in `~/.cargo/bin` or in `/usr/local/bin`.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(std::path::Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(std::path::PathBuf::from("/usr/local/bin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Posts `body` to `path` as JSON; the answer must be 200.
pub async fn post_body(http: &str, path: &str, body: String) {
    post_typed(http, path, "application/json", body).await;
}

/// Posts `body` to `path` with `content_type`; the answer must be 200.
pub async fn post_typed(http: &str, path: &str, content_type: &str, body: String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{http}{path}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {text}");
}

/// Posts `lines` to `path`, `per_body` lines a body.
pub async fn post_lines(http: &str, path: &str, lines: &[String], per_body: usize) {
    for chunk in lines.chunks(per_body) {
        post_body(http, path, chunk.join("\n")).await;
    }
}

/// Sends generated traffic through the ingest endpoints: gateway records and events, Mule
/// JSON Logger lines and log4j events (text bodies of their own), spans, the repeated Mule
/// lines, and the late gateway records last.
pub async fn send_traffic(http: &str, t: &seam_tests::generator::Traffic) {
    post_lines(http, "/ingest/apim", &t.gateway_lines, 500).await;
    post_lines(http, "/ingest/apim", &t.events, 500).await;
    post_lines(http, "/ingest/mule", &t.mule_lines, 1000).await;
    for chunk in t.mule_log4j.chunks(500) {
        post_typed(http, "/ingest/mule", "text/plain", chunk.join("\n")).await;
    }
    for body in &t.otlp {
        post_body(http, "/v1/traces", body.to_string()).await;
    }
    post_lines(http, "/ingest/mule", &t.mule_duplicates, 1000).await;
    // Late gateway records (some a second time, in another shape).
    post_body(
        http,
        "/ingest/apim",
        serde_json::json!({ "records": t.late_gateway }).to_string(),
    )
    .await;
}
