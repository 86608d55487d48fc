//! The `rejects` table: every line or record seam refused, redacted, with where it was and
//! why, so users can see what was refused.

use arrow_schema::{DataType, SchemaRef};

use super::{field, schema_of, timestamp_type};
use crate::columns::*;

/// SQL name.
pub const TABLE: &str = "rejects";
/// What one row is.
pub const DESCRIPTION: &str = "One row per refused line or record of a gateway or flow log \
     input, or per stored row that could not be replayed from the write-ahead log: where it \
     was (file and line, or record index), why it was refused, and its text with tokens and \
     secrets redacted.";

// Columns of this table only (shared names are in `crate::columns`).

/// File name of the refused input.
pub const FILE: &str = "file";
/// Line number (from 1) of a refused line.
pub const LINE: &str = "line";
/// Index (from 0) of a refused record inside a JSON document.
pub const RECORD_INDEX: &str = "record_index";
/// Why it was refused.
pub const REASON: &str = "reason";

/// Arrow schema of `rejects`.
pub fn schema() -> SchemaRef {
    schema_of(vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "When seam refused it (UTC; equals ingest_time).",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When seam received it (UTC).",
        ),
        field(
            RECORD_KEY,
            DataType::Utf8,
            false,
            "seam's key of the refusal (hash of source, file, position and text): re-importing a file does not repeat it.",
        ),
        field(
            SOURCE,
            DataType::Utf8,
            false,
            "Where it was sent: apim or mule; or the table of a write-ahead log entry refused at replay (spans, logs, …: reason starts with \"refused at write-ahead log replay\").",
        ),
        field(
            FILE,
            DataType::Utf8,
            true,
            "File name (seam ingest, or the ingest request's file parameter); NULL for plain HTTP bodies.",
        ),
        field(
            LINE,
            DataType::Int64,
            true,
            "Line number (from 1) of a refused line.",
        ),
        field(
            RECORD_INDEX,
            DataType::Int64,
            true,
            "Index (from 0) of a refused record inside a JSON document (for a replay refusal: the row inside its write-ahead log entry).",
        ),
        field(REASON, DataType::Utf8, false, "Why it was refused."),
        field(
            RAW,
            DataType::Utf8,
            true,
            "The refused text (at most 4 KiB), with tokens and secrets redacted; for a replay refusal, the row as JSON.",
        ),
    ])
}
