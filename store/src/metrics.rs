//! The storage engine's metrics: one constant per name, described once in [`describe`].
//! They are emitted through the `metrics` facade; the binary installs the one registry that
//! renders every crate's metrics on `/metrics`.

/// Parquet files written by flushes, by `table`.
pub const FLUSHES: &str = "seam_flushes_total";
/// Flushes that failed (the rows stay in memory and are retried), by `table`.
pub const FLUSH_ERRORS: &str = "seam_flush_errors_total";
/// Compactions (merges of files), by `table`.
pub const COMPACTIONS: &str = "seam_compactions_total";
/// Parquet bytes written (flushes and compactions), by `table`.
pub const PARQUET_BYTES: &str = "seam_parquet_bytes_written_total";
/// Rows held in memory and not yet in Parquet, by `table` (gauge).
pub const BUFFERED_ROWS: &str = "seam_buffered_rows";
/// Bytes held in memory and not yet in Parquet, all tables (gauge).
pub const BUFFERED_BYTES: &str = "seam_buffered_bytes";
/// Files listed in a table's manifest, by `table` (gauge).
pub const TABLE_FILES: &str = "seam_table_files";
/// Bytes appended to the write-ahead log.
pub const WAL_BYTES: &str = "seam_wal_bytes_total";
/// Group commits (one write, one fsync, many requests).
pub const WAL_GROUPS: &str = "seam_wal_group_commits_total";
/// fsync calls of the write-ahead log.
pub const WAL_FSYNCS: &str = "seam_wal_fsyncs_total";
/// Time spent in write-ahead log fsync calls (seconds; a float that only grows, kept as a
/// gauge because the facade's counters are integers).
pub const WAL_FSYNC_SECONDS: &str = "seam_wal_fsync_seconds_total";
/// Failed write-ahead log writes (the requests got a retryable error).
pub const WAL_WRITE_ERRORS: &str = "seam_wal_write_errors_total";
/// Appends waiting for the writer (gauge).
pub const WAL_QUEUE_DEPTH: &str = "seam_wal_queue_depth";
/// Segments on disk (gauge).
pub const WAL_SEGMENTS: &str = "seam_wal_segments";
/// Torn tails cut at start.
pub const WAL_TORN_TAILS: &str = "seam_wal_torn_tails_total";
/// Corrupt segments (or unreadable entries) quarantined at start.
pub const WAL_QUARANTINED: &str = "seam_wal_quarantined_segments_total";
/// Files removed by retention or the disk budget, by `table` and `reason`.
pub const RETENTION_FILES: &str = "seam_retention_removed_files_total";
/// Rows removed by retention or the disk budget, by `table` and `reason`.
pub const RETENTION_ROWS: &str = "seam_retention_removed_rows_total";
/// Delta log commits written, by `table`.
pub const DELTA_COMMITS: &str = "seam_delta_commits_total";
/// Delta checkpoints written, by table.
pub const DELTA_CHECKPOINTS: &str = "seam_delta_checkpoints_total";
/// Old Delta log entries (commits, checkpoints) removed after `storage.delta_log_retention`,
/// by `table`.
pub const DELTA_LOG_REMOVED: &str = "seam_delta_log_entries_removed_total";
/// Bytes of table files held in the local cache of a remote store (gauge).
pub const CACHE_BYTES: &str = "seam_storage_cache_bytes";
/// Reads of table files through the local cache of a remote store, by `result` (`hit`:
/// served from the local copy, `miss`: downloaded first).
pub const CACHE_READS: &str = "seam_storage_cache_reads_total";
/// Manifest updates of a shared store made under the table's commit lock, by `table`
/// (every attempt that took the lock: those that failed or found nothing to write too).
pub const STORE_COMMITS: &str = "seam_store_commits_total";
/// Seconds of those updates, from asking for the commit lock to releasing it, by `table`
/// (only grows; a gauge because the facade's counters are integers).
pub const STORE_COMMIT_SECONDS: &str = "seam_store_commit_seconds_total";
/// Seconds of those spent waiting for the commit lock (another node held it), by `table`.
pub const STORE_COMMIT_LOCK_WAIT_SECONDS: &str = "seam_store_commit_lock_wait_seconds_total";
/// Updates that found the manifest changed under them (a commit lock that outlived its time
/// to live) and were made again, by `table`.
pub const STORE_COMMIT_CONFLICTS: &str = "seam_store_commit_conflicts_total";
/// Passes of a shared store's refresh (reading other nodes' manifest changes).
pub const STORE_REFRESHES: &str = "seam_store_refreshes_total";
/// Seconds spent in those passes (only grows).
pub const STORE_REFRESH_SECONDS: &str = "seam_store_refresh_seconds_total";
/// Manifests read again by the refresh because another node changed them, by `table`.
pub const STORE_REFRESHED_MANIFESTS: &str = "seam_store_refreshed_manifests_total";

/// Describes every storage metric to the installed registry, and gives each unlabelled one
/// its zero, so that a scrape shows them before their first event.
pub fn describe() {
    use ::metrics::{counter, describe_counter, describe_gauge, gauge};
    describe_counter!(FLUSHES, "Parquet files written by flushes, by table.");
    describe_counter!(DELTA_COMMITS, "Delta log commits written, by table.");
    describe_counter!(
        DELTA_CHECKPOINTS,
        "Delta checkpoints written (every tenth version), by table."
    );
    describe_counter!(
        DELTA_LOG_REMOVED,
        "Old Delta log entries removed after storage.delta_log_retention, by table."
    );
    describe_gauge!(
        CACHE_BYTES,
        "Bytes of table files in the local cache of a remote table store."
    );
    describe_counter!(
        CACHE_READS,
        "Table file reads through the local cache of a remote store, by result (hit, miss)."
    );
    describe_counter!(
        FLUSH_ERRORS,
        "Flushes that failed (rows stay in memory and are retried), by table."
    );
    describe_counter!(
        COMPACTIONS,
        "Compactions (merges of Parquet files), by table."
    );
    describe_counter!(
        PARQUET_BYTES,
        "Parquet bytes written by flushes and compactions, by table."
    );
    describe_gauge!(
        BUFFERED_ROWS,
        "Rows in memory not yet written to Parquet, by table."
    );
    describe_gauge!(
        BUFFERED_BYTES,
        "Bytes in memory not yet written to Parquet."
    );
    describe_gauge!(TABLE_FILES, "Files listed in a table's manifest, by table.");
    describe_counter!(
        STORE_COMMITS,
        "Manifest updates of a shared store made under the table's commit lock, by table."
    );
    describe_gauge!(
        STORE_COMMIT_SECONDS,
        "Seconds of shared-store manifest updates, commit lock wait included, by table (only grows)."
    );
    describe_gauge!(
        STORE_COMMIT_LOCK_WAIT_SECONDS,
        "Seconds shared-store manifest updates waited for the table's commit lock, by table (only grows)."
    );
    describe_counter!(
        STORE_COMMIT_CONFLICTS,
        "Shared-store manifest updates made again because the manifest changed under them, by table."
    );
    describe_counter!(
        STORE_REFRESHES,
        "Passes reading other nodes' manifest changes (shared store)."
    );
    describe_gauge!(
        STORE_REFRESH_SECONDS,
        "Seconds spent reading other nodes' manifest changes (only grows)."
    );
    describe_counter!(
        STORE_REFRESHED_MANIFESTS,
        "Manifests read again because another node changed them, by table."
    );
    describe_counter!(WAL_BYTES, "Bytes appended to the write-ahead log.");
    describe_counter!(WAL_GROUPS, "Write-ahead log group commits.");
    describe_counter!(WAL_FSYNCS, "Write-ahead log fsync calls.");
    describe_gauge!(
        WAL_FSYNC_SECONDS,
        "Seconds spent in write-ahead log fsync calls (only grows)."
    );
    describe_counter!(
        WAL_WRITE_ERRORS,
        "Failed write-ahead log writes (answered with a retryable status)."
    );
    describe_gauge!(
        WAL_QUEUE_DEPTH,
        "Appends waiting for the write-ahead log writer."
    );
    describe_gauge!(WAL_SEGMENTS, "Write-ahead log segments on disk.");
    describe_counter!(WAL_TORN_TAILS, "Torn write-ahead log tails cut at start.");
    describe_counter!(
        WAL_QUARANTINED,
        "Corrupt write-ahead log segments or entries quarantined at start."
    );
    describe_counter!(
        RETENTION_FILES,
        "Files removed by retention (reason=retention) or the disk budget (reason=disk_budget)."
    );
    describe_counter!(
        RETENTION_ROWS,
        "Rows removed by retention (reason=retention) or the disk budget (reason=disk_budget)."
    );
    for c in [
        WAL_BYTES,
        WAL_GROUPS,
        WAL_FSYNCS,
        WAL_WRITE_ERRORS,
        WAL_TORN_TAILS,
        WAL_QUARANTINED,
        STORE_REFRESHES,
    ] {
        counter!(c).increment(0);
    }
    for g in [
        BUFFERED_BYTES,
        WAL_QUEUE_DEPTH,
        WAL_SEGMENTS,
        WAL_FSYNC_SECONDS,
        STORE_REFRESH_SECONDS,
    ] {
        gauge!(g).increment(0.0);
    }
}
