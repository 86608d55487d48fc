//! Every table seam stores: its name, Arrow schema and documentation.
//!
//! Takes nothing; gives [`all`], the list of [`TableDef`]s, and one `schema()` per table.
//! Every field carries a `description` metadata entry. Types follow seam's conventions:
//! times are `Timestamp(Nanosecond, "UTC")`, ids are lower-case hex text, durations are
//! `Float64` milliseconds, HTTP status is `Int32`, attributes are `Map<Utf8, Utf8>`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub mod flow_logs;
pub mod gateway_events;
pub mod gateway_logs;
pub mod ingest_stats;
pub mod logs;
pub mod rejects;
pub mod requests;
pub mod seam_audit;
pub mod source_positions;
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
            name: gateway_logs::TABLE,
            description: gateway_logs::DESCRIPTION,
            schema: gateway_logs::schema(),
        },
        TableDef {
            name: gateway_events::TABLE,
            description: gateway_events::DESCRIPTION,
            schema: gateway_events::schema(),
        },
        TableDef {
            name: flow_logs::TABLE,
            description: flow_logs::DESCRIPTION,
            schema: flow_logs::schema(),
        },
        TableDef {
            name: rejects::TABLE,
            description: rejects::DESCRIPTION,
            schema: rejects::schema(),
        },
        TableDef {
            name: requests::TABLE,
            description: requests::DESCRIPTION,
            schema: requests::schema(),
        },
        TableDef {
            name: requests::EVENTS_TABLE,
            description: requests::EVENTS_DESCRIPTION,
            schema: requests::events_schema(),
        },
        TableDef {
            name: requests::PROBES_TABLE,
            description: requests::PROBES_DESCRIPTION,
            schema: requests::probes_schema(),
        },
        TableDef {
            name: ingest_stats::TABLE,
            description: ingest_stats::DESCRIPTION,
            schema: ingest_stats::schema(),
        },
        TableDef {
            name: seam_audit::TABLE,
            description: seam_audit::DESCRIPTION,
            schema: seam_audit::schema(),
        },
        TableDef {
            name: source_positions::TABLE,
            description: source_positions::DESCRIPTION,
            schema: source_positions::schema(),
        },
    ]
}

/// A view seam defines over its tables.
#[derive(Debug, Clone)]
pub struct ViewDef {
    /// SQL name of the view.
    pub name: &'static str,
    /// What one row is, and its columns.
    pub description: &'static str,
    /// The view's query.
    pub sql: String,
}

/// Every view, in documentation order.
pub fn views() -> Vec<ViewDef> {
    let mut v = vec![ViewDef {
        name: gateway_logs::VIEW,
        description: gateway_logs::VIEW_DESCRIPTION,
        sql: gateway_logs::view_sql(),
    }];
    v.extend(
        requests::views()
            .into_iter()
            .map(|(name, description, sql)| ViewDef {
                name,
                description,
                sql,
            }),
    );
    v
}

/// Tables seam derives from the others (the correlator writes them a minute bucket at a
/// time, replacing the bucket's file); they take no ingest and are not compacted.
pub const DERIVED: &[&str] = &[
    requests::TABLE,
    requests::EVENTS_TABLE,
    requests::PROBES_TABLE,
];

/// Whether `name` is a derived table.
pub fn is_derived(name: &str) -> bool {
    DERIVED.contains(&name)
}

/// Tables that hold seam's own state (where each pulled source is): kept whatever the
/// default retention and the disk budget say (only their own `retention.tables` entry
/// removes rows), since losing them would make a source read its input again.
pub const STATE: &[&str] = &[source_positions::TABLE];

/// Whether `name` is a state table.
pub fn is_state(name: &str) -> bool {
    STATE.contains(&name)
}

/// Tables only the admin role may read.
pub const ADMIN_ONLY: &[&str] = &[seam_audit::TABLE];

/// Whether `name` is readable by the admin role only.
pub fn is_admin_only(name: &str) -> bool {
    ADMIN_ONLY.iter().any(|t| t.eq_ignore_ascii_case(name))
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

/// A documented nullable text field.
pub(crate) fn text(name: &str, description: &str) -> Field {
    field(name, DataType::Utf8, true, description)
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

/// The token identity columns carried by every table whose records can carry a bearer
/// token ([`crate::token::fields`]).
pub fn token_fields() -> Vec<Field> {
    crate::token::fields()
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

    /// A typo in a table's own column constant fails here: each names a column of its table
    /// (the shared ones in `crate::columns` are checked there).
    #[test]
    fn table_column_constants_name_columns_of_their_table() {
        let own: [(&str, &[&str]); 4] = [
            (
                gateway_logs::TABLE,
                &[
                    gateway_logs::FORWARDED_CORRELATION_ID,
                    gateway_logs::API_REVISION,
                    gateway_logs::BACKEND_ID,
                    gateway_logs::CLIENT_PROTOCOL,
                    gateway_logs::CLIENT_TLS_VERSION,
                    gateway_logs::IS_REQUEST_SUCCESS,
                    gateway_logs::BACKEND_METHOD,
                    gateway_logs::BACKEND_URL,
                    gateway_logs::BACKEND_PROTOCOL,
                    gateway_logs::TOTAL_TIME_MS,
                    gateway_logs::BACKEND_TIME_MS,
                    gateway_logs::CLIENT_TIME_MS,
                    gateway_logs::CACHE_TIME_MS,
                    gateway_logs::LAST_ERROR_ELAPSED_MS,
                    gateway_logs::LAST_ERROR_SCOPE,
                    gateway_logs::LAST_ERROR_SECTION,
                    gateway_logs::ERRORS,
                    gateway_logs::REGION,
                    gateway_logs::RESOURCE_ID,
                    gateway_logs::REQUEST_SIZE,
                    gateway_logs::RESPONSE_SIZE,
                    gateway_logs::REQUEST_HEADERS,
                    gateway_logs::RESPONSE_HEADERS,
                    gateway_logs::BACKEND_REQUEST_HEADERS,
                    gateway_logs::BACKEND_RESPONSE_HEADERS,
                ],
            ),
            (
                gateway_events::TABLE,
                &[gateway_events::SECTION, gateway_events::TOKEN_VALIDATED],
            ),
            (
                flow_logs::TABLE,
                &[
                    flow_logs::TRACE_POINT,
                    flow_logs::SCOPE_ELAPSED_MS,
                    flow_logs::MESSAGE,
                    flow_logs::LOCATION,
                    flow_logs::LOGGER,
                    flow_logs::THREAD,
                    flow_logs::ERROR_TYPE,
                    flow_logs::REMOTE_ADDRESS,
                    flow_logs::REQUEST_PATH,
                    flow_logs::IS_REQUEST_TRAFFIC,
                    flow_logs::ENVIRONMENT,
                    flow_logs::APP_VERSION,
                    flow_logs::CONTENT,
                ],
            ),
            (
                rejects::TABLE,
                &[
                    rejects::FILE,
                    rejects::LINE,
                    rejects::RECORD_INDEX,
                    rejects::REASON,
                ],
            ),
        ];
        let all = all();
        for (table, names) in own {
            let t = all.iter().find(|t| t.name == table).expect(table);
            for name in names {
                assert!(
                    t.schema.field_with_name(name).is_ok(),
                    "{name} is not a column of {table}"
                );
            }
        }
    }
}
