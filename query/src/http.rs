//! The HTTP API: `POST /api/v1/sql` and `GET /health`.
//!
//! Takes SQL in the request body (plain text, or JSON `{"sql": "...", "format": "..."}`) and
//! an optional `format` query parameter; gives the result as JSON (an array of row objects,
//! nulls written out), CSV (one header line; maps, lists and structs as JSON text) or an
//! Arrow IPC stream (`format=arrow`, what
//! `seam query` uses to print tables). Errors are JSON
//! `{"error": "...", "kind": "...", "sqlstate": "..."}`, with the status, kind and SQLSTATE of
//! their [`QueryError`] (the one table the PostgreSQL listener uses too): 400 (invalid SQL,
//! memory, function output or result limit, cursors), 403 (refused: not read-only, or a table
//! the role may not read), 408 (time limit), 413 (SQL too long) or 500 (a fault inside seam,
//! a panic included: seam keeps serving).
//!
//! Results are encoded on the query runtime and streamed. The first [`STREAM_AFTER`] bytes
//! are held back, so a statement that fails early (most do: planning, limits, the first
//! batches) gets its error status and JSON body. Past that the status (200) is sent and the
//! body streams; a failure after it (time limit, `query.max_result_bytes`, an error in a later
//! batch) writes one last line, the same error object (JSON and CSV), and cuts
//! the response without its end (HTTP/1.1: no final chunk), so that no client takes a cut
//! result for a whole one: curl exits with 18, reqwest and other clients fail reading the
//! body.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::WriterBuilder as JsonWriterBuilder;
use datafusion::arrow::json::writer::{EncoderOptions, JsonArray, make_encoder};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt as _;
use serde::Deserialize;

use seam_auth::{PeerInfo, Principal};

use crate::audit::AuditScope;
use crate::error::QueryError;
use crate::session::{Encoder, QueryService, QueryStream};

/// Bytes of a result held back before the response starts: an error within them is answered
/// with its status and JSON body.
pub const STREAM_AFTER: usize = 1 << 20;

/// Output formats of the SQL endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// An array of row objects.
    Json,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl Format {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "arrow" => Some(Format::Arrow),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Params {
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SqlBody {
    sql: String,
    format: Option<String>,
}

/// The API routes (SQL and health). The binary adds `/metrics`.
pub fn router(service: Arc<QueryService>) -> Router {
    sql_router(service).merge(health_router())
}

/// `POST /api/v1/sql` alone (the binary puts it behind the query role's guard).
pub fn sql_router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .layer(DefaultBodyLimit::disable())
        .with_state(service)
}

/// `GET /health`: open to all (load balancers and probes), and tells nothing but "ok".
pub fn health_router() -> Router {
    Router::new().route("/health", get(health))
}

async fn health() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// The JSON error object of `e` (the response body, or the last line of a cut result).
fn error_json(e: &QueryError) -> serde_json::Value {
    serde_json::json!({"error": e.to_string(), "kind": e.kind(), "sqlstate": e.sqlstate()})
}

fn error(e: &QueryError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = error_json(e).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad_request(msg: String) -> Response {
    error(&QueryError::Invalid(msg))
}

async fn sql(State(service): State<Arc<QueryService>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let Ok(Query(params)) = Query::<Params>::try_from_uri(&parts.uri) else {
        return bad_request("query parameters must be format=json|csv|arrow".into());
    };
    // The guard in front of this route put the caller there; without one (in-process
    // routers in tests), the caller is the anonymous local user.
    let principal = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous);
    let client_addr = parts
        .extensions
        .get::<ConnectInfo<PeerInfo>>()
        .map(|c| c.0.addr.to_string());
    let limit = service.config().max_sql_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error(&QueryError::SqlTooLarge(limit));
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    let (text, body_format) = if is_json {
        match serde_json::from_slice::<SqlBody>(&bytes) {
            Ok(b) => (b.sql, b.format),
            Err(e) => {
                return bad_request(format!(
                    "JSON body must be {{\"sql\": \"...\", \"format\": \"json|csv|arrow\"}}: {e}"
                ));
            }
        }
    } else {
        match String::from_utf8(bytes.to_vec()) {
            Ok(s) => (s, None),
            Err(_) => return bad_request("SQL body is not valid UTF-8".into()),
        }
    };
    let requested = params.format.or(body_format);
    let format = match requested.as_deref() {
        None => Format::Json,
        Some(f) => match Format::parse(f) {
            Some(f) => f,
            None => return bad_request(format!("unknown format {f:?}: use json, csv or arrow")),
        },
    };
    if text.trim().is_empty() {
        return bad_request("no SQL statement in the request body".into());
    }
    let audit = AuditScope::start(
        service.audit_sink(),
        "query",
        &principal,
        "http",
        client_addr,
        Some(text.clone()),
    );
    let mut stream = service.stream(&principal, &text, encoder(format));
    let mut head: Vec<u8> = Vec::new();
    let mut rows = 0usize;
    let complete = loop {
        match stream.next().await {
            None => break true,
            Some(Err(e)) => {
                audit.finish_err(&e);
                return error(&e);
            }
            Some(Ok(chunk)) => {
                rows += chunk.rows;
                head.extend_from_slice(&chunk.bytes);
                if head.len() >= STREAM_AFTER {
                    break false;
                }
            }
        }
    };
    let ct = [(header::CONTENT_TYPE, format.content_type())];
    if complete {
        audit.finish("ok", Some(i64::try_from(rows).unwrap_or(i64::MAX)), None);
        return (StatusCode::OK, ct, Body::from(head)).into_response();
    }
    let tail = Tail {
        stream,
        audit: Some(audit),
        rows,
        marker: format != Format::Arrow,
        phase: Phase::Streaming,
    };
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(tail.into_body());
    (StatusCode::OK, ct, Body::from_stream(body)).into_response()
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// The encoder of `format`.
fn encoder(format: Format) -> Box<dyn Encoder> {
    match format {
        Format::Json => Box::new(JsonRows { first: true }),
        Format::Csv => Box::new(CsvRows {
            header: None,
            written: false,
            schema: None,
        }),
        Format::Arrow => Box::new(ArrowStream { writer: None }),
    }
}

/// An array of row objects, nulls written out.
struct JsonRows {
    first: bool,
}

impl Encoder for JsonRows {
    fn begin(&mut self, _schema: &SchemaRef) -> Result<Vec<u8>, String> {
        Ok(b"[".to_vec())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        {
            let mut w = JsonWriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, JsonArray>(&mut buf);
            w.write(batch).map_err(|e| e.to_string())?;
            w.finish().map_err(|e| e.to_string())?;
        }
        // `[row,row]` becomes `row,row` after `[`, or `,row,row` after earlier rows.
        if buf.last() == Some(&b']') {
            buf.pop();
        }
        if buf.first() == Some(&b'[') {
            if self.first {
                buf.remove(0);
            } else {
                buf[0] = b',';
            }
        }
        if !buf.is_empty() {
            self.first = false;
        }
        Ok(buf)
    }

    fn end(&mut self) -> Result<Vec<u8>, String> {
        Ok(b"]".to_vec())
    }
}

/// `schema` with every nested column (list, map, struct) as nullable Utf8.
pub fn csv_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.data_type().is_nested() {
                Arc::new(Field::new(f.name().as_str(), DataType::Utf8, true))
            } else {
                Arc::clone(f)
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `batch` (of a schema whose [`csv_schema`] is `schema`) with every nested column replaced by
/// its values as JSON text (NULL stays NULL), as the PostgreSQL wire writes them: arrow's
/// CSV writer refuses nested types.
///
/// # Errors
/// A column the JSON encoder cannot write.
pub fn nested_as_json(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            columns.push(Arc::clone(column));
            continue;
        }
        let mut encoder = make_encoder(field, column.as_ref(), &options)?;
        let mut text = StringBuilder::with_capacity(rows, rows * 32);
        let mut buf = Vec::new();
        for row in 0..rows {
            if encoder.is_null(row) {
                text.append_null();
                continue;
            }
            buf.clear();
            encoder.encode(row, &mut buf);
            text.append_value(String::from_utf8_lossy(&buf));
        }
        columns.push(Arc::new(text.finish()));
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// CSV with one header line (also when there are no rows); nested columns (maps, lists) as
/// JSON text.
struct CsvRows {
    header: Option<Vec<u8>>,
    written: bool,
    /// The schema with nested columns as text.
    schema: Option<SchemaRef>,
}

impl Encoder for CsvRows {
    fn begin(&mut self, schema: &SchemaRef) -> Result<Vec<u8>, String> {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut line = names.join(",").into_bytes();
        line.push(b'\n');
        self.header = Some(line);
        self.schema = Some(csv_schema(schema));
        Ok(Vec::new())
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        let text_schema = self
            .schema
            .clone()
            .unwrap_or_else(|| csv_schema(batch.schema_ref()));
        let batch = &nested_as_json(batch, &text_schema).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        {
            let mut w = CsvWriterBuilder::new()
                .with_header(!self.written)
                .build(&mut buf);
            w.write(batch).map_err(|e| e.to_string())?;
        }
        self.written = true;
        Ok(buf)
    }

    fn end(&mut self) -> Result<Vec<u8>, String> {
        Ok(match self.header.take() {
            Some(h) if !self.written => h,
            _ => Vec::new(),
        })
    }
}

/// An Arrow IPC stream.
struct ArrowStream {
    writer: Option<StreamWriter<Vec<u8>>>,
}

impl ArrowStream {
    fn writer(&mut self) -> Result<&mut StreamWriter<Vec<u8>>, String> {
        self.writer
            .as_mut()
            .ok_or_else(|| "the Arrow stream was not begun".to_string())
    }
}

impl Encoder for ArrowStream {
    fn begin(&mut self, schema: &SchemaRef) -> Result<Vec<u8>, String> {
        let mut w = StreamWriter::try_new(Vec::new(), schema).map_err(|e| e.to_string())?;
        let bytes = std::mem::take(w.get_mut());
        self.writer = Some(w);
        Ok(bytes)
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        let w = self.writer()?;
        w.write(batch).map_err(|e| e.to_string())?;
        Ok(std::mem::take(w.get_mut()))
    }

    fn end(&mut self) -> Result<Vec<u8>, String> {
        let w = self.writer()?;
        w.finish().map_err(|e| e.to_string())?;
        Ok(std::mem::take(w.get_mut()))
    }
}

/// Where the streamed part of a response is.
enum Phase {
    /// Chunks are being sent.
    Streaming,
    /// The error line went out; next, the response is cut with this message.
    Cut(String),
    /// Nothing more.
    Done,
}

/// The rest of a result after the first [`STREAM_AFTER`] bytes, and its audit row (written at
/// the end, at an error, or when the client goes away).
struct Tail {
    stream: QueryStream,
    audit: Option<AuditScope>,
    rows: usize,
    marker: bool,
    phase: Phase,
}

impl Tail {
    fn rows(&self) -> Option<i64> {
        Some(i64::try_from(self.rows).unwrap_or(i64::MAX))
    }

    fn into_body(self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures::stream::unfold(self, |mut t| async move {
            match std::mem::replace(&mut t.phase, Phase::Done) {
                Phase::Done => None,
                Phase::Cut(message) => {
                    // Let the error line reach the socket before the connection is cut.
                    tokio::task::yield_now().await;
                    Some((Err(std::io::Error::other(message)), t))
                }
                Phase::Streaming => match t.stream.next().await {
                    Some(Ok(chunk)) => {
                        t.rows += chunk.rows;
                        t.phase = Phase::Streaming;
                        Some((Ok(chunk.bytes), t))
                    }
                    None => {
                        if let Some(a) = t.audit.take() {
                            a.finish("ok", t.rows(), None);
                        }
                        None
                    }
                    Some(Err(e)) => {
                        if let Some(a) = t.audit.take() {
                            let outcome = if matches!(e, QueryError::Timeout(_)) {
                                "cancelled"
                            } else {
                                "error"
                            };
                            a.finish(outcome, t.rows(), Some(e.to_string()));
                        }
                        let message = e.to_string();
                        if !t.marker {
                            return Some((Err(std::io::Error::other(message)), t));
                        }
                        let line = error_json(&e);
                        t.phase = Phase::Cut(message);
                        Some((Ok(Bytes::from(format!("\n{line}\n"))), t))
                    }
                },
            }
        })
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        if let Some(a) = self.audit.take() {
            a.finish(
                "cancelled",
                self.rows(),
                Some("the client closed the connection before the end of the result".into()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use seam_schemas::source::{TableSnapshot, TableSource};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use crate::{QueryConfig, QueryService};

    #[derive(Debug)]
    struct NoData;

    impl TableSource for NoData {
        fn snapshot(&self, _table: &str) -> TableSnapshot {
            TableSnapshot::default()
        }
    }

    fn boom(_args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
        panic!("boom: an operator failed");
    }

    /// Posts `sql` with HTTP/1.1 and gives the whole answer, status line to body.
    async fn post(addr: SocketAddr, sql: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /api/v1/sql HTTP/1.1\r\nHost: seam\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{sql}",
            sql.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        // Until the server closes the connection (a cut response may end with a reset).
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_a_statement_is_a_json_error_and_seam_keeps_serving() {
        let url = format!(
            "file://{}/seam-panic-test-nonexistent/",
            std::env::temp_dir().display()
        );
        let mut q = QueryService::new(Arc::new(NoData), &url, QueryConfig::default()).unwrap();
        q.register_udf(create_udf(
            "seam_test_panic",
            vec![DataType::Int64],
            DataType::Int64,
            Volatility::Volatile,
            Arc::new(boom),
        ));
        let app = super::router(Arc::new(q));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let answer = post(
            addr,
            "SELECT seam_test_panic(value) FROM generate_series(1, 3)",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(answer.contains(r#""kind":"internal""#), "{answer}");
        assert!(answer.contains("boom: an operator failed"), "{answer}");
        assert!(answer.contains(r#""sqlstate":"XX000""#), "{answer}");
        // The SQLSTATE of the PostgreSQL listener, from the same error.
        let answer = post(addr, "SELECT * FROM no_such_table").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains(r#""kind":"invalid""#), "{answer}");
        assert!(answer.contains(r#""sqlstate":"42P01""#), "{answer}");
        // The same service answers the next statement.
        let answer = post(addr, "SELECT 1 AS one").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(r#"[{"one":1}]"#), "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_past_the_limit_are_refused_or_cut() {
        let url = format!(
            "file://{}/seam-result-test-nonexistent/",
            std::env::temp_dir().display()
        );
        let config = QueryConfig {
            max_result_bytes: 4 << 20,
            ..QueryConfig::default()
        };
        let q = QueryService::new(Arc::new(NoData), &url, config).unwrap();
        let app = super::router(Arc::new(q));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        // Past the limit after the response started: the last line says why, and the
        // chunked body has no final chunk.
        let answer = post(addr, "SELECT * FROM range(150000000)").await;
        let start: String = answer.chars().take(300).collect();
        assert!(answer.starts_with("HTTP/1.1 200"), "{start}");
        let tail = &answer[answer.len().saturating_sub(400)..];
        assert!(tail.contains(r#""kind":"result_too_large""#), "{tail}");
        assert!(!tail.ends_with("0\r\n\r\n"), "{tail}");
        let answer = post(addr, "SELECT 2 AS two").await;
        assert!(answer.ends_with(r#"[{"two":2}]"#), "{answer}");
    }
}
