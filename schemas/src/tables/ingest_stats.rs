//! The `ingest_stats` table: seam's own ingest figures per minute and source, so that a
//! dashboard on the SQL (or PostgreSQL) datasource alone can show ingest health.

use arrow_schema::{DataType, SchemaRef};

use super::{field, schema_of, timestamp_type};
use crate::columns::{INGEST_TIME, SOURCE, TIME};

/// SQL name.
pub const TABLE: &str = "ingest_stats";
/// What one row is.
pub const DESCRIPTION: &str = "One row per minute, source and signal with seam's own ingest \
     counts. A minute can have more than one row (seam emits what it counted when it stops \
     and when the minute ends): aggregate with sum() and max().";

/// Arrow schema of `ingest_stats`.
pub fn schema() -> SchemaRef {
    schema_of(vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "Start of the minute (UTC) in which the requests arrived.",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When seam wrote this row (UTC).",
        ),
        field(
            SOURCE,
            DataType::Utf8,
            false,
            "The receiver: otlp_grpc, otlp_http, apim_http (/ingest/apim), mule_http (/ingest/mule), or the name of a pulled source ([[sources]]).",
        ),
        field(
            "signal",
            DataType::Utf8,
            false,
            "The records: spans, logs, gateway_logs (gateway logs and events) or flow_logs.",
        ),
        field("requests", DataType::Int64, false, "Requests answered."),
        field(
            "refused_requests",
            DataType::Int64,
            false,
            "Requests refused as a whole (bad payload, too large, overload, shutting down).",
        ),
        field("received", DataType::Int64, false, "Records received."),
        field("accepted", DataType::Int64, false, "Records stored."),
        field(
            "rejected",
            DataType::Int64,
            false,
            "Records refused (invalid, or in a refused request).",
        ),
        field(
            "duplicates",
            DataType::Int64,
            false,
            "Records recognised as already stored (always 0 for OTLP, which has no duplicate key).",
        ),
        field(
            "lag_avg_ms",
            DataType::Float64,
            true,
            "Average of ingest time minus event time over the accepted records, in milliseconds; NULL when none was accepted.",
        ),
        field(
            "lag_max_ms",
            DataType::Float64,
            true,
            "Largest ingest time minus event time over the accepted records, in milliseconds.",
        ),
    ])
}
