//! Query errors and how each reaches the user: the one table from error kind to HTTP status
//! and to SQLSTATE (the PostgreSQL wire protocol).

use std::time::Duration;

use datafusion::error::DataFusionError;

/// Why a statement did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement would change data, settings or touch files: seam's SQL is read-only.
    #[error("statement refused: seam's SQL is read-only ({0})")]
    Refused(String),
    /// The principal may not read a table it names (`seam_audit` needs the admin role).
    #[error("{0}")]
    Forbidden(String),
    /// The SQL is malformed or names something that does not exist.
    #[error("{0}")]
    Invalid(String),
    /// The statement ran past the time limit.
    #[error("query cancelled: it ran longer than the limit of {0:?}")]
    Timeout(Duration),
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
    /// A feature seam does not offer (cursors).
    #[error("{0}")]
    Unsupported(String),
    /// Something failed inside seam.
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "refused",
            QueryError::Forbidden(_) => "forbidden",
            QueryError::Invalid(_) => "invalid",
            QueryError::Timeout(_) => "timeout",
            QueryError::ResourcesExhausted(_) => "resources_exhausted",
            QueryError::ResultTooLarge(_) => "result_too_large",
            QueryError::Unsupported(_) => "unsupported",
            QueryError::Internal(_) => "internal",
        }
    }

    /// The SQLSTATE the PostgreSQL listener answers with (`XX000` lets the listener's error
    /// handler pick one from the message).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QueryError::Refused(_) | QueryError::Forbidden(_) => "42501",
            QueryError::Timeout(_) => "57014",
            QueryError::ResourcesExhausted(_) => "53200",
            QueryError::ResultTooLarge(_) => "54000",
            QueryError::Unsupported(_) => "0A000",
            QueryError::Invalid(_) | QueryError::Internal(_) => "XX000",
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            QueryError::Refused(_) | QueryError::Forbidden(_) => 403,
            QueryError::Invalid(_) => 400,
            QueryError::Timeout(_) => 408,
            QueryError::ResourcesExhausted(_)
            | QueryError::ResultTooLarge(_)
            | QueryError::Unsupported(_) => 400,
            QueryError::Internal(_) => 500,
        }
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        let root = e.find_root();
        match root {
            DataFusionError::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_)
            | DataFusionError::Configuration(_)
            | DataFusionError::ArrowError(..) => QueryError::Invalid(root.to_string()),
            _ => QueryError::Internal(root.to_string()),
        }
    }
}
