//! The query session: one catalog of seam's tables, and a fresh, limited context per
//! statement.
//!
//! Takes SQL text; gives Arrow batches. Every statement is planned, then checked: only
//! queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `SHOW`/`DESCRIBE` of tables) run. DDL
//! (`CREATE`, `DROP`, `CREATE EXTERNAL TABLE`), DML (`INSERT`, `COPY ... TO`) and statements
//! (`SET`, transactions) are refused with [`QueryError::Refused`]. File paths used as table
//! names are not resolved (DataFusion's URL tables stay off), and no file-reading table
//! function is registered. Each statement gets its own runtime with a memory pool of
//! `memory_limit` bytes and no spill directory, and is cancelled after `timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use seam_schemas::source::TableSource;
use seam_schemas::tables;

use seam_auth::Principal;

use crate::audit::{AuditSink, check_access};
use crate::config::QueryConfig;
use crate::error::QueryError;
use crate::table::SeamTable;

/// Catalog name under which seam's tables are registered.
pub const CATALOG: &str = "seam";
/// Schema name under which seam's tables are registered.
pub const SCHEMA: &str = "public";

/// Refuses every statement but queries, before anything is planned (planning `COPY` or
/// `CREATE EXTERNAL TABLE` already looks at files).
fn check_read_only(stmt: &DfStatement) -> Result<(), QueryError> {
    match stmt {
        DfStatement::Statement(s) => check_sql(s),
        DfStatement::Explain(e) => check_read_only(&e.statement),
        DfStatement::CreateExternalTable(_) => Err(QueryError::Refused(
            "CREATE EXTERNAL TABLE is not allowed".into(),
        )),
        DfStatement::CopyTo(_) => Err(QueryError::Refused("COPY is not allowed".into())),
        DfStatement::Reset(_) => Err(QueryError::Refused("RESET is not allowed".into())),
    }
}

fn check_sql(s: &SqlStatement) -> Result<(), QueryError> {
    match s {
        SqlStatement::Query(_)
        | SqlStatement::ExplainTable { .. }
        | SqlStatement::ShowTables { .. }
        | SqlStatement::ShowColumns { .. }
        | SqlStatement::ShowVariable { .. } => Ok(()),
        SqlStatement::Explain { statement, .. } => check_sql(statement),
        other => {
            let text = other.to_string();
            let words: Vec<&str> = text.split_whitespace().take(2).collect();
            Err(QueryError::Refused(format!(
                "{} statements are not allowed; only queries are",
                words.join(" ").to_uppercase()
            )))
        }
    }
}

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

/// Plans and runs read-only SQL over seam's tables.
#[derive(Debug)]
pub struct QueryService {
    base: SessionState,
    config: QueryConfig,
    queries_ok: AtomicU64,
    queries_failed: AtomicU64,
    micros_total: AtomicU64,
    audit: std::sync::OnceLock<Arc<dyn AuditSink>>,
}

impl QueryService {
    /// Registers every table of [`tables::all`] over `source`; Parquet paths are resolved
    /// against `base_url` (for the local store, `file:///absolute/data-dir/`).
    ///
    /// # Errors
    /// A table that cannot be registered.
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
        for def in tables::all() {
            let table = SeamTable::new(def.name, def.schema, Arc::clone(&source), base_url.clone());
            ctx.register_table(def.name, Arc::new(table))?;
        }
        for view in tables::views() {
            let plan = futures::executor::block_on(ctx.state().create_logical_plan(&view.sql))?;
            let view_table = datafusion::datasource::ViewTable::new(plan, Some(view.sql));
            ctx.register_table(view.name, Arc::new(view_table))?;
        }
        Ok(Self {
            base: ctx.state(),
            config,
            queries_ok: AtomicU64::new(0),
            queries_failed: AtomicU64::new(0),
            micros_total: AtomicU64::new(0),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// A session state for the PostgreSQL listener: the same catalog, with a runtime whose
    /// memory pool (shared by its connections) is `memory_limit` and with no spill directory.
    ///
    /// # Errors
    /// When the runtime cannot be built.
    pub fn pg_state(&self) -> Result<SessionState, QueryError> {
        let ctx = self.context()?;
        Ok(ctx.state())
    }

    /// The service's limits.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    fn context(&self) -> Result<SessionContext, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.config.memory_limit, 1.0)
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

    /// Plans `sql` and refuses it unless it only reads, and only tables `principal` may read.
    async fn plan(
        &self,
        ctx: &SessionContext,
        sql: &str,
        principal: &Principal,
    ) -> Result<datafusion::logical_expr::LogicalPlan, QueryError> {
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        check_read_only(&statement)?;
        let plan = state.statement_to_plan(statement).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| QueryError::Refused(e.strip_backtrace()))?;
        check_access(&plan, principal)?;
        Ok(plan)
    }

    /// Runs one read-only statement within the time and memory limits, with every table
    /// readable (in-process callers: tests, benchmarks, the command line).
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.execute_as(&Principal::anonymous(), sql).await
    }

    /// Runs one read-only statement for `principal` (admin-only tables need the admin role).
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn execute_as(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let result = self.execute_inner(sql, principal).await;
        self.micros_total
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match &result {
            Ok(_) => self.queries_ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.queries_failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn execute_inner(
        &self,
        sql: &str,
        principal: &Principal,
    ) -> Result<QueryResult, QueryError> {
        let ctx = self.context()?;
        let timeout = self.config.timeout;
        let run = async {
            let plan = self.plan(&ctx, sql, principal).await?;
            let df = ctx.execute_logical_plan(plan).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            Ok::<_, QueryError>(QueryResult { schema, batches })
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(timeout))?
    }

    /// Runs a query of seam's own (the correlator's): read-only like any other, under the
    /// same memory limit, without a time limit and not counted in the query metrics.
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn run_internal(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let ctx = self.context()?;
        let plan = self.plan(&ctx, sql, &Principal::anonymous()).await?;
        let df = ctx.execute_logical_plan(plan).await?;
        Ok(df.collect().await?)
    }

    /// The service's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let ok = self.queries_ok.load(Ordering::Relaxed);
        let failed = self.queries_failed.load(Ordering::Relaxed);
        let secs = self.micros_total.load(Ordering::Relaxed) as f64 / 1e6;
        format!(
            "# HELP seam_queries_total SQL statements answered, by outcome.\n\
             # TYPE seam_queries_total counter\n\
             seam_queries_total{{outcome=\"ok\"}} {ok}\n\
             seam_queries_total{{outcome=\"error\"}} {failed}\n\
             # HELP seam_query_seconds_total Time spent answering SQL statements.\n\
             # TYPE seam_query_seconds_total counter\n\
             seam_query_seconds_total {secs}\n"
        )
    }
}
