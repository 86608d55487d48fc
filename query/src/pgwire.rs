//! The PostgreSQL wire protocol listener (psql, BI tools, Grafana's PostgreSQL datasource).
//!
//! Takes the query service's tables; gives a listener built on `datafusion-postgres` (simple
//! and extended protocol, text and binary results, `pg_catalog`, `\d`, `SET`/`SHOW`,
//! transactions as no-ops) with seam's own rules in front of its hooks:
//! - read-only: anything but queries, `EXPLAIN`, `SHOW`, `SET`, transactions and cursors is
//!   refused with SQLSTATE 42501, over both protocols;
//! - isolation: `SET` is accepted and ignored, so no client can change the shared session
//!   (`SET datafusion.*` would otherwise reach every connection);
//! - `current_setting(name)` for the settings clients probe (Grafana's version check).
//!
//! The database is `seam`. Authentication and TLS on this listener are the next step (the
//! PostgreSQL wire issue); until then it serves loopback only.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, LogicalPlan, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::{QueryHook, ServerOptions};

use crate::session::{CATALOG, QueryService};

/// Values `current_setting()` answers.
const SETTINGS: &[(&str, &str)] = &[
    ("server_version", "16.6"),
    ("server_version_num", "160006"),
    ("search_path", "public"),
    ("client_encoding", "UTF8"),
    ("server_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("timezone", "UTC"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("max_identifier_length", "63"),
    ("transaction_isolation", "read committed"),
    ("default_transaction_read_only", "on"),
];

fn refused(what: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "42501".into(),
        format!("statement refused: seam's SQL is read-only ({what} is not allowed)"),
    )))
}

/// Whether a statement only reads, or is a session statement seam answers harmlessly.
fn allowed(s: &Statement) -> bool {
    match s {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowSchemas { .. }
        | Statement::Set(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. } => true,
        Statement::Explain { statement, .. } => allowed(statement),
        _ => false,
    }
}

fn verb(s: &Statement) -> String {
    let text = s.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// The guard's answer for an executed statement: a refusal, `SET` (ignored), or `None` to
/// let the other hooks and DataFusion run it.
fn guard(statement: &Statement) -> Option<PgWireResult<Response>> {
    if !allowed(statement) {
        return Some(Err(refused(&verb(statement))));
    }
    matches!(statement, Statement::Set(_)).then(|| Ok(Response::Execution(Tag::new("SET"))))
}

/// Refuses writes and ignores `SET`; runs before `datafusion-postgres`'s own hooks.
#[derive(Debug)]
struct SeamGuardHook;

#[async_trait]
impl QueryHook for SeamGuardHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        guard(statement)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        (!allowed(statement)).then(|| Err(refused(&verb(statement))))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        guard(statement)
    }
}

fn current_setting(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    let lookup = |name: &str| {
        SETTINGS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    match args.first() {
        Some(ColumnarValue::Scalar(v)) => {
            let name = match v {
                ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                    s.as_deref()
                }
                _ => None,
            };
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                name.and_then(lookup).map(str::to_string),
            )))
        }
        Some(ColumnarValue::Array(a)) => {
            let names = cast(a, &DataType::Utf8)?;
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .unwrap_or_else(|| StringArray::from(Vec::<Option<&str>>::new()));
            let out: StringArray = names.iter().map(|n| n.and_then(lookup)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }
        None => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
    }
}

/// The session the PostgreSQL listener serves: seam's tables, `pg_catalog` and
/// `current_setting`.
///
/// # Errors
/// When `pg_catalog` cannot be set up.
pub fn context(service: &QueryService) -> Result<Arc<SessionContext>, String> {
    let ctx = SessionContext::new_with_state(service.pg_state().map_err(|e| e.to_string())?);
    datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &ctx,
        CATALOG,
        Arc::new(datafusion_postgres::auth::AuthManager::default()),
    )
    .map_err(|e| e.to_string())?;
    ctx.register_udf(create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(current_setting),
    ));
    Ok(Arc::new(ctx))
}

/// Serves the PostgreSQL wire protocol on `addr` until the task is dropped.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(ctx: Arc<SessionContext>, addr: SocketAddr) -> std::io::Result<()> {
    let opts = ServerOptions::new()
        .with_host(addr.ip().to_string())
        .with_port(addr.port());
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(SeamGuardHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let connections = Arc::new(ConnectionManager::new());
    let handlers = SeamHandlers {
        session: Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
        startup: Arc::new(SeamStartup {
            connections: Arc::clone(&connections),
        }),
        cancel: Arc::new(DefaultCancelHandler::new(connections)),
    };
    datafusion_postgres::serve_with_handlers(Arc::new(handlers), &opts).await
}

/// The startup handler: no authentication yet (loopback only); registers each connection so
/// that cancel requests reach it.
struct SeamStartup {
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for SeamStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.connections))
    }
}

/// `datafusion-postgres`'s query handling, with seam's error handler: errors get the
/// SQLSTATE a PostgreSQL client expects instead of the generic XX000. (Its own handler
/// factory is private, so the handlers are assembled here the same way.)
struct SeamHandlers {
    session: Arc<DfSessionService>,
    startup: Arc<SeamStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for SeamHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrors)
    }
}

/// Maps DataFusion's errors to PostgreSQL SQLSTATEs.
struct SqlStateErrors;

/// The SQLSTATE for a DataFusion error message, when one fits better than XX000.
pub fn sqlstate_for(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("parsererror") || m.contains("sql parser error") || m.contains("expected:") {
        Some("42601")
    } else if (m.contains("table '") && m.contains("not found")) || m.contains("no table named") {
        Some("42P01")
    } else if m.contains("no field named") || (m.contains("column") && m.contains("not found")) {
        Some("42703")
    } else if m.contains("invalid function") || m.contains("unknown function") {
        Some("42883")
    } else if m.contains("resources exhausted") {
        Some("53200")
    } else if m.contains("division by zero") || m.contains("divide by zero") {
        Some("22012")
    } else if m.contains("cannot cast") || m.contains("cast error") {
        Some("22P02")
    } else {
        None
    }
}

impl ErrorHandler for SqlStateErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let message = match &*error {
            PgWireError::ApiError(inner) => inner.to_string(),
            PgWireError::UserError(info) if info.code == "XX000" => info.message.clone(),
            _ => return,
        };
        if let Some(code) = sqlstate_for(&message) {
            *error = PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                code.into(),
                message,
            )));
        }
    }
}
