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
     runtime. Banners, platform lines, scheduler flows and health checks are kept with \
     is_request_traffic = false.";

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
                "record_key",
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
                "mule_app",
                "Mule application: the [app] in the thread name, JSON Logger applicationName, the OTLP service.name, or the ingest request's app parameter.",
            ),
            text(
                "flow",
                "Flow: JSON Logger locationInfo.rootContainer, else the flow in the thread name, else the first segment of the processor path.",
            ),
            text(
                "trace_point",
                "JSON Logger tracePoint (START, END, BEFORE_REQUEST, EXCEPTION, ...).",
            ),
            text(LEVEL, "Level: INFO, WARN, ERROR, DEBUG, TRACE, FATAL."),
            field(
                "elapsed_ms",
                DataType::Float64,
                true,
                "JSON Logger elapsed: ms since the event's first JSON Logger call.",
            ),
            field(
                "scope_elapsed_ms",
                DataType::Float64,
                true,
                "JSON Logger scopeElapsed: ms inside a logger scope (scope AFTER records).",
            ),
            text(
                "message",
                "The message: the JSON Logger message, the error block's Message line, else the log4j message (with its continuation lines). Secrets redacted.",
            ),
            text(
                "location",
                "Processor path (processor: / MDC processorPath / OTLP location), else fileName:lineInFile.",
            ),
            text("logger", "log4j logger (category)."),
            text("thread", "Thread name."),
            text(
                "error_type",
                "Mule error type (Error type line of an error block, or errorType in JSON Logger content), e.g. HTTP:UNAUTHORIZED.",
            ),
            text(
                "remote_address",
                "The caller's address as the app logged it (remoteAddress), without the leading slash.",
            ),
            text(
                METHOD,
                "HTTP method the app logged for the request (content.method).",
            ),
            text(
                "request_path",
                "Request path the app logged (content.requestPath).",
            ),
            field(
                STATUS_CODE,
                DataType::Int32,
                true,
                "HTTP status the app logged (content.statusCode / httpStatus).",
            ),
            field(
                "is_request_traffic",
                DataType::Boolean,
                false,
                "false for lines that are not part of serving a request: no correlation id (banners, platform lines), scheduler/poller flows, health checks (rules in [mule] of the configuration).",
            ),
            text("environment", "JSON Logger environment."),
            text("app_version", "JSON Logger applicationVersion."),
            field(
                ATTRIBUTES,
                attribute_map_type(),
                true,
                "MDC entries and other fields, as text.",
            ),
            text(
                "content",
                "JSON Logger content as JSON text (secrets redacted).",
            ),
            text(
                "source_format",
                "mule_log4j, mule_log4j_mdc, mule_log4j_event, mule_cloudhub_log4j, mule_json_logger, cloudhub_logs_api or otlp.",
            ),
            text("source_file", "File the event came from (seam ingest), else NULL."),
            field(
                "source_line",
                DataType::Int64,
                true,
                "First line (or record index) of the event in its input.",
            ),
            text(
                "raw",
                "The original event text as received (all its lines), with tokens and secrets redacted.",
            ),
        ]
        .into_iter()
        .chain(super::token_fields())
        .collect(),
    )
}
