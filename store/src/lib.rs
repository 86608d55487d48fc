//! seam's storage engine: everything between "a normalised batch" and "a Parquet file a
//! query can read".
//!
//! ```text
//!  append(batch) ─▶ wal (group commit, fsync) ─▶ storage: recent rows (memory, queryable)
//!                        │ replay at start          │ flush (per table, per UTC hour)
//!                        ▼                          ▼
//!                  wal/<segment>.wal          Parquet files + manifest (object_store)
//!                                                   │ compaction, retention, disk budget
//! ```
//!
//! Takes `RecordBatch`es in a table's schema (`seam_schemas::tables`); gives acknowledgement
//! once they are durable ([`wal::Wal::append`]) and, through
//! [`seam_schemas::source::TableSource`], snapshots of files plus recent rows for the query
//! engine. Knows Arrow, Parquet and object stores only: no receiver, HTTP framework or query
//! engine. What a batch must look like (redaction, event-time window) is the caller's
//! business, handed in as [`wal::Sanitise`].

pub mod backend;
pub mod config;
pub mod delta;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod rows;
pub mod storage;
pub mod wal;

pub use config::{RetentionConfig, StorageConfig};
pub use error::{AppendError, StorageError, WalError};
pub use storage::Storage;
pub use wal::Wal;

/// Now, in nanoseconds since the epoch (saturating; 0 before the epoch).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Cuts `s` to at most `max` bytes (on a character boundary) and marks it with
/// [`seam_schemas::TRUNCATED_MARK`]. Returns whether it cut.
pub fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(seam_schemas::TRUNCATED_MARK);
    true
}

/// A stable 128-bit key (hex) of `parts`, each length-prefixed so that no two part lists
/// collide by concatenation.
pub fn key_of(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}
