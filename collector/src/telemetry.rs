//! seam's own metrics, rendered in the Prometheus text format.
//!
//! Takes counter and gauge updates from every stage; gives [`Metrics::render`], the text the
//! API listener serves on `/metrics`. Every metric name is declared once, in [`METRICS`], with
//! its help text; code refers to the constants, never to a retyped string.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Records received in export or ingest requests, by `signal` and `transport`.
pub const RECORDS_RECEIVED: &str = "seam_records_received_total";
/// Records accepted (stored), by `signal` and `transport`.
pub const RECORDS_ACCEPTED: &str = "seam_records_accepted_total";
/// Records refused, by `signal`, `transport` and `reason`.
pub const RECORDS_REJECTED: &str = "seam_records_rejected_total";
/// Requests answered, by `signal`, `transport` and `outcome`.
pub const REQUESTS: &str = "seam_ingest_requests_total";
/// Request bytes received (as sent), by `transport`.
pub const BYTES_RECEIVED: &str = "seam_ingest_bytes_total";
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
/// Time spent in write-ahead log fsync calls.
pub const WAL_FSYNC_SECONDS: &str = "seam_wal_fsync_seconds_total";
/// Failed write-ahead log writes (the requests got a retryable error).
pub const WAL_WRITE_ERRORS: &str = "seam_wal_write_errors_total";
/// Appends waiting for the writer (gauge).
pub const WAL_QUEUE_DEPTH: &str = "seam_wal_queue_depth";
/// Segments on disk (gauge).
pub const WAL_SEGMENTS: &str = "seam_wal_segments";
/// Torn tails cut at start.
pub const WAL_TORN_TAILS: &str = "seam_wal_torn_tails_total";
/// Corrupt segments quarantined at start.
pub const WAL_QUARANTINED: &str = "seam_wal_quarantined_segments_total";

/// Attribute values, log bodies or attribute lists cut to the limits, by `table`.
pub const ATTRIBUTES_TRUNCATED: &str = "seam_attributes_truncated_total";

/// Files removed by retention or the disk budget, by `table` and `reason`.
pub const RETENTION_FILES: &str = "seam_retention_removed_files_total";
/// Rows removed by retention or the disk budget, by `table` and `reason`.
pub const RETENTION_ROWS: &str = "seam_retention_removed_rows_total";

/// Tokens identified by fingerprint only, by `table` and `reason` (`opaque`,
/// `bad_base64`, `not_json`, `oversized`).
pub const TOKENS_UNREADABLE: &str = "seam_tokens_unreadable_total";

/// Name, type and help of every metric the collector exports.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        TOKENS_UNREADABLE,
        "counter",
        "Bearer tokens whose claims could not be read (fingerprint only), by reason.",
    ),
    (
        RETENTION_FILES,
        "counter",
        "Files removed by retention (reason=retention) or the disk budget (reason=disk_budget).",
    ),
    (
        RETENTION_ROWS,
        "counter",
        "Rows removed by retention or the disk budget.",
    ),
    (
        RECORDS_RECEIVED,
        "counter",
        "Records received in export or ingest requests.",
    ),
    (RECORDS_ACCEPTED, "counter", "Records accepted and stored."),
    (RECORDS_REJECTED, "counter", "Records refused, by reason."),
    (REQUESTS, "counter", "Ingest requests answered, by outcome."),
    (
        BYTES_RECEIVED,
        "counter",
        "Request body bytes received, as sent.",
    ),
    (FLUSHES, "counter", "Parquet files written by flushes."),
    (
        FLUSH_ERRORS,
        "counter",
        "Flushes that failed and will be retried.",
    ),
    (COMPACTIONS, "counter", "Compactions that merged files."),
    (
        PARQUET_BYTES,
        "counter",
        "Parquet bytes written by flushes and compactions.",
    ),
    (
        BUFFERED_ROWS,
        "gauge",
        "Rows accepted but not yet written to Parquet.",
    ),
    (
        BUFFERED_BYTES,
        "gauge",
        "Bytes of rows accepted but not yet written to Parquet.",
    ),
    (
        TABLE_FILES,
        "gauge",
        "Parquet files listed in the table's manifest.",
    ),
    (
        ATTRIBUTES_TRUNCATED,
        "counter",
        "Attribute values, bodies or attribute lists cut to the limits.",
    ),
    (
        WAL_BYTES,
        "counter",
        "Bytes appended to the write-ahead log.",
    ),
    (WAL_GROUPS, "counter", "Write-ahead log group commits."),
    (WAL_FSYNCS, "counter", "Write-ahead log fsync calls."),
    (
        WAL_FSYNC_SECONDS,
        "counter",
        "Seconds spent in write-ahead log fsync calls.",
    ),
    (
        WAL_WRITE_ERRORS,
        "counter",
        "Failed write-ahead log writes (answered with a retryable error).",
    ),
    (
        WAL_QUEUE_DEPTH,
        "gauge",
        "Appends waiting for the write-ahead log writer.",
    ),
    (WAL_SEGMENTS, "gauge", "Write-ahead log segments on disk."),
    (
        WAL_TORN_TAILS,
        "counter",
        "Torn write-ahead log tails cut at start.",
    ),
    (
        WAL_QUARANTINED,
        "counter",
        "Corrupt write-ahead log segments quarantined at start.",
    ),
];

/// A set of labelled counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<(&'static str, String), f64>>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

impl Metrics {
    /// Adds `by` to a counter.
    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], by: u64) {
        if let Ok(mut m) = self.values.lock() {
            *m.entry((name, labels(pairs))).or_insert(0.0) += by as f64;
        }
    }

    /// Adds a fractional amount (seconds) to a counter.
    pub fn add_f(&self, name: &'static str, pairs: &[(&str, &str)], by: f64) {
        if let Ok(mut m) = self.values.lock() {
            *m.entry((name, labels(pairs))).or_insert(0.0) += by;
        }
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, pairs: &[(&str, &str)], value: f64) {
        if let Ok(mut m) = self.values.lock() {
            m.insert((name, labels(pairs)), value);
        }
    }

    /// The current value of a metric (0 when never set), for tests and summaries.
    pub fn get(&self, name: &'static str, pairs: &[(&str, &str)]) -> f64 {
        self.values
            .lock()
            .ok()
            .and_then(|m| m.get(&(name, labels(pairs))).copied())
            .unwrap_or(0.0)
    }

    /// Renders every metric in the Prometheus text exposition format: the declared ones
    /// (with help, even before their first update) and anything else that was set.
    pub fn render(&self) -> String {
        let Ok(m) = self.values.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let mut names: Vec<&'static str> = METRICS.iter().map(|(n, _, _)| *n).collect();
        for (n, _) in m.keys() {
            if !names.contains(n) {
                names.push(n);
            }
        }
        for name in names {
            let (kind, help) = METRICS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or(("untyped", ""), |(_, k, h)| (*k, *h));
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, l), v) in m.range((name, String::new())..) {
                if *n != name {
                    break;
                }
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.add(
            RECORDS_RECEIVED,
            &[("signal", "spans"), ("transport", "grpc")],
            3,
        );
        m.add(
            RECORDS_RECEIVED,
            &[("signal", "spans"), ("transport", "grpc")],
            2,
        );
        m.set(BUFFERED_BYTES, &[], 10.0);
        let text = m.render();
        assert!(
            text.contains("seam_records_received_total{signal=\"spans\",transport=\"grpc\"} 5")
        );
        assert!(text.contains("seam_buffered_bytes 10"));
        assert!(text.contains("# TYPE seam_flushes_total counter"));
        // Every metric constant of this module is declared with its help text.
        let src = include_str!("telemetry.rs");
        for line in src
            .lines()
            .filter(|l| l.starts_with("pub const ") && l.contains("\"seam_"))
        {
            let name = line.split('"').nth(1).unwrap();
            assert!(
                METRICS.iter().any(|(n, _, _)| *n == name),
                "{name} not in METRICS"
            );
        }
    }
}
