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
    /// This node no longer holds its lease in the store (another process under its node id
    /// took it): nothing more is written until it is restarted.
    #[error(
        "this seam does not hold its node lease in the table store ({}/node-<id>.json); \
         the tables are not written until it is restarted",
        crate::lease::LEASES_DIR
    )]
    LeaseLost,
    /// A table's manifest changed while this node held the table's commit lock (the lock
    /// outlived its time to live and another node took it): the update is tried again.
    #[error("table {table}'s manifest changed during this node's update of it; it is tried again")]
    Conflict {
        /// The table.
        table: String,
    },
    /// The correlation lease is not this node's (another node correlates, or the lease was
    /// lost): derived rows are not written.
    #[error("this node does not hold the correlation lease; derived rows are not written")]
    NotCorrelating,
    /// A node id that cannot name objects in the store.
    #[error(
        "node id {0:?} (in the data directory's node_id file) is not 1 to 64 letters, digits, \
         '.', '_' or '-'"
    )]
    NodeId(String),
    /// A table's commit lock could not be taken (another node held it for too long, or the
    /// store failed): the update is tried again later.
    #[error("cannot take table {table}'s commit lock: {source}")]
    Lock {
        /// The table.
        table: String,
        /// Why.
        #[source]
        source: crate::lease::LeaseError,
    },
    /// A background task failed to join.
    #[error("background encoding task failed: {0}")]
    Join(String),
    /// A table name that is not in the schema registry.
    #[error("unknown table {0}")]
    UnknownTable(String),
}
