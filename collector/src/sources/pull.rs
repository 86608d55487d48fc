//! Pulled sources: what seam fetches itself (`[[sources]]`), as opposed to what is sent to
//! it. Kafka / Event Hubs ([`super::kafka`]), Azure Storage blobs ([`super::azure_blob`]) and
//! log files ([`super::file`]) each read their records and hand them here as [`Pulled`]
//! inputs, with the position the source will be at once they are stored.
//!
//! ```text
//!  source task ─ Pulled{text, positions} ─▶ SourceCtx::deliver ─▶ Collector::ingest_pulled
//!       ▲                                        │  (decode, normalise, dedupe; ONE WAL entry:
//!       └──── resumes from source_positions ◀────┘   records + source_positions rows)
//! ```
//!
//! **Exactly once.** The position rows (`source_positions`) go into the same write-ahead log
//! entry as the records they stand for, so after a crash the newest durable position and the
//! durable records always agree: a source resumes from [`SourceCtx::positions`], loaded from
//! that table at start ([`PositionStore`]). At every start each known position is written
//! again, so that retention never drops a position still in use.
//!
//! **Backpressure.** When seam refuses an input for a reason that passes (buffer full, disk
//! budget, write-ahead log queue), [`SourceCtx::deliver`] waits with a growing backoff and
//! tries the same input again: the source pauses, it neither drops nor spins. An input that
//! can never be stored (no known format) is recorded in `rejects` with the position after it.
//!
//! **Visibility.** [`SourceStatus`] per source (records, bytes, position, lag, last error) for
//! `GET /api/v1/sources`, `seam sources` and `/health`; the same figures in `/metrics`.

pub mod config;
pub mod ingest;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use seam_schemas::columns::{INGEST_TIME, TIME};
use seam_schemas::tables::source_positions as sp;
use seam_store::rows::{self, Cell, Columns};
use serde::Serialize;
use tokio::sync::watch;

use crate::Collector;
use crate::error::{Disposition, IngestError};
use crate::sources::logs::AccessOutcome;
pub use config::{PullFormat, SourceConfig};

/// Per-source metric names.
pub mod metric {
    /// Records (messages' records, lines) taken, by `source`.
    pub const RECORDS: &str = "seam_source_records_total";
    /// Bytes taken, by `source`.
    pub const BYTES: &str = "seam_source_bytes_total";
    /// Errors, by `source` and `kind` (`auth`, `network`, `read`, `format`, ...).
    pub const ERRORS: &str = "seam_source_errors_total";
    /// Times a source paused because seam refused its input for now (backpressure).
    pub const PAUSES: &str = "seam_source_pauses_total";
    /// Seconds between the newest record available and the newest taken, by `source`.
    pub const LAG_SECONDS: &str = "seam_source_lag_seconds";
    /// Messages available and not yet taken (kafka), by `source`.
    pub const LAG_RECORDS: &str = "seam_source_lag_records";
    /// Bytes available and not yet taken (files, blobs), by `source`.
    pub const LAG_BYTES: &str = "seam_source_lag_bytes";
    /// 1 when the source's last attempt worked, 0 while it is failing.
    pub const UP: &str = "seam_source_up";

    /// Describes them to the installed registry.
    pub fn describe() {
        use ::metrics::{describe_counter, describe_gauge};
        describe_counter!(RECORDS, "Records taken by a pulled source.");
        describe_counter!(BYTES, "Bytes taken by a pulled source.");
        describe_counter!(ERRORS, "Errors of a pulled source, by kind.");
        describe_counter!(
            PAUSES,
            "Times a pulled source paused because seam refused its input for now."
        );
        describe_gauge!(
            LAG_SECONDS,
            "Seconds between the newest record available to a pulled source and the newest taken."
        );
        describe_gauge!(
            LAG_RECORDS,
            "Messages available to a pulled source, not yet taken."
        );
        describe_gauge!(
            LAG_BYTES,
            "Bytes available to a pulled source, not yet taken."
        );
        describe_gauge!(
            UP,
            "1 when the pulled source's last attempt worked, else 0."
        );
    }
}

/// Where a source is in one of the things it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    /// What the position is of: `topic/partition`, the blob name, `device:inode`.
    pub key: String,
    /// The next offset to read.
    pub offset: i64,
    /// Source-specific state as JSON text.
    pub detail: Option<String>,
}

/// One read step of a source: records and where the source is after them.
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    /// The records, as text.
    pub text: String,
    /// Where they came from, for `rejects.file` and error messages (a path, a blob name,
    /// `topic/partition@offset`). Never a secret.
    pub origin: String,
    /// Line number of the text's first line in `origin` (1 when it starts it).
    pub first_line: u64,
    /// Positions after this step, one per key read (records, bytes: what each key gave).
    pub positions: Vec<(Position, u64, u64)>,
    /// The format of this text when it differs from the source's (`auto` decides per input
    /// when `None`).
    pub format: Option<PullFormat>,
}

/// Stopping: the source's task should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Loads the newest positions of a source (the binary runs SQL over `source_positions`).
#[async_trait::async_trait]
pub trait PositionStore: Send + Sync + std::fmt::Debug {
    /// Every key's newest position for `source`.
    ///
    /// # Errors
    /// The table cannot be read; the source does not start until it can.
    async fn load(&self, source: &str) -> Result<Vec<Position>, String>;
}

/// What one source is doing, for `/api/v1/sources`, `seam sources` and `/health`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusView {
    /// Name.
    pub name: String,
    /// `kafka`, `azure_blob`, `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Configured format.
    pub format: String,
    /// `starting`, `running`, `paused` (seam refused input for now), `failing`, `stopped`.
    pub state: String,
    /// Records taken since start.
    pub records: u64,
    /// Bytes taken since start.
    pub bytes: u64,
    /// Records refused since start.
    pub rejected: u64,
    /// Records recognised as already stored since start.
    pub duplicates: u64,
    /// Positions known (partitions, blobs, files).
    pub positions: usize,
    /// The most recently moved positions (at most 20), newest first.
    pub recent_positions: Vec<Position>,
    /// Seconds behind the newest record available, when known.
    pub lag_seconds: Option<f64>,
    /// Messages behind (kafka), when known.
    pub lag_records: Option<u64>,
    /// Bytes behind (files, blobs), when known.
    pub lag_bytes: Option<u64>,
    /// The last error, if the source is failing or failed since its last success.
    pub last_error: Option<String>,
    /// Its kind (`auth`, `network`, `tls`, `read`, `config`, `format`, `gap`).
    pub last_error_kind: Option<String>,
    /// When that error happened (RFC 3339).
    pub last_error_at: Option<String>,
    /// When the source last stored records (RFC 3339).
    pub last_read_at: Option<String>,
}

/// A source's live status.
#[derive(Debug)]
pub struct SourceStatus {
    view: Mutex<StatusView>,
    order: AtomicU64,
    known: Mutex<BTreeMap<String, (u64, Position)>>,
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl SourceStatus {
    fn new(cfg: &SourceConfig) -> Self {
        Self {
            view: Mutex::new(StatusView {
                name: cfg.name().to_string(),
                kind: cfg.kind().to_string(),
                format: cfg.format().label().to_string(),
                state: "starting".into(),
                ..Default::default()
            }),
            order: AtomicU64::new(0),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut StatusView) -> R) -> R {
        let mut g = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    fn moved(&self, positions: impl IntoIterator<Item = Position>) {
        let mut k = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in positions {
            let n = self.order.fetch_add(1, Ordering::Relaxed);
            k.insert(p.key.clone(), (n, p));
        }
    }

    /// A copy of the status now.
    pub fn view(&self) -> StatusView {
        let mut v = self.with(|v| v.clone());
        let k = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.positions = k.len();
        let mut recent: Vec<&(u64, Position)> = k.values().collect();
        recent.sort_by_key(|e| std::cmp::Reverse(e.0));
        v.recent_positions = recent
            .into_iter()
            .take(20)
            .map(|(_, p)| p.clone())
            .collect();
        v
    }
}

/// Strictly increasing write times for position rows, so that the newest row of a key is
/// never tied with an older one.
fn position_time() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::now_ns();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev.saturating_add(1));
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// The `source_positions` rows of `positions` for source `name` of type `kind`.
///
/// # Errors
/// The batch cannot be built.
pub fn positions_batch(
    name: &str,
    kind: &str,
    positions: &[(Position, u64, u64)],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let cols = Columns::new(sp::schema());
    let t = position_time();
    let built: Vec<_> = positions
        .iter()
        .map(|(p, records, bytes)| {
            let mut row = cols.row();
            cols.set(&mut row, TIME, Cell::Ts(t));
            cols.set(&mut row, INGEST_TIME, Cell::Ts(t));
            cols.set(&mut row, sp::SOURCE_NAME, Cell::Str(name.to_string()));
            cols.set(&mut row, sp::SOURCE_TYPE, Cell::Str(kind.to_string()));
            cols.set(&mut row, sp::KEY, Cell::Str(p.key.clone()));
            cols.set(&mut row, sp::OFFSET, Cell::I64(p.offset));
            cols.set(&mut row, sp::DETAIL, Cell::text(p.detail.clone()));
            cols.set(
                &mut row,
                sp::RECORDS,
                Cell::I64(i64::try_from(*records).unwrap_or(i64::MAX)),
            );
            cols.set(
                &mut row,
                sp::BYTES,
                Cell::I64(i64::try_from(*bytes).unwrap_or(i64::MAX)),
            );
            row
        })
        .collect();
    rows::batch(&cols, &built)
}

/// The statement that loads a source's newest positions (one bound parameter: the name).
pub const LOAD_POSITIONS_SQL: &str = "SELECT key, \"offset\", detail FROM (SELECT key, \"offset\", detail, \
     row_number() OVER (PARTITION BY key ORDER BY time DESC) AS rn FROM source_positions \
     WHERE source = $1) WHERE rn = 1 AND \"offset\" >= 0";

/// The offset of a forgotten key's last row ([`SourceCtx::forget`]).
pub const FORGOTTEN: i64 = -1;

/// What a source task gets: its configuration's common part, the collector, its status, and
/// the stop signal.
#[derive(Debug, Clone)]
pub struct SourceCtx {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    name: &'static str,
    kind: &'static str,
    format: PullFormat,
    mapping: Option<Arc<crate::mapping::Mapping>>,
    app: Option<String>,
    service: Option<String>,
    collector: Arc<Collector>,
    status: Arc<SourceStatus>,
    stop: watch::Receiver<bool>,
    initial: HashMap<String, Position>,
    shared_store: bool,
}

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The next backoff after `d`: doubled, at most 10 s.
pub fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

impl SourceCtx {
    /// The source's name.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The source's configured format.
    pub fn format(&self) -> PullFormat {
        self.inner.format
    }

    /// The positions the source had when seam started (newest durable ones), by key.
    pub fn positions(&self) -> &HashMap<String, Position> {
        &self.inner.initial
    }

    /// Whether other seam nodes share the tables (`storage.url` remote): then a Kafka
    /// partition may have been read further by another node than this one knows, and the
    /// consumer group's committed offset is the freshest hand-over position.
    pub fn shared_store(&self) -> bool {
        self.inner.shared_store
    }

    /// True once seam is stopping.
    pub fn stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// A receiver that turns true when seam stops (for `select!`).
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.clone()
    }

    /// Sleeps `d`, or less when seam stops.
    ///
    /// # Errors
    /// [`Stopped`] when seam is stopping.
    pub async fn sleep(&self, d: Duration) -> Result<(), Stopped> {
        let mut stop = self.inner.stop.clone();
        if *stop.borrow() {
            return Err(Stopped);
        }
        tokio::select! {
            _ = stop.wait_for(|v| *v) => Err(Stopped),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Records an error of `kind` (`auth`, `network`, `read`, `config`, ...): the status shows
    /// it until the next success; logged at most once per message change.
    pub fn error(&self, kind: &'static str, message: &str) {
        crate::telemetry::add(
            metric::ERRORS,
            &[("source", self.name()), ("kind", kind)],
            1,
        );
        crate::telemetry::set(metric::UP, &[("source", self.name())], 0.0);
        let changed = self.inner.status.with(|v| {
            let changed = v.last_error.as_deref() != Some(message);
            v.last_error = Some(message.to_string());
            v.last_error_kind = Some(kind.to_string());
            v.last_error_at = Some(rfc3339(crate::now_ns()));
            v.state = "failing".into();
            changed
        });
        if changed {
            tracing::warn!(
                source = self.name(),
                kind,
                error = message,
                "Pulled source error; retrying."
            );
        }
    }

    /// Marks the source healthy again (after an error).
    pub fn ok(&self) {
        crate::telemetry::set(metric::UP, &[("source", self.name())], 1.0);
        self.inner.status.with(|v| {
            if v.state != "running" {
                v.state = "running".into();
            }
            v.last_error = None;
            v.last_error_kind = None;
        });
    }

    /// Reports how far behind the source is; `None` leaves a figure unknown.
    pub fn lag(&self, seconds: Option<f64>, records: Option<u64>, bytes: Option<u64>) {
        let l = [("source", self.name())];
        if let Some(s) = seconds {
            crate::telemetry::set(metric::LAG_SECONDS, &l, s);
        }
        if let Some(r) = records {
            crate::telemetry::set(metric::LAG_RECORDS, &l, r as f64);
        }
        if let Some(b) = bytes {
            crate::telemetry::set(metric::LAG_BYTES, &l, b as f64);
        }
        self.inner.status.with(|v| {
            v.lag_seconds = seconds.or(v.lag_seconds);
            v.lag_records = records.or(v.lag_records);
            v.lag_bytes = bytes.or(v.lag_bytes);
        });
    }

    /// Stores `p`'s records and positions in one write-ahead log entry; returns once durable.
    /// While seam refuses input for a reason that passes, waits and tries again (the source
    /// pauses). An input in no known format is stored as one `rejects` row, with its
    /// positions, so that the source moves past it.
    ///
    /// # Errors
    /// [`Stopped`] when seam stops first: nothing of `p` is stored then, and the source
    /// resumes before it at the next start.
    pub async fn deliver(&self, p: Pulled) -> Result<AccessOutcome, Stopped> {
        let s = &self.inner;
        let mut backoff = BACKOFF_START;
        let bytes: u64 = p.positions.iter().map(|(_, _, b)| *b).sum();
        loop {
            if self.stopping() {
                return Err(Stopped);
            }
            let batch = positions_batch(s.name, s.kind, &p.positions)
                .map_err(|e| IngestError::Internal(e.to_string()));
            let result = match batch {
                Ok(b) => {
                    s.collector
                        .ingest_pulled(
                            &p,
                            p.format.unwrap_or(s.format),
                            s.mapping.clone(),
                            (s.app.clone(), s.service.clone()),
                            vec![(sp::TABLE, b)],
                            (s.name, s.kind),
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(out) => {
                    let taken = out.accepted + out.rejected + out.duplicates;
                    crate::telemetry::add(metric::RECORDS, &[("source", s.name)], taken);
                    crate::telemetry::add(metric::BYTES, &[("source", s.name)], bytes);
                    s.status.with(|v| {
                        v.records = v.records.saturating_add(taken);
                        v.bytes = v.bytes.saturating_add(bytes);
                        v.rejected = v.rejected.saturating_add(out.rejected);
                        v.duplicates = v.duplicates.saturating_add(out.duplicates);
                        v.last_read_at = Some(rfc3339(crate::now_ns()));
                        if v.state == "paused" || v.state == "starting" {
                            v.state = "running".into();
                        }
                        // An input refused for its format is behind the source once the
                        // next one is stored; other errors are the reader's to clear.
                        if v.last_error_kind.as_deref() == Some("format") {
                            v.last_error = None;
                            v.last_error_kind = None;
                            v.state = "running".into();
                        }
                    });
                    s.status
                        .moved(p.positions.iter().map(|(p, _, _)| p.clone()));
                    return Ok(out);
                }
                Err(IngestError::ShuttingDown) => return Err(Stopped),
                Err(e) if e.disposition() == Disposition::Retryable => {
                    crate::telemetry::add(metric::PAUSES, &[("source", s.name)], 1);
                    s.status.with(|v| v.state = "paused".into());
                    tracing::debug!(source = s.name, error = %e, "seam refused a pulled input for now; pausing.");
                    self.sleep(backoff).await?;
                    backoff = next_backoff(backoff);
                }
                Err(e) => {
                    // Never storable as it is: one `rejects` row, and move past it.
                    let reason = e.to_string();
                    self.error("format", &format!("{}: {reason}", p.origin));
                    match s.collector.reject_pulled(&p, &reason, s.name, s.kind).await {
                        Ok(()) => {
                            s.status
                                .moved(p.positions.iter().map(|(p, _, _)| p.clone()));
                            s.status.with(|v| v.rejected = v.rejected.saturating_add(1));
                            return Ok(AccessOutcome {
                                rejected: 1,
                                ..Default::default()
                            });
                        }
                        Err(IngestError::ShuttingDown) => return Err(Stopped),
                        Err(e2) => {
                            tracing::debug!(source = s.name, error = %e2, "Could not store a refused pulled input; retrying.");
                            self.sleep(backoff).await?;
                            backoff = next_backoff(backoff);
                        }
                    }
                }
            }
        }
    }

    /// Forgets `keys` (a deleted file read to its end): one row each with offset
    /// [`FORGOTTEN`], so that they are no longer loaded nor written again at the next start.
    ///
    /// # Errors
    /// [`Stopped`] when seam stops first.
    pub async fn forget(&self, keys: Vec<String>) -> Result<(), Stopped> {
        let rows: Vec<Position> = keys
            .into_iter()
            .map(|key| Position {
                key,
                offset: FORGOTTEN,
                detail: Some(r#"{"forgotten":true}"#.into()),
            })
            .collect();
        let gone: Vec<String> = rows.iter().map(|p| p.key.clone()).collect();
        self.save_positions(rows).await?;
        let mut k = self
            .inner
            .status
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in gone {
            k.remove(&key);
        }
        Ok(())
    }

    /// Stores positions alone (a finished blob, a file that went away, the rewrite at start):
    /// one write-ahead log entry. Retries like [`SourceCtx::deliver`].
    ///
    /// # Errors
    /// [`Stopped`] when seam stops first.
    pub async fn save_positions(&self, positions: Vec<Position>) -> Result<(), Stopped> {
        if positions.is_empty() {
            return Ok(());
        }
        let s = &self.inner;
        let rows: Vec<(Position, u64, u64)> = positions.into_iter().map(|p| (p, 0, 0)).collect();
        let mut backoff = BACKOFF_START;
        loop {
            if self.stopping() {
                return Err(Stopped);
            }
            let r = match positions_batch(s.name, s.kind, &rows) {
                Ok(b) => s.collector.append_rows(sp::TABLE, b).await,
                Err(e) => Err(IngestError::Internal(e.to_string())),
            };
            match r {
                Ok(()) => {
                    s.status.moved(rows.iter().map(|(p, _, _)| p.clone()));
                    return Ok(());
                }
                Err(IngestError::ShuttingDown) => return Err(Stopped),
                Err(e) => {
                    tracing::debug!(source = s.name, error = %e, "Could not store positions; retrying.");
                    self.sleep(backoff).await?;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }
}

/// The running sources.
#[derive(Debug, Default)]
pub struct Sources {
    statuses: Vec<Arc<SourceStatus>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: Option<watch::Sender<bool>>,
}

impl Sources {
    /// Each source's status now.
    pub fn views(&self) -> Vec<StatusView> {
        self.statuses.iter().map(|s| s.view()).collect()
    }

    /// A handle that reads the statuses (for the API).
    pub fn watcher(&self) -> SourcesView {
        SourcesView {
            statuses: self.statuses.clone(),
        }
    }

    /// Stops every source and waits for it (at most `grace`; then it is aborted: what it
    /// had not stored is read again at the next start).
    pub async fn stop(mut self, grace: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        for t in self.tasks.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout(grace, t).await.is_err() {
                abort.abort();
            }
        }
        for s in &self.statuses {
            s.with(|v| v.state = "stopped".into());
        }
    }
}

/// Read access to the statuses of the running sources.
#[derive(Debug, Clone, Default)]
pub struct SourcesView {
    statuses: Vec<Arc<SourceStatus>>,
}

impl SourcesView {
    /// Each source's status now.
    pub fn views(&self) -> Vec<StatusView> {
        self.statuses.iter().map(|s| s.view()).collect()
    }
}

/// Starts every configured source. Each one first loads its positions from `store` (retried
/// until the table can be read), writes them again, then runs until [`Sources::stop`].
/// `shared_store`: the tables are shared with other seam nodes (`storage.url` remote), so
/// a source's work may move between nodes ([`SourceCtx::shared_store`]).
pub fn spawn_all(
    configs: &[SourceConfig],
    collector: &Arc<Collector>,
    store: Arc<dyn PositionStore>,
    shared_store: bool,
) -> Sources {
    metric::describe();
    let (tx, rx) = watch::channel(false);
    let mut out = Sources {
        stop: Some(tx),
        ..Default::default()
    };
    for cfg in configs {
        let status = Arc::new(SourceStatus::new(cfg));
        out.statuses.push(Arc::clone(&status));
        let (app, service) = cfg.defaults();
        // Bounded: one per configured source, for the life of the process.
        let name: &'static str = Box::leak(cfg.name().to_string().into_boxed_str());
        let cfg = cfg.clone();
        let collector = Arc::clone(collector);
        let store = Arc::clone(&store);
        let stop = rx.clone();
        out.tasks.push(tokio::spawn(async move {
            let mut shared = Shared {
                name,
                kind: cfg.kind(),
                format: cfg.format(),
                mapping: cfg.mapping().and_then(|m| collector.mapping(m).ok()),
                app,
                service,
                collector,
                status,
                stop,
                initial: HashMap::new(),
                shared_store,
            };
            let mut backoff = BACKOFF_START;
            loop {
                match store.load(name).await {
                    Ok(ps) => {
                        shared.initial = ps.into_iter().map(|p| (p.key.clone(), p)).collect();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(source = name, error = %e, "Could not load the source's positions; retrying.");
                        let mut stop = shared.stop.clone();
                        tokio::select! {
                            _ = stop.wait_for(|v| *v) => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = next_backoff(backoff);
                    }
                }
            }
            shared.status.moved(shared.initial.values().cloned());
            let ctx = SourceCtx {
                inner: Arc::new(shared),
            };
            let again: Vec<Position> = ctx.positions().values().cloned().collect();
            if ctx.save_positions(again).await.is_err() {
                return;
            }
            tracing::info!(source = name, kind = cfg.kind(), positions = ctx.positions().len(), "Pulled source started.");
            let Stopped = match &cfg {
                SourceConfig::Kafka(k) => super::kafka::run(ctx.clone(), k.clone()).await,
                SourceConfig::AzureBlob(b) => super::azure_blob::run(ctx.clone(), b.clone()).await,
                SourceConfig::File(f) => super::file::run(ctx.clone(), f.clone()).await,
            };
            tracing::info!(source = name, "Pulled source stopped.");
        }));
    }
    out
}
