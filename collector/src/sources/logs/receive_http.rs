//! Gateway and flow log receiver: `POST /ingest/apim` and `POST /ingest/mule` on the ingest
//! listener.
//!
//! Takes a body in any shape the endpoint knows (auto-detected; `format=` forces one),
//! optionally gzip-compressed, and query parameters `file`, `first_line` and `first_index`
//! (where the body came from in its file, so refusals name file:line or the record index;
//! whole numbers up to [`MAX_FIRST_POSITION`](crate::sources::logs::MAX_FIRST_POSITION),
//! `first_line` from 1), `timezone` (IANA zone of zone-less times; UTC by default), `gateway`
//! (self-hosted gateway name), `service` (APIM service) and `app` (Mule app) for records that
//! do not say. Answers 200 with JSON counts (accepted, rejected, duplicates, per table, the
//! first refusals) only once the stored rows are durable; 400 for an unknown format (the
//! message lists the known ones) or a parameter out of range; 413 too large; 503 retryable.
//! Inflating, decoding and normalising run off the async workers
//! ([`Collector::ingest_access_with`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use crate::error::IngestError;
use crate::normalise::json::InputMeta;
use crate::normalise::time::Zone;
use crate::receive::limits::{decode_content, read_capped};
use crate::sources::logs::{AccessInput, AccessSource, parse_position};
use crate::{Collector, Transport};

/// The routes, to be merged into the ingest listener's router.
pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route("/ingest/apim", post(apim))
        .route("/ingest/mule", post(mule))
        .layer(DefaultBodyLimit::disable())
        .with_state(collector)
}

/// Query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    format: Option<String>,
    file: Option<String>,
    /// Read by [`parse_position`], so that out-of-range values get a clear refusal.
    first_line: Option<String>,
    /// As `first_line`.
    first_index: Option<String>,
    timezone: Option<String>,
    gateway: Option<String>,
    service: Option<String>,
    app: Option<String>,
    /// A mapping that reads the body (`[mappings.NAME]` or a preset).
    mapping: Option<String>,
}

async fn apim(
    State(c): State<Arc<Collector>>,
    Query(p): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(c, AccessSource::Apim, p, headers, body).await
}

async fn mule(
    State(c): State<Arc<Collector>>,
    Query(p): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(c, AccessSource::Mule, p, headers, body).await
}

fn error(e: &IngestError) -> Response {
    crate::sources::otlp::receive_http::error_response(None, e)
}

async fn handle(
    c: Arc<Collector>,
    source: AccessSource,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let zone = match p.timezone.as_deref().map(Zone::parse).transpose() {
        Ok(z) => z.unwrap_or_default(),
        Err(e) => return error(&IngestError::InvalidPayload(e)),
    };
    let positions = parse_position("first_line", p.first_line.as_deref(), 1)
        .and_then(|l| parse_position("first_index", p.first_index.as_deref(), 0).map(|i| (l, i)));
    let (first_line, first_index) = match positions {
        Ok(v) => v,
        Err(e) => return error(&e),
    };
    let limits = c.limits();
    let max_inflated = limits.max_decompressed_bytes;
    let raw = match read_capped(body, limits.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    c.count_bytes(Transport::Http, source.label(), raw.len());
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let format = p.format.filter(|f| !f.is_empty() && f != "auto");
    let mapping = match p.mapping.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            return error(&IngestError::InvalidPayload(
                "mapping is empty: name a mapping, or leave the parameter out".into(),
            ));
        }
        Some(name) => match c.mapping(name) {
            Ok(m) => Some(m),
            Err(e) => return error(&e),
        },
    };
    if mapping.is_some() && format.is_some() {
        return error(&IngestError::InvalidPayload(
            "format and mapping cannot be given together: a mapping names its own format".into(),
        ));
    }
    let meta = InputMeta {
        file: p.file.filter(|f| !f.is_empty()),
        zone,
        gateway: p.gateway,
        service: p.service.map(|s| s.to_ascii_lowercase()),
        app: p.app,
        now_ns: 0,
        window: Default::default(),
        lenient_start: false,
    };
    // Inflating and checking the text are CPU work too: they run with the decoding.
    let make = move || -> Result<AccessInput, IngestError> {
        let body = decode_content(enc.as_deref(), raw, max_inflated)?;
        let text = match String::from_utf8(Vec::from(body)) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok(AccessInput {
            source,
            text,
            first_line,
            first_index,
            format,
            mapping,
            meta,
        })
    };
    match c.ingest_access_with(make).await {
        Ok(out) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&out).unwrap_or_else(|_| "{}".into()),
        )
            .into_response(),
        Err(e) => {
            tracing::debug!(error = %e, source = source.label(), "Refused a log ingest request.");
            error(&e)
        }
    }
}
