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

// Columns of this table only (shared names are in `crate::columns`).

/// The X-Correlation-ID value the gateway logged.
pub const FORWARDED_CORRELATION_ID: &str = "forwarded_correlation_id";
/// API revision.
pub const API_REVISION: &str = "api_revision";
/// Backend entity id.
pub const BACKEND_ID: &str = "backend_id";
/// HTTP version of the client request.
pub const CLIENT_PROTOCOL: &str = "client_protocol";
/// TLS version the client used.
pub const CLIENT_TLS_VERSION: &str = "client_tls_version";
/// APIM's isRequestSuccess.
pub const IS_REQUEST_SUCCESS: &str = "is_request_success";
/// HTTP method sent to the backend.
pub const BACKEND_METHOD: &str = "backend_method";
/// URL sent to the backend.
pub const BACKEND_URL: &str = "backend_url";
/// HTTP version to the backend.
pub const BACKEND_PROTOCOL: &str = "backend_protocol";
/// APIM TotalTime, ms.
pub const TOTAL_TIME_MS: &str = "total_time_ms";
/// APIM BackendTime, ms.
pub const BACKEND_TIME_MS: &str = "backend_time_ms";
/// APIM ClientTime, ms.
pub const CLIENT_TIME_MS: &str = "client_time_ms";
/// APIM CacheTime, ms.
pub const CACHE_TIME_MS: &str = "cache_time_ms";
/// ms from request receipt until the last error.
pub const LAST_ERROR_ELAPSED_MS: &str = "last_error_elapsed_ms";
/// Policy scope of the last error.
pub const LAST_ERROR_SCOPE: &str = "last_error_scope";
/// Policy section of the last error.
pub const LAST_ERROR_SECTION: &str = "last_error_section";
/// The Errors collection as JSON text.
pub const ERRORS: &str = "errors";
/// Azure region of the gateway.
pub const REGION: &str = "region";
/// ARM resource id of the APIM service.
pub const RESOURCE_ID: &str = "resource_id";
/// Bytes received from the client.
pub const REQUEST_SIZE: &str = "request_size";
/// Bytes sent to the client.
pub const RESPONSE_SIZE: &str = "response_size";
/// Logged client request headers.
pub const REQUEST_HEADERS: &str = "request_headers";
/// Logged response headers.
pub const RESPONSE_HEADERS: &str = "response_headers";
/// Logged headers sent to the backend.
pub const BACKEND_REQUEST_HEADERS: &str = "backend_request_headers";
/// Logged backend response headers.
pub const BACKEND_RESPONSE_HEADERS: &str = "backend_response_headers";
/// Which gateway product wrote the record.
pub const GATEWAY_PRODUCT: &str = "gateway_product";

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
            RECORD_KEY,
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
            FORWARDED_CORRELATION_ID,
            "The X-Correlation-ID value the gateway logged: sent to the backend, else received from the client.",
        ),
        text(API_ID, "API entity id (ApiId)."),
        text(OPERATION_ID, "Operation entity id (OperationId)."),
        text(API_REVISION, "API revision (ApiRevision)."),
        text(PRODUCT_ID, "Product entity id (ProductId)."),
        text(
            SUBSCRIPTION_ID,
            "APIM subscription id (ApimSubscriptionId; SubscriptionId in 2017 records). Not the Azure subscription.",
        ),
        text(USER_ID, "APIM user entity id (UserId); not the token subject."),
        text(BACKEND_ID, "Backend entity id (BackendId)."),
        text(METHOD, "HTTP method of the client request."),
        text(
            URL,
            "URL of the client request; secret query parameters (subscription-key, sig, ...) are redacted.",
        ),
        text(URL_PATH, "Path of url."),
        text(CLIENT_IP, "IP address of the immediate caller (CallerIpAddress)."),
        text(USER_AGENT, "User-Agent from the logged client request headers."),
        text(CLIENT_PROTOCOL, "HTTP version of the client request."),
        text(CLIENT_TLS_VERSION, "TLS version the client used."),
        field(
            STATUS_CODE,
            DataType::Int32,
            true,
            "Status code the client got (ResponseCode).",
        ),
        field(
            IS_REQUEST_SUCCESS,
            DataType::Boolean,
            true,
            "APIM's isRequestSuccess (2xx or 3xx).",
        ),
        text(BACKEND_METHOD, "HTTP method sent to the backend."),
        text(BACKEND_URL, "URL sent to the backend (secrets redacted)."),
        text(BACKEND_PROTOCOL, "HTTP version to the backend."),
        field(
            BACKEND_STATUS_CODE,
            DataType::Int32,
            true,
            "Status code received from the backend; NULL when no backend was called (APIM logs 0, empty or null then).",
        ),
        ms(
            TOTAL_TIME_MS,
            "APIM TotalTime (durationMs; ServiceTime in 2017 records): first byte received to last byte sent.",
        ),
        ms(
            BACKEND_TIME_MS,
            "APIM BackendTime: backend I/O. NULL when no backend was called.",
        ),
        ms(CLIENT_TIME_MS, "APIM ClientTime: client I/O."),
        text(CACHE, "Cache involvement: none, hit or miss."),
        ms(
            CACHE_TIME_MS,
            "APIM CacheTime; NULL when the cache was not used.",
        ),
        ms(
            LAST_ERROR_ELAPSED_MS,
            "ms from request receipt until the last error.",
        ),
        text(
            LAST_ERROR_SOURCE,
            "Policy or handler that raised the last error (e.g. validate-jwt).",
        ),
        text(LAST_ERROR_SCOPE, "Policy scope of the last error."),
        text(
            LAST_ERROR_SECTION,
            "Policy section of the last error: inbound, backend, outbound or on-error.",
        ),
        text(
            LAST_ERROR_REASON,
            "Reason of the last error (e.g. TokenExpired).",
        ),
        text(LAST_ERROR_MESSAGE, "Message of the last error."),
        text(ERRORS, "The Errors collection as JSON text, when logged."),
        text(
            APIM_SERVICE,
            "APIM service name (lower case), from the resource id, ServiceName or DeploymentName.",
        ),
        text(
            GATEWAY,
            "Gateway that handled the request: managed, or the self-hosted gateway's name (the ingest request's gateway parameter; self-hosted when unnamed); for another product read by a mapping, the gateway parameter or the mapping's gateway value, else the product.",
        ),
        text(
            GATEWAY_PRODUCT,
            "Gateway product that wrote the record: apim for Azure API Management (every built-in shape and mappings without a product), else the mapping's product (kong, envoy, nginx, aws_apigateway, identity_proxy, or a user's own). NULL in copies stored before this column existed (schema version 1); the gateway_logs view reads those as apim.",
        ),
        text(REGION, "Azure region of the gateway (Region or location)."),
        text(
            RESOURCE_ID,
            "ARM resource id of the APIM service, lower case.",
        ),
        field(
            REQUEST_SIZE,
            DataType::Int64,
            true,
            "Bytes received from the client.",
        ),
        field(
            RESPONSE_SIZE,
            DataType::Int64,
            true,
            "Bytes sent to the client.",
        ),
        field(
            REQUEST_HEADERS,
            attribute_map_type(),
            true,
            "Logged client request headers (names lower case); credentials redacted.",
        ),
        field(
            RESPONSE_HEADERS,
            attribute_map_type(),
            true,
            "Logged response headers (names lower case); credentials redacted.",
        ),
        field(
            BACKEND_REQUEST_HEADERS,
            attribute_map_type(),
            true,
            "Logged headers sent to the backend (names lower case); credentials redacted.",
        ),
        field(
            BACKEND_RESPONSE_HEADERS,
            attribute_map_type(),
            true,
            "Logged backend response headers (names lower case); credentials redacted.",
        ),
        field(
            ATTRIBUTES,
            attribute_map_type(),
            true,
            "A mapped record's unmapped scalar fields (flattened as a.b), secrets redacted; NULL for the built-in APIM shapes.",
        ),
        text(
            SOURCE_FORMAT,
            "The shape this copy arrived in: apim_records (Event Hubs body or pre-2018 storage blob), apim_jsonl (storage archive lines), apim_loganalytics, apim_loganalytics_csv and apim_loganalytics_json (Azure portal exports), apim_azurediagnostics, apim_selfhosted_json, apim_selfhosted_text, or mapping:NAME for a record read by the mapping NAME.",
        ),
        text(
            SOURCE_FILE,
            "File the copy came from (seam ingest), else NULL.",
        ),
        field(
            SOURCE_LINE,
            DataType::Int64,
            true,
            "Line (JSON lines and text) or record index (documents, from 0) of the copy in its input.",
        ),
        text(
            RAW,
            "The original record as received (JSON), with tokens and secrets redacted.",
        ),
    ]
    .into_iter()
    .chain(super::token_fields())
    .collect())
}

/// Columns of the copies that the view leaves out.
const COPY_ONLY: &[&str] = &[RAW, SOURCE_FORMAT, SOURCE_FILE, SOURCE_LINE];

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
    if name == RECORD_KEY || COPY_ONLY.contains(&name) {
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
    let merged =
        format!("first_value({name} ORDER BY {MERGE_ORDER}) FILTER (WHERE {has} IS NOT NULL)");
    if name == GATEWAY_PRODUCT {
        // Copies stored before the column existed were all APIM's.
        return format!("coalesce({merged}, 'apim')");
    }
    merged
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
        cols.push(if n == RECORD_KEY {
            n.to_string()
        } else {
            format!("{} AS {n}", merge_expr(n))
        });
    }
    cols.push("count(*) AS copies".into());
    cols.push(format!(
        "array_sort(array_agg(DISTINCT {SOURCE_FORMAT})) AS source_formats"
    ));
    format!(
        "SELECT {} FROM {TABLE} GROUP BY {RECORD_KEY}",
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
