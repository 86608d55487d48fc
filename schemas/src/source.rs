//! The interface through which the query service sees a table's data.
//!
//! Takes nothing itself; gives the [`TableSource`] trait and the [`TableSnapshot`] it
//! returns. The store (`seam_store::Storage`) implements it (Parquet files listed in the manifest plus the
//! batches it has accepted but not yet persisted); the `seam` binary hands it to the query
//! service. A snapshot is consistent: a batch is either still in `recent` or already in one of
//! `files`, never both and never neither.

use std::fmt::Debug;

use arrow_array::RecordBatch;

use crate::layout::FileEntry;

/// A consistent view of one table.
#[derive(Debug, Clone, Default)]
pub struct TableSnapshot {
    /// Persisted Parquet files, paths relative to the data directory's object store root.
    pub files: Vec<FileEntry>,
    /// Accepted batches not yet in a Parquet file, in the table's schema.
    pub recent: Vec<RecordBatch>,
}

/// Something that can hand out consistent snapshots of seam's tables.
pub trait TableSource: Send + Sync + Debug {
    /// The current snapshot of `table`; empty when the table has no data.
    fn snapshot(&self, table: &str) -> TableSnapshot;
}
