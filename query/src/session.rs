//! The query session: one catalog of seam's tables, and a fresh, limited context per
//! statement, run on the query runtime.
//!
//! Takes SQL text; gives Arrow batches, or a result encoded chunk by chunk
//! ([`QueryService::stream`]). Every statement is parsed and classified before anything is
//! planned ([`crate::policy`]: only reads run; DDL, DML, `COPY`, `CREATE EXTERNAL TABLE`,
//! session statements and cursors are refused), then planned and checked again (no write
//! anywhere in the plan, no admin-only table for other roles). File paths used as table names
//! are not resolved (DataFusion's URL tables stay off), and no file-reading table function is
//! registered. Each statement gets its own DataFusion runtime, with no spill directory and the
//! service's one memory pool of `memory_limit` bytes (shared by every running statement), runs as a task on the query runtime
//! ([`crate::runtime`]) so that it cannot hold up ingest, and is aborted after `timeout`,
//! which the caller keeps on its own runtime. Functions that build large values are capped
//! ([`crate::functions`]), and a result past `max_result_bytes` cancels the statement.

use datafusion::scalar::ScalarValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt as _;
use seam_schemas::source::TableSource;
use seam_schemas::tables;
use tokio::sync::mpsc;

use seam_auth::Principal;

use crate::audit::AuditSink;
use crate::config::QueryConfig;
use crate::error::QueryError;
use crate::policy::{check_plan, classify_http};
use crate::runtime::{QueryRuntime, Task};
use crate::table::SeamTable;

/// Catalog name under which seam's tables are registered.
pub const CATALOG: &str = "seam";
/// Schema name under which seam's tables are registered.
pub const SCHEMA: &str = "public";

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Output schema.
    pub schema: SchemaRef,
    /// Output rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Turns a result into bytes, batch by batch; runs on the query runtime (the HTTP API's JSON,
/// CSV and Arrow encoders).
pub trait Encoder: Send + 'static {
    /// Bytes before the first row.
    ///
    /// # Errors
    /// A message when the schema cannot be encoded.
    fn begin(&mut self, schema: &SchemaRef) -> Result<Vec<u8>, String>;
    /// Bytes of one batch (never empty of rows).
    ///
    /// # Errors
    /// A message when the batch cannot be encoded.
    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String>;
    /// Bytes after the last row.
    ///
    /// # Errors
    /// A message when the end cannot be encoded.
    fn end(&mut self) -> Result<Vec<u8>, String>;
}

/// Encoded bytes of a result, and how many rows they hold.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The bytes.
    pub bytes: Bytes,
    /// Rows encoded in them.
    pub rows: usize,
}

/// SQL statements answered, by `outcome` (`ok`, `error`).
pub const QUERIES: &str = "seam_queries_total";
/// Time spent answering SQL statements (seconds; a float that only grows, kept as a gauge
/// because the facade's counters are integers).
pub const QUERY_SECONDS: &str = "seam_query_seconds_total";

/// Describes the query engine's metrics to the installed registry (the binary's one
/// registry renders them on `/metrics`).
pub fn describe_metrics() {
    metrics::describe_counter!(QUERIES, "SQL statements answered, by outcome.");
    metrics::describe_gauge!(QUERY_SECONDS, "Time spent answering SQL statements.");
    for outcome in ["ok", "error"] {
        metrics::counter!(QUERIES, "outcome" => outcome).increment(0);
    }
    metrics::gauge!(QUERY_SECONDS).increment(0.0);
}

/// Counts one answered statement for `/metrics`, through the `metrics` facade.
fn count_statement(started: Instant, ok: bool) {
    metrics::gauge!(QUERY_SECONDS).increment(started.elapsed().as_secs_f64());
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(QUERIES, "outcome" => outcome).increment(1);
}

/// A statement's result as it is produced: encoded chunks, within the statement's time limit
/// (kept by the caller's runtime). Dropping it aborts the statement.
#[derive(Debug)]
pub struct QueryStream {
    rx: mpsc::Receiver<Result<Chunk, QueryError>>,
    task: Task<()>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    started: Instant,
    finished: bool,
}

impl QueryStream {
    /// The next chunk; `None` at the end; an error ends the stream (past the time limit, the
    /// statement is aborted and the error is [`QueryError::Timeout`] at once).
    pub async fn next(&mut self) -> Option<Result<Chunk, QueryError>> {
        if self.finished {
            return None;
        }
        let item = match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            Err(_) => Some(Err(QueryError::Timeout(self.timeout))),
            Ok(Some(item)) => Some(item),
            // The task ended: normally, or by a panic.
            Ok(None) => self.task.join().await.err().map(Err),
        };
        match &item {
            Some(Ok(_)) => {}
            Some(Err(_)) => self.finish(false),
            None => self.finish(true),
        }
        item
    }

    fn finish(&mut self, ok: bool) {
        if !self.finished {
            self.finished = true;
            self.task.abort();
            count_statement(self.started, ok);
        }
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        // A client that went away before the end.
        self.finish(false);
    }
}

/// Where a statement's chunks go, counting their bytes against the result limit.
struct Output<'a> {
    tx: &'a mpsc::Sender<Result<Chunk, QueryError>>,
    sent: usize,
    max: usize,
}

impl Output<'_> {
    async fn send(&mut self, bytes: Vec<u8>, rows: usize) -> Result<(), QueryError> {
        self.sent = self.sent.saturating_add(bytes.len());
        if self.sent > self.max {
            return Err(QueryError::ResultTooLarge(self.max));
        }
        if bytes.is_empty() && rows == 0 {
            return Ok(());
        }
        let chunk = Chunk {
            bytes: Bytes::from(bytes),
            rows,
        };
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| QueryError::Internal("the client went away".into()))
    }
}

/// Plans `sql` and refuses it unless it only reads, and only tables `principal` may read.
async fn plan(
    ctx: &SessionContext,
    sql: &str,
    principal: &Principal,
) -> Result<LogicalPlan, QueryError> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect)?;
    classify_http(&statement)?;
    let plan = state.statement_to_plan(statement).await?;
    check_plan(&plan, principal)?;
    Ok(plan)
}

/// Runs a statement on the query runtime and sends its encoded result to `tx`.
async fn produce(
    ctx: SessionContext,
    sql: String,
    principal: Principal,
    mut encoder: Box<dyn Encoder>,
    max: usize,
    tx: mpsc::Sender<Result<Chunk, QueryError>>,
) {
    let run = async {
        let plan = plan(&ctx, &sql, &principal).await?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut batches = df.execute_stream().await?;
        let mut out = Output {
            tx: &tx,
            sent: 0,
            max,
        };
        out.send(encoder.begin(&schema).map_err(QueryError::Internal)?, 0)
            .await?;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let bytes = encoder.batch(&batch).map_err(QueryError::Internal)?;
            out.send(bytes, batch.num_rows()).await?;
        }
        out.send(encoder.end().map_err(QueryError::Internal)?, 0)
            .await
    };
    if let Err(e) = run.await {
        let _ = tx.send(Err(e)).await;
    }
}

/// What the PostgreSQL listener takes from the query service, carried in its session's
/// configuration (a DataFusion config extension): the query runtime and the result limit.
#[derive(Debug)]
pub struct PgRuntime {
    /// Where statements run.
    pub runtime: Arc<QueryRuntime>,
    /// `query.max_result_bytes`.
    pub max_result_bytes: usize,
}

/// Plans and runs read-only SQL over seam's tables.
#[derive(Debug)]
pub struct QueryService {
    base: SessionState,
    config: QueryConfig,
    audit: std::sync::OnceLock<Arc<dyn AuditSink>>,
    runtime: Arc<QueryRuntime>,
    /// The one memory pool of every statement (HTTP, PostgreSQL, the correlator): several
    /// statements at once share `memory_limit`, they do not each get it.
    pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
}

impl QueryService {
    /// Registers every table of [`tables::all`] over `source`; Parquet paths are resolved
    /// against `base_url` (for the local store, `file:///absolute/data-dir/`). Starts the
    /// query runtime (`query.threads` workers).
    ///
    /// # Errors
    /// A table that cannot be registered; threads the system refuses.
    pub fn new(
        source: Arc<dyn TableSource>,
        base_url: &str,
        config: QueryConfig,
    ) -> Result<Self, QueryError> {
        let base_url = if base_url.ends_with('/') {
            base_url.to_string()
        } else {
            format!("{base_url}/")
        };
        let session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true);
        let ctx = SessionContext::new_with_config(session_config);
        let state = SessionStateBuilder::new_from_existing(ctx.state())
            .with_physical_optimizer_rule(Arc::new(crate::runtime::CooperativeJoins))
            .build();
        let ctx = SessionContext::new_with_state(crate::functions::install(
            state,
            config.max_function_output_bytes,
        ));
        for def in tables::all() {
            let table = SeamTable::new(def.name, def.schema, Arc::clone(&source), base_url.clone());
            ctx.register_table(def.name, Arc::new(table))?;
        }
        for view in tables::views() {
            let plan = futures::executor::block_on(ctx.state().create_logical_plan(&view.sql))?;
            let view_table = datafusion::datasource::ViewTable::new(plan, Some(view.sql));
            ctx.register_table(view.name, Arc::new(view_table))?;
        }
        let runtime = Arc::new(QueryRuntime::new(config.threads)?);
        let pool = Arc::new(datafusion::execution::memory_pool::TrackConsumersPool::new(
            datafusion::execution::memory_pool::GreedyMemoryPool::new(config.memory_limit),
            std::num::NonZeroUsize::MIN.saturating_add(4),
        ));
        Ok(Self {
            base: ctx.state(),
            config,
            audit: std::sync::OnceLock::new(),
            runtime,
            pool,
        })
    }

    /// Reads table files under `base_url` (the one given to [`QueryService::new`]) through
    /// `store`: the storage's own client of a remote table store.
    ///
    /// # Errors
    /// `base_url` is not a URL.
    pub fn register_store(
        &self,
        base_url: &str,
        store: Arc<dyn object_store::ObjectStore>,
    ) -> Result<(), QueryError> {
        let url = url::Url::parse(base_url)
            .map_err(|e| QueryError::Internal(format!("table store URL {base_url}: {e}")))?;
        self.base.runtime_env().register_object_store(&url, store);
        Ok(())
    }

    /// Adds a function to every later statement's session (in-process callers and tests;
    /// call it before the PostgreSQL listener's session is made).
    pub fn register_udf(&mut self, udf: datafusion::logical_expr::ScalarUDF) {
        use datafusion::execution::FunctionRegistry as _;
        let _ = self.base.register_udf(Arc::new(udf));
    }

    /// A session state for the PostgreSQL listener: the same catalog, with a runtime on the
    /// service's memory pool (`memory_limit`, shared with every statement) and no spill directory,
    /// carrying the query runtime and the result limit ([`PgRuntime`]).
    ///
    /// # Errors
    /// When the runtime cannot be built.
    pub fn pg_state(&self) -> Result<SessionState, QueryError> {
        let mut state = self.context()?.state();
        state.config_mut().set_extension(Arc::new(PgRuntime {
            runtime: Arc::clone(&self.runtime),
            max_result_bytes: self.config.max_result_bytes,
        }));
        Ok(state)
    }

    /// The service's limits.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    fn context(&self) -> Result<SessionContext, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::clone(&self.pool))
            .with_object_store_registry(Arc::clone(&self.base.runtime_env().object_store_registry))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_runtime_env(runtime)
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Installs where audit events go (once; later calls are ignored).
    pub fn set_audit_sink(&self, sink: Arc<dyn AuditSink>) {
        let _ = self.audit.set(sink);
    }

    /// Where audit events go, if a sink is installed.
    pub fn audit_sink(&self) -> Option<Arc<dyn AuditSink>> {
        self.audit.get().cloned()
    }

    /// Runs one read-only statement for `principal` on the query runtime and gives its result
    /// encoded by `encoder`, chunk by chunk, within the time limit (planning, running and
    /// sending) and the result limit. Counted in the query metrics.
    pub fn stream(
        &self,
        principal: &Principal,
        sql: &str,
        encoder: Box<dyn Encoder>,
    ) -> QueryStream {
        let started = Instant::now();
        let timeout = self.config.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // Two chunks in flight: the statement runs ahead of a slow client by that much.
        let (tx, rx) = mpsc::channel(2);
        let task = match self.context() {
            Ok(ctx) => Task::spawn(
                self.runtime.handle(),
                produce(
                    ctx,
                    sql.to_string(),
                    principal.clone(),
                    encoder,
                    self.config.max_result_bytes,
                    tx,
                ),
            ),
            Err(e) => Task::spawn(self.runtime.handle(), async move {
                let _ = tx.send(Err(e)).await;
            }),
        };
        QueryStream {
            rx,
            task,
            deadline,
            timeout,
            started,
            finished: false,
        }
    }

    /// Runs one read-only statement within the time and memory limits, with every table
    /// readable (in-process callers: tests, benchmarks, the command line).
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.execute_as(&Principal::anonymous(), sql).await
    }

    /// Runs one read-only statement for `principal` (admin-only tables need the admin role)
    /// and collects its result, within the time, memory and result limits (the result is
    /// measured as the Arrow memory of its batches).
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn execute_as(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let result = self
            .collect(
                principal,
                sql,
                Vec::new(),
                Some(self.config.timeout),
                Some(self.config.max_result_bytes),
                false,
            )
            .await;
        count_statement(started, result.is_ok());
        result
    }

    /// Plans and runs `sql` on the query runtime and collects its batches; the caller keeps
    /// `timeout` and the task is aborted past it. `params` (when not empty) replace the
    /// statement's `$1, $2, …` placeholders after the plan passed the policy and before it is
    /// optimised, so a bound value is a literal to the optimiser (`to_timestamp_nanos($1)`
    /// folds to a constant that prunes files; `array_has($3, x)` with a bound list becomes
    /// `x IN (…)`).
    async fn collect(
        &self,
        principal: &Principal,
        sql: &str,
        params: Vec<ScalarValue>,
        timeout: Option<Duration>,
        max_bytes: Option<usize>,
        internal: bool,
    ) -> Result<QueryResult, QueryError> {
        let ctx = self.context()?;
        if internal {
            // seam's own reads (the correlator's) select a few records of a wide time window
            // by id: the Parquet reader evaluates the filter while decoding and decodes the
            // other columns only for the rows that pass (late materialisation), instead of
            // decoding every column of the window first.
            let state = ctx.state_ref();
            let mut state = state.write();
            let parquet = &mut state.config_mut().options_mut().execution.parquet;
            parquet.pushdown_filters = true;
            parquet.reorder_filters = true;
        }
        let (principal, sql) = (principal.clone(), sql.to_string());
        let mut task = Task::spawn(self.runtime.handle(), async move {
            let mut plan = plan(&ctx, &sql, &principal).await?;
            if !params.is_empty() {
                plan = plan.with_param_values(params)?;
            }
            let df = ctx.execute_logical_plan(plan).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df.execute_stream().await?;
            let mut batches = Vec::new();
            let mut bytes = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                bytes = bytes.saturating_add(batch.get_array_memory_size());
                if let Some(max) = max_bytes
                    && bytes > max
                {
                    return Err(QueryError::ResultTooLarge(max));
                }
                batches.push(batch);
            }
            Ok::<_, QueryError>(QueryResult { schema, batches })
        });
        let joined = match timeout {
            Some(t) => tokio::time::timeout(t, task.join())
                .await
                .map_err(|_| QueryError::Timeout(t))?,
            None => task.join().await,
        };
        // Past the limit, `task` is dropped here and the statement aborted.
        joined?
    }

    /// Runs a query of seam's own (the correlator's): read-only like any other, on the query
    /// runtime under the same memory limit, without a time or result limit and not counted in
    /// the query metrics.
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn run_internal(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        self.run_internal_with_params(sql, Vec::new()).await
    }

    /// [`QueryService::run_internal`] with the statement's `$1, $2, …` placeholders bound to
    /// `params` (`$1` is the first): values never enter the SQL text. The statement is parsed,
    /// classified and checked like any other before the values are bound.
    ///
    /// # Errors
    /// See [`QueryError`]; a placeholder without a value is a planning error.
    pub async fn run_internal_with_params(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        Ok(self
            .collect(&Principal::anonymous(), sql, params, None, None, true)
            .await?
            .batches)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, ListBuilder, StringBuilder};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::scalar::ScalarValue;
    use seam_schemas::source::{TableSnapshot, TableSource};

    use crate::{QueryConfig, QueryService};

    #[derive(Debug)]
    struct NoData;

    impl TableSource for NoData {
        fn snapshot(&self, _table: &str) -> TableSnapshot {
            TableSnapshot::default()
        }
    }

    fn list(values: &[&str]) -> ScalarValue {
        let mut b = ListBuilder::new(StringBuilder::new());
        for v in values {
            b.values().append_value(v);
        }
        b.append(true);
        ScalarValue::List(Arc::new(b.finish()))
    }

    /// The correlator's reads bind values to placeholders; nothing enters the SQL text.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bound_times_and_id_lists() {
        let url = format!(
            "file://{}/seam-params-test-nonexistent/",
            std::env::temp_dir().display()
        );
        let q = QueryService::new(Arc::new(NoData), &url, QueryConfig::default()).unwrap();
        let b = q
            .run_internal_with_params(
                "SELECT CAST(to_timestamp_nanos($1) AS BIGINT) AS t, \
                 array_has($2, lower('A')) AS yes, array_has($3, lower('A')) AS no",
                vec![
                    ScalarValue::Int64(Some(1_700_000_000_123_456_789)),
                    list(&["a", "b"]),
                    list(&[]),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            b[0].column(0).as_primitive::<Int64Type>().value(0),
            1_700_000_000_123_456_789
        );
        assert!(b[0].column(1).as_boolean().value(0));
        assert!(!b[0].column(2).as_boolean().value(0));
        // The correlator's shape: a table, a time window, one empty and one non-empty list.
        q.run_internal_with_params(
            "SELECT count(*) FROM spans WHERE time >= to_timestamp_nanos($1) \
             AND time < to_timestamp_nanos($2) \
             AND (array_has($3, lower(correlation_id)) OR array_has($4, lower(trace_id)))",
            vec![
                ScalarValue::Int64(Some(0)),
                ScalarValue::Int64(Some(i64::MAX)),
                list(&[]),
                list(&["0af7651916cd43dd8448eb211c80319c"]),
            ],
        )
        .await
        .unwrap();
    }
}
