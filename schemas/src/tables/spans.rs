//! The `spans` table: one row per OpenTelemetry span received over OTLP.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, SchemaRef};

use super::{attribute_map_type, field, schema_of, timestamp_type};
use crate::columns::*;

/// SQL name.
pub const TABLE: &str = "spans";
/// What one row is.
pub const DESCRIPTION: &str = "One row per OpenTelemetry span received over OTLP (gRPC or HTTP).";

/// The struct type of one element of `events`.
pub fn event_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new(TIME, timestamp_type(), true),
        Field::new(NAME, DataType::Utf8, true),
        Field::new(ATTRIBUTES, attribute_map_type(), true),
    ]))
}

/// The struct type of one element of `links`.
pub fn link_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new(TRACE_ID, DataType::Utf8, true),
        Field::new(SPAN_ID, DataType::Utf8, true),
        Field::new(ATTRIBUTES, attribute_map_type(), true),
    ]))
}

/// Arrow schema of `spans`.
pub fn schema() -> SchemaRef {
    schema_of(vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "Span start time (UTC), from startTimeUnixNano.",
        ),
        field(
            END_TIME,
            timestamp_type(),
            true,
            "Span end time (UTC), from endTimeUnixNano; NULL when the producer sent 0.",
        ),
        field(
            DURATION_MS,
            DataType::Float64,
            true,
            "end_time - time in milliseconds (float); NULL when end_time is unknown or before time.",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When seam accepted the export request that carried the span (UTC).",
        ),
        field(
            TRACE_ID,
            DataType::Utf8,
            false,
            "W3C trace id: 32 lower-case hex characters.",
        ),
        field(
            SPAN_ID,
            DataType::Utf8,
            false,
            "Span id: 16 lower-case hex characters.",
        ),
        field(
            PARENT_SPAN_ID,
            DataType::Utf8,
            true,
            "Parent span id (16 lower-case hex characters); NULL for a root span.",
        ),
        field(
            TRACE_STATE,
            DataType::Utf8,
            true,
            "W3C tracestate of the span, when set.",
        ),
        field(NAME, DataType::Utf8, false, "Span name."),
        field(
            KIND,
            DataType::Utf8,
            false,
            "Span kind in lower case: unspecified, internal, server, client, producer or consumer.",
        ),
        field(
            SPAN_STATUS,
            DataType::Utf8,
            false,
            "OpenTelemetry span status code in lower case: unset, ok or error.",
        ),
        field(
            SPAN_STATUS_MESSAGE,
            DataType::Utf8,
            true,
            "OpenTelemetry span status message, when set.",
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
            "Instrumentation scope name (e.g. mule-tracer).",
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
            "Resource attributes as a map from key to text value; read one with resource_attributes['service.version'].",
        ),
        field(
            ATTRIBUTES,
            attribute_map_type(),
            true,
            "Span attributes as a map from key to text value; read one with attributes['http.route']. Non-string values are rendered as text (integers in decimal, booleans as true/false, arrays and maps as JSON, bytes as base64). Credential-bearing values are redacted.",
        ),
        field(
            EVENTS,
            DataType::List(Arc::new(Field::new("item", event_type(), true))),
            true,
            "Span events: a list of {time, name, attributes}.",
        ),
        field(
            LINKS,
            DataType::List(Arc::new(Field::new("item", link_type(), true))),
            true,
            "Span links: a list of {trace_id, span_id, attributes}.",
        ),
        field(
            METHOD,
            DataType::Utf8,
            true,
            "HTTP request method, from http.request.method or the older http.method.",
        ),
        field(
            URL_PATH,
            DataType::Utf8,
            true,
            "HTTP URL path, from url.path, else http.target or the path of url.full / http.url.",
        ),
        field(
            HTTP_ROUTE,
            DataType::Utf8,
            true,
            "HTTP route template, from http.route.",
        ),
        field(
            STATUS_CODE,
            DataType::Int32,
            true,
            "HTTP status as an integer, from http.response.status_code or the older http.status_code (also when sent as a string).",
        ),
        field(
            CLIENT_IP,
            DataType::Utf8,
            true,
            "Client address, from client.address, else http.client_ip, else net.sock.peer.addr / network.peer.address on server spans.",
        ),
        field(
            USER_AGENT,
            DataType::Utf8,
            true,
            "User agent, from user_agent.original or http.user_agent.",
        ),
        field(
            CORRELATION_ID,
            DataType::Utf8,
            true,
            "The producer's own correlation id: correlation.id, correlation_id, correlationId, http.request.header.x-correlation-id or http.request.header.x-ms-correlation-id (first value of an array).",
        ),
    ].into_iter().chain(super::token_fields()).collect())
}
