//! The correlation loop's errors: one type per boundary.
//!
//! Takes the failures of the three steps around the rules (reading raw records through a
//! [`crate::read::RecordSource`], building the derived batches, writing them to storage);
//! gives [`ReadError`] (what a record source reports) and [`CorrelateError`] (why one
//! recomputation failed). A failed recomputation changes nothing stored: its minute is
//! scheduled again.

use arrow::error::ArrowError;
use seam_store::StorageError;

/// Why a read through a [`crate::read::RecordSource`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The query engine refused or failed the statement (planning, a limit, I/O); the
    /// message is the engine's own.
    #[error(transparent)]
    Engine(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl ReadError {
    /// Wraps the query engine's error.
    pub fn engine(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Engine(Box::new(e))
    }
}

/// Why a recomputation failed.
#[derive(Debug, thiserror::Error)]
pub enum CorrelateError {
    /// Reading the raw records failed.
    #[error("reading records: {0}")]
    Read(#[from] ReadError),
    /// Writing the derived rows failed.
    #[error("writing derived rows: {0}")]
    Storage(#[from] StorageError),
    /// Building the derived batch failed.
    #[error("building derived rows: {0}")]
    Arrow(#[from] ArrowError),
    /// The recomputation was stopped (the server is stopping); nothing was listed.
    #[error("the recomputation was stopped")]
    Stopped,
    /// The work thread of a recomputation ended without an answer (it panicked, or the
    /// runtime is shutting down); nothing was written.
    #[error("the recomputation's work thread ended without an answer: {0}")]
    Task(String),
}
