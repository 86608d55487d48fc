//! The `flow_logs` table: one row per Mule 4 log event (log4j lines with their multi-line
//! blocks reassembled, JSON Logger records, CloudHub Logs API records, and OTLP log records a
//! Mule runtime exported).

use arrow_schema::{DataType, SchemaRef};

use super::{attribute_map_type, field, schema_of, text, timestamp_type};
use crate::columns::*;

/// SQL name.
pub const TABLE: &str = "flow_logs";
/// What one row is.
pub const DESCRIPTION: &str = "One row per Mule 4 log event: a log4j line with its \
     continuation lines (error blocks, stack traces, pretty-printed JSON) reassembled, a JSON \
     Logger record, a CloudHub Logs API record, or an OTLP log record exported by a Mule \
     runtime. Banners, platform lines, scheduler flows and health checks are kept (is_request_traffic \
     = false hints at them; the correlator decides from evidence).";

// Columns of this table only (shared names are in `crate::columns`).

/// JSON Logger tracePoint.
pub const TRACE_POINT: &str = "trace_point";
/// JSON Logger scopeElapsed, ms.
pub const SCOPE_ELAPSED_MS: &str = "scope_elapsed_ms";
/// The message, secrets redacted.
pub const MESSAGE: &str = "message";
/// Processor path, else fileName:lineInFile.
pub const LOCATION: &str = "location";
/// log4j logger (category).
pub const LOGGER: &str = "logger";
/// Thread name.
pub const THREAD: &str = "thread";
/// Mule error type.
pub const ERROR_TYPE: &str = "error_type";
/// The caller's address as the app logged it.
pub const REMOTE_ADDRESS: &str = "remote_address";
/// Request path the app logged.
pub const REQUEST_PATH: &str = "request_path";
/// false for lines that are not part of serving a request.
pub const IS_REQUEST_TRAFFIC: &str = "is_request_traffic";
/// JSON Logger environment.
pub const ENVIRONMENT: &str = "environment";
/// JSON Logger applicationVersion.
pub const APP_VERSION: &str = "app_version";
/// JSON Logger content as JSON text.
pub const CONTENT: &str = "content";

/// Arrow schema of `flow_logs`.
pub fn schema() -> SchemaRef {
    schema_of(
        vec![
            field(
                TIME,
                timestamp_type(),
                false,
                "Event time (UTC): the log4j timestamp (zone-less times in the input's time zone, UTC by default), else the JSON Logger timestamp, else the CloudHub epoch ms.",
            ),
            field(
                INGEST_TIME,
                timestamp_type(),
                false,
                "When seam accepted the event (UTC).",
            ),
            field(
                RECORD_KEY,
                DataType::Utf8,
                false,
                "seam's key of the event (32 hex, a hash of app and content); a re-imported event has the same key and is not stored again.",
            ),
            text(
                CORRELATION_ID,
                "Mule event correlation id ([event: ...], MDC correlationId, JSON Logger correlationId).",
            ),
            text(
                TRACE_ID,
                "W3C trace id: MDC trace_id/traceId, or the traceparent in a logged header or span context.",
            ),
            text(SPAN_ID, "Span id from the MDC or the OTLP record."),
            text(
                MULE_APP,
                "Mule application: the [app] in the thread name, JSON Logger applicationName, the OTLP service.name, or the ingest request's app parameter.",
            ),
            text(
                FLOW,
                "Flow: JSON Logger locationInfo.rootContainer, else the flow in the thread name, else the first segment of the processor path.",
            ),
            text(
                TRACE_POINT,
                "JSON Logger tracePoint (START, END, BEFORE_REQUEST, EXCEPTION, ...).",
            ),
            text(LEVEL, "Level: INFO, WARN, ERROR, DEBUG, TRACE, FATAL."),
            field(
                ELAPSED_MS,
                DataType::Float64,
                true,
                "JSON Logger elapsed: ms since the event's first JSON Logger call.",
            ),
            field(
                SCOPE_ELAPSED_MS,
                DataType::Float64,
                true,
                "JSON Logger scopeElapsed: ms inside a logger scope (scope AFTER records).",
            ),
            text(
                MESSAGE,
                "The message: the JSON Logger message, the error block's Message line, else the log4j message (with its continuation lines). Secrets redacted.",
            ),
            text(
                LOCATION,
                "Processor path (processor: / MDC processorPath / OTLP location), else fileName:lineInFile.",
            ),
            text(LOGGER, "log4j logger (category)."),
            text(THREAD, "Thread name."),
            text(
                ERROR_TYPE,
                "Mule error type (Error type line of an error block, or errorType in JSON Logger content), e.g. HTTP:UNAUTHORIZED.",
            ),
            text(
                REMOTE_ADDRESS,
                "The caller's address as the app logged it (remoteAddress), without the leading slash.",
            ),
            text(
                METHOD,
                "HTTP method the app logged for the request (content.method).",
            ),
            text(
                REQUEST_PATH,
                "Request path the app logged (content.requestPath).",
            ),
            field(
                STATUS_CODE,
                DataType::Int32,
                true,
                "HTTP status the app logged (content.statusCode / httpStatus).",
            ),
            field(
                IS_REQUEST_TRAFFIC,
                DataType::Boolean,
                false,
                "A per-line hint for queries: false for lines with no correlation id (banners, platform lines), of flows named like schedulers or pollers, or with a health-check path (non_request_flows and health_paths in [access] of the configuration). The correlator does not use it: it decides from a whole run's evidence whether it is a request, a probe (the probes table) or background work (docs/correlation.md).",
            ),
            text(ENVIRONMENT, "JSON Logger environment."),
            text(APP_VERSION, "JSON Logger applicationVersion."),
            field(
                ATTRIBUTES,
                attribute_map_type(),
                true,
                "MDC entries and other fields, as text.",
            ),
            text(
                CONTENT,
                "JSON Logger content as JSON text (secrets redacted).",
            ),
            text(
                SOURCE_FORMAT,
                "mule_log4j, mule_log4j_mdc, mule_log4j_event, mule_cloudhub_log4j, mule_json_logger, cloudhub_logs_api or otlp.",
            ),
            text(SOURCE_FILE, "File the event came from (seam ingest), else NULL."),
            field(
                SOURCE_LINE,
                DataType::Int64,
                true,
                "First line (or record index) of the event in its input.",
            ),
            text(
                RAW,
                "The original event text as received (all its lines), with tokens and secrets redacted.",
            ),
        ]
        .into_iter()
        .chain(super::token_fields())
        .collect(),
    )
}
