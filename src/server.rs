//! The all-in-one server behind `seam serve`.
//!
//! Takes a [`SeamConfig`]; gives a running [`Server`]: the collector's receivers (OTLP/gRPC
//! and the ingest HTTP listener), the storage loop (flush, compaction) and the API listener
//! (SQL over HTTP, request explanations, `/health`, `/metrics`), all over one data
//! directory. The collector's [`Storage`] is handed to the query service as its
//! `TableSource`, so rows are queryable as soon as they are acknowledged.
//!
//! Shutdown order (backend before frontend): refuse new ingest requests with a retryable
//! status, let in-flight requests finish and close the receivers, flush every table to
//! Parquet and publish the manifests, then stop the API listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, Query};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use seam_auth::grpc::GrpcGuard;
use seam_auth::http::Guard;
use seam_auth::tls::Side;
use seam_auth::{CredentialStore, PeerInfo, Principal, Role, SeamListener, TlsReloader};
use seam_collector::Collector;
use seam_collector::dedupe::DedupeIndex;
use seam_collector::sanitise::Sanitiser;
use seam_collector::sources::mule::normalise::TrafficRules;
use seam_query::QueryService;
use seam_query::audit::{AuditEvent, AuditScope, AuditSink};
use seam_query::pgwire::PgSecurity;
use seam_store::storage::Storage;
use seam_store::wal::{Wal, WalError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{NodeRole, SeamConfig};
use crate::records::QueryRecords;
use seam_correlate::Correlator;

/// `POST /api/v1/correlate?since=…` parameters.
#[derive(Debug, serde::Deserialize)]
struct CorrelateParams {
    /// RFC 3339 time, or nanoseconds since the epoch.
    since: String,
}

/// Recomputes requests from `since` on (idempotent); answers how many requests it wrote.
/// An admin action: audited.
async fn correlate(
    c: Arc<Correlator>,
    audit: Option<Arc<dyn AuditSink>>,
    principal: Option<Extension<Principal>>,
    peer: ConnectInfo<PeerInfo>,
    Query(p): Query<CorrelateParams>,
) -> axum::response::Response {
    let principal = principal.map_or_else(Principal::anonymous, |e| e.0);
    let scope = AuditScope::start(
        audit,
        "correlate",
        &principal,
        "http",
        Some(peer.0.addr.to_string()),
        Some(format!("since={}", p.since)),
    );
    let response = correlate_since(c, &p).await;
    let outcome = if response.status().is_success() {
        "ok"
    } else {
        "error"
    };
    scope.finish(outcome, None, None);
    response
}

/// `router` answering unknown paths (404) and methods (405) with a JSON error like every
/// other refusal, instead of an empty body.
fn json_errors(router: Router) -> Router {
    router
        .fallback(|uri: axum::http::Uri| async move {
            (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({
                    "error": format!("no endpoint at {}", uri.path()),
                    "kind": "not_found",
                })),
            )
        })
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    axum::Json(serde_json::json!({
                        "error": format!("{method} is not allowed at {}", uri.path()),
                        "kind": "method_not_allowed",
                    })),
                )
            },
        )
}

/// Holds the correlation lease of a shared store while it can: tries to take it every third
/// of its time to live; once taken, turns the correlator on and has it look for what the
/// last holder left ([`Correlator::take_over`], over `gap`); renews it; turns the
/// correlator off when it is lost. Gives the lease still held when `stop` is set.
async fn correlation_lease_loop(
    store: Arc<dyn object_store::ObjectStore>,
    storage: Arc<Storage>,
    correlator: Arc<Correlator>,
    ttl: std::time::Duration,
    gap: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<Arc<seam_store::lease::WriterLease>> {
    use seam_store::lease::{CORRELATION_LEASE_PATH, WriterLease};
    let node = storage.node().unwrap_or_default().to_string();
    let mut held: Option<Arc<WriterLease>> = None;
    let mut said_waiting = false;
    loop {
        match &held {
            None => {
                match WriterLease::try_acquire(
                    Arc::clone(&store),
                    CORRELATION_LEASE_PATH,
                    &node,
                    ttl,
                )
                .await
                {
                    Ok(Some(lease)) => {
                        let lease = Arc::new(lease);
                        storage.set_correlation_lease(Some(Arc::clone(&lease)));
                        held = Some(lease);
                        said_waiting = false;
                        tracing::info!(node = %node, "This node correlates: it holds the correlation lease.");
                        // Looked for on its own task: the renewals go on meanwhile.
                        let c = Arc::clone(&correlator);
                        tokio::spawn(async move {
                            match c.take_over(gap).await {
                                Ok(n) => tracing::info!(
                                    minutes = n,
                                    "Recomputing what the last correlating node may have left."
                                ),
                                Err(e) => {
                                    tracing::warn!(error = %e, "Could not find what the last correlating node left.")
                                }
                            }
                        });
                    }
                    Ok(None) => {
                        if !said_waiting {
                            said_waiting = true;
                            tracing::info!(
                                "Another node correlates; this one takes over if it stops."
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Could not read the correlation lease.");
                    }
                }
            }
            Some(lease) => {
                if let Err(e) = lease.renew().await
                    && lease.is_done()
                {
                    correlator.set_active(false);
                    storage.set_correlation_lease(None);
                    held = None;
                    tracing::warn!(error = %e, "This node lost the correlation lease; it no longer correlates (another node takes over).");
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|v| *v) => break,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
    }
    held
}

async fn correlate_since(c: Arc<Correlator>, p: &CorrelateParams) -> axum::response::Response {
    if !c.is_active() {
        return (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({
                "error": "this node does not correlate (its roles, or another node holds the correlation lease): send the request to the correlating node",
                "kind": "not_correlating",
            })),
        )
            .into_response();
    }
    let since = p
        .since
        .trim()
        .parse::<i64>()
        .ok()
        .or_else(|| chrono_like_rfc3339(&p.since));
    let Some(since) = since else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": format!("since {:?} is not an RFC 3339 time or epoch nanoseconds", p.since), "kind": "invalid"})),
        )
            .into_response();
    };
    match c.rebuild_since(since).await {
        Ok(n) => axum::Json(serde_json::json!({"requests": n, "since": since})).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": e.to_string(), "kind": "internal"})),
        )
            .into_response(),
    }
}

/// `GET /api/v1/requests/{id}/explain?format=…&at=…` parameters.
#[derive(Debug, serde::Deserialize)]
struct ExplainParams {
    /// `json` (the default) or `text`.
    format: Option<String>,
    /// Of several stored requests or probes with the id (a reused correlation id), the one
    /// starting closest to this time: RFC 3339 with an offset, or ns since the epoch.
    /// Without it, the earliest.
    at: Option<String>,
}

/// `at` of `GET /api/v1/requests/{id}/explain`: ns since the epoch (an integer) or an RFC 3339
/// time with its offset (`2026-12-05T10:00:00Z`, `2026-12-05T11:00:00.5+01:00`).
fn explain_at(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Ok(ns) = t.parse::<i64>() {
        return Some(ns);
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
}

/// Longest id `GET /api/v1/requests/{id}/explain` takes (characters).
const MAX_EXPLAIN_ID: usize = 512;

/// Why the correlator said what it said about one request or probe: its records on a time
/// axis, what linked them, its token and every verdict with its rule and evidence
/// (`seam_correlate::explain`), as JSON or as the text `seam explain` prints. It reveals
/// request data, so it is a read like a SQL statement: audited (`action = 'explain'`).
async fn explain(
    c: Arc<Correlator>,
    audit: Option<Arc<dyn AuditSink>>,
    principal: Option<Extension<Principal>>,
    peer: ConnectInfo<PeerInfo>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(p): Query<ExplainParams>,
) -> axum::response::Response {
    let principal = principal.map_or_else(Principal::anonymous, |e| e.0);
    let shown: String = id.chars().take(MAX_EXPLAIN_ID).collect();
    let mut statement = format!("request_id={}", shown.escape_debug());
    if let Some(at) = &p.at {
        let at: String = at.chars().take(64).collect();
        statement.push_str(&format!(" at={}", at.escape_debug()));
    }
    let scope = AuditScope::start(
        audit,
        "explain",
        &principal,
        "http",
        Some(peer.0.addr.to_string()),
        Some(statement),
    );
    let refuse = |status: StatusCode, kind: &str, msg: String| {
        (
            status,
            axum::Json(serde_json::json!({"error": msg, "kind": kind})),
        )
            .into_response()
    };
    let text = match p.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            let msg = format!("format {other:?} is not json or text");
            scope.finish("error", None, Some(msg.clone()));
            return refuse(StatusCode::BAD_REQUEST, "invalid", msg);
        }
    };
    if id.is_empty() || id.chars().count() > MAX_EXPLAIN_ID || id.chars().any(char::is_control) {
        let msg =
            format!("a request id is 1 to {MAX_EXPLAIN_ID} characters without control characters");
        scope.finish("error", None, Some(msg.clone()));
        return refuse(StatusCode::BAD_REQUEST, "invalid", msg);
    }
    let at = match p.at.as_deref() {
        None => None,
        Some(raw) => match explain_at(raw) {
            Some(ns) => Some(ns),
            None => {
                let shown: String = raw.chars().take(64).collect();
                let msg = format!(
                    "at {shown:?} is not an RFC 3339 time with its offset \
                     (2026-12-05T10:00:00Z) or an integer of nanoseconds since the epoch"
                );
                scope.finish("error", None, Some(msg.clone()));
                return refuse(StatusCode::BAD_REQUEST, "invalid", msg);
            }
        },
    };
    match c.explain(&id, at).await {
        Ok(Some(e)) => {
            let records = i64::try_from(e.records.len()).unwrap_or(i64::MAX);
            scope.finish("ok", Some(records), None);
            if text {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    seam_correlate::explain::text::render(&e, 120),
                )
                    .into_response()
            } else {
                axum::Json(e).into_response()
            }
        }
        Ok(None) => {
            scope.finish("ok", Some(0), None);
            refuse(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no request or probe with id {id}"),
            )
        }
        Err(e) => {
            scope.finish("error", None, Some(e.to_string()));
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

/// Reports each request refused for its credentials on the API listener to `seam_audit`
/// (`action = 'login'`); the statement is `method` and the path.
fn audit_refusals(audit: Arc<dyn AuditSink>, method: &'static str) -> seam_auth::http::OnRefused {
    Arc::new(
        move |r: &seam_auth::Refusal, peer: Option<&PeerInfo>, path: &str| {
            audit.record(AuditEvent {
                time_ns: now_ns(),
                action: "login".into(),
                principal: match r {
                    seam_auth::Refusal::Forbidden { name, .. } => name.clone(),
                    _ => String::new(),
                },
                auth_method: "none".into(),
                protocol: "http".into(),
                client_addr: peer.map(|p| p.addr.to_string()),
                statement: Some(format!("{method} {path}")),
                outcome: if r.is_unauthenticated() {
                    "unauthenticated".into()
                } else {
                    "refused".into()
                },
                error: Some(r.to_string()),
                ..Default::default()
            });
        },
    )
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
    Storage(#[from] seam_store::storage::StorageError),
    /// `storage.url` cannot be used.
    #[error(transparent)]
    Backend(#[from] seam_store::backend::BackendError),
    /// Another seam writes the table store.
    #[error(transparent)]
    Lease(#[from] seam_store::lease::LeaseError),
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
    /// The keys could not be loaded.
    #[error(transparent)]
    Auth(#[from] seam_auth::keys::AuthError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] seam_auth::tls::TlsError),
    /// The final flush failed: some acknowledged rows could not be written.
    #[error("final flush failed: {0}")]
    FinalFlush(String),
}

/// The address given in [`BoundAddrs`] for a listener this node's roles do not open.
pub const NOT_OPENED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// The addresses the listeners are bound to (useful with port 0); [`NOT_OPENED`] for the
/// listeners of roles this node does not have (the ingest listeners without `ingest`, the
/// PostgreSQL listener without `query`).
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
    /// The data directory's lock, held while the server lives (see [`lock_data_dir`]).
    _lock: std::fs::File,
    /// The lock of a local table store other than the data directory (`storage.url =
    /// "file://..."`).
    _store_lock: Option<std::fs::File>,
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
    audit_task: JoinHandle<()>,
    stop_audit: watch::Sender<bool>,
    reload_task: JoinHandle<()>,
    correlator: Arc<Correlator>,
    stop_correlator: watch::Sender<bool>,
    /// Stops the correlation lease's loop (a shared store, a node with the correlate role).
    stop_correlation: watch::Sender<bool>,
    /// The correlation lease's loop; gives the lease still held, released after the drain.
    correlation_task: Option<JoinHandle<Option<Arc<seam_store::lease::WriterLease>>>>,
    correlator_task: JoinHandle<()>,
    sources: seam_collector::sources::pull::Sources,
}

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = ".lock";

/// Takes an exclusive lock on `<data_dir>/.lock` (released when the file is closed, also when
/// the process dies), so that a second seam on the same directory fails to start instead of
/// interleaving its WAL and manifests with the first's.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, String> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another seam process is using it (it holds the lock on {})",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// Audit events queued for the write-ahead log (a bounded queue: `record` never blocks a
/// statement; a full queue is counted and logged as an error).
#[derive(Debug)]
struct QueuedAudit {
    tx: tokio::sync::mpsc::Sender<AuditEvent>,
    dropped: std::sync::atomic::AtomicU64,
}

impl AuditSink for QueuedAudit {
    fn record(&self, event: AuditEvent) {
        if self.tx.try_send(event).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::error!(
                    dropped = n + 1,
                    "The audit queue is full: audit rows were lost."
                );
            }
        }
    }
}

/// Writes queued audit events to `seam_audit` until `stop`, then drains the queue.
async fn write_audit(
    collector: Arc<Collector>,
    mut rx: tokio::sync::mpsc::Receiver<AuditEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::new();
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, 4096) => n == 0,
            _ = stop.wait_for(|v| *v) => true,
        };
        if stopping {
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
        }
        if !batch.is_empty() {
            if let Err(e) = collector.record_audit(&batch).await {
                tracing::error!(error = %e, rows = batch.len(), "Could not write seam_audit rows.");
            }
            batch.clear();
        }
        if stopping {
            break;
        }
    }
}

/// A local admin action's audit row (SIGHUP, a file watch).
fn local_event(
    action: &str,
    statement: String,
    outcome: &str,
    error: Option<String>,
) -> AuditEvent {
    AuditEvent {
        time_ns: now_ns(),
        action: action.into(),
        principal: "local".into(),
        roles: "admin".into(),
        auth_method: "local".into(),
        protocol: "signal".into(),
        statement: Some(statement),
        outcome: outcome.into(),
        error,
        ..Default::default()
    }
}

/// Re-reads the keys file and the TLS files on SIGHUP, and when they change on disk.
async fn reload_loop(
    credentials: Arc<CredentialStore>,
    tls: Option<Arc<TlsReloader>>,
    audit: Arc<dyn AuditSink>,
    mut hup: Option<tokio::signal::unix::Signal>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let by_signal = tokio::select! {
            _ = stop.wait_for(|v| *v) => break,
            _ = async { match &mut hup { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => false,
        };
        let cause = if by_signal { "SIGHUP" } else { "file changed" };
        if by_signal || credentials.file_changed() {
            match credentials.reload() {
                Ok(n) => {
                    tracing::info!(keys = n, cause, "Keys reloaded.");
                    audit.record(local_event(
                        "reload",
                        format!("keys ({cause}): {n} keys"),
                        "ok",
                        None,
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, cause, "Keys not reloaded; the previous keys stay in force.");
                    audit.record(local_event(
                        "reload",
                        format!("keys ({cause})"),
                        "error",
                        Some(e.to_string()),
                    ));
                }
            }
        }
        if let Some(t) = &tls
            && (by_signal || t.changed_on_disk())
        {
            match t.reload() {
                Ok(()) => {
                    tracing::info!(cause, "TLS certificate reloaded.");
                    audit.record(local_event("reload", format!("tls ({cause})"), "ok", None));
                }
                Err(e) => {
                    tracing::error!(error = %e, cause, "TLS certificate not reloaded; the previous one stays in use.");
                    audit.record(local_event(
                        "reload",
                        format!("tls ({cause})"),
                        "error",
                        Some(e.to_string()),
                    ));
                }
            }
        }
    }
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
        let lock = lock_data_dir(&data_dir).map_err(dir_err)?;
        let backend = seam_store::backend::open(
            cfg.storage.url.as_deref(),
            &data_dir,
            cfg.storage.cache_bytes,
        )?;
        // The query engine reads a local store through its own file:// handling, a remote one
        // through the same client the storage writes with.
        let (base_url, remote) = match &backend.local_root {
            Some(root) => (
                url::Url::from_directory_path(root)
                    .map_err(|_| dir_err("not an absolute path".into()))?
                    .to_string(),
                None,
            ),
            None => (
                seam_store::backend::QUERY_URL.to_string(),
                Some(Arc::clone(&backend.store)),
            ),
        };
        tracing::info!(store = backend.kind.as_str(), location = %backend.location, "Tables are stored here.");

        crate::metrics::registry();
        if cfg.storage.take_over {
            tracing::warn!(
                "storage.take_over is ignored: several nodes share a store, each under its own lease."
            );
        }
        // A local directory other than the data directory is locked like it (one seam); a
        // remote store is shared by any number of nodes, each under its own lease in it.
        let mut store_lock = None;
        let ttl = cfg.storage.lease_ttl;
        let lease = match &backend.local_root {
            Some(root) if root == &data_dir => None,
            Some(root) => {
                store_lock = Some(lock_data_dir(root).map_err(|reason| ServerError::DataDir {
                    path: root.display().to_string(),
                    reason,
                })?);
                None
            }
            None => {
                let node = seam_store::lease::node_id(&data_dir)
                    .map_err(|e| dir_err(format!("node_id: {e}")))?;
                if !seam_store::lease::valid_node_id(&node) {
                    return Err(ServerError::Storage(seam_store::StorageError::NodeId(node)));
                }
                let lease = seam_store::lease::WriterLease::acquire(
                    Arc::clone(&backend.store),
                    &seam_store::lease::node_lease_path(&node),
                    &node,
                    ttl,
                    ttl + std::time::Duration::from_secs(5),
                )
                .await?;
                tracing::info!(node = %node, "Took this node's lease in the table store.");
                Some(Arc::new(lease))
            }
        };
        if let Some(lease) = lease.clone() {
            // Renewed on its own task from now on (opening the tables may wait for a commit
            // lock a dead process held), so that a long flush or compaction never starves
            // it; it ends when the storage releases the lease at stop, or when it is lost.
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease.renew_every()).await;
                    if lease.is_done() {
                        break;
                    }
                    if let Err(e) = lease.renew().await {
                        tracing::error!(error = %e, "Could not renew this node's lease in the table store.");
                        if lease.is_done() {
                            break;
                        }
                    }
                }
            });
        }
        let opened = match &lease {
            Some(lease) => {
                Storage::open_shared(
                    Arc::clone(&backend.store),
                    cfg.storage.clone(),
                    Arc::clone(lease),
                )
                .await
            }
            None => {
                Storage::open_as(
                    Arc::clone(&backend.store),
                    backend.local_root.clone(),
                    cfg.storage.clone(),
                    None,
                )
                .await
            }
        };
        let storage = match opened {
            Ok(s) => s,
            Err(e) => {
                // The renewals end with the failed start.
                if let Some(l) = &lease {
                    l.mark_lost();
                }
                return Err(e.into());
            }
        };
        let orphans = storage.remove_orphans().await?;
        if orphans > 0 {
            tracing::info!(
                orphans,
                "Files no manifest lists are deleted after storage.delete_grace."
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
                "No fingerprint key is configured (SEAM_FINGERPRINT_KEYS or [tokens]): access \
                 tokens are still redacted, but identified by their claims (uti) only, and \
                 opaque tokens not at all."
            );
        } else {
            let kids: Vec<&str> = tokens.keys.iter().map(|k| k.kid.as_str()).collect();
            tracing::info!(current = kids[0], all = ?kids, "Token fingerprint keys loaded.");
        }
        // Every stored batch, replayed ones included, goes through the same redaction.
        let (wal, replay) = Wal::open_with(
            data_dir.join("wal"),
            cfg.wal.clone(),
            Arc::clone(&storage),
            Arc::new(Sanitiser::new(tokens.clone(), &cfg.limits)),
        )?;
        if replay.replayed_rows > 0 {
            tracing::info!(
                rows = replay.replayed_rows,
                entries = replay.replayed_entries,
                "Replayed acknowledged rows that had not reached Parquet."
            );
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
        let mappings = cfg
            .mappings()
            .map_err(|e| dir_err(format!("[mappings]: {e}")))?;
        let collector = Arc::new(
            Collector::new(Arc::clone(&wal), cfg.limits.clone(), tokens)
                .with_access(Arc::new(dedupe), traffic)
                .with_mappings(mappings),
        );
        collector.seed_dedupe(storage.as_ref());
        let query = QueryService::new(
            Arc::clone(&storage) as Arc<dyn seam_schemas::source::TableSource>,
            &base_url,
            cfg.query.clone(),
        )?;
        if let Some(store) = remote {
            query.register_store(&base_url, store)?;
        }
        let query = Arc::new(query);

        let correlator = Correlator::new(
            Arc::new(QueryRecords::new(Arc::clone(&query))),
            Arc::clone(&storage),
            cfg.correlation.clone(),
            data_dir.join(seam_correlate::PENDING_FILE),
        );
        correlator.attach();
        let correlates = cfg.has_role(NodeRole::Correlate);
        let ingests = cfg.has_role(NodeRole::Ingest);
        let queries = cfg.has_role(NodeRole::Query);
        if !correlates {
            tracing::info!(
                "This node does not correlate (roles): requests and request_events are kept by a node with the correlate role."
            );
        }
        // On a shared store the node holding the correlation lease correlates (below), and
        // another node's rows are seen after its flush and this node's next refresh.
        if !correlates || storage.shared() {
            correlator.set_active(false);
        }
        if storage.shared() {
            correlator.set_visibility_margin(
                cfg.storage.flush_interval
                    + cfg.storage.refresh_interval
                    + std::time::Duration::from_secs(5),
            );
        }
        let (stop_correlation, rx_correlation) = watch::channel(false);
        let correlation_task = if correlates && storage.shared() {
            let gap = ttl
                + cfg.storage.flush_interval
                + cfg.storage.refresh_interval
                + std::time::Duration::from_secs(60);
            Some(tokio::spawn(correlation_lease_loop(
                Arc::clone(&backend.store),
                Arc::clone(&storage),
                Arc::clone(&correlator),
                ttl,
                gap,
                rx_correlation,
            )))
        } else {
            None
        };

        let credentials = Arc::new(if cfg.auth.configured() {
            CredentialStore::load(cfg.auth.keys.clone(), cfg.auth.keys_file.clone())?
        } else {
            CredentialStore::open_access()
        });
        let tls = TlsReloader::load(&cfg.tls)?;
        let public = cfg.public_listeners();
        if !credentials.required() {
            if public.is_empty() {
                tracing::info!(
                    "No keys are configured: every listener is open to local clients (loopback only)."
                );
            } else {
                tracing::warn!(
                    listeners = %public.join(", "),
                    "INSECURE: --insecure-no-auth is set and no keys are configured: anyone who can reach these listeners may send data and read everything."
                );
            }
        } else {
            tracing::info!(keys = credentials.current().len(), "Keys loaded.");
            if tls.is_none() && !public.is_empty() {
                tracing::warn!(
                    listeners = %public.join(", "),
                    "No TLS is configured ([tls] cert, key): keys and data cross the network unencrypted."
                );
            }
        }
        let (audit_tx, audit_rx) = tokio::sync::mpsc::channel(65_536);
        let audit: Arc<dyn AuditSink> = Arc::new(QueuedAudit {
            tx: audit_tx,
            dropped: std::sync::atomic::AtomicU64::new(0),
        });
        query.set_audit_sink(Arc::clone(&audit));
        let (stop_audit, rx_audit) = watch::channel(false);
        let audit_task = tokio::spawn(write_audit(
            Arc::clone(&collector),
            audit_rx,
            rx_audit.clone(),
        ));
        // Installed before start returns, so a SIGHUP right after never kills seam.
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP cannot be handled: files are reloaded on change only.");
                None
            }
        };
        let reload_task = tokio::spawn(reload_loop(
            Arc::clone(&credentials),
            tls.clone(),
            Arc::clone(&audit),
            hup,
            rx_audit,
        ));

        // Only the listeners of this node's roles are opened.
        let grpc_l = match ingests {
            true => Some(bind("--otlp-grpc-addr", cfg.listen.otlp_grpc_addr).await?),
            false => None,
        };
        let http_l = match ingests {
            true => Some(bind("--ingest-http-addr", cfg.listen.ingest_http_addr).await?),
            false => None,
        };
        let api_l = bind("--api-addr", cfg.listen.api_addr).await?;
        let pg_l = match queries {
            true => Some(bind("--pg-addr", cfg.listen.pg_addr).await?),
            false => None,
        };
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| ServerError::Bind { what, addr, source })
        };
        let local_opt = |l: &Option<TcpListener>, what, addr| match l {
            Some(l) => local(l, what, addr),
            None => Ok(NOT_OPENED),
        };
        let addrs = BoundAddrs {
            otlp_grpc: local_opt(&grpc_l, "--otlp-grpc-addr", cfg.listen.otlp_grpc_addr)?,
            ingest_http: local_opt(&http_l, "--ingest-http-addr", cfg.listen.ingest_http_addr)?,
            api: local(&api_l, "--api-addr", cfg.listen.api_addr)?,
            pg: local_opt(&pg_l, "--pg-addr", cfg.listen.pg_addr)?,
        };
        let seam_listener = |l: TcpListener, side: Side, what, addr| {
            SeamListener::new(l, tls.clone().map(|t| (t, side)))
                .map_err(|source| ServerError::Bind { what, addr, source })
        };
        let grpc_l = grpc_l
            .map(|l| seam_listener(l, Side::Ingest, "--otlp-grpc-addr", addrs.otlp_grpc))
            .transpose()?;
        let http_l = http_l
            .map(|l| seam_listener(l, Side::Ingest, "--ingest-http-addr", addrs.ingest_http))
            .transpose()?;
        let api_l = seam_listener(api_l, Side::Http, "--api-addr", addrs.api)?;

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

        let mut receivers = Vec::new();
        if let Some(grpc_l) = grpc_l {
            let c = Arc::clone(&collector);
            let stop = stopped(rx_recv.clone());
            let guard = GrpcGuard::new(Arc::clone(&credentials), Role::Ingest);
            receivers.push(tokio::spawn(async move {
                if let Err(e) =
                    seam_collector::sources::otlp::receive_grpc::serve(c, grpc_l, guard, stop).await
                {
                    tracing::error!(error = %e, "OTLP/gRPC receiver failed.");
                }
            }));
        }
        if let Some(http_l) = http_l {
            let router = json_errors(Guard::new(Arc::clone(&credentials), Role::Ingest).protect(
                seam_collector::sources::otlp::receive_http::router(Arc::clone(&collector)).merge(
                    seam_collector::sources::logs::receive_http::router(Arc::clone(&collector)),
                ),
            ));
            let stop = stopped(rx_recv);
            receivers.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(
                    http_l,
                    router.into_make_service_with_connect_info::<PeerInfo>(),
                )
                .with_graceful_shutdown(stop)
                .await
                {
                    tracing::error!(error = %e, "Ingest HTTP listener failed.");
                }
            }));
        }
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
        if !ingests && !cfg.sources.is_empty() {
            tracing::info!(
                sources = cfg.sources.len(),
                "[[sources]] are pulled by nodes with the ingest role; this node pulls none."
            );
        }
        let sources = seam_collector::sources::pull::spawn_all(
            if ingests { &cfg.sources } else { &[] },
            &collector,
            Arc::new(crate::sources::QueryPositions::new(Arc::clone(&query))),
            storage.shared(),
        );
        let api_task = {
            let sources_view = sources.watcher();
            let sources_route = get(move || {
                let v = sources_view.clone();
                async move { crate::sources::status_response(&v) }
            });
            let health_view = sources.watcher();
            let health_route = get(move || {
                let v = health_view.clone();
                async move { crate::sources::health_response(&v) }
            });
            let metrics_route = get(move || {
                let text = crate::metrics::render();
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
            let a = Arc::clone(&audit);
            let correlate_route = post(
                move |p: Option<Extension<Principal>>,
                      peer: ConnectInfo<PeerInfo>,
                      q: Query<CorrelateParams>| {
                    correlate(Arc::clone(&c), Some(Arc::clone(&a)), p, peer, q)
                },
            );
            let c = Arc::clone(&correlator);
            let a = Arc::clone(&audit);
            let explain_route = get(
                move |p: Option<Extension<Principal>>,
                      peer: ConnectInfo<PeerInfo>,
                      id: axum::extract::Path<String>,
                      q: Query<ExplainParams>| {
                    explain(Arc::clone(&c), Some(Arc::clone(&a)), p, peer, id, q)
                },
            );
            // Requests refused for their credentials on the SQL and explain endpoints are
            // audited.
            let on_refused = audit_refusals(Arc::clone(&audit), "POST");
            let query_guard = Guard::new(Arc::clone(&credentials), Role::Query);
            let mut router = Router::new().merge(
                query_guard.clone().protect(
                    Router::new()
                        .route("/metrics", metrics_route)
                        .route("/api/v1/sources", sources_route),
                ),
            );
            // SQL and explanations only on a node with the query role.
            if queries {
                router = router
                    // Explain reveals request data: a read, behind the same role as SQL,
                    // and audited like it.
                    .merge(
                        query_guard
                            .clone()
                            .on_refused(audit_refusals(Arc::clone(&audit), "GET"))
                            .protect(
                                Router::new().route("/api/v1/requests/{id}/explain", explain_route),
                            ),
                    )
                    .merge(
                        query_guard
                            .on_refused(on_refused)
                            .protect(seam_query::http::sql_router(Arc::clone(&query))),
                    );
            }
            let router = router
                .merge(
                    Guard::new(Arc::clone(&credentials), Role::Admin)
                        .protect(Router::new().route("/api/v1/correlate", correlate_route)),
                )
                .route("/health", health_route);
            let router = json_errors(router);
            let stop = stopped(rx_api);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(
                    api_l,
                    router.into_make_service_with_connect_info::<PeerInfo>(),
                )
                .with_graceful_shutdown(stop)
                .await
                {
                    tracing::error!(error = %e, "API listener failed.");
                }
            })
        };
        let pg_ctx = seam_query::pgwire::context(&query).map_err(ServerError::Pg)?;
        let pg_security = PgSecurity {
            statement_timeout: cfg.query.timeout,
            credentials: Arc::clone(&credentials),
            tls: tls.clone(),
            audit: Some(Arc::clone(&audit)),
        };
        let pg_addr = addrs.pg;
        let pg_task = tokio::spawn(async move {
            let Some(pg_l) = pg_l else {
                return;
            };
            if let Err(e) = seam_query::pgwire::serve(pg_ctx, pg_l, pg_security).await {
                tracing::error!(error = %e, addr = %pg_addr, "PostgreSQL listener failed.");
            }
        });
        let roles: Vec<&str> = cfg.roles.iter().map(|r| r.as_str()).collect();
        tracing::info!(
            data_dir = %data_dir.display(),
            roles = %roles.join(","),
            node = storage.node().unwrap_or("-"),
            pg = %addrs.pg,
            otlp_grpc = %addrs.otlp_grpc,
            ingest_http = %addrs.ingest_http,
            api = %addrs.api,
            "seam is serving."
        );
        Ok(Self {
            _lock: lock,
            _store_lock: store_lock,
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
            receivers,
            correlator,
            stop_correlation,
            correlation_task,
            stop_correlator,
            correlator_task,
            sources,
            pg_task,
            storage_task,
            api_task,
            audit_task,
            stop_audit,
            reload_task,
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
        // Pulled sources stop first: what they had not stored is read again at the next start.
        self.sources.stop(std::time::Duration::from_secs(10)).await;
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
        // Statements end before the log closes, so that each one's audit row is written.
        let _ = self.stop_api.send(true);
        let _ = self.api_task.await;
        self.pg_task.abort();
        let _ = self.pg_task.await;
        let _ = self.stop_audit.send(true);
        let _ = self.audit_task.await;
        let _ = self.reload_task.await;
        self.wal.close().await;
        // A recomputation in progress may take minutes after a burst: it is cancelled (its
        // minute goes back to the list) and the bounded drain takes over.
        let _ = self.stop_correlator.send(true);
        self.correlator_task.abort();
        let _ = self.correlator_task.await;
        self.correlator.drain().await;
        // The correlation lease is given up once the drain no longer needs it, so that
        // another node takes over at once.
        let _ = self.stop_correlation.send(true);
        if let Some(task) = self.correlation_task
            && let Ok(Some(lease)) = task.await
        {
            self.storage.set_correlation_lease(None);
            lease.release().await;
            tracing::info!("Gave the correlation lease up.");
        }
        let _ = self.stop_storage.send(true);
        let _ = self.storage_task.await;
        let left = self.storage.buffered_rows();
        if left > 0 || !self.storage.fully_persisted() {
            return Err(ServerError::FinalFlush(if left > 0 {
                format!(
                    "{left} acknowledged rows could not be written to Parquet; they are safe \
                     in the write-ahead log and will be replayed at the next start"
                )
            } else {
                "acknowledged rows are in Parquet files whose manifest could not be written; \
                 they are safe in the write-ahead log and will be replayed at the next start"
                    .to_string()
            }));
        }
        // Everything is in Parquet: the log's segments are not needed at the next start.
        match self.wal.remove_persisted() {
            Ok(n) => tracing::debug!(segments = n, "Removed persisted WAL segments."),
            Err(e) => tracing::warn!(error = %e, "Could not remove persisted WAL segments."),
        }
        tracing::info!("seam stopped; everything acknowledged is in Parquet.");
        Ok(())
    }
}
