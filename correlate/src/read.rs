//! Read: the raw records a recomputation needs, through a [`RecordSource`].
//!
//! Takes a [`RecordSource`] (the binary wires it to the query engine) and time bounds in
//! nanoseconds; gives the correlator's [`Input`] for a minute bucket
//! ([`Reader::read_linked`]), and the minute buckets that hold records by event time or
//! arrival, for scheduling ([`Reader::unsettled_minutes`], [`Reader::minutes_arrived_since`],
//! [`Reader::minutes_with_records_since`], [`Reader::derived_minutes_since`]).
//!
//! Invariants: every statement is fixed text, built once from the table and column constants
//! of `seam_schemas` (the token identity from [`seam_schemas::token::COLUMNS`]); values
//! (times, ids) only ever travel as bound parameters ([`Param`]: `$1`, `$2`, …), never inside
//! the SQL text. Times are bound as nanoseconds and compared through `to_timestamp_nanos($n)`,
//! which the engine folds to a constant before planning the scan, so files are still pruned
//! by time; id lists are bound as one list each and tested with `array_has($n, lower(col))`,
//! which the engine rewrites to `lower(col) IN (…)` (an empty list to `false`). Columns are
//! read leniently by name: a missing or differently typed column reads as NULL.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use seam_schemas::columns;
use seam_schemas::tables::{flow_logs, gateway_events, gateway_logs, requests, spans};
use seam_schemas::token::{self, TokenColumns};

use crate::error::ReadError;
use crate::schedule::{MINUTE_NS, minute_of};
use crate::{Flow, Gateway, GatewayEvent, Input, Span};

/// A value bound to a placeholder: `$1` is the first of the list, `$2` the second, ….
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// A 64-bit integer (times are nanoseconds since the epoch, read through
    /// `to_timestamp_nanos`).
    I64(i64),
    /// A list of text values (one `List<Utf8>` value; empty is allowed).
    TextList(Vec<String>),
}

/// Where raw records come from: read-only SQL over seam's tables.
#[async_trait::async_trait]
pub trait RecordSource: Send + Sync + std::fmt::Debug {
    /// Runs one read-only statement with `$1, $2, ...` placeholders bound to `params`.
    ///
    /// # Errors
    /// The engine refused or failed the statement.
    async fn read(&self, sql: &str, params: Vec<Param>) -> Result<Vec<RecordBatch>, ReadError>;
}

/// Raw tables whose arrivals make minutes dirty.
pub const RAW: [&str; 4] = [
    gateway_logs::TABLE,
    gateway_events::TABLE,
    flow_logs::TABLE,
    spans::TABLE,
];

/// [`MINUTE_NS`] as SQL text (a test keeps the two equal).
const MINUTE_NS_SQL: &str = "60000000000";

/// The minute buckets of the rows' event time (`CAST(time AS BIGINT) / MINUTE_NS`).
const MINUTE_OF_TIME: &str = "CAST(time AS BIGINT) / ";

/// A minute bucket's own records: `$1` ≤ time < `$2`.
const CORE: &str = "time >= to_timestamp_nanos($1) AND time < to_timestamp_nanos($2)";

/// Records of the window `$1` ≤ time < `$2` sharing a correlation id (`$3`) or a trace id
/// (`$4`) with those read so far.
const LINKED: &str = "time >= to_timestamp_nanos($1) AND time < to_timestamp_nanos($2) \
     AND (array_has($3, lower(correlation_id)) OR array_has($4, lower(trace_id)))";

/// [`LINKED`] for gateway copies: the forwarded correlation id links too, and old gateway
/// records without a correlation id pair up by path and status, so they are all read.
const GATEWAY_LINKED: &str = "time >= to_timestamp_nanos($1) AND time < to_timestamp_nanos($2) \
     AND (array_has($3, lower(correlation_id)) OR array_has($3, lower(forwarded_correlation_id)) \
     OR array_has($4, lower(trace_id)) OR correlation_id IS NULL)";

/// Columns read from `gateway_log_copies` (before the token identity). The copies come in
/// [`gateway_logs::MERGE_ORDER`] (`ORDER BY`), the view's merge order, for [`merge_gateway`].
const GATEWAY_COLUMNS: &str = "CAST(time AS BIGINT) AS t, CAST(ingest_time AS BIGINT) AS i, \
     record_key, correlation_id, trace_id, forwarded_correlation_id, api_id, operation_id, \
     method, url_path, client_ip, user_agent, subscription_id, status_code, \
     backend_status_code, total_time_ms, backend_time_ms, cache, last_error_source, \
     last_error_reason, last_error_message, apim_service, gateway";

/// Columns read from `gateway_events` (before the token identity).
const EVENT_COLUMNS: &str = "CAST(time AS BIGINT) AS t, CAST(ingest_time AS BIGINT) AS i, \
     record_key, correlation_id, trace_id, status_code, apim_service, section, \
     last_error_reason, elapsed_ms";

/// Columns read from `flow_logs` (before the token identity).
const FLOW_COLUMNS: &str = "CAST(time AS BIGINT) AS t, CAST(ingest_time AS BIGINT) AS i, \
     record_key, correlation_id, trace_id, mule_app, flow, trace_point, level, elapsed_ms, \
     scope_elapsed_ms, message, error_type, remote_address, method, request_path, \
     status_code, content, is_request_traffic";

/// Columns read from `spans` (before the token identity).
const SPAN_COLUMNS: &str = "CAST(time AS BIGINT) AS t, CAST(end_time AS BIGINT) AS e, \
     CAST(ingest_time AS BIGINT) AS i, trace_id, span_id, parent_span_id, name, kind, \
     span_status, span_status_message, service_name, scope_name, status_code, \
     correlation_id, client_ip, method, url_path, http_route, user_agent";

/// One table's record read, for a minute's own records and for linked records.
#[derive(Debug, Clone)]
struct Pair {
    core: String,
    linked: String,
}

/// Every statement the correlator runs, built once from constants.
#[derive(Debug, Clone)]
struct Statements {
    /// Start times of the unsettled requests and probes (`t`).
    unsettled: String,
    /// Start time (`t`) of the request or probe whose id is in the list `$1`.
    time_of: String,
    /// Per raw table: minute buckets (`m`, in minutes) of rows that arrived at or after `$1`.
    arrived: Vec<(&'static str, String)>,
    /// Per raw table: minute buckets (`m`) of rows with event time at or after `$1`.
    since: Vec<(&'static str, String)>,
    /// Minute buckets (`m`) of derived rows for requests starting at or after `$1`.
    derived_since: String,
    /// Per raw table: the number of records (`n`) with `$1` ≤ time < `$2`.
    count: Vec<String>,
    gateway: Pair,
    events: Pair,
    flows: Pair,
    spans: Pair,
}

impl Statements {
    fn new() -> Self {
        let tok = token::COLUMNS.join(", ");
        let select = |columns: &str, table: &str, filter: &str| {
            [
                "SELECT ",
                columns,
                ", ",
                tok.as_str(),
                " FROM ",
                table,
                " WHERE ",
                filter,
            ]
            .concat()
        };
        let pair = |columns: &str, table: &str, linked: &str| Pair {
            core: select(columns, table, CORE),
            linked: select(columns, table, linked),
        };
        // Gateway copies in the view's merge order, earliest-accepted first.
        let in_merge_order =
            |q: String| [q.as_str(), " ORDER BY ", gateway_logs::MERGE_ORDER].concat();
        let gateway = pair(GATEWAY_COLUMNS, gateway_logs::TABLE, GATEWAY_LINKED);
        let minutes = |table: &str, filter: &str| {
            [
                "SELECT DISTINCT ",
                MINUTE_OF_TIME,
                MINUTE_NS_SQL,
                " AS m FROM ",
                table,
                " WHERE ",
                filter,
            ]
            .concat()
        };
        Self {
            unsettled: [
                "SELECT DISTINCT CAST(time AS BIGINT) AS t FROM ",
                requests::TABLE,
                " WHERE NOT settled UNION SELECT DISTINCT CAST(time AS BIGINT) AS t FROM ",
                requests::PROBES_TABLE,
                " WHERE NOT settled",
            ]
            .concat(),
            time_of: [
                "SELECT CAST(time AS BIGINT) AS t FROM ",
                requests::TABLE,
                " WHERE array_has($1, request_id) UNION ALL SELECT CAST(time AS BIGINT) AS t FROM ",
                requests::PROBES_TABLE,
                " WHERE array_has($1, probe_id)",
            ]
            .concat(),
            arrived: RAW
                .iter()
                .map(|t| (*t, minutes(t, "ingest_time >= to_timestamp_nanos($1)")))
                .collect(),
            since: RAW
                .iter()
                .map(|t| (*t, minutes(t, "time >= to_timestamp_nanos($1)")))
                .collect(),
            derived_since: [
                "SELECT DISTINCT CAST(request_time AS BIGINT) / ",
                MINUTE_NS_SQL,
                " AS m FROM ",
                requests::EVENTS_TABLE,
                " WHERE request_time >= to_timestamp_nanos($1) UNION SELECT DISTINCT ",
                MINUTE_OF_TIME,
                MINUTE_NS_SQL,
                " AS m FROM ",
                requests::PROBES_TABLE,
                " WHERE time >= to_timestamp_nanos($1)",
            ]
            .concat(),
            count: RAW
                .iter()
                .map(|t| ["SELECT count(*) AS n FROM ", *t, " WHERE ", CORE].concat())
                .collect(),
            gateway: Pair {
                core: in_merge_order(gateway.core),
                linked: in_merge_order(gateway.linked),
            },
            events: pair(EVENT_COLUMNS, gateway_events::TABLE, LINKED),
            flows: pair(FLOW_COLUMNS, flow_logs::TABLE, LINKED),
            spans: pair(SPAN_COLUMNS, spans::TABLE, LINKED),
        }
    }
}

/// Which records of a table one read takes.
#[derive(Debug, Clone, Copy)]
enum Window<'a> {
    /// Every record with `from` ≤ time < `to`.
    Core { from: i64, to: i64 },
    /// Records with `from` ≤ time < `to` sharing one of these (lower-case) ids.
    Linked {
        from: i64,
        to: i64,
        correlation: &'a BTreeSet<String>,
        trace: &'a BTreeSet<String>,
    },
}

impl Window<'_> {
    fn sql<'s>(&self, pair: &'s Pair) -> &'s str {
        match self {
            Window::Core { .. } => pair.core.as_str(),
            Window::Linked { .. } => pair.linked.as_str(),
        }
    }

    fn params(&self) -> Vec<Param> {
        let list = |ids: &BTreeSet<String>| Param::TextList(ids.iter().cloned().collect());
        match *self {
            Window::Core { from, to } => vec![Param::I64(from), Param::I64(to)],
            Window::Linked {
                from,
                to,
                correlation,
                trace,
            } => vec![
                Param::I64(from),
                Param::I64(to),
                list(correlation),
                list(trace),
            ],
        }
    }
}

/// Reads raw records for the correlator.
#[derive(Debug)]
pub struct Reader {
    source: Arc<dyn RecordSource>,
    sql: Statements,
}

impl Reader {
    /// A reader over `source` (the statements are built here, once).
    pub fn new(source: Arc<dyn RecordSource>) -> Self {
        Self {
            source,
            sql: Statements::new(),
        }
    }

    /// The start times of the stored requests and probes with id `id`, earliest first.
    ///
    /// # Errors
    /// The source failed.
    pub async fn times_of(&self, id: &str) -> Result<Vec<i64>, ReadError> {
        let mut out = BTreeSet::new();
        let params = vec![Param::TextList(vec![id.to_string()])];
        for b in self.source.read(&self.sql.time_of, params).await? {
            out.extend(i64s(&b, "t").into_iter().flatten());
        }
        Ok(out.into_iter().collect())
    }

    /// The minute buckets of the requests and probes not settled yet.
    ///
    /// # Errors
    /// The source failed.
    pub async fn unsettled_minutes(&self) -> Result<BTreeSet<i64>, ReadError> {
        let mut minutes = BTreeSet::new();
        for b in self.source.read(&self.sql.unsettled, Vec::new()).await? {
            minutes.extend(i64s(&b, "t").into_iter().flatten().map(minute_of));
        }
        Ok(minutes)
    }

    /// The minute buckets (by event time) of `table`'s records that arrived at or after
    /// `since_ns`; empty for a table that is not in [`RAW`].
    ///
    /// # Errors
    /// The source failed.
    pub async fn minutes_arrived_since(
        &self,
        table: &str,
        since_ns: i64,
    ) -> Result<BTreeSet<i64>, ReadError> {
        let mut minutes = BTreeSet::new();
        if let Some((_, q)) = self.sql.arrived.iter().find(|(t, _)| *t == table) {
            for b in self.source.read(q, vec![Param::I64(since_ns)]).await? {
                minutes.extend(bucket_starts(&b));
            }
        }
        Ok(minutes)
    }

    /// The minute buckets of every raw record with event time at or after `since_ns`.
    ///
    /// # Errors
    /// The source failed.
    pub async fn minutes_with_records_since(
        &self,
        since_ns: i64,
    ) -> Result<BTreeSet<i64>, ReadError> {
        let mut minutes = BTreeSet::new();
        for (_, q) in &self.sql.since {
            for b in self.source.read(q, vec![Param::I64(since_ns)]).await? {
                minutes.extend(bucket_starts(&b));
            }
        }
        Ok(minutes)
    }

    /// The minute buckets of the derived rows of requests starting at or after `since_ns`.
    ///
    /// # Errors
    /// The source failed.
    pub async fn derived_minutes_since(&self, since_ns: i64) -> Result<BTreeSet<i64>, ReadError> {
        let mut minutes = BTreeSet::new();
        for b in self
            .source
            .read(&self.sql.derived_since, vec![Param::I64(since_ns)])
            .await?
        {
            minutes.extend(bucket_starts(&b));
        }
        Ok(minutes)
    }

    /// How many raw records (all tables) have `from` ≤ time < `to`.
    ///
    /// # Errors
    /// The source failed.
    pub async fn count(&self, from: i64, to: i64) -> Result<u64, ReadError> {
        let mut n = 0u64;
        for q in &self.sql.count {
            for b in self
                .source
                .read(q, vec![Param::I64(from), Param::I64(to)])
                .await?
            {
                let add: i64 = i64s(&b, "n").into_iter().flatten().sum();
                n = n.saturating_add(u64::try_from(add).unwrap_or(0));
            }
        }
        Ok(n)
    }

    /// The records of the window `[a, b)` that can belong to requests starting in `[m, m2)`:
    /// every record of `[m, m2)`, then, for up to three rounds, the records of the window that
    /// share a correlation or trace id with those read so far. So memory follows the
    /// minute's own traffic and what links to it, not everything around it.
    ///
    /// # Errors
    /// The source failed.
    pub async fn read_linked(&self, a: i64, b: i64, m: i64, m2: i64) -> Result<Input, ReadError> {
        let mut input = self.read_where(Window::Core { from: m, to: m2 }).await?;
        let (mut seen_c, mut seen_t) = (BTreeSet::new(), BTreeSet::new());
        for _round in 0..3 {
            let (c, t) = ids_of(&input);
            let new_c: BTreeSet<String> = c.difference(&seen_c).cloned().collect();
            let new_t: BTreeSet<String> = t.difference(&seen_t).cloned().collect();
            if new_c.is_empty() && new_t.is_empty() {
                break;
            }
            let window = Window::Linked {
                from: a,
                to: b,
                correlation: &new_c,
                trace: &new_t,
            };
            let more = self.read_where(window).await?;
            merge_input(&mut input, more);
            seen_c.extend(new_c);
            seen_t.extend(new_t);
        }
        Ok(input)
    }

    /// Reads the records of `window` from every raw table.
    async fn read_where(&self, window: Window<'_>) -> Result<Input, ReadError> {
        let mut input = Input::default();
        // Gateway copies, merged per request key by the gateway_logs view's rule
        // ([`merge_gateway`]): they arrive in its merge order, earliest-accepted first.
        let mut merged: BTreeMap<String, Gateway> = BTreeMap::new();
        for batch in self
            .source
            .read(window.sql(&self.sql.gateway), window.params())
            .await?
        {
            let c = Cols::new(&batch);
            for r in 0..batch.num_rows() {
                let g = Gateway {
                    time: c.i(r, "t").unwrap_or(0),
                    ingest: c.i(r, "i").unwrap_or(0),
                    key: c.s(r, columns::RECORD_KEY).unwrap_or_default(),
                    correlation_id: c.s(r, columns::CORRELATION_ID),
                    trace_id: c.s(r, columns::TRACE_ID),
                    forwarded_correlation_id: c.s(r, gateway_logs::FORWARDED_CORRELATION_ID),
                    api_id: c.s(r, columns::API_ID),
                    operation_id: c.s(r, columns::OPERATION_ID),
                    method: c.s(r, columns::METHOD),
                    url_path: c.s(r, columns::URL_PATH),
                    client_ip: c.s(r, columns::CLIENT_IP),
                    user_agent: c.s(r, columns::USER_AGENT),
                    subscription_id: c.s(r, columns::SUBSCRIPTION_ID),
                    status_code: c.i32(r, columns::STATUS_CODE),
                    backend_status_code: c.i32(r, columns::BACKEND_STATUS_CODE),
                    total_ms: c.f(r, gateway_logs::TOTAL_TIME_MS),
                    backend_ms: c.f(r, gateway_logs::BACKEND_TIME_MS),
                    cache: c.s(r, columns::CACHE),
                    last_error_source: c.s(r, columns::LAST_ERROR_SOURCE),
                    last_error_reason: c.s(r, columns::LAST_ERROR_REASON),
                    last_error_message: c.s(r, columns::LAST_ERROR_MESSAGE),
                    service: c.s(r, columns::APIM_SERVICE),
                    gateway: c.s(r, columns::GATEWAY),
                    // Only a copy with a token_id gives the token identity (the view's rule).
                    token: Some(c.token(r))
                        .filter(|t| t.token_id.is_some())
                        .unwrap_or_default(),
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
        for batch in self
            .source
            .read(window.sql(&self.sql.events), window.params())
            .await?
        {
            let c = Cols::new(&batch);
            for r in 0..batch.num_rows() {
                input.events.push(GatewayEvent {
                    time: c.i(r, "t").unwrap_or(0),
                    ingest: c.i(r, "i").unwrap_or(0),
                    key: c.s(r, columns::RECORD_KEY).unwrap_or_default(),
                    correlation_id: c.s(r, columns::CORRELATION_ID),
                    trace_id: c.s(r, columns::TRACE_ID),
                    status_code: c.i32(r, columns::STATUS_CODE),
                    service: c.s(r, columns::APIM_SERVICE),
                    section: c.s(r, gateway_events::SECTION),
                    last_error_reason: c.s(r, columns::LAST_ERROR_REASON),
                    elapsed_ms: c.f(r, columns::ELAPSED_MS),
                    token: c.token(r),
                });
            }
        }
        for batch in self
            .source
            .read(window.sql(&self.sql.flows), window.params())
            .await?
        {
            let c = Cols::new(&batch);
            for r in 0..batch.num_rows() {
                input.flows.push(Flow {
                    time: c.i(r, "t").unwrap_or(0),
                    ingest: c.i(r, "i").unwrap_or(0),
                    key: c.s(r, columns::RECORD_KEY).unwrap_or_default(),
                    correlation_id: c.s(r, columns::CORRELATION_ID),
                    trace_id: c.s(r, columns::TRACE_ID),
                    mule_app: c.s(r, columns::MULE_APP),
                    flow: c.s(r, columns::FLOW),
                    trace_point: c.s(r, flow_logs::TRACE_POINT),
                    level: c.s(r, columns::LEVEL),
                    elapsed_ms: c.f(r, columns::ELAPSED_MS),
                    scope_elapsed_ms: c.f(r, flow_logs::SCOPE_ELAPSED_MS),
                    message: c.s(r, flow_logs::MESSAGE),
                    error_type: c.s(r, flow_logs::ERROR_TYPE),
                    remote_address: c.s(r, flow_logs::REMOTE_ADDRESS),
                    method: c.s(r, columns::METHOD),
                    request_path: c.s(r, flow_logs::REQUEST_PATH),
                    status_code: c.i32(r, columns::STATUS_CODE),
                    content: c.s(r, flow_logs::CONTENT),
                    is_request_traffic: c.b(r, flow_logs::IS_REQUEST_TRAFFIC).unwrap_or(false),
                    token: c.token(r),
                });
            }
        }
        // An exporter's retry can deliver a span twice: one record per (trace, span).
        let mut seen_spans: BTreeSet<(String, String)> = BTreeSet::new();
        for batch in self
            .source
            .read(window.sql(&self.sql.spans), window.params())
            .await?
        {
            let c = Cols::new(&batch);
            for r in 0..batch.num_rows() {
                let id = (
                    c.s(r, columns::TRACE_ID).unwrap_or_default(),
                    c.s(r, columns::SPAN_ID).unwrap_or_default(),
                );
                if !seen_spans.insert(id) {
                    continue;
                }
                input.spans.push(Span {
                    time: c.i(r, "t").unwrap_or(0),
                    end: c.i(r, "e"),
                    ingest: c.i(r, "i").unwrap_or(0),
                    trace_id: c.s(r, columns::TRACE_ID).unwrap_or_default(),
                    span_id: c.s(r, columns::SPAN_ID).unwrap_or_default(),
                    parent_span_id: c.s(r, columns::PARENT_SPAN_ID),
                    name: c.s(r, columns::NAME).unwrap_or_default(),
                    kind: c.s(r, columns::KIND).unwrap_or_default(),
                    span_status: c.s(r, columns::SPAN_STATUS).unwrap_or_default(),
                    status_message: c.s(r, columns::SPAN_STATUS_MESSAGE),
                    service: c.s(r, columns::SERVICE_NAME),
                    scope: c.s(r, columns::SCOPE_NAME),
                    status_code: c.i32(r, columns::STATUS_CODE),
                    correlation_id: c.s(r, columns::CORRELATION_ID),
                    client_ip: c.s(r, columns::CLIENT_IP),
                    method: c.s(r, columns::METHOD),
                    url_path: c.s(r, columns::URL_PATH),
                    http_route: c.s(r, columns::HTTP_ROUTE),
                    user_agent: c.s(r, columns::USER_AGENT),
                    token: c.token(r),
                });
            }
        }
        Ok(input)
    }
}

/// The minute starts of a batch's `m` column (minute numbers since the epoch).
fn bucket_starts(b: &RecordBatch) -> impl Iterator<Item = i64> {
    i64s(b, "m")
        .into_iter()
        .flatten()
        .map(|m| m.saturating_mul(MINUTE_NS))
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
    for f in &input.flows {
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
        match gw.get(&g.key).and_then(|&i| into.gateway.get_mut(i)) {
            Some(existing) => merge_gateway(existing, g),
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

/// Merges `other`, a later copy of the same gateway request, into `into`, by the one merge
/// rule of the `gateway_logs` view ([`gateway_logs::merge_expr`], docs/correlation.md). The
/// gateway read returns copies in [`gateway_logs::MERGE_ORDER`], earliest-accepted first, so
/// folding them in read order gives the view's values:
/// - each field keeps the first value a copy had: the earliest-accepted copy's that has one;
/// - the token identity is taken whole from the earliest-accepted copy with a `token_id`
///   (copies without one are read with an empty token), never mixed across copies;
/// - `time` is the earliest, as in the view;
/// - `ingest` is the **last** arrival of any copy, not the view's `ingest_time` (the first):
///   the settle horizon counts from a request's latest record, and
///   `request_events.ingest_time` of a gateway record is when its latest copy arrived.
///
/// One recomputation reads the minute, then linked records in up to three more reads; a
/// request whose copies' event times lie on both sides of the minute's edge can have them
/// split between reads, and those partial merges combine in read order (the earlier read's
/// values win), not acceptance order.
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
    cast: RefCell<BTreeMap<(String, DataType), Option<ArrayRef>>>,
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
            cast: RefCell::default(),
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

    /// An integer; a timestamp column reads as its nanoseconds.
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

    /// The token identity columns ([`token::COLUMNS`], selected as they are stored: the
    /// two times are timestamps, read as nanoseconds).
    fn token(&self, r: usize) -> TokenColumns {
        TokenColumns {
            token_id: self.s(r, token::TOKEN_ID),
            uti: self.s(r, token::TOKEN_UTI),
            subject: self.s(r, token::SUBJECT),
            object_id: self.s(r, token::TOKEN_OBJECT_ID),
            client_app: self.s(r, token::CLIENT_APP),
            tenant_id: self.s(r, token::TENANT_ID),
            issuer: self.s(r, token::TOKEN_ISSUER),
            audience: self.s(r, token::TOKEN_AUDIENCE),
            issued_at: self.i(r, token::TOKEN_ISSUED_AT),
            expires_at: self.i(r, token::TOKEN_EXPIRES_AT),
            scopes: self.list(r, token::TOKEN_SCOPES),
            roles: self.list(r, token::TOKEN_ROLES),
            token_type: self.s(r, token::TOKEN_TYPE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_literal_is_the_bucket() {
        assert_eq!(MINUTE_NS_SQL, MINUTE_NS.to_string());
    }

    #[test]
    fn statements_are_fixed_text_with_placeholders() {
        let s = Statements::new();
        let all = [
            &s.unsettled,
            &s.time_of,
            &s.derived_since,
            &s.gateway.core,
            &s.gateway.linked,
            &s.events.core,
            &s.events.linked,
            &s.flows.core,
            &s.flows.linked,
            &s.spans.core,
            &s.spans.linked,
        ]
        .into_iter()
        .chain(s.arrived.iter().map(|(_, q)| q))
        .chain(s.since.iter().map(|(_, q)| q))
        .chain(s.count.iter());
        for q in all {
            assert!(!q.contains('\''), "{q}");
        }
        assert!(s.spans.linked.contains("token_issued_at, token_expires_at"));
        assert!(s.gateway.linked.contains("FROM gateway_log_copies WHERE"));
        assert_eq!(s.arrived.len(), RAW.len());
    }

    #[test]
    fn gateway_copies_are_read_in_the_views_merge_order() {
        let s = Statements::new();
        for q in [&s.gateway.core, &s.gateway.linked] {
            assert!(
                q.ends_with(" ORDER BY ingest_time, source_format, source_file, source_line"),
                "{q}"
            );
            assert!(q.ends_with(&format!(" ORDER BY {}", gateway_logs::MERGE_ORDER)));
        }
    }

    #[test]
    fn merge_keeps_the_earliest_accepted_value_and_one_token() {
        let token = |id: Option<&str>, subject: &str| TokenColumns {
            token_id: id.map(str::to_string),
            subject: Some(subject.into()),
            ..TokenColumns::default()
        };
        // Copies in merge order: the first has no token, the second and third have one.
        let mut g = Gateway {
            time: 20,
            ingest: 100,
            key: "k".into(),
            status_code: Some(200),
            ..Gateway::default()
        };
        let second = Gateway {
            time: 10,
            ingest: 300,
            key: "k".into(),
            status_code: Some(401),
            method: Some("GET".into()),
            token: token(Some("t1"), "s1"),
            ..Gateway::default()
        };
        let third = Gateway {
            time: 30,
            ingest: 200,
            key: "k".into(),
            url_path: Some("/a".into()),
            token: token(Some("t2"), "s2"),
            ..Gateway::default()
        };
        merge_gateway(&mut g, second);
        merge_gateway(&mut g, third);
        assert_eq!(g.status_code, Some(200));
        assert_eq!(g.method.as_deref(), Some("GET"));
        assert_eq!(g.url_path.as_deref(), Some("/a"));
        assert_eq!(g.token, token(Some("t1"), "s1"));
        assert_eq!((g.time, g.ingest), (10, 300));
    }

    #[test]
    fn linked_window_binds_four_values() {
        let c: BTreeSet<String> = ["a'b".to_string()].into();
        let t = BTreeSet::new();
        let w = Window::Linked {
            from: 1,
            to: 2,
            correlation: &c,
            trace: &t,
        };
        assert_eq!(
            w.params(),
            vec![
                Param::I64(1),
                Param::I64(2),
                Param::TextList(vec!["a'b".into()]),
                Param::TextList(Vec::new()),
            ]
        );
    }
}
