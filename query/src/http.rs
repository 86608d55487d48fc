//! The HTTP API: `POST /api/v1/sql` and `GET /health`.
//!
//! Takes SQL in the request body (plain text, or JSON `{"sql": "...", "format": "..."}`) and
//! an optional `format` query parameter; gives the result as JSON (an array of row objects,
//! nulls written out), CSV (one header line) or an Arrow IPC stream (`format=arrow`, what
//! `seam query` uses to print tables). Errors are JSON `{"error": "...", "kind": "..."}` with
//! 400 (invalid SQL or memory limit), 403 (refused: not read-only), 408 (time limit),
//! 413 (SQL too long) or 500.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::WriterBuilder as JsonWriterBuilder;
use datafusion::arrow::json::writer::JsonArray;
use serde::Deserialize;

use seam_auth::{PeerInfo, Principal};

use crate::audit::AuditScope;
use crate::error::QueryError;
use crate::session::{QueryResult, QueryService};

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

fn error(e: &QueryError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::json!({"error": e.to_string(), "kind": e.kind()}).to_string();
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
        let body = serde_json::json!({
            "error": format!("SQL request body exceeds the limit of {limit} bytes"),
            "kind": "too_large"
        });
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
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
    match service.execute_as(&principal, &text).await {
        Ok(result) => match render(&result, format) {
            Ok(resp) => {
                audit.finish("ok", Some(result.num_rows() as i64), None);
                resp
            }
            Err(e) => {
                let e = QueryError::Internal(e);
                audit.finish_err(&e);
                error(&e)
            }
        },
        Err(e) => {
            audit.finish_err(&e);
            error(&e)
        }
    }
}

/// Encodes a result in `format`.
fn render(result: &QueryResult, format: Format) -> Result<Response, String> {
    let (ct, bytes) = match format {
        Format::Json => {
            let mut buf = Vec::new();
            let mut w = JsonWriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, JsonArray>(&mut buf);
            for b in &result.batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
            drop(w);
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
            ("application/json", buf)
        }
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = CsvWriterBuilder::new().with_header(true).build(&mut buf);
                if result.batches.iter().all(|b| b.num_rows() == 0) {
                    let names: Vec<&str> = result
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    drop(w);
                    buf.extend_from_slice(names.join(",").as_bytes());
                    buf.push(b'\n');
                } else {
                    for b in &result.batches {
                        w.write(b).map_err(|e| e.to_string())?;
                    }
                }
            }
            ("text/csv", buf)
        }
        Format::Arrow => {
            let mut buf = Vec::new();
            {
                let mut w =
                    StreamWriter::try_new(&mut buf, &result.schema).map_err(|e| e.to_string())?;
                for b in &result.batches {
                    w.write(b).map_err(|e| e.to_string())?;
                }
                w.finish().map_err(|e| e.to_string())?;
            }
            ("application/vnd.apache.arrow.stream", buf)
        }
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, ct)],
        Body::from(bytes),
    )
        .into_response())
}
