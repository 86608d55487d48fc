//! The `source_positions` table: how far each pulled source (`[[sources]]`: Kafka / Event
//! Hubs, Azure Storage blobs, log files) has read. A row is written in the same write-ahead
//! log entry as the records it stands for, so that after any crash seam resumes exactly where
//! its durable records end: nothing lost, nothing taken twice.

use arrow_schema::{DataType, SchemaRef};

use super::{field, schema_of, timestamp_type};
use crate::columns::{INGEST_TIME, SOURCE, TIME};

/// SQL name.
pub const TABLE: &str = "source_positions";
/// What one row is.
pub const DESCRIPTION: &str = "One row per read step of a pulled source and position key \
     (Kafka topic and partition, blob, file): where the source is after that step. The \
     newest row of a source and key is its position; seam reads from there after a restart. \
     Rows are also rewritten for every key at each start, so retention never drops a \
     position still in use.";

/// The source's name (`[[sources]] name`).
pub const SOURCE_NAME: &str = SOURCE;
/// `kafka`, `azure_blob` or `file`.
pub const SOURCE_TYPE: &str = "source_type";
/// What the position is of.
pub const KEY: &str = "key";
/// The next offset to read.
pub const OFFSET: &str = "offset";
/// Source-specific state, as JSON.
pub const DETAIL: &str = "detail";
/// Records read in the step.
pub const RECORDS: &str = "records";
/// Bytes read in the step.
pub const BYTES: &str = "bytes";

/// Arrow schema of `source_positions`.
pub fn schema() -> SchemaRef {
    schema_of(vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "When seam wrote this position (UTC); the newest row of a source and key wins.",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When seam wrote this row (UTC); equal to time.",
        ),
        field(
            SOURCE_NAME,
            DataType::Utf8,
            false,
            "The source's name, as `name` in its `[[sources]]` block.",
        ),
        field(
            SOURCE_TYPE,
            DataType::Utf8,
            false,
            "The source's type: kafka, azure_blob or file.",
        ),
        field(
            KEY,
            DataType::Utf8,
            false,
            "What the position is of: `topic/partition` (kafka), the blob name (azure_blob), \
             or `device:inode` of the file (file).",
        ),
        field(
            OFFSET,
            DataType::Int64,
            false,
            "The next offset to read: the Kafka offset of the next message, or the byte offset \
             in the blob or file after the last complete record taken.",
        ),
        field(
            DETAIL,
            DataType::Utf8,
            true,
            "Source-specific state as JSON: for a file its path and a fingerprint of its first \
             bytes; for a blob its size when read and whether it is finished.",
        ),
        field(
            RECORDS,
            DataType::Int64,
            false,
            "Messages or lines taken in this step (0 for a position rewritten at start).",
        ),
        field(BYTES, DataType::Int64, false, "Bytes taken in this step."),
    ])
}
