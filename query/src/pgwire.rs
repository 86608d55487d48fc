//! The PostgreSQL wire protocol listener (psql, BI tools, Grafana's PostgreSQL datasource).
//!
//! Takes the query service's tables; gives a listener built on `datafusion-postgres` (simple
//! and extended protocol, text and binary results, `pg_catalog`, `\d`, `SET`/`SHOW`,
//! transactions as no-ops) with seam's own rules in front of its hooks:
//! - read-only: every statement goes through the allow-list the HTTP API uses
//!   ([`crate::policy`]); anything but reads, `SHOW`, `SET`, transactions and `DISCARD` is
//!   refused with SQLSTATE 42501, cursors (`DECLARE`, `FETCH`, `CLOSE`) with 0A000, over both
//!   protocols; reads are planned by seam, and the plan checked (no write anywhere in it, no
//!   admin-only table for other roles, `EXPLAIN [ANALYZE]` included) before it runs;
//! - isolation: `SET` is accepted and ignored, so no client can change the shared session
//!   (`SET datafusion.*` would otherwise reach every connection);
//! - `current_setting(name)` for the settings clients probe (Grafana's version check);
//! - statement errors are [`QueryError`]s, sent with their SQLSTATE
//!   ([`QueryError::sqlstate`], the one table the HTTP API uses too): seam's own, and
//!   DataFusion's, from seam's hooks or from inside `datafusion-postgres`, classified by their
//!   type ([`QueryError::from_boxed`]), never by their text (the protocol's own errors, such
//!   as a failed login, keep pgwire's codes);
//! - statements run on the query runtime ([`crate::runtime`]): the tasks a plan spawns, and
//!   the production of its rows, which reach the connection through a channel, so a heavy
//!   statement does not hold up ingest, and its time limit and cancel requests are kept by the
//!   connection's own runtime; a result past `query.max_result_bytes` ends with SQLSTATE
//!   54000, and a panic in a statement with XX000 (the connection stays usable);
//! - catalog queries DataFusion cannot plan rewritten into ones it can ([`rewrite`]:
//!   Grafana's search-path constraint, PostgreSQL type names in `information_schema`).
//!
//! The database is `seam`. Users authenticate with SCRAM-SHA-256 when configured
//! ([`PgSecurity`]); TLS comes from a configured certificate and key.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{ColumnarValue, LogicalPlan, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    ScramAuth, gen_salted_password, random_nonce,
};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password,
};
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::FieldInfo;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::api::{ClientPortalStore, Type};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use futures::{FutureExt as _, Sink};
use seam_auth::{CredentialStore, Principal, TlsReloader};
use tokio::net::TcpListener;

use crate::audit::{AuditScope, AuditSink};
use crate::error::QueryError;
use crate::policy::{Kind, Session, check_plan, classify};
use crate::runtime::{InRuntime, QueryRuntime, Task, panic_message};
use crate::session::{CATALOG, PgRuntime, QueryService};

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

/// A query error as the PostgreSQL error the client gets: the one place the listener builds
/// an error, with the SQLSTATE of [`QueryError::sqlstate`].
fn pg_error(e: &QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        e.sqlstate().into(),
        e.to_string(),
    )))
}

/// A DataFusion error as the PostgreSQL error the client gets (classified by its type).
fn api_error(e: DataFusionError) -> PgWireError {
    pg_error(&QueryError::from(e))
}

/// A plan with no rows, for statements answered without running anything.
fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

/// The answer to a session statement seam takes over (`SET` is ignored, `DISCARD` has nothing
/// to discard), or `None` for the hooks after seam's (transactions).
fn session_answer(s: Session) -> Option<PgWireResult<Response>> {
    match s {
        Session::Set => Some(Ok(Response::Execution(Tag::new("SET")))),
        Session::Discard => Some(Ok(Response::Execution(Tag::new("DISCARD ALL")))),
        Session::Transaction => None,
    }
}

/// Applies seam's allow-list to every statement, plans and checks reads and runs them from
/// the checked plan, ignores `SET`; runs before `datafusion-postgres`'s own hooks.
#[derive(Debug)]
struct SeamGuardHook {
    credentials: Arc<CredentialStore>,
}

/// The principal of a connection: its PostgreSQL user's key, or anonymous when seam has no
/// credentials (loopback only). A user without a key (impossible after a SCRAM login) has
/// no roles.
fn principal_of(client: &(impl ClientInfo + ?Sized), credentials: &CredentialStore) -> Principal {
    if !credentials.required() {
        return Principal::anonymous();
    }
    let user = client.metadata().get("user").map_or("", String::as_str);
    credentials
        .current()
        .pg_principal(user)
        .unwrap_or_else(|| Principal {
            name: user.to_string(),
            roles: Vec::new(),
            method: seam_auth::AuthMethod::Scram,
        })
}

#[async_trait]
impl QueryHook for SeamGuardHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match classify(statement) {
            Err(e) => return Some(Err(pg_error(&e))),
            Ok(Kind::Session(s)) => return session_answer(s),
            Ok(Kind::Show) => {
                if let Some(r) = SetShowHook
                    .handle_simple_query(statement, ctx, &mut *client)
                    .await
                {
                    return Some(r);
                }
            }
            Ok(Kind::Read) => {}
        }
        if client.transaction_status() == TransactionStatus::Error {
            return Some(Err(pg_error(&QueryError::TransactionAborted)));
        }
        // Every read is planned and checked here, then run from that plan (never handed
        // to DataFusion's own SQL path, which would allow writes).
        let principal = principal_of(&*client, &self.credentials);
        let result = async {
            let state = ctx.state();
            let plan = match state
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    statement.clone(),
                )))
                .await
            {
                Ok(plan) => plan,
                // From the statement's text, as `datafusion-postgres` would plan it.
                Err(_) => state
                    .create_logical_plan(&statement.to_string())
                    .await
                    .map_err(api_error)?,
            };
            check_plan(&plan, &principal).map_err(|e| pg_error(&e))?;
            // Results with map columns (attributes, headers) are sent as JSON text: the wire
            // encoder has no map type.
            let plan = if has_map(&plan) {
                maps_as_json(plan).map_err(api_error)?
            } else {
                plan
            };
            let df = ctx.execute_logical_plan(plan).await.map_err(api_error)?;
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe(
                df,
                &Format::UnifiedText,
                Some(options),
            )
            .await
            .map(Response::Query)
        }
        .await;
        Some(result)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // Reads are planned by `datafusion-postgres` and checked by [`SeamParser`].
        match classify(statement) {
            Err(e) => Some(Err(pg_error(&e))),
            Ok(Kind::Session(Session::Discard)) => Some(Ok(empty_plan())),
            Ok(_) => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match classify(statement) {
            Err(e) => Some(Err(pg_error(&e))),
            Ok(Kind::Session(s)) => session_answer(s),
            Ok(_) => None,
        }
    }
}

/// Applies `f` to a text argument, scalar or array (the body of seam's text UDFs).
fn map_text(args: &[ColumnarValue], f: impl Fn(&str) -> Option<String>) -> DfResult<ColumnarValue> {
    match args.first() {
        Some(ColumnarValue::Scalar(v)) => {
            let name = match v {
                ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                    s.as_deref()
                }
                _ => None,
            };
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(name.and_then(&f))))
        }
        Some(ColumnarValue::Array(a)) => {
            let names = cast(a, &DataType::Utf8)?;
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .unwrap_or_else(|| StringArray::from(Vec::<Option<&str>>::new()));
            let out: StringArray = names.iter().map(|n| n.and_then(&f)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }
        None => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
    }
}

fn current_setting(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    map_text(args, |name| {
        SETTINGS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| (*v).to_string())
    })
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
        "seam_pg_type",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(seam_pg_type),
    ));
    ctx.register_udf(create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(current_setting),
    ));
    Ok(Arc::new(ctx))
}

/// Serves the PostgreSQL wire protocol on `listener` until the task is dropped (open
/// connections end with it).
///
/// # Errors
/// When `ctx` was not made by [`context`] (it carries the query runtime); accept errors are
/// logged and retried.
pub async fn serve(
    ctx: Arc<SessionContext>,
    listener: TcpListener,
    security: PgSecurity,
) -> std::io::Result<()> {
    let limits = ctx
        .state()
        .config()
        .get_extension::<PgRuntime>()
        .ok_or_else(|| {
            std::io::Error::other(
                "the PostgreSQL session has no query runtime: make it with pgwire::context",
            )
        })?;
    let credentials = Arc::clone(&security.credentials);
    let passwords = credentials
        .required()
        .then(|| Arc::new(Passwords::new(Arc::clone(&credentials))));
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(SeamGuardHook {
            credentials: Arc::clone(&credentials),
        }),
        // No cursor hook: cursors are refused (0A000) by the guard.
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let connections = Arc::new(ConnectionManager::new());
    let inner = Arc::new(DfSessionService::new_with_hooks(ctx, hooks));
    let handlers = SeamHandlers {
        session: Arc::new(SeamSession {
            timeout: security.statement_timeout,
            parser: Arc::new(SeamParser {
                inner: ExtendedQueryHandler::query_parser(&*inner),
                credentials: Arc::clone(&credentials),
            }),
            inner,
            credentials: Arc::clone(&credentials),
            audit: security.audit.clone(),
            runtime: Arc::clone(&limits.runtime),
            max_result_bytes: limits.max_result_bytes,
        }),
        startup: Arc::new(SeamStartup {
            connections: Arc::clone(&connections),
        }),
        cancel: Arc::new(DefaultCancelHandler::new(Arc::clone(&connections))),
        connections,
        passwords,
    };
    let handlers = Arc::new(handlers);
    // seam accepts itself (rather than datafusion-postgres' serve) so that the socket is
    // bound before start returns, and each connection gets the current TLS certificate.
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = security
            .tls
            .as_ref()
            .map(|t| t.acceptor(seam_auth::tls::Side::Postgres));
        let handlers = Arc::clone(&handlers);
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                tracing::debug!(%addr, error = %e, "PostgreSQL connection ended with an error");
            }
        });
    }
}

/// Rewrites the catalog queries of clients whose SQL DataFusion cannot plan, into
/// equivalents it can: Grafana's schema constraint (`search_path` split with
/// `string_to_array` and `generate_series`, and `user`) becomes `IN ('public')`, and
/// `information_schema.columns.data_type` is shown in PostgreSQL's type names.
pub fn rewrite(sql: &str) -> std::borrow::Cow<'_, str> {
    static SEARCH_PATH: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?is)IN\s*\(\s*SELECT\s+CASE\s+WHEN\s+trim\(s\[i\]\).*?string_to_array\(\s*current_setting\(\s*'search_path'\s*\)\s*,\s*','\s*\)\s+s\s*\)",
        )
        .unwrap_or_else(|e| panic!("search_path pattern: {e}"))
    });
    static DATA_TYPE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)\bdata_type(\s+AS\s)")
            .unwrap_or_else(|e| panic!("data_type pattern: {e}"))
    });
    static BARE_DATA_TYPE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)(^|[^.(\w])data_type(\s*,|\s+FROM\b)")
            .unwrap_or_else(|e| panic!("data_type pattern: {e}"))
    });
    let mut out = std::borrow::Cow::Borrowed(sql);
    if out.contains("search_path") && SEARCH_PATH.is_match(&out) {
        out = std::borrow::Cow::Owned(SEARCH_PATH.replace_all(&out, "IN ('public')").into_owned());
    }
    if out
        .to_ascii_lowercase()
        .contains("information_schema.columns")
    {
        if DATA_TYPE.is_match(&out) {
            out = std::borrow::Cow::Owned(
                DATA_TYPE
                    .replace_all(&out, "seam_pg_type(data_type)$1")
                    .into_owned(),
            );
        }
        // `SELECT column_name, data_type FROM …` (BI tools): same name, PostgreSQL values.
        if BARE_DATA_TYPE.is_match(&out) {
            out = std::borrow::Cow::Owned(
                BARE_DATA_TYPE
                    .replace_all(&out, "${1}seam_pg_type(data_type) AS data_type$2")
                    .into_owned(),
            );
        }
    }
    out
}

/// PostgreSQL's name for an Arrow type as DataFusion's `information_schema` writes it.
fn pg_type_name(arrow: &str) -> &'static str {
    let a = arrow.trim();
    match a {
        "Utf8" | "LargeUtf8" | "Utf8View" => "text",
        "Int8" | "Int16" | "UInt8" => "smallint",
        "Int32" | "UInt16" => "integer",
        "Int64" | "UInt32" | "UInt64" => "bigint",
        "Float16" | "Float32" => "real",
        "Float64" => "double precision",
        "Boolean" => "boolean",
        "Date32" | "Date64" => "date",
        "Binary" | "LargeBinary" | "BinaryView" => "bytea",
        _ if a.starts_with("Timestamp(") && (a.contains(", Some(") || a.contains('"')) => {
            "timestamp with time zone"
        }
        _ if a.starts_with("Timestamp(") => "timestamp without time zone",
        _ if a.starts_with("Decimal") => "numeric",
        _ if a.starts_with("List(")
            || a.starts_with("LargeList(")
            || a.starts_with("FixedSizeList(") =>
        {
            "ARRAY"
        }
        _ if a.starts_with("Interval") => "interval",
        _ => "USER-DEFINED",
    }
}

fn seam_pg_type(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    map_text(args, |n| Some(pg_type_name(n).to_string()))
}

/// Types the wire encoder cannot send: maps, and lists or structs that hold a map.
fn unsendable(t: &DataType) -> bool {
    match t {
        DataType::Map(_, _) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            matches!(f.data_type(), DataType::Struct(_)) || unsendable(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| unsendable(f.data_type())),
        _ => false,
    }
}

/// Whether a plan's output has columns the wire encoder cannot send.
fn has_map(plan: &LogicalPlan) -> bool {
    plan.schema()
        .fields()
        .iter()
        .any(|f| unsendable(f.data_type()))
}

/// `plan` with its map columns turned into JSON object text (`seam_map_json`), same names.
fn maps_as_json(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let col = Expr::Column(datafusion::common::Column::from((qualifier, field)));
            let t = field.data_type();
            if matches!(t, DataType::Map(_, _)) {
                Arc::new(text_udf("seam_map_json", t, map_json))
                    .call(vec![col])
                    .alias(field.name())
            } else if unsendable(t) {
                Arc::new(text_udf("seam_as_text", t, display_text))
                    .call(vec![col])
                    .alias(field.name())
            } else {
                col
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(exprs)?.build()
}

/// A UDF from `input` to text, made for one column's exact type.
fn text_udf(
    name: &str,
    input: &DataType,
    f: fn(&[ColumnarValue]) -> DfResult<ColumnarValue>,
) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        vec![input.clone()],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(f),
    )
}

/// Any value as Arrow's display text (lists of structs such as span events and links).
fn display_text(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions as Display};
    let Some(arg) = args.first() else {
        return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
    };
    let array = arg.to_array(1)?;
    let fmt = ArrayFormatter::try_new(array.as_ref(), &Display::default())?;
    let out: StringArray = (0..array.len())
        .map(|i| array.is_valid(i).then(|| fmt.value(i).to_string()))
        .collect();
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Utf8(
            out.iter().next().flatten().map(str::to_string),
        )),
        ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out) as ArrayRef),
    })
}

/// A `Map<Utf8, Utf8>` as JSON object text.
fn map_json(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    use datafusion::arrow::array::{Array, MapArray};
    let Some(arg) = args.first() else {
        return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
    };
    let array = arg.to_array(1)?;
    let Some(maps) = array.as_any().downcast_ref::<MapArray>() else {
        return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
    };
    let keys = cast(maps.keys(), &DataType::Utf8)?;
    let values = cast(maps.values(), &DataType::Utf8)?;
    let (Some(keys), Some(values)) = (
        keys.as_any().downcast_ref::<StringArray>(),
        values.as_any().downcast_ref::<StringArray>(),
    ) else {
        return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
    };
    let offsets = maps.value_offsets();
    let out: StringArray = (0..maps.len())
        .map(|i| {
            maps.is_valid(i).then(|| {
                let mut obj = serde_json::Map::new();
                for j in offsets[i] as usize..offsets[i + 1] as usize {
                    let v = if values.is_valid(j) {
                        serde_json::Value::String(values.value(j).to_string())
                    } else {
                        serde_json::Value::Null
                    };
                    obj.insert(keys.value(j).to_string(), v);
                }
                serde_json::Value::Object(obj).to_string()
            })
        })
        .collect();
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Utf8(
            out.iter().next().flatten().map(str::to_string),
        )),
        ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out) as ArrayRef),
    })
}

/// `datafusion-postgres`'s session, behind [`rewrite`], with every statement audited.
struct SeamSession {
    inner: Arc<DfSessionService>,
    parser: Arc<SeamParser>,
    timeout: std::time::Duration,
    credentials: Arc<CredentialStore>,
    audit: Option<Arc<dyn AuditSink>>,
    runtime: Arc<QueryRuntime>,
    max_result_bytes: usize,
}

impl SeamSession {
    fn audit_scope<C: ClientInfo>(&self, client: &C, sql: &str) -> AuditScope {
        AuditScope::start(
            self.audit.clone(),
            "query",
            &principal_of(client, &self.credentials),
            "postgres",
            Some(client.socket_addr().to_string()),
            Some(sql.to_string()),
        )
    }

    /// Runs `work` (`datafusion-postgres` planning a statement and starting it) with the
    /// query runtime as the current one, so the plan's tasks run there; a panic becomes
    /// XX000.
    async fn run<T: Send>(
        &self,
        work: impl Future<Output = PgWireResult<T>> + Send,
    ) -> PgWireResult<T> {
        let work = InRuntime::new(self.runtime.handle().clone(), work);
        match std::panic::AssertUnwindSafe(work).catch_unwind().await {
            Ok(r) => r,
            Err(payload) => Err(pg_error(&QueryError::Internal(format!(
                "the statement failed inside seam ({}); seam keeps serving",
                panic_message(payload.as_ref())
            )))),
        }
    }

    /// `resp` with its rows produced on the query runtime and capped at `max_result_bytes`.
    fn offload(&self, resp: Response) -> Response {
        offload(resp, self.runtime.handle(), self.max_result_bytes)
    }
}

/// Rows in flight between a statement's task and its connection.
const ROWS_IN_FLIGHT: usize = 256;

/// `resp` with its rows produced by a task on `runtime` and sent through a channel: the
/// connection (on its own runtime) only forwards them, so its time limit and cancel request
/// act at once whatever the plan does; dropping the rows aborts the task.
fn offload(resp: Response, runtime: &tokio::runtime::Handle, max_bytes: usize) -> Response {
    use futures::StreamExt as _;
    match resp {
        Response::Query(mut q) => {
            let mut rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
            let (tx, rx) = tokio::sync::mpsc::channel::<PgWireResult<DataRow>>(ROWS_IN_FLIGHT);
            let task = Task::spawn(runtime, async move {
                while let Some(item) = rows.next().await {
                    let last = item.is_err();
                    if tx.send(item).await.is_err() || last {
                        break;
                    }
                }
            });
            let state = Offloaded {
                rx,
                task,
                sent: 0,
                max_bytes,
                done: false,
            };
            q.data_rows = Box::pin(futures::stream::unfold(state, |mut s| async move {
                let item = s.next().await?;
                Some((item, s))
            }));
            Response::Query(q)
        }
        other => other,
    }
}

/// The receiving end of [`offload`].
struct Offloaded {
    rx: tokio::sync::mpsc::Receiver<PgWireResult<DataRow>>,
    task: Task<()>,
    sent: usize,
    max_bytes: usize,
    done: bool,
}

impl Offloaded {
    async fn next(&mut self) -> Option<PgWireResult<DataRow>> {
        if self.done {
            return None;
        }
        let item = match self.rx.recv().await {
            Some(Ok(row)) => {
                self.sent = self.sent.saturating_add(row.data.len());
                if self.sent <= self.max_bytes {
                    return Some(Ok(row));
                }
                Some(Err(pg_error(&QueryError::ResultTooLarge(self.max_bytes))))
            }
            Some(Err(e)) => Some(Err(e)),
            // The task ended: normally, or by a panic.
            None => self.task.join().await.err().map(|e| Err(pg_error(&e))),
        };
        self.done = true;
        self.task.abort();
        item
    }
}

/// The audit outcome and message of an error sent to a PostgreSQL client.
fn audit_outcome(e: &PgWireError) -> (&'static str, String) {
    match e {
        PgWireError::UserError(info) => {
            let outcome = match info.code.as_str() {
                "42501" => "refused",
                "57014" if info.message.contains("user request") => "cancelled",
                _ => "error",
            };
            (outcome, info.message.clone())
        }
        other => ("error", other.to_string()),
    }
}

/// Records a statement that failed before sending rows; gives the error back.
fn audit_error(scope: AuditScope, e: PgWireError) -> PgWireError {
    let (outcome, message) = audit_outcome(&e);
    scope.finish(outcome, None, Some(message));
    e
}

/// Counts the rows a statement sends and records its audit row when the stream ends or is
/// dropped (a portal fetched in part, a client that went away).
struct RowAudit {
    scope: Option<AuditScope>,
    rows: i64,
    error: Option<(&'static str, String)>,
}

impl RowAudit {
    /// Counts a row, or keeps the error that ended the stream.
    fn see(&mut self, error: Option<&PgWireError>) {
        match error {
            None => self.rows += 1,
            Some(e) => self.error = Some(audit_outcome(e)),
        }
    }
}

impl Drop for RowAudit {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take() {
            match self.error.take() {
                Some((outcome, message)) => scope.finish(outcome, Some(self.rows), Some(message)),
                None => scope.finish("ok", Some(self.rows), None),
            }
        }
    }
}

/// `resp` with its rows counted into `scope`.
fn audited(resp: Response, scope: AuditScope) -> Response {
    use futures::StreamExt as _;
    match resp {
        Response::Query(mut q) => {
            let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
            let mut audit = RowAudit {
                scope: Some(scope),
                rows: 0,
                error: None,
            };
            q.data_rows = Box::pin(rows.map(move |item| {
                audit.see(item.as_ref().err());
                item
            }));
            Response::Query(q)
        }
        Response::Error(info) => {
            let outcome = if info.code == "42501" {
                "refused"
            } else {
                "error"
            };
            scope.finish(outcome, None, Some(info.message.clone()));
            Response::Error(info)
        }
        other => {
            scope.finish("ok", None, None);
            other
        }
    }
}

/// What stops a statement: its deadline, or a cancel request for its connection.
#[derive(Clone)]
struct Stop {
    /// `query.timeout`, for the error past the deadline.
    timeout: std::time::Duration,
    deadline: Option<tokio::time::Instant>,
    cancelled: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Stop {
    /// The stop of the statement `client` is about to run: arms the connection's cancel
    /// handle (registered at startup) for it.
    async fn arm<C: ClientInfo>(client: &C, timeout: std::time::Duration) -> Self {
        let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
        let cancelled = match client
            .session_extensions()
            .get::<Arc<pgwire::api::ConnectionHandle>>()
        {
            Some(handle) => {
                let rx = handle.start_query().await;
                let (tx, watch) = tokio::sync::watch::channel(false);
                // Ends when the request fires, or when the next statement replaces it.
                tokio::spawn(async move {
                    if rx.await.is_ok() {
                        let _ = tx.send(true);
                    }
                });
                Some(watch)
            }
            None => None,
        };
        Self {
            timeout,
            deadline,
            cancelled,
        }
    }

    /// Resolves with the reason once the statement must stop.
    async fn reached(&mut self) -> PgWireError {
        let (deadline, timeout) = (self.deadline, self.timeout);
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let cancel = async {
            match &mut self.cancelled {
                Some(w) => {
                    if w.wait_for(|v| *v).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = timer => pg_error(&QueryError::Timeout(timeout)),
            _ = cancel => pg_error(&QueryError::Cancelled),
        }
    }

    /// Runs `work` (planning) until the stop.
    async fn run<T>(&self, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
        let mut stop = self.clone();
        tokio::select! {
            r = work => r,
            e = stop.reached() => Err(e),
        }
    }
}

/// `resp` with its row stream cut at `stop` (an error row, then the end): rows are produced
/// while they are sent, after the handler returned.
fn with_stop(resp: Response, stop: &Stop) -> Response {
    use futures::StreamExt as _;
    match resp {
        Response::Query(mut q) => {
            let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
            q.data_rows = Box::pin(futures::stream::unfold(
                (rows, stop.clone(), false),
                |(mut rows, mut stop, done)| async move {
                    if done {
                        return None;
                    }
                    tokio::select! {
                        item = rows.next() => item.map(|i| (i, (rows, stop, false))),
                        e = stop.reached() => Some((Err(e), (rows, stop, true))),
                    }
                },
            ));
            Response::Query(q)
        }
        other => other,
    }
}

/// `datafusion-postgres`'s parser, behind [`rewrite`] and seam's check of the plan (read-only,
/// admin-only tables).
struct SeamParser {
    inner: Arc<datafusion_postgres::Parser>,
    credentials: Arc<CredentialStore>,
}

type DfStatement = <datafusion_postgres::Parser as QueryParser>::Statement;

#[async_trait]
impl QueryParser for SeamParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = rewrite(sql);
        let parsed = match std::panic::AssertUnwindSafe(self.inner.parse_sql(client, &sql, types))
            .catch_unwind()
            .await
        {
            Ok(parsed) => parsed?,
            Err(payload) => {
                return Err(pg_error(&QueryError::Internal(format!(
                    "planning failed inside seam ({})",
                    panic_message(payload.as_ref())
                ))));
            }
        };
        if let Some((_, Some((_, plan)))) = &parsed {
            check_plan(plan, &principal_of(client, &self.credentials)).map_err(|e| pg_error(&e))?;
        }
        // As in the simple protocol: map columns are sent as JSON text.
        Ok(parsed.map(|(text, planned)| {
            let planned = planned.map(|(statement, plan)| {
                let plan = if has_map(&plan) {
                    maps_as_json(plan.clone()).unwrap_or(plan)
                } else {
                    plan
                };
                (statement, plan)
            });
            (text, planned)
        }))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}

#[async_trait]
impl SimpleQueryHandler for SeamSession {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = rewrite(query);
        let stop = Stop::arm(&*client, self.timeout).await;
        let scope = self.audit_scope(&*client, query);
        let responses = match stop
            .run(self.run(SimpleQueryHandler::do_query(&*self.inner, client, &sql)))
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(audit_error(scope, e)),
        };
        // One audit row per statement of the query string (each with the whole string).
        let mut scope = Some(scope);
        let n = responses.len();
        Ok(responses
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let s = if i + 1 == n { scope.take() } else { None }
                    .unwrap_or_else(|| self.audit_scope(&*client, query));
                audited(with_stop(self.offload(r), &stop), s)
            })
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for SeamSession {
    type Statement = DfStatement;
    type QueryParser = SeamParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stop = Stop::arm(&*client, self.timeout).await;
        let scope = self.audit_scope(&*client, &portal.statement.statement.0);
        let response = match stop
            .run(self.run(ExtendedQueryHandler::do_query(
                &*self.inner,
                client,
                portal,
                max_rows,
            )))
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(audit_error(scope, e)),
        };
        Ok(audited(with_stop(self.offload(response), &stop), scope))
    }
}

/// The startup handler without users (loopback only); registers each connection so
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

/// `datafusion-postgres`'s query handling, with seam's error handler: DataFusion's errors get
/// the SQLSTATE of their [`QueryError`] instead of the generic XX000. (Its own handler
/// factory is private, so the handlers are assembled here the same way.)
struct SeamHandlers {
    session: Arc<SeamSession>,
    startup: Arc<SeamStartup>,
    cancel: Arc<DefaultCancelHandler>,
    connections: Arc<ConnectionManager>,
    passwords: Option<Arc<Passwords>>,
}

/// Who may connect, TLS, the statement time limit and the audit trail.
#[derive(Debug, Clone)]
pub struct PgSecurity {
    /// Longest a statement may run, planning and streaming its rows included (SQLSTATE
    /// 57014 past it); zero: no limit.
    pub statement_timeout: std::time::Duration,
    /// The keys: a key with a `pg_scram` verifier and the query or admin role logs in as
    /// user `name` with its secret as password (SCRAM-SHA-256). No keys configured: anyone
    /// may connect (seam allows that on loopback only).
    pub credentials: Arc<CredentialStore>,
    /// TLS, offered through the protocol's SSLRequest.
    pub tls: Option<Arc<TlsReloader>>,
    /// Where each statement's audit row goes.
    pub audit: Option<Arc<dyn AuditSink>>,
}

const SCRAM_ITERATIONS: usize = seam_auth::keys::SCRAM_ITERATIONS as usize;

/// SCRAM verifiers of the keys in force (the secrets themselves are never known).
struct Passwords {
    credentials: Arc<CredentialStore>,
    /// Answered for unknown users, so they fail like a wrong password (28P01).
    decoy: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    fn new(credentials: Arc<CredentialStore>) -> Self {
        let salt = random_nonce().into_bytes();
        let salted = gen_salted_password(&random_nonce(), &salt, SCRAM_ITERATIONS);
        Self {
            credentials,
            decoy: (salt, salted),
        }
    }
}

#[async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait's own signature elides it
impl AuthSource for Passwords {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let (salt, salted) = login
            .user()
            .and_then(|u| self.credentials.current().pg_verifier(u))
            .unwrap_or_else(|| self.decoy.clone());
        Ok(Password::new(Some(salt), salted))
    }
}

/// Open (no users configured) or SCRAM-SHA-256.
enum Startup {
    Open(Arc<SeamStartup>),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(h) => h.on_startup(client, message).await,
            Startup::Scram(h) => h.on_startup(client, message).await,
        }
    }
}

impl PgWireServerHandlers for SeamHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // A new handler per connection: SASL keeps the exchange's state.
        Arc::new(match &self.passwords {
            None => Startup::Open(Arc::clone(&self.startup)),
            Some(p) => {
                let mut scram = ScramAuth::new(Arc::clone(p) as Arc<dyn AuthSource>);
                scram.set_iterations(SCRAM_ITERATIONS);
                Startup::Scram(Box::new(
                    SASLAuthStartupHandler::new(
                        Arc::new(DefaultServerParameterProvider::default()),
                    )
                    .with_scram(scram)
                    .with_connection_manager(Arc::clone(&self.connections)),
                ))
            }
        })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStateErrors)
    }
}

/// Gives the errors `datafusion-postgres` and `arrow-pg` raise (DataFusion's, or the SQL
/// parser's, boxed) the SQLSTATE of their [`QueryError`], classified by type
/// ([`QueryError::from_boxed`]); seam's own errors are built from a [`QueryError`] already.
/// Sees every error of a connection before it is sent, rows of a streamed result included.
struct SqlStateErrors;

impl ErrorHandler for SqlStateErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let PgWireError::ApiError(inner) = error else {
            return;
        };
        let inner = std::mem::replace(inner, Box::new(std::fmt::Error));
        *error = pg_error(&QueryError::from_boxed(inner));
    }
}
