//! The contract between seam's crates: the collector and store that write tables, the
//! correlator that derives them, and the query service that reads them.
//!
//! Takes nothing at run time: this crate only *describes* data. It gives
//! - [`tables`]: every table seam stores, as an Arrow schema whose fields carry a
//!   `description` metadata entry (the generated reference in `docs/tables.md` comes from it);
//! - [`columns`]: the column names, one constant each, so no crate retypes a name;
//! - [`layout`]: where Parquet files live in the data directory and the manifest that lists them;
//! - [`source`]: the [`source::TableSource`] trait through which the all-in-one binary hands
//!   the collector's files and recent in-memory batches to the query service.
//!
//! It has no runtime code (no tokio, no DataFusion), so both services can depend on it
//! without depending on each other.

pub mod columns;
pub mod docs;
pub mod layout;
pub mod source;
pub mod tables;
pub mod token;

/// Ends every text value seam cut to a size limit (attribute values, log bodies, raw rows in
/// `rejects`), so that a reader knows the value is not whole.
pub const TRUNCATED_MARK: &str = "…[truncated by seam]";

/// Version of the table schemas. Bumped when a column is added; columns are only ever added
/// as nullable, so files written under an older version stay readable (missing columns read
/// as NULL).
pub const SCHEMA_VERSION: u32 = 2;
