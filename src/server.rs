//! The all-in-one server behind `seam serve`.
//!
//! Takes a [`SeamConfig`]; gives a running [`Server`]: the collector's receivers (OTLP/gRPC
//! and the ingest HTTP listener), the storage loop (flush, compaction) and the API listener
//! (SQL over HTTP, `/health`, `/metrics`), all over one data directory. The collector's
//! [`Storage`] is handed to the query service as its `TableSource`, so rows are queryable as
//! soon as they are acknowledged.
//!
//! Shutdown order (backend before frontend): refuse new ingest requests with a retryable
//! status, let in-flight requests finish and close the receivers, flush every table to
//! Parquet and publish the manifests, then stop the API listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use seam_collector::Collector;
use seam_collector::dedupe::DedupeIndex;
use seam_collector::normalise::flow::TrafficRules;
use seam_collector::persist::Storage;
use seam_collector::telemetry::Metrics;
use seam_collector::wal::{Wal, WalError};
use seam_query::QueryService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::SeamConfig;
use crate::correlator::Correlator;

/// `POST /api/v1/correlate?since=…` parameters.
#[derive(Debug, serde::Deserialize)]
struct CorrelateParams {
    /// RFC 3339 time, or nanoseconds since the epoch.
    since: String,
}

/// Recomputes requests from `since` on (idempotent); answers how many requests it wrote.
async fn correlate(
    c: Arc<Correlator>,
    Query(p): Query<CorrelateParams>,
) -> axum::response::Response {
    let since = p
        .since
        .trim()
        .parse::<i64>()
        .ok()
        .or_else(|| chrono_like_rfc3339(&p.since));
    let Some(since) = since else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": format!("since {:?} is not an RFC 3339 time or epoch nanoseconds", p.since)})),
        )
            .into_response();
    };
    match c.rebuild_since(since).await {
        Ok(n) => axum::Json(serde_json::json!({"requests": n, "since": since})).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// Parses an RFC 3339 time to epoch nanoseconds.
pub fn chrono_like_rfc3339(s: &str) -> Option<i64> {
    seam_collector::normalise::time::parse(s, Default::default(), 0).filter(|_| s.contains('T'))
}

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be created or opened.
    #[error("cannot use data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Storage failed to open.
    #[error(transparent)]
    Storage(#[from] seam_collector::persist::StorageError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The write-ahead log could not be replayed or opened.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The query service failed to start.
    #[error(transparent)]
    Query(#[from] seam_query::QueryError),
    /// The PostgreSQL listener could not be set up.
    #[error("cannot set up the PostgreSQL listener: {0}")]
    Pg(String),
    /// The final flush failed: some acknowledged rows could not be written.
    #[error("final flush failed: {0}")]
    FinalFlush(String),
}

/// The addresses the listeners are bound to (useful with port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// OTLP/gRPC.
    pub otlp_grpc: SocketAddr,
    /// Ingest HTTP (OTLP/HTTP).
    pub ingest_http: SocketAddr,
    /// API (SQL, health, metrics).
    pub api: SocketAddr,
    /// PostgreSQL wire protocol.
    pub pg: SocketAddr,
}

/// A running seam.
#[derive(Debug)]
pub struct Server {
    addrs: BoundAddrs,
    collector: Arc<Collector>,
    wal: Arc<Wal>,
    storage: Arc<Storage>,
    query: Arc<QueryService>,
    stop_receivers: watch::Sender<bool>,
    stop_storage: watch::Sender<bool>,
    stop_api: watch::Sender<bool>,
    stop_stats: watch::Sender<bool>,
    stats_task: JoinHandle<()>,
    receivers: Vec<JoinHandle<()>>,
    storage_task: JoinHandle<()>,
    api_task: JoinHandle<()>,
    pg_task: JoinHandle<()>,
    correlator: Arc<Correlator>,
    stop_correlator: watch::Sender<bool>,
    correlator_task: JoinHandle<()>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// `datafusion-postgres` binds its listener itself: for port 0, pick a free port first (the
/// small race with another process is acceptable for tests and local runs), and check that
/// the address can be bound at all so a mistake is reported at start.
async fn free_port(addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    let l = bind("--pg-addr", addr).await?;
    l.local_addr().map_err(|source| ServerError::Bind {
        what: "--pg-addr",
        addr,
        source,
    })
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

impl Server {
    /// Opens the data directory, binds every listener and starts serving.
    ///
    /// # Errors
    /// See [`ServerError`].
    pub async fn start(cfg: SeamConfig) -> Result<Self, ServerError> {
        let dir_err = |reason: String| ServerError::DataDir {
            path: cfg.data_dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| dir_err(e.to_string()))?;
        let data_dir = std::fs::canonicalize(&cfg.data_dir).map_err(|e| dir_err(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = Arc::new(
            LocalFileSystem::new_with_prefix(&data_dir).map_err(|e| dir_err(e.to_string()))?,
        );
        let base_url = url::Url::from_directory_path(&data_dir)
            .map_err(|_| dir_err("not an absolute path".into()))?;

        let metrics = Arc::new(Metrics::default());
        let storage = Storage::open(
            store,
            Some(data_dir.clone()),
            cfg.storage.clone(),
            Arc::clone(&metrics),
        )
        .await?;
        let orphans = storage.remove_orphans().await?;
        if orphans > 0 {
            tracing::warn!(orphans, "Removed files that no manifest listed.");
        }
        let (wal, replay) = Wal::open(
            data_dir.join("wal"),
            cfg.wal.clone(),
            Arc::clone(&storage),
            Arc::clone(&metrics),
        )?;
        if replay.replayed_rows > 0 {
            tracing::info!(
                rows = replay.replayed_rows,
                entries = replay.replayed_entries,
                "Replayed acknowledged rows that had not reached Parquet."
            );
        }
        let mut tokens = cfg.tokens.build()?;
        let links = data_dir.join("token_links.jsonl");
        let loaded = tokens
            .persist_links(&links)
            .map_err(|e| dir_err(format!("{}: {e}", links.display())))?;
        tracing::info!(links = loaded, "Token links loaded.");
        if tokens.keys.is_empty() {
            tracing::warn!(
                "No fingerprint key is configured (SEAM_FINGERPRINT_KEYS or [tokens]): bearer \
                 tokens are still redacted, but identified by their claims (uti) only, and \
                 opaque tokens not at all."
            );
        } else {
            let kids: Vec<&str> = tokens.keys.iter().map(|k| k.kid.as_str()).collect();
            tracing::info!(current = kids[0], all = ?kids, "Token fingerprint keys loaded.");
        }
        let dedupe_path = data_dir.join("dedupe.idx");
        let dedupe = DedupeIndex::open(
            &dedupe_path,
            now_ns(),
            i64::try_from(cfg.access.dedupe_max_age.as_nanos()).unwrap_or(i64::MAX),
        )
        .map_err(|e| dir_err(format!("{}: {e}", dedupe_path.display())))?;
        let traffic = TrafficRules::new(&cfg.access.non_request_flows, &cfg.access.health_paths)
            .map_err(|e| dir_err(format!("[access]: {e}")))?;
        let collector = Arc::new(
            Collector::new(
                Arc::clone(&wal),
                Arc::clone(&metrics),
                cfg.limits.clone(),
                tokens,
            )
            .with_access(Arc::new(dedupe), traffic),
        );
        collector.seed_dedupe(storage.as_ref());
        let query = Arc::new(QueryService::new(
            Arc::clone(&storage) as Arc<dyn seam_schemas::source::TableSource>,
            base_url.as_str(),
            cfg.query.clone(),
        )?);

        let correlator = Correlator::new(
            Arc::clone(&query),
            Arc::clone(&storage),
            cfg.correlation.clone(),
        );
        correlator.attach();

        let grpc_l = bind("--otlp-grpc-addr", cfg.listen.otlp_grpc_addr).await?;
        let http_l = bind("--ingest-http-addr", cfg.listen.ingest_http_addr).await?;
        let api_l = bind("--api-addr", cfg.listen.api_addr).await?;
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| ServerError::Bind { what, addr, source })
        };
        let pg_addr = free_port(cfg.listen.pg_addr).await?;
        let addrs = BoundAddrs {
            otlp_grpc: local(&grpc_l, "--otlp-grpc-addr", cfg.listen.otlp_grpc_addr)?,
            ingest_http: local(&http_l, "--ingest-http-addr", cfg.listen.ingest_http_addr)?,
            api: local(&api_l, "--api-addr", cfg.listen.api_addr)?,
            pg: pg_addr,
        };

        let (stop_receivers, rx_recv) = watch::channel(false);
        let (stop_storage, rx_storage) = watch::channel(false);
        let (stop_api, rx_api) = watch::channel(false);
        let (stop_stats, rx_stats) = watch::channel(false);
        let (stop_correlator, rx_correlator) = watch::channel(false);
        let correlator_task = {
            let c = Arc::clone(&correlator);
            let stop = stopped(rx_correlator);
            tokio::spawn(async move {
                match c.recover().await {
                    Ok(n) if n > 0 => {
                        tracing::info!(minutes = n, "Recomputing unsettled requests.");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "Could not find unsettled requests."),
                }
                c.run(stop).await;
            })
        };

        let grpc = {
            let c = Arc::clone(&collector);
            let stop = stopped(rx_recv.clone());
            tokio::spawn(async move {
                if let Err(e) = seam_collector::receive::otlp_grpc::serve(c, grpc_l, stop).await {
                    tracing::error!(error = %e, "OTLP/gRPC receiver failed.");
                }
            })
        };
        let http = {
            let router = seam_collector::receive::otlp_http::router(Arc::clone(&collector)).merge(
                seam_collector::receive::access_http::router(Arc::clone(&collector)),
            );
            let stop = stopped(rx_recv);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(http_l, router)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(error = %e, "Ingest HTTP listener failed.");
                }
            })
        };
        let stats_task = {
            let c = Arc::clone(&collector);
            let mut stop = rx_stats;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|v| *v) => break,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                    }
                    if let Err(e) = c.emit_stats(false).await {
                        tracing::warn!(error = %e, "Could not write ingest_stats rows.");
                    }
                }
            })
        };
        let storage_task = {
            let s = Arc::clone(&storage);
            tokio::spawn(s.run(stopped(rx_storage)))
        };
        let api_task = {
            let m = Arc::clone(&metrics);
            let q = Arc::clone(&query);
            let metrics_route = get(move || {
                let text = format!("{}{}", m.render(), q.metrics_text());
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response()
                }
            });
            let c = Arc::clone(&correlator);
            let correlate_route =
                post(move |q: Query<CorrelateParams>| correlate(Arc::clone(&c), q));
            let router = Router::new()
                .route("/metrics", metrics_route)
                .route("/api/v1/correlate", correlate_route)
                .merge(seam_query::http::router(Arc::clone(&query)));
            let stop = stopped(rx_api);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(api_l, router)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(error = %e, "API listener failed.");
                }
            })
        };
        let pg_ctx = seam_query::pgwire::context(&query).map_err(ServerError::Pg)?;
        let mut pg_security = cfg.pg.security()?;
        pg_security.statement_timeout = cfg.query.timeout;
        if let (Some(cert), Some(key)) = (&pg_security.tls_cert, &pg_security.tls_key) {
            for p in [cert, key] {
                std::fs::metadata(p).map_err(|e| {
                    ServerError::Pg(format!("cannot read TLS file {}: {e}", p.display()))
                })?;
            }
        }
        let pg_task = tokio::spawn(async move {
            if let Err(e) = seam_query::pgwire::serve(pg_ctx, pg_addr, pg_security).await {
                tracing::error!(error = %e, addr = %pg_addr, "PostgreSQL listener failed.");
            }
        });
        // The PostgreSQL listener binds inside its task: report the server as started only
        // once it accepts connections.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(pg_addr).await.is_ok() || pg_task.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tracing::info!(
            data_dir = %data_dir.display(),
            pg = %addrs.pg,
            otlp_grpc = %addrs.otlp_grpc,
            ingest_http = %addrs.ingest_http,
            api = %addrs.api,
            "seam is serving."
        );
        Ok(Self {
            addrs,
            collector,
            wal,
            storage,
            query,
            stop_receivers,
            stop_storage,
            stop_api,
            stop_stats,
            stats_task,
            receivers: vec![grpc, http],
            correlator,
            stop_correlator,
            correlator_task,
            pg_task,
            storage_task,
            api_task,
        })
    }

    /// Where the listeners are bound.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// The query service (for in-process callers such as tests and benchmarks).
    pub fn query(&self) -> &Arc<QueryService> {
        &self.query
    }

    /// Stops in order: refuse new ingest, finish in-flight requests, flush everything
    /// acknowledged to Parquet, stop the API.
    ///
    /// # Errors
    /// [`ServerError::FinalFlush`] when rows could not be written.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.collector.close();
        let _ = self.stop_receivers.send(true);
        for t in self.receivers {
            let _ = t.await;
        }
        let _ = self.stop_stats.send(true);
        let _ = self.stats_task.await;
        if let Err(e) = self.collector.emit_stats(true).await {
            tracing::warn!(error = %e, "Could not write the last ingest_stats rows.");
        }
        self.wal.close().await;
        let _ = self.stop_correlator.send(true);
        let _ = self.correlator_task.await;
        self.correlator.drain().await;
        let _ = self.stop_storage.send(true);
        let _ = self.storage_task.await;
        let left = self.storage.buffered_rows();
        let _ = self.stop_api.send(true);
        let _ = self.api_task.await;
        self.pg_task.abort();
        let _ = self.pg_task.await;
        if left > 0 {
            return Err(ServerError::FinalFlush(format!(
                "{left} acknowledged rows could not be written to Parquet; they are safe in \
                 the write-ahead log and will be replayed at the next start"
            )));
        }
        tracing::info!("seam stopped; everything acknowledged is in Parquet.");
        Ok(())
    }
}
