//! The Delta Lake transaction log of one seam table: what makes seam's Parquet files readable
//! as a Delta table by outside engines (Spark, Databricks, Fabric, Trino, DuckDB, delta-rs).
//!
//! Takes a table name, its Arrow schema (as written to Parquet) and [`FileEntry`]s; gives the
//! JSON actions of a commit ([`protocol`], [`metadata`], [`add`], [`remove`], [`txn`],
//! [`commit_info`]), the bytes of a commit file ([`encode_commit`]), the state a log describes
//! ([`Snapshot::apply`], one commit at a time) and what the next commit must change
//! ([`diff`]). Pure: no I/O; the caller lists, reads and writes the commit files.
//!
//! The log:
//! - one newline-delimited JSON commit per version at
//!   `tables/<table>/_delta_log/<version, 20 digits>.json` ([`commit_path`]), created only if
//!   absent (put-if-absent): whoever creates version N first owns it;
//! - version 0 holds [`protocol`] (reader 1 / writer 2: enough for timestamp, map, array and
//!   struct columns, no table features) and [`metadata`] (the Spark JSON schema of
//!   [`schema_string`]); a later `metaData` replaces the schema (added columns must be nullable);
//! - the table is unpartitioned: its root is `tables/<table>/` ([`table_root`]) and its files
//!   stay in seam's hive-style `date=…/hour=…/` folders, which Delta readers neither need nor
//!   turn into columns; stats on `time` give the same pruning;
//! - each [`add`] carries stats on `time` (`numRecords`, min/max as ISO-8601 UTC strings at
//!   millisecond precision, Delta's stats format): the min is floored and the max ceiled, so no
//!   reader skips a file that holds matching rows. Its tags `seam.level`, `seam.min_time_ns`
//!   and `seam.max_time_ns` keep the exact [`FileEntry`];
//! - a flush adds files (`dataChange: true`); a compaction removes n files and adds one
//!   (`dataChange: false` on both sides); retention removes (`dataChange: true`). A removed
//!   file may be deleted only after its `remove` commit exists, and after a grace period longer
//!   than any outside query;
//! - a [`txn`] action carries the writer's write-ahead-log watermark: `appId` = the writer's
//!   node id (`seam` for a store on local disk), `version` = `wal_seq` (Delta's
//!   idempotent-writer watermark; replayed into [`Snapshot::txns`]).
//!
//! Every [`CHECKPOINT_INTERVAL`]th version the writer also leaves a classic single-file
//! checkpoint ([`encode_checkpoint`] at [`checkpoint_path`], named by [`last_checkpoint`] in
//! `_delta_log/_last_checkpoint`): the protocol, the metadata, each writer's `txn` and one
//! `add` per file, so that readers start there instead of replaying every JSON commit.
//! Entries past `storage.delta_log_retention` before an older checkpoint are then removed;
//! seam's own reader replays commits from its manifest's version, and from the newest
//! checkpoint ([`decode_checkpoint`]) when the first commits are gone. `configuration` is
//! left empty. The log
//! declares time columns `timestamp`, i.e. microseconds: the Parquet files must hold
//! `TIMESTAMP(MICROS, UTC)` and map entries named `key`/`value` (nanosecond files are
//! unreadable by Spark, and `keys`/`values` break DuckDB's `delta_scan`).

use std::collections::{BTreeMap, HashSet};

use arrow::datatypes::{DataType, Field, Schema};
use seam_schemas::columns::TIME;
use seam_schemas::layout::{FileEntry, TABLES_DIR};
use seam_schemas::tables::DESCRIPTION_KEY;
use serde_json::{Map, Value, json};

/// Name of a table's log directory, under the table root.
pub const LOG_DIR: &str = "_delta_log";
/// The reader version seam's tables need (and the highest seam accepts in a log).
pub const MIN_READER_VERSION: u64 = 1;
/// The writer version seam's tables need (and the highest seam accepts in a log).
pub const MIN_WRITER_VERSION: u64 = 2;
/// `add` tag holding [`FileEntry::level`].
pub const TAG_LEVEL: &str = "seam.level";
/// `add` tag holding [`FileEntry::min_time_ns`].
pub const TAG_MIN_TIME_NS: &str = "seam.min_time_ns";
/// `add` tag holding [`FileEntry::max_time_ns`].
pub const TAG_MAX_TIME_NS: &str = "seam.max_time_ns";

/// `commitInfo.engineInfo` of every commit seam writes.
const ENGINE_INFO: &str = concat!("seam/", env!("CARGO_PKG_VERSION"));
const NS_PER_MS: i64 = 1_000_000;
const MS_PER_DAY: i64 = 86_400_000;

/// Why a log could not be built or read; each names what and where.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// A column's Arrow type has no Delta Lake type seam may declare.
    #[error(
        "column {column} has Arrow type {data_type}, which has no Delta Lake type (seam \
         publishes strings, signed integers, floats, booleans, binary, dates, UTC timestamps, \
         maps, lists and structs)"
    )]
    UnsupportedType {
        /// The column, with a path into nested types (`events[].time`, `attributes.value`).
        column: String,
        /// The Arrow type.
        data_type: String,
    },
    /// A timestamp column without a time zone (Delta `timestamp_ntz`).
    #[error(
        "column {column} is a timestamp without a time zone: Delta's timestamp_ntz needs \
         protocol 3/7 with the timestampNtz feature, which seam does not write; give it the \
         \"UTC\" zone"
    )]
    TimestampWithoutZone {
        /// The column, with a path into nested types.
        column: String,
    },
    /// A file that does not lie under the table's root.
    #[error("file {path} is not under {root}, the root of table {table}")]
    OutsideTable {
        /// The file's path, relative to the data directory.
        path: String,
        /// The table.
        table: String,
        /// Where its files must be.
        root: String,
    },
    /// A line of a commit is not a valid action.
    #[error("Delta commit {version}, line {line}: {reason}")]
    MalformedCommit {
        /// The commit's version.
        version: u64,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Commits were applied out of order (a version was skipped or repeated).
    #[error("Delta commit {version} applied out of order: {}", after(applied))]
    OutOfOrder {
        /// The version applied.
        version: u64,
        /// The snapshot's version before it.
        applied: Option<u64>,
    },
    /// The log's protocol is newer than seam can honour as a writer.
    #[error(
        "Delta commit {version} sets protocol reader {reader} / writer {writer}; seam only \
         writes reader {MIN_READER_VERSION} / writer {MIN_WRITER_VERSION} tables, so it must \
         not commit to this one"
    )]
    UnsupportedProtocol {
        /// The commit that set it.
        version: u64,
        /// `minReaderVersion`.
        reader: u64,
        /// `minWriterVersion`.
        writer: u64,
    },
    /// No version follows `u64::MAX`.
    #[error("the Delta log has no version after {}", u64::MAX)]
    VersionOverflow,
    /// A checkpoint could not be encoded.
    #[error("Delta checkpoint: {0}")]
    Checkpoint(String),
}

/// How [`DeltaError::OutOfOrder`] describes the snapshot it was applied to.
fn after(applied: &Option<u64>) -> String {
    match applied {
        Some(v) => format!("the snapshot is at version {v}"),
        None => "the snapshot is empty, so the first commit must be version 0".to_string(),
    }
}

/// A table's root, relative to the data directory: `tables/<table>/`.
pub fn table_root(table: &str) -> String {
    format!("{TABLES_DIR}/{table}/")
}

/// A table's log directory, relative to the data directory: `tables/<table>/_delta_log`.
pub fn log_dir(table: &str) -> String {
    format!("{TABLES_DIR}/{table}/{LOG_DIR}")
}

/// The commit file of `version`, relative to the data directory.
pub fn commit_path(table: &str, version: u64) -> String {
    format!("{}/{version:020}.json", log_dir(table))
}

/// Every how many versions a checkpoint is written (Delta's default `checkpointInterval`).
pub const CHECKPOINT_INTERVAL: u64 = 10;

/// The checkpoint of `version`, relative to the data directory.
pub fn checkpoint_path(table: &str, version: u64) -> String {
    format!("{}/{version:020}.checkpoint.parquet", log_dir(table))
}

/// Where `_last_checkpoint` lives, relative to the data directory.
pub fn last_checkpoint_path(table: &str) -> String {
    format!("{}/_last_checkpoint", log_dir(table))
}

/// The `_last_checkpoint` file naming the checkpoint of `version` with `size` actions.
pub fn last_checkpoint(version: u64, size: usize) -> Vec<u8> {
    json!({"version": version, "size": size})
        .to_string()
        .into_bytes()
}

/// The Arrow schema of a classic checkpoint: one nullable struct column per action kind,
/// each row holding one action.
fn checkpoint_schema() -> Schema {
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, true);
    let long = |n: &str| Field::new(n, DataType::Int64, true);
    let int = |n: &str| Field::new(n, DataType::Int32, true);
    let boolean = |n: &str| Field::new(n, DataType::Boolean, true);
    let map = |n: &str| {
        let entries = Field::new(
            "key_value",
            DataType::Struct(
                vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Utf8, true),
                ]
                .into(),
            ),
            false,
        );
        Field::new(n, DataType::Map(entries.into(), false), true)
    };
    let strukt = |n: &str, fields: Vec<Field>| Field::new(n, DataType::Struct(fields.into()), true);
    Schema::new(vec![
        strukt(
            "txn",
            vec![utf8("appId"), long("version"), long("lastUpdated")],
        ),
        strukt(
            "add",
            vec![
                utf8("path"),
                map("partitionValues"),
                long("size"),
                long("modificationTime"),
                boolean("dataChange"),
                utf8("stats"),
                map("tags"),
            ],
        ),
        strukt(
            "remove",
            vec![
                utf8("path"),
                long("deletionTimestamp"),
                boolean("dataChange"),
                boolean("extendedFileMetadata"),
                map("partitionValues"),
                long("size"),
            ],
        ),
        strukt(
            "metaData",
            vec![
                utf8("id"),
                utf8("name"),
                utf8("description"),
                strukt("format", vec![utf8("provider"), map("options")]),
                utf8("schemaString"),
                Field::new(
                    "partitionColumns",
                    DataType::List(Field::new("element", DataType::Utf8, true).into()),
                    true,
                ),
                map("configuration"),
                long("createdTime"),
            ],
        ),
        strukt(
            "protocol",
            vec![int("minReaderVersion"), int("minWriterVersion")],
        ),
    ])
}

/// The bytes of a classic checkpoint (Parquet) holding `actions` ([`protocol`],
/// [`metadata`], [`txn`] and [`add`] actions, one per row), decoded into Delta's checkpoint
/// schema by arrow's JSON reader.
///
/// # Errors
/// [`DeltaError::Checkpoint`] when an action does not fit the schema or Parquet fails.
pub fn encode_checkpoint(actions: &[Value]) -> Result<Vec<u8>, DeltaError> {
    let fail = |e: &dyn std::fmt::Display| DeltaError::Checkpoint(e.to_string());
    let schema = std::sync::Arc::new(checkpoint_schema());
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(actions.len().max(1))
        .build_decoder()
        .map_err(|e| fail(&e))?;
    decoder.serialize(actions).map_err(|e| fail(&e))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::default(),
        ))
        .build();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, Some(props))
        .map_err(|e| fail(&e))?;
    while let Some(batch) = decoder.flush().map_err(|e| fail(&e))? {
        writer.write(&batch).map_err(|e| fail(&e))?;
    }
    writer.close().map_err(|e| fail(&e))?;
    Ok(out)
}

/// The actions of a single-file checkpoint (seam's, or another writer's in the classic
/// layout) as newline-delimited JSON, one action per line as in a commit, for
/// [`Snapshot::apply`]: each row's one non-null column is the action.
///
/// # Errors
/// [`DeltaError::Checkpoint`] when the bytes are not a readable Parquet file.
pub fn decode_checkpoint(bytes: bytes::Bytes) -> Result<Vec<u8>, DeltaError> {
    let fail = |e: &dyn std::fmt::Display| DeltaError::Checkpoint(e.to_string());
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| fail(&e))?
        .build()
        .map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
    for batch in reader {
        let batch = batch.map_err(|e| fail(&e))?;
        writer.write(&batch).map_err(|e| fail(&e))?;
    }
    writer.finish().map_err(|e| fail(&e))?;
    Ok(out)
}

/// The version of a commit file (`00000000000000000012.json` → 12; a leading directory is
/// ignored); `None` for anything else in the log directory (checkpoints, `_last_checkpoint`,
/// `.crc`, temporary files).
pub fn version_of(file_name: &str) -> Option<u64> {
    let name = file_name.rsplit('/').next().unwrap_or(file_name);
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok() // None above u64::MAX
}

/// The version of a log entry seam writes: a commit (`N.json`) or a checkpoint
/// (`N.checkpoint.parquet`); `None` for anything else (`_last_checkpoint`, temporary files).
pub fn entry_version(file_name: &str) -> Option<u64> {
    let name = file_name.rsplit('/').next().unwrap_or(file_name);
    let digits = name
        .strip_suffix(".json")
        .or_else(|| name.strip_suffix(".checkpoint.parquet"))?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The Spark JSON schema (`metaData.schemaString`) of `schema`. Top-level fields carry their
/// seam description as the column `comment`; nested fields carry no metadata.
///
/// # Errors
/// [`DeltaError::UnsupportedType`] (unsigned integers, dictionaries, decimals, …) and
/// [`DeltaError::TimestampWithoutZone`], naming the column.
pub fn schema_string(schema: &Schema) -> Result<String, DeltaError> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            let mut metadata = Map::new();
            if let Some(d) = f.metadata().get(DESCRIPTION_KEY) {
                metadata.insert("comment".to_string(), Value::String(d.clone()));
            }
            field_json(f, f.name(), metadata)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"type": "struct", "fields": fields}).to_string())
}

fn field_json(f: &Field, column: &str, metadata: Map<String, Value>) -> Result<Value, DeltaError> {
    Ok(json!({
        "name": f.name(),
        "type": delta_type(f.data_type(), column)?,
        "nullable": f.is_nullable(),
        "metadata": metadata,
    }))
}

/// The Delta type of an Arrow type; `column` names it in errors.
fn delta_type(t: &DataType, column: &str) -> Result<Value, DeltaError> {
    let primitive = match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
        DataType::Int64 => "long",
        DataType::Int32 => "integer",
        DataType::Int16 => "short",
        DataType::Int8 => "byte",
        DataType::Float64 => "double",
        DataType::Float32 => "float",
        DataType::Boolean => "boolean",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary",
        DataType::Date32 => "date",
        DataType::Timestamp(_, Some(_)) => "timestamp",
        DataType::Timestamp(_, None) => {
            return Err(DeltaError::TimestampWithoutZone {
                column: column.to_string(),
            });
        }
        DataType::List(item) | DataType::LargeList(item) => {
            return Ok(json!({
                "type": "array",
                "elementType": delta_type(item.data_type(), &format!("{column}[]"))?,
                "containsNull": item.is_nullable(),
            }));
        }
        DataType::Map(entries, _) => {
            if let DataType::Struct(kv) = entries.data_type()
                && let [k, v] = &kv[..]
            {
                return Ok(json!({
                    "type": "map",
                    "keyType": delta_type(k.data_type(), &format!("{column}.key"))?,
                    "valueType": delta_type(v.data_type(), &format!("{column}.value"))?,
                    "valueContainsNull": v.is_nullable(),
                }));
            }
            return Err(unsupported(t, column));
        }
        DataType::Struct(fields) => {
            let fields = fields
                .iter()
                .map(|f| field_json(f, &format!("{column}.{}", f.name()), Map::new()))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(json!({"type": "struct", "fields": fields}));
        }
        _ => return Err(unsupported(t, column)),
    };
    Ok(Value::String(primitive.to_string()))
}

fn unsupported(t: &DataType, column: &str) -> DeltaError {
    DeltaError::UnsupportedType {
        column: column.to_string(),
        data_type: t.to_string(),
    }
}

/// The `protocol` action of version 0: reader 1, writer 2.
pub fn protocol() -> Value {
    json!({"protocol": {
        "minReaderVersion": MIN_READER_VERSION,
        "minWriterVersion": MIN_WRITER_VERSION,
    }})
}

/// The `metaData` action: Parquet, unpartitioned, no configuration, `schema` as its
/// [`schema_string`]. `table_id` must stay the same for the table's whole life (a UUID by
/// convention); `created_ms` is milliseconds since the epoch.
///
/// # Errors
/// Those of [`schema_string`].
pub fn metadata(table_id: &str, schema: &Schema, created_ms: i64) -> Result<Value, DeltaError> {
    Ok(json!({"metaData": {
        "id": table_id,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string(schema)?,
        "partitionColumns": [],
        "configuration": {},
        "createdTime": created_ms,
    }}))
}

/// The `add` action of a file of `table`, with stats on `time` and seam's tags.
///
/// # Errors
/// [`DeltaError::OutsideTable`] when `entry.path` is not under [`table_root`].
pub fn add(
    entry: &FileEntry,
    table: &str,
    modification_ms: i64,
    data_change: bool,
) -> Result<Value, DeltaError> {
    let stats = json!({
        "numRecords": entry.rows,
        "minValues": {TIME: iso_ms(floor_ms(entry.min_time_ns))},
        "maxValues": {TIME: iso_ms(ceil_ms(entry.max_time_ns))},
        "nullCount": {TIME: 0},
    });
    Ok(json!({"add": {
        "path": encode_path(relative_path(entry, table)?),
        "partitionValues": {},
        "size": entry.size,
        "modificationTime": modification_ms,
        "dataChange": data_change,
        "stats": stats.to_string(),
        "tags": {
            TAG_LEVEL: entry.level.to_string(),
            TAG_MIN_TIME_NS: entry.min_time_ns.to_string(),
            TAG_MAX_TIME_NS: entry.max_time_ns.to_string(),
        },
    }}))
}

/// The `remove` action of a file of `table` (with `extendedFileMetadata`: size and partition
/// values, so readers need not look the `add` up).
///
/// # Errors
/// [`DeltaError::OutsideTable`] when `entry.path` is not under [`table_root`].
pub fn remove(
    entry: &FileEntry,
    table: &str,
    deletion_ms: i64,
    data_change: bool,
) -> Result<Value, DeltaError> {
    Ok(json!({"remove": {
        "path": encode_path(relative_path(entry, table)?),
        "deletionTimestamp": deletion_ms,
        "dataChange": data_change,
        "extendedFileMetadata": true,
        "partitionValues": {},
        "size": entry.size,
    }}))
}

/// The `txn` action: writer `app_id` (a node id) has everything up to `version` (its WAL
/// `wal_seq`) in the table. Delta readers take it as a long, so it must stay below 2^63.
pub fn txn(app_id: &str, version: u64, last_updated_ms: i64) -> Value {
    json!({"txn": {"appId": app_id, "version": version, "lastUpdated": last_updated_ms}})
}

/// The `commitInfo` action (free-form provenance shown by `DESCRIBE HISTORY`): `operation` as
/// Delta names them (`CREATE TABLE`, `WRITE`, `OPTIMIZE`, `DELETE`); `blind_append` when the
/// commit only adds files.
pub fn commit_info(operation: &str, timestamp_ms: i64, blind_append: bool) -> Value {
    json!({"commitInfo": {
        "timestamp": timestamp_ms,
        "operation": operation,
        "engineInfo": ENGINE_INFO,
        "isBlindAppend": blind_append,
    }})
}

/// The bytes of a commit file: one action per line, each line ended by `\n`. `commitInfo`
/// actions go first (Delta's convention, needed for in-commit timestamps); the others keep
/// the caller's order.
pub fn encode_commit(actions: &[Value]) -> Vec<u8> {
    let is_info = |a: &&Value| a.get("commitInfo").is_some();
    let mut out = Vec::new();
    let infos = actions.iter().filter(is_info);
    for a in infos.chain(actions.iter().filter(|a| !is_info(a))) {
        out.extend_from_slice(a.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The state of a table's log after the commits applied so far.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// The last version applied; `None` before version 0.
    pub version: Option<u64>,
    /// The files the log lists, by path relative to the data directory (`tables/<table>/…`).
    pub files: BTreeMap<String, FileEntry>,
    /// Each writer's watermark (`txn` actions): app id → version.
    pub txns: BTreeMap<String, u64>,
    /// The schema of the last `metaData` action.
    pub schema_string: Option<String>,
}

/// One parsed action, before it changes the snapshot.
enum Change {
    Add(FileEntry),
    Remove(String),
    Txn(String, u64),
    Metadata(Option<String>),
    Protocol(u64, u64),
}

impl Snapshot {
    /// Applies commit `version` of `table` (the bytes of its file): `add` and `remove` by path,
    /// `txn` watermarks and `metaData`, in line order; other actions (`commitInfo`, `cdc`,
    /// `domainMetadata`, …) change nothing. A file added by another writer (no seam tags) gets
    /// its times from the stats (the whole range when it has none), level 0, and 0 rows when
    /// its stats do not count them. The snapshot is unchanged when this fails.
    ///
    /// # Errors
    /// [`DeltaError::OutOfOrder`] unless `version` follows the snapshot's version (0 first);
    /// [`DeltaError::MalformedCommit`] for a line that is not an action (with its number);
    /// [`DeltaError::UnsupportedProtocol`] for a protocol above reader 1 / writer 2.
    pub fn apply(&mut self, table: &str, version: u64, commit: &[u8]) -> Result<(), DeltaError> {
        let applied = self.version;
        if applied.map_or(Some(0), |v| v.checked_add(1)) != Some(version) {
            return Err(DeltaError::OutOfOrder { version, applied });
        }
        let root = table_root(table);
        let mut changes = Vec::new();
        for (i, raw) in commit.split(|&b| b == b'\n').enumerate() {
            let bad = |reason| DeltaError::MalformedCommit {
                version,
                line: i + 1,
                reason,
            };
            let text = std::str::from_utf8(raw).map_err(|e| bad(e.to_string()))?;
            if text.trim().is_empty() {
                continue;
            }
            let action: Map<String, Value> =
                serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
            for (kind, body) in &action {
                let change = change_of(&root, kind, body).map_err(bad)?;
                if let Some(Change::Protocol(reader, writer)) = change
                    && (reader > MIN_READER_VERSION || writer > MIN_WRITER_VERSION)
                {
                    return Err(DeltaError::UnsupportedProtocol {
                        version,
                        reader,
                        writer,
                    });
                }
                changes.extend(change);
            }
        }
        for change in changes {
            match change {
                Change::Add(entry) => {
                    self.files.insert(entry.path.clone(), entry);
                }
                Change::Remove(path) => {
                    self.files.remove(&path);
                }
                Change::Txn(app, v) => {
                    self.txns.insert(app, v);
                }
                Change::Metadata(schema) => {
                    self.schema_string = schema;
                }
                Change::Protocol(..) => {}
            }
        }
        self.version = Some(version);
        Ok(())
    }
}

/// The change one action (`kind`: its body) makes; `None` for actions without one.
fn change_of(root: &str, kind: &str, body: &Value) -> Result<Option<Change>, String> {
    let u64_of = |k: &str| body.get(k).and_then(Value::as_u64);
    Ok(Some(match kind {
        "add" => Change::Add(entry_of(format!("{root}{}", file_path(body)?), body)?),
        "remove" => Change::Remove(format!("{root}{}", file_path(body)?)),
        "txn" => match (body.get("appId").and_then(Value::as_str), u64_of("version")) {
            (Some(app), Some(v)) => Change::Txn(app.to_string(), v),
            _ => return Err("txn without an appId or a version".to_string()),
        },
        "metaData" => Change::Metadata(
            body.get("schemaString")
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        "protocol" => Change::Protocol(
            u64_of("minReaderVersion").unwrap_or(0),
            u64_of("minWriterVersion").unwrap_or(0),
        ),
        _ => return Ok(None),
    }))
}

/// What a commit must add and remove so that a log listing `published` (by path, as in
/// [`Snapshot::files`]) lists exactly `current`. Files are compared by path only: seam never
/// writes two different files under one path. Adds keep `current`'s order.
pub fn diff(
    published: &BTreeMap<String, FileEntry>,
    current: &[FileEntry],
) -> (Vec<FileEntry>, Vec<FileEntry>) {
    let wanted: HashSet<&str> = current.iter().map(|e| e.path.as_str()).collect();
    let mut seen = HashSet::new();
    let adds = current
        .iter()
        .filter(|e| !published.contains_key(&e.path) && seen.insert(e.path.as_str()))
        .cloned()
        .collect();
    let removes = published
        .iter()
        .filter(|(path, _)| !wanted.contains(path.as_str()))
        .map(|(_, e)| e.clone())
        .collect();
    (adds, removes)
}

/// `entry.path` relative to the table root.
fn relative_path<'a>(entry: &'a FileEntry, table: &str) -> Result<&'a str, DeltaError> {
    let root = table_root(table);
    match entry.path.strip_prefix(&root) {
        Some(rel) if !rel.is_empty() => Ok(rel),
        _ => Err(DeltaError::OutsideTable {
            path: entry.path.clone(),
            table: table.to_string(),
            root,
        }),
    }
}

/// Percent-encodes a path for `add.path` / `remove.path` (RFC 3986). seam's file paths only
/// hold `[A-Za-z0-9=_.-/]` (`date=YYYY-MM-DD/hour=HH/L0-<digits>-<digits>.parquet`), which
/// a URI path may carry as is, so this only guards a future name with other bytes; that does
/// not warrant a percent-encoding dependency.
fn encode_path(path: &str) -> String {
    let hex = |n: u8| char::from_digit(u32::from(n), 16).map_or('0', |c| c.to_ascii_uppercase());
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.extend(['%', hex(b >> 4), hex(b & 0x0f)]);
        }
    }
    out
}

/// The decoded, table-relative path of an `add` or `remove`.
fn file_path(body: &Value) -> Result<String, String> {
    let Some(path) = body.get("path").and_then(Value::as_str) else {
        return Err("file action without a path".to_string());
    };
    if path.contains("://") || path.starts_with('/') || path.is_empty() {
        return Err(format!("path {path:?} is not relative to the table root"));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("path {path:?} has a malformed percent-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("path {path:?} does not decode to UTF-8"))
}

/// The [`FileEntry`] an `add` describes, at `path` (relative to the data directory).
fn entry_of(path: String, body: &Value) -> Result<FileEntry, String> {
    let Some(size) = body.get("size").and_then(Value::as_u64) else {
        return Err(format!("add of {path} without a valid size"));
    };
    let stats: Option<Value> = body
        .get("stats")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok());
    let stat = |bound: &str| parse_iso_ms(stats.as_ref()?.get(bound)?.get(TIME)?.as_str()?);
    let tag = |k: &str| body.get("tags")?.get(k)?.as_str();
    // From stats (ms), bounds widen to whole milliseconds (delta-rs floors the max), and to
    // the ends of the range when absent or out of it.
    let min_ns = stat("minValues").and_then(|ms| ms.checked_mul(NS_PER_MS));
    let max_ns =
        stat("maxValues").and_then(|ms| ms.checked_mul(NS_PER_MS)?.checked_add(NS_PER_MS - 1));
    Ok(FileEntry {
        rows: stats
            .as_ref()
            .and_then(|s| s.get("numRecords")?.as_u64())
            .unwrap_or(0),
        level: tag(TAG_LEVEL).and_then(|v| v.parse().ok()).unwrap_or(0),
        min_time_ns: tag(TAG_MIN_TIME_NS)
            .and_then(|v| v.parse().ok())
            .or(min_ns)
            .unwrap_or(i64::MIN),
        max_time_ns: tag(TAG_MAX_TIME_NS)
            .and_then(|v| v.parse().ok())
            .or(max_ns)
            .unwrap_or(i64::MAX),
        path,
        size,
    })
}

/// Nanoseconds to milliseconds, rounded down (`div_euclid` by a positive constant cannot
/// overflow).
fn floor_ms(ns: i64) -> i64 {
    ns.div_euclid(NS_PER_MS)
}

/// Nanoseconds to milliseconds, rounded up. The floor is at most `i64::MAX / 10^6`, so adding
/// one cannot overflow.
fn ceil_ms(ns: i64) -> i64 {
    floor_ms(ns) + i64::from(ns.rem_euclid(NS_PER_MS) != 0)
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
fn iso_ms(ms: i64) -> String {
    let (y, m, d) = seam_schemas::layout::civil_from_days(ms.div_euclid(MS_PER_DAY));
    let t = ms.rem_euclid(MS_PER_DAY);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3_600_000,
        t / 60_000 % 60,
        t / 1_000 % 60,
        t % 1_000
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` (no zone: UTC) to milliseconds since
/// the epoch; digits past the millisecond are dropped. `None` when malformed.
fn parse_iso_ms(s: &str) -> Option<i64> {
    let num = |a: usize, b: usize| -> Option<i64> {
        let t = s
            .get(a..b)
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))?;
        t.parse().ok()
    };
    if s.get(4..5) != Some("-") || s.get(7..8) != Some("-") || s.get(10..11) != Some("T") {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let ok = (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && sec < 61;
    if !ok || s.get(13..14) != Some(":") || s.get(16..17) != Some(":") {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut frac = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        let digits = f.bytes().take(n).chain(std::iter::repeat(b'0')).take(3);
        frac = digits.fold(0, |acc, c| acc * 10 + i64::from(c - b'0'));
        rest = f.get(n..).filter(|_| n > 0)?;
    }
    let offset_min = match (rest, rest.get(..1)) {
        ("" | "Z", _) => 0,
        (_, Some(sign @ ("+" | "-"))) if rest.len() == 6 && rest.get(3..4) == Some(":") => {
            let off = s.len() - 5; // `rest` is the end of `s`
            let m = num(off, off + 2)? * 60 + num(off + 3, off + 5)?;
            if sign == "+" { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((((days * 24 + h) * 60 + mi - offset_min) * 60 + sec) * 1_000 + frac)
}

/// The inverse of `seam_schemas::layout::civil_from_days` (Hinnant's `days_from_civil`), for 4-digit years.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    const T: i64 = 1_730_798_043_121_451_000; // 2024-11-05T09:14:03.121451Z

    #[rustfmt::skip]
    #[test]
    fn a_checkpoint_holds_one_action_per_row_in_deltas_schema() {
        use arrow::array::{Array, AsArray};
        let schema = seam_schemas::tables::spans::schema();
        let files = [
            entry("a", 10, 1_000_000_000, 2_000_000_000, 0),
            entry("b", 20, 3_000_000_000, 4_000_000_000, 1),
        ];
        let mut actions = vec![
            protocol(),
            metadata("id-1", &schema, 5).unwrap(),
            txn("seam-node", 42, 5),
        ];
        for f in &files {
            actions.push(add(f, "spans", 5, false).unwrap());
        }
        let bytes = encode_checkpoint(&actions).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes::Bytes::from(bytes),
            )
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, actions.len());
        let b = &batches[0];
        let add_col = b.column_by_name("add").unwrap().as_struct();
        let paths = add_col.column_by_name("path").unwrap().as_string::<i32>();
        let got: Vec<&str> = (0..b.num_rows())
            .filter(|i| add_col.is_valid(*i))
            .map(|i| paths.value(i))
            .collect();
        let want: Vec<&str> = actions[3..]
            .iter()
            .map(|a| a["add"]["path"].as_str().unwrap())
            .collect();
        assert_eq!(got, want);
        // Exactly one action kind per row.
        let kinds = ["txn", "add", "remove", "metaData", "protocol"];
        for i in 0..b.num_rows() {
            let set = kinds
                .iter()
                .filter(|k| b.column_by_name(k).unwrap().is_valid(i))
                .count();
            assert_eq!(set, 1, "row {i}");
        }
        assert_eq!(
            String::from_utf8(last_checkpoint(10, 5)).unwrap(),
            r#"{"size":5,"version":10}"#
        );
    }

    fn entry(name: &str, rows: u64, min_time_ns: i64, max_time_ns: i64, level: u32) -> FileEntry {
        let path = format!("tables/spans/date=2024-11-05/hour=09/{name}.parquet");
        FileEntry {
            path,
            size: 1000 + rows,
            rows,
            min_time_ns,
            max_time_ns,
            level,
        }
    }

    fn json_of(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn every_table_schema_converts() {
        for t in seam_schemas::tables::all() {
            let s = json_of(&schema_string(&t.schema).unwrap());
            let fields = s["fields"].as_array().unwrap();
            assert_eq!(fields.len(), t.schema.fields().len(), "{}", t.name);
            for (f, a) in fields.iter().zip(t.schema.fields()) {
                assert_eq!(
                    (&f["name"], &f["nullable"]),
                    (&json!(a.name()), &json!(a.is_nullable()))
                );
                assert!(
                    f["metadata"]["comment"]
                        .as_str()
                        .is_some_and(|c| !c.is_empty())
                );
            }
            assert_eq!(fields[0]["type"], "timestamp", "{}", t.name);
        }
        // The shapes every reader accepted (lakeformat notes).
        let s = json_of(&schema_string(&seam_schemas::tables::spans::schema()).unwrap());
        let col = |n: &str| {
            s["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == n)
                .cloned()
        };
        let map = json!({"type": "map", "keyType": "string", "valueType": "string",
            "valueContainsNull": true});
        assert_eq!(col("attributes").unwrap()["type"], map);
        let events = json!({"type": "array", "containsNull": true, "elementType": {
            "type": "struct", "fields": [
                {"name": "time", "type": "timestamp", "nullable": true, "metadata": {}},
                {"name": "name", "type": "string", "nullable": true, "metadata": {}},
                {"name": "attributes", "type": map, "nullable": true, "metadata": {}}]}});
        assert_eq!(col("events").unwrap()["type"], events);
    }

    #[test]
    fn unsupported_types_name_the_column() {
        let list = |t| DataType::List(Field::new("item", t, true).into());
        let ntz = DataType::Timestamp(TimeUnit::Microsecond, None);
        let cases = [
            (DataType::UInt64, "column c has"),
            (list(DataType::UInt8), "column c[] has"),
            (
                DataType::Struct(vec![Field::new("t", ntz, true)].into()),
                "column c.t is a timestamp",
            ),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                "column c ",
            ),
            (DataType::Decimal128(10, 2), "column c has"),
        ];
        for (t, want) in cases {
            let e = schema_string(&Schema::new(vec![Field::new("c", t, true)])).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn paths_and_versions() {
        assert_eq!(table_root("spans"), "tables/spans/");
        let path = commit_path("spans", 12);
        assert_eq!(path, "tables/spans/_delta_log/00000000000000000012.json");
        assert_eq!(version_of(&path), Some(12));
        assert_eq!(version_of("00000000000000000000.json"), Some(0));
        let bad = "00000000000000000012.checkpoint.parquet 00000000000000000012.json.tmp \
            .00000000000000000012.json.tmp _last_checkpoint 00000000000000000012.crc 0012.json \
            000000000000000000012.json 0000000000000000001a.json +0000000000000000001.json \
            99999999999999999999.json";
        for name in bad.split_whitespace() {
            assert_eq!(version_of(name), None, "{name}");
        }
    }

    #[test]
    fn times_round_outwards_to_ms() {
        // min ns, max ns: the stats' min (floored) and max (ceiled).
        let cases = "\
            1730798043121451000 1730798046121460000 2024-11-05T09:14:03.121Z 2024-11-05T09:14:06.122Z
            1000000 1000000 1970-01-01T00:00:00.001Z 1970-01-01T00:00:00.001Z
            -1 -1 1969-12-31T23:59:59.999Z 1970-01-01T00:00:00.000Z
            -1000001 -1000001 1969-12-31T23:59:59.998Z 1969-12-31T23:59:59.999Z
            951782400000000000 951868799999999999 2000-02-29T00:00:00.000Z 2000-03-01T00:00:00.000Z
            -9223372036854775808 9223372036854775807 1677-09-21T00:12:43.145Z 2262-04-11T23:47:16.855Z";
        for case in cases.lines() {
            let w: Vec<&str> = case.split_whitespace().collect();
            let (min, max) = (w[0].parse().unwrap(), w[1].parse().unwrap());
            let a = add(&entry("f", 1, min, max, 0), "spans", 0, true).unwrap();
            let s = json_of(a["add"]["stats"].as_str().unwrap());
            let got = [&s["minValues"]["time"], &s["maxValues"]["time"]];
            assert_eq!(got.map(|v| v.as_str().unwrap()), [w[2], w[3]], "{case}");
            assert_eq!(parse_iso_ms(w[2]), Some(floor_ms(min)));
        }
        let parse = [
            ("2024-11-05T10:14:03.1219+01:00", Some(1_730_798_043_121)),
            ("2024-11-05T04:14:03-05:00", Some(1_730_798_043_000)),
            ("2024-11-05T09:14:03.121", Some(1_730_798_043_121)),
            ("2024-11-05", None),
            ("2024-13-05T09:14:03Z", None),
            ("2024-11-05T09:14:03.Z", None),
            ("2024-11-05T09:14:03+0100", None),
        ];
        for (text, want) in parse {
            assert_eq!(parse_iso_ms(text), want, "{text}");
        }
    }

    #[test]
    fn log_round_trip() {
        let schema = seam_schemas::tables::spans::schema();
        let f1 = entry("L0-1", 4, T, T + 3_000_000_009, 0);
        let f2 = entry("L0-2", 3, T + 10, T + 20, 0);
        let f3 = entry("L0-3 odd%", 5, T + 7, T + 8, 0);
        let f12 = entry("L1-4", 7, T, T + 3_000_000_009, 1);
        let a = |f, c| add(f, "spans", 2, c).unwrap();
        let r = |f, c| remove(f, "spans", 3, c).unwrap();
        let (info, node) = (commit_info, |n, v| txn(n, v, 4));
        let create = vec![protocol(), metadata("id", &schema, 1).unwrap()];
        #[rustfmt::skip]
        let commits = [
            [create, vec![info("CREATE TABLE", 1, false)]].concat(),
            vec![a(&f1, true), a(&f2, true), a(&f3, true), node("node-a", 42), info("WRITE", 2, true)],
            vec![r(&f1, false), r(&f2, false), a(&f12, false), info("OPTIMIZE", 3, false)],
            vec![r(&f3, true), node("node-a", 50), node("node-b", 7), info("DELETE", 4, false)],
        ];
        let mut snap = Snapshot::default();
        for (v, actions) in commits.iter().enumerate() {
            let bytes = encode_commit(actions);
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(
                text.starts_with("{\"commitInfo\"") && text.ends_with("}\n"),
                "{text}"
            );
            assert_eq!(text.lines().count(), actions.len());
            snap.apply("spans", v as u64, &bytes).unwrap();
            if v == 1 {
                assert!(
                    text.contains("\"path\":\"date=2024-11-05/hour=09/L0-3%20odd%25.parquet\"")
                );
                let listed = vec![f1.clone(), f2.clone(), f3.clone()];
                assert_eq!(snap.files.values().cloned().collect::<Vec<_>>(), listed);
                assert_eq!(diff(&snap.files, &listed), (vec![], vec![]));
                let (adds, removes) = diff(&snap.files, &[f3.clone(), f12.clone(), f12.clone()]);
                assert_eq!(
                    (adds, removes),
                    (vec![f12.clone()], vec![f1.clone(), f2.clone()])
                );
            }
        }
        assert_eq!(snap.version, Some(3));
        assert_eq!(
            snap.files,
            BTreeMap::from([(f12.path.clone(), f12.clone())])
        );
        assert_eq!(
            snap.txns,
            BTreeMap::from([("node-a".into(), 50), ("node-b".into(), 7)])
        );
        assert_eq!(snap.schema_string, Some(schema_string(&schema).unwrap()));
        assert!(snap.schema_string.is_some());
        let e = add(&f1, "logs", 0, true).unwrap_err().to_string();
        assert!(e.contains("is not under tables/logs/"), "{e}");
    }

    #[test]
    fn foreign_adds_fall_back_to_stats() {
        let stats = r#"{\"numRecords\":4,\"minValues\":{\"time\":\"1969-12-31T23:59:59.999Z\"},\"maxValues\":{\"time\":\"2024-11-05T09:14:06.122Z\"}}"#;
        let commit = format!(
            "{}\n{}\n",
            format_args!(r#"{{"add":{{"path":"x/a.parquet","size":10,"stats":"{stats}"}}}}"#),
            r#"{"add":{"path":"x/b.parquet","size":11,"dataChange":true}}"#
        );
        let mut snap = Snapshot::default();
        snap.apply("spans", 0, commit.as_bytes()).unwrap();
        let a = &snap.files["tables/spans/x/a.parquet"];
        assert_eq!((a.rows, a.size, a.level), (4, 10, 0));
        assert_eq!(
            (a.min_time_ns, a.max_time_ns),
            (-1_000_000, 1_730_798_046_122_999_999)
        );
        let b = &snap.files["tables/spans/x/b.parquet"];
        assert_eq!(
            (b.rows, b.min_time_ns, b.max_time_ns),
            (0, i64::MIN, i64::MAX)
        );
    }

    #[test]
    fn apply_refuses_gaps_bad_lines_and_new_protocols() {
        let mut snap = Snapshot::default();
        let ok = encode_commit(&[protocol()]);
        let mut refused = |v, commit: &[u8], want: &str| {
            let e = snap.apply("spans", v, commit).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        refused(
            1,
            &ok,
            "commit 1 applied out of order: the snapshot is empty",
        );
        refused(
            0,
            b"{\"metaData\":{}}\n{not json\n",
            "commit 0, line 2: key must be a string",
        );
        refused(
            0,
            b"\n{\"remove\":{\"path\":\"a%zz\"}}",
            "line 2: path \"a%zz\" has a malformed",
        );
        refused(0, b"[1]", "line 1: invalid type: sequence, expected a map");
        let p = br#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7}}"#;
        refused(0, p, "sets protocol reader 3 / writer 7");
        assert!(
            snap.schema_string.is_none() && snap.version.is_none(),
            "unchanged after an error"
        );
        snap.apply("spans", 0, &ok).unwrap();
        for v in [0, 2] {
            let e = snap.apply("spans", v, &ok).unwrap_err();
            assert!(
                e.to_string().contains("the snapshot is at version 0"),
                "{e}"
            );
        }
        snap.apply("spans", 1, b"").unwrap();
        assert_eq!(snap.version, Some(1));
    }
}
