//! The storage engine's errors: one type per operation family, each naming what failed and
//! where. Callers decide what a failure means for their client (the collector maps every
//! [`AppendError`] to a retryable answer: a storage failure is never the sender's fault).

use std::path::PathBuf;

/// Why an append to the write-ahead log was not made durable. Every variant is retryable
/// from the client's point of view: the data was fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Memory, the queue or the disk is full right now; sending again later may succeed.
    #[error("{0}")]
    Overloaded(String),
    /// The log is closing.
    #[error("the write-ahead log is closed")]
    ShuttingDown,
    /// A failure inside seam (an unknown table, a batch that cannot be encoded).
    #[error("{0}")]
    Internal(String),
}

/// WAL failures at start.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading or writing a segment failed.
    #[error("write-ahead log I/O on {path} failed: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A segment is corrupt and the policy is `fail`.
    #[error(
        "write-ahead log segment {path} is corrupt at offset {offset}: {reason}. Acknowledged \
         records after that point cannot be replayed. Move the file away, or set \
         wal.on_corrupt = \"quarantine\" to keep what precedes the damage and start"
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the damage starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Storage failures (Parquet files, manifests, the object store).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Reading or writing the object store failed.
    #[error("object store operation on {path} failed: {source}")]
    ObjectStore {
        /// The object's path.
        path: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// Encoding or decoding Parquet failed.
    #[error("Parquet encoding of {path} failed: {source}")]
    Parquet {
        /// The file's path.
        path: String,
        /// What the encoder said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// An Arrow operation failed (schemas that do not match).
    #[error("Arrow operation on table {table} failed: {source}")]
    Arrow {
        /// The table.
        table: String,
        /// What Arrow said.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A manifest could not be read.
    #[error("manifest {path} is unreadable: {reason}")]
    Manifest {
        /// The manifest's path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Files exist but the manifest that would list them does not.
    #[error(
        "table {table} has Parquet files under {prefix} but no manifest at {manifest}; restore \
         the manifest or move the files away before starting seam"
    )]
    MissingManifest {
        /// The table.
        table: String,
        /// Its directory.
        prefix: String,
        /// The missing manifest.
        manifest: String,
    },
    /// The table's Delta log could not be read or written.
    #[error("Delta log of table {table}: {source}")]
    Delta {
        /// The table.
        table: String,
        /// What is wrong.
        #[source]
        source: crate::delta::DeltaError,
    },
    /// This node no longer holds the store's writer lease (another node may have taken
    /// over): nothing is written until it renews.
    #[error(
        "this seam does not hold the table store's writer lease ({}); the tables are not \
         written until it renews",
        crate::lease::LEASE_PATH
    )]
    LeaseLost,
    /// A background task failed to join.
    #[error("background encoding task failed: {0}")]
    Join(String),
    /// A table name that is not in the schema registry.
    #[error("unknown table {0}")]
    UnknownTable(String),
}
