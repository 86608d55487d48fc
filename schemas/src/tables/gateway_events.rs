//! The `gateway_events` table: custom events an APIM `log-to-eventhub` policy wrote (JSON
//! objects such as the samples', or `string.Join` CSV lines), one row per event.
//!
//! They describe the same requests as `gateway_logs`, so they have their own table and never
//! count as second gateway records. Token columns are filled from the event's claims and
//! fingerprint.

use arrow_schema::{DataType, SchemaRef};

use super::{attribute_map_type, field, schema_of, text, timestamp_type};
use crate::columns::*;

/// SQL name.
pub const TABLE: &str = "gateway_events";
/// What one row is.
pub const DESCRIPTION: &str = "One row per custom event written by an APIM log-to-eventhub \
     policy (a JSON object, or a string.Join CSV line). Events describe requests that also \
     have a gateway_logs row; join on correlation_id.";

// Columns of this table only (shared names are in `crate::columns`).

/// Policy section that wrote the event.
pub const SECTION: &str = "section";
/// Whether the event says validate-jwt accepted the token.
pub const TOKEN_VALIDATED: &str = "token_validated";

/// Arrow schema of `gateway_events`.
pub fn schema() -> SchemaRef {
    schema_of(
        vec![
            field(
                TIME,
                timestamp_type(),
                false,
                "Event time (UTC): EventTime, Timestamp or time; the first CSV field.",
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
                "seam's key of the event (32 hex, a hash of its content); a re-imported event has the same key and is not stored again.",
            ),
            text(
                CORRELATION_ID,
                "APIM request id (RequestId / CorrelationId = context.RequestId).",
            ),
            text(
                APIM_SERVICE,
                "APIM service name (ServiceName without .azure-api.net, lower case).",
            ),
            text(CLIENT_IP, "Client IP (RequestIp / IpAddress)."),
            text(API_ID, "API id."),
            text(OPERATION_ID, "Operation id, or the operation name."),
            text(PRODUCT_ID, "Product id."),
            text(SUBSCRIPTION_ID, "APIM subscription id."),
            text(USER_ID, "APIM user id."),
            text(METHOD, "HTTP method."),
            text(URL, "Request URL (secrets redacted)."),
            text(URL_PATH, "Path of url."),
            field(
                STATUS_CODE,
                DataType::Int32,
                true,
                "Status code the event reports.",
            ),
            text(
                SECTION,
                "Policy section that wrote the event (inbound, outbound, on-error).",
            ),
            field(
                ELAPSED_MS,
                DataType::Float64,
                true,
                "context.Elapsed when the event was written, in ms.",
            ),
            text(
                TRACE_ID,
                "W3C trace id from the event's traceparent (32 lower-case hex).",
            ),
            text(LAST_ERROR_SOURCE, "context.LastError.Source, when logged."),
            text(LAST_ERROR_REASON, "context.LastError.Reason, when logged."),
            text(
                LAST_ERROR_MESSAGE,
                "context.LastError.Message, when logged.",
            ),
            field(
                TOKEN_VALIDATED,
                DataType::Boolean,
                true,
                "Whether the event says validate-jwt accepted the token (Jwt.validated).",
            ),
            field(
                ATTRIBUTES,
                attribute_map_type(),
                true,
                "Every other scalar field of the event, as text (secrets redacted).",
            ),
            text(
                SOURCE_FORMAT,
                "apim_custom_json or apim_custom_csv.",
            ),
            text(SOURCE_FILE, "File the event came from (seam ingest), else NULL."),
            field(
                SOURCE_LINE,
                DataType::Int64,
                true,
                "Line or record index of the event in its input.",
            ),
            text(
                RAW,
                "The original event as received, with tokens and secrets redacted.",
            ),
        ]
        .into_iter()
        .chain(super::token_fields())
        .collect(),
    )
}
