//! Every table seam stores: its name, Arrow schema and documentation.
//!
//! Takes nothing; gives [`all`], the list of [`TableDef`]s, and one `schema()` per table.
//! Every field carries a `description` metadata entry. Types follow seam's conventions:
//! times are `Timestamp(Nanosecond, "UTC")`, ids are lower-case hex text, durations are
//! `Float64` milliseconds, HTTP status is `Int32`, attributes are `Map<Utf8, Utf8>`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub mod ingest_stats;
pub mod logs;
pub mod spans;

/// One stored table.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// SQL name of the table.
    pub name: &'static str,
    /// What one row is.
    pub description: &'static str,
    /// Arrow schema; every field has a `description` metadata entry.
    pub schema: SchemaRef,
}

/// Every table seam stores, in documentation order.
pub fn all() -> Vec<TableDef> {
    vec![
        TableDef {
            name: spans::TABLE,
            description: spans::DESCRIPTION,
            schema: spans::schema(),
        },
        TableDef {
            name: logs::TABLE,
            description: logs::DESCRIPTION,
            schema: logs::schema(),
        },
        TableDef {
            name: ingest_stats::TABLE,
            description: ingest_stats::DESCRIPTION,
            schema: ingest_stats::schema(),
        },
    ]
}

/// Looks a table up by name.
pub fn get(name: &str) -> Option<TableDef> {
    all().into_iter().find(|t| t.name == name)
}

/// Metadata key holding a field's documentation.
pub const DESCRIPTION_KEY: &str = "description";

/// A documented field.
pub(crate) fn field(name: &str, data_type: DataType, nullable: bool, description: &str) -> Field {
    Field::new(name, data_type, nullable).with_metadata(HashMap::from([(
        DESCRIPTION_KEY.to_string(),
        description.to_string(),
    )]))
}

/// UTC nanosecond timestamp, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The attribute map type: `Map<Utf8, Utf8>` with Arrow's standard entry names
/// (`entries`, `keys`, `values`), so Parquet readers see a standard MAP.
pub fn attribute_map_type() -> DataType {
    DataType::Map(Arc::new(map_entries_field()), false)
}

/// The `entries` field of [`attribute_map_type`].
pub fn map_entries_field() -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    )
}

/// Builds a schema carrying the schema version.
pub(crate) fn schema_of(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields).with_metadata(HashMap::from([(
        "seam.schema_version".to_string(),
        crate::SCHEMA_VERSION.to_string(),
    )])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_documented_and_names_are_unique() {
        for t in all() {
            let mut seen = std::collections::HashSet::new();
            for f in t.schema.fields() {
                assert!(
                    seen.insert(f.name().clone()),
                    "{}.{} twice",
                    t.name,
                    f.name()
                );
                let d = f.metadata().get(DESCRIPTION_KEY);
                assert!(
                    d.is_some_and(|d| !d.is_empty()),
                    "{}.{} undocumented",
                    t.name,
                    f.name()
                );
            }
            assert_eq!(t.schema.field(0).name(), crate::columns::TIME);
        }
    }
}
