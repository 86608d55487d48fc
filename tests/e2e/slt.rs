//! SQL behaviour as data: the `.slt` files of `tests/slt/` (sqllogictest format, as DataFusion
//! writes its own tests) hold seam's views, the audit queries of `docs/audit-queries.md` and
//! the read-only rules, with the answers the samples of `tests/fixtures` must give.
//!
//! One test starts the real `seam` binary, sends the samples in their natural order
//! ([`crate::correlation::SAMPLES`]), waits until the eight requests are settled, sends three
//! statements over the HTTP API for `seam_audit` to record ([`SETUP`]), then runs every file
//! twice:
//! - over the PostgreSQL wire with `tokio-postgres` (extended protocol, typed values;
//!   engine name `pgwire`);
//! - in process, after the server stopped (SIGTERM: everything is in Parquet then): seam-query's
//!   [`QueryService`] over the same data directory, its tables listed by their manifests
//!   ([`Manifests`]; engine name `inprocess`).
//!
//! Both engines give values the same text, so that one file holds for both: `NULL`,
//! `(empty)` for an empty string, `true`/`false`, integers in decimal, floats as Rust prints
//! them (`184`, `8.5`), timestamps in UTC to the microsecond (what the wire carries:
//! `2024-11-05T09:14:03.121451Z`), lists as `[a, b]`. Column types are checked (strict), with
//! DataFusion's letters ([`SltType`]). Errors read `<message> (SQLSTATE <code>)` on both.
//! Records that differ by design (session statements, DataFusion-only syntax) are marked
//! `onlyif pgwire` or `skipif pgwire`.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use seam_query::{QueryConfig, QueryService};
use seam_schemas::layout::{FileEntry, Manifest, manifest_path};
use seam_schemas::source::{TableSnapshot, TableSource};
use sqllogictest::{
    AsyncDB, ColumnType, DBOutput, MakeConnection, Runner, strict_column_validator,
};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Type};

use crate::binary::{sigterm_and_wait, spawn_with};
use crate::correlation::{SAMPLES, send, settled};
use crate::support::*;

/// Engine name of the PostgreSQL wire run (`onlyif pgwire`, `skipif pgwire`).
const PGWIRE: &str = "pgwire";
/// Engine name of the in-process run.
const INPROCESS: &str = "inprocess";

/// The fingerprint key of the samples (`ground-truth.json`) and a short horizon, so that the
/// requests settle within seconds.
const CONFIG: &str = "[tokens]\n\
                      fingerprint_keys = [\"k1=contoso-demo-fp-key-v1\"]\n\
                      [correlation]\n\
                      horizon = \"2s\"\n\
                      delay = \"200ms\"\n";

/// Requests R1 to R8 of the samples.
const REQUESTS: i64 = 8;

/// Statements sent over the HTTP API before the files run, for `seam_audit` (audit.slt reads
/// them back by their marker comment), with the HTTP status each gets.
const SETUP: [(&str, u16); 3] = [
    (
        "SELECT request_id, status_code FROM requests \
         WHERE token_id = 'hmac-sha256:k1:16ee8de93a985c8891306b88e1fd2818' /* slt-setup */",
        200,
    ),
    ("DROP TABLE requests /* slt-setup */", 403),
    ("SELECT * FROM no_such_table /* slt-setup */", 400),
];

/// Counts the audited [`SETUP`] statements; the marker is split so that this statement,
/// audited itself, does not count.
const AUDITED_SETUP: &str =
    "SELECT count(*) FROM seam_audit WHERE strpos(statement, 'slt-' || 'setup') > 0";

const NULL: &str = "NULL";

/// Column types, with DataFusion's letters: `B` boolean, `I` integer, `R` floating point,
/// `T` text, `P` timestamp, `D` date, `?` anything else (lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SltType {
    Boolean,
    Integer,
    Float,
    Text,
    Timestamp,
    Date,
    Other,
}

impl ColumnType for SltType {
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'B' => Self::Boolean,
            'I' => Self::Integer,
            'R' => Self::Float,
            'T' => Self::Text,
            'P' => Self::Timestamp,
            'D' => Self::Date,
            '?' => Self::Other,
            _ => return None,
        })
    }

    fn to_char(&self) -> char {
        match self {
            Self::Boolean => 'B',
            Self::Integer => 'I',
            Self::Float => 'R',
            Self::Text => 'T',
            Self::Timestamp => 'P',
            Self::Date => 'D',
            Self::Other => '?',
        }
    }
}

/// An error as the `.slt` files match it: `<message> (SQLSTATE <code>)`.
#[derive(Debug)]
struct SltError(String);

impl fmt::Display for SltError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

fn pg_error(e: &tokio_postgres::Error) -> SltError {
    match e.as_db_error() {
        Some(db) => SltError(format!("{} (SQLSTATE {})", db.message(), db.code().code())),
        None => SltError(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// Values as text, the same for both engines.

fn null() -> String {
    NULL.to_string()
}

fn text(s: &str) -> String {
    if s.is_empty() {
        "(empty)".to_string()
    } else {
        s.to_string()
    }
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(", "))
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2024-11-05T09:14:03.121451Z`: milliseconds when the microseconds are 0, no fraction when
/// the time is a whole second.
fn timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let sod = secs.rem_euclid(86_400);
    let mut s = format!(
        "{}T{:02}:{:02}:{:02}",
        date(secs.div_euclid(86_400)),
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60
    );
    if frac % 1_000 == 0 && frac != 0 {
        let _ = write!(s, ".{:03}", frac / 1_000);
    } else if frac != 0 {
        let _ = write!(s, ".{frac:06}");
    }
    s.push('Z');
    s
}

fn micros_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

// ---------------------------------------------------------------------------------------
// Over the PostgreSQL wire.

/// One `tokio-postgres` connection to the running server.
#[derive(Debug)]
struct PgWire {
    client: tokio_postgres::Client,
}

impl PgWire {
    async fn connect(addr: SocketAddr) -> Result<Self, SltError> {
        let client = crate::pgwire::connect_as(addr, "user=seam")
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(Self { client })
    }
}

fn pg_type(t: &Type) -> SltType {
    match t.name() {
        "bool" => SltType::Boolean,
        "int2" | "int4" | "int8" => SltType::Integer,
        "float4" | "float8" => SltType::Float,
        "text" | "varchar" | "bpchar" | "name" => SltType::Text,
        "timestamp" | "timestamptz" => SltType::Timestamp,
        "date" => SltType::Date,
        _ => SltType::Other,
    }
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<Option<T>, String> {
    row.try_get::<_, Option<T>>(i)
        .map_err(|e| format!("column {i}: {e}"))
}

fn pg_list<'a, T: FromSql<'a>>(
    row: &'a Row,
    i: usize,
    render: impl Fn(T) -> String,
) -> Result<String, String> {
    Ok(get::<Vec<Option<T>>>(row, i)?.map_or_else(null, |items| {
        list(items.into_iter().map(|v| v.map_or_else(null, &render)))
    }))
}

fn pg_value(row: &Row, i: usize) -> Result<String, String> {
    let ty = row.columns()[i].type_();
    Ok(match ty.name() {
        "bool" => get::<bool>(row, i)?.map_or_else(null, |v| v.to_string()),
        "int2" => get::<i16>(row, i)?.map_or_else(null, |v| v.to_string()),
        "int4" => get::<i32>(row, i)?.map_or_else(null, |v| v.to_string()),
        "int8" => get::<i64>(row, i)?.map_or_else(null, |v| v.to_string()),
        "float4" => get::<f32>(row, i)?.map_or_else(null, |v| v.to_string()),
        "float8" => get::<f64>(row, i)?.map_or_else(null, |v| v.to_string()),
        "text" | "varchar" | "bpchar" | "name" => {
            get::<String>(row, i)?.map_or_else(null, |v| text(&v))
        }
        "timestamp" | "timestamptz" => {
            get::<SystemTime>(row, i)?.map_or_else(null, |t| timestamp(micros_since_epoch(t)))
        }
        "_text" | "_varchar" => pg_list::<String>(row, i, |v| text(&v))?,
        "_bool" => pg_list::<bool>(row, i, |v| v.to_string())?,
        "_int4" => pg_list::<i32>(row, i, |v| v.to_string())?,
        "_int8" => pg_list::<i64>(row, i, |v| v.to_string())?,
        "_float8" => pg_list::<f64>(row, i, |v| v.to_string())?,
        "_timestamptz" => pg_list::<SystemTime>(row, i, |t| timestamp(micros_since_epoch(t)))?,
        other => {
            return Err(format!(
                "column {i}: type {other} is not rendered by tests/e2e/slt.rs"
            ));
        }
    })
}

#[async_trait::async_trait]
impl AsyncDB for PgWire {
    type Error = SltError;
    type ColumnType = SltType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<SltType>, SltError> {
        // Prepared first, so that a result without rows still has its column types.
        let statement = self.client.prepare(sql).await.map_err(|e| pg_error(&e))?;
        let rows = self
            .client
            .query(&statement, &[])
            .await
            .map_err(|e| pg_error(&e))?;
        if statement.columns().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types: Vec<SltType> = statement
            .columns()
            .iter()
            .map(|c| pg_type(c.type_()))
            .collect();
        let rows = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| pg_value(row, i))
                    .collect::<Result<Vec<String>, String>>()
            })
            .collect::<Result<Vec<Vec<String>>, String>>()
            .map_err(SltError)?;
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        PGWIRE
    }
}

// ---------------------------------------------------------------------------------------
// In process.

/// The tables of a stopped server's data directory, as their manifests list them (a graceful
/// stop wrote every row to Parquet: nothing is left in memory).
#[derive(Debug)]
struct Manifests {
    files: HashMap<&'static str, Vec<FileEntry>>,
}

impl Manifests {
    fn load(data_dir: &Path) -> Self {
        let mut files = HashMap::new();
        for def in seam_schemas::tables::all() {
            let path = data_dir.join(manifest_path(def.name));
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("cannot read {}: {e}", path.display()),
            };
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{} is not a manifest: {e}", path.display()));
            files.insert(def.name, manifest.files);
        }
        Self { files }
    }
}

impl TableSource for Manifests {
    fn snapshot(&self, table: &str) -> TableSnapshot {
        TableSnapshot {
            files: self.files.get(table).cloned().unwrap_or_default(),
            recent: Vec::new(),
        }
    }
}

/// The query service the server builds ([`QueryService::new`] over its storage), here over
/// the manifests of `data_dir`.
fn open_in_process(data_dir: &Path) -> Arc<QueryService> {
    let data_dir = std::fs::canonicalize(data_dir).expect("the data directory");
    let base_url = url::Url::from_directory_path(&data_dir).expect("an absolute data directory");
    let service = QueryService::new(
        Arc::new(Manifests::load(&data_dir)),
        base_url.as_str(),
        QueryConfig::default(),
    )
    .expect("the query service over the data directory");
    Arc::new(service)
}

/// One session of the in-process engine (every statement gets a fresh DataFusion context).
#[derive(Debug)]
struct InProcess {
    service: Arc<QueryService>,
}

fn arrow_type(t: &DataType) -> SltType {
    match t {
        DataType::Boolean => SltType::Boolean,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => SltType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => SltType::Float,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SltType::Text,
        DataType::Timestamp(_, _) => SltType::Timestamp,
        DataType::Date32 | DataType::Date64 => SltType::Date,
        _ => SltType::Other,
    }
}

fn list_values<O: OffsetSizeTrait>(lists: &GenericListArray<O>) -> Result<Vec<String>, String> {
    (0..lists.len())
        .map(|i| {
            if lists.is_null(i) {
                Ok(null())
            } else {
                Ok(list(column_values(&lists.value(i))?))
            }
        })
        .collect()
}

/// Every value of a column as text, as [`pg_value`] writes the same value.
fn column_values(array: &ArrayRef) -> Result<Vec<String>, String> {
    let n = array.len();
    let to = |t: DataType| {
        cast(array.as_ref(), &t)
            .map_err(|e| format!("cannot cast {} to {t}: {e}", array.data_type()))
    };
    let each = |f: &dyn Fn(usize) -> String| -> Vec<String> {
        (0..n)
            .map(|i| if array.is_null(i) { null() } else { f(i) })
            .collect()
    };
    Ok(match array.data_type() {
        DataType::Null => vec![null(); n],
        DataType::Boolean => {
            let a = array.as_boolean();
            each(&|i| a.value(i).to_string())
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => {
            let c = to(DataType::Int64)?;
            let a = c.as_primitive::<Int64Type>();
            each(&|i| a.value(i).to_string())
        }
        DataType::Float16 | DataType::Float32 => {
            let c = to(DataType::Float32)?;
            let a = c.as_primitive::<Float32Type>();
            each(&|i| a.value(i).to_string())
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            each(&|i| a.value(i).to_string())
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let c = to(DataType::Utf8)?;
            let a = c.as_string::<i32>();
            each(&|i| text(a.value(i)))
        }
        DataType::Timestamp(_, tz) => {
            // The wire carries microseconds: cut the nanoseconds the same way.
            let c = to(DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))?;
            let a = c.as_primitive::<TimestampMicrosecondType>();
            each(&|i| timestamp(a.value(i)))
        }
        DataType::Date32 | DataType::Date64 => {
            let c = to(DataType::Date32)?;
            let a = c.as_primitive::<Date32Type>();
            each(&|i| date(i64::from(a.value(i))))
        }
        DataType::List(_) => list_values(array.as_list::<i32>())?,
        DataType::LargeList(_) => list_values(array.as_list::<i64>())?,
        _ => {
            let options = FormatOptions::new().with_null(NULL);
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)
                .map_err(|e| format!("cannot format {}: {e}", array.data_type()))?;
            (0..n).map(|i| formatter.value(i).to_string()).collect()
        }
    })
}

#[async_trait::async_trait]
impl AsyncDB for InProcess {
    type Error = SltError;
    type ColumnType = SltType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<SltType>, SltError> {
        let result = self
            .service
            .execute(sql)
            .await
            .map_err(|e| SltError(format!("{e} (SQLSTATE {})", e.sqlstate())))?;
        let types: Vec<SltType> = result
            .schema
            .fields()
            .iter()
            .map(|f| arrow_type(f.data_type()))
            .collect();
        let mut rows: Vec<Vec<String>> = Vec::with_capacity(result.num_rows());
        for batch in &result.batches {
            let columns = batch
                .columns()
                .iter()
                .map(column_values)
                .collect::<Result<Vec<_>, _>>()
                .map_err(SltError)?;
            for r in 0..batch.num_rows() {
                rows.push(columns.iter().map(|c| c[r].clone()).collect());
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        INPROCESS
    }
}

// ---------------------------------------------------------------------------------------
// The test.

/// `tests/slt/*.slt`, in name order.
fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

/// Runs every file with a fresh runner (one connection each); gives the failures.
async fn run_all<D, M>(
    engine: &str,
    files: &[PathBuf],
    mut new_runner: impl FnMut() -> Runner<D, M>,
) -> Vec<String>
where
    D: AsyncDB<ColumnType = SltType>,
    M: MakeConnection<Conn = D>,
{
    let mut failures = Vec::new();
    for file in files {
        let mut runner = new_runner();
        runner.with_column_validator(strict_column_validator::<SltType>);
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("[{engine}] {}", e.display(false)));
        }
        runner.shutdown_async().await;
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass_over_the_postgres_wire_and_in_process() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files in tests/slt");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let run = spawn_with(&data, CONFIG);
    let order: Vec<usize> = (0..SAMPLES.len()).collect();
    send(&run.http, &order).await;
    settled(&run.api, REQUESTS).await;
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM requests")
            .await
            .unwrap(),
        REQUESTS
    );
    for (statement, status) in SETUP {
        let answer = sql_raw(&run.api, statement, "json").await.unwrap();
        assert_eq!(answer.status, status, "{statement}: {}", answer.body);
    }
    wait_count(&run.api, AUDITED_SETUP, SETUP.len() as i64).await;

    let pg: SocketAddr = run.pg.parse().expect("the PostgreSQL listener's address");
    let mut failures = run_all(PGWIRE, &files, || Runner::new(move || PgWire::connect(pg))).await;

    // In process, over what the server left: stopped first, so that every row is in Parquet
    // and nothing changes underneath.
    sigterm_and_wait(run);
    let service = open_in_process(&data);
    failures.extend(
        run_all(INPROCESS, &files, || {
            let service = Arc::clone(&service);
            Runner::new(move || {
                let service = Arc::clone(&service);
                async move { Ok::<_, SltError>(InProcess { service }) }
            })
        })
        .await,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
