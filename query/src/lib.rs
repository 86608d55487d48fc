//! seam's query service: read-only SQL over seam's tables.
//!
//! ```text
//!  HTTP POST /api/v1/sql ─▶ QueryService::execute ─▶ plan (DataFusion) ─▶ read-only check
//!        ─▶ SeamTable::scan ─┬─▶ Parquet files (pruned by time, row groups, pages, bloom filters)
//!                            └─▶ recent in-memory batches (TableSource)
//! ```
//!
//! Takes a [`seam_schemas::source::TableSource`] and the URL of the data directory; gives
//! [`QueryService`], which plans and runs one SQL statement at a time with a time limit and a
//! memory limit, refusing anything but queries, and [`http::router`], the HTTP API.

pub mod audit;
pub mod config;
pub mod error;
pub mod http;
pub mod pgwire;
pub mod session;
pub mod table;

pub use config::QueryConfig;
pub use error::QueryError;
pub use session::{QueryResult, QueryService};
