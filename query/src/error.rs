//! Query errors and how each reaches the user: the one table from error kind to HTTP status
//! and to SQLSTATE (the PostgreSQL wire protocol), used by both protocols.
//!
//! Takes DataFusion's errors (and the boxed errors `datafusion-postgres` hands the PostgreSQL
//! listener); gives a [`QueryError`] whose variant is read from the error's type: the deepest
//! DataFusion error of the chain ([`DataFusionError::find_root`] sees through `Context`,
//! `Diagnostic`, `Shared`, `Collection`, `External` and Arrow's `ExternalError`), then its
//! variant, its [`SchemaError`] or its [`ArrowError`]. The variant alone gives the SQLSTATE
//! ([`QueryError::sqlstate`]), the HTTP status ([`QueryError::http_status`]) and the HTTP
//! `kind` ([`QueryError::kind`]). DataFusion has no type for an unknown table or function:
//! that one case reads the start of the planning message, in this module only.

use std::error::Error as StdError;
use std::time::Duration;

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

/// Why a statement did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement would change data, settings or touch files: seam's SQL is read-only.
    #[error("statement refused: seam's SQL is read-only ({0})")]
    Refused(String),
    /// The principal may not read a table it names (`seam_audit` needs the admin role).
    #[error("{0}")]
    Forbidden(String),
    /// The SQL cannot be parsed.
    #[error("{0}")]
    Syntax(String),
    /// The SQL names a table that does not exist.
    #[error("{0}")]
    UndefinedTable(String),
    /// The SQL names a column that does not exist.
    #[error("{0}")]
    UndefinedColumn(String),
    /// The SQL calls a function (scalar, aggregate, window or table function) that does not
    /// exist.
    #[error("{0}")]
    UndefinedFunction(String),
    /// An integer division (or modulo) by zero.
    #[error("{0}")]
    DivisionByZero(String),
    /// A value that cannot be cast to the type asked for (`CAST('x' AS INT)`).
    #[error("{0}")]
    InvalidCast(String),
    /// Any other fault of the statement: types that do not fit, a feature DataFusion lacks,
    /// a bad request to the HTTP API.
    #[error("{0}")]
    Invalid(String),
    /// The statement ran past the time limit.
    #[error("query cancelled: it ran longer than the limit of {0:?}")]
    Timeout(Duration),
    /// A cancel request for the connection stopped the statement (PostgreSQL).
    #[error("canceling statement due to user request")]
    Cancelled,
    /// A statement sent inside a transaction that already failed (PostgreSQL).
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    TransactionAborted,
    /// The statement needed more memory than its limit, or a function would have built a
    /// value past `query.max_function_output_bytes`.
    #[error("query cancelled: it needed more memory than the limit ({0})")]
    ResourcesExhausted(String),
    /// The result grew past `query.max_result_bytes` (the limit, in bytes).
    #[error(
        "query cancelled: its result passed the limit of {0} bytes (query.max_result_bytes); \
         select fewer rows or columns, or aggregate"
    )]
    ResultTooLarge(usize),
    /// The SQL of an HTTP request is longer than `query.max_sql_bytes` (the limit, in bytes).
    #[error("SQL request body exceeds the limit of {0} bytes")]
    SqlTooLarge(usize),
    /// A feature seam does not offer (cursors).
    #[error("{0}")]
    Unsupported(String),
    /// Something failed inside seam.
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// A short machine-readable kind (the HTTP API's `kind`). Every fault of the SQL itself
    /// is `invalid`, whatever its SQLSTATE.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "refused",
            QueryError::Forbidden(_) => "forbidden",
            QueryError::Syntax(_)
            | QueryError::UndefinedTable(_)
            | QueryError::UndefinedColumn(_)
            | QueryError::UndefinedFunction(_)
            | QueryError::DivisionByZero(_)
            | QueryError::InvalidCast(_)
            | QueryError::Invalid(_) => "invalid",
            QueryError::Timeout(_) => "timeout",
            QueryError::Cancelled => "cancelled",
            QueryError::TransactionAborted => "transaction_aborted",
            QueryError::ResourcesExhausted(_) => "resources_exhausted",
            QueryError::ResultTooLarge(_) => "result_too_large",
            QueryError::SqlTooLarge(_) => "too_large",
            QueryError::Unsupported(_) => "unsupported",
            QueryError::Internal(_) => "internal",
        }
    }

    /// The SQLSTATE: what the PostgreSQL listener answers with, and the HTTP API's
    /// `sqlstate`.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QueryError::Refused(_) | QueryError::Forbidden(_) => "42501",
            QueryError::Syntax(_) => "42601",
            QueryError::UndefinedTable(_) => "42P01",
            QueryError::UndefinedColumn(_) => "42703",
            QueryError::UndefinedFunction(_) => "42883",
            QueryError::DivisionByZero(_) => "22012",
            QueryError::InvalidCast(_) => "22P02",
            QueryError::Timeout(_) | QueryError::Cancelled => "57014",
            // As `datafusion-postgres`' transaction hook answers the same case.
            QueryError::TransactionAborted => "25P01",
            QueryError::ResourcesExhausted(_) => "53200",
            QueryError::ResultTooLarge(_) | QueryError::SqlTooLarge(_) => "54000",
            QueryError::Unsupported(_) => "0A000",
            QueryError::Invalid(_) | QueryError::Internal(_) => "XX000",
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            QueryError::Refused(_) | QueryError::Forbidden(_) => 403,
            QueryError::Syntax(_)
            | QueryError::UndefinedTable(_)
            | QueryError::UndefinedColumn(_)
            | QueryError::UndefinedFunction(_)
            | QueryError::DivisionByZero(_)
            | QueryError::InvalidCast(_)
            | QueryError::Invalid(_) => 400,
            // HTTP has no cancel request; grouped with the time limit (same SQLSTATE).
            QueryError::Timeout(_) | QueryError::Cancelled => 408,
            // HTTP has no transactions.
            QueryError::TransactionAborted => 400,
            QueryError::ResourcesExhausted(_)
            | QueryError::ResultTooLarge(_)
            | QueryError::Unsupported(_) => 400,
            QueryError::SqlTooLarge(_) => 413,
            QueryError::Internal(_) => 500,
        }
    }

    /// The error of a boxed error, as `datafusion-postgres` and `arrow-pg` hand them to the
    /// PostgreSQL listener (`PgWireError::ApiError`): a DataFusion error, or sqlparser's
    /// [`ParserError`] when the listener's own parser refused the SQL; classified like any
    /// DataFusion error. Anything else is [`QueryError::Internal`].
    pub fn from_boxed(e: Box<dyn StdError + Send + Sync>) -> Self {
        // Unwraps a boxed DataFusion error; anything else becomes `External`.
        QueryError::from(DataFusionError::from(e))
    }

    /// The error of a DataFusion error, from the type of the deepest DataFusion error in its
    /// chain (see the module documentation).
    pub fn from_datafusion(e: &DataFusionError) -> Self {
        let root = e.find_root();
        match root {
            DataFusionError::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
            DataFusionError::SQL(..) => QueryError::Syntax(root.to_string()),
            DataFusionError::SchemaError(inner, _)
                if matches!(inner.as_ref(), SchemaError::FieldNotFound { .. }) =>
            {
                QueryError::UndefinedColumn(root.to_string())
            }
            DataFusionError::ArrowError(a, _) => from_arrow(a, root.to_string()),
            DataFusionError::Plan(m) => from_plan(m, root.to_string()),
            DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_)
            | DataFusionError::Configuration(_) => QueryError::Invalid(root.to_string()),
            // Not a DataFusion error (and none below it): the parser's own, or Arrow's.
            DataFusionError::External(inner) => {
                if let Some(a) = inner.downcast_ref::<ArrowError>() {
                    from_arrow(a, inner.to_string())
                } else if inner.downcast_ref::<ParserError>().is_some() {
                    QueryError::Syntax(inner.to_string())
                } else {
                    QueryError::Internal(inner.to_string())
                }
            }
            _ => QueryError::Internal(root.to_string()),
        }
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        QueryError::from_datafusion(&e)
    }
}

/// The error of an Arrow error (`message`: the text to show).
fn from_arrow(e: &ArrowError, message: String) -> QueryError {
    match e {
        ArrowError::DivideByZero => QueryError::DivisionByZero(message),
        ArrowError::CastError(_) => QueryError::InvalidCast(message),
        _ => QueryError::Invalid(message),
    }
}

/// The error of a planning message (`DataFusionError::Plan`; `shown`: the text to show):
/// [`QueryError::UndefinedTable`] or [`QueryError::UndefinedFunction`] when it names a missing
/// table or function, [`QueryError::Invalid`] otherwise.
///
/// The one place seam reads an error's text: DataFusion 55 reports these only as planning
/// text, with no variant, field or error code that says what was missing. The messages are
/// DataFusion's own, made with `plan_err!`/`plan_datafusion_err!` (a backtrace may follow):
/// - `table '<name>' not found`: the SQL planner's table lookup
///   (`datafusion/src/execution/session_state.rs`, `SessionContextProvider::get_table_source`);
/// - `No table named '<name>'`: `SessionContext::table` and `DataFrame` lookups;
/// - `Invalid function '<name>'.` (with a suggestion): `datafusion-sql`
///   (`src/expr/function.rs`), for scalar, aggregate and window functions;
/// - `table function '<name>' not found`: `SessionContextProvider::get_table_function_source`.
///
/// Only the start of the message is matched, so a name that holds these words changes
/// nothing. The unit tests plan real SQL against these texts: a DataFusion upgrade that
/// rewords them fails there, not in a client.
fn from_plan(message: &str, shown: String) -> QueryError {
    if (message.starts_with("table '") && message.contains("' not found"))
        || message.starts_with("No table named '")
    {
        QueryError::UndefinedTable(shown)
    } else if message.starts_with("Invalid function '")
        || (message.starts_with("table function '") && message.contains("' not found"))
    {
        QueryError::UndefinedFunction(shown)
    } else {
        QueryError::Invalid(shown)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::prelude::SessionContext;

    use super::*;

    /// The error of planning `sql`, or of running it when it plans.
    async fn error_of(sql: &str) -> QueryError {
        let ctx = SessionContext::new();
        let df = match ctx.sql(sql).await {
            Ok(df) => df,
            Err(e) => return QueryError::from(e),
        };
        match df.collect().await {
            Ok(batches) => panic!("{sql} ran: {batches:?}"),
            Err(e) => QueryError::from(e),
        }
    }

    #[tokio::test]
    async fn sqlstates_come_from_the_error_type() {
        for (sql, want) in [
            ("SELEC 1", "42601"),
            ("SELECT (1", "42601"),
            ("SELECT * FROM no_such_table", "42P01"),
            ("SELECT no_such_column FROM (SELECT 1 AS a) t", "42703"),
            ("SELECT t.no_such_column FROM (SELECT 1 AS a) t", "42703"),
            ("SELECT no_such_function(1)", "42883"),
            ("SELECT * FROM no_such_table_function(1)", "42883"),
            ("SELECT 1 / 0", "22012"),
            ("SELECT a / b FROM (VALUES (1, 0)) AS t(a, b)", "22012"),
            ("SELECT CAST('x' AS INT)", "22P02"),
            ("SELECT CAST(a AS INT) FROM (VALUES ('x')) AS t(a)", "22P02"),
        ] {
            let e = error_of(sql).await;
            assert_eq!(e.sqlstate(), want, "{sql}: {e:?}");
            // Faults of the SQL are one HTTP kind and status, whatever their SQLSTATE.
            assert_eq!(
                (e.kind(), e.http_status()),
                ("invalid", 400),
                "{sql}: {e:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_message_names_what_is_missing() {
        let e = error_of("SELECT * FROM no_such_table").await;
        assert!(e.to_string().contains("no_such_table"), "{e}");
        let e = error_of("SELECT no_such_column FROM (SELECT 1 AS a) t").await;
        assert!(e.to_string().contains("no_such_column"), "{e}");
    }

    #[test]
    fn wrapped_errors_are_classified_by_their_root() {
        let exhausted = || DataFusionError::ResourcesExhausted("pool".into());
        for e in [
            exhausted().context("while sorting"),
            DataFusionError::Shared(Arc::new(exhausted())),
            DataFusionError::ArrowError(
                Box::new(ArrowError::ExternalError(Box::new(exhausted()))),
                None,
            ),
            DataFusionError::External(Box::new(exhausted())),
            DataFusionError::Collection(vec![exhausted(), DataFusionError::Plan("x".into())]),
        ] {
            let q = QueryError::from(e);
            assert!(matches!(q, QueryError::ResourcesExhausted(_)), "{q:?}");
            assert_eq!(q.sqlstate(), "53200");
        }
        let divide = DataFusionError::from(ArrowError::DivideByZero).context("optimizer");
        assert_eq!(QueryError::from(divide).sqlstate(), "22012");
        let q = QueryError::from(DataFusionError::Internal("bug".into()));
        assert_eq!((q.sqlstate(), q.http_status()), ("XX000", 500));
    }

    #[test]
    fn boxed_errors_of_the_postgresql_listener() {
        // `datafusion-postgres` parses with sqlparser itself and boxes its error.
        let parser = ParserError::ParserError("Expected: an SQL statement, found: SELEC".into());
        let q = QueryError::from_boxed(Box::new(parser));
        assert!(matches!(q, QueryError::Syntax(_)), "{q:?}");
        assert!(q.to_string().contains("Expected"), "{q}");
        // `arrow-pg` boxes DataFusion errors of the row stream.
        let q = QueryError::from_boxed(Box::new(DataFusionError::ResourcesExhausted("x".into())));
        assert_eq!(q.sqlstate(), "53200");
        let q = QueryError::from_boxed(Box::new(ArrowError::DivideByZero));
        assert_eq!(q.sqlstate(), "22012");
        let q = QueryError::from_boxed("Unsupported Time32 unit".into());
        assert_eq!((q.sqlstate(), q.kind()), ("XX000", "internal"));
    }

    #[test]
    fn one_table_for_seams_own_errors() {
        for (e, sqlstate, status, kind) in [
            (QueryError::Refused("x".into()), "42501", 403, "refused"),
            (QueryError::Forbidden("x".into()), "42501", 403, "forbidden"),
            (
                QueryError::Unsupported("x".into()),
                "0A000",
                400,
                "unsupported",
            ),
            (
                QueryError::Timeout(Duration::from_secs(1)),
                "57014",
                408,
                "timeout",
            ),
            (QueryError::Cancelled, "57014", 408, "cancelled"),
            (
                QueryError::TransactionAborted,
                "25P01",
                400,
                "transaction_aborted",
            ),
            (
                QueryError::ResourcesExhausted("x".into()),
                "53200",
                400,
                "resources_exhausted",
            ),
            (
                QueryError::ResultTooLarge(1),
                "54000",
                400,
                "result_too_large",
            ),
            (QueryError::SqlTooLarge(1), "54000", 413, "too_large"),
            (QueryError::Invalid("x".into()), "XX000", 400, "invalid"),
            (QueryError::Internal("x".into()), "XX000", 500, "internal"),
        ] {
            assert_eq!(
                (e.sqlstate(), e.http_status(), e.kind()),
                (sqlstate, status, kind)
            );
        }
        // The audit and clients look for these words.
        assert!(QueryError::Cancelled.to_string().contains("user request"));
    }
}
