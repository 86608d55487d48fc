//! The `logs` table: one row per OpenTelemetry log record received over OTLP.

use arrow_schema::{DataType, SchemaRef};

use super::{attribute_map_type, field, schema_of, timestamp_type};
use crate::columns::*;

/// SQL name.
pub const TABLE: &str = "logs";
/// What one row is.
pub const DESCRIPTION: &str =
    "One row per OpenTelemetry log record received over OTLP (gRPC or HTTP).";

/// Arrow schema of `logs`.
pub fn schema() -> SchemaRef {
    schema_of(vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "Event time (UTC): timeUnixNano, else observedTimeUnixNano, else ingest_time.",
        ),
        field(
            OBSERVED_TIME,
            timestamp_type(),
            true,
            "When the producer's collector observed the record (UTC); NULL when not sent.",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When seam accepted the export request that carried the record (UTC).",
        ),
        field(
            LEVEL,
            DataType::Utf8,
            true,
            "Severity text as sent (e.g. INFO); when absent, derived from severity_number (TRACE, DEBUG, INFO, WARN, ERROR, FATAL).",
        ),
        field(
            SEVERITY_NUMBER,
            DataType::Int32,
            true,
            "OpenTelemetry severity number (1-24); NULL when unspecified.",
        ),
        field(
            BODY,
            DataType::Utf8,
            true,
            "Log body as text; structured bodies are rendered as JSON. Credentials in it are redacted.",
        ),
        field(
            TRACE_ID,
            DataType::Utf8,
            true,
            "W3C trace id (32 lower-case hex characters), when the record was emitted inside a trace.",
        ),
        field(
            SPAN_ID,
            DataType::Utf8,
            true,
            "Span id (16 lower-case hex characters), when the record was emitted inside a span.",
        ),
        field(
            FLAGS,
            DataType::Int32,
            true,
            "W3C trace flags of the record; NULL when 0.",
        ),
        field(
            EVENT_NAME,
            DataType::Utf8,
            true,
            "OpenTelemetry event name of the record, when set.",
        ),
        field(
            SERVICE_NAME,
            DataType::Utf8,
            true,
            "Resource attribute service.name.",
        ),
        field(
            SCOPE_NAME,
            DataType::Utf8,
            true,
            "Instrumentation scope name.",
        ),
        field(
            SCOPE_VERSION,
            DataType::Utf8,
            true,
            "Instrumentation scope version.",
        ),
        field(
            RESOURCE_ATTRIBUTES,
            attribute_map_type(),
            true,
            "Resource attributes as a map from key to text value.",
        ),
        field(
            ATTRIBUTES,
            attribute_map_type(),
            true,
            "Log record attributes as a map from key to text value; read one with attributes['key']. Credential-bearing values are redacted.",
        ),
        field(
            CORRELATION_ID,
            DataType::Utf8,
            true,
            "The producer's own correlation id from the attributes (correlation.id, correlationId, correlation_id, x-correlation-id, ...).",
        ),
    ].into_iter().chain(super::token_fields()).collect())
}
