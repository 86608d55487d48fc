//! The correlator inside `seam serve`: keeps `requests` and `request_events` up to date.
//!
//! Takes arrivals (every batch that becomes visible in `gateway_log_copies`,
//! `gateway_events`, `flow_logs` or `spans`, through the storage's arrival hook); gives, per
//! minute bucket of request start time, the requests of that minute, recomputed from the
//! stored raw records of the minute and its neighbourhood (`seam_correlate`) and written as
//! the minute's one file (replacing the previous one). A bucket is recomputed a couple of
//! seconds after records for it arrive (freshness), and once more when its last request
//! settles (horizon after its last arrival). It holds only the set of dirty minutes; the
//! records of one window at a time are read with SQL, so memory does not grow with ingest.
//! `rebuild_since` recomputes every minute with raw records since a time (after a rule
//! change, or for data older than the horizon); it is idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use seam_correlate::{Event, Flow, Gateway, GatewayEvent, Input, Request, Rules, Span, Token};
use seam_query::QueryService;
use seam_schemas::tables::requests;
use seam_store::rows::{self, Cell, Columns, Row};
use seam_store::storage::Storage;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

const MINUTE_NS: i64 = 60_000_000_000;

/// File in the data directory holding the minutes a shutdown left to correlate.
pub const PENDING_FILE: &str = "correlation_pending.json";

/// `[correlation]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// A request is settled (final) once its last record arrived this long ago. Default 15
    /// minutes: APIM diagnostic logs lag minutes behind Mule logs.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Records linked by an id must lie at most this far apart in event time, so an id
    /// reused later does not merge two requests. Default 5 minutes.
    #[serde(with = "humantime_serde")]
    pub max_link_distance: Duration,
    /// Addresses the gateway calls backends from (APIM's outbound IPs): a caller at one of
    /// them is never reported as a bypass.
    pub gateway_egress: Vec<String>,
    /// How long after an arrival a minute is recomputed (arrivals meanwhile are batched).
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// At shutdown, how long to keep recomputing minutes still waiting; the rest are
    /// written to `correlation_pending.json` in the data directory and recomputed after the
    /// next start. Default 20 s (a stop stays well inside systemd's 90 s).
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(15 * 60),
            max_link_distance: Duration::from_secs(5 * 60),
            gateway_egress: Vec::new(),
            delay: Duration::from_secs(2),
            shutdown_drain: Duration::from_secs(20),
        }
    }
}

impl CorrelationConfig {
    /// The correlator's rules.
    pub fn rules(&self) -> Rules {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Rules {
            max_link_distance_ns: ns(self.max_link_distance),
            horizon_ns: ns(self.horizon),
            gateway_egress: self.gateway_egress.clone(),
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    /// A value out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_link_distance < Duration::from_secs(1) {
            return Err("correlation.max_link_distance must be at least 1s".into());
        }
        if self.delay > Duration::from_secs(8) {
            return Err("correlation.delay must be at most 8s (requests show within 10 s)".into());
        }
        Ok(())
    }
}

/// Raw tables whose arrivals make minutes dirty.
const RAW: &[&str] = &["gateway_log_copies", "gateway_events", "flow_logs", "spans"];

/// Why a recomputation failed.
#[derive(Debug, thiserror::Error)]
pub enum CorrelateError {
    /// Reading the raw records failed.
    #[error("reading records: {0}")]
    Query(#[from] seam_query::QueryError),
    /// Writing the derived rows failed.
    #[error("writing derived rows: {0}")]
    Storage(#[from] seam_store::storage::StorageError),
    /// Building the derived batch failed.
    #[error("building derived rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// The correlator.
#[derive(Debug)]
pub struct Correlator {
    query: Arc<QueryService>,
    storage: Arc<Storage>,
    config: CorrelationConfig,
    rules: Rules,
    /// Minute (ns) → when to recompute it.
    dirty: Mutex<BTreeMap<i64, Instant>>,
    wake: Notify,
    /// Serialises recomputations (live loop and rebuilds).
    busy: tokio::sync::Mutex<()>,
    /// Where minutes left at shutdown are kept for the next start.
    pending: PathBuf,
    /// Minutes being recomputed by the live loop (a stop may cancel it mid-way).
    in_flight: Mutex<BTreeSet<i64>>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn minute_of(t: i64) -> i64 {
    t.div_euclid(MINUTE_NS) * MINUTE_NS
}

/// The minute starts from the minute of `from` to the minute of `to`, both included, with
/// checked arithmetic (no step past `i64::MAX`) and at most [`MAX_MINUTES_PER_STEP`] of them:
/// stored times lie in the event-time window, so a longer span means a bug, not data.
fn minutes_between(from: i64, to: i64) -> impl Iterator<Item = i64> {
    let first = minute_of(from);
    std::iter::successors(Some(first), |x| x.checked_add(MINUTE_NS))
        .take_while(move |x| *x <= to)
        .take(MAX_MINUTES_PER_STEP)
}

/// Most minutes one arrival or rebuild step marks (two weeks): a bound on memory whatever
/// the times and the configured link distance.
const MAX_MINUTES_PER_STEP: usize = 14 * 24 * 60;

fn ts_literal(ns: i64) -> String {
    format!("to_timestamp_nanos({ns})")
}

impl Correlator {
    /// A correlator over `storage`, reading through `query`.
    /// Minutes left over at shutdown are kept in `pending` (a JSON array of minute starts in
    /// nanoseconds).
    pub fn new(
        query: Arc<QueryService>,
        storage: Arc<Storage>,
        config: CorrelationConfig,
        pending: PathBuf,
    ) -> Arc<Self> {
        let rules = config.rules();
        Arc::new(Self {
            query,
            storage,
            config,
            rules,
            pending,
            in_flight: Mutex::new(BTreeSet::new()),
            dirty: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            busy: tokio::sync::Mutex::new(()),
        })
    }

    /// Installs the arrival hook on the storage.
    pub fn attach(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.storage.set_arrival_hook(Box::new(move |table, times| {
            if let Some(c) = me.upgrade()
                && RAW.contains(&table)
            {
                let minutes: BTreeSet<i64> = times.iter().flatten().map(minute_of).collect();
                c.arrived(minutes);
            }
        }));
    }

    /// Marks the minutes whose requests records in the given minutes can belong to: their
    /// own and those up to the link distance before.
    pub fn arrived(&self, minutes: BTreeSet<i64>) {
        let due = Instant::now() + self.config.delay;
        let back = self.rules.max_link_distance_ns;
        if let Ok(mut d) = self.dirty.lock() {
            for m in minutes {
                for x in minutes_between(m.saturating_sub(back), m) {
                    let e = d.entry(x).or_insert(due);
                    *e = (*e).min(due);
                }
            }
        }
        self.wake.notify_one();
    }

    fn schedule(&self, minute: i64, at: Instant) {
        if let Ok(mut d) = self.dirty.lock() {
            let e = d.entry(minute).or_insert(at);
            *e = (*e).min(at);
        }
    }

    /// Marks for recomputation what a restart may have left stale: unsettled requests, and
    /// records that arrived within the horizon.
    ///
    /// # Errors
    /// A query failure.
    pub async fn recover(&self) -> Result<usize, CorrelateError> {
        let since = now_ns()
            .saturating_sub(self.rules.horizon_ns)
            .saturating_sub(MINUTE_NS);
        let mut minutes = BTreeSet::new();
        let q = format!(
            "SELECT DISTINCT CAST(time AS BIGINT) AS t FROM {} WHERE NOT settled",
            requests::TABLE
        );
        for b in self.query.run_internal(&q).await? {
            minutes.extend(i64s(&b, "t").into_iter().flatten().map(minute_of));
        }
        for t in RAW {
            let q = format!(
                "SELECT DISTINCT CAST(time AS BIGINT) / {MINUTE_NS} AS m FROM {t} \
                 WHERE ingest_time >= {}",
                ts_literal(since)
            );
            for b in self.query.run_internal(&q).await? {
                self.arrived(
                    i64s(&b, "m")
                        .into_iter()
                        .flatten()
                        .map(|m| m.saturating_mul(MINUTE_NS))
                        .collect(),
                );
            }
        }
        // Minutes the last shutdown left (its drain ran out of time).
        minutes.extend(self.pending_minutes().into_iter().map(minute_of));
        let n = minutes.len();
        let now = Instant::now();
        for m in minutes {
            self.schedule(m, now);
        }
        self.wake.notify_one();
        Ok(n)
    }

    /// Recomputes due minutes until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let now = Instant::now();
            let due: Vec<i64> = match self.dirty.lock() {
                Ok(mut d) => {
                    let due: Vec<i64> = d
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(m, _)| *m)
                        .collect();
                    for m in &due {
                        d.remove(m);
                    }
                    due
                }
                Err(_) => Vec::new(),
            };
            for m in due {
                let started = Instant::now();
                if let Ok(mut f) = self.in_flight.lock() {
                    f.insert(m);
                }
                let result = self.recompute_minute(m).await;
                if let Ok(mut f) = self.in_flight.lock() {
                    f.remove(&m);
                }
                // Under heavy ingest a minute is dirty again at once: recompute it at most
                // every four times what it costs, so correlation never takes over the CPU.
                let pace = started.elapsed() * 4;
                if pace > self.config.delay
                    && let Ok(mut d) = self.dirty.lock()
                    && let Some(at) = d.get_mut(&m)
                {
                    *at = (*at).max(Instant::now() + pace);
                }
                match result {
                    Ok(Some(settle_at)) => {
                        // At most a day: an Instant past the clock's range would panic.
                        let wait = settle_at
                            .saturating_sub(now_ns())
                            .clamp(0, 86_400_000_000_000);
                        self.schedule(
                            m,
                            Instant::now()
                                + Duration::from_nanos(wait as u64)
                                + Duration::from_secs(1),
                        );
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(minute = m, error = %e, "Correlation failed; retrying in 5 s.");
                        self.schedule(m, Instant::now() + Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// At shutdown: recomputes dirty minutes for up to `shutdown_drain`, then writes the
    /// minutes left (and those that failed) to the pending file, which [`Correlator::recover`]
    /// schedules at the next start.
    pub async fn drain(&self) {
        let mut minutes: BTreeSet<i64> = match self.dirty.lock() {
            Ok(mut d) => std::mem::take(&mut *d).into_keys().collect(),
            Err(_) => BTreeSet::new(),
        };
        // Minutes whose recomputation the stop cancelled.
        if let Ok(mut f) = self.in_flight.lock() {
            minutes.append(&mut f);
        }
        let until = Instant::now() + self.config.shutdown_drain;
        let mut left = Vec::new();
        for m in minutes {
            // A recomputation cut short by the deadline writes nothing it has not published
            // whole (files appear by rename; an unlisted file is removed at the next start).
            let remaining = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.recompute_minute(m)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(minute = m, error = %e, "Correlation at shutdown failed; it runs again at the next start.");
                    left.push(m);
                }
                Err(_) => left.push(m),
            }
        }
        let path = &self.pending;
        if left.is_empty() {
            let _ = std::fs::remove_file(path);
            return;
        }
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&left)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let mut f = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)
            });
        match written {
            Ok(()) => tracing::info!(
                minutes = left.len(),
                file = %path.display(),
                "Correlation of some minutes left for the next start (shutdown_drain reached)."
            ),
            Err(e) => tracing::warn!(
                minutes = left.len(),
                error = %e,
                "Could not keep the minutes left to correlate; records that arrived within the horizon are recomputed at the next start."
            ),
        }
    }

    /// The minutes the last shutdown left to correlate (empty without a pending file).
    fn pending_minutes(&self) -> Vec<i64> {
        let path = &self.pending;
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "Unreadable correlation pending file ignored.");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    /// Recomputes every minute holding raw records with event time at or after `since_ns`.
    /// Gives the number of requests written.
    ///
    /// # Errors
    /// The first failure.
    pub async fn rebuild_since(&self, since_ns: i64) -> Result<usize, CorrelateError> {
        let mut minutes = BTreeSet::new();
        for t in RAW {
            let q = format!(
                "SELECT DISTINCT CAST(time AS BIGINT) / {MINUTE_NS} AS m FROM {t} WHERE time >= {}",
                ts_literal(since_ns)
            );
            for b in self.query.run_internal(&q).await? {
                minutes.extend(
                    i64s(&b, "m")
                        .into_iter()
                        .flatten()
                        .map(|m| m.saturating_mul(MINUTE_NS)),
                );
            }
        }
        // Minutes whose requests may start up to a link distance before their records.
        let mut all = BTreeSet::new();
        for m in minutes {
            let from = m
                .saturating_sub(self.rules.max_link_distance_ns)
                .max(since_ns);
            all.extend(minutes_between(from, m));
        }
        // Derived minutes that no longer have records are emptied too.
        let q = format!(
            "SELECT DISTINCT CAST(request_time AS BIGINT) / {MINUTE_NS} AS m FROM {} WHERE request_time >= {}",
            requests::EVENTS_TABLE,
            ts_literal(since_ns)
        );
        for b in self.query.run_internal(&q).await? {
            all.extend(
                i64s(&b, "m")
                    .into_iter()
                    .flatten()
                    .map(|m| m.saturating_mul(MINUTE_NS)),
            );
        }
        let mut written = 0;
        for m in all {
            if let Some(at) = self.recompute_minute_counted(m, &mut written).await? {
                self.schedule(
                    m,
                    Instant::now()
                        + Duration::from_nanos(
                            at.saturating_sub(now_ns()).clamp(0, 86_400_000_000_000) as u64,
                        )
                        + Duration::from_secs(1),
                );
            }
        }
        Ok(written)
    }

    async fn recompute_minute_counted(
        &self,
        minute: i64,
        written: &mut usize,
    ) -> Result<Option<i64>, CorrelateError> {
        let (n, at) = self.recompute(minute).await?;
        *written += n;
        Ok(at)
    }

    /// Recomputes one minute; gives when its unsettled requests settle.
    ///
    /// # Errors
    /// Reading or writing failed.
    pub async fn recompute_minute(&self, minute: i64) -> Result<Option<i64>, CorrelateError> {
        Ok(self.recompute(minute).await?.1)
    }

    async fn recompute(&self, minute: i64) -> Result<(usize, Option<i64>), CorrelateError> {
        let _busy = self.busy.lock().await;
        let d = self.rules.max_link_distance_ns;
        let end = minute.saturating_add(MINUTE_NS);
        let (a, b) = (minute.saturating_sub(d), end.saturating_add(d));
        let input = self.read_linked(a, b, minute, end).await?;
        let now = now_ns();
        let reqs: Vec<Request> = seam_correlate::correlate(input, &self.rules, now)
            .into_iter()
            .filter(|r| minute_of(r.time) == minute)
            .collect();
        let settle = reqs
            .iter()
            .filter(|r| !r.settled)
            .map(|r| r.ingest_time.saturating_add(self.rules.horizon_ns))
            .max();
        let (rb, eb) = batches(&reqs)?;
        self.storage
            .replace_minute(requests::TABLE, minute, rb)
            .await?;
        self.storage
            .replace_minute(requests::EVENTS_TABLE, minute, eb)
            .await?;
        Ok((reqs.len(), settle))
    }

    /// The records of the window `[a, b)` that can belong to requests starting in `[m, m2)`:
    /// every record of `[m, m2)`, then, for up to three rounds, the records of the window that
    /// share a correlation or trace id with those read so far. So memory follows the
    /// minute's own traffic and what links to it, not everything around it.
    async fn read_linked(&self, a: i64, b: i64, m: i64, m2: i64) -> Result<Input, CorrelateError> {
        let core = format!("time >= {} AND time < {}", ts_literal(m), ts_literal(m2));
        let mut input = self.read_where(&core, &core, &core).await?;
        let window = format!("time >= {} AND time < {}", ts_literal(a), ts_literal(b));
        let (mut seen_c, mut seen_t) = (BTreeSet::new(), BTreeSet::new());
        for _round in 0..3 {
            let (c, t) = ids_of(&input);
            let new_c: BTreeSet<String> = c.difference(&seen_c).cloned().collect();
            let new_t: BTreeSet<String> = t.difference(&seen_t).cloned().collect();
            if new_c.is_empty() && new_t.is_empty() {
                break;
            }
            let list = |ids: &BTreeSet<String>| {
                ids.iter()
                    .map(|i| format!("'{}'", i.replace('\'', "''")))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let (lc, lt) = (list(&new_c), list(&new_t));
            let mut any = Vec::new();
            let mut gw_any = Vec::new();
            if !new_c.is_empty() {
                any.push(format!("lower(correlation_id) IN ({lc})"));
                gw_any.push(format!("lower(correlation_id) IN ({lc})"));
                gw_any.push(format!("lower(forwarded_correlation_id) IN ({lc})"));
            }
            if !new_t.is_empty() {
                any.push(format!("lower(trace_id) IN ({lt})"));
                gw_any.push(format!("lower(trace_id) IN ({lt})"));
            }
            // Old gateway records without a correlation id pair up by path and status.
            gw_any.push("correlation_id IS NULL".into());
            let w = format!("{window} AND ({})", any.join(" OR "));
            let gw = format!("{window} AND ({})", gw_any.join(" OR "));
            let more = self.read_where(&gw, &w, &w).await?;
            merge_input(&mut input, more);
            seen_c.extend(new_c);
            seen_t.extend(new_t);
        }
        Ok(input)
    }

    /// Reads records: gateway copies matching `gw`, events and flow lines matching `w`,
    /// spans matching `sw`.
    async fn read_where(&self, gw: &str, w: &str, sw: &str) -> Result<Input, CorrelateError> {
        let tok = "token_id, token_uti, subject, token_object_id, client_app, tenant_id, \
                   token_issuer, token_audience, CAST(token_issued_at AS BIGINT) AS iat, \
                   CAST(token_expires_at AS BIGINT) AS exp, token_scopes, token_roles, token_type";
        let mut input = Input::default();
        // Gateway copies, merged per request key (the gateway_logs view, without its
        // aggregate over all time).
        let q = format!(
            "SELECT CAST(time AS BIGINT) AS t, CAST(ingest_time AS BIGINT) AS i, record_key, \
             correlation_id, trace_id, forwarded_correlation_id, api_id, operation_id, method, \
             url_path, client_ip, user_agent, subscription_id, status_code, backend_status_code, \
             total_time_ms, backend_time_ms, cache, last_error_source, last_error_reason, \
             last_error_message, apim_service, gateway, {tok} FROM gateway_log_copies WHERE {gw}"
        );
        let mut merged: BTreeMap<String, Gateway> = BTreeMap::new();
        for batch in self.query.run_internal(&q).await? {
            let c = Cols::new(&batch);
            for r in 0..batch.num_rows() {
                let g = Gateway {
                    time: c.i(r, "t").unwrap_or(0),
                    ingest: c.i(r, "i").unwrap_or(0),
                    key: c.s(r, "record_key").unwrap_or_default(),
                    correlation_id: c.s(r, "correlation_id"),
                    trace_id: c.s(r, "trace_id"),
                    forwarded_correlation_id: c.s(r, "forwarded_correlation_id"),
                    api_id: c.s(r, "api_id"),
                    operation_id: c.s(r, "operation_id"),
                    method: c.s(r, "method"),
                    url_path: c.s(r, "url_path"),
                    client_ip: c.s(r, "client_ip"),
                    user_agent: c.s(r, "user_agent"),
                    subscription_id: c.s(r, "subscription_id"),
                    status_code: c.i32(r, "status_code"),
                    backend_status_code: c.i32(r, "backend_status_code"),
                    total_ms: c.f(r, "total_time_ms"),
                    backend_ms: c.f(r, "backend_time_ms"),
                    cache: c.s(r, "cache"),
                    last_error_source: c.s(r, "last_error_source"),
                    last_error_reason: c.s(r, "last_error_reason"),
                    last_error_message: c.s(r, "last_error_message"),
                    service: c.s(r, "apim_service"),
                    gateway: c.s(r, "gateway"),
                    token: c.token(r),
                };
                match merged.get_mut(&g.key) {
                    None => {
                        merged.insert(g.key.clone(), g);
                    }
                    Some(m) => merge_gateway(m, g),
                }
            }
        }
        input.gateway = merged.into_values().collect();
        let q = format!(
            "SELECT CAST(time AS BIGINT) AS t, CAST(ingest_time AS BIGINT) AS i, record_key, \
             correlation_id, trace_id, status_code, apim_service, section, last_error_reason, \
             elapsed_ms, {tok} FROM gateway_events WHERE {w}"
        );
        for batch in self.query.run_internal(&q).await? {
            let c = Cols::new(&batch);
            for r in 0..batch.num_rows() {
                input.events.push(GatewayEvent {
                    time: c.i(r, "t").unwrap_or(0),
                    ingest: c.i(r, "i").unwrap_or(0),
                    key: c.s(r, "record_key").unwrap_or_default(),
                    correlation_id: c.s(r, "correlation_id"),
                    trace_id: c.s(r, "trace_id"),
                    status_code: c.i32(r, "status_code"),
                    service: c.s(r, "apim_service"),
                    section: c.s(r, "section"),
                    last_error_reason: c.s(r, "last_error_reason"),
                    elapsed_ms: c.f(r, "elapsed_ms"),
                    token: c.token(r),
                });
            }
        }
        let q = format!(
            "SELECT CAST(time AS BIGINT) AS t, CAST(ingest_time AS BIGINT) AS i, record_key, \
             correlation_id, trace_id, mule_app, flow, trace_point, level, elapsed_ms, \
             scope_elapsed_ms, message, error_type, remote_address, method, request_path, \
             status_code, content, is_request_traffic, {tok} FROM flow_logs WHERE {w}"
        );
        for batch in self.query.run_internal(&q).await? {
            let c = Cols::new(&batch);
            for r in 0..batch.num_rows() {
                input.flows.push(Flow {
                    time: c.i(r, "t").unwrap_or(0),
                    ingest: c.i(r, "i").unwrap_or(0),
                    key: c.s(r, "record_key").unwrap_or_default(),
                    correlation_id: c.s(r, "correlation_id"),
                    trace_id: c.s(r, "trace_id"),
                    mule_app: c.s(r, "mule_app"),
                    flow: c.s(r, "flow"),
                    trace_point: c.s(r, "trace_point"),
                    level: c.s(r, "level"),
                    elapsed_ms: c.f(r, "elapsed_ms"),
                    scope_elapsed_ms: c.f(r, "scope_elapsed_ms"),
                    message: c.s(r, "message"),
                    error_type: c.s(r, "error_type"),
                    remote_address: c.s(r, "remote_address"),
                    method: c.s(r, "method"),
                    request_path: c.s(r, "request_path"),
                    status_code: c.i32(r, "status_code"),
                    content: c.s(r, "content"),
                    is_request_traffic: c.b(r, "is_request_traffic").unwrap_or(false),
                    token: c.token(r),
                });
            }
        }
        let q = format!(
            "SELECT CAST(time AS BIGINT) AS t, CAST(end_time AS BIGINT) AS e, \
             CAST(ingest_time AS BIGINT) AS i, trace_id, span_id, parent_span_id, name, kind, \
             span_status, span_status_message, service_name, scope_name, status_code, \
             correlation_id, client_ip, method, url_path, {tok} FROM spans WHERE {sw}"
        );
        // An exporter's retry can deliver a span twice: one record per (trace, span).
        let mut seen_spans: BTreeSet<(String, String)> = BTreeSet::new();
        for batch in self.query.run_internal(&q).await? {
            let c = Cols::new(&batch);
            for r in 0..batch.num_rows() {
                let id = (
                    c.s(r, "trace_id").unwrap_or_default(),
                    c.s(r, "span_id").unwrap_or_default(),
                );
                if !seen_spans.insert(id) {
                    continue;
                }
                input.spans.push(Span {
                    time: c.i(r, "t").unwrap_or(0),
                    end: c.i(r, "e"),
                    ingest: c.i(r, "i").unwrap_or(0),
                    trace_id: c.s(r, "trace_id").unwrap_or_default(),
                    span_id: c.s(r, "span_id").unwrap_or_default(),
                    parent_span_id: c.s(r, "parent_span_id"),
                    name: c.s(r, "name").unwrap_or_default(),
                    kind: c.s(r, "kind").unwrap_or_default(),
                    span_status: c.s(r, "span_status").unwrap_or_default(),
                    status_message: c.s(r, "span_status_message"),
                    service: c.s(r, "service_name"),
                    scope: c.s(r, "scope_name"),
                    status_code: c.i32(r, "status_code"),
                    correlation_id: c.s(r, "correlation_id"),
                    client_ip: c.s(r, "client_ip"),
                    method: c.s(r, "method"),
                    url_path: c.s(r, "url_path"),
                    token: c.token(r),
                });
            }
        }
        Ok(input)
    }
}

/// The correlation ids and trace ids (lower case) of `input`'s records.
fn ids_of(input: &Input) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut c = BTreeSet::new();
    let mut t = BTreeSet::new();
    let add = |set: &mut BTreeSet<String>, v: &Option<String>| {
        if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            set.insert(v.to_ascii_lowercase());
        }
    };
    for g in &input.gateway {
        add(&mut c, &g.correlation_id);
        add(&mut c, &g.forwarded_correlation_id);
        add(&mut t, &g.trace_id);
    }
    for e in &input.events {
        add(&mut c, &e.correlation_id);
        add(&mut t, &e.trace_id);
    }
    for f in input.flows.iter().filter(|f| f.is_request_traffic) {
        add(&mut c, &f.correlation_id);
        add(&mut t, &f.trace_id);
    }
    for s in &input.spans {
        add(&mut c, &s.correlation_id);
        add(&mut t, &Some(s.trace_id.clone()));
    }
    (c, t)
}

/// Adds `more`'s records to `into`, each record once.
fn merge_input(into: &mut Input, more: Input) {
    let mut gw: BTreeMap<String, usize> = into
        .gateway
        .iter()
        .enumerate()
        .map(|(i, g)| (g.key.clone(), i))
        .collect();
    for g in more.gateway {
        match gw.get(&g.key) {
            Some(&i) => merge_gateway(&mut into.gateway[i], g),
            None => {
                gw.insert(g.key.clone(), into.gateway.len());
                into.gateway.push(g);
            }
        }
    }
    let keys: BTreeSet<String> = into.events.iter().map(|e| e.key.clone()).collect();
    into.events
        .extend(more.events.into_iter().filter(|e| !keys.contains(&e.key)));
    let keys: BTreeSet<String> = into.flows.iter().map(|f| f.key.clone()).collect();
    into.flows
        .extend(more.flows.into_iter().filter(|f| !keys.contains(&f.key)));
    let ids: BTreeSet<(String, String)> = into
        .spans
        .iter()
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();
    into.spans.extend(
        more.spans
            .into_iter()
            .filter(|s| !ids.contains(&(s.trace_id.clone(), s.span_id.clone()))),
    );
}

/// Fills `into`'s missing fields from another copy of the same gateway request.
fn merge_gateway(into: &mut Gateway, other: Gateway) {
    macro_rules! fill {
        ($($f:ident),*) => { $( if into.$f.is_none() { into.$f = other.$f; } )* };
    }
    into.time = into.time.min(other.time);
    into.ingest = into.ingest.max(other.ingest);
    fill!(
        correlation_id,
        trace_id,
        forwarded_correlation_id,
        api_id,
        operation_id,
        method,
        url_path,
        client_ip,
        user_agent,
        subscription_id,
        status_code,
        backend_status_code,
        total_ms,
        backend_ms,
        cache,
        last_error_source,
        last_error_reason,
        last_error_message,
        service,
        gateway
    );
    if into.token.token_id.is_none() && other.token.token_id.is_some() {
        into.token = other.token;
    }
}

/// Columns of a query result by name, read leniently.
struct Cols<'a> {
    batch: &'a RecordBatch,
    /// Columns already cast, by (name, type): each is cast once per batch, not per cell.
    cast: std::cell::RefCell<BTreeMap<(String, DataType), Option<ArrayRef>>>,
}

fn cast(col: &ArrayRef, t: &DataType) -> Option<ArrayRef> {
    arrow::compute::cast(col, t).ok()
}

fn i64s(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    b.column_by_name(name)
        .and_then(|c| cast(c, &DataType::Int64))
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.iter().collect())
        })
        .unwrap_or_default()
}

impl<'a> Cols<'a> {
    fn new(batch: &'a RecordBatch) -> Self {
        Self {
            batch,
            cast: Default::default(),
        }
    }

    fn col(&self, name: &str, t: &DataType) -> Option<ArrayRef> {
        self.cast
            .borrow_mut()
            .entry((name.to_string(), t.clone()))
            .or_insert_with(|| self.batch.column_by_name(name).and_then(|c| cast(c, t)))
            .clone()
    }

    fn s(&self, r: usize, name: &str) -> Option<String> {
        let c = self.col(name, &DataType::Utf8)?;
        let a = c.as_any().downcast_ref::<StringArray>()?;
        (a.is_valid(r)).then(|| a.value(r).to_string())
    }

    fn i(&self, r: usize, name: &str) -> Option<i64> {
        let c = self.col(name, &DataType::Int64)?;
        let a = c.as_any().downcast_ref::<Int64Array>()?;
        a.is_valid(r).then(|| a.value(r))
    }

    fn i32(&self, r: usize, name: &str) -> Option<i32> {
        self.i(r, name).and_then(|v| i32::try_from(v).ok())
    }

    fn f(&self, r: usize, name: &str) -> Option<f64> {
        let c = self.col(name, &DataType::Float64)?;
        let a = c.as_any().downcast_ref::<Float64Array>()?;
        a.is_valid(r).then(|| a.value(r))
    }

    fn b(&self, r: usize, name: &str) -> Option<bool> {
        let c = self.batch.column_by_name(name)?;
        let a = c.as_any().downcast_ref::<BooleanArray>()?;
        a.is_valid(r).then(|| a.value(r))
    }

    fn list(&self, r: usize, name: &str) -> Vec<String> {
        let Some(c) = self.batch.column_by_name(name) else {
            return Vec::new();
        };
        let Some(l) = c.as_any().downcast_ref::<ListArray>() else {
            return Vec::new();
        };
        if !l.is_valid(r) {
            return Vec::new();
        }
        let v = l.value(r);
        let Some(v) = cast(&v, &DataType::Utf8) else {
            return Vec::new();
        };
        v.as_any()
            .downcast_ref::<StringArray>()
            .map(|a| a.iter().flatten().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn token(&self, r: usize) -> Token {
        Token {
            token_id: self.s(r, "token_id"),
            uti: self.s(r, "token_uti"),
            subject: self.s(r, "subject"),
            object_id: self.s(r, "token_object_id"),
            client_app: self.s(r, "client_app"),
            tenant_id: self.s(r, "tenant_id"),
            issuer: self.s(r, "token_issuer"),
            audience: self.s(r, "token_audience"),
            issued_at: self.i(r, "iat"),
            expires_at: self.i(r, "exp"),
            scopes: self.list(r, "token_scopes"),
            roles: self.list(r, "token_roles"),
            token_type: self.s(r, "token_type"),
        }
    }
}

fn text(v: &Option<String>) -> Cell {
    Cell::text(v.clone())
}

fn opt_f(v: Option<f64>) -> Cell {
    v.map_or(Cell::Null, Cell::F64)
}

fn opt_i32(v: Option<i32>) -> Cell {
    v.map_or(Cell::Null, Cell::I32)
}

fn token_cells(cols: &Columns, row: &mut Row, t: &Token) {
    let list = |v: &Vec<String>| {
        if v.is_empty() {
            Cell::Null
        } else {
            Cell::List(v.clone())
        }
    };
    cols.set(row, "token_id", text(&t.token_id));
    cols.set(row, "token_uti", text(&t.uti));
    cols.set(row, "subject", text(&t.subject));
    cols.set(row, "token_object_id", text(&t.object_id));
    cols.set(row, "client_app", text(&t.client_app));
    cols.set(row, "tenant_id", text(&t.tenant_id));
    cols.set(row, "token_issuer", text(&t.issuer));
    cols.set(row, "token_audience", text(&t.audience));
    cols.set(
        row,
        "token_issued_at",
        t.issued_at.map_or(Cell::Null, Cell::Ts),
    );
    cols.set(
        row,
        "token_expires_at",
        t.expires_at.map_or(Cell::Null, Cell::Ts),
    );
    cols.set(row, "token_scopes", list(&t.scopes));
    cols.set(row, "token_roles", list(&t.roles));
    cols.set(row, "token_type", text(&t.token_type));
}

fn event_row(cols: &Columns, r: &Request, e: &Event) -> Row {
    let mut row = cols.row();
    let mut set = |n: &str, c: Cell| cols.set(&mut row, n, c);
    set("time", Cell::Ts(e.time));
    set("ingest_time", Cell::Ts(e.ingest_time));
    set("request_id", Cell::Str(r.request_id.clone()));
    set("request_time", Cell::Ts(r.time));
    set("layer", Cell::Str(e.layer.into()));
    set("source", Cell::Str(e.source.into()));
    set("service", text(&e.service));
    set("name", text(&e.name));
    set("duration_ms", opt_f(e.duration_ms));
    set("status_code", opt_i32(e.status_code));
    set("outcome", Cell::Str(e.outcome.into()));
    set("detail", text(&e.detail));
    set("trace_id", text(&e.trace_id));
    set("span_id", text(&e.span_id));
    set("record_key", text(&e.record_key));
    row
}

/// The `requests` and `request_events` batches of `reqs`.
///
/// # Errors
/// A cell that does not fit its column (a programming error).
pub fn batches(reqs: &[Request]) -> Result<(RecordBatch, RecordBatch), arrow::error::ArrowError> {
    let rc = Columns::new(requests::schema());
    let ec = Columns::new(requests::events_schema());
    let mut rrows = Vec::with_capacity(reqs.len());
    let mut erows = Vec::new();
    for r in reqs {
        let mut row = rc.row();
        {
            let mut set = |n: &str, c: Cell| rc.set(&mut row, n, c);
            set("time", Cell::Ts(r.time));
            set("ingest_time", Cell::Ts(r.ingest_time));
            set("request_id", Cell::Str(r.request_id.clone()));
            set("trace_id", text(&r.trace_id));
            set("apim_correlation_id", text(&r.apim_correlation_id));
            set("mule_correlation_id", text(&r.mule_correlation_id));
            set("api_id", text(&r.api_id));
            set("operation_id", text(&r.operation_id));
            set("method", text(&r.method));
            set("url_path", text(&r.url_path));
            set("client_ip", text(&r.client_ip));
            set("user_agent", text(&r.user_agent));
            set("subscription_id", text(&r.subscription_id));
            set("gateway", text(&r.gateway));
            set(
                "token_expired",
                r.token_expired.map_or(Cell::Null, Cell::Bool),
            );
            set("status_code", opt_i32(r.status_code));
            set("backend_status_code", opt_i32(r.backend_status_code));
            set("rejected_by", Cell::text(r.rejected_by.map(str::to_string)));
            set("error_reason", text(&r.error_reason));
            set("total_ms", opt_f(r.total_ms));
            set("gateway_ms", opt_f(r.gateway_ms));
            set("network_ms", opt_f(r.network_ms));
            set("integration_ms", opt_f(r.integration_ms));
            set("backend_ms", opt_f(r.backend_ms));
            set("cache", text(&r.cache));
            set("bypassed_gateway", Cell::Bool(r.bypassed_gateway));
            set("has_gateway", Cell::Bool(r.has_gateway));
            set("has_flow", Cell::Bool(r.has_flow));
            set("has_spans", Cell::Bool(r.has_spans));
            set("mule_app", text(&r.mule_app));
            set("flow", text(&r.flow));
            set("layers_disagree", Cell::Bool(r.layers_disagree));
            set("settled", Cell::Bool(r.settled));
            set("records", Cell::I64(r.records));
        }
        token_cells(&rc, &mut row, &r.token);
        rrows.push(row);
        erows.extend(r.events.iter().map(|e| event_row(&ec, r, e)));
    }
    Ok((rows::batch(&rc, &rrows)?, rows::batch(&ec, &erows)?))
}
