//! seam's collector: OTLP, gateway and flow logs in, table batches out to the store.
//!
//! ```text
//!            ◀──────────── ack once the store's WAL append is fsynced ─────────────┐
//!  OTLP gRPC ─┐                                                                     │
//!  OTLP HTTP ─┼─▶ receive ─▶ decode ─▶ normalise ─▶ buffer ─▶ seam_store::Wal::append_all
//!  log files ─┘   (edge,     (bytes →   (records,    (Arrow     (one entry per request)
//!                  limits)    records)   redaction)   batches)
//! ```
//!
//! Takes OTLP export requests and gateway/flow log inputs from [`receive`]; gives one
//! write-ahead log entry per request, holding the batches of every table it fills
//! (`spans`, `logs`, `flow_logs`, `gateway_log_copies`, `gateway_events`, `rejects`, ...),
//! through [`seam_store::Wal`]. A request is acknowledged only once that entry is fsynced;
//! everything after (recent rows, Parquet, compaction) is the store's.

pub mod buffer;
pub mod config;
pub mod decode;
pub mod dedupe;
pub mod error;
pub mod mapping;
pub mod normalise;
pub mod receive;
pub mod sanitise;
pub mod sources;
pub mod stats;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::record_batch::RecordBatch;
use axum::response::Response;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use seam_schemas::tables;

use crate::config::LimitsConfig;
use crate::error::IngestError;
use seam_store::Wal;

/// How a request arrived, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// HTTP.
    Http,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Transport::Grpc => "otlp_grpc",
            Transport::Http => "otlp_http",
        }
    }
}

/// What happened to the records of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Records stored.
    pub accepted: u64,
    /// Records refused as invalid.
    pub rejected: u64,
    /// Why the first refused record was refused, and where.
    pub message: Option<String>,
}

/// The ingest side of seam: validates, normalises and stores what receivers hand it.
#[derive(Debug)]
pub struct Collector {
    wal: Arc<Wal>,
    limits: LimitsConfig,
    normaliser: normalise::Normaliser,
    closing: AtomicBool,
    stats: stats::IngestStats,
    dedupe: Arc<dedupe::DedupeIndex>,
    traffic: sources::mule::normalise::TrafficRules,
    mappings: Arc<mapping::Mappings>,
    access_lock: tokio::sync::Mutex<()>,
}

/// Sum and maximum of `ingest - time` in milliseconds.
fn lag(ingest: i64, times: impl Iterator<Item = i64>) -> (f64, Option<f64>) {
    let mut sum = 0.0;
    let mut max: Option<f64> = None;
    for t in times {
        let ms = ingest.saturating_sub(t) as f64 / 1e6;
        sum += ms;
        max = Some(max.map_or(ms, |m| m.max(ms)));
    }
    (sum, max)
}

/// Now, in nanoseconds since the epoch: the storage engine's clock, so the collector and the
/// write-ahead log never disagree.
pub(crate) use seam_store::now_ns;

impl Collector {
    /// A collector that makes records durable in `wal` (which hands them to storage),
    /// identifying and redacting tokens with `tokens`.
    pub fn new(wal: Arc<Wal>, limits: LimitsConfig, tokens: normalise::token::TokenConfig) -> Self {
        Self {
            wal,
            normaliser: normalise::Normaliser {
                limits: limits.attributes(),
                tokens,
                window: limits.window(),
            },
            limits,
            closing: AtomicBool::new(false),
            stats: stats::IngestStats::default(),
            dedupe: Arc::new(dedupe::DedupeIndex::in_memory()),
            traffic: sources::mule::normalise::TrafficRules::default(),
            mappings: Arc::new(mapping::Mappings::presets().unwrap_or_else(|e| {
                tracing::error!(error = %e, "A preset mapping does not compile (a bug in seam).");
                mapping::Mappings::default()
            })),
            access_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads inputs sent with a mapping name by `mappings` (the presets and the config's).
    pub fn with_mappings(mut self, mappings: mapping::Mappings) -> Self {
        self.mappings = Arc::new(mappings);
        self
    }

    /// The mapping called `name`.
    ///
    /// # Errors
    /// [`IngestError::InvalidPayload`] naming the known mappings.
    pub fn mapping(&self, name: &str) -> Result<Arc<mapping::Mapping>, IngestError> {
        self.mappings.get(name).map_err(IngestError::InvalidPayload)
    }

    /// Every mapping this collector knows.
    pub fn mappings(&self) -> &mapping::Mappings {
        &self.mappings
    }

    /// Uses `index` to recognise duplicate gateway and flow records, and `traffic` to tell
    /// request traffic from background work in flow logs.
    pub fn with_access(
        mut self,
        index: Arc<dedupe::DedupeIndex>,
        traffic: sources::mule::normalise::TrafficRules,
    ) -> Self {
        self.dedupe = index;
        self.traffic = traffic;
        self
    }

    /// The receivers' limits.
    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Refuses new requests from now on (graceful shutdown).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    fn count_bytes(&self, t: Transport, _signal: &str, n: usize) {
        telemetry::add(
            telemetry::BYTES_RECEIVED,
            &[("transport", t.label())],
            n as u64,
        );
    }

    /// Writes the `ingest_stats` rows of every minute that has ended (of every minute with
    /// `all`, at shutdown) through the write-ahead log.
    ///
    /// # Errors
    /// As [`Wal::append`]; the counts of those minutes are then lost.
    pub async fn emit_stats(&self, all: bool) -> Result<(), IngestError> {
        let batch = self
            .stats
            .take(now_ns(), all)
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        match batch {
            Some(b) => Ok(self.wal.append(tables::ingest_stats::TABLE, b).await?),
            None => Ok(()),
        }
    }

    /// Appends rows to `seam_audit` through the write-ahead log: durable once this returns.
    /// Works while ingest is closing (statements still run then), until the log closes.
    ///
    /// # Errors
    /// When the log refuses the append (full, or closed).
    pub async fn record_audit(
        &self,
        events: &[tables::seam_audit::AuditEvent],
    ) -> Result<(), IngestError> {
        if events.is_empty() {
            return Ok(());
        }
        let batch =
            tables::seam_audit::batch(events).map_err(|e| IngestError::Internal(e.to_string()))?;
        Ok(self.wal.append(tables::seam_audit::TABLE, batch).await?)
    }

    /// Counts a refused request and builds its HTTP response.
    fn refuse(&self, r: sources::otlp::receive_http::Refusal, signal: &'static str) -> Response {
        if !r.counted {
            self.stats.answered(stats::Answered {
                at_ns: now_ns(),
                source: Transport::Http.source(),
                signal,
                transport: Transport::Http.label(),
                counts: stats::Counts {
                    requests: 1,
                    refused_requests: 1,
                    ..Default::default()
                },
                refused: Some(r.error.reason()),
            });
        }
        tracing::debug!(signal, error = %r.error, "Refused an HTTP ingest request.");
        sources::otlp::receive_http::error_response(r.enc, &r.error)
    }

    fn check_count(&self, count: usize) -> Result<(), IngestError> {
        let limit = self.limits.max_records_per_request;
        if count > limit {
            return Err(IngestError::TooManyRecords { count, limit });
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), IngestError> {
        if self.closing.load(Ordering::SeqCst) {
            Err(IngestError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Stores the spans of a trace export request.
    ///
    /// # Errors
    /// Retryable when seam is overloaded or shutting down.
    pub async fn ingest_traces(
        &self,
        req: ExportTraceServiceRequest,
        t: Transport,
    ) -> Result<Outcome, IngestError> {
        self.traces_with(req, (t.source(), t.label()), Vec::new())
            .await
    }

    /// As [`Collector::ingest_traces`], counted under `label` (`ingest_stats` source,
    /// transport), with `extra` batches in the same write-ahead log entry.
    pub(crate) async fn traces_with(
        &self,
        req: ExportTraceServiceRequest,
        label: (&'static str, &'static str),
        extra: Vec<(&'static str, RecordBatch)>,
    ) -> Result<Outcome, IngestError> {
        self.check_open()?;
        let count: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.check_count(count)?;
        let ingest = now_ns();
        let n = normalise::spans(req, ingest, &self.normaliser);
        let received = n.records.len() as u64 + n.rejected;
        let lag = lag(ingest, n.records.iter().map(|r| r.time_ns));
        let out = self
            .store(
                tables::spans::TABLE,
                || buffer::spans_batch(&n.records, ingest),
                &n,
                extra,
            )
            .await;
        self.finish("spans", label, received, ingest, lag, out)
    }

    /// Stores the records of a logs export request.
    ///
    /// # Errors
    /// Retryable when seam is overloaded or shutting down.
    pub async fn ingest_logs(
        &self,
        req: ExportLogsServiceRequest,
        t: Transport,
    ) -> Result<Outcome, IngestError> {
        self.logs_with(req, (t.source(), t.label()), Vec::new())
            .await
    }

    /// As [`Collector::ingest_logs`], counted under `label`, with `extra` batches in the
    /// same write-ahead log entry.
    pub(crate) async fn logs_with(
        &self,
        req: ExportLogsServiceRequest,
        label: (&'static str, &'static str),
        mut extra: Vec<(&'static str, RecordBatch)>,
    ) -> Result<Outcome, IngestError> {
        self.check_open()?;
        let count: usize = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.check_count(count)?;
        let ingest = now_ns();
        let n = normalise::logs(req, ingest, &self.normaliser);
        let received = n.records.len() as u64 + n.rejected;
        let lag = lag(ingest, n.records.iter().map(|r| r.time_ns));
        // Log records a Mule runtime exported also go to `flow_logs`, in the same WAL entry.
        let out = match self.mule_flow_logs(&n.records, ingest) {
            Ok(flows) => {
                extra.extend(flows);
                self.store(
                    tables::logs::TABLE,
                    || buffer::logs_batch(&n.records, ingest),
                    &n,
                    extra,
                )
                .await
            }
            Err(e) => Err(e),
        };
        self.finish("logs", label, received, ingest, lag, out)
    }

    /// The `flow_logs` batch of the log records a Mule runtime exported, if any.
    fn mule_flow_logs(
        &self,
        records: &[normalise::LogRecord],
        ingest: i64,
    ) -> Result<Option<(&'static str, RecordBatch)>, IngestError> {
        let mule: Vec<&normalise::LogRecord> = records
            .iter()
            .filter(|r| sources::mule::normalise::is_mule_origin(&r.origin))
            .collect();
        if mule.is_empty() {
            return Ok(None);
        }
        let cols = seam_store::rows::Columns::new(tables::flow_logs::schema());
        let rows: Vec<seam_store::rows::Row> = mule
            .into_iter()
            .filter_map(|r| {
                sources::mule::normalise::otlp_flow_row(
                    &cols,
                    r,
                    &self.traffic,
                    &self.normaliser.tokens,
                    ingest,
                )
                .ok()
                .map(|k| k.row)
            })
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let batch = seam_store::rows::batch(&cols, &rows)
            .map_err(|e| IngestError::Internal(format!("records could not be stored: {e}")))?;
        Ok(Some((tables::flow_logs::TABLE, batch)))
    }

    async fn store<T>(
        &self,
        table: &'static str,
        build: impl FnOnce() -> Result<RecordBatch, arrow::error::ArrowError>,
        n: &normalise::Normalised<T>,
        also: Vec<(&'static str, RecordBatch)>,
    ) -> Result<Outcome, IngestError> {
        for (reason, count) in &n.unreadable_tokens {
            telemetry::add(
                telemetry::TOKENS_UNREADABLE,
                &[("table", table), ("reason", reason)],
                *count,
            );
        }
        if n.truncated > 0 {
            telemetry::add(
                telemetry::ATTRIBUTES_TRUNCATED,
                &[("table", table)],
                n.truncated,
            );
        }
        let mut parts = Vec::with_capacity(1 + also.len());
        if !n.records.is_empty() {
            let batch = build()
                .map_err(|e| IngestError::Internal(format!("records could not be stored: {e}")))?;
            parts.push((table, batch));
        }
        parts.extend(also);
        self.wal.append_all(parts).await?;
        Ok(Outcome {
            accepted: n.records.len() as u64,
            rejected: n.rejected,
            message: n.first_error.clone(),
        })
    }

    fn finish(
        &self,
        signal: &'static str,
        (source, transport): (&'static str, &'static str),
        received: u64,
        ingest: i64,
        lag: (f64, Option<f64>),
        out: Result<Outcome, IngestError>,
    ) -> Result<Outcome, IngestError> {
        let counts = match &out {
            Ok(o) => stats::Counts {
                requests: 1,
                received: received as i64,
                accepted: o.accepted as i64,
                rejected: o.rejected as i64,
                lag_sum_ms: lag.0,
                lag_max_ms: lag.1,
                ..Default::default()
            },
            Err(_) => stats::Counts {
                requests: 1,
                refused_requests: 1,
                received: received as i64,
                rejected: received as i64,
                ..Default::default()
            },
        };
        self.stats.answered(stats::Answered {
            at_ns: ingest,
            source,
            signal,
            transport,
            counts,
            refused: out.as_ref().err().map(IngestError::reason),
        });
        out
    }
}
