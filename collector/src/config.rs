//! Collector settings: receiver limits and storage behaviour.
//!
//! Takes values from the `seam` binary's configuration loader; gives validated structs with
//! documented defaults. Durations are written like `"5s"` or `"500ms"` in TOML.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits applied by every receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes, as sent (compressed). Default 16 MiB.
    pub max_request_bytes: usize,
    /// Largest body after gzip decompression, in bytes. Default 64 MiB. A body that would
    /// inflate past it is refused without being inflated further.
    pub max_decompressed_bytes: usize,
    /// Most records (spans or log records) in one request. Default 100000. A larger request
    /// is refused whole (HTTP 413, gRPC INVALID_ARGUMENT): split it.
    pub max_records_per_request: usize,
    /// Attributes kept per record (resource, span, event, link, log record). Default 128.
    /// The rest are dropped and their number is stored under `seam.dropped_attributes`.
    pub max_attributes: usize,
    /// Bytes kept of one attribute value or log body. Default 16384. Longer text is cut and
    /// ends with `…[truncated by seam]`.
    pub max_attribute_value_bytes: usize,
    /// Earliest accepted event time (RFC 3339). Default `1970-01-01T00:00:00Z`. A record
    /// timed earlier is refused with the reason (OTLP partial success; a `rejects` row for
    /// gateway and flow logs) and its neighbours are kept.
    #[serde(with = "humantime_serde")]
    pub min_event_time: std::time::SystemTime,
    /// How far past the current time an event time may lie. Default 1d. Later records are
    /// refused like early ones.
    #[serde(with = "humantime_serde")]
    pub max_event_time_ahead: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            max_records_per_request: 100_000,
            max_attributes: 128,
            max_attribute_value_bytes: 16 * 1024,
            min_event_time: std::time::UNIX_EPOCH,
            max_event_time_ahead: Duration::from_secs(86_400),
        }
    }
}

impl LimitsConfig {
    /// The attribute limits the normalise stage applies.
    pub fn attributes(&self) -> crate::normalise::attributes::AttrLimits {
        crate::normalise::attributes::AttrLimits {
            max_attributes: self.max_attributes,
            max_value_bytes: self.max_attribute_value_bytes,
        }
    }

    /// The accepted event-time window.
    pub fn window(&self) -> crate::normalise::time::TimeWindow {
        let min_ns = match self.min_event_time.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        };
        crate::normalise::time::TimeWindow {
            min_ns,
            max_ahead_ns: i64::try_from(self.max_event_time_ahead.as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

/// How accepted data becomes Parquet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Flush a table's in-memory rows to Parquet at least this often. Default 10s. Queries
    /// see accepted rows at once either way (recent rows are served from memory).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Flush a table as soon as it holds this many unflushed rows. Default 200000.
    pub flush_rows: usize,
    /// Most memory (bytes) that unflushed rows of all tables may hold. Past it, receivers
    /// answer with a retryable status (gRPC UNAVAILABLE, HTTP 503). Default 512 MiB.
    pub max_buffer_bytes: usize,
    /// Rows per Parquet row group. Default 131072.
    pub row_group_rows: usize,
    /// zstd level for Parquet pages (1-22). Default 3.
    pub zstd_level: i32,
    /// Merge this many files of one compaction level in one hour partition into one file of
    /// the next level. Default 8.
    pub compaction_fanout: usize,
    /// Merge all files of an hour partition into one once no file was added to it for this
    /// long. Default 2m.
    #[serde(with = "humantime_serde")]
    pub compaction_idle: Duration,
    /// Do not merge partitions whose files add up to more than this many bytes. Default 1 GiB.
    pub compaction_max_bytes: u64,
    /// Keep files replaced by a compaction this long before deleting them, so queries that
    /// started before the swap can finish. Default 60s.
    #[serde(with = "humantime_serde")]
    pub delete_grace: Duration,
    /// How long data is kept, and how much of it.
    pub retention: RetentionConfig,
}

/// Retention and the disk budget. Whole files are removed (files hold one hour of event
/// time), oldest first; every removal is logged and counted
/// (`seam_retention_removed_files_total`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Keep rows this long after their event time, for every table without its own entry
    /// in `tables`. `"0s"` keeps them forever. Default `"0s"`: an audit store never deletes
    /// evidence unless told to (and archives imported for an investigation are often older
    /// than any sensible default).
    #[serde(with = "humantime_serde")]
    pub default: Duration,
    /// Per-table retention, e.g. `spans = "7d"`.
    pub tables: BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// Most bytes of Parquet the raw tables may hold; past it the oldest hours go first
    /// (across tables). The derived tables (`requests`, `request_events`) and `seam_audit` are
    /// not counted.
    /// 0 = no budget. Default 0.
    pub max_data_bytes: u64,
    /// How often retention and the budget are applied. Default 1m.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            default: Duration::ZERO,
            tables: BTreeMap::new(),
            max_data_bytes: 0,
            check_interval: Duration::from_secs(60),
        }
    }
}

impl RetentionConfig {
    /// The retention of `table` (`None`: forever). The audit trail (`seam_audit`) follows
    /// its own entry only, never the default.
    pub fn for_table(&self, table: &str) -> Option<Duration> {
        let fallback = if seam_schemas::tables::is_admin_only(table) {
            Duration::ZERO
        } else {
            self.default
        };
        let d = self.tables.get(table).map_or(fallback, |d| **d);
        (!d.is_zero()).then_some(d)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(10),
            flush_rows: 200_000,
            max_buffer_bytes: 512 << 20,
            row_group_rows: 131_072,
            zstd_level: 3,
            compaction_fanout: 8,
            compaction_idle: Duration::from_secs(120),
            compaction_max_bytes: 1 << 30,
            delete_grace: Duration::from_secs(60),
            retention: RetentionConfig::default(),
        }
    }
}

impl StorageConfig {
    /// Checks ranges, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_rows == 0 {
            return Err("storage.flush_rows must be at least 1".into());
        }
        if self.row_group_rows < 1024 {
            return Err("storage.row_group_rows must be at least 1024".into());
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err("storage.zstd_level must be between 1 and 22".into());
        }
        if self.compaction_fanout < 2 {
            return Err("storage.compaction_fanout must be at least 2".into());
        }
        if self.retention.check_interval.is_zero() {
            return Err("storage.retention.check_interval must be more than 0s".into());
        }
        for name in self.retention.tables.keys() {
            if seam_schemas::tables::get(name).is_none() {
                return Err(format!(
                    "storage.retention.tables names an unknown table {name:?}"
                ));
            }
        }
        if self.flush_interval.is_zero() {
            return Err("storage.flush_interval must be more than 0s".into());
        }
        Ok(())
    }
}

impl LimitsConfig {
    /// Checks ranges, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_request_bytes < 1024 {
            return Err("limits.max_request_bytes must be at least 1024".into());
        }
        if self.max_records_per_request == 0 {
            return Err("limits.max_records_per_request must be at least 1".into());
        }
        if self.max_attribute_value_bytes < 64 {
            return Err("limits.max_attribute_value_bytes must be at least 64".into());
        }
        if self.max_decompressed_bytes < self.max_request_bytes {
            return Err(
                "limits.max_decompressed_bytes must be at least limits.max_request_bytes".into(),
            );
        }
        Ok(())
    }
}
