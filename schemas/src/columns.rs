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
/// seam's key of a record (32 hex): copies and re-imports of one record share it.
pub const RECORD_KEY: &str = "record_key";
/// The original record as received, redacted.
pub const RAW: &str = "raw";
/// The shape a record arrived in.
pub const SOURCE_FORMAT: &str = "source_format";
/// File a record came from (seam ingest).
pub const SOURCE_FILE: &str = "source_file";
/// Line or record index of a record in its input.
pub const SOURCE_LINE: &str = "source_line";
/// Where records were sent or came from (a receiver, an endpoint or a table).
pub const SOURCE: &str = "source";
/// APIM API id.
pub const API_ID: &str = "api_id";
/// APIM operation id.
pub const OPERATION_ID: &str = "operation_id";
/// APIM product id.
pub const PRODUCT_ID: &str = "product_id";
/// APIM subscription id.
pub const SUBSCRIPTION_ID: &str = "subscription_id";
/// APIM user id.
pub const USER_ID: &str = "user_id";
/// APIM service name.
pub const APIM_SERVICE: &str = "apim_service";
/// Gateway that handled a request: managed, or a self-hosted gateway's name.
pub const GATEWAY: &str = "gateway";
/// Request URL, secrets redacted.
pub const URL: &str = "url";
/// Status code the gateway received from its backend.
pub const BACKEND_STATUS_CODE: &str = "backend_status_code";
/// APIM cache involvement: none, hit or miss.
pub const CACHE: &str = "cache";
/// Policy or handler that raised APIM's last error.
pub const LAST_ERROR_SOURCE: &str = "last_error_source";
/// Reason of APIM's last error.
pub const LAST_ERROR_REASON: &str = "last_error_reason";
/// Message of APIM's last error.
pub const LAST_ERROR_MESSAGE: &str = "last_error_message";
/// Elapsed milliseconds a log event reports.
pub const ELAPSED_MS: &str = "elapsed_ms";
/// Mule application.
pub const MULE_APP: &str = "mule_app";
/// Mule flow.
pub const FLOW: &str = "flow";

#[cfg(test)]
mod tests {
    use crate::tables;

    /// Every `pub const NAME: &str = "name";` of this file: (constant, value).
    fn constants() -> Vec<(&'static str, &'static str)> {
        include_str!("columns.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .map(|l| {
                let (name, rest) = l
                    .split_once(": &str = \"")
                    .unwrap_or_else(|| panic!("not a text constant: {l}"));
                let value = rest
                    .strip_suffix("\";")
                    .unwrap_or_else(|| panic!("not a one-line constant: {l}"));
                (name, value)
            })
            .collect()
    }

    /// A typo in a column constant fails here: each is named after its value and names a
    /// column of at least one table.
    #[test]
    fn every_constant_names_a_column_of_a_table() {
        let consts = constants();
        assert!(consts.len() > 40, "{consts:?}");
        let all = tables::all();
        for (name, value) in consts {
            assert_eq!(name, value.to_ascii_uppercase(), "{name} = {value:?}");
            assert!(
                all.iter().any(|t| t.schema.field_with_name(value).is_ok()),
                "{name} = {value:?} is a column of no table"
            );
        }
    }
}
