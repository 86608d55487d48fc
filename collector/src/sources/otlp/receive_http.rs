//! OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs` in `application/x-protobuf`
//! and `application/json`, optionally gzip-compressed; `/v1/metrics` answers 404 with a
//! message.
//!
//! Takes HTTP requests; gives them to [`Collector`] and answers as the OTLP specification
//! says: 200 with an `Export*ServiceResponse` (partial success when some records were
//! invalid) in the request's encoding; 400 with a `google.rpc.Status` naming what is wrong;
//! 413 for a body over the limit; 415 for an unknown content type or encoding; 503 with
//! `Retry-After` when seam is overloaded (retryable).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use crate::decode::{self, Encoding};
use crate::error::{Disposition, IngestError};
use crate::receive::limits::{decode_content, read_capped};
use crate::{Collector, Transport};

/// The OTLP/HTTP routes, to be merged into the ingest listener's router.
pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(collector)
}

/// A refused request: the error, the encoding to answer in, and whether the collector
/// already counted it (errors from ingesting a decoded request are counted there).
#[derive(Debug)]
pub struct Refusal {
    /// The request's encoding, when it was understood.
    pub enc: Option<Encoding>,
    /// What went wrong.
    pub error: IngestError,
    /// Already counted in metrics and `ingest_stats`.
    pub counted: bool,
}

impl Refusal {
    fn new(enc: Option<Encoding>, error: IngestError) -> Self {
        Self {
            enc,
            error,
            counted: false,
        }
    }

    fn counted(enc: Encoding, error: IngestError) -> Self {
        Self {
            enc: Some(enc),
            error,
            counted: true,
        }
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Reads, size-checks and inflates a body; returns its encoding and bytes.
async fn read_body(
    c: &Collector,
    headers: &HeaderMap,
    body: Body,
    signal: &'static str,
) -> Result<(Encoding, bytes::Bytes), Refusal> {
    let enc = Encoding::from_content_type(header_str(headers, header::CONTENT_TYPE))
        .map_err(|e| Refusal::new(None, e))?;
    let limits = c.limits();
    let raw = read_capped(body, limits.max_request_bytes)
        .await
        .map_err(|e| Refusal::new(Some(enc), e))?;
    c.count_bytes(Transport::Http, signal, raw.len());
    let body = decode_content(
        header_str(headers, header::CONTENT_ENCODING),
        raw,
        limits.max_decompressed_bytes,
    )
    .map_err(|e| Refusal::new(Some(enc), e))?;
    Ok((enc, body))
}

async fn traces(State(c): State<Arc<Collector>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (enc, body) = read_body(&c, &headers, body, "spans").await?;
        let req = decode::traces(&body, enc).map_err(|e| Refusal::new(Some(enc), e))?;
        let out = c
            .ingest_traces(req, Transport::Http)
            .await
            .map_err(|e| Refusal::counted(enc, e))?;
        let resp = ExportTraceServiceResponse {
            partial_success: (out.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: out.rejected as i64,
                error_message: out.message.unwrap_or_default(),
            }),
        };
        Ok::<_, Refusal>(success(
            enc,
            &resp,
            resp.encode_to_vec(),
            resp.partial_success.is_some(),
        ))
    }
    .await;
    result.unwrap_or_else(|r| c.refuse(r, "spans"))
}

async fn logs(State(c): State<Arc<Collector>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let (enc, body) = read_body(&c, &headers, body, "logs").await?;
        let req = decode::logs(&body, enc).map_err(|e| Refusal::new(Some(enc), e))?;
        let out = c
            .ingest_logs(req, Transport::Http)
            .await
            .map_err(|e| Refusal::counted(enc, e))?;
        let resp = ExportLogsServiceResponse {
            partial_success: (out.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: out.rejected as i64,
                error_message: out.message.unwrap_or_default(),
            }),
        };
        Ok::<_, Refusal>(success(
            enc,
            &resp,
            resp.encode_to_vec(),
            resp.partial_success.is_some(),
        ))
    }
    .await;
    result.unwrap_or_else(|r| c.refuse(r, "logs"))
}

async fn metrics(State(c): State<Arc<Collector>>, headers: HeaderMap) -> Response {
    let enc = Encoding::from_content_type(header_str(&headers, header::CONTENT_TYPE)).ok();
    c.refuse(
        Refusal::new(
            enc,
            IngestError::Unimplemented(
                crate::sources::otlp::receive_grpc::METRICS_UNSUPPORTED.into(),
            ),
        ),
        "metrics",
    )
}

fn success<T: serde::Serialize>(
    enc: Encoding,
    resp: &T,
    proto: Vec<u8>,
    partial: bool,
) -> Response {
    let body = match enc {
        Encoding::Protobuf => proto,
        Encoding::Json if !partial => b"{}".to_vec(),
        Encoding::Json => serde_json::to_vec(resp).unwrap_or_else(|_| b"{}".to_vec()),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, enc.content_type())],
        body,
    )
        .into_response()
}

/// An error response: a `google.rpc.Status` in the request's encoding (JSON when the
/// encoding is unknown), plus `Retry-After` for retryable errors.
pub fn error_response(enc: Option<Encoding>, e: &IngestError) -> Response {
    let status = tonic_types::Status {
        code: e.grpc_code() as i32,
        message: e.to_string(),
        details: Vec::new(),
    };
    let (ct, body) = match enc {
        Some(Encoding::Protobuf) => (Encoding::Protobuf.content_type(), status.encode_to_vec()),
        _ => (
            Encoding::Json.content_type(),
            serde_json::json!({"code": status.code, "message": status.message})
                .to_string()
                .into_bytes(),
        ),
    };
    let mut resp = (e.http_status(), [(header::CONTENT_TYPE, ct)], body).into_response();
    if e.disposition() == Disposition::Retryable {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    resp
}
