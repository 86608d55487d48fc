//! The correlator's record source: `seam_correlate`'s reads, run by the query service.
//!
//! Takes the correlator's fixed statements and the values bound to their placeholders
//! ([`Param`]); gives the result batches, planned and run by
//! [`QueryService::run_internal_with_params`] (read-only and checked like any statement, on
//! the query runtime under the shared memory limit, without a time or result limit). The
//! binary wires this so that `seam_correlate` does not depend on the query engine.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::arrow::array::{ListBuilder, StringBuilder};
use datafusion::scalar::ScalarValue;
use seam_correlate::{Param, ReadError, RecordSource};
use seam_query::QueryService;

/// Reads raw records for the correlator through the query service.
#[derive(Debug)]
pub struct QueryRecords {
    query: Arc<QueryService>,
}

impl QueryRecords {
    /// A record source over `query`.
    pub fn new(query: Arc<QueryService>) -> Self {
        Self { query }
    }
}

/// The engine's value for `p`: an `Int64`, or one `List<Utf8>` (nullable items, field
/// `item`), possibly empty.
fn scalar(p: Param) -> ScalarValue {
    match p {
        Param::I64(v) => ScalarValue::Int64(Some(v)),
        Param::TextList(values) => {
            let mut list = ListBuilder::new(StringBuilder::new());
            for v in &values {
                list.values().append_value(v);
            }
            list.append(true);
            ScalarValue::List(Arc::new(list.finish()))
        }
    }
}

#[async_trait::async_trait]
impl RecordSource for QueryRecords {
    async fn read(&self, sql: &str, params: Vec<Param>) -> Result<Vec<RecordBatch>, ReadError> {
        self.query
            .run_internal_with_params(sql, params.into_iter().map(scalar).collect())
            .await
            .map_err(ReadError::engine)
    }
}
