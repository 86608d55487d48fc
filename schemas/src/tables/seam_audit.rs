//! The `seam_audit` table: seam's own use, one row per SQL statement (HTTP API and
//! PostgreSQL wire), refused request and admin action. Readable by the admin role only;
//! append-only (SQL is read-only, and neither compaction nor the disk budget removes its
//! rows; only an explicit `storage.retention.tables.seam_audit` does).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow_schema::{ArrowError, DataType, SchemaRef};

use super::{field, schema_of, text, timestamp_type};
use crate::columns::{DURATION_MS, TIME};

/// SQL name.
pub const TABLE: &str = "seam_audit";
/// What one row is.
pub const DESCRIPTION: &str = "One row per SQL statement run through seam (HTTP API and \
     PostgreSQL wire, refused ones included), per request refused for its credentials on the \
     API or PostgreSQL listener, per explanation read (explain), and per admin action \
     (correlate, reload). Readable by the \
     admin role only; append-only.";

/// One row of `seam_audit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditEvent {
    /// When the statement or action started (ns since the epoch, UTC).
    pub time_ns: i64,
    /// `query`, `login`, `correlate` or `reload`.
    pub action: String,
    /// Who: the key or PostgreSQL user name, `cert:…`, `anonymous`, or empty when unknown.
    pub principal: String,
    /// The principal's roles, comma-separated.
    pub roles: String,
    /// `key`, `scram`, `certificate`, `anonymous`, `none` (refused before one was known) or
    /// `local` (a signal or the command line on the server's machine).
    pub auth_method: String,
    /// `http`, `postgres` or `signal`.
    pub protocol: String,
    /// The client's address and port.
    pub client_addr: Option<String>,
    /// The SQL as sent (literals kept) or the action's parameters.
    pub statement: Option<String>,
    /// Rows returned.
    pub rows: Option<i64>,
    /// Time from start to the last row sent, in milliseconds.
    pub duration_ms: f64,
    /// `ok`, `error`, `refused`, `cancelled` or `unauthenticated`.
    pub outcome: String,
    /// The error the client was given.
    pub error: Option<String>,
}

/// Arrow schema of `seam_audit`.
pub fn schema() -> SchemaRef {
    schema_of(vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "When the statement or action started (UTC).",
        ),
        field(
            "action",
            DataType::Utf8,
            false,
            "query (a SQL statement), login (a request refused for its credentials), correlate (POST /api/v1/correlate, seam correlate), explain (GET /api/v1/requests/{id}/explain, seam explain: the id in statement) or reload (keys and TLS files re-read on SIGHUP or change).",
        ),
        field(
            "principal",
            DataType::Utf8,
            false,
            "Who: the key's name (also the PostgreSQL user name), cert:<fingerprint> for a client certificate, anonymous when seam has no credentials configured (loopback only), empty when the credential was missing or wrong.",
        ),
        field(
            "roles",
            DataType::Utf8,
            false,
            "The principal's roles, comma-separated (admin, ingest, query).",
        ),
        field(
            "auth_method",
            DataType::Utf8,
            false,
            "key (bearer token, Basic or x-api-key), scram (PostgreSQL SCRAM-SHA-256), certificate, anonymous, none (refused before a principal was known) or local (a signal on the server's machine).",
        ),
        field(
            "protocol",
            DataType::Utf8,
            false,
            "http (the API listener), postgres (the PostgreSQL wire listener) or signal.",
        ),
        text(
            "client_addr",
            "The client's address and port; NULL for local actions.",
        ),
        text(
            "statement",
            "The SQL exactly as sent, literals kept (extended protocol: with its $n placeholders), or the action's parameters (correlate: since=...).",
        ),
        field(
            "rows",
            DataType::Int64,
            true,
            "Rows returned to the client; NULL when the statement failed before returning rows.",
        ),
        field(
            DURATION_MS,
            DataType::Float64,
            false,
            "From the start to the last row sent (or the error), in milliseconds.",
        ),
        field(
            "outcome",
            DataType::Utf8,
            false,
            "ok, error (the statement failed: syntax, unknown table, time or memory limit), refused (not allowed: a write, or seam_audit without the admin role), cancelled, or unauthenticated.",
        ),
        text(
            "error",
            "The error message the client was given; NULL when ok.",
        ),
    ])
}

/// The rows of `events` as a batch of [`schema`].
///
/// # Errors
/// Never for events built by seam (the arrays match the schema by construction).
pub fn batch(events: &[AuditEvent]) -> Result<RecordBatch, ArrowError> {
    let s = |f: fn(&AuditEvent) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(events.iter().map(f)))
    };
    let o = |f: fn(&AuditEvent) -> Option<&str>| -> ArrayRef {
        Arc::new(events.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from_iter_values(events.iter().map(|e| e.time_ns))
                .with_timezone("UTC"),
        ),
        s(|e| &e.action),
        s(|e| &e.principal),
        s(|e| &e.roles),
        s(|e| &e.auth_method),
        s(|e| &e.protocol),
        o(|e| e.client_addr.as_deref()),
        o(|e| e.statement.as_deref()),
        Arc::new(events.iter().map(|e| e.rows).collect::<Int64Array>()),
        Arc::new(Float64Array::from_iter_values(
            events.iter().map(|e| e.duration_ms),
        )),
        s(|e| &e.outcome),
        o(|e| e.error.as_deref()),
    ];
    RecordBatch::try_new(schema(), columns)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_make_a_batch_of_the_schema() {
        let e = AuditEvent {
            time_ns: 1,
            action: "query".into(),
            principal: "ops".into(),
            roles: "admin".into(),
            auth_method: "key".into(),
            protocol: "http".into(),
            statement: Some("SELECT 1".into()),
            rows: Some(1),
            outcome: "ok".into(),
            ..Default::default()
        };
        let b = batch(&[e.clone(), e]).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema(), schema());
    }
}
