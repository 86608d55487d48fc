//! The gateway tables: `gateway_log_copies` (one row per stored copy of an APIM GatewayLogs
//! record) and the `gateway_logs` view over it (one row per gateway request).
//!
//! Takes nothing; gives the copies' schema and the view's SQL. The same request reaches seam
//! in several shapes (Event Hubs, the storage archive, a Log Analytics export days later);
//! the collector stores a copy only when it adds a field no earlier copy had, and the view
//! merges the copies of a request (`record_key`) into one row.

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
     `gateway_log_copies` with the same `record_key` merged (for each column, the value any \
     copy has; `time` and `ingest_time` the earliest). Columns are those of \
     `gateway_log_copies` without `raw`, `source_format`, `source_file` and `source_line`, plus \
     `copies` (bigint: stored copies) and `source_formats` (list<text>: the shapes it arrived \
     in).";

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

/// The SQL of the `gateway_logs` view: one row per `record_key`.
pub fn view_sql() -> String {
    let mut cols = Vec::new();
    for f in schema().fields() {
        let n = f.name().as_str();
        if COPY_ONLY.contains(&n) {
            continue;
        }
        let expr = match (n, f.data_type()) {
            ("record_key", _) => "record_key".to_string(),
            (TIME | INGEST_TIME, _) => format!("min({n}) AS {n}"),
            (_, DataType::Map(_, _) | DataType::List(_)) => {
                format!("first_value({n}) FILTER (WHERE {n} IS NOT NULL) AS {n}")
            }
            _ => format!("max({n}) AS {n}"),
        };
        cols.push(expr);
    }
    cols.push("count(*) AS copies".into());
    cols.push("array_sort(array_agg(DISTINCT source_format)) AS source_formats".into());
    format!(
        "SELECT {} FROM {TABLE} GROUP BY record_key",
        cols.join(", ")
    )
}
