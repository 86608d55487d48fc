//! The gateway tables: `gateway_log_copies` (one row per stored copy of an APIM GatewayLogs
//! record) and the `gateway_logs` view over it (one row per gateway request).
//!
//! Takes nothing; gives the copies' schema and the view's SQL. The same request reaches seam
//! in several shapes (Event Hubs, the storage archive, a Log Analytics export days later);
//! the collector stores a copy only when it adds a field no earlier copy had, and the view
//! merges the copies of a request (`record_key`) into one row.
//!
//! The merge rule (one rule, for this view and for the correlator's gateway read, which
//! orders its copies by [`MERGE_ORDER`] and folds them the same way): copies are ranked by
//! acceptance, [`MERGE_ORDER`]; each column takes the value of the earliest-accepted copy
//! that has one; `time` and `ingest_time` are the earliest; the token identity
//! ([`crate::token::COLUMNS`]) is taken whole from the earliest-accepted copy with a
//! `token_id`, never mixed across copies. [`merge_expr`] gives each column's expression.

use arrow_schema::{DataType, Field, SchemaRef};

use super::{attribute_map_type, field, schema_of, text, timestamp_type};
use crate::columns::*;

/// SQL name of the stored copies.
pub const TABLE: &str = "gateway_log_copies";
/// What one row of the copies is.
pub const DESCRIPTION: &str = "One row per stored copy of an Azure API Management GatewayLogs \
     record, in whichever shape it arrived (Event Hubs, storage archive, Log Analytics, \
     AzureDiagnostics, self-hosted gateway, 2017 records). A copy is stored only when it adds \
     a field that no earlier copy of the same request had; query the `gateway_logs` view for \
     one row per request.";
/// SQL name of the merged view.
pub const VIEW: &str = "gateway_logs";
/// What one row of the view is.
pub const VIEW_DESCRIPTION: &str = "One row per gateway request: the copies in \
     `gateway_log_copies` with the same `record_key` merged. Each column takes the value of \
     the earliest-accepted copy that has one (copies ranked by ingest_time, then \
     source_format, source_file, source_line); `time` and `ingest_time` are the earliest \
     (`ingest_time`: when seam first accepted the request); the token columns (token_id to \
     token_type) come together from the earliest-accepted copy with a token_id, never mixed \
     across copies. The correlator merges the copies it reads by the same rule \
     (docs/correlation.md). Columns are those of `gateway_log_copies` without `raw`, \
     `source_format`, `source_file` and `source_line`, plus `copies` (bigint: stored copies) \
     and `source_formats` (list<text>: the shapes it arrived in).";

/// The acceptance order of the copies of one request, earliest first: an SQL `ORDER BY`
/// list (ascending, NULLs last as the engine sorts them by default). A copy is identified by
/// when and where it was accepted, so the order is total in practice. The `gateway_logs`
/// view ranks copies by it inside `first_value`; the correlator's gateway read returns its
/// copies in it, so that folding them first-value-first gives the view's values.
pub const MERGE_ORDER: &str = "ingest_time, source_format, source_file, source_line";

fn ms(name: &str, desc: &str) -> Field {
    let desc =
        format!("{desc} NULL when absent, negative or over 30 days (not a plausible duration).");
    field(name, DataType::Float64, true, &desc)
}

/// Arrow schema of `gateway_log_copies`.
pub fn schema() -> SchemaRef {
    schema_of(
        vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "When the gateway started processing the request (UTC): time, TimeGenerated or timeGenerated.",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When seam accepted this copy (UTC).",
        ),
        field(
            "record_key",
            DataType::Utf8,
            false,
            "seam's key of the request (32 hex): a hash of the APIM service and correlation id, or of the service, time (to the second), URL and status for old records without a correlation id. Copies of one request share it.",
        ),
        text(
            CORRELATION_ID,
            "APIM's request id (CorrelationId, = policy context.RequestId).",
        ),
        text(
            TRACE_ID,
            "W3C trace id (32 lower-case hex) from a logged traceparent header (backend request first, then client request).",
        ),
        text(
            "forwarded_correlation_id",
            "The X-Correlation-ID value the gateway logged: sent to the backend, else received from the client.",
        ),
        text("api_id", "API entity id (ApiId)."),
        text("operation_id", "Operation entity id (OperationId)."),
        text("api_revision", "API revision (ApiRevision)."),
        text("product_id", "Product entity id (ProductId)."),
        text(
            "subscription_id",
            "APIM subscription id (ApimSubscriptionId; SubscriptionId in 2017 records). Not the Azure subscription.",
        ),
        text("user_id", "APIM user entity id (UserId); not the token subject."),
        text("backend_id", "Backend entity id (BackendId)."),
        text(METHOD, "HTTP method of the client request."),
        text(
            "url",
            "URL of the client request; secret query parameters (subscription-key, sig, ...) are redacted.",
        ),
        text(URL_PATH, "Path of url."),
        text(CLIENT_IP, "IP address of the immediate caller (CallerIpAddress)."),
        text(USER_AGENT, "User-Agent from the logged client request headers."),
        text("client_protocol", "HTTP version of the client request."),
        text("client_tls_version", "TLS version the client used."),
        field(
            STATUS_CODE,
            DataType::Int32,
            true,
            "Status code the client got (ResponseCode).",
        ),
        field(
            "is_request_success",
            DataType::Boolean,
            true,
            "APIM's isRequestSuccess (2xx or 3xx).",
        ),
        text("backend_method", "HTTP method sent to the backend."),
        text("backend_url", "URL sent to the backend (secrets redacted)."),
        text("backend_protocol", "HTTP version to the backend."),
        field(
            "backend_status_code",
            DataType::Int32,
            true,
            "Status code received from the backend; NULL when no backend was called (APIM logs 0, empty or null then).",
        ),
        ms(
            "total_time_ms",
            "APIM TotalTime (durationMs; ServiceTime in 2017 records): first byte received to last byte sent.",
        ),
        ms(
            "backend_time_ms",
            "APIM BackendTime: backend I/O. NULL when no backend was called.",
        ),
        ms("client_time_ms", "APIM ClientTime: client I/O."),
        text("cache", "Cache involvement: none, hit or miss."),
        ms(
            "cache_time_ms",
            "APIM CacheTime; NULL when the cache was not used.",
        ),
        ms(
            "last_error_elapsed_ms",
            "ms from request receipt until the last error.",
        ),
        text(
            "last_error_source",
            "Policy or handler that raised the last error (e.g. validate-jwt).",
        ),
        text("last_error_scope", "Policy scope of the last error."),
        text(
            "last_error_section",
            "Policy section of the last error: inbound, backend, outbound or on-error.",
        ),
        text(
            "last_error_reason",
            "Reason of the last error (e.g. TokenExpired).",
        ),
        text("last_error_message", "Message of the last error."),
        text("errors", "The Errors collection as JSON text, when logged."),
        text(
            "apim_service",
            "APIM service name (lower case), from the resource id, ServiceName or DeploymentName.",
        ),
        text(
            "gateway",
            "Gateway that handled the request: managed, or the self-hosted gateway's name (the ingest request's gateway parameter; self-hosted when unnamed).",
        ),
        text("region", "Azure region of the gateway (Region or location)."),
        text(
            "resource_id",
            "ARM resource id of the APIM service, lower case.",
        ),
        field(
            "request_size",
            DataType::Int64,
            true,
            "Bytes received from the client.",
        ),
        field(
            "response_size",
            DataType::Int64,
            true,
            "Bytes sent to the client.",
        ),
        field(
            "request_headers",
            attribute_map_type(),
            true,
            "Logged client request headers (names lower case); credentials redacted.",
        ),
        field(
            "response_headers",
            attribute_map_type(),
            true,
            "Logged response headers (names lower case); credentials redacted.",
        ),
        field(
            "backend_request_headers",
            attribute_map_type(),
            true,
            "Logged headers sent to the backend (names lower case); credentials redacted.",
        ),
        field(
            "backend_response_headers",
            attribute_map_type(),
            true,
            "Logged backend response headers (names lower case); credentials redacted.",
        ),
        text(
            "source_format",
            "The shape this copy arrived in: apim_records (Event Hubs body or pre-2018 storage blob), apim_jsonl (storage archive lines), apim_loganalytics, apim_azurediagnostics, apim_selfhosted_json or apim_selfhosted_text.",
        ),
        text(
            "source_file",
            "File the copy came from (seam ingest), else NULL.",
        ),
        field(
            "source_line",
            DataType::Int64,
            true,
            "Line (JSON lines and text) or record index (documents, from 0) of the copy in its input.",
        ),
        text(
            "raw",
            "The original record as received (JSON), with tokens and secrets redacted.",
        ),
    ]
    .into_iter()
    .chain(super::token_fields())
    .collect())
}

/// Columns of the copies that the view leaves out.
const COPY_ONLY: &[&str] = &["raw", "source_format", "source_file", "source_line"];

/// The view's expression for column `name` of the copies (without its alias): how the copies
/// of one request are merged into that column. The one place the merge rule is written:
/// - `time`, `ingest_time`: the earliest (`min`);
/// - a token identity column ([`crate::token::COLUMNS`]): the earliest-accepted copy's value
///   among the copies with a `token_id`, so the identity is one copy's, never mixed;
/// - any other column: the earliest-accepted copy's value among the copies that have one.
///
/// `record_key` is the group key and the copy-only columns are not in the view; for them
/// this gives the plain column.
pub fn merge_expr(name: &str) -> String {
    use crate::token;
    if name == "record_key" || COPY_ONLY.contains(&name) {
        return name.to_string();
    }
    if name == TIME || name == INGEST_TIME {
        return format!("min({name})");
    }
    let has = if token::COLUMNS.contains(&name) {
        token::TOKEN_ID
    } else {
        name
    };
    format!("first_value({name} ORDER BY {MERGE_ORDER}) FILTER (WHERE {has} IS NOT NULL)")
}

/// The SQL of the `gateway_logs` view: one row per `record_key`, each column merged by
/// [`merge_expr`].
pub fn view_sql() -> String {
    let mut cols = Vec::new();
    for f in schema().fields() {
        let n = f.name().as_str();
        if COPY_ONLY.contains(&n) {
            continue;
        }
        cols.push(if n == "record_key" {
            n.to_string()
        } else {
            format!("{} AS {n}", merge_expr(n))
        });
    }
    cols.push("count(*) AS copies".into());
    cols.push("array_sort(array_agg(DISTINCT source_format)) AS source_formats".into());
    format!(
        "SELECT {} FROM {TABLE} GROUP BY record_key",
        cols.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_merges_by_the_earliest_accepted_copy() {
        let sql = view_sql();
        assert!(
            sql.contains(
                "first_value(status_code ORDER BY ingest_time, source_format, source_file, \
                 source_line) FILTER (WHERE status_code IS NOT NULL) AS status_code"
            ),
            "{sql}"
        );
        assert!(
            sql.contains(
                "first_value(request_headers ORDER BY ingest_time, source_format, source_file, \
                 source_line) FILTER (WHERE request_headers IS NOT NULL) AS request_headers"
            ),
            "{sql}"
        );
        // The token identity is one copy's: every token column filters on token_id.
        for c in crate::token::COLUMNS {
            assert!(
                sql.contains(&format!(
                    "first_value({c} ORDER BY {MERGE_ORDER}) FILTER (WHERE token_id IS NOT NULL) \
                     AS {c}"
                )),
                "{c}: {sql}"
            );
        }
        assert!(
            sql.contains("min(time) AS time, min(ingest_time) AS ingest_time"),
            "{sql}"
        );
        assert!(!sql.contains("max("), "{sql}");
        for c in COPY_ONLY {
            assert!(!sql.contains(&format!(" AS {c}, ")), "{c}: {sql}");
        }
    }

    #[test]
    fn merge_order_names_columns_of_the_copies() {
        let s = schema();
        for c in MERGE_ORDER.split(", ") {
            assert!(s.field_with_name(c).is_ok(), "{c}");
        }
        assert!(MERGE_ORDER.starts_with(INGEST_TIME));
    }
}
