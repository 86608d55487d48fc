//! seam's query service: read-only SQL over seam's tables.
//!
//! ```text
//!  HTTP POST /api/v1/sql ─▶ QueryService::stream ─▶ policy ─▶ plan (DataFusion) ─▶ plan check
//!        ─▶ (query runtime) SeamTable::scan
//!               ─┬─▶ Parquet files (pruned by time, row groups, pages, bloom filters)
//!                └─▶ recent in-memory batches (TableSource)
//! ```
//!
//! Takes a [`seam_schemas::source::TableSource`] and the URL of the data directory; gives
//! [`QueryService`], which plans and runs SQL statements on a runtime of their own with a
//! time limit, a memory limit, a result limit and capped value builders, refusing anything but
//! queries ([`policy`], shared by both protocols), [`http::router`], the HTTP API, and
//! [`pgwire`], the PostgreSQL wire listener.

pub mod audit;
pub mod config;
pub mod error;
pub mod functions;
pub mod http;
pub mod pgwire;
pub mod policy;
pub mod runtime;
pub mod session;
pub mod table;

pub use config::QueryConfig;
pub use error::QueryError;
pub use session::{QueryResult, QueryService, QueryStream};
