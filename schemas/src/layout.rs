//! Storage layout: where each table's Parquet files live and the manifest that lists them.
//!
//! Takes table names and times; gives object-store paths and the [`Manifest`] format.
//!
//! ```text
//! <store>/tables/<table>/_manifest.json
//! <store>/tables/<table>/date=YYYY-MM-DD/hour=HH/L<level>-<ingest-nanos>-<seq>.parquet
//! ```
//!
//! Files are partitioned by the UTC hour of their rows' event `time`. The manifest is the
//! source of truth: a file not listed in it is not part of the table (a compaction or flush
//! that crashed before publishing leaves such orphans; they are deleted `delete_grace` after
//! the next start). Manifests and files are written whole and appear atomically (on local
//! disk: a temporary name, then rename; object stores publish a write whole), so a reader
//! never sees half a file.

use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const MANIFEST_VERSION: u32 = 1;

/// Directory (object-store prefix) under the data directory that holds all tables.
pub const TABLES_DIR: &str = "tables";

/// Name of a table's manifest file.
pub const MANIFEST_FILE: &str = "_manifest.json";

/// One Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the data directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Number of rows.
    pub rows: u64,
    /// Smallest event `time` in the file, nanoseconds since the Unix epoch (UTC).
    pub min_time_ns: i64,
    /// Largest event `time` in the file, nanoseconds since the Unix epoch (UTC).
    pub max_time_ns: i64,
    /// Compaction level: 0 for a file written by a flush, n+1 for a merge of level-n files.
    pub level: u32,
}

/// The list of a table's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`] at the time of writing.
    pub version: u32,
    /// Table name.
    pub table: String,
    /// Schema version ([`crate::SCHEMA_VERSION`]) of the newest writer.
    pub schema_version: u32,
    /// Highest write-ahead-log sequence number whose rows are all in the listed files; WAL
    /// entries at or below it are skipped on replay (so no row is stored twice).
    #[serde(default)]
    pub wal_seq: u64,
    /// The node whose write-ahead log `wal_seq` counts in (its id; none: a seam on its own
    /// data directory, as before node ids existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_node: Option<String>,
    /// The watermarks of other nodes that wrote this store before (a take-over): a node's
    /// write-ahead log is replayed against its own entry only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub other_wal_seqs: std::collections::BTreeMap<String, u64>,
    /// Every file of the table.
    pub files: Vec<FileEntry>,
    /// The version of the table's Delta log (`_delta_log/`) that lists exactly `files`:
    /// the log is committed first, then this manifest. `None`: written before seam kept a
    /// Delta log (the next start commits one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<u64>,
}

/// Path of a table's manifest, relative to the data directory.
pub fn manifest_path(table: &str) -> String {
    format!("{TABLES_DIR}/{table}/{MANIFEST_FILE}")
}

/// Directory of one hour partition, relative to the data directory.
/// `hour_start_secs` is the partition's first second since the epoch (UTC).
pub fn partition_dir(table: &str, hour_start_secs: i64) -> String {
    let days = hour_start_secs.div_euclid(86_400);
    let hour = hour_start_secs.rem_euclid(86_400) / 3_600;
    let (y, m, d) = civil_from_days(days);
    format!("{TABLES_DIR}/{table}/date={y:04}-{m:02}-{d:02}/hour={hour:02}")
}

/// The hour partition (its first second) that holds an event time in nanoseconds.
pub fn hour_of(time_ns: i64) -> i64 {
    time_ns.div_euclid(1_000_000_000).div_euclid(3_600) * 3_600
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date (proleptic Gregorian),
/// after Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_paths() {
        // 2024-11-05T09:14:03Z
        let t = 1_730_798_043_121_451_000_i64;
        assert_eq!(
            partition_dir("spans", hour_of(t)),
            "tables/spans/date=2024-11-05/hour=09"
        );
        assert_eq!(
            partition_dir("logs", 0),
            "tables/logs/date=1970-01-01/hour=00"
        );
        assert_eq!(
            partition_dir("logs", hour_of(-1)),
            "tables/logs/date=1969-12-31/hour=23"
        );
        assert_eq!(
            partition_dir("logs", 951_782_400),
            "tables/logs/date=2000-02-29/hour=00"
        );
    }
}
