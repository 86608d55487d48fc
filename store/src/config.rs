//! Storage settings (`[storage]` and `[storage.retention]`): how accepted rows become
//! Parquet, how files are merged, and how long they are kept.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How accepted data becomes Parquet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the tables (Parquet files and manifests) live: `az://container/prefix` (Azure
    /// Blob Storage, ADLS Gen2; also `abfss://container@account.dfs.core.windows.net/prefix`),
    /// `s3://bucket/prefix` (S3 and S3-compatible servers) or `file:///path`. Unset: the
    /// data directory. Flag `--storage-url`, variable `SEAM_STORAGE_URL`. Credentials come
    /// from the environment, never from the URL (see `seam_store::backend`). The write-ahead
    /// log and the other local state stay in the data directory either way.
    pub url: Option<String>,
    /// With a remote `url`: most bytes of table files kept in a local read cache
    /// (`<data_dir>/cache`, emptied at start; least recently read files go first; a file over
    /// a quarter of it is never cached). 0 turns it off. Default 2 GiB.
    pub cache_bytes: u64,
    /// No longer used (several nodes now share a store, each under its own lease): accepted
    /// so that configurations written for the version with one writer per store still load;
    /// a warning says it is ignored.
    pub take_over: bool,
    /// With a remote `url`: how long this node's lease in the store, and the correlation
    /// lease when this node holds it, last unless renewed (they are renewed every third of
    /// it). A node that dies holds the correlation for at most this long; a process started
    /// again under the same node id waits at most this long. Default 30s.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// With a remote `url`: how often this node reads the tables' manifests again, to see
    /// the rows other nodes flushed (a query sees another node's rows at most
    /// `flush_interval` + `refresh_interval` after it acknowledged them). Default 5s.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
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
    /// Keep files replaced by a compaction, a recomputation or retention this long before
    /// deleting them, so that queries that started before the swap can finish: seam's own,
    /// and those of other engines reading the tables as Delta tables (a Spark or Fabric job
    /// planned on an older version of the log). Files no manifest lists, found at start, are
    /// deleted after it too. Default 1h.
    #[serde(with = "humantime_serde")]
    pub delete_grace: Duration,
    /// Keep Delta log entries (commit JSON, checkpoints) at least this long. When a
    /// checkpoint is written (every tenth version), the entries before the newest checkpoint
    /// older than this are deleted (at most 100 a pass), as Delta's own cleanup does, so the
    /// log does not grow without bound; readers start at the latest checkpoint, and time
    /// travel reaches back at least this far (not past `delete_grace` for versions whose
    /// files were removed since). Default 1d; `0s` keeps only about the last twenty
    /// versions (for tests: a streaming reader that falls behind more than the retention
    /// cannot go on).
    #[serde(with = "humantime_serde")]
    pub delta_log_retention: Duration,
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
    /// (across tables). The derived tables (`requests`, `request_events`), `seam_audit` and
    /// `source_positions` are not counted.
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
    /// The retention of `table` (`None`: forever). The audit trail (`seam_audit`) and the
    /// sources' positions (`source_positions`) follow their own entry only, never the default.
    pub fn for_table(&self, table: &str) -> Option<Duration> {
        let fallback = if seam_schemas::tables::is_admin_only(table)
            || seam_schemas::tables::is_state(table)
        {
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
            url: None,
            cache_bytes: 2 << 30,
            take_over: false,
            lease_ttl: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(5),
            flush_interval: Duration::from_secs(10),
            flush_rows: 200_000,
            max_buffer_bytes: 512 << 20,
            row_group_rows: 131_072,
            zstd_level: 3,
            compaction_fanout: 8,
            compaction_idle: Duration::from_secs(120),
            compaction_max_bytes: 1 << 30,
            delete_grace: Duration::from_secs(3600),
            delta_log_retention: Duration::from_secs(86_400),
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
        if self.lease_ttl < Duration::from_secs(3) {
            return Err("storage.lease_ttl must be at least 3s".into());
        }
        if self.refresh_interval.is_zero() {
            return Err("storage.refresh_interval must be more than 0s".into());
        }
        if self.flush_interval.is_zero() {
            return Err("storage.flush_interval must be more than 0s".into());
        }
        Ok(())
    }
}
