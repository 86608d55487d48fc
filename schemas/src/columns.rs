//! Column names shared by every table: one constant per name, so that a column is never
//! retyped and one concept keeps one name across tables (users join and chart across them).

/// Event time (UTC). For a span, its start.
pub const TIME: &str = "time";
/// When seam accepted the record (UTC).
pub const INGEST_TIME: &str = "ingest_time";
/// A span's end time.
pub const END_TIME: &str = "end_time";
/// Duration in milliseconds (float).
pub const DURATION_MS: &str = "duration_ms";
/// W3C trace id, lower-case hex.
pub const TRACE_ID: &str = "trace_id";
/// Span id, lower-case hex.
pub const SPAN_ID: &str = "span_id";
/// Parent span id, lower-case hex.
pub const PARENT_SPAN_ID: &str = "parent_span_id";
/// W3C trace state.
pub const TRACE_STATE: &str = "trace_state";
/// Span name.
pub const NAME: &str = "name";
/// Span kind.
pub const KIND: &str = "kind";
/// OpenTelemetry span status code.
pub const SPAN_STATUS: &str = "span_status";
/// OpenTelemetry span status message.
pub const SPAN_STATUS_MESSAGE: &str = "span_status_message";
/// `service.name` of the resource.
pub const SERVICE_NAME: &str = "service_name";
/// Instrumentation scope name.
pub const SCOPE_NAME: &str = "scope_name";
/// Instrumentation scope version.
pub const SCOPE_VERSION: &str = "scope_version";
/// Resource attributes (map).
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
/// Record attributes (map).
pub const ATTRIBUTES: &str = "attributes";
/// Span events.
pub const EVENTS: &str = "events";
/// Span links.
pub const LINKS: &str = "links";
/// HTTP request method.
pub const METHOD: &str = "method";
/// HTTP URL path.
pub const URL_PATH: &str = "url_path";
/// HTTP route template.
pub const HTTP_ROUTE: &str = "http_route";
/// HTTP status as an integer.
pub const STATUS_CODE: &str = "status_code";
/// Client address.
pub const CLIENT_IP: &str = "client_ip";
/// User agent.
pub const USER_AGENT: &str = "user_agent";
/// A source's own correlation id.
pub const CORRELATION_ID: &str = "correlation_id";
/// When a log collector observed the record.
pub const OBSERVED_TIME: &str = "observed_time";
/// Severity text.
pub const LEVEL: &str = "level";
/// OpenTelemetry severity number.
pub const SEVERITY_NUMBER: &str = "severity_number";
/// Log body.
pub const BODY: &str = "body";
/// OpenTelemetry event name of a log record.
pub const EVENT_NAME: &str = "event_name";
/// Trace flags.
pub const FLAGS: &str = "flags";
