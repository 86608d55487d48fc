//! `SeamTable`: a DataFusion `TableProvider` over one seam table.
//!
//! Takes a [`TableSource`] snapshot (Parquet files from the manifest plus recent in-memory
//! batches); gives an execution plan that unions a Parquet scan of the files whose
//! `[min_time, max_time]` overlaps the query's `time` filters with a memory scan of the
//! recent batches. The filters stay above the scan (they are inexact), and DataFusion's
//! physical optimiser pushes them into the Parquet reader for row-group and page pruning
//! (statistics, page index, bloom filters on `trace_id` and `correlation_id`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use seam_schemas::columns;
use seam_schemas::layout::FileEntry;
use seam_schemas::source::TableSource;

/// One seam table as DataFusion sees it.
#[derive(Debug)]
pub struct SeamTable {
    name: &'static str,
    schema: SchemaRef,
    source: Arc<dyn TableSource>,
    /// URL of the data directory's object store root, ending in `/`.
    base_url: String,
}

impl SeamTable {
    /// A provider for `name`, reading files relative to `base_url`.
    pub fn new(
        name: &'static str,
        schema: SchemaRef,
        source: Arc<dyn TableSource>,
        base_url: String,
    ) -> Self {
        Self {
            name,
            schema,
            source,
            base_url,
        }
    }
}

#[async_trait]
impl TableProvider for SeamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snap = self.source.snapshot(self.name);
        let (lo, hi) = time_bounds(filters);
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let files: Vec<_> = snap
            .files
            .iter()
            .filter(|f| f.max_time_ns >= lo && f.min_time_ns <= hi)
            .collect();
        if !files.is_empty() {
            plans.push(self.parquet_scan(state, &files, projection, limit).await?);
        }
        if !snap.recent.is_empty() {
            let mem = MemTable::try_new(self.schema.clone(), vec![snap.recent])?;
            plans.push(mem.scan(state, projection, filters, limit).await?);
        }
        if plans.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        UnionExec::try_new(plans)
    }
}

impl SeamTable {
    /// A Parquet scan of exactly the listed files (sizes from the manifest, no listing or
    /// HEAD request per query). A listed file that is missing fails the query instead of
    /// silently reading as empty.
    async fn parquet_scan(
        &self,
        state: &dyn Session,
        files: &[&FileEntry],
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let base = ListingTableUrl::parse(&self.base_url)?;
        let groups = state.config().target_partitions().max(1).min(files.len());
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (i, f) in files.iter().enumerate() {
            let location = format!(
                "{}/{}",
                base.prefix().as_ref().trim_end_matches('/'),
                f.path
            );
            file_groups[i % groups].push(PartitionedFile::new(location, f.size));
        }
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(TableSchema::from(self.schema.clone()));
        let config = FileScanConfigBuilder::new(base.object_store(), source)
            .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

/// The `[lo, hi]` range (nanoseconds) of `time` that the filters allow; unbounded sides are
/// `i64::MIN` / `i64::MAX`. Only conjunctions of comparisons with literals narrow it.
pub fn time_bounds(filters: &[Expr]) -> (i64, i64) {
    let mut b = (i64::MIN, i64::MAX);
    for f in filters {
        narrow(f, &mut b);
    }
    b
}

fn is_time(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => c.name == columns::TIME,
        Expr::Cast(c) => is_time(&c.expr),
        _ => false,
    }
}

fn literal_ns(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match v {
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(*n),
        ScalarValue::TimestampMicrosecond(Some(n), _) => Some(n.saturating_mul(1_000)),
        ScalarValue::TimestampMillisecond(Some(n), _) => Some(n.saturating_mul(1_000_000)),
        ScalarValue::TimestampSecond(Some(n), _) => Some(n.saturating_mul(1_000_000_000)),
        _ => None,
    }
}

fn narrow(e: &Expr, b: &mut (i64, i64)) {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                narrow(left, b);
                narrow(right, b);
                return;
            }
            let (op, value) = if is_time(left) {
                (*op, literal_ns(right))
            } else if is_time(right) {
                match op.swap() {
                    Some(op) => (op, literal_ns(left)),
                    None => return,
                }
            } else {
                return;
            };
            let Some(v) = value else { return };
            match op {
                Operator::Gt | Operator::GtEq => b.0 = b.0.max(v),
                Operator::Lt | Operator::LtEq => b.1 = b.1.min(v),
                Operator::Eq => {
                    b.0 = b.0.max(v);
                    b.1 = b.1.min(v);
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr) => {
            if let Some(v) = literal_ns(low) {
                b.0 = b.0.max(v);
            }
            if let Some(v) = literal_ns(high) {
                b.1 = b.1.min(v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn ts(n: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(n),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn bounds_from_filters() {
        assert_eq!(time_bounds(&[]), (i64::MIN, i64::MAX));
        let f = col("time").gt_eq(ts(10)).and(col("time").lt(ts(20)));
        assert_eq!(time_bounds(&[f]), (10, 20));
        assert_eq!(time_bounds(&[ts(15).lt(col("time"))]), (15, i64::MAX));
        assert_eq!(time_bounds(&[col("time").between(ts(1), ts(2))]), (1, 2));
        assert_eq!(
            time_bounds(&[col("time").gt(ts(1)).or(col("time").lt(ts(0)))]),
            (i64::MIN, i64::MAX)
        );
        assert_eq!(
            time_bounds(&[col("end_time").gt(ts(5))]),
            (i64::MIN, i64::MAX)
        );
    }
}

#[cfg(test)]
mod pruning_tests {
    use std::sync::Arc;

    use seam_schemas::layout::FileEntry;
    use seam_schemas::source::{TableSnapshot, TableSource};

    use crate::{QueryConfig, QueryService};

    /// Lists one file that does not exist, holding rows of 2020-01-01. A query whose time
    /// filter excludes it must not open it; one that includes it must try to.
    #[derive(Debug)]
    struct OneMissingFile;

    impl TableSource for OneMissingFile {
        fn snapshot(&self, table: &str) -> TableSnapshot {
            let day = 1_577_836_800_000_000_000_i64;
            TableSnapshot {
                files: vec![FileEntry {
                    path: format!("tables/{table}/date=2020-01-01/hour=00/missing.parquet"),
                    size: 1000,
                    rows: 10,
                    min_time_ns: day,
                    max_time_ns: day + 3_600_000_000_000 - 1,
                    level: 0,
                }],
                recent: Vec::new(),
            }
        }
    }

    #[tokio::test]
    async fn time_filters_skip_files_outside_the_range() {
        let dir = std::env::temp_dir();
        let url = format!("file://{}/seam-pruning-test-nonexistent/", dir.display());
        let q = QueryService::new(Arc::new(OneMissingFile), &url, QueryConfig::default()).unwrap();
        let r = q
            .execute("SELECT count(*) FROM spans WHERE time >= '2024-11-05T00:00:00Z'")
            .await
            .unwrap();
        assert_eq!(r.num_rows(), 1);
        let r = q
            .execute("SELECT trace_id FROM spans WHERE time < '2019-12-31T00:00:00Z'")
            .await
            .unwrap();
        assert_eq!(r.num_rows(), 0);
        let err = q
            .execute("SELECT trace_id FROM spans WHERE time >= '2020-01-01T00:30:00Z'")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing.parquet"), "{err}");
    }
}
